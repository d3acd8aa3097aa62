/**
 * lib/direct_read.ts: reads through the runtime's op behave as `Conn.read()`
 * does (bytes, EOF, a close while reading), fall back to `read()` for anything
 * that is not a runtime connection, and leave no garbage in the old generation
 * on long-lived connections, which `Conn.read()` does.
 */
import assert from "node:assert/strict";
import { directReads, readOnceFor } from "../lib/direct_read.ts";
import { latin1, text } from "./util.ts";

async function loopbackPair(): Promise<{ client: Deno.TcpConn; server: Deno.TcpConn; close(): void }> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const client = await Deno.connect({ hostname: "127.0.0.1", port: (listener.addr as Deno.NetAddr).port });
  const server = await listener.accept();
  listener.close();
  return {
    client,
    server,
    close() {
      for (const conn of [client, server]) {
        try {
          conn.close();
        } catch {
          // closed by the test already
        }
      }
    },
  };
}

Deno.test("direct read: the runtime's op is reachable on this Deno (the README's version)", async () => {
  const pair = await loopbackPair();
  try {
    assert.equal(directReads(pair.server), true, `Deno ${Deno.version.deno}: reads fall back to Conn.read()`);
  } finally {
    pair.close();
  }
});

Deno.test("direct read: bytes as sent, then EOF after the peer's FIN, and the write side stays open", async () => {
  const pair = await loopbackPair();
  try {
    const readOnce = readOnceFor(pair.server);
    const buf = new Uint8Array(64);
    await pair.client.write(latin1("hello"));
    const n = await readOnce(buf);
    assert.equal(text(buf.subarray(0, n!)), "hello");
    await pair.client.closeWrite();
    const end = await readOnce(buf);
    assert.ok(end === null || end === 0, `EOF read returned ${end}`);
    // Half-close: the side that saw EOF can still send.
    await pair.server.write(latin1("after"));
    const back = new Uint8Array(16);
    const m = await pair.client.read(back);
    assert.equal(text(back.subarray(0, m!)), "after");
  } finally {
    pair.close();
  }
});

Deno.test("direct read: a read in flight rejects when the connection is closed, as Conn.read() does", async () => {
  const errorOf = async (read: (conn: Deno.TcpConn, buf: Uint8Array) => Promise<unknown>) => {
    const pair = await loopbackPair();
    try {
      const pending = read(pair.server, new Uint8Array(16));
      pair.server.close();
      return await pending.then(() => "resolved", (error) => (error as Error).constructor.name);
    } finally {
      pair.close();
    }
  };
  const direct = await errorOf((conn, buf) => readOnceFor(conn)(buf));
  const plain = await errorOf((conn, buf) => conn.read(buf));
  assert.notEqual(direct, "resolved");
  assert.equal(direct, plain);
});

Deno.test("direct read: anything that is not a runtime connection is read with its own read()", async () => {
  const calls: number[] = [];
  const fake = {
    read(buffer: Uint8Array): Promise<number | null> {
      calls.push(buffer.length);
      buffer[0] = 42;
      return Promise.resolve(1);
    },
  };
  assert.equal(directReads(fake), false);
  const buf = new Uint8Array(8);
  assert.equal(await readOnceFor(fake)(buf), 1);
  assert.deepEqual(calls, [8]);
  assert.equal(buf[0], 42);
});

Deno.test("direct read: no old-generation garbage per read on a connection that has been idle", async () => {
  // In a process of its own: it needs --expose-gc to age the connections on cue.
  const program = new URL("./programs/aged_reads.ts", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", "--v8-flags=--expose-gc,--max-semi-space-size=2", program],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, stderr);
  const result = JSON.parse(new TextDecoder().decode(out.stdout)) as { reader: number; connRead: number };
  // Conn.read() leaves a 120-byte hash table per read (about 125 bytes measured); ConnReader about 6.
  assert.ok(
    result.reader < 30,
    `ConnReader: ${result.reader} old-space bytes per read (Conn.read(): ${result.connRead})`,
  );
});
