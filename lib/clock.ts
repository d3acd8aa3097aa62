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
/** How old the cached time can be: the longest interval of the sweepers that tick it. */
let slack = 0;

/** The time of the last {@link tick}, in `performance.now()` milliseconds. */
export function coarseNow(): number {
  return cached;
}

/** Refreshes the clock and returns the current time. */
export function tick(): number {
  cached = performance.now();
  return cached;
}

/** Declares that something calls {@link tick} at least every `intervalMs` while it runs. */
export function tickedEvery(intervalMs: number): void {
  slack = Math.max(slack, intervalMs);
}

/**
 * A deadline `ms` from now, from the coarse clock. The stamp may be up to one
 * tick interval old, so that much is added: the deadline never comes early, and
 * checked on ticks, it passes at most two intervals late.
 */
export function deadlineIn(ms: number): number {
  return cached + ms + slack;
}
