/**
 * The metrics registry: known records in, exact values out, read back through a
 * small exposition-format parser that also checks the grammar (every sample
 * line, HELP and TYPE before each family's samples, cumulative buckets). Label
 * folding (methods, statuses), the error label cap, hostile error codes,
 * histograms, gauges, collectors and the recent-exchanges ring.
 */
import assert from "node:assert/strict";
import { AccessLog } from "../lib/access_log.ts";
import type { ExchangeRecord } from "../lib/hooks.ts";
import {
  formatNumber,
  MAX_ERROR_CODE_LENGTH,
  MAX_ERROR_CODES,
  Metrics,
  METRICS_CONTENT_TYPE,
  RecentExchanges,
} from "../lib/metrics.ts";

const INFO = { version: "0.1.0", deno: "2.9.6" };

function record(over: Partial<ExchangeRecord> = {}): ExchangeRecord {
  return {
    kind: "http",
    method: "GET",
    target: "http://example.test/path",
    status: 200,
    client: { hostname: "127.0.0.1", port: 5555 },
    upstream: { hostname: "127.0.0.1", port: 8080 },
    reused: false,
    bytesFromClient: 80,
    bytesToClient: 300,
    timings: { connect: 0.5, firstByte: 1.25, total: 2.5 },
    error: null,
    tunnelEnd: null,
    connectionId: 7,
    contentType: "text/html",
    endedAt: 1_800_000_000_000,
    ...over,
  };
}

// ---- A small exposition-format (0.0.4) parser ----

const LABEL_VALUE = String.raw`"(?:[^"\\\n]|\\[\\"n])*"`;
const LABEL = String.raw`[a-zA-Z_][a-zA-Z0-9_]*=${LABEL_VALUE}`;
const SAMPLE = new RegExp(
  String.raw`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:${LABEL}(?:,${LABEL})*)?\})? (-?[0-9]+(?:\.[0-9]+)?|\+Inf|-Inf|NaN)$`,
);
const HELP = /^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/;
const TYPE = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$/;

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

interface Family {
  help: string;
  type: string;
  samples: Sample[];
}

