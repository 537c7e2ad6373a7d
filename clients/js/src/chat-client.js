// @ts-check
// The chat server's JavaScript client: one object that owns a WebSocket to a node and keeps
// the protocol's promises (docs/protocol.md) so applications do not have to. It reconnects
// with capped, jittered backoff (at once when a node goes away with 1001), rejoins every room
// with `since` so nothing is missed, settles each request from its reply, and stays small:
// no dependencies, the same file in browsers and in Node.js (pass a WebSocket class there).

import { ChatError, CloseCode, errorFromFrame } from './errors.js';
import { Emitter } from './emitter.js';
import { isNewer } from './message-ids.js';

export { ChatError, CloseCode } from './errors.js';

/**
 * @typedef {{ type: 'message', id: string, room: string, from: string, text: string, ts: number }} Message
 * @typedef {{ type: 'edited', id: string, room: string, from: string, target: string, text: string,
 *   ts: number }} Edited
 *   The author replaced the text of message `target`; `id` is the edit's own place in the room.
 * @typedef {{ type: 'deleted', id: string, room: string, from: string, target: string, ts: number }} Deleted
 *   The author deleted message `target`.
 * @typedef {Message | Edited | Deleted} RoomEvent what a room's history holds, in id order
 * @typedef {{ type: 'typing', room: string, from: string }} Typing
 * @typedef {{ type: 'welcome', node: string, session: string, name: string }} Welcome
 * @typedef {{ type: 'joined', room: string, count: number, members: string[],
 *   more_members?: boolean, history: RoomEvent[], recovered?: boolean }} JoinedFrame
 * @typedef {JoinedFrame & { rejoin: boolean, since: string }} Joined
 *   `rejoin`: the library joined again after a reconnect; `since`: the id it asked after
 *   ('' for none), so `recovered` is meaningful exactly when `since` is not empty.
 * @typedef {{ type: 'members', room: string, count: number, members: string[],
 *   more_members?: boolean }} MembersPage
 * @typedef {{ type: 'presence', room: string, count: number, joins?: string[],
 *   leaves?: string[] }} Presence
 * @typedef {{ code: number, reason: string, error: ChatError | null,
 *   reconnectInMs: number | null }} CloseInfo
 *   `error`: the `error` frame that came just before the close (why a handshake was refused);
 *   `reconnectInMs`: when the library connects again, or null when it stopped.
 * @typedef {'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed'} ConnectionState
 * @typedef {{ state: ConnectionState, retryAt?: number }} StateChange
 * @typedef {{ welcome: Welcome, joined: Joined, message: Message, edited: Edited,
 *   deleted: Deleted, typing: Typing, presence: Presence,
 *   close: CloseInfo, state: StateChange, error: ChatError }} EventMap
 * @typedef {string | (() => string | null | undefined | Promise<string | null | undefined>)} TokenSource
 * @typedef {{ new (url: string): WebSocketLike }} WebSocketClass
 * @typedef {{ readyState: number, send(data: string): void, close(code?: number, reason?: string): void,
 *   addEventListener(type: string, listener: (event: any) => void): void }} WebSocketLike
 * @typedef {object} ChatClientOptions
 * @property {string | (() => string)} url the node's `/ws` address (`wss://host/ws`); a
 *   function is asked on every (re)connect, for example to try another node
 * @property {string} [name] the name to chat under, when the server takes names from the query
 * @property {TokenSource} [token] a token, or a function that returns a fresh one; called on
 *   every (re)connect. With a fixed string, a session whose token expired (4003) is not resumed
 * @property {WebSocketClass} [WebSocket] defaults to the global WebSocket (browsers, Node 22+)
 * @property {number} [backoffInitialMs] first reconnect delay's ceiling, 500 by default
 * @property {number} [backoffMaxMs] cap of the reconnect delay, 10,000 by default
 * @property {number} [maxQueued] sends kept while disconnected, 100 by default
 */

const OPEN = 1;
/** A rejoin refused with `unavailable` (Redis down) is tried again after this long. */
const UNAVAILABLE_RETRY_MS = 1000;
/** The server publishes one typing signal per room every 2 s; sending more is wasted. */
const TYPING_INTERVAL_MS = 2000;

/**
 * @typedef {{ ref: string, type: string, room: string, since?: string, rejoin?: boolean,
 *   onJoined?: (joined: Joined) => void,
 *   resolve: (value: any) => void, reject: (error: ChatError) => void }} Request
 * @typedef {{ lastId: string, joined: boolean, ever: boolean, timer: any, typedAt?: number,
 *   waiters: Array<{ resolve: (joined: Joined) => void, reject: (error: ChatError) => void }> }} Room
 */

