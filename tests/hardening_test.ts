/**
 * Hardening tests, end to end over loopback: request smuggling vectors that must
 * never reach an origin, hostile origin framing, every timeout by name, the
 * connection limits, faults on both sides at once, and the CLI's signals and
 * exit codes (the real `main.ts` in a child process).
 *
 * Same harness as forward_test.ts: a raw client, the proxy on port 0 and a
 * scripted raw-TCP origin that records every byte. Waits are bounded; sleeps
 * only pace a slowloris or hold an origin's answer back.
 */
import assert from "node:assert/strict";
import denoJson from "../deno.json" with { type: "json" };
import type { Logger } from "../mod.ts";
import {
  Client,
  DeadlineError,
  deferred,
  echoTarget,
  fieldValues,
  fullBacklogListener,
  get,
  latin1,
  listTokens,
  type Message,
  ok,
  type Origin,
  type OriginConn,
  readHead,
  serve,
  startOrigin,
  startTestProxy,
  type TestProxy,
  text,
} from "./util.ts";

// ---------------------------------------------------------------------------
// Helpers

/** Resolves after `ms` (the timer always completes, so nothing leaks). */
function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `condition` every 10 ms for at most `ms`; resolves whether it became true. */
async function pollUntil(condition: () => boolean, ms: number): Promise<boolean> {
  const end = performance.now() + ms;
  while (!condition()) {
    if (performance.now() > end) return false;
    await delay(10);
  }
  return true;
}

/** One log record as the proxy emitted it. */
interface LogRecord {
  level: string;
  event: string;
  fields: Record<string, unknown>;
}

/** A logger that keeps every record (all levels), for asserting event names. */
function recordingLogger(): { logger: Logger; records: LogRecord[]; events: () => string[] } {
  const records: LogRecord[] = [];
  return {
    records,
    logger: { log: (level, event, fields) => records.push({ level, event, fields: fields ?? {} }) },
    events: () => records.map((r) => r.event),
  };
}

/** Asserts the response asks to close the connection. */
function assertConnectionClose(res: Message): void {
  assert.ok(
    listTokens(res.fields, "connection").includes("close"),
    `no Connection: close in ${JSON.stringify(res.headRaw)}`,
  );
}

/** Origin script that records every byte it receives until the peer closes. */
const recordUntilEof = async (c: OriginConn) => {
  await c.waitEof();
};

/**
 * Proves `origin` never accepted a connection from the proxy: connects a sentinel
 * directly and requires it to be the origin's first and only connection (accepts
 * are FIFO, so any earlier proxy connection would come first), with no bytes seen.
 */
async function assertOriginUntouched(origin: Origin): Promise<void> {
  const sentinel = await Deno.connect({ hostname: origin.hostname, port: origin.port, transport: "tcp" });
  try {
    const first = await origin.connection(0);
    assert.equal(
      (first.conn.remoteAddr as Deno.NetAddr).port,
      (sentinel.localAddr as Deno.NetAddr).port,
      `the origin was contacted by the proxy; it received ${JSON.stringify(origin.receivedText)}`,
    );
    assert.equal(origin.conns.length, 1, "the origin accepted more than the sentinel connection");
    assert.equal(origin.receivedText, "", "the origin received bytes");
  } finally {
    sentinel.close();
  }
}

/** A normal request through the proxy to a fresh healthy origin succeeds. */
async function assertStillServes(proxy: TestProxy): Promise<void> {
  await using healthy = startOrigin(echoTarget);
  const res = await proxy.roundTrip(get(healthy.url("/after")));
  assert.equal(res.status, 200);
  assert.equal(text(res.body), "target=/after");
}

/** Waits (bounded) until the proxy has no open client connection. */
async function assertNoConnections(proxy: TestProxy): Promise<void> {
  assert.ok(
    await pollUntil(() => proxy.handle.connections === 0, 3000),
    `${proxy.handle.connections} client connection(s) still open`,
  );
}

/** Resolves with whether the proxy closed `c` (FIN or reset) within the reader's deadline. */
async function proxyClosed(c: OriginConn): Promise<boolean> {
  try {
    await c.waitEof();
    return true;
  } catch (error) {
    if (error instanceof DeadlineError) return false;
    throw error;
  }
}

// ---------------------------------------------------------------------------
// 1. Request smuggling vectors