function parseLabels(text: string): Record<string, string> {
  const labels: Record<string, string> = {};
  const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"/g;
  for (const m of text.matchAll(re)) {
    assert.ok(!(m[1] in labels), `duplicate label ${m[1]}`);
    labels[m[1]] = m[2].replace(/\\([\\"n])/g, (_, c) => c === "n" ? "\n" : c);
  }
  return labels;
}

/** The family a sample belongs to (a histogram's `_bucket`, `_sum`, `_count` belong to it). */
function familyOf(name: string, families: Map<string, Family>): string {
  const m = /^(.*)_(bucket|sum|count)$/.exec(name);
  if (m !== null && families.get(m[1])?.type === "histogram") return m[1];
  return name;
}

/** Parses and checks the whole text; fails on any line outside the grammar. */
function parse(text: string): Map<string, Family> {
  assert.ok(text.endsWith("\n"), "the text ends with a line feed");
  const families = new Map<string, Family>();
  const done = new Set<string>();
  let current = "";
  for (const line of text.slice(0, -1).split("\n")) {
    const help = HELP.exec(line);
    const type = TYPE.exec(line);
    if (help !== null) {
      assert.ok(!families.has(help[1]), `one HELP for ${help[1]}`);
      families.set(help[1], { help: help[2], type: "", samples: [] });
      if (current !== "") done.add(current);
      current = help[1];
    } else if (type !== null) {
      assert.equal(type[1], current, `TYPE follows HELP for ${type[1]}`);
      const family = families.get(current)!;
      assert.equal(family.type, "", `one TYPE for ${current}`);
      family.type = type[2];
    } else {
      const m = SAMPLE.exec(line);
      assert.ok(m !== null, `sample line out of grammar: ${JSON.stringify(line)}`);
      const name = familyOf(m[1], families);
      const family = families.get(name);
      assert.ok(family !== undefined && family.type !== "", `HELP and TYPE before samples of ${m[1]}`);
      assert.equal(name, current, `samples of ${name} are together`);
      assert.ok(!done.has(name));
      const value = m[3] === "+Inf" ? Infinity : m[3] === "-Inf" ? -Infinity : Number(m[3]);
      family.samples.push({ name: m[1], labels: parseLabels(m[2] ?? ""), value });
    }
  }
  for (const [name, family] of families) if (family.type === "histogram") checkHistogram(name, family);
  return families;
}

function checkHistogram(name: string, family: Family): void {
  const buckets = family.samples.filter((s) => s.name === `${name}_bucket`);
  const count = family.samples.find((s) => s.name === `${name}_count`);
  const sum = family.samples.find((s) => s.name === `${name}_sum`);
  assert.ok(buckets.length > 1 && count !== undefined && sum !== undefined, `${name} has buckets, _sum and _count`);
  let le = -Infinity;
  let previous = 0;
  for (const b of buckets) {
    const bound = b.labels.le === "+Inf" ? Infinity : Number(b.labels.le);
    assert.ok(bound > le, `${name} buckets ascend`);
    assert.ok(b.value >= previous, `${name} buckets are cumulative`);
    le = bound;
    previous = b.value;
  }
  assert.equal(buckets.at(-1)!.labels.le, "+Inf");
  assert.equal(buckets.at(-1)!.value, count.value, `${name} le="+Inf" equals _count`);
}

/** The value of one sample (0 when absent); `labels` must match exactly. */
function value(families: Map<string, Family>, name: string, labels: Record<string, string> = {}): number {
  const family = families.get(familyOf(name, families));
  assert.ok(family !== undefined, `family ${name}`);
  const found = family.samples.filter((s) =>
    s.name === name && Object.keys(s.labels).length === Object.keys(labels).length &&
    Object.entries(labels).every(([k, v]) => s.labels[k] === v)
  );
  assert.ok(found.length <= 1, `one sample ${name} ${JSON.stringify(labels)}`);
  return found[0]?.value ?? 0;
}

function samples(families: Map<string, Family>, name: string): Sample[] {
  return families.get(name)?.samples ?? [];
}

// ---- Tests ----

Deno.test("an empty registry renders valid text with HELP and TYPE for every family", () => {
  const metrics = new Metrics(INFO);
  const families = parse(metrics.render());
  for (
    const name of [
      "waypost_build_info",
      "waypost_start_time_seconds",
      "process_start_time_seconds",
      "process_resident_memory_bytes",
      "waypost_js_heap_total_bytes",
      "waypost_js_heap_used_bytes",
      "waypost_external_memory_bytes",
      "waypost_client_connections",
      "waypost_tunnels",
      "waypost_connections_refused_total",
      "waypost_requests_total",
      "waypost_client_bytes_received_total",
      "waypost_client_bytes_sent_total",
      "waypost_upstream_connects_total",
      "waypost_upstream_reuses_total",
      "waypost_errors_total",
      "waypost_tunnel_ends_total",
      "waypost_request_duration_seconds",
      "waypost_time_to_first_byte_seconds",
      "waypost_tunnel_duration_seconds",
    ]
  ) {
    const family = families.get(name);
    assert.ok(family !== undefined && family.help !== "" && family.type !== "", name);
    if (name.endsWith("_total")) assert.equal(family.type, "counter", name);
  }
  assert.equal(samples(families, "waypost_requests_total").length, 0, "only series seen are rendered");
  assert.equal(value(families, "waypost_build_info", INFO), 1);
  assert.equal(value(families, "waypost_request_duration_seconds_count"), 0);
  assert.equal(METRICS_CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
});

Deno.test("start times and resident memory", () => {
  const before = Date.now() / 1000;
  const metrics = new Metrics(INFO);
  const families = parse(metrics.render());
  const start = value(families, "waypost_start_time_seconds");
  assert.ok(start >= before - 0.001 && start <= Date.now() / 1000 + 0.001);
  const processStart = value(families, "process_start_time_seconds");
  assert.ok(processStart > 1e9 && processStart <= start + 0.001);
  assert.ok(value(families, "process_resident_memory_bytes") > 1024 * 1024);
  assert.ok(value(families, "waypost_js_heap_used_bytes") > 1024 * 1024);
  assert.ok(value(families, "waypost_js_heap_total_bytes") >= value(families, "waypost_js_heap_used_bytes"));
});

Deno.test("requests are counted by kind, folded method and folded code; bytes and upstreams", () => {
  const metrics = new Metrics(INFO);
  metrics.record(record());
  metrics.record(record({ reused: true }));
  metrics.record(record({ method: "get" })); // methods are case-sensitive: not GET
  metrics.record(record({ method: "PROPFIND", status: 207 }));
  metrics.record(record({ method: "", status: 400, kind: "local", upstream: null }));
  metrics.record(record({ method: "", status: 0, kind: "local", upstream: null }));
  metrics.record(record({ method: "CONNECT", kind: "connect", tunnelEnd: { end: "closed", firstFin: "client" } }));
  metrics.record(record({ method: "GET", kind: "upgrade", status: 101, reused: true }));
  for (const method of ["HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH"]) {
    metrics.record(record({ method, status: 204 }));
  }
  for (const status of [299, 418, 599, 199, 600, 99, -1, 150.5, NaN, 308, 451]) metrics.record(record({ status }));

  const f = parse(metrics.render());
  const req = (kind: string, method: string, code: string) =>
    value(f, "waypost_requests_total", { kind, method, code });
  assert.equal(req("http", "GET", "200"), 2);
  assert.equal(req("http", "other", "200"), 1);
  assert.equal(req("http", "other", "2xx"), 1); // 207
  assert.equal(req("local", "none", "400"), 1);
  assert.equal(req("local", "none", "none"), 1);
  assert.equal(req("connect", "CONNECT", "200"), 1);
  assert.equal(req("upgrade", "GET", "101"), 1);
  for (const method of ["HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH"]) {
    assert.equal(req("http", method, "204"), 1, method);
  }
  assert.equal(req("http", "GET", "2xx"), 1); // 299
  assert.equal(req("http", "GET", "4xx"), 2); // 418, 451
  assert.equal(req("http", "GET", "5xx"), 1); // 599
  assert.equal(req("http", "GET", "1xx"), 1); // 199
  assert.equal(req("http", "GET", "3xx"), 1); // 308
  assert.equal(req("http", "GET", "other"), 5); // 600, 99, -1, 150.5, NaN

  const total = samples(f, "waypost_requests_total").reduce((n, s) => n + s.value, 0);
  const records = 8 + 7 + 11;
  assert.equal(total, records);
  assert.equal(value(f, "waypost_client_bytes_received_total"), 80 * records);
  assert.equal(value(f, "waypost_client_bytes_sent_total"), 300 * records);
  assert.equal(value(f, "waypost_upstream_reuses_total"), 2);
  assert.equal(value(f, "waypost_upstream_connects_total"), records - 2 - 2); // two reused, two without upstream
  for (const s of samples(f, "waypost_requests_total")) {
    assert.ok(["http", "connect", "upgrade", "local"].includes(s.labels.kind));
    assert.match(s.labels.method, /^(GET|HEAD|POST|PUT|DELETE|CONNECT|OPTIONS|TRACE|PATCH|other|none)$/);
    assert.match(s.labels.code, /^([1-5][0-9][0-9]|[1-5]xx|none|other)$/);
  }
});

Deno.test("every status folds into a bounded set of code labels", () => {
  const metrics = new Metrics(INFO);
  for (let status = 0; status < 700; status++) metrics.record(record({ status }));
  const f = parse(metrics.render());
  const codes = samples(f, "waypost_requests_total").map((s) => s.labels.code);
  assert.ok(codes.length <= 33, `${codes.length} code labels`);
  assert.equal(value(f, "waypost_requests_total", { kind: "http", method: "GET", code: "404" }), 1);
  assert.equal(value(f, "waypost_requests_total", { kind: "http", method: "GET", code: "none" }), 1);
  assert.equal(value(f, "waypost_requests_total", { kind: "http", method: "GET", code: "other" }), 99 + 100);
  assert.equal(samples(f, "waypost_requests_total").reduce((n, s) => n + s.value, 0), 700);
});

Deno.test("error codes: one label each, at most MAX_ERROR_CODES, then other", () => {
  const metrics = new Metrics(INFO);
  metrics.record(record({ error: "upstream-refused", status: 502 }));
  metrics.record(record({ error: "upstream-refused", status: 502 }));
  metrics.record(record({ error: `hook-${"on-request"}-failed`, status: 500 })); // a freshly built string
  metrics.record(record({ error: "hook-on-request-failed", status: 500 }));
  for (let i = 0; i < MAX_ERROR_CODES - 2; i++) metrics.record(record({ error: `code-${i}` }));
  metrics.record(record({ error: "the-65th" }));
  metrics.record(record({ error: "the-66th" }));
  metrics.record(record({ error: "upstream-refused" })); // known codes keep their label after the cap
  metrics.record(record({ error: "other" }));

  const f = parse(metrics.render());
  const errors = samples(f, "waypost_errors_total");
  assert.equal(errors.length, MAX_ERROR_CODES + 1);
  assert.equal(value(f, "waypost_errors_total", { code: "upstream-refused" }), 3);
  assert.equal(value(f, "waypost_errors_total", { code: "hook-on-request-failed" }), 2);
  assert.equal(value(f, "waypost_errors_total", { code: "code-0" }), 1);
  assert.equal(value(f, "waypost_errors_total", { code: `code-${MAX_ERROR_CODES - 3}` }), 1);
  assert.equal(value(f, "waypost_errors_total", { code: "the-65th" }), 0);
  assert.equal(value(f, "waypost_errors_total", { code: "other" }), 3);
});

Deno.test("an error code named other, or too long, counts under other", () => {
  const metrics = new Metrics(INFO);
  metrics.record(record({ error: "other" }));
  metrics.record(record({ error: "x".repeat(MAX_ERROR_CODE_LENGTH + 1) }));
  metrics.record(record({ error: "x".repeat(MAX_ERROR_CODE_LENGTH) }));
  const f = parse(metrics.render());
  assert.equal(value(f, "waypost_errors_total", { code: "other" }), 2);
  assert.equal(value(f, "waypost_errors_total", { code: "x".repeat(MAX_ERROR_CODE_LENGTH) }), 1);
  assert.equal(samples(f, "waypost_errors_total").length, 2);
});

Deno.test("hostile error codes and build labels are escaped, and parse back unchanged", () => {
  const hostile = [
    'a"b',
    "back\\slash",
    "new\nline",
    '"} 1\nwaypost_requests_total{kind="http"} 999',
    "\\n literal",
    "trailing\\",
    "ünïcödé ☃",
  ];
  const metrics = new Metrics({ version: 'v"1\\\n', deno: "2.9.6\n# TYPE evil counter" });
  for (const code of hostile) metrics.record(record({ error: code }));
  const text = metrics.render();
  const f = parse(text);
  for (const code of hostile) assert.equal(value(f, "waypost_errors_total", { code }), 1, JSON.stringify(code));
  assert.equal(value(f, "waypost_build_info", { version: 'v"1\\\n', deno: "2.9.6\n# TYPE evil counter" }), 1);
  assert.ok(!text.includes("\n# TYPE evil"));
  assert.equal(value(f, "waypost_requests_total", { kind: "http", method: "GET", code: "200" }), hostile.length);
});

Deno.test("histograms: buckets by total and first byte, tunnels apart, sums in seconds", () => {
  const metrics = new Metrics(INFO);
  const totals = [0, 0.5, 1, 1.01, 2.5, 7, 99.99, 100, 1500, 59_999, 60_000, 60_001, 3_600_000];
  for (const total of totals) metrics.record(record({ timings: { connect: null, firstByte: null, total } }));
  metrics.record(record({ timings: { connect: 1, firstByte: 3, total: 4 } }));
  metrics.record(record({ timings: { connect: 1, firstByte: 0.2, total: 0.3 } }));
  metrics.record(record({ timings: { connect: null, firstByte: null, total: NaN } })); // counted as 0
  metrics.record(record({ timings: { connect: null, firstByte: null, total: -5 } })); // a clock step: 0
  const tunnel = { end: "closed", firstFin: "client" } as const;
  metrics.record(record({ kind: "connect", method: "CONNECT", tunnelEnd: tunnel, timings: t(null, 45_000) }));
  metrics.record(record({ kind: "upgrade", status: 101, tunnelEnd: tunnel, timings: t(8, 7_200_000) }));

  const f = parse(metrics.render());
  const bucket = (name: string, le: string) => value(f, `${name}_bucket`, { le });
  const d = "waypost_request_duration_seconds";
  assert.equal(value(f, `${d}_count`), totals.length + 4);
  assert.equal(bucket(d, "0.001"), 3 + 1 + 2); // 0, 0.5, 1 (le is inclusive), 0.3, NaN, -5
  assert.equal(bucket(d, "0.0025"), 6 + 2); // 1.01, 2.5
  assert.equal(bucket(d, "0.005"), 9); // 4
  assert.equal(bucket(d, "0.01"), 10); // 7
  assert.equal(bucket(d, "0.1"), 12); // 99.99, 100
  assert.equal(bucket(d, "2.5"), 13); // 1500
  assert.equal(bucket(d, "60"), 15); // 59 999, 60 000
  assert.equal(bucket(d, "+Inf"), 17);
  const sumMs = totals.reduce((a, b) => a + b, 0) + 4 + 0.3;
  assert.ok(Math.abs(value(f, `${d}_sum`) - sumMs / 1000) < 1e-9);

  const ttfb = "waypost_time_to_first_byte_seconds";
  assert.equal(value(f, `${ttfb}_count`), 3); // only where firstByte was not null (the upgrade too)
  assert.equal(bucket(ttfb, "0.001"), 1);
  assert.equal(bucket(ttfb, "0.005"), 2);
  assert.equal(bucket(ttfb, "0.01"), 3);
  assert.ok(Math.abs(value(f, `${ttfb}_sum`) - 0.0112) < 1e-12);

  const tun = "waypost_tunnel_duration_seconds";
  assert.equal(value(f, `${tun}_count`), 2);
  assert.equal(bucket(tun, "60"), 1);
  assert.equal(bucket(tun, "3600"), 1);
  assert.equal(bucket(tun, "+Inf"), 2);
  assert.equal(value(f, `${tun}_sum`), 7245);
  assert.equal(value(f, "waypost_tunnel_ends_total", { end: "closed" }), 2);
});

function t(firstByte: number | null, total: number): ExchangeRecord["timings"] {
  return { connect: null, firstByte, total };
}

Deno.test("tiny sums print without an exponent", () => {
  const metrics = new Metrics(INFO);
  metrics.record(record({ timings: t(0.0001, 0.00015) }));
  const text = metrics.render();
  assert.match(text, /\nwaypost_request_duration_seconds_sum 0\.00000015\n/);
  // 0.0001 / 1000 is 1.0000000000000001e-7 in binary floating point: digits, but no exponent.
  assert.match(text, /\nwaypost_time_to_first_byte_seconds_sum 0\.0000001[0-9]*\n/);
  const f = parse(text);
  assert.ok(Math.abs(value(f, "waypost_time_to_first_byte_seconds_sum") - 1e-7) < 1e-20);
});

Deno.test("formatNumber never uses exponent notation", () => {
  assert.equal(formatNumber(0), "0");
  assert.equal(formatNumber(42), "42");
  assert.equal(formatNumber(-3), "-3");
  assert.equal(formatNumber(0.25), "0.25");
  assert.equal(formatNumber(1e-7), "0.0000001");
  assert.equal(formatNumber(-1.5e-9), "-0.0000000015");
  assert.equal(formatNumber(1.2345e-7), "0.00000012345");
  assert.equal(formatNumber(1e21), "1000000000000000000000");
  assert.equal(formatNumber(Infinity), "+Inf");
  assert.equal(formatNumber(-Infinity), "-Inf");
  assert.equal(formatNumber(NaN), "NaN");
  for (let e = -20; e <= 25; e++) {
    const v = 1.7 * 10 ** e;
    assert.match(formatNumber(v), /^[0-9]+(\.[0-9]+)?$/, String(v));
    assert.ok(Math.abs(Number(formatNumber(v)) - v) <= Math.abs(v) * 1e-15, String(v));
  }
});

Deno.test("tunnel ends by how they ended", () => {
  const metrics = new Metrics(INFO);
  const ends = ["closed", "closed", "reset", "idle-timeout", "aborted", "aborted", "aborted"] as const;
  for (const end of ends) {
    metrics.record(record({ kind: "connect", method: "CONNECT", tunnelEnd: { end, firstFin: null } }));
  }
  const f = parse(metrics.render());
  assert.equal(value(f, "waypost_tunnel_ends_total", { end: "closed" }), 2);
  assert.equal(value(f, "waypost_tunnel_ends_total", { end: "reset" }), 1);
  assert.equal(value(f, "waypost_tunnel_ends_total", { end: "idle-timeout" }), 1);
  assert.equal(value(f, "waypost_tunnel_ends_total", { end: "aborted" }), 3);
  assert.equal(value(f, "waypost_requests_total", { kind: "connect", method: "CONNECT", code: "200" }), 7);
  assert.equal(value(f, "waypost_request_duration_seconds_count"), 0);
});

Deno.test("gauges go up and down; refusals by reason", () => {
  const metrics = new Metrics(INFO);
  for (let i = 0; i < 5; i++) metrics.connectionOpened();
  metrics.connectionClosed();
  metrics.tunnelOpened();
  metrics.tunnelOpened();
  metrics.connectionRefused("limit");
  metrics.connectionRefused("limit");
  metrics.connectionRefused("draining");
  let f = parse(metrics.render());
  assert.equal(value(f, "waypost_client_connections"), 4);
  assert.equal(value(f, "waypost_tunnels"), 2);
  assert.equal(families(f, "waypost_client_connections").type, "gauge");
  assert.equal(value(f, "waypost_connections_refused_total", { reason: "limit" }), 2);
  assert.equal(value(f, "waypost_connections_refused_total", { reason: "client-limit" }), 0);
  assert.equal(samples(f, "waypost_connections_refused_total").length, 5, "every reason is rendered");
  assert.equal(value(f, "waypost_connections_refused_total", { reason: "draining" }), 1);

  for (let i = 0; i < 4; i++) metrics.connectionClosed();
  metrics.tunnelClosed();
  metrics.tunnelClosed();
  f = parse(metrics.render());
  assert.equal(value(f, "waypost_client_connections"), 0);
  assert.equal(value(f, "waypost_tunnels"), 0);
});

function families(f: Map<string, Family>, name: string): Family {
  const family = f.get(name);
  assert.ok(family !== undefined, name);
  return family;
}

Deno.test("collectors are read at render time", () => {
  const metrics = new Metrics(INFO);
  let queued = 3;
  metrics.addCollector({
    name: "waypost_queue_depth",
    help: "Queued things.\nTwo lines \\ here",
    type: "gauge",
    read: () => queued,
  });
  metrics.addCollector({
    name: "waypost_broken_total",
    help: "Throws.",
    type: "counter",
    read: () => {
      throw new Error("broken");
    },
  });
  let f = parse(metrics.render());
  assert.equal(value(f, "waypost_queue_depth"), 3);
  assert.equal(families(f, "waypost_queue_depth").help, "Queued things.\\nTwo lines \\\\ here");
  assert.ok(!f.has("waypost_broken_total"), "a throwing collector is left out");
  queued = 7.5;
  f = parse(metrics.render());
  assert.equal(value(f, "waypost_queue_depth"), 7.5);
});

Deno.test("collector names are checked", () => {
  const metrics = new Metrics(INFO);
  const read = () => 0;
  assert.throws(() => metrics.addCollector({ name: "bad name", help: "", type: "gauge", read }), TypeError);
  assert.throws(() => metrics.addCollector({ name: "1abc", help: "", type: "gauge", read }), TypeError);
  assert.throws(() => metrics.addCollector({ name: "waypost_things", help: "", type: "counter", read }), TypeError);
  assert.throws(() => metrics.addCollector({ name: "waypost_tunnels", help: "", type: "gauge", read }), TypeError);
  assert.throws(
    () => metrics.addCollector({ name: "waypost_request_duration_seconds_sum", help: "", type: "gauge", read }),
    TypeError,
  );
  metrics.addCollector({ name: "waypost_things", help: "x", type: "gauge", read });
  assert.throws(() => metrics.addCollector({ name: "waypost_things", help: "x", type: "gauge", read }), TypeError);
  parse(metrics.render());
});

Deno.test("the access log's own counters are read at render time", () => {
  const metrics = new Metrics(INFO);
  const log = new AccessLog({ write: (p) => Promise.resolve(p.length) });
  metrics.watchAccessLog(log);
  let f = parse(metrics.render());
  assert.equal(value(f, "waypost_log_lines_dropped_total"), 0);
  assert.equal(families(f, "waypost_log_lines_dropped_total").type, "counter");
  log.dropped = 12;
  log.written = 34;
  f = parse(metrics.render());
  assert.equal(value(f, "waypost_log_lines_dropped_total"), 12);
  assert.equal(value(f, "waypost_log_lines_written_total"), 34);
  assert.throws(() => metrics.watchAccessLog(log), TypeError, "one log per registry");
});

Deno.test("hooks feed record()", () => {
  const metrics = new Metrics(INFO);
  const recent = new RecentExchanges(2);
  const r = record({ status: 404 });
  metrics.hooks.onExchangeEnd!(r);
  recent.hooks.onExchangeEnd!(r);
  const f = parse(metrics.render());
  assert.equal(value(f, "waypost_requests_total", { kind: "http", method: "GET", code: "404" }), 1);
  assert.deepEqual(recent.list(), [r]);
});

Deno.test("recent exchanges: newest first, wrapping around", () => {
  const recent = new RecentExchanges(3);
  assert.equal(recent.capacity, 3);
  assert.deepEqual(recent.list(), []);
  const records = Array.from({ length: 8 }, (_, i) => record({ connectionId: i }));
  const ids = () => recent.list().map((r) => r.connectionId);
  recent.add(records[0]);
  assert.deepEqual(ids(), [0]);
  recent.add(records[1]);
  recent.add(records[2]);
  assert.deepEqual(ids(), [2, 1, 0]);
  recent.add(records[3]);
  assert.deepEqual(ids(), [3, 2, 1]);
  for (let i = 4; i < 8; i++) recent.add(records[i]);
  assert.deepEqual(ids(), [7, 6, 5]);
  assert.equal(recent.size, 3);
  assert.equal(recent.list()[0], records[7], "the same reference is kept");
});

Deno.test("recent exchanges: default size, a ring of one, invalid sizes", () => {
  const recent = new RecentExchanges();
  assert.equal(recent.capacity, 50);
  for (let i = 0; i < 120; i++) recent.add(record({ connectionId: i }));
  const ids = recent.list().map((r) => r.connectionId);
  assert.equal(ids.length, 50);
  assert.deepEqual(ids, Array.from({ length: 50 }, (_, i) => 119 - i));

  const one = new RecentExchanges(1);
  one.add(record({ connectionId: 1 }));
  one.add(record({ connectionId: 2 }));
  assert.deepEqual(one.list().map((r) => r.connectionId), [2]);

  for (const size of [0, -1, 1.5, NaN, Infinity]) assert.throws(() => new RecentExchanges(size), RangeError);
});

Deno.test("the test's parser rejects text outside the grammar", () => {
  const head = "# HELP m A metric.\n# TYPE m counter\n";
  const h = "# HELP h A histogram.\n# TYPE h histogram\n";
  const bad = [
    "m 1\n", // no HELP or TYPE
    `${head}m{a="b} 1\n`, // unterminated label value
    `${head}m{a="b\nc"} 1\n`, // raw line feed in a label value
    `${head}m 1e-7\n`, // exponent
    `${head}m{a="\\x"} 1\n`, // unknown escape
    `${head}m 1`, // no final line feed
    `${h}h_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n`, // not cumulative
    `${h}h_bucket{le="1"} 1\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 2\n`, // +Inf is not _count
    `${head}${h}h_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\nm 1\n`, // samples apart from their family
  ];
  for (const text of bad) assert.throws(() => parse(text), assert.AssertionError, JSON.stringify(text));
  parse(`${head}m{a="x\\"y\\\\z\\n"} 1\n${h}h_bucket{le="1"} 1\nh_bucket{le="+Inf"} 1\nh_sum 0.5\nh_count 1\n`);
});

Deno.test("lib/version.ts matches deno.json (workers cannot read files outside lib/)", async () => {
  const { VERSION } = await import("../lib/version.ts");
  const denoJson = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url)));
  assert.equal(VERSION, denoJson.version);
});

Deno.test("--workers: another thread's snapshot is added when rendering (counts, errors, histograms, gauges)", () => {
  const main = new Metrics({ version: "1", deno: "2" });
  const worker = new Metrics({ version: "1", deno: "2" });
  main.record(record({ status: 200 }));
  worker.record(record({ status: 200 }));
  worker.record(record({ status: 502, error: "upstream-refused" }));
  worker.connectionOpened();
  main.setRemote(1, structuredClone(worker.snapshot()));
  const text = main.render();
  const line = (prefix: string) => text.split("\n").find((l) => l.startsWith(prefix));
  assert.equal(
    line('waypost_requests_total{kind="http",method="GET",code="200"}'),
    'waypost_requests_total{kind="http",method="GET",code="200"} 2',
  );
  assert.equal(
    line('waypost_errors_total{code="upstream-refused"}'),
    'waypost_errors_total{code="upstream-refused"} 1',
  );
  assert.equal(line("waypost_request_duration_seconds_count"), "waypost_request_duration_seconds_count 3");
  assert.equal(line("waypost_client_connections "), "waypost_client_connections 1");
  assert.equal(main.summary().requests, 3);
  // A newer snapshot replaces the older one (never added twice); forgetting a thread removes it.
  worker.record(record({ status: 200 }));
  main.setRemote(1, worker.snapshot());
  assert.equal(main.summary().requests, 4);
  main.setRemote(1, null);
  assert.equal(main.summary().requests, 1);
});
