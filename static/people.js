// The people panel: how many are in the room, and the names this page holds.
//
// A room may hold 50,000 people, so the page never asks for everyone: `joined` brings the
// count and the first page of names, `presence` keeps the count current (and the names, while
// the room is small enough for the server to send them), and "Show more" asks for the next
// page with `members`. The names held are capped, so a tab left open in a huge room stays
// small; the count is always the server's.
import { make } from './log.js';

// Beyond this many names the list stops growing and says it shows only the first ones. It
// matches the server's default --presence-names-max: above it, presence carries no names, so
// a longer list could not be kept current anyway.
export const MAX_NAMES = 1000;
// A `rate_limited` reply always carries retry_after_ms; this covers a reply without it.
const FALLBACK_RETRY_MS = 1000;

const numbers = new Intl.NumberFormat('en');

export function peopleHere(count) {
  return count === 1 ? '1 person here' : `${numbers.format(count)} people here`;
}

// The server pages names in byte order (code point order); comparing UTF-16 units agrees
// except between astral characters and U+E000–U+FFFF, where only the display order differs,
// because the page's cursor is always a name the server sent.
function serverOrder(a, b) {
  if (a === b) return 0;
  return a < b ? -1 : 1;
}

// The direct-message room of two names, as the server expects it: `dm.<a>.<b>` with `a`
// before `b` in byte order. Names with a dot or other characters a room name cannot hold
// have no such room (null), nor does a name with itself.
export function directRoom(a, b) {
  const usable = (name) => /^[A-Za-z0-9_-]+$/.test(name);
  if (!usable(a) || !usable(b) || a === b) return null;
  const room = a < b ? `dm.${a}.${b}` : `dm.${b}.${a}`;
  return room.length <= 64 ? room : null;
}

function validName(name) {
  return typeof name === 'string' && name !== '';
}

// `ui`: the elements of the panel. `io.members(room, after)` asks the client library for a
// page of names (a promise), `io.notice(text)` shows a passing problem, and
// `io.message(name)`, when given, opens a direct message with `name` (offered on every name
// `io.canMessage(name)` allows).
export function createPeople(ui, io) {
  const state = {
    room: '',
    me: '',
    count: 0,
    names: new Set(),
    // The last name of the last page the server sent: where the next page starts.
    cursor: '',
    // Whether the server has names after the cursor.
    more: false,
    request: null, // the `members` request awaiting its reply: a token only it holds
    retryTimer: 0,
  };

  function cancelRequest() {
    clearTimeout(state.retryTimer);
    state.retryTimer = 0;
    state.request = null;
  }

  function add(name) {
    if (!validName(name) || state.names.has(name) || state.names.size >= MAX_NAMES) return;
    state.names.add(name);
  }

  function addPage(names) {
    if (!Array.isArray(names)) return;
    names.forEach(add);
    const last = names.filter(validName).pop();
    if (last !== undefined) state.cursor = last;
  }

  function setCount(count) {
    // A server frame without a count (it always has one) leaves the list as the best guess.
    state.count = Number.isSafeInteger(count) && count >= 0 ? count : state.names.size;
  }

  function renderCount() {
    ui.title.textContent = peopleHere(state.count);
    ui.badge.textContent = numbers.format(state.count);
  }

  function renderNames() {
    const names = [...state.names].sort(serverOrder);
    ui.list.replaceChildren(...names.map((name) => {
      const item = make('li', name === state.me ? 'member me' : 'member');
      item.append(make('span', 'member-name', name));
      item.title = name;
      if (name !== state.me && io.canMessage?.(name)) {
        const action = make('button', 'link member-message', 'message');
        action.type = 'button';
        action.setAttribute('aria-label', `Message ${name}`);
        action.addEventListener('click', () => io.message(name));
        item.append(action);
      }
      return item;
    }));
    renderPaging();
  }

  function renderPaging() {
    const full = state.names.size >= MAX_NAMES;
    const capped = full && (state.more || state.count > state.names.size);
    ui.note.textContent = capped ? `Showing the first ${numbers.format(state.names.size)} names.` : '';
    ui.note.hidden = !capped;
    ui.more.hidden = !state.more || full;
    const busy = state.request !== null;
    ui.more.disabled = busy;
    ui.more.textContent = busy ? 'Loading…' : 'Show more';
  }

  function request() {
    state.retryTimer = 0;
    const token = {};
    state.request = token;
    renderPaging();
    // A reply to a request since cancelled (a new room, a lost connection) is stale.
    io.members(state.room, state.cursor).then(
      (frame) => { if (state.request === token) page(frame); },
      (error) => { if (state.request === token) failed(error); },
    );
  }

  function showMore() {
    if (state.request || !state.more || state.names.size >= MAX_NAMES) return;
    request();
  }

  function page(frame) {
    state.request = null;
    addPage(frame.members);
    state.more = frame.more_members === true;
    setCount(frame.count);
    renderCount();
    renderNames();
  }

  function failed(error) {
    if (error.code === 'rate_limited') {
      const wait = Number(error.retryAfterMs);
      // The request stays pending (the button stays busy) until the retry is answered.
      state.retryTimer = setTimeout(request, wait > 0 ? wait : FALLBACK_RETRY_MS);
      return;
    }
    state.request = null;
    renderPaging();
    // Without a connection there is nothing to say: the page shows that already.
    if (error.code !== 'connection_lost') {
      io.notice(`Could not load more names: ${error.message || error.code}`);
    }
  }

  ui.more.addEventListener('click', showMore);

  return {
    // A new room: nothing known yet.
    reset(room, me) {
      cancelRequest();
      Object.assign(state, { room, me, count: 0, cursor: '', more: false });
      state.names.clear();
      renderCount();
      renderNames();
    },

    // The connection dropped: a reply to a pending request can no longer come.
    disconnected() {
      cancelRequest();
      renderPaging();
    },

    // `joined` starts the list over: the first page of names and the count.
    joined(frame, me) {
      cancelRequest();
      state.me = me;
      state.names.clear();
      state.cursor = '';
      addPage(frame.members);
      // The server counts this connection; its name may sort beyond the first page.
      add(me);
      state.more = frame.more_members === true;
      setCount(frame.count);
      renderCount();
      renderNames();
    },

    presence(frame) {
      setCount(frame.count);
      renderCount();
      // Frames without names (a big room, or too many changes at once) change only the count.
      if (!Array.isArray(frame.joins) || !Array.isArray(frame.leaves)) {
        renderPaging();
        return;
      }
      // Leaves first, so that at the cap the names that came take the places of those gone.
      frame.leaves.forEach((name) => {
        // The server announces a name's leave only once its last connection left.
        if (name !== state.me) state.names.delete(name);
      });
      frame.joins.forEach(add);
      renderNames();
    },
  };
}
