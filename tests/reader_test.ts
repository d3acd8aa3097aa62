/**
 * ConnReader: byte-exact reads across buffer changes (small → 64 KiB → largest
 * and back), unread before a change, and the idle read on the small buffer.
 */
import assert from "node:assert/strict";
import { ConnReader } from "../lib/reader.ts";

/** A connection that serves `data` in reads of the given sizes, recording each buffer's size. */
function scripted(data: Uint8Array, sizes: number[]) {
  let offset = 0;
  let step = 0;
  const seen: number[] = [];
  return {
    seen,
    read(p: Uint8Array): Promise<number | null> {
      seen.push(p.length);
      if (offset >= data.length) return Promise.resolve(null);
      const want = Math.min(sizes[step++ % sizes.length], p.length, data.length - offset);
      p.set(data.subarray(offset, offset + want));
      offset += want;
      return Promise.resolve(want);
    },
  };
}

function pattern(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (i * 31 + (i >> 8)) & 0xff;
  return out;
}

Deno.test("ConnReader: full reads step up to 64 KiB then the largest buffer, small reads step back", async () => {
  const data = pattern(3_000_000);
  // Fill every buffer (bulk), then trickle in 100-byte reads.
  const conn = scripted(data, [1 << 30, 1 << 30, 1 << 30, 1 << 30, 1 << 30, 100, 100, 100]);
  const reader = new ConnReader(conn, 256 * 1024);
  const got: number[] = [];
  let total = 0;
  while (true) {
    const chunk = await reader.next();
    if (chunk === null) break;
    // Compare now: the view is only valid until the next call.
    assert.deepEqual(chunk, data.subarray(total, total + chunk.length));
    total += chunk.length;
    got.push(chunk.length);
  }
  assert.equal(total, data.length);
  assert.deepEqual(conn.seen.slice(0, 4), [4096, 65536, 262144, 262144]);
  // After 100-byte reads into the large buffer, the reader goes back to the small one.
  const firstSmallAgain = conn.seen.indexOf(4096, 1);
  assert.ok(firstSmallAgain > 3, `back to 4096 after trickling reads: ${conn.seen.slice(0, 12)}`);
});

Deno.test("ConnReader: bytes unread from a full read come back before the buffer changes", async () => {
  const data = pattern(10_000);
  const conn = scripted(data, [1 << 30]);
  const reader = new ConnReader(conn, 65536);
  const first = await reader.next();
  assert.equal(first!.length, 4096);
  reader.unread(1000);
  const again = await reader.next();
  assert.deepEqual(again, data.subarray(3096, 4096));
  const rest = await reader.next();
  assert.deepEqual(rest, data.subarray(4096, 10_000));
  assert.deepEqual(conn.seen, [4096, 65536]);
});

Deno.test("ConnReader: an idle read (prefetch) uses the small buffer and next() continues it", async () => {
  const data = pattern(200_000);
  const conn = scripted(data, [1 << 30, 1 << 30, 10]);
  const reader = new ConnReader(conn, 256 * 1024);
  let total = 0;
  for (let i = 0; i < 2; i++) total += (await reader.next())!.length; // 4096, then 65536
  assert.equal(reader.reading, false);
  const pending = reader.prefetch();
  assert.equal(reader.reading, true);
  assert.equal(conn.seen.at(-1), 4096, "idle connections hold only the small buffer");
  const n = await pending;
  const chunk = await reader.next();
  assert.equal(chunk!.length, n);
  assert.deepEqual(chunk, data.subarray(total, total + n!));
  assert.equal(reader.reading, false);
});

Deno.test("ConnReader.dispose: buffers are reused by the next reader unless a read is still pending", async () => {
  const buffers: ArrayBufferLike[] = [];
  const conn = (pending: boolean) => ({
    read(p: Uint8Array): Promise<number | null> {
      buffers.push(p.buffer);
      if (pending) return new Promise(() => {}); // never settles: the buffer stays lent
      p[0] = 1;
      return Promise.resolve(1);
    },
  });
  // Size 3000 is used by no other reader in this process, so the spare list is this test's own.
  const first = new ConnReader(conn(false), 65536, 3000);
  await first.next();
  first.dispose();
  const second = new ConnReader(conn(true), 65536, 3000);
  second.prefetch();
  assert.equal(buffers[1], buffers[0], "the disposed reader's buffer was reused");
  second.dispose(); // a read is pending: the buffer must not be handed out
  const third = new ConnReader(conn(false), 65536, 3000);
  await third.next();
  assert.notEqual(buffers[2], buffers[1], "a buffer with a read in flight was handed to another reader");
});

Deno.test("ConnReader.dispose keeps buffers while a next() read is in flight", async () => {
  const buffers: ArrayBufferLike[] = [];
  const finishers: Array<(n: number | null) => void> = [];
  const slow = {
    read(p: Uint8Array): Promise<number | null> {
      buffers.push(p.buffer);
      return new Promise((resolve) => finishers.push(resolve));
    },
  };
  const reader = new ConnReader(slow, 65536, 3100);
  const reading = reader.next();
  reader.dispose(); // the read still holds the buffer
  assert.throws(() => reader.prefetch(), /in flight/);
  const other = new ConnReader(slow, 65536, 3100);
  const otherReading = other.next();
  assert.notEqual(buffers[1], buffers[0], "a buffer with a read in flight was handed to another reader");
  for (const finish of finishers) finish(null);
  assert.equal(await reading, null);
  assert.equal(await otherReading, null);
});
