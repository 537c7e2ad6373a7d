// What the library's tests share: the nodes the Rust test started (from the environment),
// clients made for them with Node's `ws`, tokens, and waiting with a deadline.

import { createHmac } from 'node:crypto';
import WebSocket from 'ws';
import { ChatClient } from '../src/chat-client.js';
import { sleep, until as waitUntil } from './waiting.mjs';

// Every wait is generous: the machine running the tests may be busy.
export const WAIT_MS = 20_000;

export function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set; run this through \`cargo test --test js_client\``);
  return value;
}

/** The `/ws` address of a node given as `http://host:port`. */
export const wsUrl = (httpUrl) => `${httpUrl.replace(/^http/, 'ws')}/ws`;

export { sleep };

/** `check()`'s first truthy value, waiting at most `timeoutMs` (generous by default). */
export const until = (what, check, timeoutMs = WAIT_MS) => waitUntil(what, check, timeoutMs);

/** A client with short backoff (tests should not wait seconds) that records what it hears. */
export function client(options) {
  const chat = new ChatClient({ WebSocket, backoffInitialMs: 100, backoffMaxMs: 500, ...options });
  const seen = {
    messages: [], changes: [], typing: [], joined: [], presence: [], closes: [], errors: [], welcomes: [],
  };
  chat.on('message', (frame) => seen.messages.push(frame));
  chat.on('edited', (frame) => seen.changes.push(frame));
  chat.on('deleted', (frame) => seen.changes.push(frame));
  chat.on('typing', (frame) => seen.typing.push(frame));
  chat.on('joined', (joined) => {
    seen.joined.push(joined);
    seen.messages.push(...joined.history.filter((event) => event.type === 'message'));
    seen.changes.push(...joined.history.filter((event) => event.type !== 'message'));
  });
  chat.on('presence', (frame) => seen.presence.push(frame));
  chat.on('close', (info) => seen.closes.push(info));
  chat.on('error', (error) => seen.errors.push(error));
  chat.on('welcome', (frame) => seen.welcomes.push(frame));
  chat.seen = seen;
  return chat;
}

export const roomName = (prefix) => `${prefix}-${process.pid}-${Date.now() % 100000}`;

/** An HS256 JWT, signed as a login service would. */
export function jwt(claims, secret) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const signed = `${part({ alg: 'HS256', typ: 'JWT' })}.${part(claims)}`;
  return `${signed}.${createHmac('sha256', secret).update(signed).digest('base64url')}`;
}

export const nowSecs = () => Math.floor(Date.now() / 1000);
