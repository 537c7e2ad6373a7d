// The people panel: "N people here", the names the page holds, and "Show more".
//
// Against the real nodes, a crowd of plain WebSockets (opened from a page on node 2, so no
// WebSocket library is needed) fills a room past the first page of names, and pages on both
// nodes follow the count as people join and leave. Against the scripted socket, what a real
// room cannot be made to do quickly: a `rate_limited` page request retried after
// retry_after_ms, count-only presence, and the cap on the names a page holds.

import assert from 'node:assert/strict';
import {
  DESKTOP, assertNoProblems, connected, join, log, members, openPage, openScripted, received,
  screenshot, sleep, until, watch,
} from './pages.mjs';

// More than one page of names (the server's --members-max is 100 by default).
const CROWD = 150;
const CROWD_LEAVING = 50;
// The page's cap on names it holds (static/people.js).
const MAX_NAMES = 1000;

const title = (page) => page.textContent('#people-title');
const showMore = (page) => page.locator('#members-more');

// Waits until the page says `count` people are here and lists `names` names.
async function shows(page, count, names) {
  const text = count === 1 ? '1 person here' : `${count.toLocaleString('en')} people here`;
  await until(`the page shows "${text}" and ${names} names`, async () => (await title(page)) === text
    && (await members(page)).length === names);
}

// Opens `names` WebSockets from `page` (same origin, so the node's origin check passes) and
// joins each to `room`; they stay open until `leaveCrowd`.
async function startCrowd(page, room, names) {
  await page.evaluate(async ({ room, names }) => {
    const url = `${location.origin.replace(/^http/, 'ws')}/ws?name=`;
    const open = (name) => new Promise((resolve, reject) => {
      const socket = new WebSocket(url + encodeURIComponent(name));
      socket.onmessage = (event) => {
        const frame = JSON.parse(event.data);
        if (frame.type === 'welcome') socket.send(JSON.stringify({ type: 'join', room, ref: 'j' }));
        if (frame.type === 'joined') resolve(socket);
        if (frame.type === 'error') reject(new Error(`${name}: ${frame.code} ${frame.message}`));
      };
      socket.onclose = (event) => reject(new Error(`${name}: closed with ${event.code}`));
    });
    window.crowd = await Promise.all(names.map(open));
  }, { room, names });
}

async function leaveCrowd(page, count) {
  await page.evaluate((count) => window.crowd.splice(-count).forEach((s) => s.close()), count);
}

export async function bigRoom(browser, node1, node2) {
  const room = `big-${process.pid}`;
  const context = await browser.newContext({ viewport: DESKTOP });
  const crowdNames = Array.from({ length: CROWD }, (_, i) => `crowd-${String(i).padStart(3, '0')}`);

  log('alone in a room: 1 person here');
  const ada = await openPage(context, `${node1}/#room=${room}`, 'Ada');
  await join(ada, 'Ada');
  await shows(ada, 1, 1);
  assert.equal(await showMore(ada).isVisible(), false);

  log(`${CROWD} join on node 2: the page on node 1 follows from presence`);
  const crowd = watch(await context.newPage(), 'crowd');
  await crowd.goto(`${node2}/`);
  await startCrowd(crowd, room, crowdNames);
  await shows(ada, CROWD + 1, CROWD + 1);
  assert.equal(await showMore(ada).isVisible(), false, 'every name came with presence');

  log('a page joining the full room gets 100 names and "Show more" for the rest');
  const bea = await openPage(context, `${node2}/#room=${room}`, 'Bea');
  await join(bea, 'Bea');
  await shows(bea, CROWD + 2, 100);
  await showMore(bea).waitFor({ state: 'visible' });
  assert.deepEqual((await members(bea)).slice(0, 3), ['Ada', 'Bea', 'crowd-000']);
  await shows(ada, CROWD + 2, CROWD + 2);
  await showMore(bea).scrollIntoViewIfNeeded();
  await screenshot(bea, 'big-room.png', DESKTOP);
  await showMore(bea).click();
  await shows(bea, CROWD + 2, CROWD + 2);
  await showMore(bea).waitFor({ state: 'hidden' });
  assert.deepEqual(await members(bea), ['Ada', 'Bea', ...crowdNames]);
  const pages = bea.serverFrames.filter((frame) => frame.type === 'members');
  assert.equal(pages.length, 1, 'one page of names after the first');

  log(`${CROWD_LEAVING} leave: both pages follow`);
  await leaveCrowd(crowd, CROWD_LEAVING);
  const left = CROWD + 2 - CROWD_LEAVING;
  await shows(ada, left, left);
  await shows(bea, left, left);
  assert.deepEqual(await members(bea), ['Ada', 'Bea', ...crowdNames.slice(0, CROWD - CROWD_LEAVING)]);

  assertNoProblems(ada, bea, crowd);
  await context.close();
}

function names(from, count) {
  return Array.from({ length: count }, (_, i) => `n${String(from + i).padStart(4, '0')}`);
}

export async function scriptedPeople(browser, node1) {
  const { context, server, page } = await openScripted(browser, node1, 'scripted people');
  const socket = await server.connection(1);
  await received(socket, 'join');

  log('a room of thousands: the count, the first names, and "Show more"');
  const first = ['Ada', ...names(0, 99)];
  socket.send({
    type: 'joined', room: 'scripted', count: 1203, members: first, more_members: true, history: [],
  });
  await connected(page);
  await shows(page, 1203, 100);
  await showMore(page).waitFor({ state: 'visible' });

  log('presence without names changes only the count');
  socket.send({ type: 'presence', room: 'scripted', count: 1204 });
  await shows(page, 1204, 100);

  log('a rate-limited page of names is asked for again after retry_after_ms');
  await showMore(page).click();
  const ask1 = await received(socket, 'members', 0);
  assert.deepEqual([ask1.room, ask1.after], ['scripted', 'n0098']);
  socket.send({
    type: 'error', code: 'rate_limited', message: 'slow down', ref: ask1.ref, retry_after_ms: 60_000,
  });
  await sleep(300);
  assert.equal(socket.received.filter((f) => f.type === 'members').length, 1, 'no retry yet');
  assert.equal(await showMore(page).isDisabled(), true, 'the request is still pending');
  assert.equal(await page.textContent('#notice'), '', 'a rate limit is waited out quietly');
  await page.clock.runFor(60_000);
  const ask2 = await received(socket, 'members', 1);
  assert.equal(ask2.after, 'n0098');
  socket.send({
    type: 'members', room: 'scripted', count: 1204, members: names(99, 600), more_members: true,
    ref: ask2.ref,
  });
  await shows(page, 1204, 700);

  log(`the page holds at most ${MAX_NAMES} names and says so`);
  await showMore(page).click();
  const ask3 = await received(socket, 'members', 2);
  assert.equal(ask3.after, 'n0698');
  socket.send({
    type: 'members', room: 'scripted', count: 1204, members: names(699, 600), more_members: true,
    ref: ask3.ref,
  });
  await shows(page, 1204, MAX_NAMES);
  await showMore(page).waitFor({ state: 'hidden' });
  assert.equal(await page.textContent('#members-note'), 'Showing the first 1,000 names.');

  assertNoProblems(page);
  await context.close();
}
