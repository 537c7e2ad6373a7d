// The chat page in headless Debian chromium, driven by playwright-core.
//
// Started by `server/tests/browser.rs`, which runs Redis and two real nodes and passes their
// addresses in the environment. When this script needs something only the test can do
// (restart a node), it prints `@<command>` on stdout and waits for one line on stdin.
//
// Three parts:
// - against the real nodes: chat across nodes, rendering of hostile text, the room link, the
//   remembered name, an error frame from the server, a node restart, screenshots;
// - against a node that requires tokens: a sign-in link (`#token=`) chats under the token's
//   name, and a forged or expired token is explained and not retried; and across two such
//   nodes (`changes.mjs`), a direct message opened from the people panel, typing, an edit
//   and a delete;
// - against a scripted socket (playwright's WebSocket routing) with the page's clock under
//   the test's control: exact protocol steps a real server cannot be made to take on demand
//   (a pending send, a rate-limit error, a close with 1001 while time stands still) and the
//   fields of newer servers (members, presence, history, `since`, `recovered`);
// - the people panel (`people.mjs`): counts and names in a room of 150 on the real nodes, and
//   against the scripted socket a rate-limited page of names and the cap on names held.

import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';
import {
  DESKTOP, PHONE, WAIT_MS, assertNoProblems, connected, join, log, members, messageWithText,
  openPage, openScripted, received, required, say, screenshot, settledMessage, shownMessage,
  sleep, systemLines, until,
} from './pages.mjs';
import { directMessages } from './changes.mjs';
import { bigRoom, scriptedPeople } from './people.mjs';

const NODE1 = required('CHAT_TEST_NODE1_URL');
const NODE2 = required('CHAT_TEST_NODE2_URL');
const ARTIFACTS = required('CHAT_TEST_ARTIFACTS');
// A node started with --auth-secret, and that secret, to sign tokens as a login service would.
const AUTH_NODE = required('CHAT_TEST_AUTH_URL');
// A second such node on the same Redis, for direct messages across nodes.
const AUTH_NODE2 = required('CHAT_TEST_AUTH2_URL');
const AUTH_SECRET = required('CHAT_TEST_AUTH_SECRET');

const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

// ---- requests to the test that started this script ------------------------------------------

const replies = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

async function ask(command) {
  process.stdout.write(`@${command}\n`);
  const { value, done } = await replies.next();
  assert.ok(!done, `no answer to ${command}: stdin closed`);
  assert.equal(value, 'ok', `answer to ${command}`);
}

// ---- against real nodes -------------------------------------------------------------------------

