/**
 * The access log: each format parsed back for a plain exchange, a tunnel, a
 * local error and an upstream error; hostile targets cannot break a line; the
 * writer drops (and counts) instead of blocking; the CLI writes a file and
 * reopens it on SIGHUP.
 */
import assert from "node:assert/strict";
import { AccessLog, formatRecord, type LogSink } from "../lib/access_log.ts";
import type { ExchangeRecord } from "../lib/hooks.ts";
import { echoTarget, get, startOrigin, startTestProxy } from "./util.ts";

const NOW = Date.UTC(2026, 11, 3, 8, 46, 33, 123);

function record(over: Partial<ExchangeRecord> = {}): ExchangeRecord {
  return {
    kind: "http",
    method: "GET",
    target: "http://example.test/path?secret=1",
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
    contentType: "text/html; charset=utf-8",
    endedAt: NOW,
    ...over,
  };
}

const ROWS: { name: string; r: ExchangeRecord; squid: string }[] = [
  { name: "a plain exchange", r: record(), squid: "TCP_MISS/200" },
  {
    name: "a tunnel",
    r: record({
      kind: "connect",
      method: "CONNECT",
      target: "example.test:443",
      contentType: null,
      tunnelEnd: { end: "closed", firstFin: "client" },
    }),
    squid: "TCP_TUNNEL/200",
  },
  {
    name: "a local error",
    r: record({
      kind: "local",
      method: "GET",
      target: "/x",
      status: 400,
      upstream: null,
      error: "origin-form-to-proxy",
    }),
    squid: "NONE_NONE/400",
  },
  {
    name: "an upstream error",
    r: record({ status: 502, upstream: null, error: "upstream-refused", contentType: "text/plain" }),
    squid: "TCP_MISS/502",
  },
];

Deno.test("json lines parse back with the documented schema; query strings stripped unless asked", async (t) => {
  for (const row of ROWS) {
    await t.step(row.name, () => {
      const line = formatRecord(row.r, "json", { now: NOW });
      assert.ok(!line.includes("\n"));
      const v = JSON.parse(line);
      assert.equal(v.time, "2026-12-03T08:46:33.123Z");
      assert.equal(v.client, "127.0.0.1");
      assert.equal(v.status, row.r.status);
      assert.equal(v.method, row.r.method);
      assert.equal(v.error, row.r.error);
      assert.equal(v.bytes_to_client, row.r.bytesToClient);
      assert.ok(!String(v.target).includes("secret"));
    });
  }
  assert.match(JSON.parse(formatRecord(record(), "json", { query: true })).target, /secret=1/);
  assert.equal(JSON.parse(formatRecord(record(), "json", { now: NOW - 118 })).time, "2026-12-03T08:46:33.005Z");
  assert.equal(JSON.parse(formatRecord(record(), "json", { now: NOW - 123 })).time, "2026-12-03T08:46:33.000Z");
});

// Squid: %ts.%03tu %6tr %>a %Ss/%03>Hs %<st %rm %ru %[un %Sh/%<a %mt
const SQUID = /^(\d+)\.(\d{3}) +(\d+) (\S+) ([A-Z_]+\/\d{3}) (\d+) (\S+) (\S+) (\S+) (HIER_[A-Z]+\/\S+) (\S+)$/;
// CLF: host ident authuser [date] "request" status bytes
const CLF = /^(\S+) - - \[(\d{2}\/[A-Z][a-z]{2}\/\d{4}:\d{2}:\d{2}:\d{2} \+0000)\] "([^"]*)" (\d{3}) (\d+)$/;

Deno.test("squid and common lines follow their grammar", async (t) => {
  for (const row of ROWS) {
    await t.step(row.name, () => {
      const squid = SQUID.exec(formatRecord(row.r, "squid", { now: NOW }));
      assert.ok(squid, formatRecord(row.r, "squid", { now: NOW }));
      assert.equal(squid[1], String(Math.floor(NOW / 1000)));
      assert.equal(squid[2], "123");
      assert.equal(squid[5], row.squid);
      assert.equal(squid[9], "-");
      assert.equal(squid[10], row.r.upstream ? "HIER_DIRECT/127.0.0.1" : "HIER_NONE/-");
      const clf = CLF.exec(formatRecord(row.r, "common", { now: NOW }));
      assert.ok(clf, formatRecord(row.r, "common", { now: NOW }));
      assert.equal(clf[2], "03/Dec/2026:08:46:33 +0000");
      assert.equal(clf[4], String(row.r.status));
    });
  }
});

