/**
 * ConnReader: byte-exact reads across buffer changes (small → 64 KiB → largest
 * and back), unread before a change, the idle read on the small buffer, and the
 * waits of a `probe` reader in slots of shared slabs.
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

Deno.test("ConnReader with probe: a fresh connection waits in one byte, a kept-alive one in 512, bytes stay exact", async () => {
  const first = new TextEncoder().encode("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
  const second = pattern(700); // larger than the 512-byte slot: read on behind it
  const third = pattern(300);
  const data = new Uint8Array([...first, ...second, ...third]);
  // The peer's segments: the first message, the second (700 bytes), the third.
  const conn = scripted(data, [1 << 30]);
  const segments = [first.length, second.length, third.length];
  let segment = 0;
  let left = segments[0];
  const seen: number[] = [];
  const reader = new ConnReader(
    {
      read(p: Uint8Array): Promise<number | null> {
        seen.push(p.length);
        if (left === 0) left = segments[++segment] ?? 0;
        const n = conn.read(p.subarray(0, Math.min(p.length, Math.max(left, 1))));
        return n.then((got) => {
          if (got !== null) left -= got;
          return got;
        });
      },
    },
    256 * 1024,
    4096,
    true,
  );
  // A slot's bytes are handed out at once (the peer may be waiting for an answer); the caller's next read goes on.
  const a1 = await reader.nextMessage();
  assert.deepEqual(a1, first.subarray(0, 1));
  const a2 = await reader.next();
  assert.deepEqual(a2, first.subarray(1));
  assert.deepEqual(seen, [1, 4096], "one byte, then the rest into the small buffer");
  seen.length = 0;
  const b1 = await reader.prefetch().then(() => reader.next());
  assert.deepEqual(b1, second.subarray(0, 512));
  const b2 = await reader.next();
  assert.deepEqual(b2, second.subarray(512));
  assert.deepEqual(seen, [512, 4096], "a full 512-byte slot, then a read of what follows");
  seen.length = 0;
  const c = await reader.nextMessage();
  assert.deepEqual(c, third);
  assert.deepEqual(seen, [512], "a message that fits the slot costs one read");
  assert.equal(await reader.nextMessage(), null);
  assert.equal(reader.consumed, data.length);
});

Deno.test("ConnReader with probe: one byte then EOF is one byte; waiting readers never share a slot", async () => {
  const lone = new ConnReader(scripted(new Uint8Array([7]), [1]), 65536, 4096, true);
  assert.deepEqual(await lone.nextMessage(), new Uint8Array([7]));
  assert.equal(await lone.nextMessage(), null);
  // A reader whose small buffer is below the 512-byte slot waits in a slot that fits it.
  const tiny = new ConnReader(scripted(pattern(600), [1 << 30]), 4096, 256, true);
  assert.deepEqual(await tiny.nextMessage(), pattern(1));
  const rest = await tiny.next();
  assert.equal(rest!.length, 256);
  const big = await tiny.prefetch().then(() => tiny.next());
  assert.equal(big!.length, 256);
  // Many readers waiting at once, each answered later with its own bytes.
  const waiting: { resolve: (n: number) => void; p: Uint8Array }[] = [];
  const readers = Array.from({ length: 200 }, (_, i) =>
    new ConnReader(
      {
        read(p: Uint8Array): Promise<number | null> {
          if (waiting[i] !== undefined) {
            p.fill(i & 0xff);
            return Promise.resolve(p.length > 4 ? 4 : p.length);
          }
          return new Promise((resolve) => waiting[i] = { resolve, p });
        },
      },
      65536,
      4096,
      true,
    ));
  const results = readers.map((r) => r.nextMessage());
  // Every waiting read got a distinct one-byte view.
  const slabs: ArrayBufferLike[] = [];
  const views = new Set(waiting.map((w) => {
    if (!slabs.includes(w.p.buffer)) slabs.push(w.p.buffer);
    assert.equal(w.p.length, 1);
    return `${slabs.indexOf(w.p.buffer)}:${w.p.byteOffset}`;
  }));
  assert.equal(views.size, 200);
  for (let i = 0; i < 200; i++) {
    waiting[i].p[0] = i & 0xff;
    waiting[i].resolve(1);
  }
  const got = await Promise.all(results);
  for (let i = 0; i < 200; i++) {
    assert.deepEqual(got[i], new Uint8Array([i & 0xff]));
  }
});
