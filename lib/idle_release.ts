/**
 * Gives heap memory back once the proxy goes idle after a burst.
 *
 * A burst (new connections, large responses, bulk transfers) leaves the V8 heap
 * with pages full of garbage and a raised limit. V8's memory reducer would
 * shrink it, but it only starts after a full collection, and under a
 * small-request load there is none any more: the heap kept 17 MiB where 12 was
 * live plus slack, through a minute without traffic (docs/performance.md,
 * "Idle time gives the memory back, sometimes"). So once no exchange has run
 * for {@link IDLE_MS} and the heap has grown by {@link GROWTH_BYTES} since the
 * last release, the sweeper asks V8 for a memory-reducing full collection.
 *
 * That collection holds the thread for some tens of milliseconds, which is why
 * it waits for idleness and runs at most once per growth. `gc()` is V8's own
 * (the `--expose-gc` extension): taken from `globalThis` when the runtime was
 * started with that flag, else from a fresh `node:vm` context after
 * `node:v8` `setFlagsFromString("--expose-gc")`, loaded on first use. Where
 * neither works, nothing is released.
 *
 * @module
 */

/** No exchange for this long counts as idle (ms). */
export const IDLE_MS = 3000;
/** Heap growth since the last release that makes a release worth its pause (bytes). */
export const GROWTH_BYTES = 4 * 1024 * 1024;

type GcFunction = (options?: { type?: string; flavor?: string }) => void;

/** What a release needs from the runtime (injected in tests). */
export interface ReleaseRuntime {
  /** The V8 heap's committed size now (bytes). */
  heapTotal(): number;
  /** V8's `gc()`, or null where it cannot be had. */
  gc(): Promise<GcFunction | null>;
}

async function findGc(): Promise<GcFunction | null> {
  const exposed = (globalThis as { gc?: unknown }).gc;
  if (typeof exposed === "function") return exposed as GcFunction;
  try {
    const [v8, vm] = await Promise.all([import("node:v8"), import("node:vm")]);
    v8.setFlagsFromString("--expose-gc");
    const gc = vm.runInNewContext("gc");
    return typeof gc === "function" ? gc as GcFunction : null;
  } catch {
    return null;
  }
}

let found: Promise<GcFunction | null> | null = null;

/** The runtime's own figures and `gc()`. */
export const RUNTIME: ReleaseRuntime = {
  heapTotal: () => Deno.memoryUsage().heapTotal,
  gc: () => found ??= findGc(),
};

/**
 * Decides when to release: {@link tick} is called on every sweeper tick. One
 * instance per process is enough (several proxies in one process share one heap).
 */
export class IdleRelease {
  readonly #runtime: ReleaseRuntime;
  #lastActive: number;
  /** The activity count at the last tick (it starts at 0 with the process). */
  #lastActivity = 0;
  /** Heap size after the last release (or at start): growth is measured from here. */
  #baseline: number;
  #running = false;
  /** Releases done (for tests and diagnostics). */
  releases = 0;

  constructor(runtime: ReleaseRuntime = RUNTIME, now = performance.now()) {
    this.#runtime = runtime;
    this.#lastActive = now;
    this.#baseline = runtime.heapTotal();
  }

  /**
   * One sweeper tick. `busy`: an exchange is in progress (a tunnel counts for as
   * long as it is open); `activity`: a count that moves with every connection
   * opened and exchange started, so one that came and went between two ticks
   * counts too.
   */
  tick(now: number, busy: boolean, activity: number): void {
    const moved = activity !== this.#lastActivity;
    this.#lastActivity = activity;
    if (busy || moved) {
      this.#lastActive = now;
      return;
    }
    if (this.#running || now - this.#lastActive < IDLE_MS) return;
    const heap = this.#runtime.heapTotal();
    if (heap < this.#baseline + GROWTH_BYTES) {
      // Shrunk on its own (or never grew): measure growth from here.
      if (heap < this.#baseline) this.#baseline = heap;
      return;
    }
    this.#running = true;
    this.#runtime.gc().then((gc) => {
      if (gc !== null) {
        gc({ type: "major", flavor: "last-resort" });
        this.releases++;
      }
    }).catch(() => {
      // Releasing is an optimization: a failure leaves the heap as it was.
    }).finally(() => {
      this.#baseline = this.#runtime.heapTotal();
      this.#running = false;
    });
  }
}

let shared: IdleRelease | null = null;

/** The process's one {@link IdleRelease} (made on first use). */
export function idleRelease(): IdleRelease {
  return shared ??= new IdleRelease();
}