async function acrossNodes(browser) {
  const room = `lobby-${process.pid}`;
  const contextA = await browser.newContext({ viewport: DESKTOP });
  const contextB = await browser.newContext({ viewport: DESKTOP });

  log('the room comes from the link; A joins on node 1, B on node 2');
  const a = await openPage(contextA, `${NODE1}/#room=${room}`, 'A');
  assert.equal(await a.inputValue('#room'), room, 'room taken from the link');
  await join(a, 'Ada');
  assert.equal(await a.textContent('#node'), 'node-1');
  assert.equal(await a.textContent('#room-name'), room);
  assert.equal(new URL(a.url()).hash, `#room=${room}`, 'the address is a link to the room');
  const b = await openPage(contextB, `${NODE2}/#room=${room}`, 'B');
  await join(b, 'Bob');
  assert.equal(await b.textContent('#node'), 'node-2');
  const joined = b.serverFrames.find((frame) => frame.type === 'joined');
  if (!Array.isArray(joined.history)) {
    // A server without history: the page says so instead of implying there was none.
    assert.match((await systemLines(b)).join('\n'), /Earlier messages are not shown/);
  }

  log('A sends, B shows it under A\'s name; B replies, A shows it');
  await say(a, 'Hello from node 1');
  const sent = await settledMessage(a, 'Hello from node 1');
  assert.ok(sent.own && !sent.failed && sent.id, `A's own message is acknowledged: ${JSON.stringify(sent)}`);
  const got = await shownMessage(b, 'Hello from node 1');
  assert.deepEqual([got.from, got.own, got.id], ['Ada', false, sent.id]);
  assert.match(got.time, /\d/, 'the message shows its time');
  await say(b, 'Hi Ada, this is node 2');
  assert.equal((await shownMessage(a, 'Hi Ada, this is node 2')).from, 'Bob');
  assert.equal((await settledMessage(b, 'Hi Ada, this is node 2')).own, true);

  log('hostile text is shown as text and runs nothing');
  const hostile = 'look: <img src=x onerror=alert(1)> <script>alert(2)</script> <b>bold</b>';
  await say(a, hostile);
  assert.equal((await shownMessage(b, hostile)).text, hostile);
  assert.equal((await settledMessage(a, hostile)).text, hostile);
  for (const page of [a, b]) {
    assert.equal(await page.locator('#messages img, #messages script, #messages b').count(), 0,
      'no element was made from message text');
  }

  log('the people list: the count and the names, on both nodes');
  for (const page of [a, b]) {
    await until('the page lists Ada and Bob', async () => (await members(page)).join() === 'Ada,Bob'
      && (await page.textContent('#people-title')) === '2 people here');
  }

  log('an error frame from the server is shown next to its message');
  const longText = `${'too long '.repeat(30)}end`; // over node 2's --max-text-bytes of 200
  await say(b, longText);
  const failed = await until('the too-long message fails', async () => {
    const shown = await shownMessage(b, longText);
    return shown.failed && shown;
  });
  assert.match(failed.error, /^Not sent: .*200 bytes/, `error text shown: ${failed.error}`);
  assert.equal(failed.retry, false, 'no retry offered for a message that cannot be sent');
  assert.equal(await messageWithText(a, longText).count(), 0, 'a refused message reaches nobody');

  log('the name is remembered');
  const again = await openPage(contextA, `${NODE1}/`, 'A2');
  assert.equal(await again.inputValue('#name'), 'Ada');
  await again.close();

  await screenshot(a, 'desktop.png', DESKTOP);
  await screenshot(b, 'phone.png', PHONE);
  await b.click('#members-toggle');
  await b.locator('#people').waitFor({ state: 'visible' });
  await screenshot(b, 'phone-people.png', PHONE);
  await b.click('#members-toggle');
  await b.setViewportSize(DESKTOP);

  log('node 1 restarts; A reconnects by itself and keeps chatting');
  const rejoinsBefore = (await systemLines(a)).filter((line) => line.startsWith('Rejoined')).length;
  await ask('restart node-1');
  await until('A rejoins', async () => (await systemLines(a))
    .filter((line) => line.startsWith('Rejoined')).length > rejoinsBefore);
  await connected(a);
  assert.equal(await a.textContent('#node'), 'node-1');
  await say(a, 'Back after the restart');
  assert.equal((await shownMessage(b, 'Back after the restart')).from, 'Ada');
  await say(b, 'Welcome back');
  assert.equal((await shownMessage(a, 'Welcome back')).from, 'Bob');
  assert.ok((await settledMessage(a, 'Back after the restart')).id);

  assertNoProblems(a, b);
  await contextA.close();
  await contextB.close();
}

// ---- against a node that requires tokens --------------------------------------------------------

function jwt(claims, secret = AUTH_SECRET) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const signed = `${part({ alg: 'HS256', typ: 'JWT' })}.${part(claims)}`;
  return `${signed}.${createHmac('sha256', secret).update(signed).digest('base64url')}`;
}

const nowSecs = () => Math.floor(Date.now() / 1000);

// Opens a sign-in link and joins; returns the page and how many sockets it has opened.
async function openSignedIn(context, room, token, label) {
  const page = await openPage(context, `${AUTH_NODE}/#room=${room}&token=${token}`, label);
  const sockets = { count: 0 };
  page.on('websocket', () => { sockets.count += 1; });
  assert.equal(new URL(page.url()).hash, `#room=${room}`, 'the token left the address bar');
  assert.equal(await page.locator('#name').isVisible(), false, 'no name to type: the token has it');
  await page.click('#join-button');
  await page.locator('#chat').waitFor({ state: 'visible', timeout: WAIT_MS });
  return { page, sockets };
}

