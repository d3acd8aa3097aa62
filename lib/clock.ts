/**
 * A coarse monotonic clock for timeouts: reading it is a variable read, not a
 * call into the runtime (`performance.now()` is an op, and the hot path stamped
 * the time several times per request). The server's sweeper refreshes it on
 * every tick, and timeouts are only checked on those ticks, so a stamp is never
 * older than one sweeper interval (at most a quarter of the shortest timeout).
 *
 * @module
 */

let cached = performance.now();

/** The time of the last {@link tick}, in `performance.now()` milliseconds. */
export function coarseNow(): number {
  return cached;
}

/** Refreshes the clock and returns the current time. */
export function tick(): number {
  cached = performance.now();
  return cached;
}

/**
 * A deadline `ms` from now, from the coarse clock, for a caller whose own
 * sweeper calls {@link tick} every `tickMs` (so the cached time is at most that
 * old while it runs; other sweepers ticking too only make it fresher). That much
 * is added: the deadline never comes early, and checked on ticks, it passes at
 * most two intervals late. A timeout of 0 (or less) is off: the deadline is Infinity.
 */
export function deadlineIn(ms: number, tickMs: number): number {
  if (ms <= 0) return Infinity; // a timeout of 0 is off
  return cached + ms + tickMs;
}
