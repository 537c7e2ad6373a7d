// The Engine.IO v4 / Socket.IO v5 wire protocol over a bare WebSocket, as much of it as the
// load client needs: socket.io-client would cost the load generator more CPU than the server
// it measures, and ws-client likewise parses only what it counts.
//
// Frames are text: `0{…}` the server's open, `2` its ping (answered `3`), `40` connect to the
// main namespace (answered `40{…}`), `42["event",…]` an event, `42N[…]` an event wanting ack
// N, `43N[…]` the ack of N, `44{…}` a refused connect.
import WebSocket from 'ws';

/** The Socket.IO endpoint of a node's base URL (ws://host:port), WebSocket transport only. */
export function endpoint(base) {
  return `${base.replace(/\/+$/, '')}/socket.io/?EIO=4&transport=websocket`;
}

/** A `message` event's text, or null for any other frame. */
const MESSAGE = '42["message","';
export function messageText(frame) {
  return frame.startsWith(MESSAGE) ? frame.slice(MESSAGE.length, -2) : null;
}

/** The ack id of a `43N[…]` frame, or -1. */
export function ackId(frame) {
  if (!frame.startsWith('43')) return -1;
  const end = frame.indexOf('[', 2);
  return end > 2 ? Number(frame.slice(2, end)) : -1;
}

/** `42N["event",args…]`: an event whose ack will come back as `43N`. */
export function event(id, name, ...args) {
  return `42${id}${JSON.stringify([name, ...args])}`;
}

/**
 * Opens a Socket.IO connection; `handlers.ready()` once the namespace is connected,
 * `handlers.frame(text)` for every other frame, `handlers.lost(why)` when it fails or closes
 * before `close()` was called. Pings are answered here.
 */
export function connect(base, localAddress, handlers) {
  const ws = new WebSocket(endpoint(base), { localAddress, perMessageDeflate: false });
  let ready = false;
  let closing = false;
  // An error is followed by a close: the connection is lost once.
  const lose = (why) => {
    if (closing) return;
    closing = true;
    handlers.lost(why);
  };
  ws.on('message', (data) => {
    const frame = data.toString();
    if (frame === '2') ws.send('3');
    else if (!ready && frame.startsWith('0')) ws.send('40');
    else if (!ready && frame.startsWith('40')) {
      ready = true;
      handlers.ready();
    } else if (frame.startsWith('44')) lose('connect refused');
    else handlers.frame(frame);
  });
  ws.on('error', (err) => lose(err.code || err.message));
  ws.on('close', () => lose('closed by the server'));
  return {
    send: (text) => ws.send(text),
    close: () => {
      closing = true;
      ws.terminate();
    },
  };
}
