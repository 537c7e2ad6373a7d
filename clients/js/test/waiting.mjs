// Waiting with a deadline, shared by the library's tests and the browser test (it has no
// dependencies, so either can import it).

export const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

/** Resolves with `check()`'s first truthy value; throws once `timeoutMs` passed without one. */
export async function until(what, check, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting until ${what}`);
    await sleep(20);
  }
}
