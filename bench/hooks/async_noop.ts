/**
 * Hook variant for the benchmarks: asynchronous no-op `onRequest` and
 * `onResponse` (each returns a promise: the cost of an await per hook).
 *
 *   deno run --allow-net --allow-read main.ts --hooks bench/hooks/async_noop.ts
 *
 * @module
 */
import type { ProxyHooks } from "../../mod.ts";

const hooks: ProxyHooks = {
  onRequest: () => Promise.resolve(),
  onResponse: () => Promise.resolve(),
};

export default hooks;
