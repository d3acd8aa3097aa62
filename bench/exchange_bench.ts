/**
 * One keep-alive request through the proxy's JavaScript, without sockets: an
 * in-memory client and origin connection, so the figure is the proxy's own
 * per-request work (parse, rewrite, pool, serialize) apart from the kernel and
 * Deno's I/O ops. The baseline in the group copies the same bytes through the
 * same fake connections with no HTTP processing at all.
 *
 *   deno bench bench/exchange_bench.ts
 *   deno run --v8-flags=--trace-gc bench/exchange_bench.ts 200000   # allocation per request
 *   deno run bench/exchange_bench.ts 200000 "headers touched"        # one hook variant
 */
import { FailureDelay } from "../lib/auth.ts";
import { DEFAULT_CHUNKED_LIMITS } from "../lib/chunked.ts";
import { type ClientSide, type ExchangeContext, handleRequest } from "../lib/forward.ts";
import { DEFAULT_HEAD_LIMITS, HeadParser } from "../lib/head.ts";
import { silentLogger } from "../lib/log.ts";
import { resolveOptions } from "../lib/options.ts";
import { ConnReader } from "../lib/reader.ts";
import { composeHooks, type ProxyHooks } from "../lib/hooks.ts";
import { newDraft } from "../lib/record.ts";
import { UpstreamPool } from "../lib/upstream.ts";

const enc = new TextEncoder();
const REQUEST = enc.encode(
  "GET http://127.0.0.1:18100/small HTTP/1.1\r\nHost: 127.0.0.1:18100\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n",
);
const RESPONSE = enc.encode(
  "HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Wed, 25 Nov 2026 21:00:00 GMT\r\n" +
    "Content-Type: application/octet-stream\r\nContent-Length: 100\r\n" +
    "Last-Modified: Wed, 25 Nov 2026 20:00:00 GMT\r\nConnection: keep-alive\r\nAccept-Ranges: bytes\r\n\r\n" +
    "x".repeat(100),
);

