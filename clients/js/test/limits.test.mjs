// The library against nodes with limits: a low send rate (the promise rejects with
// `rate_limited` and `retryAfterMs`, and a send after that wait goes through), a low join rate
// (the library joins again after `retry_after_ms`), and tokens (a forged one is refused and
// not retried; a good one chats under its name; an expiring one is replaced by the token
// function when the node closes the session with 4003).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { client, jwt, nowSecs, required, roomName, sleep, until, wsUrl } from './helpers.mjs';

const LIMITED = wsUrl(required('CHAT_JS_LIMITED_URL'));
const AUTH = wsUrl(required('CHAT_JS_AUTH_URL'));
const SECRET = required('CHAT_JS_AUTH_SECRET');

test('rate limits: rejected with rate_limited and retryAfterMs, then sent after the wait', async () => {
  const room = roomName('limited');
  const chat = client({ url: LIMITED, name: 'Hasty' });
  try {
    await chat.join(room);
    const results = await Promise.allSettled([1, 2, 3, 4, 5].map((n) => chat.send(room, `burst ${n}`)));
    const refused = results.filter((r) => r.status === 'rejected').map((r) => r.reason);
    assert.ok(results[0].status === 'fulfilled', 'the first send fits the burst');
    assert.ok(refused.length >= 1, 'a burst over the limit is refused');
    for (const error of refused) {
      assert.equal(error.code, 'rate_limited');
      assert.ok(error.retryAfterMs > 0, `retryAfterMs: ${error.retryAfterMs}`);
      assert.equal(error.room, room);
    }
    await sleep(Math.max(...refused.map((e) => e.retryAfterMs)) + 50);
    assert.match(await chat.send(room, 'after the wait'), /^\d+-\d+$/);
    assert.ok(chat.isJoined(room), 'the connection stays open');
  } finally {
    chat.close();
  }
});

test('joins over the join budget are retried after retry_after_ms', async () => {
  const rooms = [1, 2, 3, 4].map((n) => roomName(`budget${n}`));
  const chat = client({ url: LIMITED, name: 'Joiner' });
  try {
    const joined = await Promise.all(rooms.map((room) => chat.join(room)));
    assert.deepEqual(joined.map((j) => j.room), rooms);
    const refusals = chat.seen.errors.filter((e) => e.code === 'rate_limited');
    assert.ok(refusals.length >= 1, 'the burst of 2 was exceeded');
    assert.ok(refusals.every((e) => e.retryAfterMs > 0 && rooms.includes(e.room)));
  } finally {
    chat.close();
  }
});

test('a forged token is refused, and the client stops', async () => {
  const forged = jwt({ sub: 'Mallory', exp: nowSecs() + 300 }, 'not the secret, but as long as it');
  const chat = client({ url: AUTH, token: forged });
  try {
    await assert.rejects(chat.join(roomName('auth')), { code: 'unauthorized' });
    assert.equal(chat.state, 'closed');
    assert.deepEqual(chat.seen.closes.map((c) => [c.code, c.error?.code, c.reconnectInMs]),
      [[1008, 'unauthorized', null]]);
    await sleep(500);
    assert.equal(chat.seen.closes.length, 1, 'no reconnect with a refused token');
  } finally {
    chat.close();
  }
});

test('a token function: the name comes from the token, and an expired session resumes', async () => {
  const room = roomName('auth');
  let calls = 0;
  // The first token expires at once (the node honours it for its 5 s of leeway); later ones
  // last.
  const token = async () => {
    calls += 1;
    return jwt({ sub: 'Tess', exp: nowSecs() + (calls === 1 ? 0 : 300) }, SECRET);
  };
  const chat = client({ url: AUTH, token });
  try {
    await chat.join(room);
    assert.equal(chat.session.name, 'Tess');
    const id = await chat.send(room, 'signed in');
    await until('the node ends the session with 4003', () => chat.seen.closes.some((c) => c.code === 4003));
    await until('the client rejoins with a fresh token', () => chat.seen.joined.length >= 2);
    assert.equal(calls, 2, 'the token function is asked on every connect');
    const rejoin = chat.seen.joined[1];
    assert.deepEqual([rejoin.since, rejoin.recovered], [id, true]);
    assert.match(await chat.send(room, 'still signed in'), /^\d+-\d+$/);
  } finally {
    chat.close();
  }
});

test('direct messages and private rooms: joins the token does not allow are forbidden', async () => {
  const token = (sub, claims = {}) => jwt({ sub, exp: nowSecs() + 300, ...claims }, SECRET);
  const ada = client({ url: AUTH, token: token('ada') });
  const bob = client({ url: AUTH, token: token('bob', { publish: [] }) });
  const eve = client({ url: AUTH, token: token('eve', { rooms: ['*'] }) });
  try {
    await ada.join('dm.ada.bob');
    await bob.join('dm.ada.bob');
    const id = await bob.send('dm.ada.bob', 'a read-only token still writes its own DMs');
    await until('Ada gets it', () => ada.seen.messages.some((m) => m.id === id));
    await assert.rejects(eve.join('dm.ada.bob'), { code: 'forbidden' });
    await assert.rejects(ada.join('private.board'), { code: 'forbidden' });
    await eve.join('private.board');
    const news = roomName('news');
    await bob.join(news);
    await assert.rejects(bob.send(news, 'a token with `publish: []` reads only'), { code: 'forbidden' });
  } finally {
    ada.close();
    bob.close();
    eve.close();
  }
});
