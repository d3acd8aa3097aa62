/**
 * Test helpers for incremental parsers: run a feeder over a byte fixture cut
 * into pieces in several ways (whole, one byte at a time, at every single cut
 * point for short fixtures, and at seeded random split points) and check that
 * every way gives the same outcome.
 *
 * The pieces are handed out from one scratch buffer that is scribbled over
 * before the next piece is written into it, the way a reader reuses its read
 * buffer. A feeder must therefore copy whatever it wants to keep (decoded
 * data, leftover bytes) before it asks for the next piece, and a parser that
 * keeps a view into an earlier piece produces garbage instead of passing.
 *
 * @module
 */
import assert from "node:assert/strict";

/** Consumes the pieces of one fixture and returns a plain, comparable result. */
export type Feeder<T> = (pieces: Iterable<Uint8Array>) => T;

/** What one run produced: a value, or the error it threw. */
export type Outcome<T> = { ok: true; value: T } | { ok: false; error: unknown };

/** One way of cutting the fixture and what the feeder made of it. */
export interface SplitRun<T> {
  /** For example `whole`, `per-byte`, `cut@17`, `seed=3`. */
  split: string;
  /** The piece lengths, in order (an empty piece is a zero-length push). */
  sizes: number[];
  outcome: Outcome<T>;
}

/** An error class, for {@link Expect}. */
// deno-lint-ignore no-explicit-any
export type ErrorClass = abstract new (...args: any[]) => Error;

/** The outcome a table row expects: a value, or an error class and its `code`. */
export type Expect<T> = { value: T } | { error: ErrorClass; code: string };

/** Seeds for the random splits; fixed so a failure reproduces. */
export const SEEDS: readonly number[] = [1, 2, 3, 7, 42, 1337, 0xc0ffee, 0xdeadbeef];

/** Fixtures up to this length are also cut once at every position. */
const MAX_SINGLE_CUT_LENGTH = 512;

/** mulberry32: a tiny deterministic PRNG returning floats in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Random piece lengths summing to `length`. Each seed uses a different largest
 * piece (2, 5, 17 bytes or the whole length), and now and then an empty piece,
 * so both dense and sparse boundaries are hit.
 */
export function randomSizes(length: number, seed: number): number[] {
  const rand = mulberry32(seed);
  const bounds = [2, 5, 17, Math.max(1, length)];
  const bound = bounds[seed % bounds.length];
  const sizes: number[] = [];
  let left = length;
  while (left > 0) {
    if (rand() < 0.05) sizes.push(0);
    const size = 1 + Math.floor(rand() * Math.min(left, bound));
    sizes.push(size);
    left -= size;
  }
  return sizes;
}

/** Every way a fixture of `length` bytes is cut by {@link runSplits}. */
export function splitPlans(
  length: number,
  seeds: readonly number[] = SEEDS,
): Array<{ split: string; sizes: number[] }> {
  const plans = [
    { split: "whole", sizes: [length] },
    { split: "per-byte", sizes: Array.from({ length }, () => 1) },
  ];
  if (length <= MAX_SINGLE_CUT_LENGTH) {
    for (let cut = 1; cut < length; cut++) plans.push({ split: `cut@${cut}`, sizes: [cut, length - cut] });
  }
  for (const seed of seeds) plans.push({ split: `seed=${seed}`, sizes: randomSizes(length, seed) });
  return plans;
}

function* pieces(wire: Uint8Array, sizes: readonly number[], scratch: Uint8Array): Generator<Uint8Array> {
  let at = 0;
  for (const size of sizes) {
    scratch.fill(0xee); // whatever the feeder still points at from the last piece is now garbage
    scratch.set(wire.subarray(at, at + size));
    at += size;
    yield scratch.subarray(0, size);
  }
  scratch.fill(0xee);
}

/** Runs `feed` over `wire` cut in every way of {@link splitPlans}. */
export function runSplits<T>(wire: Uint8Array, feed: Feeder<T>, seeds: readonly number[] = SEEDS): SplitRun<T>[] {
  const runs: SplitRun<T>[] = [];
  for (const { split, sizes } of splitPlans(wire.length, seeds)) {
    let largest = 1;
    for (const size of sizes) largest = Math.max(largest, size);
    const scratch = new Uint8Array(largest);
    let outcome: Outcome<T>;
    try {
      outcome = { ok: true, value: feed(pieces(wire, sizes, scratch)) };
    } catch (error) {
      if (error instanceof assert.AssertionError) throw error; // a broken feeder invariant, not a parse outcome
      outcome = { ok: false, error };
    }
    runs.push({ split, sizes, outcome });
  }
  return runs;
}

function describe(outcome: Outcome<unknown>): string {
  if (outcome.ok) return `value ${JSON.stringify(outcome.value)}`;
  const e = outcome.error as { name?: string; code?: string; message?: string };
  return `${e?.name ?? typeof e} code=${e?.code} (${e?.message})`;
}

/** Asserts that every run produced `expect`: the same value, or the same error class and `code`. */
export function assertOutcomes<T>(runs: readonly SplitRun<T>[], expect: Expect<T>): void {
  for (const { split, sizes, outcome } of runs) {
    const where = `[split ${split}: ${sizes.length} pieces]`;
    if ("value" in expect) {
      assert.ok(outcome.ok, `${where} expected a value, got ${describe(outcome)}`);
      try {
        assert.deepStrictEqual(outcome.value, expect.value);
      } catch (error) {
        if (error instanceof assert.AssertionError) error.message = `${where} ${error.message}`;
        throw error;
      }
    } else {
      assert.ok(!outcome.ok, `${where} expected ${expect.error.name} ${expect.code}, got ${describe(outcome)}`);
      assert.ok(
        outcome.error instanceof expect.error,
        `${where} expected ${expect.error.name} ${expect.code}, got ${describe(outcome)}`,
      );
      assert.equal((outcome.error as { code?: string }).code, expect.code, `${where} got ${describe(outcome)}`);
    }
  }
}

/** {@link runSplits} then {@link assertOutcomes}: the one call a table row makes. */
export function assertSplits<T>(wire: Uint8Array | string, feed: Feeder<T>, expect: Expect<T>): void {
  assertOutcomes(runSplits(typeof wire === "string" ? bytes(wire) : wire, feed), expect);
}

/** Encodes a fixture one byte per char (latin-1), so `\x80`-`\xff` stay single bytes. */
export function bytes(text: string): Uint8Array {
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c > 0xff) throw new RangeError(`Fixture char ${c} at ${i} is not a byte`);
    out[i] = c;
  }
  return out;
}

/** Decodes bytes one char per byte (latin-1), for readable expectations. */
export function text(data: Uint8Array): string {
  let out = "";
  for (const b of data) out += String.fromCharCode(b);
  return out;
}

/** Collects copies of byte views into one growing buffer. */
export class ByteSink {
  #buf = new Uint8Array(64);
  #length = 0;

  /** Copies `data` in now (the view may be reused afterwards). */
  add(data: Uint8Array): void {
    if (this.#length + data.length > this.#buf.length) {
      const grown = new Uint8Array(Math.max(this.#buf.length * 2, this.#length + data.length));
      grown.set(this.#buf.subarray(0, this.#length));
      this.#buf = grown;
    }
    this.#buf.set(data, this.#length);
    this.#length += data.length;
  }

  /** The bytes so far. */
  get length(): number {
    return this.#length;
  }

  /** The bytes so far, as latin-1 text. */
  text(): string {
    return text(this.#buf.subarray(0, this.#length));
  }
}