/** @extends {Emitter<EventMap>} */
export class ChatClient extends Emitter {
  /** @param {ChatClientOptions} options */
  constructor(options) {
    super();
    if (!options || !options.url) throw new TypeError('ChatClient needs a url');
    this.options = options;
    /** @type {WebSocketClass | undefined} */
    this.WebSocket = options.WebSocket || /** @type {any} */ (globalThis).WebSocket;
    if (!this.WebSocket) throw new TypeError('no WebSocket: pass one as options.WebSocket');
    /** @type {ConnectionState} */
    this.state = 'idle';
    /** The welcome of the current connection, null while not connected. @type {Welcome | null} */
    this.session = null;
    /** @type {WebSocketLike | null} */
    this.socket = null;
    /** @type {Map<string, Room>} */
    this.rooms = new Map();
    /** Requests awaiting their reply, in the order sent (replies come in that order). @type {Request[]} */
    this.inflight = [];
    /** Sends made while disconnected. @type {Array<{ room: string, text: string, resolve: (id: string) => void, reject: (e: ChatError) => void }>} */
    this.queued = [];
    this.refCounter = 0;
    this.attempt = 0;
    /** @type {any} */
    this.retryTimer = null;
    this.welcomed = false;
    /** @type {ChatError | null} */
    this.lastError = null;
  }

  /** Connects, unless already connected or connecting. */
  connect() {
    if (this.state === 'connecting' || this.state === 'open') return;
    this.open();
  }

  /** Skips the wait of a pending reconnect (for example when the network comes back). */
  reconnectNow() {
    if (this.state === 'reconnecting') this.open();
  }

  /** Closes for good: pending requests and queued sends are rejected with `closed`. */
  close() {
    this.stop(new ChatError('closed', 'the client was closed'));
    this.setState({ state: 'closed' });
  }

  /** Whether the connection is up and `room` joined on it. @param {string} room */
  isJoined(room) {
    return this.state === 'open' && Boolean(this.rooms.get(room)?.joined);
  }

  /** The id of the newest message seen in `room` ('' for none). @param {string} room */
  lastId(room) {
    return this.rooms.get(room)?.lastId || '';
  }

  /**
   * Joins `room`, now or once connected, and keeps it joined across reconnects until `leave`.
   * Resolves with the `joined` reply; a join refused with `rate_limited` or `unavailable` is
   * tried again by the library, any other refusal rejects.
   * @param {string} room
   * @returns {Promise<Joined>}
   */
  join(room) {
    return new Promise((resolve, reject) => {
      const known = this.rooms.get(room);
      const record = known || { lastId: '', joined: false, ever: false, timer: null, waiters: [] };
      record.waiters.push({ resolve, reject });
      this.rooms.set(room, record);
      if (this.state === 'idle' || this.state === 'closed') this.connect();
      else if (this.welcomed && !record.timer) this.sendJoin(room, record);
    });
  }

  /**
   * Leaves `room`; the library stops rejoining it at once. Resolves with the `left` reply, or
   * right away when not connected (a new connection is in no room).
   * @param {string} room
   * @returns {Promise<void>}
   */
  leave(room) {
    const record = this.rooms.get(room);
    this.rooms.delete(room);
    if (record) {
      clearTimeout(record.timer);
      const error = new ChatError('left', `left ${room}`, { room });
      record.waiters.forEach((waiter) => waiter.reject(error));
    }
    if (!this.welcomed) return Promise.resolve();
    return this.request({ type: 'leave', room }).then(() => undefined);
  }

  /**
   * Sends `text` to `room`. Resolves with the message's id once the server's broker took it
   * (`ack`); rejects with the server's `error` (a ChatError with `code`, and `retryAfterMs`
   * for `rate_limited`), or `connection_lost` when the connection dropped before the reply.
   * While disconnected, up to `maxQueued` sends wait and go out after the rejoins.
   * @param {string} room
   * @param {string} text
   * @returns {Promise<string>}
   */
  send(room, text) {
    if (this.state === 'closed') return Promise.reject(new ChatError('closed', 'the client is closed'));
    if (this.welcomed) return this.request({ type: 'send', room, text });
    const max = this.options.maxQueued ?? 100;
    if (this.queued.length >= max) {
      return Promise.reject(new ChatError('queue_full', `${max} sends already wait for a connection`));
    }
    return new Promise((resolve, reject) => { this.queued.push({ room, text, resolve, reject }); });
  }