// A refused or expired sign-in is said plainly, and the page does not retry with it.
async function expectSignedOut(page, sockets, text) {
  await page.locator('#status[data-state="signed-out"]').waitFor({ timeout: WAIT_MS });
  assert.match(await page.textContent('#notice'), text);
  assert.match((await systemLines(page)).join('\n'), text);
  await sleep(2000);
  assert.equal(sockets.count, 1, 'no reconnect with a dead token');
  assert.equal(await page.locator('#text').isDisabled(), true, 'nothing to send with');
}

async function signIn(browser) {
  const room = `signed-${process.pid}`;
  const context = await browser.newContext({ viewport: DESKTOP });

  log('a sign-in link: the page chats under the token\'s name');
  const valid = jwt({ sub: 'Tess', exp: nowSecs() + 300 });
  const { page: tess } = await openSignedIn(context, room, valid, 'signed-in');
  await connected(tess);
  assert.equal(await tess.textContent('#me'), 'Tess');
  assert.equal(new URL(tess.url()).hash, `#room=${room}`, 'no token in the address');
  await say(tess, 'signed in and chatting');
  const sent = await settledMessage(tess, 'signed in and chatting');
  assert.deepEqual([sent.from, sent.own], ['Tess', true]);

  log('a forged token is refused, and said so');
  const forged = jwt({ sub: 'Mallory', exp: nowSecs() + 300 }, 'not the secret, but as long as it');
  const refused = await openSignedIn(context, room, forged, 'forged');
  await expectSignedOut(refused.page, refused.sockets, /Your sign-in was refused/);

  log('a token that expires during the session: closed with 4003, and said so');
  // Honoured until exp plus the node's 5 s leeway, so this session lasts about 5 s.
  const expiring = jwt({ sub: 'Eve', exp: nowSecs() });
  const expired = await openSignedIn(context, room, expiring, 'expiring');
  await connected(expired.page);
  await expectSignedOut(expired.page, expired.sockets, /Your sign-in has expired; reload with a fresh link/);
  await screenshot(expired.page, 'signed-out.png', DESKTOP);

  assertNoProblems(tess, refused.page, expired.page);
  await context.close();
}

// ---- against a scripted socket ------------------------------------------------------------------


function chat(id, from, text) {
  return { type: 'message', room: 'scripted', id, from, text, ts: Date.UTC(2026, 0, 5, 9, 30) };
}

