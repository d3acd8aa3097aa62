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