/** A request to `o` through the proxy: absolute-form target, Host, extra field lines and a body. */
function request(o: Origin, fields: string[], body = "", method = "POST", version = "1.1"): string {
  const lines = fields.map((f) => `${f}\r\n`).join("");
  return `${method} ${o.url("/smuggle")} HTTP/${version}\r\nHost: ${o.authority}\r\n${lines}\r\n${body}`;
}

/** A whole chunked request body whose first chunk-size line is `size` (5 bytes of data follow). */
function chunkedWithSize(o: Origin, size: string): string {
  return request(o, ["Transfer-Encoding: chunked"], `${size}\r\nhello\r\n0\r\n\r\n`);
}

const MAX_REQUEST_LINE = 256;
const MAX_FIELDS = 20;

const SMUGGLING: { name: string; status: number; wire: (o: Origin) => string }[] = [
  {
    name: "Content-Length with Transfer-Encoding",
    status: 400,
    wire: (o) => request(o, ["Content-Length: 5", "Transfer-Encoding: chunked"], "0\r\n\r\n"),
  },
  {
    name: "Transfer-Encoding before Content-Length",
    status: 400,
    wire: (o) => request(o, ["Transfer-Encoding: chunked", "Content-Length: 5"], "0\r\n\r\n"),
  },
  {
    name: "two differing Content-Length fields",
    status: 400,
    wire: (o) => request(o, ["Content-Length: 1", "Content-Length: 2"], "ab"),
  },
  { name: "Content-Length: 1, 2", status: 400, wire: (o) => request(o, ["Content-Length: 1, 2"], "ab") },
  {
    name: "Transfer-Encoding: chunked, identity",
    status: 400,
    wire: (o) => request(o, ["Transfer-Encoding: chunked, identity"], "0\r\n\r\n"),
  },
  {
    name: "Transfer-Encoding: chunked in two fields",
    status: 400,
    wire: (o) => request(o, ["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"], "0\r\n\r\n"),
  },
  {
    name: "Transfer-Encoding: xchunked",
    status: 400,
    wire: (o) => request(o, ["Transfer-Encoding: xchunked"], "0\r\n\r\n"),
  },
  {
    name: "Transfer-Encoding : chunked (space before the colon)",
    status: 400,
    wire: (o) => request(o, ["Transfer-Encoding : chunked"], "0\r\n\r\n"),
  },
  {
    name: "Transfer-Encoding value on an obs-fold continuation line",
    status: 400,
    wire: (o) => request(o, ["Transfer-Encoding:", " chunked"], "0\r\n\r\n"),
  },
  { name: "chunk size overflow fffffffffffffffff", status: 400, wire: (o) => chunkedWithSize(o, "fffffffffffffffff") },
  { name: "chunk size with a sign +5", status: 400, wire: (o) => chunkedWithSize(o, "+5") },
  { name: "chunk size with a sign -5", status: 400, wire: (o) => chunkedWithSize(o, "-5") },
  { name: "chunk size with a 0x prefix", status: 400, wire: (o) => chunkedWithSize(o, "0x5") },
  { name: "chunk size with trailing junk 5x", status: 400, wire: (o) => chunkedWithSize(o, "5x") },
  {
    name: "bare LF line ends throughout the head",
    status: 400,
    wire: (o) => `GET ${o.url("/smuggle")} HTTP/1.1\nHost: ${o.authority}\n\n`,
  },
  {
    name: "one bare LF line end among CRLFs",
    status: 400,
    wire: (o) => `GET ${o.url("/smuggle")} HTTP/1.1\r\nHost: ${o.authority}\nX-A: b\r\n\r\n`,
  },
  { name: "bare CR inside a field value", status: 400, wire: (o) => request(o, ["X-A: a\rb"], "", "GET") },
  {
    name: "bare CR as the request line's end",
    status: 400,
    wire: (o) => `GET ${o.url("/smuggle")} HTTP/1.1\rHost: ${o.authority}\r\n\r\n`,
  },
  ...[0x00, 0x01, 0x08, 0x0b, 0x0c, 0x1b, 0x1f, 0x7f].map((byte) => ({
    name: `control byte 0x${byte.toString(16).padStart(2, "0")} in a field value`,
    status: 400,
    wire: (o: Origin) => request(o, [`X-Ctl: a${String.fromCharCode(byte)}b`], "", "GET"),
  })),
  { name: "non-token field name Fo@o", status: 400, wire: (o) => request(o, ["Fo@o: x"], "", "GET") },
  { name: "non-token field name [x]", status: 400, wire: (o) => request(o, ["[x]: y"], "", "GET") },
  { name: "empty field name", status: 400, wire: (o) => request(o, [": y"], "", "GET") },
  { name: "HTTP/2 connection preface", status: 505, wire: () => "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" },
  { name: "HTTP/0.9 simple request", status: 400, wire: (o) => `GET ${o.url("/smuggle")}\r\n` },
  { name: "HTTP/2.0 request line", status: 505, wire: (o) => request(o, [], "", "GET", "2.0") },
  { name: "HTTP/3.0 request line", status: 505, wire: (o) => request(o, [], "", "GET", "3.0") },
  {
    name: "Transfer-Encoding in an HTTP/1.0 request",
    status: 400,
    wire: (o) => request(o, ["Transfer-Encoding: chunked"], "5\r\nhello\r\n0\r\n\r\n", "POST", "1.0"),
  },
  {
    name: "Transfer-Encoding: gzip, chunked",
    status: 501,
    wire: (o) => request(o, ["Transfer-Encoding: gzip, chunked"], "5\r\nhello\r\n0\r\n\r\n"),
  },
  {
    name: "request line over maxRequestLineBytes",
    status: 414,
    wire: (o) => `GET ${o.url("/")}${"a".repeat(MAX_REQUEST_LINE)} HTTP/1.1\r\nHost: ${o.authority}\r\n\r\n`,
  },
  {
    name: "more fields than maxFields",
    status: 431,
    wire: (o) => request(o, Array.from({ length: MAX_FIELDS + 5 }, (_, i) => `X-F${i}: v`), "", "GET"),
  },
];

