/**
 * Recycled byte buffers, one free list per size, shared by every reader and
 * head serializer in this isolate. Allocating a typed array costs far more
 * than filling one (a zeroed backing store, GC accounting), so read buffers and
 * scratch space for heads are lent and given back instead.
 *
 * A buffer must only be given back once nothing can still read or write it:
 * no view of it in use and no `conn.read()` / `conn.write()` on it in flight.
 *
 * @module
 */

/** Spare bytes kept per size: 2 MiB (512 of 4 KiB, 32 of 64 KiB, 8 of 256 KiB). */
const KEEP_BYTES = 2 * 1024 * 1024;
const spare = new Map<number, Uint8Array[]>();

/** A buffer of `size` bytes: a spare one if any, else a new one. */
export function takeBuffer(size: number): Uint8Array {
  return spare.get(size)?.pop() ?? new Uint8Array(size);
}

/** Gives a buffer back for reuse (beyond the per-size bound it is left to the GC). */
export function giveBuffer(buffer: Uint8Array): void {
  let list = spare.get(buffer.length);
  if (list === undefined) spare.set(buffer.length, list = []);
  if (list.length < Math.max(4, KEEP_BYTES / buffer.length)) list.push(buffer);
}
