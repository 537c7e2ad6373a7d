// The library's frame handling against a scripted socket, for what real nodes make rare: a
// `joined` reply and the live messages after it handed over in the same event, as Node's `ws`
// does with every frame of one read. The history in `joined` must not be dropped as "seen"
// because a message after it was read first.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ChatClient } from '../src/chat-client.js';

/** A socket whose frames the test delivers, all at once when it wants. */
class ScriptedSocket {
  static last = null;

  constructor(url) {
    this.url = url;
    this.readyState = 1;
    this.sent = [];
    this.listeners = { message: [], close: [], error: [] };
    ScriptedSocket.last = this;
  }

  addEventListener(type, listener) {
    this.listeners[type].push(listener);
  }

  send(data) {
    this.sent.push(JSON.parse(data));
  }

  close() {
    this.readyState = 3;
  }

  /** Delivers `frames` one after another in this very call, with no await between them. */
  deliver(...frames) {
    for (const frame of frames) {
      for (const listener of this.listeners.message) listener({ data: JSON.stringify(frame) });
    }
  }
}

const message = (room, seq) => ({ type: 'message', room, id: `7-${seq}`, from: 'Ada', text: `m${seq}`, ts: seq });

test('history in joined and the live messages read with it arrive whole and in order', async () => {
  const chat = new ChatClient({ WebSocket: ScriptedSocket, url: 'ws://127.0.0.1:1/ws', name: 'Reader' });
  const heard = [];
  chat.on('joined', (joined) => heard.push(...joined.history.map((m) => m.id)));
  chat.on('message', (m) => heard.push(m.id));
  const joining = chat.join('room');
  await new Promise((resolve) => { setImmediate(resolve); });
  const socket = ScriptedSocket.last;
  socket.deliver({ type: 'welcome', node: 'n', session: 's', name: 'Reader' });
  assert.deepEqual(socket.sent.map((f) => [f.type, f.room, f.since]), [['join', 'room', undefined]]);

  socket.deliver(
    { type: 'joined', room: 'room', count: 1, members: ['Reader'], history: [message('room', 1), message('room', 2)] },
    message('room', 3),
    message('room', 4),
  );
  const joined = await joining;
  assert.deepEqual(joined.history.map((m) => m.id), ['7-1', '7-2']);
  assert.deepEqual(heard, ['7-1', '7-2', '7-3', '7-4']);
  assert.equal(chat.lastId('room'), '7-4');
  chat.close();
});
