// A small typed event emitter: `on` returns its own unsubscribe, so a caller (a React effect, a
// page) can never leave a listener behind by forgetting which function it passed.

export type Listener<T> = (event: T) => void;

export class Emitter<Events extends object> {
  private readonly listeners = new Map<keyof Events, Set<Listener<never>>>();

  /** Calls `listener` for each `type` event until the returned function is called. */
  on<K extends keyof Events>(type: K, listener: Listener<Events[K]>): () => void {
    let set = this.listeners.get(type);
    if (!set) {
      set = new Set();
      this.listeners.set(type, set);
    }
    set.add(listener as Listener<never>);
    return () => this.off(type, listener);
  }

  /** Removes `listener` from `type`. */
  off<K extends keyof Events>(type: K, listener: Listener<Events[K]>): void {
    this.listeners.get(type)?.delete(listener as Listener<never>);
  }

  /** How many listeners `type` has (tests use it to prove nothing leaks). */
  listenerCount(type: keyof Events): number {
    return this.listeners.get(type)?.size ?? 0;
  }

  protected emit<K extends keyof Events>(type: K, event: Events[K]): void {
    const set = this.listeners.get(type);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        (listener as Listener<Events[K]>)(event);
      } catch (err) {
        // A listener's bug must not break the connection's bookkeeping: report it on its own.
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }
}
