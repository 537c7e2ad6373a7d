// The chat page. Served by every node, so it talks only to its own origin. The protocol
// (reconnect, rejoin with `since`, acks, errors) is the client library's, which the node
// serves at /client/; this file only shows what happens and takes what people type.
import { ChatClient } from '/client/chat-client.js';
import { createChanges } from './changes.js';
import { createLog, renderMessage } from './log.js';
import { createOutgoing } from './outgoing.js';
import { createPeople, directRoom } from './people.js';
import { MAX_TEXT_BYTES, nameProblem, roomProblem } from './validation.js';

(function () {
  'use strict';

  const BACKOFF_START_MS = 500;
  const BACKOFF_CAP_MS = 10000;
  const NOTICE_MS = 10000;
  const NAME_KEY = 'chat.name';

  const CLOSE_REASONS = {
    1000: 'closed by the server',
    1001: 'node going away',
    1006: 'connection lost',
    1007: 'invalid data',
    1008: 'refused by policy',
    1009: 'message too big',
    1011: 'server error',
    4001: 'too slow to keep up',
    4002: 'idle for too long',
    4003: 'sign-in expired',
  };
  // The node's close code for a session whose token expired (protocol close codes).
  const TOKEN_EXPIRED = 4003;
  // Named apart from `state`, which the library's events update.
  let client = null;

  const ui = {};
  [
    'join', 'join-form', 'join-button', 'name', 'name-error', 'room', 'room-error',
    'chat', 'room-name', 'me', 'node', 'status', 'reconnect', 'members-toggle', 'member-count',
    'leave', 'messages', 'jump', 'people-title', 'members', 'members-note', 'members-more',
    'notice', 'composer', 'text', 'text-hint', 'typing',
  ].forEach((id) => {
    ui[id.replace(/-(\w)/g, (_, c) => c.toUpperCase())] = document.getElementById(id);
  });

  const encoder = new TextEncoder();

  const state = {
    name: '', // as typed, for the handshake URL
    // A sign-in token from the page's fragment, kept only in memory for reconnects; the
    // server then takes the name from it.
    token: '',
    me: '', // as the server echoes it in welcome; messages carry this name
    room: '',
    joined: false,
    everJoined: false,
    retryAt: 0,
    countdownTimer: 0,
    noticeTimer: 0,
    byId: new Map(), // message id -> element, to dedupe echoes and history
  };

  const log = createLog({ list: ui.messages, jump: ui.jump }, (id) => state.byId.delete(id));
  const outgoing = createOutgoing(log, state.byId, {
    send: (text) => {
      if (!client || !client.isJoined(state.room)) {
        notice('Not connected right now. Your message was kept; send it again once connected.');
        return null;
      }
      return client.send(state.room, text);
    },
    me: () => state.me,
    showIncoming: (frame) => showIncoming(frame),
    decorate: (item) => changes.decorate(item),
    rejoining: () => {
      state.joined = false;
      setStatus('connecting', 'rejoining…');
    },
  });

  const people = createPeople(
    {
      title: ui.peopleTitle,
      badge: ui.memberCount,
      list: ui.members,
      note: ui.membersNote,
      more: ui.membersMore,
    },
    {
      members: (room, after) => (client
        ? client.members(room, after)
        : Promise.reject(Object.assign(new Error('not connected'), { code: 'connection_lost' }))),
      notice,
      // Direct messages need a sign-in: a typed name proves nothing, so the server refuses them.
      canMessage: (name) => {
        const room = directRoom(state.me, name);
        return Boolean(state.token) && room !== null && room !== state.room;
      },
      message: (name) => moveToRoom(directRoom(state.me, name)),
    },
  );

  const changes = createChanges(
    { typing: ui.typing, text: ui.text, hint: ui.textHint },
    {
      item: (id) => state.byId.get(id),
      client: () => client,
      room: () => state.room,
      notice,
    },
  );

  function showFieldError(input, errorEl, message) {
    errorEl.textContent = message;
    errorEl.hidden = !message;
    input.setAttribute('aria-invalid', message ? 'true' : 'false');
  }

  // ---- join view --------------------------------------------------------------------------

  function roomFromHash() {
    return new URLSearchParams(location.hash.slice(1)).get('room') || '';
  }

  // ---- sign-in ----------------------------------------------------------------------------

  // A token comes in the fragment (#token=… or #room=lobby&token=…), which browsers never send
  // to a server, so no access log records it. It then leaves the address bar, and with it
  // history, bookmarks and screenshots, and is kept in memory for reconnects.
  function takeTokenFromHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    const token = params.get('token');
    if (!token) return false;
    state.token = token;
    params.delete('token');
    const rest = params.toString();
    history.replaceState(null, '', location.pathname + location.search + (rest ? `#${rest}` : ''));
    showNameField();
    return true;
  }

  // With a token the server takes the name from it, so there is none to type.
  function showNameField() {
    ui.name.closest('.field').hidden = Boolean(state.token);
  }

  // A refused or expired token cannot get better by retrying, so the page stops reconnecting
  // and says what to do; the text stays until the person acts on it.
  function signedOut(text) {
    disconnect();
    state.token = '';
    setStatus('signed-out', 'signed out');
    log.system(text, 'auth');
    clearTimeout(state.noticeTimer);
    ui.notice.textContent = text;
    setComposerEnabled(false);
  }

  function setComposerEnabled(enabled) {
    ui.text.disabled = !enabled;
    ui.composer.querySelector('button').disabled = !enabled;
  }

  function authProblem(code, error) {
    if (code === TOKEN_EXPIRED) return 'Your sign-in has expired; reload with a fresh link.';
    if (code !== 1008 || !error || error.code !== 'unauthorized') return '';
    if (!state.token) return 'This chat needs a sign-in: open it with your sign-in link.';
    return `Your sign-in was refused (${error.message || 'invalid token'}); reload with a fresh link.`;
  }

  function storedName() {
    // Storage throws when disabled (private modes, strict settings); the name is a convenience.
    try {
      return localStorage.getItem(NAME_KEY) || '';
    } catch (_) {
      return '';
    }
  }

  function rememberName(name) {
    try {
      localStorage.setItem(NAME_KEY, name);
    } catch (_) {
      // Not remembering the name is harmless.
    }
  }

  function onJoinSubmit(event) {
    event.preventDefault();
    const name = state.token ? '' : ui.name.value.trim();
    const room = ui.room.value.trim();
    const nameError = state.token ? '' : nameProblem(name);
    const roomError = roomProblem(room);
    showFieldError(ui.name, ui.nameError, nameError);
    showFieldError(ui.room, ui.roomError, roomError);
    if (nameError || roomError) {
      (nameError ? ui.name : ui.room).focus();
      return;
    }
    enterRoom(name, room);
  }

  // Errors only update live once shown, so nobody is scolded while still typing.
  function revalidateOnInput(input, errorEl, check) {
    input.addEventListener('input', () => {
      if (input.getAttribute('aria-invalid') === 'true') {
        showFieldError(input, errorEl, check(input.value.trim()));
      }
    });
  }

  function showView(view) {
    ui.join.hidden = view !== 'join';
    ui.chat.hidden = view !== 'chat';
    document.title = view === 'chat' ? `#${state.room} · Chat` : 'Chat';
  }

  function returnToJoin(errors) {
    disconnect();
    ui.name.value = state.name;
    ui.room.value = state.room;
    showFieldError(ui.name, ui.nameError, errors.name || '');
    showFieldError(ui.room, ui.roomError, errors.room || '');
    history.replaceState(null, '', location.pathname + location.search);
    showNameField();
    showView('join');
    (errors.room && !errors.name ? ui.room : ui.name).focus();
  }

  // ---- chat view --------------------------------------------------------------------------

  function enterRoom(name, room) {
    state.name = name;
    state.me = name;
    state.room = room;
    resetRoomView();
    ui.roomName.textContent = room;
    ui.me.textContent = name || '…';
    ui.node.textContent = '—';
    setComposerEnabled(true);
    ui.text.placeholder = `Message #${room}`;
    history.replaceState(null, '', `#room=${room}`);
    showView('chat');
    connect();
    ui.text.focus();
  }

  function resetRoomView() {
    log.reset();
    people.reset(state.room, state.me);
    changes.reset();
    outgoing.reset();
    state.byId.clear();
    state.everJoined = false;
    setPeopleOpen(false);
    notice('');
  }

  function leaveRoom() {
    // The leave frame goes out before the close that follows.
    if (client) client.leave(state.room).catch(() => {});
    returnToJoin({});
  }

  function setStatus(kind, text) {
    ui.status.dataset.state = kind;
    ui.status.textContent = text;
  }

  // A small line for problems that belong to no single message; stale errors mislead, so it
  // clears itself.
  function notice(text) {
    clearTimeout(state.noticeTimer);
    ui.notice.textContent = text;
    if (text) state.noticeTimer = setTimeout(() => { ui.notice.textContent = ''; }, NOTICE_MS);
  }

  function setPeopleOpen(open) {
    ui.chat.classList.toggle('people-open', open);
    ui.membersToggle.setAttribute('aria-expanded', String(open));
  }

  // ---- message list -----------------------------------------------------------------------

  function showIncoming(frame) {
    const own = frame.from === state.me;
    const item = renderMessage(frame.from, frame.text, frame.ts, own);
    item.dataset.id = frame.id;
    state.byId.set(frame.id, item);
    if (own) changes.decorate(item);
    changes.spoke(frame.from);
    log.append(item, false);
  }

  // Edits and deletions change an entry shown already; history brings them after it.
  function onChange(frame) {
    if (frame.type === 'edited') changes.edited(frame);
    else if (frame.type === 'deleted') changes.deleted(frame);
  }

  // ---- sending ----------------------------------------------------------------------------

  function textBytes() {
    return encoder.encode(ui.text.value.trim()).length;
  }

  function updateTextHint() {
    const bytes = textBytes();
    const over = bytes > MAX_TEXT_BYTES;
    // Stay quiet until the limit is near; a permanent counter is noise.
    ui.textHint.textContent = bytes > MAX_TEXT_BYTES * 0.9
      ? `${bytes} / ${MAX_TEXT_BYTES} bytes${over ? ' — too long to send' : ''}`
      : '';
    ui.textHint.classList.toggle('over', over);
    ui.text.setAttribute('aria-invalid', over ? 'true' : 'false');
  }

  function submitComposer() {
    const text = ui.text.value.trim();
    if (changes.submit(text)) {
      updateTextHint();
      ui.text.focus();
      return;
    }
    if (!text || textBytes() > MAX_TEXT_BYTES) {
      updateTextHint();
      return;
    }
    if (outgoing.send(text)) {
      ui.text.value = '';
      updateTextHint();
    }
    ui.text.focus();
  }

  function onComposerKey(event) {
    // isComposing: Enter also confirms IME input, which must not send half a word.
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      submitComposer();
    } else if (event.key === 'Escape' && changes.cancel()) {
      event.preventDefault();
    }
  }

  // Errors that answer no request of the page's: a refused handshake (followed by a close,
  // which says what to do) or a join the client library is trying again.
  function onError(error) {
    if (error.code === 'invalid_name' || error.code === 'unauthorized') return;
    notice(error.room ? `Could not join #${error.room}: ${error.message}` : error.message);
  }

  // A first join refused for good; joins refused for a while are retried by the library.
  function onJoinFailed(error) {
    if (error.code === 'invalid_room' || error.code === 'forbidden') {
      returnToJoin({ room: `Room refused: ${error.message || 'not accepted'}` });
    } else if (error.code === 'too_many_rooms' || error.code === 'bad_request') {
      notice(`Could not join #${state.room}: ${error.message}`);
    }
  }

  // ---- connection -------------------------------------------------------------------------

  // The client library owns the connection: reconnects, rejoins with `since`, acks. The page
  // only shows what happens.
  function connect() {
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const own = new ChatClient({
      url: `${scheme}://${location.host}/ws`,
      name: state.token ? undefined : state.name,
      token: state.token || undefined,
    });
    client = own;
    // Events of a client that was replaced or closed on purpose are stale.
    const on = (type, handler) => own.on(type, (value) => { if (client === own) handler(value); });
    on('state', onState);
    on('welcome', onWelcome);
    on('joined', onJoined);
    on('message', (frame) => { if (frame.room === state.room) outgoing.receive(frame, false); });
    on('edited', (frame) => { if (frame.room === state.room) onChange(frame); });
    on('deleted', (frame) => { if (frame.room === state.room) onChange(frame); });
    on('typing', (frame) => { if (frame.room === state.room) changes.typing(frame); });
    on('presence', (frame) => { if (frame.room === state.room) people.presence(frame); });
    on('error', onError);
    on('close', onClose);
    own.join(state.room).catch((error) => { if (client === own) onJoinFailed(error); });
  }

  function disconnect() {
    clearCountdown();
    const own = client;
    client = null;
    state.joined = false;
    people.disconnected();
    if (own) own.close();
  }

  function onState(change) {
    clearCountdown();
    if (change.state === 'connecting') {
      setStatus('connecting', state.everJoined ? 'reconnecting…' : 'connecting…');
    } else if (change.state === 'reconnecting') {
      state.retryAt = change.retryAt;
      state.countdownTimer = setInterval(showCountdown, 250);
      ui.reconnect.hidden = false;
      showCountdown();
    }
  }

  function onWelcome(frame) {
    state.me = frame.name;
    // Remembered only once the server has accepted it, so a refused name is not offered again.
    if (!state.token) rememberName(state.name);
    ui.me.textContent = frame.name;
    ui.node.textContent = frame.node;
  }

  function onJoined(frame) {
    if (frame.room !== state.room) return;
    state.joined = true;
    setStatus('connected', 'connected');
    notice('');
    people.joined(frame, state.me);
    // The gap lies before whatever the server could replay.
    if (frame.since && frame.recovered === false) {
      log.system('Some messages may be missing: not all of them could be recovered.', 'gap');
    }
    frame.history.forEach((event) => {
      if (event.type === 'edited' || event.type === 'deleted') onChange(event);
      else outgoing.receive(event, true);
    });
    if (state.everJoined) {
      log.system(`Rejoined via node ${ui.node.textContent}.`);
    } else {
      log.system(`You joined #${state.room}.`);
    }
    state.everJoined = true;
  }

  function onClose(info) {
    const wasJoined = state.joined;
    state.joined = false;
    people.disconnected();
    outgoing.failAll('connection lost — not confirmed');
    const error = info.error;
    if (info.code === 1008 && error && error.code === 'invalid_name') {
      returnToJoin({ name: `Name refused: ${error.message || 'not accepted'}` });
      return;
    }
    const authText = authProblem(info.code, error);
    if (authText) {
      signedOut(authText);
      return;
    }
    const reason = CLOSE_REASONS[info.code] || `closed (${info.code})`;
    if (wasJoined) log.system(`Disconnected: ${reason}.`);
    // A node going away sends the client elsewhere at once: nothing to wait for.
    if (info.reconnectInMs !== 0) notice(`Disconnected: ${reason}.`);
  }

  function showCountdown() {
    const seconds = Math.max(0, Math.ceil((state.retryAt - Date.now()) / 1000));
    setStatus('reconnecting', `reconnecting in ${seconds} s`);
  }

  function clearCountdown() {
    clearInterval(state.countdownTimer);
    state.countdownTimer = 0;
    ui.reconnect.hidden = true;
  }

  // The browser knows the network is back; waiting out the backoff would only add delay.
  function onOnline() {
    if (client) client.reconnectNow();
  }

  function onHashChange() {
    // A fresh sign-in link pasted into this tab changes only the fragment, which loads nothing.
    if (takeTokenFromHash() && !ui.chat.hidden) {
      disconnect();
      enterRoom('', roomFromHash() || state.room);
      return;
    }
    const room = roomFromHash();
    if (!room) return;
    if (ui.chat.hidden) {
      ui.room.value = room;
    } else if (room !== state.room && !roomProblem(room)) {
      // A shared link pasted into an open tab moves the tab to that room.
      moveToRoom(room);
    }
  }

  function moveToRoom(room) {
    if (!room || room === state.room) return;
    if (client) client.leave(state.room).catch(() => {});
    disconnect();
    enterRoom(state.name, room);
  }

  // ---- start ------------------------------------------------------------------------------

  function init() {
    takeTokenFromHash();
    ui.name.value = storedName();
    ui.room.value = roomFromHash() || 'lobby';
    revalidateOnInput(ui.name, ui.nameError, nameProblem);
    revalidateOnInput(ui.room, ui.roomError, roomProblem);
    ui.joinForm.addEventListener('submit', onJoinSubmit);
    ui.composer.addEventListener('submit', (event) => {
      event.preventDefault();
      submitComposer();
    });
    ui.text.addEventListener('keydown', onComposerKey);
    ui.text.addEventListener('input', () => {
      updateTextHint();
      changes.input();
    });
    ui.leave.addEventListener('click', leaveRoom);
    ui.reconnect.addEventListener('click', () => { if (client) client.reconnectNow(); });
    ui.membersToggle.addEventListener('click', () => {
      setPeopleOpen(!ui.chat.classList.contains('people-open'));
    });
    window.addEventListener('hashchange', onHashChange);
    window.addEventListener('online', onOnline);
    showView('join');
    (ui.name.value ? ui.joinButton : ui.name).focus();
  }

  init();
})();
