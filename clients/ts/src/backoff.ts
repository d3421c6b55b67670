// Capped exponential backoff with full jitter (AWS Architecture Blog, "Exponential Backoff And
// Jitter"): the n-th retry waits a uniformly random time in [0, min(max, initial · 2^n)), so a
// server restart is not met by every client at the same instant.

export interface BackoffOptions {
  /** The first retry's ceiling, ms. Default 500. */
  initialMs?: number;
  /** The ceiling never grows past this, ms. Default 30 000. */
  maxMs?: number;
  /** Random source in [0, 1); tests pin it. Default `Math.random`. */
  random?: () => number;
}

/** The delays of successive retries. */
export class Backoff {
  private attempt = 0;
  private readonly initialMs: number;
  private readonly maxMs: number;
  private readonly random: () => number;

  constructor(options: BackoffOptions = {}) {
    this.initialMs = options.initialMs ?? 500;
    this.maxMs = options.maxMs ?? 30_000;
    this.random = options.random ?? Math.random;
  }

  /** The next delay, ms; each call widens the window until `maxMs`. */
  next(): number {
    // 2^30 · initial is far past any sane max: stop growing the exponent there.
    const ceiling = Math.min(this.maxMs, this.initialMs * 2 ** Math.min(this.attempt, 30));
    this.attempt += 1;
    return Math.floor(this.random() * ceiling);
  }

  /** Retries so far since the last reset. */
  get attempts(): number {
    return this.attempt;
  }

  /** After a connection that worked: the next retry starts from `initialMs` again. */
  reset(): void {
    this.attempt = 0;
  }
}
