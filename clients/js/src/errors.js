// @ts-check
// What a refused request or a lost connection looks like to the application: an Error with the
// protocol's stable `code` (docs/protocol.md, "Errors") so callers branch on codes, never on
// the human-readable message, which the server may change.

/** Close codes the library acts on (docs/protocol.md, "Close codes"). */
export const CloseCode = Object.freeze({
  NORMAL: 1000,
  GOING_AWAY: 1001,
  POLICY: 1008,
  SLOW_CONSUMER: 4001,
  IDLE: 4002,
  TOKEN_EXPIRED: 4003,
});

/**
 * Codes made by the library itself rather than sent by a server:
 * - `connection_lost`: the connection dropped before the reply came. For a `send` this is
 *   ambiguous: the message may have been published (look for it in the history of the rejoin).
 * - `closed`: `close()` was called, or the library stopped reconnecting (refused token).
 * - `queue_full`: too many sends are waiting for a connection (`maxQueued`).
 */
export class ChatError extends Error {
  /**
   * @param {string} code the protocol's error code, or one of the library's own above
   * @param {string} message for humans
   * @param {{ retryAfterMs?: number, ref?: string, room?: string }} [details]
   */
  constructor(code, message, details = {}) {
    super(message || code);
    this.name = 'ChatError';
    /** @type {string} */
    this.code = code;
    /** Milliseconds to wait before trying again; only with `rate_limited`. @type {number | undefined} */
    this.retryAfterMs = details.retryAfterMs;
    /** @type {string | undefined} */
    this.ref = details.ref;
    /** The room of the refused request, when it had one. @type {string | undefined} */
    this.room = details.room;
  }
}

/**
 * The ChatError an `error` frame stands for.
 * @param {{ code?: unknown, message?: unknown, retry_after_ms?: unknown, ref?: unknown }} frame
 * @param {string} [room]
 * @returns {ChatError}
 */
export function errorFromFrame(frame, room) {
  const wait = Number(frame.retry_after_ms);
  return new ChatError(String(frame.code || 'error'), String(frame.message || ''), {
    retryAfterMs: Number.isFinite(wait) && wait >= 0 ? wait : undefined,
    ref: typeof frame.ref === 'string' ? frame.ref : undefined,
    room,
  });
}
