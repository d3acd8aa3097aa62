/**
 * Hook variant for the benchmarks: synchronous no-op `onRequest` and
 * `onResponse` (the cost of having hooks at all).
 *
 *   deno run --allow-net --allow-read main.ts --hooks bench/hooks/noop.ts
 *
 * @module
 */
import type { ProxyHooks } from "../../mod.ts";

const hooks: ProxyHooks = {
  onRequest() {},
  onResponse() {},
};

export default hooks;