Deno.test("hostile targets cannot break or forge a line in any format", () => {
  const hostile = record({
    method: 'G"ET',
    target: 'http://a/\r\n127.0.0.1 - - [x] "GET / HTTP/1.1" 200 0\u00e9 "q\\"',
    contentType: "text/html\r\nx",
  });
  for (const format of ["json", "squid", "common", "text"] as const) {
    const line = formatRecord(hostile, format, { now: NOW, query: true });
    assert.ok(!/[\r\n]/.test(line), `${format}: ${line}`);
    if (format === "squid") assert.ok(SQUID.test(line), line);
    if (format === "common") assert.ok(CLF.test(line), line);
    if (format === "json") assert.equal(JSON.parse(line).method, 'G"ET');
  }
});

Deno.test("the writer never blocks: a stalled sink makes lines drop and count", async () => {
  let stalledNow = true;
  let release!: () => void;
  const stalled: LogSink = {
    write: (p) => stalledNow ? new Promise((resolve) => release = () => resolve(p.length)) : Promise.resolve(p.length),
  };
  const log = new AccessLog(stalled, { maxPendingBytes: 2000 });
  for (let i = 0; i < 5; i++) log.add(record());
  await log.flush(10); // the batch is written now, and the sink stalls on it
  for (let i = 0; i < 100; i++) log.add(record());
  assert.ok(log.dropped > 0, "nothing was dropped");
  stalledNow = false;
  release();
  await log.flush();
  // After the stall, lines go through again.
  const before = log.written;
  log.add(record());
  await log.flush();
  assert.equal(log.written, before + 1);
});

Deno.test("a line longer than a buffer is written on its own, not dropped", async () => {
  const chunks: string[] = [];
  const sink: LogSink = { write: (p) => (chunks.push(new TextDecoder().decode(p)), Promise.resolve(p.length)) };
  const log = new AccessLog(sink, { maxPendingBytes: 8192 });
  log.add(record({ target: "http://a.test/" }));
  log.add(record({ target: "http://a.test/" + "\u00e9".repeat(3000) + "x".repeat(5000) }));
  log.add(record({ target: "http://a.test/after" }));
  await log.flush();
  await log.flush();
  assert.equal(log.dropped, 0);
  const lines = chunks.join("").trim().split("\n").map((l) => JSON.parse(l).target);
  assert.equal(lines.length, 3);
  assert.equal(lines[1].length, "http://a.test/".length + 8000);
});

Deno.test("flush ends under steady traffic; reopen switches the sink at once", async () => {
  const slow: LogSink = { write: (p) => new Promise((resolve) => setTimeout(() => resolve(p.length), 5)) };
  const log = new AccessLog(slow);
  const feeding = setInterval(() => log.add(record()), 1);
  try {
    const started = Date.now();
    log.add(record());
    await log.flush();
    assert.ok(Date.now() - started < 1000, `flush took ${Date.now() - started} ms`);
  } finally {
    clearInterval(feeding);
  }
  await log.flush();
  // The old sink never finishes its write: reopen gives up waiting after maxMs, and new lines go to the new sink.
  let release!: () => void;
  const stuck: LogSink = { write: (p) => new Promise((resolve) => release = () => resolve(p.length)) };
  const fresh: string[] = [];
  const next: LogSink = { write: (p) => (fresh.push(new TextDecoder().decode(p)), Promise.resolve(p.length)) };
  await log.reopen(stuck);
  log.add(record({ target: "http://a.test/old" }));
  await log.flush(10);
  await log.reopen(next, 20);
  log.add(record({ target: "http://a.test/new" }));
  release();
  await log.flush();
  await log.flush();
  assert.deepEqual(fresh.join("").trim().split("\n").map((l) => JSON.parse(l).target), ["http://a.test/new"]);
});

