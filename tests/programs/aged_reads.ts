/**
 * Run by tests/direct_read_test.ts in its own process (it needs
 * `--v8-flags=--expose-gc`): old-space bytes per read on loopback connections
 * that have waited through two young-generation collections, as kept-alive and
 * pooled connections do, through ConnReader and through plain `Conn.read()`.
 * Prints one JSON line: `{ "reader": B, "connRead": B, "direct": bool }`.
 *
 *   deno run --allow-net --v8-flags=--expose-gc,--max-semi-space-size=2 tests/programs/aged_reads.ts
 */
import { getHeapSpaceStatistics } from "node:v8";
import { ConnReader } from "../../lib/reader.ts";
import { directReads } from "../../lib/direct_read.ts";

const PAIRS = 50, READS = 100, SAMPLES = 30;
const gc = (globalThis as unknown as { gc(options: { type: "minor" }): void }).gc;
const oldSpaceUsed = () => getHeapSpaceStatistics().find((s) => s.space_name === "old_space")!.space_used_size;
const one = new Uint8Array([1]);

const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
const port = (listener.addr as Deno.NetAddr).port;
const pairs: { client: Deno.Conn; server: Deno.Conn }[] = [];
for (let i = 0; i < PAIRS; i++) {
  const client = await Deno.connect({ hostname: "127.0.0.1", port });
  pairs.push({ client, server: await listener.accept() });
}

/** Median old-space bytes per read, `read` being one read on pair `i` that the client's byte completes. */
async function perRead(read: (i: number) => Promise<unknown>): Promise<number> {
  for (let i = 0; i < PAIRS; i++) {
    const pending = read(i);
    await pairs[i].client.write(one);
    await pending;
  }
  // Idle through two young-generation collections: whatever a connection keeps is old now.
  gc({ type: "minor" });
  gc({ type: "minor" });
  const samples: number[] = [];
  for (let s = 0; s < SAMPLES; s++) {
    const before = oldSpaceUsed();
    await Promise.all(pairs.map(async ({ client }, i) => {
      for (let r = 0; r < READS; r++) {
        const pending = read(i);
        await client.write(one);
        await pending;
      }
    }));
    const grown = oldSpaceUsed() - before;
    if (grown >= 0) samples.push(grown / (PAIRS * READS)); // (a mark-compact in between shrinks it)
  }
  samples.sort((a, b) => a - b);
  return samples[samples.length >> 1];
}

const readers = pairs.map(({ server }) => new ConnReader(server, 4096));
const reader = await perRead((i) => readers[i].next());
const buffers = pairs.map(() => new Uint8Array(4096));
const connRead = await perRead((i) => pairs[i].server.read(buffers[i]));
console.log(JSON.stringify({ reader, connRead, direct: directReads(pairs[0].server) }));
for (const { client, server } of pairs) {
  client.close();
  server.close();
}
listener.close();
