// Direct messages, typing, edits and deletes in the page, against two real nodes that
// require tokens and share one Redis: Ada signs in on one node and Bob on the other, both in
// a team room; Ada's "message" on Bob's name opens their direct-message room, Bob follows a
// link to it (Ada has left the team room, so his panel no longer lists her), and there they
// see each other type, edit and delete, each on their own node.

import assert from 'node:assert/strict';
import {
  DESKTOP, PHONE, WAIT_MS, assertNoProblems, connected, log, openPage, say, screenshot, settledMessage,
  shownMessage, sleep, until,
} from './pages.mjs';

// Signs in on `node` with `token` in `room` and waits until connected.
async function signedIn(browser, node, room, token, label) {
  const context = await browser.newContext({ viewport: DESKTOP });
  const page = await openPage(context, `${node}/#room=${room}&token=${token}`, label);
  await page.click('#join-button');
  await connected(page);
  return page;
}

// Clicks "message" on `name` in the people panel and waits for the direct-message room.
async function openDirect(page, name, room) {
  const action = page.locator('#members .member', { hasText: name }).locator('.member-message');
  await action.waitFor({ timeout: WAIT_MS });
  await action.click();
  await until(`the page moves to #${room}`, async () => (await page.textContent('#room-name')) === room);
  await connected(page);
}

const textOf = (page, id) => page.locator(`#messages .message[data-id="${id}"] .text`).textContent();

export async function directMessages(browser, { node1, node2, jwt, nowSecs }) {
  const team = `team-${process.pid}`;
  const dm = 'dm.Ada.Bob';
  const token = (sub) => jwt({ sub, exp: nowSecs() + 300, rooms: [team] });
  const ada = await signedIn(browser, node1, team, token('Ada'), 'Ada');
  const bob = await signedIn(browser, node2, team, token('Bob'), 'Bob');

  log('"message" on a member opens a direct-message room; the other follows its link');
  await openDirect(ada, 'Bob', dm);
  assert.equal(new URL(ada.url()).hash, `#room=${dm}`);
  await bob.evaluate((room) => { location.hash = `#room=${room}`; }, dm);
  await until(`Bob's page moves to #${dm}`, async () => (await bob.textContent('#room-name')) === dm);
  await connected(bob);

  log('typing shows "Ada is typing…" on the other node, and clears by itself');
  await ada.fill('#text', 'hel');
  await ada.type('#text', 'o');
  await until('Bob sees Ada typing', async () => (await bob.textContent('#typing')) === 'Ada is typing…');
  assert.equal(await ada.textContent('#typing'), '', 'nobody sees their own typing');
  await until('the indicator clears', async () => (await bob.textContent('#typing')) === '', 10_000);

  log('an edit of an own message shows "(edited)" on both pages');
  await ada.press('#text', 'Enter');
  const sent = await settledMessage(ada, 'helo');
  await shownMessage(bob, 'helo');
  assert.equal(await bob.locator(`#messages .message[data-id="${sent.id}"] .message-action`).count(), 0,
    'nobody may edit or delete what someone else wrote');
  await ada.locator(`#messages .message[data-id="${sent.id}"] .message-action`, { hasText: 'Edit' }).click();
  assert.equal(await ada.inputValue('#text'), 'helo', 'the composer holds the text to edit');
  await ada.fill('#text', 'hello <b>Bob</b>');
  await ada.press('#text', 'Enter');
  for (const page of [ada, bob]) {
    await until('the edit shows', async () => (await textOf(page, sent.id)) === 'hello <b>Bob</b>');
    const mark = page.locator(`#messages .message[data-id="${sent.id}"] .edited`);
    assert.equal(await mark.textContent(), '(edited)');
    assert.equal(await page.locator('#messages b').count(), 0, 'edited text stays text');
  }

  log('a delete shows "message deleted" on both pages');
  await say(bob, 'see you');
  const reply = await settledMessage(bob, 'see you');
  await say(ada, 'oops, wrong room');
  const oops = await settledMessage(ada, 'oops, wrong room');
  await ada.locator(`#messages .message[data-id="${oops.id}"] .message-action`, { hasText: 'Delete' }).click();
  for (const page of [ada, bob]) {
    await until('the deletion shows', async () => (await textOf(page, oops.id)) === 'message deleted');
  }
  assert.equal(await textOf(ada, reply.id), 'see you');
  // Typing signals go out at most every 2 s, and Ada's last one went with her last message.
  await sleep(2100);
  await ada.fill('#text', 'still typing');
  await until('Bob sees Ada typing again', async () => (await bob.textContent('#typing')) === 'Ada is typing…');
  await screenshot(bob, 'direct-message.png', DESKTOP);
  await screenshot(ada, 'direct-message-phone.png', PHONE);

  log('a page that joins later shows the final text and the deletion');
  const late = await signedIn(browser, node2, dm, token('Bob'), 'Bob again');
  await until('history applies the edit', async () => (await textOf(late, sent.id)) === 'hello <b>Bob</b>');
  assert.equal(await textOf(late, oops.id), 'message deleted');
  assertNoProblems(ada, bob, late);
}
