/**
 * Logging with `onExchangeEnd`: one JSON line per exchange and per tunnel,
 * with the status, bytes each way, the upstream address and the timings.
 *
 *   deno run --allow-net --allow-read main.ts --hooks examples/log_exchanges.ts
 *
 * @module
 */
import type { ExchangeRecord, ProxyHooks } from "../mod.ts";

/** Hooks that write one line per record to `write` (stdout by default). */
export function logExchanges(write: (line: string) => void = console.log): ProxyHooks {
  return {
    onExchangeEnd(r: ExchangeRecord) {
      write(JSON.stringify({
        time: new Date().toISOString(),
        client: `${r.client.hostname}:${r.client.port}`,
        kind: r.kind,
        method: r.method,
        target: r.target,
        status: r.status,
        in: r.bytesFromClient,
        out: r.bytesToClient,
        upstream: r.upstream ? `${r.upstream.hostname}:${r.upstream.port}` : null,
        reused: r.reused,
        ms: r.timings.total,
        error: r.error,
        tunnel: r.tunnelEnd,
      }));
    },
  };
}

export default logExchanges();