Deno.test("smuggling vectors are refused with Connection: close, and the origin never sees a connection", async (t) => {
  await using proxy = startTestProxy({ maxRequestLineBytes: MAX_REQUEST_LINE, maxFields: MAX_FIELDS });
  for (const row of SMUGGLING) {
    await t.step(`${row.name} → ${row.status}`, async () => {
      await using origin = startOrigin(recordUntilEof);
      {
        await using client = await proxy.connect();
        await client.write(row.wire(origin));
        const res = await client.response();
        assert.equal(res.status, row.status);
        assert.equal(res.version, "HTTP/1.1");
        assertConnectionClose(res);
        await client.assertClosed();
      }
      await assertOriginUntouched(origin);
    });
  }
  await assertNoConnections(proxy);
});

// ---------------------------------------------------------------------------
// 2. Hostile framing from the origin

/** Body bytes that must never reach the client when the response is refused. */
const LEAK = "LEAKED-BODY"; // 11 bytes, chunk size b

const HOSTILE_RESPONSES: { name: string; response: string }[] = [
  {
    name: "Transfer-Encoding with Content-Length",
    response: `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 11\r\n\r\nb\r\n${LEAK}\r\n0\r\n\r\n`,
  },
  {
    name: "two different Content-Length fields",
    response: `HTTP/1.1 200 OK\r\nContent-Length: 11\r\nContent-Length: 12\r\n\r\n${LEAK}`,
  },
  { name: "Content-Length: abc", response: `HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n${LEAK}` },
  { name: "Content-Length: -1", response: `HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n${LEAK}` },
  { name: "Content-Length: 1 2", response: `HTTP/1.1 200 OK\r\nContent-Length: 1 2\r\n\r\n${LEAK}` },
  {
    name: "Transfer-Encoding: chunked, gzip (chunked not final)",
    response: `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nb\r\n${LEAK}\r\n0\r\n\r\n`,
  },
  {
    name: "Transfer-Encoding in an HTTP/1.0 response",
    response: `HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nb\r\n${LEAK}\r\n0\r\n\r\n`,
  },
  { name: "status line HTTP/1.1 2000 OK", response: `HTTP/1.1 2000 OK\r\nContent-Length: 11\r\n\r\n${LEAK}` },
  { name: "status line HTTP/2 200", response: `HTTP/2 200\r\nContent-Length: 11\r\n\r\n${LEAK}` },
  { name: "status line ICY 200 OK", response: `ICY 200 OK\r\nContent-Length: 11\r\n\r\n${LEAK}` },
];

