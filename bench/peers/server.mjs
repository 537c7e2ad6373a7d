// The Socket.IO node that bench/run.sh --peers measures beside the chat server: what a team
// would most likely deploy instead (Socket.IO 4.8 with @socket.io/redis-adapter 8.3), given
// the same job as a chat-server node, so that the figures compare like with like.
//
//   node server.mjs REDIS_URL [PORT]
//
// WebSocket transport only (no long-polling, no compression), as our nodes speak only
// WebSocket. A client joins a room with `join` and sends with `send`; a message goes to every
// member of the room on every node, the sender included, as chat-server's do, and the sender's
// ack comes once the adapter has handed it to Redis (the adapter publishes without waiting for
// a reply, which is all Socket.IO offers). It prints `listening on HOST:PORT` once it serves,
// like a chat-server node, and answers `GET /connections` with the connections it holds, for
// the benchmark's idle hold.
import { createServer } from 'node:http';
import { createAdapter } from '@socket.io/redis-adapter';
import { createClient } from 'redis';
import { Server } from 'socket.io';

const [redisUrl, portArg = '0'] = process.argv.slice(2);
if (!redisUrl) {
  console.error('usage: node server.mjs REDIS_URL [PORT]');
  process.exit(2);
}

const pub = createClient({ url: redisUrl });
const sub = pub.duplicate();
for (const client of [pub, sub]) {
  // A lost Redis must show in the log, not end the process with an unhandled event.
  client.on('error', (err) => console.error(`redis: ${err.message}`));
}
await Promise.all([pub.connect(), sub.connect()]);

const http = createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/connections') {
    res.end(`${io.engine.clientsCount}\n`);
    return;
  }
  res.statusCode = 404;
  res.end();
});
const io = new Server(http, {
  transports: ['websocket'],
  serveClient: false,
  perMessageDeflate: false,
  adapter: createAdapter(pub, sub),
});

io.on('connection', (socket) => {
  socket.on('join', (room, ack) => {
    if (typeof room !== 'string') return;
    socket.join(room);
    if (typeof ack === 'function') ack();
  });
  socket.on('send', (room, text, ack) => {
    if (typeof room !== 'string' || typeof text !== 'string') return;
    io.to(room).emit('message', text);
    if (typeof ack === 'function') ack();
  });
});

http.listen(Number(portArg), '127.0.0.1', () => {
  const { address, port } = http.address();
  console.log(`listening on ${address}:${port}`);
});
