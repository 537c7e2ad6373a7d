// The message list: entries rendered as text (never HTML), kept to a bounded number, and
// scrolled to the newest one unless the reader scrolled up to read, in which case a "jump"
// button appears instead of yanking the view away.

// Long-lived tabs would otherwise grow the DOM without bound.
const MAX_LOG_ITEMS = 1000;
// Closer than this to the bottom counts as reading the newest messages.
const STICK_DISTANCE_PX = 48;

/** An element with a class and, optionally, text (as text, never markup). */
export function make(tag, className, text) {
  const node = document.createElement(tag);
  node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** Shows when an entry was sent: the server's time when known, else now. */
export function setTime(item, ts) {
  const time = item.querySelector('.time');
  const date = new Date(Number.isFinite(ts) ? ts : Date.now());
  time.dateTime = date.toISOString();
  time.textContent = date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  time.title = date.toLocaleString();
}

/** A message entry. */
export function renderMessage(from, text, ts, own) {
  const item = make('li', own ? 'message own' : 'message');
  const meta = make('div', 'meta');
  meta.append(make('span', 'from', from), make('time', 'time'));
  item.append(meta, make('div', 'text', text));
  setTime(item, ts);
  return item;
}

/**
 * The list in `list`, with its `jump` button; `onDrop(id)` hears of every entry with an id
 * that the bound removed.
 */
export function createLog({ list, jump }, onDrop) {
  let stick = true;

  function scrollToBottom() {
    list.scrollTop = list.scrollHeight;
    stick = true;
    jump.hidden = true;
  }

  function prune() {
    while (list.childElementCount > MAX_LOG_ITEMS) {
      const oldest = list.firstElementChild;
      if (oldest.dataset.id) onDrop(oldest.dataset.id);
      oldest.remove();
    }
  }

  function append(node, forceScroll) {
    list.append(node);
    prune();
    if (forceScroll || stick) {
      scrollToBottom();
    } else {
      jump.hidden = false;
    }
  }

  list.addEventListener('scroll', () => {
    stick = list.scrollHeight - list.scrollTop - list.clientHeight < STICK_DISTANCE_PX;
    if (stick) jump.hidden = true;
  }, { passive: true });
  jump.addEventListener('click', scrollToBottom);
  // The list shrinks when a phone keyboard opens; keep the newest message in view.
  new ResizeObserver(() => {
    if (stick) scrollToBottom();
  }).observe(list);

  return {
    append,
    /** A line from the page itself (joins, gaps, disconnections). */
    system(text, kind) {
      append(make('li', kind ? `system ${kind}` : 'system', text), false);
    },
    /** Empties the list, for another room. */
    reset() {
      list.replaceChildren();
      stick = true;
      jump.hidden = true;
    },
  };
}
