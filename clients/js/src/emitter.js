// @ts-check
// Events of the client, typed by name: a few lines instead of EventTarget, whose events would
// wrap every payload in an Event object and whose typing in JSDoc is clumsy. A listener that
// throws cannot leave the client's bookkeeping half done: the error is rethrown on its own.

/** @template {Record<string, any>} M */
export class Emitter {
  constructor() {
    /** @type {Map<keyof M, Set<(value: any) => void>>} */
    this.listeners = new Map();
  }

  /**
   * Calls `listener` for every event of `type`; returns a function that stops that.
   * @template {keyof M} K
   * @param {K} type
   * @param {(value: M[K]) => void} listener
   * @returns {() => void}
   */
  on(type, listener) {
    let set = this.listeners.get(type);
    if (!set) this.listeners.set(type, (set = new Set()));
    set.add(listener);
    return () => set.delete(listener);
  }

  /**
   * @template {keyof M} K
   * @param {K} type
   * @param {M[K]} value
   */
  emit(type, value) {
    for (const listener of [...(this.listeners.get(type) || [])]) {
      try {
        listener(value);
      } catch (error) {
        // A failing listener must not leave the connection's bookkeeping half done.
        setTimeout(() => { throw error; }, 0);
      }
    }
  }
}