  /**
   * Replaces the text of one's own message `id` in `room`. Resolves with the id of the edit
   * (every member, this client included, gets an `edited` event); rejects with `forbidden`
   * for someone else's message, `not_found` for one the room's history no longer holds or
   * that was deleted, or any refusal a send can get.
   * @param {string} room
   * @param {string} id
   * @param {string} text
   * @returns {Promise<string>}
   */
  edit(room, id, text) {
    if (!this.welcomed) return Promise.reject(new ChatError('connection_lost', 'not connected'));
    return this.request({ type: 'edit', room, id, text });
  }

  /**
   * Deletes one's own message `id` in `room`; like `edit`, members get a `deleted` event.
   * @param {string} room
   * @param {string} id
   * @returns {Promise<string>}
   */
  deleteMessage(room, id) {
    if (!this.welcomed) return Promise.reject(new ChatError('connection_lost', 'not connected'));
    return this.request({ type: 'delete', room, id });
  }

  /**
   * Tells `room`'s other members that this user is typing; call it on every keystroke. At
   * most one signal per room goes out every 2 s (the server drops more anyway), and none
   * while disconnected: typing is best-effort and never answered. Returns whether one went.
   * @param {string} room
   * @returns {boolean}
   */
  typing(room) {
    const record = this.rooms.get(room);
    const socket = this.socket;
    if (!record || !record.joined || !this.welcomed || !socket || socket.readyState !== OPEN) return false;
    const now = Date.now();
    if (record.typedAt !== undefined && now - record.typedAt < TYPING_INTERVAL_MS) return false;
    record.typedAt = now;
    socket.send(JSON.stringify({ type: 'typing', room }));
    return true;
  }

  /**
   * A page of `room`'s member names after `after` (the last name of the previous page, or of
   * `joined`'s `members`). Rejects with `rate_limited` and `retryAfterMs` over the join budget.
   * @param {string} room
   * @param {string} [after]
   * @returns {Promise<MembersPage>}
   */
  members(room, after = '') {
    if (!this.welcomed) return Promise.reject(new ChatError('connection_lost', 'not connected'));
    return this.request({ type: 'members', room, after });
  }

  // ---- connection ---------------------------------------------------------------------------

  /** @param {StateChange} change */
  setState(change) {
    this.state = change.state;
    this.emit('state', change);
  }

