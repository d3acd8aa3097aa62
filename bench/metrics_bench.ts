/**
 * The cost of metrics per exchange: `Metrics.record()` for a typical record and
 * for a mix (methods, statuses, tunnels, errors), against an empty consumer;
 * `RecentExchanges.add()`; and `render()` once per scrape.
 *
 *   deno bench bench/metrics_bench.ts
 */
import type { ExchangeRecord } from "../lib/hooks.ts";
import { Metrics, RecentExchanges } from "../lib/metrics.ts";

function record(over: Partial<ExchangeRecord> = {}): ExchangeRecord {
  return {
    kind: "http",
    method: "GET",
    target: "http://example.test/path",
    status: 200,
    client: { hostname: "127.0.0.1", port: 5555 },
    upstream: { hostname: "127.0.0.1", port: 8080 },
    reused: true,
    bytesFromClient: 180,
    bytesToClient: 1300,
    timings: { connect: null, firstByte: 0.8, total: 1.1 },
    error: null,
    tunnelEnd: null,
    connectionId: 7,
    contentType: "text/html",
    endedAt: 1_800_000_000_000,
    ...over,
  };
}

const TYPICAL = record();
const MIX: ExchangeRecord[] = [
  record(),
  record({ method: "POST", status: 201, reused: false, timings: { connect: 0.3, firstByte: 12, total: 15 } }),
  record({ method: "HEAD", status: 304 }),
  record({ status: 404, timings: { connect: null, firstByte: 40, total: 41 } }),
  record({ kind: "local", method: "", status: 400, upstream: null, reused: false, error: "invalid-target" }),
  record({
    status: 502,
    reused: false,
    error: "upstream-refused",
    timings: { connect: null, firstByte: null, total: 2 },
  }),
  record({
    kind: "connect",
    method: "CONNECT",
    reused: false,
    tunnelEnd: { end: "closed", firstFin: "client" },
    timings: { connect: 5, firstByte: null, total: 30_000 },
  }),
  record({ method: "PROPFIND", status: 207 }),
];

const metrics = new Metrics({ version: "bench", deno: Deno.version.deno });
const recent = new RecentExchanges();
let sink = 0;
let next = 0;

Deno.bench({ name: "empty consumer (harness floor)", group: "record", baseline: true }, () => {});

Deno.bench({ name: "Metrics.record (typical: GET 200, reused)", group: "record" }, () => {
  metrics.record(TYPICAL);
});

Deno.bench({ name: "Metrics.record (mix of 8: methods, statuses, errors, a tunnel)", group: "record" }, () => {
  metrics.record(MIX[next]);
  next = (next + 1) & 7;
});

Deno.bench({ name: "RecentExchanges.add", group: "record" }, () => {
  recent.add(TYPICAL);
});

Deno.bench({ name: "Metrics.render (per scrape)", group: "render" }, () => {
  sink += metrics.render().length;
});