/** A connection whose reads are fed by the test and whose writes go to a callback. */
class FakeConn {
  #inbox: Uint8Array | null = null;
  #waiting: { buf: Uint8Array; resolve: (n: number | null) => void } | null = null;
  written = 0;
  constructor(readonly onWrite: (data: Uint8Array) => void = () => {}) {}
  feed(data: Uint8Array): void {
    if (this.#waiting !== null) {
      const { buf, resolve } = this.#waiting;
      this.#waiting = null;
      buf.set(data);
      resolve(data.length);
    } else this.#inbox = data;
  }
  read(buf: Uint8Array): Promise<number | null> {
    const data = this.#inbox;
    if (data !== null) {
      this.#inbox = null;
      buf.set(data);
      return Promise.resolve(data.length);
    }
    return new Promise((resolve) => this.#waiting = { buf, resolve });
  }
  write(data: Uint8Array): Promise<number> {
    this.written += data.length;
    this.onWrite(data);
    return Promise.resolve(data.length);
  }
  close(): void {}
  closeWrite(): Promise<void> {
    return Promise.resolve();
  }
  setNoDelay(): void {}
  get remoteAddr(): Deno.NetAddr {
    return { transport: "tcp", hostname: "127.0.0.1", port: 1 };
  }
}

/** Hook variants measured (bench/README: the hooks issue's budget: no-op ≤ 5%, headers ≤ 10% slower). */
export const VARIANTS: Record<string, ProxyHooks | null> = {
  "no hooks": null,
  "sync no-op onRequest + onResponse": { onRequest() {}, onResponse() {} },
  "headers touched": {
    onRequest(req) {
      req.headers.set("X-Request-Hook", "1");
    },
    onResponse(res) {
      res.headers.set("X-Response-Hook", "1");
    },
  },
  "async no-op onRequest + onResponse": {
    async onRequest() {},
    async onResponse() {},
  },
};

/** One proxy exchange path over in-memory connections, with the given hooks. */
function rig(hooks: ProxyHooks | null): () => Promise<void> {
  const options = resolveOptions({ logger: silentLogger });
  const pool = new UpstreamPool({
    connectTimeoutMs: 1000,
    maxIdlePerOrigin: 16,
    maxIdle: 16,
    idleTimeoutMs: 60_000,
    bufferBytes: 65536,
  });
  const ctx: ExchangeContext = {
    options,
    limits: DEFAULT_HEAD_LIMITS,
    responseLimits: DEFAULT_HEAD_LIMITS,
    chunkedLimits: DEFAULT_CHUNKED_LIMITS,
    responseChunkedLimits: DEFAULT_CHUNKED_LIMITS,
    pool,
    logger: silentLogger,
    hooks: composeHooks(hooks),
    stopping: false,
    abortSignal: new AbortController().signal,
    tickMs: 1000,
    hookTimeoutMs: 30_000,
    pages: { metrics: null, recent: null, adminAllow: [], draining: false, name: "waypost", version: "bench" },
    credentials: null,
    authFailures: new FailureDelay(),
    authChallenge: "",
    destinations: { rules: [], blockPrivate: false, defaultAllow: true },
    parent: null,
    noProxy: [],
    adminOnly: false,
  };
  // The origin answers every request it is sent.
  const origin: FakeConn = new FakeConn(() => queueMicrotask(() => origin.feed(RESPONSE)));
  const originConn = origin as unknown as Deno.TcpConn;
  pool.release({ conn: originConn, reader: new ConnReader(originConn, 65536), key: "127.0.0.1:18100", reused: false });

  const clientConn = new FakeConn() as unknown as Deno.TcpConn;
  const client: ClientSide = {
    conn: clientConn,
    client: null,
    local: null,
    reader: new ConnReader(clientConn, 65536),
    out: clientConn,
    written: 0,
    finalHeadSent: false,
    upstream: null,
    pinned: null,
    inBody: false,
    activity: 0,
    responseDeadline: 0,
    responseTimedOut: false,
    draft: newDraft(false),
    hook: null,
    stream: null,
    hookDeadline: 0,
    hookName: null,
    hookExpire: null,
  };
  const signal = new AbortController().signal;
  const address = { hostname: "127.0.0.1", port: 1 };
  return async () => {
    (clientConn as unknown as FakeConn).feed(REQUEST);
    const parser = new HeadParser("request", DEFAULT_HEAD_LIMITS);
    if (!await client.reader.readHead(parser)) throw new Error("no head");
    client.finalHeadSent = false;
    // What the server does per exchange when hooks are set.
    if (ctx.hooks !== null) {
      client.hook = { ctx: { client: address, connectionId: 1, locals: {}, signal }, req: null, responded: false };
    }
    if (!await handleRequest(ctx, client, parser.requestHead())) throw new Error("not kept alive");
  };
}

const oneRequest = rig(null);

// Baseline: the same reads and writes, no HTTP.
const bufA = new Uint8Array(65536);
const bufB = new Uint8Array(65536);
const rawOrigin: FakeConn = new FakeConn(() => queueMicrotask(() => rawOrigin.feed(RESPONSE)));
const rawClient = new FakeConn();
async function oneCopy(): Promise<void> {
  rawClient.feed(REQUEST);
  const n = (await rawClient.read(bufA))!;
  await rawOrigin.write(bufA.subarray(0, n));
  const m = (await rawOrigin.read(bufB))!;
  await rawClient.write(bufB.subarray(0, m));
}

if (import.meta.main && Deno.args.length > 0) {
  // deno run bench/exchange_bench.ts N [variant]: N requests, then the time per request.
  const n = Number(Deno.args[0]);
  const name = Deno.args[1] ?? "no hooks";
  if (!(name in VARIANTS)) throw new Error(`unknown variant; one of: ${Object.keys(VARIANTS).join(", ")}`);
  const one = rig(VARIANTS[name]);
  for (let i = 0; i < 10_000; i++) await one();
  const start = performance.now();
  for (let i = 0; i < n; i++) await one();
  const ms = performance.now() - start;
  console.log(`${name}: ${n} requests, ${(ms * 1000 / n).toFixed(2)} µs per request`);
} else {
  Deno.bench({ name: "copy only (baseline)", group: "exchange", baseline: true }, async () => {
    await oneCopy();
  });
  Deno.bench({ name: "waypost: keep-alive GET, 100-byte response", group: "exchange" }, async () => {
    await oneRequest();
  });
  for (const [name, hooks] of Object.entries(VARIANTS)) {
    const one = rig(hooks);
    Deno.bench({ name: `hooks: ${name}`, group: "hooks", baseline: hooks === null }, async () => {
      await one();
    });
  }
}