Deno.test("hostile origin framing → 502, nothing of the body forwarded, the upstream connection closed", async (t) => {
  await using proxy = startTestProxy();
  for (const row of HOSTILE_RESPONSES) {
    await t.step(row.name, async () => {
      const upstreamClosed = deferred<boolean>();
      await using origin = startOrigin(async (c) => {
        await c.readRequest();
        await c.write(row.response);
        upstreamClosed.resolve(await proxyClosed(c));
      });
      await using client = await proxy.connect();
      await client.write(get(origin.url("/hostile")));
      const res = await client.response();
      assert.equal(res.status, 502);
      assertConnectionClose(res);
      await client.assertClosed();
      assert.ok(!client.receivedText.includes(LEAK), "the refused response's body reached the client");
      assert.ok(await upstreamClosed.promise, "the proxy kept the upstream connection open (or pooled it)");
    });
  }
  await t.step("obs-fold in a response is tolerated and replaced by SP", async () => {
    await using origin = startOrigin(
      serve(() => "HTTP/1.1 200 OK\r\nX-Folded: first\r\n \t second\r\nContent-Length: 2\r\n\r\nok"),
    );
    const res = await proxy.roundTrip(get(origin.url("/folded")));
    assert.equal(res.status, 200);
    assert.deepEqual(fieldValues(res.fields, "x-folded"), ["first second"]);
    assert.ok(!/\r\n[ \t]/.test(res.headRaw), "an obs-fold line reached the client");
    assert.equal(text(res.body), "ok");
  });
  await assertStillServes(proxy);
  await assertNoConnections(proxy);
});

// ---------------------------------------------------------------------------
// 3. Timeouts

const SHORT_MS = 300;
/** Slack below a timeout: the sweeper only fires after the deadline, never before. */
const EARLY_MS = SHORT_MS - 30;
const LATE_MS = 3000;

function assertFiredInTime(ms: number, what: string): void {
  assert.ok(ms >= EARLY_MS && ms < LATE_MS, `${what} after ${ms.toFixed(0)} ms (timeout ${SHORT_MS} ms)`);
}

