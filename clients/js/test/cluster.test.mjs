// The library against two real nodes on one Redis: chat across nodes with acks, presence and
// member pages; then node 2 is killed (SIGKILL) while clients send, and nothing acknowledged
// is lost: every acked id reaches a member that was on the dead node, live or through its
// rejoin with `since`, which reports `recovered`.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { client, required, roomName, sleep, until, wsUrl } from './helpers.mjs';

const NODE1 = wsUrl(required('CHAT_JS_NODE1_URL'));
const NODE2 = wsUrl(required('CHAT_JS_NODE2_URL'));
const NODE2_PID = Number(required('CHAT_JS_NODE2_PID'));

test('chat across two nodes: acks, messages, presence, members', async () => {
  const room = roomName('across');
  const ada = client({ url: NODE1, name: 'Ada' });
  const bob = client({ url: NODE2, name: 'Bob' });
  try {
    const first = await ada.join(room);
    assert.equal(first.rejoin, false);
    assert.equal(first.since, '');
    assert.equal(ada.session.node, 'node-1');
    await bob.join(room);
    assert.equal(bob.session.node, 'node-2');
    await until('Ada hears that Bob came', () => ada.seen.presence.some((p) => p.joins?.includes('Bob')));

    const id = await ada.send(room, 'hello from node 1');
    assert.match(id, /^\d+-\d+$/);
    const got = await until('Bob gets it', () => bob.seen.messages.find((m) => m.id === id));
    assert.deepEqual([got.from, got.text, got.room], ['Ada', 'hello from node 1', room]);
    assert.equal(bob.lastId(room), id);
    const reply = await bob.send(room, 'hi Ada');
    await until('Ada gets the reply', () => ada.seen.messages.some((m) => m.id === reply));

    const page = await ada.members(room);
    assert.deepEqual([page.count, page.members], [2, ['Ada', 'Bob']]);
    const rest = await ada.members(room, 'Ada');
    assert.deepEqual(rest.members, ['Bob']);

    await assert.rejects(ada.send('not-joined-here', 'x'), { code: 'not_joined' });
    await bob.leave(room);
    assert.equal(bob.isJoined(room), false);
    await until('Ada hears that Bob left', () => ada.seen.presence.some((p) => p.leaves?.includes('Bob')));
  } finally {
    ada.close();
    bob.close();
  }
});

test('typing, edits and deletes across two nodes', async () => {
  const room = roomName('changes');
  const ada = client({ url: NODE1, name: 'Ada' });
  const bob = client({ url: NODE2, name: 'Bob' });
  try {
    await ada.join(room);
    await bob.join(room);
    assert.equal(ada.typing(room), true);
    assert.equal(ada.typing(room), false, 'one signal per 2 s');
    assert.equal(ada.typing('not-joined-here'), false);
    const typing = await until('Bob sees Ada typing', () => bob.seen.typing[0]);
    assert.deepEqual([typing.room, typing.from], [room, 'Ada']);

    const id = await ada.send(room, 'helo');
    const editId = await ada.edit(room, id, 'hello');
    const edited = await until('Bob gets the edit', () => bob.seen.changes.find((c) => c.id === editId));
    assert.deepEqual([edited.type, edited.target, edited.text, edited.from], ['edited', id, 'hello', 'Ada']);
    assert.equal(bob.lastId(room), editId, 'an edit moves the room mark like a message');
    await assert.rejects(bob.deleteMessage(room, id), { code: 'forbidden' });
    await assert.rejects(ada.edit(room, '1-0', 'nothing there'), { code: 'not_found' });
    const deleteId = await ada.deleteMessage(room, id);
    await until('Bob gets the deletion', () => bob.seen.changes.find((c) => c.id === deleteId));
    await assert.rejects(ada.edit(room, id, 'too late'), { code: 'not_found' });

    const late = client({ url: NODE2, name: 'Late' });
    try {
      const joined = await late.join(room);
      assert.deepEqual(joined.history.map((e) => e.type), ['message', 'edited', 'deleted']);
    } finally {
      late.close();
    }
    assert.equal(ada.seen.typing.length, 0, 'nobody hears their own typing');
  } finally {
    ada.close();
    bob.close();
  }
});

test('a node killed while sending: nothing acknowledged is lost, recovery reported', async () => {
  const room = roomName('killed');
  // Node 2 first; once it is gone, the next (re)connect tries node 1.
  const rotating = () => {
    let next = 0;
    return () => [NODE2, NODE1][next++ % 2];
  };
  const reader = client({ url: rotating(), name: 'Reader' });
  const sender1 = client({ url: NODE1, name: 'Sender1' });
  const sender2 = client({ url: rotating(), name: 'Sender2' });
  const acked = [];
  const lost = [];
  let sent = 0;
  let sending = true;
  async function keepSending(chat, label) {
    for (let n = 0; sending; n += 1) {
      // Under the default send rate (10 a second per connection); not awaited, so sends are
      // in flight when the node dies.
      sent += 1;
      chat.send(room, `${label} ${n}`).then((id) => acked.push(id), (error) => lost.push(error.code));
      await sleep(120);
    }
  }
  try {
    await reader.join(room);
    await sender1.join(room);
    await sender2.join(room);
    assert.equal(reader.session.node, 'node-2');
    const loops = [keepSending(sender1, 'one'), keepSending(sender2, 'two')];
    await sleep(1500);
    process.kill(NODE2_PID, 'SIGKILL');
    await until('the reader rejoins on node 1', () => reader.seen.joined.length >= 2);
    await sleep(1500);
    sending = false;
    await Promise.all(loops);
    await until('every send is settled', () => acked.length + lost.length === sent);

    const rejoin = reader.seen.joined[reader.seen.joined.length - 1];
    assert.equal(reader.session.node, 'node-1');
    assert.equal(rejoin.rejoin, true);
    assert.ok(rejoin.since, 'the rejoin asked for what came after the last message seen');
    assert.equal(rejoin.recovered, true, 'history reached back to the last message seen');
    assert.deepEqual(reader.seen.closes.map((c) => c.code).slice(0, 1), [1006]);
    // Sends in flight when the connection died are the only ones that may fail, and only so.
    assert.ok(lost.every((code) => code === 'connection_lost'), `failures: ${lost}`);
    const missing = () => {
      const ids = new Set(reader.seen.messages.map((m) => m.id));
      return acked.filter((id) => !ids.has(id));
    };
    await until('the reader has every acknowledged message', () => missing().length === 0).catch((error) => {
      const heard = reader.seen.messages.map((m) => `${m.id} ${m.text}`);
      throw new Error(`${error.message}; missing ${missing()}; rejoins ${JSON.stringify(
        reader.seen.joined.map(({ history, ...rest }) => ({ ...rest, history: history.length })),
      )}; heard ${heard}`);
    });
    const ids = reader.seen.messages.map((m) => m.id);
    assert.equal(new Set(ids).size, ids.length, 'no message twice');
    assert.ok(acked.length >= 20, `sends acknowledged: ${acked.length}`);
  } finally {
    sending = false;
    reader.close();
    sender1.close();
    sender2.close();
  }
});
