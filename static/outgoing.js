// Your own messages: shown at once as pending, then settled by their ack or their error, and
// matched with their echo so that nothing is listed twice. The echo of a send can overtake its
// ack, and a send whose connection dropped before its ack may have been published after all,
// which the history of the rejoin then tells.
import { make, renderMessage, setTime } from './log.js';

// Sending the same text again cannot help with these, so failed messages offer no retry.
const PERMANENT_ERRORS = new Set(['bad_request', 'invalid_room', 'too_large', 'forbidden']);

// The server's own words (for example how long a rate limit lasts) say most; the code is the
// fallback and the tooltip.
function describeError(error) {
  const code = String(error.code || 'error');
  const what = error.message && error.message !== code ? error.message : code.replace(/_/g, ' ');
  const sentence = /[.!?]$/.test(what) ? what : `${what}.`;
  const wait = Number(error.retryAfterMs);
  const retry = wait > 0 ? ` Try again in ${Math.ceil(wait / 1000)} s.` : '';
  return `Not sent: ${sentence}${retry}`;
}

/**
 * Own messages in `log`. `byId` maps message ids to their entries and is shared with the
 * page. Hooks: `send(text)` sends and returns the promise of its id (null when not joined),
 * `me()` is the name the server knows this tab by, `showIncoming(frame)` lists a message,
 * `decorate(item)` adds the controls of an own message, `rejoining()` says the library is
 * joining the room again.
 */
export function createOutgoing(log, byId, hooks) {
  const pending = new Set(); // own entries awaiting their ack
  const early = new Map(); // message id -> own echo that overtook its ack
  // Own entries whose connection dropped before their ack: they may have been published.
  let unconfirmed = [];

  function settle(item) {
    pending.delete(item);
    if (pending.size === 0) flushEarly();
  }

  // Own echoes held back while sends were unacked that turned out to belong to none of them
  // (another tab with the same name, or a send whose ack was lost) are shown after all.
  function flushEarly() {
    const frames = [...early.values()];
    early.clear();
    frames.forEach(hooks.showIncoming);
  }

  function onAck(item, id) {
    // An entry of a room this tab has since left, or one already failed with its connection.
    if (!pending.has(item)) return;
    item.classList.remove('pending');
    item.dataset.id = id;
    byId.set(id, item);
    hooks.decorate(item);
    const echo = early.get(id);
    if (echo) {
      early.delete(id);
      setTime(item, echo.ts);
    }
    settle(item);
  }

  function onSendFailed(item, error) {
    if (!pending.has(item)) return;
    fail(item, describeError(error), error.code);
    // The client library rejoins by itself; say so until it has.
    if (error.code === 'not_joined') hooks.rejoining();
  }

  function fail(item, reason, code) {
    const text = item.querySelector('.text').textContent;
    item.classList.remove('pending');
    item.classList.add('failed');
    const error = make('span', 'error', reason);
    if (code) error.title = code;
    item.append(error);
    if (!PERMANENT_ERRORS.has(code)) {
      const retry = make('button', 'retry link', 'Retry');
      retry.type = 'button';
      retry.addEventListener('click', () => {
        if (send(text)) {
          item.remove();
          unconfirmed = unconfirmed.filter((other) => other !== item);
        }
      });
      item.append(retry);
    }
    settle(item);
  }

  // An own message from history that matches one whose ack was lost with the connection was
  // published after all: mark that entry sent rather than show the text twice.
  function confirmUnconfirmed(frame) {
    const index = unconfirmed.findIndex(
      (item) => item.querySelector('.text').textContent === frame.text,
    );
    if (index < 0) return false;
    const [item] = unconfirmed.splice(index, 1);
    item.classList.remove('failed');
    item.querySelectorAll('.error, .retry').forEach((node) => node.remove());
    item.dataset.id = frame.id;
    byId.set(frame.id, item);
    setTime(item, frame.ts);
    hooks.decorate(item);
    return true;
  }

  /** Lists `text` as pending and sends it; false when it could not be sent now. */
  function send(text) {
    const sent = hooks.send(text);
    if (!sent) return false;
    const item = renderMessage(hooks.me(), text, Date.now(), true);
    item.classList.add('pending');
    pending.add(item);
    log.append(item, true);
    sent.then((id) => onAck(item, id), (error) => onSendFailed(item, error));
    return true;
  }

  return {
    send,

    /**
     * A message from the server, live or from history. History and live messages take the
     * same path, so whatever arrives twice is shown once: the client library already drops
     * what it has seen by id order, and this also covers ids it cannot compare and matches
     * own echoes with their entries.
     */
    receive(frame, fromHistory) {
      if (!frame || typeof frame.id !== 'string') return;
      const known = byId.get(frame.id);
      if (known) {
        // The echo of an acked send: it confirms the entry already shown, with the server's
        // time.
        setTime(known, frame.ts);
        return;
      }
      if (early.has(frame.id)) return;
      const own = frame.from === hooks.me();
      if (fromHistory && own && confirmUnconfirmed(frame)) return;
      if (own && pending.size > 0) {
        // Probably the echo of a send whose ack is still on its way; hold it so the message is
        // never listed twice, and let the ack match it by id.
        early.set(frame.id, frame);
        return;
      }
      hooks.showIncoming(frame);
    },

    /** The connection dropped: every pending send is failed, and remembered as unconfirmed. */
    failAll(reason) {
      const items = [...pending];
      items.forEach((item) => fail(item, reason));
      // Entries pruned from the log can no longer be confirmed in place; dropping them keeps
      // this list as bounded as the log.
      unconfirmed = [...unconfirmed, ...items].filter((item) => item.isConnected);
    },

    /** Forgets everything, for another room. */
    reset() {
      pending.clear();
      early.clear();
      unconfirmed = [];
    },
  };
}
