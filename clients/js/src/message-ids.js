// @ts-check
// Message ids, `"<epoch>-<seq>"`: ordered within a room, so the client can tell a message it
// already has (a live frame repeated by a `since` rejoin) from a new one without keeping a set
// of every id it saw. Ids that do not parse (another server, a test double) are not compared:
// the library then passes every message on and lets the application deduplicate.

/**
 * The two numbers of an id, or null when it is not one.
 * @param {string} id
 * @returns {[number, number] | null}
 */
export function parseId(id) {
  const match = /^(\d{1,16})-(\d{1,16})$/.exec(id);
  if (!match) return null;
  return [Number(match[1]), Number(match[2])];
}

/**
 * Whether `id` comes after `last` in its room; true when either cannot be compared, so an
 * unknown id is never dropped.
 * @param {string} id
 * @param {string} last
 * @returns {boolean}
 */
export function isNewer(id, last) {
  const a = parseId(id);
  const b = parseId(last);
  if (!a || !b) return true;
  return a[0] !== b[0] ? a[0] > b[0] : a[1] > b[1];
}
