// What the page checks before a round trip: the protocol's limits on names, rooms and texts.
// The server enforces them too; checking them here only gives people a clear message at once.

export const MAX_NAME_CHARS = 32;
export const MAX_ROOM_CHARS = 64;
export const MAX_TEXT_BYTES = 4096;
const ROOM_CHARS = /^[A-Za-z0-9_.-]+$/;
// Rust's char::is_control, which the server uses: the C0 and C1 control ranges.
const CONTROL_CHARS = /[\u0000-\u001F\u007F-\u009F]/;
const BIDI_CHARS = /[\u061C\u200E\u200F\u202A-\u202E\u2066-\u2069]/;

/** What is wrong with a name, or '' when nothing is. */
export function nameProblem(name) {
  if (!name) return 'Enter a name.';
  // Spread counts code points, as the server does, so emoji count once.
  if ([...name].length > MAX_NAME_CHARS) return `Names are at most ${MAX_NAME_CHARS} characters.`;
  if (CONTROL_CHARS.test(name)) return 'Names cannot contain control characters.';
  if (BIDI_CHARS.test(name)) return 'Names cannot contain text-direction characters.';
  return '';
}

/** What is wrong with a room name, or '' when nothing is. */
export function roomProblem(room) {
  if (!room) return 'Enter a room.';
  if (room.length > MAX_ROOM_CHARS) return `Room names are at most ${MAX_ROOM_CHARS} characters.`;
  if (!ROOM_CHARS.test(room)) {
    return 'Room names use only letters A–Z, digits, “_”, “.” and “-”.';
  }
  return '';
}
