/**
 * UpstreamPool bookkeeping with fake connections: an idle connection whose read
 * settles (EOF, stray bytes) is dropped; one that expired or was evicted, whose
 * read settles later (the close cancels it), never takes another entry with it.
 */
import assert from "node:assert/strict";
import { ConnReader } from "../lib/reader.ts";
import { type UpstreamConn, UpstreamPool } from "../lib/upstream.ts";

/** A connection whose pending read is settled by the test, or rejected by close() (as Deno does). */
class FakeConn {
  closed = false;
  #settle: ((n: number | null) => void) | null = null;
  #fail: ((e: Error) => void) | null = null;
  read(_p: Uint8Array): Promise<number | null> {
    return new Promise((resolve, reject) => {
      this.#settle = resolve;
      this.#fail = reject;
    });
  }
  eof(): void {
    this.#settle?.(null);
  }
  close(): void {
    this.closed = true;
    this.#fail?.(new Deno.errors.Interrupted("closed"));
  }
}

function upstream(key = "127.0.0.1:1"): { up: UpstreamConn; fake: FakeConn } {
  const fake = new FakeConn();
  const conn = fake as unknown as Deno.TcpConn;
  return { up: { conn, reader: new ConnReader(conn), key, reused: false }, fake };
}

function pool(options: Partial<ConstructorParameters<typeof UpstreamPool>[0]> = {}): UpstreamPool {
  return new UpstreamPool({
    connectTimeoutMs: 1000,
    maxIdlePerOrigin: 4,
    maxIdle: 16,
    idleTimeoutMs: 60_000,
    bufferBytes: 65536,
    ...options,
  });
}

const settle = () => new Promise((resolve) => setTimeout(resolve, 0));

Deno.test("UpstreamPool: an idle connection that sees EOF is dropped; the others stay", async () => {
  const p = pool();
  const a = upstream();
  const b = upstream();
  p.release(a.up);
  p.release(b.up);
  a.fake.eof();
  await settle();
  assert.ok(a.fake.closed, "the connection that saw EOF is closed");
  assert.equal(p.idleCount, 1);
  assert.equal(p.take("127.0.0.1:1"), b.up);
  assert.equal(p.take("127.0.0.1:1"), null);
  p.close();
});

Deno.test("UpstreamPool: a taken connection's settled read removes nothing", async () => {
  const p = pool();
  const a = upstream();
  const b = upstream();
  p.release(a.up);
  p.release(b.up);
  assert.equal(p.take("127.0.0.1:1"), b.up); // most recent first
  b.fake.eof(); // the response (here: EOF) arrives for the request that took it
  await settle();
  assert.equal(p.idleCount, 1);
  assert.equal(p.take("127.0.0.1:1"), a.up);
  p.close();
});

Deno.test("UpstreamPool: an evicted connection's cancelled read does not remove a newer one", async () => {
  const p = pool({ maxIdlePerOrigin: 1 });
  const a = upstream();
  const b = upstream();
  p.release(a.up);
  p.release(b.up); // evicts (closes) a: its pending read rejects afterwards
  await settle();
  assert.ok(a.fake.closed);
  assert.equal(p.idleCount, 1);
  assert.equal(p.take("127.0.0.1:1"), b.up);
  p.close();
});

Deno.test("UpstreamPool: an expired connection's cancelled read does not remove a newer one", async () => {
  const p = pool({ idleTimeoutMs: 50 }); // the sweeper runs every 100 ms
  const a = upstream();
  p.release(a.up);
  await new Promise((resolve) => setTimeout(resolve, 250));
  assert.ok(a.fake.closed, "expired");
  const b = upstream();
  const c = upstream();
  p.release(b.up);
  p.release(c.up);
  await settle();
  assert.equal(p.idleCount, 2);
  assert.equal(p.take("127.0.0.1:1"), c.up);
  assert.equal(p.take("127.0.0.1:1"), b.up);
  p.close();
});

Deno.test("classifyConnectError: by class where Deno gives one, the lookup text as the one fallback", async (t) => {
  const { classifyConnectError } = await import("../lib/upstream.ts");
  const { ProxyError, UpstreamError, UpstreamTimeoutError } = await import("../lib/errors.ts");
  const rows: { name: string; error: unknown; timedOut?: boolean; cls: unknown; code: string; status?: number }[] = [
    {
      name: "our own timeout",
      error: new Error("aborted"),
      timedOut: true,
      cls: UpstreamTimeoutError,
      code: "upstream-connect-timeout",
    },
    {
      name: "the system's timeout",
      error: new Deno.errors.TimedOut("x"),
      cls: UpstreamTimeoutError,
      code: "upstream-connect-timeout",
    },
    { name: "refused", error: new Deno.errors.ConnectionRefused("x"), cls: UpstreamError, code: "upstream-refused" },
    {
      name: "not permitted",
      error: new Deno.errors.NotCapable("x"),
      cls: ProxyError,
      code: "upstream-not-permitted",
      status: 403,
    },
    { name: "reset", error: new Deno.errors.ConnectionReset("x"), cls: UpstreamError, code: "upstream-reset" },
    {
      name: "unreachable",
      error: new Deno.errors.NetworkUnreachable("x"),
      cls: UpstreamError,
      code: "upstream-unreachable",
    },
    {
      name: "lookup (NotFound)",
      error: new Deno.errors.NotFound("x"),
      cls: UpstreamError,
      code: "upstream-unresolvable",
    },
    {
      name: "lookup (Deno 2.9's plain Error)",
      error: new Error("failed to lookup address information: Name or service not known"),
      cls: UpstreamError,
      code: "upstream-unresolvable",
    },
    { name: "anything else", error: new TypeError("x"), cls: UpstreamError, code: "upstream-connect-failed" },
  ];
  for (const row of rows) {
    await t.step(row.name, () => {
      const e = classifyConnectError(row.error, row.timedOut ?? false);
      assert.ok(e instanceof (row.cls as typeof UpstreamError));
      assert.equal(e.code, row.code);
      if (row.status !== undefined) assert.equal(e.status, row.status);
    });
  }
});

Deno.test("a refused connection is classified by its class from a real Deno.connect", async () => {
  const { classifyConnectError } = await import("../lib/upstream.ts");
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  const error = await Deno.connect({ hostname: "127.0.0.1", port }).then((c) => (c.close(), null), (e) => e);
  assert.ok(error instanceof Deno.errors.ConnectionRefused);
  assert.equal(classifyConnectError(error, false).code, "upstream-refused");
});