  async open() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.dropSocket();
    this.setState({ state: 'connecting' });
    let url;
    try {
      url = await this.handshakeUrl();
    } catch (error) {
      this.lastError = new ChatError('token_unavailable', String(error));
      this.onClose({ code: 1006, reason: 'no token' }, null);
      return;
    }
    if (this.state !== 'connecting') return; // closed while the token was fetched
    const socket = new /** @type {WebSocketClass} */ (this.WebSocket)(url);
    this.socket = socket;
    this.welcomed = false;
    this.lastError = null;
    // Events of a socket that was replaced or closed on purpose are stale.
    socket.addEventListener('message', (event) => {
      if (socket === this.socket) this.onFrame(event.data);
    });
    socket.addEventListener('close', (event) => {
      if (socket === this.socket) this.onClose(event, socket);
    });
    // Every error is followed by a close; Node's `ws` throws on an error nobody listens to.
    socket.addEventListener('error', () => {});
  }

  async handshakeUrl() {
    const { url, name, token } = this.options;
    const address = new URL(typeof url === 'function' ? url() : url);
    if (name) address.searchParams.set('name', name);
    const value = typeof token === 'function' ? await token() : token;
    // Browsers cannot set headers on a handshake, so the server takes the token in the query.
    if (value) address.searchParams.set('token', value);
    return address.toString();
  }

  dropSocket() {
    const socket = this.socket;
    this.socket = null;
    if (socket) socket.close(CloseCode.NORMAL, 'reconnecting');
  }

  /**
   * @param {ChatError} error given to every pending promise
   */
  stop(error) {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.dropSocket();
    this.failInflight(error);
    this.welcomed = false;
    this.session = null;
    for (const [room, record] of this.rooms) {
      clearTimeout(record.timer);
      record.waiters.forEach((waiter) => waiter.reject(new ChatError(error.code, error.message, { room })));
    }
    this.rooms.clear();
    this.queued.splice(0).forEach((entry) => entry.reject(error));
  }

  /** @param {ChatError} error */
  failInflight(error) {
    for (const request of this.inflight.splice(0)) {
      // A join is not lost with its connection: the room is rejoined on the next one.
      if (request.type === 'leave') request.resolve(undefined);
      else if (request.type !== 'join') request.reject(error);
    }
  }

  /**
   * @param {{ code: number, reason?: string }} event
   * @param {WebSocketLike | null} socket
   */
  onClose(event, socket) {
    if (socket) this.socket = null;
    const wasWelcomed = this.welcomed;
    this.welcomed = false;
    this.session = null;
    for (const record of this.rooms.values()) {
      record.joined = false;
      clearTimeout(record.timer);
      record.timer = null;
    }
    this.failInflight(new ChatError('connection_lost',
      'the connection closed before the reply; a message may still have been published'));
    const code = event.code;
    const error = this.lastError;
    const refused = code === CloseCode.POLICY && error
      && (error.code === 'unauthorized' || error.code === 'invalid_name');
    const expiredForGood = code === CloseCode.TOKEN_EXPIRED && typeof this.options.token !== 'function';
    /** @type {number | null} */
    let delay;
    if (refused || expiredForGood) {
      delay = null;
    } else if ((code === CloseCode.GOING_AWAY && wasWelcomed) || code === CloseCode.TOKEN_EXPIRED) {
      // Another node (or a fresh token) is ready now. Only a session that got as far as
      // welcome earns this, so a node refusing every connection with 1001 cannot cause a loop.
      delay = 0;
    } else {
      const initial = this.options.backoffInitialMs ?? 500;
      const ceiling = Math.min(this.options.backoffMaxMs ?? 10000, initial * 2 ** Math.min(this.attempt, 16));
      // Jitter spreads out the clients a dead node dropped at the same instant.
      delay = ceiling / 2 + Math.random() * (ceiling / 2);
      this.attempt += 1;
    }
    this.emit('close', { code, reason: event.reason || '', error, reconnectInMs: delay });
    if (this.state === 'closed' || this.retryTimer) return; // a listener decided otherwise
    if (delay === null) {
      this.stop(error || new ChatError('closed', `closed with ${code}`));
      this.setState({ state: 'closed' });
      return;
    }
    if (delay === 0) {
      // At once, not on a timer: nothing to wait for, and a page whose timers are throttled
      // (a background tab) would otherwise wait anyway.
      this.open();
      return;
    }
    this.setState({ state: 'reconnecting', retryAt: Date.now() + delay });
    this.retryTimer = setTimeout(() => this.open(), delay);
  }

  // ---- frames -------------------------------------------------------------------------------

  /** @param {unknown} data */
  onFrame(data) {
    let frame;
    try {
      frame = JSON.parse(String(data));
    } catch (_) {
      this.emit('error', new ChatError('bad_frame', 'the server sent a frame that is not JSON'));
      return;
    }
    if (!frame || typeof frame !== 'object') return;
    switch (frame.type) {
      case 'welcome': this.onWelcome(frame); break;
      case 'joined': this.reply(frame, (r) => r.type === 'join' && r.room === frame.room); break;
      case 'left': this.reply(frame, (r) => r.type === 'leave' && r.room === frame.room); break;
      case 'ack': case 'members': this.reply(frame, (r) => r.ref === frame.ref); break;
      case 'error': this.onError(frame); break;
      case 'message': case 'edited': case 'deleted': this.onMessage(frame); break;
      case 'typing': if (this.rooms.get(frame.room)?.joined) this.emit('typing', frame); break;
      case 'presence': if (this.rooms.has(frame.room)) this.emit('presence', frame); break;
      // Types added by newer servers are ignored, so this library keeps working against them.
      default: break;
    }
  }

  /** @param {Welcome} frame */
  onWelcome(frame) {
    this.welcomed = true;
    this.session = frame;
    this.setState({ state: 'open' });
    this.emit('welcome', frame);
    if (this.rooms.size === 0) this.attempt = 0;
    for (const [room, record] of this.rooms) this.sendJoin(room, record);
    // After the rejoins, so the server has each room back before its queued messages.
    for (const entry of this.queued.splice(0)) {
      this.request({ type: 'send', room: entry.room, text: entry.text }).then(entry.resolve, entry.reject);
    }
  }

  /**
   * @param {string} room
   * @param {Room} record
   */
  sendJoin(room, record) {
    record.timer = null;
    /** @type {Record<string, string>} */
    const frame = { type: 'join', room };
    if (record.lastId) frame.since = record.lastId;
    // `joined` is applied as its frame is read, not in a promise callback: the live messages
    // that follow it may be read in the same event (Node's `ws` hands over every frame of one
    // read at once), and one of them must not move the room's mark past the history first.
    const onJoined = (/** @type {Joined} */ joined) => this.onJoined(joined, record);
    this.request(frame, { since: record.lastId, rejoin: record.ever, onJoined })
      .catch((error) => this.onJoinError(error, room, record))
      .catch((error) => setTimeout(() => { throw error; }, 0));
  }

  /**
   * @param {Joined} joined
   * @param {Room} record
   */
  onJoined(joined, record) {
    if (this.rooms.get(joined.room) !== record) return; // left meanwhile
    record.joined = true;
    record.ever = true;
    // Only a completed join proves the node healthy, so only then is the backoff reset.
    this.attempt = 0;
    const history = (Array.isArray(joined.history) ? joined.history : [])
      .filter((message) => this.advance(record, message));
    const event = { ...joined, history };
    this.emit('joined', event);
    record.waiters.splice(0).forEach((waiter) => waiter.resolve(event));
  }

  /**
   * @param {ChatError} error
   * @param {string} room
   * @param {Room} record
   */
  onJoinError(error, room, record) {
    if (this.rooms.get(room) !== record || error.code === 'connection_lost') return;
    const retryMs = error.code === 'rate_limited' ? (error.retryAfterMs ?? UNAVAILABLE_RETRY_MS)
      : error.code === 'unavailable' ? UNAVAILABLE_RETRY_MS : null;
    this.emit('error', error);
    if (retryMs === null) {
      this.rooms.delete(room);
      record.waiters.splice(0).forEach((waiter) => waiter.reject(error));
      return;
    }
    record.timer = setTimeout(() => { if (this.welcomed) this.sendJoin(room, record); }, retryMs);
  }

  /**
   * Sends a request and settles with its reply.
   * @param {Record<string, string>} frame
   * @param {{ since?: string, rejoin?: boolean, onJoined?: (joined: Joined) => void }} [extra]
   *   `onJoined` is called with a `joined` reply as its frame is read, before the promise settles
   * @returns {Promise<any>}
   */
  request(frame, extra = {}) {
    return new Promise((resolve, reject) => {
      this.refCounter += 1;
      const ref = `${frame.type[0]}${this.refCounter}`;
      const socket = this.socket;
      if (!socket || socket.readyState !== OPEN) {
        reject(new ChatError('connection_lost', 'not connected'));
        return;
      }
      this.inflight.push({ ref, type: frame.type, room: frame.room, ...extra, resolve, reject });
      socket.send(JSON.stringify({ ...frame, ref }));
    });
  }

  /**
   * Settles the first request `matches` picks. Replies come in request order; `joined` and
   * `left` carry no ref, so those are matched by type and room.
   * @param {any} frame
   * @param {(request: Request) => boolean} matches
   */
  reply(frame, matches) {
    const index = this.inflight.findIndex(matches);
    if (index < 0) return;
    const [request] = this.inflight.splice(index, 1);
    if (frame.type === 'ack') request.resolve(frame.id);
    else if (frame.type === 'joined') {
      const joined = { ...frame, rejoin: Boolean(request.rejoin), since: request.since || '' };
      request.onJoined?.(joined);
      request.resolve(joined);
    } else request.resolve(frame);
  }

  /** @param {any} frame */
  onError(frame) {
    const index = frame.ref ? this.inflight.findIndex((r) => r.ref === frame.ref) : -1;
    if (index < 0) {
      // A refused handshake (`unauthorized`, `invalid_name`) comes just before the close.
      this.lastError = errorFromFrame(frame);
      this.emit('error', this.lastError);
      return;
    }
    const [request] = this.inflight.splice(index, 1);
    request.reject(errorFromFrame(frame, request.room));
    const record = this.rooms.get(request.room);
    if (frame.code === 'not_joined' && record && record.joined) {
      // The node no longer has this connection in the room; rejoining is the whole fix.
      record.joined = false;
      this.sendJoin(request.room, record);
    }
  }

  /**
   * A message, an edit or a deletion: they share the room's ids, so each moves its mark.
   * @param {RoomEvent} frame
   */
  onMessage(frame) {
    const record = this.rooms.get(frame.room);
    if (!record || typeof frame.id !== 'string') return;
    if (!this.advance(record, frame)) return;
    if (frame.type === 'edited') this.emit('edited', frame);
    else if (frame.type === 'deleted') this.emit('deleted', frame);
    else this.emit('message', frame);
  }

  /**
   * Moves the room's mark to `message` if it is news; false for one seen already.
   * @param {Room} record
   * @param {RoomEvent} message
   */
  advance(record, message) {
    if (record.lastId && !isNewer(message.id, record.lastId)) return false;
    record.lastId = message.id;
    return true;
  }
}
