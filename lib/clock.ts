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