Deno.test("timeouts fire by name with their documented outcome", async (t) => {
  await t.step("headerTimeoutMs: a slowloris head (one byte per 50 ms) gets 408, then the close", async () => {
    const rec = recordingLogger();
    await using origin = startOrigin(recordUntilEof);
    await using proxy = startTestProxy({ headerTimeoutMs: SHORT_MS, logger: rec.logger });
    await using client = await proxy.connect();
    const head = `GET ${origin.url("/slow")} HTTP/1.1\r\nHost: ${origin.authority}\r\nX-Slow: ${"a".repeat(1000)}`;
    const started = performance.now();
    let stop = false;
    let sent = 0;
    const drip = (async () => {
      for (const ch of head) {
        if (stop) return;
        try {
          await client.write(ch);
        } catch {
          return; // the proxy closed: the drip is over
        }
        sent++;
        await delay(50);
      }
    })();
    try {
      const res = await client.response();
      const ms = performance.now() - started;
      assert.equal(res.status, 408);
      assertConnectionClose(res);
      assertFiredInTime(ms, "408");
      assert.ok(sent >= 3, `only ${sent} bytes were dripped: the head timer was not running from connect`);
      await client.assertClosed();
    } finally {
      stop = true;
      await drip;
    }
    assert.ok(rec.events().includes("header-timeout"), `events: ${rec.events()}`);
    await assertOriginUntouched(origin);
  });

  await t.step("headerTimeoutMs: a connection that sends nothing is closed without a response", async () => {
    const rec = recordingLogger();
    await using proxy = startTestProxy({ headerTimeoutMs: SHORT_MS, logger: rec.logger });
    await using client = await proxy.connect();
    const started = performance.now();
    await client.assertClosed();
    assertFiredInTime(performance.now() - started, "close");
    // Logged as a timeout (the code logs "idle-timeout" when no byte of a head came).
    assert.ok(
      rec.events().some((e) => e === "header-timeout" || e === "idle-timeout"),
      `events: ${rec.events()}`,
    );
  });

  await t.step("idleTimeoutMs: a keep-alive connection idle after a response is closed, no bytes", async () => {
    const rec = recordingLogger();
    await using origin = startOrigin(echoTarget);
    await using proxy = startTestProxy({ idleTimeoutMs: SHORT_MS, logger: rec.logger });
    await using client = await proxy.connect();
    await client.write(get(origin.url("/once")));
    const res = await client.response();
    assert.equal(res.status, 200);
    assert.ok(!listTokens(res.fields, "connection").includes("close"));
    const started = performance.now();
    await client.assertClosed();
    assertFiredInTime(performance.now() - started, "idle close");
    assert.ok(rec.events().includes("idle-timeout"), `events: ${rec.events()}`);
  });

  await t.step("responseTimeoutMs: the origin reads the request and never answers → 504", async () => {
    const rec = recordingLogger();
    const upstreamClosed = deferred<boolean>();
    await using origin = startOrigin(async (c) => {
      await c.readRequest();
      upstreamClosed.resolve(await proxyClosed(c));
    });
    await using proxy = startTestProxy({ responseTimeoutMs: SHORT_MS, logger: rec.logger });
    await using client = await proxy.connect();
    const started = performance.now();
    await client.write(get(origin.url("/silent")));
    const res = await client.response();
    assert.equal(res.status, 504);
    assertFiredInTime(performance.now() - started, "504");
    assertConnectionClose(res);
    await client.assertClosed();
    assert.ok(await upstreamClosed.promise, "the upstream connection was not closed");
    assert.ok(rec.events().includes("response-timeout"), `events: ${rec.events()}`);
  });

  await t.step("bodyTimeoutMs: a request body that stalls mid-way closes both sides", async () => {
    const rec = recordingLogger();
    const seen = deferred<Message>();
    await using origin = startOrigin(async (c) => {
      const head = await c.readHead();
      if (head === null) return;
      seen.resolve(await c.readBody(head)); // returns incomplete at the proxy's close
    });
    await using proxy = startTestProxy({ bodyTimeoutMs: SHORT_MS, logger: rec.logger });
    await using client = await proxy.connect();
    await client.write(
      `POST ${origin.url("/upload")} HTTP/1.1\r\nHost: ${origin.authority}\r\nContent-Length: 100\r\n\r\n0123456789`,
    );
    const started = performance.now();
    const req = await seen.promise;
    assertFiredInTime(performance.now() - started, "upstream close");
    assert.equal(req.complete, false);
    assert.equal(text(req.body), "0123456789");
    const rest = await client.reader.readToEnd("waiting for the proxy to close the stalled upload");
    assert.ok(client.reader.eof, "the client connection is still open");
    assert.ok(!text(rest).startsWith("HTTP/1.1 2"), "a success response to an incomplete upload");
    assert.ok(rec.events().includes("body-timeout"), `events: ${rec.events()}`);
  });

  await t.step("bodyTimeoutMs: a response body that stalls after the head closes the client connection", async () => {
    const rec = recordingLogger();
    const upstreamClosed = deferred<boolean>();
    await using origin = startOrigin(async (c) => {
      await c.readRequest();
      await c.write("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
      upstreamClosed.resolve(await proxyClosed(c));
    });
    await using proxy = startTestProxy({ bodyTimeoutMs: SHORT_MS, logger: rec.logger });
    await using client = await proxy.connect();
    await client.write(get(origin.url("/stall")));
    const head = await readHead(client.reader, "response");
    assert.ok(head);
    assert.equal(head.status, 200);
    const started = performance.now();
    const body = await client.reader.readExact(100, "reading the stalled body");
    assertFiredInTime(performance.now() - started, "client close");
    assert.equal(text(body), "0123456789", "more or other bytes than the origin sent");
    assert.ok(client.reader.eof, "the client connection was not closed");
    assert.ok(await upstreamClosed.promise, "the upstream connection was not closed");
    assert.ok(rec.events().includes("body-timeout"), `events: ${rec.events()}`);
  });

  const blocked = await fullBacklogListener();
  try {
    await t.step({
      name: blocked
        ? "connectTimeoutMs: an origin with a full accept queue → 504"
        : "connectTimeoutMs (skipped: a loopback connect cannot be made to hang deterministically here)",
      ignore: blocked === null,
      fn: async () => {
        assert.ok(blocked);
        const rec = recordingLogger();
        await using proxy = startTestProxy({ connectTimeoutMs: SHORT_MS, logger: rec.logger });
        const started = performance.now();
        const res = await proxy.roundTrip(get(`http://127.0.0.1:${blocked.port}/`));
        assert.equal(res.status, 504);
        assertFiredInTime(performance.now() - started, "504");
        assertConnectionClose(res);
        assert.ok(
          rec.records.some((r) => r.event === "upstream-error" && r.fields.code === "upstream-connect-timeout"),
          `records: ${JSON.stringify(rec.records)}`,
        );
      },
    });
  } finally {
    blocked?.close();
  }
});

// ---------------------------------------------------------------------------
// 4. Connection limits

Deno.test("connection limits: the extra connection promptly gets 503 + Retry-After and is closed; freed slots serve again", async (t) => {
  const rows = [
    { name: "maxConnections: 2", options: { maxConnections: 2 }, held: 2, event: "max-connections" },
    {
      name: "maxConnectionsPerClient: 1",
      options: { maxConnectionsPerClient: 1 },
      held: 1,
      event: "max-connections-per-client",
    },
    {
      name: "maxConnections: 2 with maxConnectionsPerClient: 1 (one client address: the per-client limit)",
      options: { maxConnections: 2, maxConnectionsPerClient: 1 },
      held: 1,
      event: "max-connections-per-client",
    },
  ];
  await using origin = startOrigin(echoTarget);
  for (const row of rows) {
    await t.step(row.name, async () => {
      const rec = recordingLogger();
      await using proxy = startTestProxy({ ...row.options, logger: rec.logger });
      const held: Client[] = [];
      try {
        for (let i = 0; i < row.held; i++) {
          const c = await proxy.connect();
          held.push(c);
          await c.write(get(origin.url(`/held-${i}`)));
          assert.equal((await c.response()).status, 200); // admitted and kept alive
        }
        assert.equal(proxy.handle.connections, row.held);
        {
          await using extra = await proxy.connect();
          const started = performance.now();
          const res = await extra.response(); // sent without a request: the refusal does not wait for one
          const ms = performance.now() - started;
          assert.equal(res.status, 503);
          assert.deepEqual(fieldValues(res.fields, "retry-after").length, 1);
          assert.match(fieldValues(res.fields, "retry-after")[0], /^[0-9]+$/);
          assertConnectionClose(res);
          await extra.assertClosed();
          assert.ok(ms < 1000, `503 after ${ms.toFixed(0)} ms`);
        }
        assert.ok(rec.events().includes(row.event), `events: ${rec.events()}`);
        // The held connections still work, then leave.
        for (const [i, c] of held.entries()) {
          await c.write(get(origin.url(`/bye-${i}`), ["Connection: close"]));
          assert.equal((await c.response()).status, 200);
          await c.assertClosed();
        }
        await assertNoConnections(proxy);
        for (let i = 0; i < row.held; i++) {
          const c = await proxy.connect();
          held.push(c);
          await c.write(get(origin.url(`/again-${i}`)));
          const res = await c.response();
          assert.equal(res.status, 200);
          assert.equal(text(res.body), `target=/again-${i}`);
        }
      } finally {
        for (const c of held) c.close();
      }
    });
  }
});

// ---------------------------------------------------------------------------
// 5. Faults

Deno.test("faults: both sides vanish, half-closes after complete and incomplete requests", async (t) => {
  await using proxy = startTestProxy();

  const vanish = [
    { name: "client closes and origin closes (FIN) mid-body at the same moment", originReadsRequest: true },
    { name: "client closes and origin resets mid-body at the same moment", originReadsRequest: false },
  ];
  for (const row of vanish) {
    await t.step(`${row.name}: the proxy keeps serving`, async () => {
      const gone = deferred();
      await using origin = startOrigin(async (c) => {
        // Leaving request bytes unread makes the close a reset.
        if (row.originReadsRequest) await c.readRequest();
        else await c.reader.readExact(8);
        await c.write(concatText("HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n", "x".repeat(65536)));
        await gone.promise;
        c.close();
      });
      const client = await proxy.connect();
      try {
        await client.write(get(origin.url("/big")));
        const head = await readHead(client.reader, "response");
        assert.equal(head?.status, 200);
        assert.equal((await client.reader.readExact(1000)).length, 1000);
      } finally {
        gone.resolve(); // the origin closes in the same tick as the client
        client.close();
      }
      await assertNoConnections(proxy);
      await assertStillServes(proxy);
      await assertNoConnections(proxy);
    });
  }

  await t.step("client half-closes right after a complete request with a body: the full response arrives", async () => {
    const body = "b".repeat(5000);
    await using origin = startOrigin(serve((req) => ok(concatText("echo:", text(req.body)))));
    await using client = await proxy.connect();
    await client.write(
      `POST ${
        origin.url("/half")
      } HTTP/1.1\r\nHost: ${origin.authority}\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
    );
    await client.closeWrite();
    const res = await client.response("POST");
    assert.equal(res.status, 200);
    assert.ok(res.complete);
    assert.equal(text(res.body), `echo:${body}`);
    await client.assertClosed();
    await assertNoConnections(proxy);
  });

  await t.step(
    "client sends 4 of 10 body bytes, then half-closes: 400 or a close; the origin never gets a complete request",
    async () => {
      const seen = deferred<Message>();
      await using origin = startOrigin(async (c) => {
        const head = await c.readHead();
        if (head === null) return;
        seen.resolve(await c.readBody(head));
      });
      await using client = await proxy.connect();
      await client.write(
        `POST ${origin.url("/short")} HTTP/1.1\r\nHost: ${origin.authority}\r\nContent-Length: 10\r\n\r\nabcd`,
      );
      await client.closeWrite();
      const res = await client.readResponse("POST");
      if (res !== null) {
        assert.equal(res.status, 400);
        assertConnectionClose(res);
      }
      await client.assertClosed();
      const req = await seen.promise;
      assert.equal(req.complete, false, "the origin received a complete request");
      assert.equal(text(req.body), "abcd");
      await assertNoConnections(proxy);
    },
  );
});

/** Latin-1 bytes of the joined strings. */
function concatText(...parts: string[]): Uint8Array {
  return latin1(parts.join(""));
}

// ---------------------------------------------------------------------------
// 6. CLI

const MAIN = new URL("../main.ts", import.meta.url).pathname;
const ROOT = new URL("..", import.meta.url).pathname;

function cliCommand(args: string[], stdout: "piped" | "null", stderr: "piped" | "null"): Deno.Command {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", MAIN, ...args],
    cwd: ROOT,
    stdin: "null",
    stdout,
    stderr,
    env: { NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" },
  });
}

/** `main.ts` running in a child process, with the port read from its listening line. */
class CliProxy implements AsyncDisposable {
  readonly child: Deno.ChildProcess;
  readonly port: number;
  readonly #stdout: ReadableStreamDefaultReader<Uint8Array>;

  private constructor(child: Deno.ChildProcess, port: number, stdout: ReadableStreamDefaultReader<Uint8Array>) {
    this.child = child;
    this.port = port;
    this.#stdout = stdout;
  }

  static async start(args: string[]): Promise<CliProxy> {
    const child = cliCommand(["--port", "0", "--host", "127.0.0.1", ...args], "piped", "null").spawn();
    const stdout = child.stdout.getReader();
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      let got = "";
      const deadline = new Promise<"deadline">((resolve) => timer = setTimeout(() => resolve("deadline"), 15_000));
      while (!got.includes("\n")) {
        const r = await Promise.race([stdout.read(), deadline]);
        if (r === "deadline") throw new Error(`no listening line within 15 s; stdout: ${JSON.stringify(got)}`);
        if (r.done) throw new Error(`main.ts exited before listening; stdout: ${JSON.stringify(got)}`);
        got += new TextDecoder().decode(r.value);
      }
      const m = /^waypost listening on http:\/\/127\.0\.0\.1:(\d+)\n/.exec(got);
      assert.ok(m, `unexpected first line: ${JSON.stringify(got)}`);
      return new CliProxy(child, Number(m[1]), stdout);
    } catch (error) {
      try {
        child.kill("SIGKILL");
      } catch {
        // Already exited.
      }
      await stdout.cancel();
      await child.status;
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Resolves with the exit status, or null if the process is still running after `ms`. */
  async exitWithin(ms: number): Promise<Deno.CommandStatus | null> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const expired = new Promise<null>((resolve) => timer = setTimeout(() => resolve(null), ms));
    try {
      return await Promise.race([this.child.status, expired]);
    } finally {
      clearTimeout(timer);
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.child.kill("SIGKILL");
    } catch {
      // Already exited.
    }
    await this.#stdout.cancel();
    await this.child.status;
  }
}

/** Resolves once connecting to `port` is refused (the listener closed), false after `ms`. */
async function refusedWithin(port: number, ms: number): Promise<boolean> {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    try {
      const c = await Deno.connect({ hostname: "127.0.0.1", port, transport: "tcp" });
      c.close();
    } catch (error) {
      if (error instanceof Deno.errors.ConnectionRefused) return true;
      throw error;
    }
    await delay(10);
  }
  return false;
}

Deno.test("CLI: SIGTERM during a slow response lets it complete, then the process exits 0", async () => {
  const requested = deferred();
  await using origin = startOrigin(async (c) => {
    await c.readRequest();
    requested.resolve();
    await delay(300);
    await c.write(ok("slow-body"));
    await c.waitEof();
  });
  await using cli = await CliProxy.start(["--grace", "2s"]);
  await using client = await Client.connect(cli.port);
  await client.write(get(origin.url("/slow")));
  await requested.promise; // the exchange is in flight
  const signalled = performance.now();
  cli.child.kill("SIGTERM");
  const res = await client.response();
  assert.equal(res.status, 200);
  assert.ok(res.complete);
  assert.equal(text(res.body), "slow-body");
  assertConnectionClose(res); // the proxy is stopping: no keep-alive
  await client.assertClosed();
  const status = await cli.exitWithin(5000);
  assert.ok(status, "the process did not exit within 5 s");
  assert.equal(status.signal, null);
  assert.equal(status.code, 0);
  const ms = performance.now() - signalled;
  assert.ok(ms < 1800, `exit ${ms.toFixed(0)} ms after SIGTERM: it waited out the 2 s grace instead of the exchange`);
});

Deno.test("CLI: a second SIGINT during a slow exchange exits at once, well before the grace period", async () => {
  const requested = deferred();
  await using origin = startOrigin(async (c) => {
    await c.readRequest();
    requested.resolve();
    await c.waitEof(); // never answers
  });
  await using cli = await CliProxy.start(["--grace", "10s"]);
  await using client = await Client.connect(cli.port);
  await client.write(get(origin.url("/never")));
  await requested.promise;
  const signalled = performance.now();
  cli.child.kill("SIGINT");
  // Standard signals are not queued: wait until the first one was handled (the listener
  // closed) so the second cannot merge with it.
  assert.ok(await refusedWithin(cli.port, 3000), "the first SIGINT did not stop the listener");
  const second = performance.now();
  cli.child.kill("SIGINT");
  const status = await cli.exitWithin(5000);
  assert.ok(status, "the process did not exit within 5 s of the second SIGINT");
  assert.equal(status.signal, null, "killed by the signal instead of exiting from its handler");
  assert.equal(status.code, 0);
  assert.ok(
    performance.now() - second < 1500,
    `exit ${(performance.now() - second).toFixed(0)} ms after the 2nd SIGINT`,
  );
  assert.ok(performance.now() - signalled < 5000, "not well before the 10 s grace period");
  // The in-flight exchange was cut: the client sees the close without a response.
  const rest = await client.reader.readToEnd("waiting for the dead proxy's close");
  assert.equal(text(rest), "");
});

Deno.test("CLI: bad flags exit 2 with the usage on stderr; --version prints the version", async (t) => {
  const bad = [
    { name: "--port x", args: ["--port", "x"] },
    { name: "--bogus", args: ["--bogus"] },
    { name: "--port 70000", args: ["--port", "70000"] },
    { name: "--grace soon", args: ["--grace", "soon"] },
  ];
  for (const row of bad) {
    await t.step(`${row.name} → exit 2`, async () => {
      const out = await cliCommand(row.args, "piped", "piped").output();
      assert.equal(out.code, 2);
      assert.equal(text(out.stdout), "", "bad flags printed to stdout");
      assert.ok(text(out.stderr).includes("Usage: waypost"), `stderr: ${JSON.stringify(text(out.stderr))}`);
    });
  }
  await t.step("--version → waypost <semver>, exit 0", async () => {
    const out = await cliCommand(["--version"], "piped", "piped").output();
    assert.equal(out.code, 0);
    const line = text(out.stdout);
    assert.match(line, /^waypost \d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?\n$/);
    assert.equal(line, `waypost ${denoJson.version}\n`);
  });
});
