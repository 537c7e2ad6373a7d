// What happens to messages after they are shown: the author edits or deletes them, and who is
// typing. Kept apart from app.js, which owns the log and the connection; this module only
// changes entries the log already holds, found by id, and owns the typing line and the
// composer's edit mode.
//
// Everything a server or another person sent is shown with textContent, never as HTML.
import { make } from './log.js';

// A typing signal is repeated at most every 2 s while someone types, so a name disappears a
// little after the last one: long enough not to flicker, short enough to be true.
export const TYPING_SHOWN_MS = 4000;
const DELETED_TEXT = 'message deleted';

function typingSentence(names) {
  if (names.length === 1) return `${names[0]} is typing…`;
  if (names.length === 2) return `${names[0]} and ${names[1]} are typing…`;
  return 'Several people are typing…';
}

// `ui`: the typing line, the composer's textarea and its hint. `io`: `item(id)` finds a log
// entry, `client()` the client library (or null), `room()` the room shown, `notice(text)`.
export function createChanges(ui, io) {
  const typists = new Map(); // name -> timer that forgets them
  let editing = null; // { id, item } while the composer edits an own message

  function renderTyping() {
    const names = [...typists.keys()];
    ui.typing.textContent = names.length ? typingSentence(names) : '';
  }

  function forgetTypist(name) {
    clearTimeout(typists.get(name));
    if (typists.delete(name)) renderTyping();
  }

  function button(label, onClick) {
    const node = make('button', 'link message-action', label);
    node.type = 'button';
    node.addEventListener('click', onClick);
    return node;
  }

  function startEdit(item) {
    editing = { id: item.dataset.id, item };
    ui.text.value = item.querySelector('.text').textContent;
    ui.text.placeholder = 'Edit your message';
    ui.hint.textContent = 'Editing: Enter saves, Escape cancels.';
    item.classList.add('editing');
    ui.text.focus();
  }

  function stopEdit() {
    if (!editing) return;
    editing.item.classList.remove('editing');
    editing = null;
    ui.text.value = '';
    ui.text.placeholder = `Message #${io.room()}`;
    ui.hint.textContent = '';
  }

  function failed(what, error) {
    io.notice(`Could not ${what}: ${error.message || error.code}`);
  }

  function remove(item) {
    const client = io.client();
    if (!client) return;
    if (editing && editing.item === item) stopEdit();
    client.deleteMessage(io.room(), item.dataset.id).catch((error) => failed('delete', error));
  }

  return {
    // Offers edit and delete on an own entry once it has its id (acked, or from history).
    decorate(item) {
      if (!item.dataset.id || item.querySelector('.message-actions')) return;
      if (item.classList.contains('deleted')) return;
      const actions = make('span', 'message-actions');
      actions.append(button('Edit', () => startEdit(item)), button('Delete', () => remove(item)));
      item.querySelector('.meta').append(actions);
    },

    edited(frame) {
      const item = io.item(frame.target);
      // An entry pruned from the log, or history that starts after it: nothing to change.
      if (!item || item.classList.contains('deleted')) return;
      item.querySelector('.text').textContent = frame.text;
      if (!item.querySelector('.edited')) {
        const mark = make('span', 'edited', '(edited)');
        item.querySelector('.meta').insertBefore(mark, item.querySelector('.message-actions'));
      }
    },

    deleted(frame) {
      const item = io.item(frame.target);
      if (!item) return;
      if (editing && editing.item === item) stopEdit();
      item.classList.add('deleted');
      item.querySelector('.text').textContent = DELETED_TEXT;
      item.querySelectorAll('.message-actions, .edited').forEach((node) => node.remove());
    },

    typing(frame) {
      if (typeof frame.from !== 'string' || !frame.from) return;
      clearTimeout(typists.get(frame.from));
      typists.set(frame.from, setTimeout(() => forgetTypist(frame.from), TYPING_SHOWN_MS));
      renderTyping();
    },

    // Someone's message arrived: they stopped typing, at least for now.
    spoke(name) {
      forgetTypist(name);
    },

    // The composer changed: tell the room (the library sends at most one signal per 2 s).
    input() {
      const client = io.client();
      if (client && !editing && ui.text.value.trim()) client.typing(io.room());
    },

    // Handles Enter or Escape in edit mode; returns whether it did.
    submit(text) {
      if (!editing) return false;
      const client = io.client();
      const { id, item } = editing;
      const before = item.querySelector('.text').textContent;
      stopEdit();
      if (client && text && text !== before) {
        client.edit(io.room(), id, text).catch((error) => failed('edit', error));
      }
      return true;
    },

    cancel() {
      const was = Boolean(editing);
      stopEdit();
      return was;
    },

    // A new room or a lost view: nobody is typing there as far as this page knows.
    reset() {
      typists.forEach((timer) => clearTimeout(timer));
      typists.clear();
      renderTyping();
      editing = null;
    },
  };
}
