// What the browser test's parts share: waiting, opening and watching pages, reading what a
// page shows, and a scripted server side of `/ws`. Split from `chat.test.mjs` so each part of
// the test stays readable on its own.

import assert from 'node:assert/strict';
import { join as joinPath } from 'node:path';
import { sleep, until as waitUntil } from '../clients/js/test/waiting.mjs';

// Every wait is generous: the machine running the tests may be busy.
export const WAIT_MS = 30_000;

export const DESKTOP = { width: 1280, height: 800 };
export const PHONE = { width: 390, height: 844 };

export function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set; run this through \`cargo test --test browser\``);
  return value;
}

export function log(text) {
  console.log(`[browser] ${text}`);
}

export { sleep };

/** `check()`'s first truthy value, waiting at most `timeoutMs` (generous by default). */
export const until = (what, check, timeoutMs = WAIT_MS) => waitUntil(what, check, timeoutMs);

// ---- pages --------------------------------------------------------------------------------------

// Records what must never happen on a page: dialogs (a script injected through a message
// would call alert) and uncaught errors.
export function watch(page, label) {
  page.problems = [];
  page.on('dialog', (dialog) => {
    page.problems.push(`${label}: dialog ${dialog.type()} "${dialog.message()}"`);
    dialog.dismiss().catch(() => {});
  });
  page.on('pageerror', (error) => page.problems.push(`${label}: page error ${error.message}`));
  page.on('console', (message) => {
    if (/Content.Security.Policy/i.test(message.text())) {
      page.problems.push(`${label}: ${message.text()}`);
    }
  });
  return page;
}

export function assertNoProblems(...pages) {
  assert.deepEqual(pages.flatMap((page) => page.problems), [], 'dialogs, errors or CSP reports');
}

export async function openPage(context, url, label) {
  const page = watch(await context.newPage(), label);
  // What the server said, so checks can follow servers that send more (members, history).
  page.serverFrames = [];
  page.on('websocket', (socket) => socket.on('framereceived', ({ payload }) => {
    try {
      page.serverFrames.push(JSON.parse(payload));
    } catch (_) {
      // Not JSON: the page reports it itself.
    }
  }));
  const response = await page.goto(url);
  assert.equal(response.status(), 200, `GET ${url}`);
  const csp = response.headers()['content-security-policy'] || '';
  assert.match(csp, /script-src 'self'/, 'the page comes with a strict CSP');
  assert.match(csp, /default-src 'none'/, 'the page comes with a strict CSP');
  return page;
}

export async function submitJoin(page, name) {
  await page.fill('#name', name);
  await page.click('#join-button');
  await page.locator('#chat').waitFor({ state: 'visible', timeout: WAIT_MS });
}

export async function join(page, name) {
  await submitJoin(page, name);
  await connected(page);
}

export async function connected(page) {
  await page.locator('#status[data-state="connected"]').waitFor({ timeout: WAIT_MS });
}

export async function say(page, text) {
  await page.fill('#text', text);
  await page.press('#text', 'Enter');
}

export function messageWithText(page, text) {
  return page.locator('#messages .message').filter({
    has: page.locator('.text', { hasText: text }),
  });
}

// Waits until exactly one message with `text` is shown and returns what it displays.
export async function shownMessage(page, text) {
  const item = messageWithText(page, text);
  await item.first().waitFor({ timeout: WAIT_MS });
  assert.equal(await item.count(), 1, `"${text}" is shown once`);
  return item.evaluate((node) => ({
    from: node.querySelector('.from').textContent,
    text: node.querySelector('.text').textContent,
    time: node.querySelector('.time').textContent,
    own: node.classList.contains('own'),
    pending: node.classList.contains('pending'),
    failed: node.classList.contains('failed'),
    error: node.querySelector('.error')?.textContent ?? '',
    retry: node.querySelector('.retry') !== null,
    id: node.dataset.id ?? '',
  }));
}

export async function settledMessage(page, text) {
  await until(`"${text}" is acknowledged`, async () => !(await shownMessage(page, text)).pending);
  return shownMessage(page, text);
}

export async function members(page) {
  return page.locator('#members .member .member-name').allTextContents();
}

export async function systemLines(page) {
  return page.locator('#messages .system').allTextContents();
}

export async function screenshot(page, file, viewport) {
  await page.setViewportSize(viewport);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `no horizontal scrolling at ${viewport.width} px (overflow ${overflow} px)`);
  const path = joinPath(required('CHAT_TEST_ARTIFACTS'), file);
  await page.screenshot({ path });
  log(`saved ${path}`);
}


// ---- a scripted socket ----------------------------------------------------------------------------

// Plays the server's side of /ws for one page: every connection the page opens is recorded
// with the frames it sent.
export function scriptedServer() {
  const connections = [];
  return {
    connections,
    async route(context) {
      await context.routeWebSocket(/\/ws(\?.*)?$/, (ws) => {
        const connection = {
          url: new URL(ws.url()),
          received: [],
          send: (frame) => ws.send(JSON.stringify(frame)),
          close: (code) => ws.close({ code, reason: '' }),
        };
        ws.onMessage((data) => connection.received.push(JSON.parse(data)));
        connections.push(connection);
        connection.send({
          type: 'welcome',
          node: `scripted-${connections.length}`,
          session: `s${connections.length}`,
          name: connection.url.searchParams.get('name'),
        });
      });
    },
    async connection(n) {
      return until(`connection ${n}`, () => connections[n - 1]);
    },
  };
}

export async function received(connection, type, index = 0) {
  return until(`a ${type} frame`, () => connection.received.filter((f) => f.type === type)[index]);
}

// A page of `origin` whose `/ws` is a scripted server and whose clock the test controls, with
// Ada joining the room `scripted`.
export async function openScripted(browser, origin, label) {
  const context = await browser.newContext({ viewport: DESKTOP });
  const server = scriptedServer();
  await server.route(context);
  const page = watch(await context.newPage(), label);
  await page.clock.install();
  await page.goto(`${origin}/#room=scripted`);
  await submitJoin(page, 'Ada');
  return { context, server, page };
}