Deno.test("the access log as a hook: one line per exchange and per tunnel", async () => {
  await using origin = startOrigin(echoTarget);
  const chunks: string[] = [];
  const sink: LogSink = { write: (p) => (chunks.push(new TextDecoder().decode(p)), Promise.resolve(p.length)) };
  const log = new AccessLog(sink, { format: "squid" });
  await using proxy = startTestProxy({ hooks: log.hooks });
  await proxy.roundTrip(get(origin.url("/a?x=1")));
  await proxy.roundTrip(get("http://127.0.0.1:1/"));
  for (let i = 0; i < 100 && chunks.join("").split("\n").length < 3; i++) await new Promise((r) => setTimeout(r, 10));
  await log.flush();
  const lines = chunks.join("").trim().split("\n");
  assert.equal(lines.length, 2);
  assert.match(
    lines[0],
    new RegExp(`TCP_MISS/200 \\d+ GET ${origin.url("/a").replace(/[.[\]]/g, "\\$&")} - HIER_DIRECT/127.0.0.1 `),
  );
  assert.match(lines[1], /TCP_MISS\/502 \d+ GET http:\/\/127\.0\.0\.1:1\/ - HIER_NONE\/- text\/plain$/);
});

Deno.test("CLI: --log-file appends lines, SIGHUP reopens it (rotation)", async () => {
  await using origin = startOrigin(echoTarget);
  const dir = await Deno.makeTempDir({ prefix: "waypost-log-" });
  const file = `${dir}/access.log`;
  const main = new URL("../main.ts", import.meta.url).pathname;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      `--allow-write=${dir}`,
      main,
      "--port",
      "0",
      "--log-file",
      file,
      "--log-format",
      "json",
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  try {
    const reader = child.stdout.getReader();
    let line = "";
    while (!line.includes("\n")) {
      const r = await reader.read();
      if (r.done) break;
      line += new TextDecoder().decode(r.value);
    }
    reader.releaseLock();
    const port = Number(/:(\d+)/.exec(line)?.[1]);
    const fetchOne = async (path: string) => {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      await conn.write(new TextEncoder().encode(get(origin.url(path), ["Connection: close"])));
      await new Response(conn.readable).arrayBuffer();
    };
    const waitLines = async (path: string, n: number) => {
      for (let i = 0; i < 200; i++) {
        const text = await Deno.readTextFile(path).catch(() => "");
        if (text.trim().split("\n").filter(Boolean).length >= n) return text;
        await new Promise((r) => setTimeout(r, 10));
      }
      throw new Error(`fewer than ${n} lines in ${path}`);
    };
    await fetchOne("/before");
    const first = await waitLines(file, 1);
    assert.equal(JSON.parse(first.trim()).target, origin.url("/before"));
    await Deno.rename(file, `${file}.1`);
    child.kill("SIGHUP");
    await new Promise((r) => setTimeout(r, 200));
    await fetchOne("/after");
    const second = await waitLines(file, 1);
    assert.equal(JSON.parse(second.trim()).target, origin.url("/after"));
    assert.equal((await Deno.readTextFile(`${file}.1`)).trim().split("\n").length, 1);
    // A file that cannot be opened again (a directory in its place) leaves the log on the old one; the proxy runs on.
    await Deno.rename(file, `${file}.2`);
    await Deno.mkdir(file);
    child.kill("SIGHUP");
    await new Promise((r) => setTimeout(r, 200));
    await fetchOne("/third");
    const third = await waitLines(`${file}.2`, 2);
    assert.equal(JSON.parse(third.trim().split("\n")[1]).target, origin.url("/third"));
  } finally {
    child.kill("SIGTERM");
    await child.status;
    await child.stdout.cancel().catch(() => {});
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("CLI: the access log's written and dropped lines are in /metrics", async () => {
  await using origin = startOrigin(echoTarget);
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      new URL("../main.ts", import.meta.url).pathname,
      "--port",
      "0",
      "--log-format",
      "json",
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  try {
    const reader = child.stdout.getReader();
    let out = "";
    while (!out.includes("\n")) out += new TextDecoder().decode((await reader.read()).value);
    const port = Number(/:(\d+)/.exec(out)?.[1]);
    // Keep draining stdout (the log) so the writer never stalls.
    const drain = (async () => {
      while (!(await reader.read()).done) { /* the lines are not needed */ }
    })();
    const fetchText = async (request: string) => {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      await conn.write(new TextEncoder().encode(request));
      return await new Response(conn.readable).text();
    };
    await fetchText(get(origin.url("/one"), ["Connection: close"]));
    await new Promise((r) => setTimeout(r, 150)); // the log writes its batch every 50 ms
    const metrics = await fetchText("GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert.match(metrics, /^waypost_log_lines_written_total [1-9]/m);
    assert.match(metrics, /^waypost_log_lines_dropped_total 0$/m);
    child.kill("SIGTERM");
    await drain;
  } finally {
    try {
      child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
    await child.status;
  }
});
