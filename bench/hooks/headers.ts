/**
 * Hook variant for the benchmarks: one header set on every request and every
 * response (the cost of touching `headers`).
 *
 *   deno run --allow-net --allow-read main.ts --hooks bench/hooks/headers.ts
 *
 * @module
 */
import type { ProxyHooks } from "../../mod.ts";

const hooks: ProxyHooks = {
  onRequest(req) {
    req.headers.set("X-Request-Hook", "1");
  },
  onResponse(res) {
    res.headers.set("X-Response-Hook", "1");
  },
};

export default hooks;