async function scriptedProtocol(browser) {
  const { context, server, page } = await openScripted(browser, NODE1, 'scripted');
  const first = await server.connection(1);
  const firstJoin = await received(first, 'join');
  assert.equal(firstJoin.room, 'scripted');
  assert.equal(firstJoin.since, undefined, 'a first join asks for no history');

  log('members, history and presence');
  first.send({
    type: 'joined',
    room: 'scripted',
    count: 2,
    members: ['Ada', 'Bob'],
    history: [chat('m1', 'Bob', 'from history'), chat('m2', 'Ada', 'my earlier message')],
    recovered: true,
  });
  await connected(page);
  assert.equal((await shownMessage(page, 'from history')).from, 'Bob');
  assert.equal((await shownMessage(page, 'my earlier message')).own, true);
  assert.deepEqual(await members(page), ['Ada', 'Bob']);
  assert.equal(await page.textContent('#people-title'), '2 people here');
  assert.doesNotMatch((await systemLines(page)).join('\n'), /not shown|missing/);
  first.send({ type: 'presence', room: 'scripted', count: 2, joins: ['Cy'], leaves: ['Bob'] });
  first.send({ type: 'presence', room: 'elsewhere', count: 9, joins: ['Eve'], leaves: [] });
  await until('Cy in, Bob out', async () => (await members(page)).join() === 'Ada,Cy');
  assert.equal(await page.textContent('#people-title'), '2 people here');
  first.send(chat('m1', 'Bob', 'from history')); // a repeat is shown once
  first.send(chat('m3', 'Cy', 'hello, live'));
  await shownMessage(page, 'hello, live');
  assert.equal(await messageWithText(page, 'from history').count(), 1);

  log('a message is pending until its ack; an echo before the ack is not shown twice');
  await say(page, 'wait for it');
  const send1 = await received(first, 'send', 0);
  assert.deepEqual([send1.room, send1.text], ['scripted', 'wait for it']);
  const pending = await shownMessage(page, 'wait for it');
  assert.ok(pending.pending && pending.own, 'shown as pending before the ack');
  first.send({ type: 'ack', ref: send1.ref, id: 'm4' });
  first.send(chat('m4', 'Ada', 'wait for it'));
  assert.equal((await settledMessage(page, 'wait for it')).id, 'm4');
  await say(page, 'echo first');
  const send2 = await received(first, 'send', 1);
  first.send(chat('m5', 'Ada', 'echo first'));
  first.send({ type: 'ack', ref: send2.ref, id: 'm5' });
  assert.equal((await settledMessage(page, 'echo first')).id, 'm5');

  log('an error frame\'s text is shown next to its message');
  await say(page, 'one too many');
  const send3 = await received(first, 'send', 2);
  first.send({
    type: 'error', code: 'rate_limited', ref: send3.ref,
    message: 'slow down: at most 10 messages per 10 s', retry_after_ms: 1500,
  });
  const limited = await until('the rate-limited message fails', async () => {
    const shown = await shownMessage(page, 'one too many');
    return shown.failed && shown;
  });
  assert.equal(limited.error, 'Not sent: slow down: at most 10 messages per 10 s. Try again in 2 s.');
  assert.equal(limited.retry, true, 'a rate-limited message can be sent again');

  log('close 1001: reconnect at once (time stands still), rejoin with since');
  await page.clock.pauseAt(Date.now() + 1000);
  first.close(1001);
  const second = await server.connection(2);
  const secondJoin = await received(second, 'join');
  assert.equal(secondJoin.since, 'm5', 'the rejoin asks for what came after the last message');
  second.send({
    type: 'joined',
    room: 'scripted',
    count: 2,
    members: ['Ada', 'Bob'],
    history: [chat('m4', 'Ada', 'wait for it'), chat('m5', 'Ada', 'echo first'),
      chat('m6', 'Bob', 'while you were away')],
    recovered: false,
  });
  await connected(page);
  await shownMessage(page, 'while you were away');
  await shownMessage(page, 'wait for it');
  await shownMessage(page, 'echo first');
  const lines = (await systemLines(page)).join('\n');
  assert.match(lines, /Some messages may be missing/);
  assert.match(lines, /Rejoined via node scripted-2/);
  assert.deepEqual(await members(page), ['Ada', 'Bob']);

  log('other closes: back off with a countdown, then reconnect');
  await say(page, 'ack lost');
  const send4 = await received(second, 'send', 0);
  assert.equal(send4.text, 'ack lost');
  second.close(1011);
  await page.locator('#status[data-state="reconnecting"]').waitFor({ timeout: WAIT_MS });
  assert.match(await page.textContent('#status'), /^reconnecting in \d+ s$/);
  assert.match((await shownMessage(page, 'ack lost')).error, /connection lost/);
  await sleep(500);
  assert.equal(server.connections.length, 2, 'no reconnect before the backoff');
  await page.clock.runFor(10_000);
  const third = await server.connection(3);
  assert.equal((await received(third, 'join')).since, 'm6');
  third.send({
    type: 'joined', room: 'scripted', count: 1, members: ['Ada'],
    history: [chat('m7', 'Ada', 'ack lost')], recovered: true,
  });
  await connected(page);
  const recovered = await shownMessage(page, 'ack lost');
  assert.deepEqual([recovered.failed, recovered.error, recovered.id], [false, '', 'm7'],
    'history confirms the message whose ack was lost');
  await screenshot(page, 'scripted-desktop.png', DESKTOP);

  assertNoProblems(page);
  await context.close();
}

// ---- main ----------------------------------------------------------------------------------------

mkdirSync(ARTIFACTS, { recursive: true });
// playwright starts chromium with a fresh --user-data-dir of its own and removes it afterwards.
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: CHROMIUM_ARGS,
  timeout: 60_000,
});
try {
  await scriptedProtocol(browser);
  await scriptedPeople(browser, NODE1);
  await acrossNodes(browser);
  await bigRoom(browser, NODE1, NODE2);
  await signIn(browser);
  await directMessages(browser, { node1: AUTH_NODE, node2: AUTH_NODE2, jwt, nowSecs });
  log('all passed');
} finally {
  await browser.close();
  replies.return?.();
  process.stdin.destroy();
}
