import assert from "node:assert/strict";
import { ChunkedDecoder, type ChunkedLimits, chunkSizeLine, DEFAULT_CHUNKED_LIMITS } from "../lib/chunked.ts";
import { HeadTooLargeError, ParseError } from "../lib/errors.ts";
import type { Field } from "../lib/fields.ts";
import { DEFAULT_HEAD_LIMITS } from "../lib/head.ts";
import { assertSplits, ByteSink, type ErrorClass, type Expect, type Feeder } from "./wire_util.ts";

/** What decoding one body produced, in a form every split must reproduce exactly. */
type ChunkedResult =
  | { done: false; consumed: number; body: string }
  | { done: true; consumed: number; body: string; trailers: Field[]; leftover: string };

type ChunkedExpect =
  | { body: string; trailers?: Field[]; leftover?: string }
  | { incomplete: true; body: string }
  | { error: ErrorClass; code: string };

interface Row {
  name: string;
  wire: string;
  limits?: ChunkedLimits;
  expect: ChunkedExpect;
}

/**
 * Steps a fresh decoder over the pieces, copying each `data` view out at once
 * (it is only valid until the piece is reused), and collects the bytes past the
 * end of the body as leftover.
 */
function feedChunked(limits?: ChunkedLimits): Feeder<ChunkedResult> {
  return (pieces) => {
    const decoder = new ChunkedDecoder(limits);
    const body = new ByteSink();
    const leftover = new ByteSink();
    let consumed = 0;
    for (const piece of pieces) {
      if (decoder.done) {
        leftover.add(piece);
        continue;
      }
      if (piece.length === 0) {
        assert.equal(decoder.step(piece), 0, "an empty piece consumes nothing");
        assert.equal(decoder.data, null, "an empty piece yields no data");
        continue;
      }
      let input = piece;
      while (input.length > 0 && !decoder.done) {
        const n = decoder.step(input);
        assert.ok(n > 0 && n <= input.length, `step made no progress (${n} of ${input.length})`);
        if (decoder.data !== null) {
          assert.ok(decoder.data.length > 0 && decoder.data.length <= n, "data lies within the consumed bytes");
          body.add(decoder.data);
        }
        consumed += n;
        input = input.subarray(n);
      }
      if (decoder.done) leftover.add(input);
    }
    if (!decoder.done) return { done: false, consumed, body: body.text() };
    return {
      done: true,
      consumed,
      body: body.text(),
      trailers: structuredClone(decoder.trailers),
      leftover: leftover.text(),
    };
  };
}

function expected(row: Row): Expect<ChunkedResult> {
  const e = row.expect;
  if ("error" in e) return e;
  if ("incomplete" in e) return { value: { done: false, consumed: row.wire.length, body: e.body } };
  const leftover = e.leftover ?? "";
  return {
    value: {
      done: true,
      consumed: row.wire.length - leftover.length,
      body: e.body,
      trailers: e.trailers ?? [],
      leftover,
    },
  };
}

const SHORT_LINES: ChunkedLimits = { maxChunkLineBytes: 16, trailer: DEFAULT_HEAD_LIMITS };
const FEW_TRAILERS: ChunkedLimits = {
  maxChunkLineBytes: 4096,
  trailer: { maxRequestLineBytes: 64, maxHeadBytes: 64, maxFields: 2 },
};
const BIG = "x".repeat(4096);
const BINARY = Array.from({ length: 256 }, (_, i) => String.fromCharCode(i)).join("");

const ROWS: Row[] = [
  // Sizes and data.
  {
    name: "one chunk",
    wire: `5\r\nhello\r\n0\r\n\r\n`,
    expect: { body: "hello" },
  },
  {
    name: "several chunks",
    wire: `3\r\nabc\r\n4\r\ndefg\r\n1\r\nh\r\n0\r\n\r\n`,
    expect: { body: "abcdefgh" },
  },
  {
    name: "twenty one-byte chunks",
    wire: `${"1\r\na\r\n".repeat(20)}0\r\n\r\n`,
    expect: { body: "a".repeat(20) },
  },
  {
    name: "empty body: only the last chunk",
    wire: `0\r\n\r\n`,
    expect: { body: "" },
  },
  {
    name: "upper-case hex size",
    wire: `A\r\n0123456789\r\n1F\r\n${"y".repeat(31)}\r\n0\r\n\r\n`,
    expect: { body: `0123456789${"y".repeat(31)}` },
  },
  {
    name: "lower-case hex size",
    wire: `a\r\n0123456789\r\n1f\r\n${"y".repeat(31)}\r\n0\r\n\r\n`,
    expect: { body: `0123456789${"y".repeat(31)}` },
  },
  {
    name: "mixed-case hex size",
    wire: `aB\r\n${"z".repeat(0xab)}\r\n0\r\n\r\n`,
    expect: { body: "z".repeat(0xab) },
  },
  {
    name: "leading zeros in sizes and in the last chunk",
    wire: `0005\r\nhello\r\n000\r\n\r\n`,
    expect: { body: "hello" },
  },
  {
    name: "leading zeros do not count as significant digits",
    wire: `0000000000000000001\r\nx\r\n0\r\n\r\n`,
    expect: { body: "x" },
  },
  {
    name: "13 significant hex digits accepted, then waits for data",
    wire: `fffffffffffff\r\nabc`,
    expect: { incomplete: true, body: "abc" },
  },
  {
    name: "a 4096-byte chunk",
    wire: `1000\r\n${BIG}\r\n0\r\n\r\n`,
    expect: { body: BIG },
  },
  {
    name: "data is exactly the announced bytes, even when it looks like framing",
    wire: `7\r\n0\r\n\r\nxx\r\n0\r\n\r\n`,
    expect: { body: `0\r\n\r\nxx` },
  },
  {
    name: "every byte value passes through data unchanged",
    wire: `100\r\n${BINARY}\r\n0\r\n\r\n`,
    expect: { body: BINARY },
  },
  // Extensions.
  {
    name: "extension: token name",
    wire: `5;name\r\nhello\r\n0\r\n\r\n`,
    expect: { body: "hello" },
  },
  {
    name: "extension: name=token",
    wire: `5;name=value\r\nhello\r\n0\r\n\r\n`,
    expect: { body: "hello" },
  },
  {
    name: "extension: quoted string with escapes",
    wire: `5;name="quoted \\"value\\" \\\\ here"\r\nhello\r\n0\r\n\r\n`,
    expect: { body: "hello" },
  },
  {
    name: "extension: quoted string with HTAB, obs-text and ';' '=' inside",
    wire: `5;n="a\tb\xe9;c=d"\r\nhello\r\n0\r\n\r\n`,
    expect: { body: "hello" },
  },
  {
    name: "extension: empty quoted string",
    wire: `5;n=""\r\nhello\r\n0\r\n\r\n`,
    expect: { body: "hello" },
  },
  {
    name: "extension: BWS around ';' and '='",
    wire: `5 ; name = value\r\nhello\r\n0\r\n\r\n`,
    expect: { body: "hello" },
  },
  {
    name: "extension: HTAB as BWS",
    wire: `5\t;\tname\t=\t"v"\r\nhello\r\n0\r\n\r\n`,
    expect: { body: "hello" },
  },
  {
    name: "extension: several on one line",
    wire: `5;a=1;b;c="x" ;d\r\nhello\r\n0\r\n\r\n`,
    expect: { body: "hello" },
  },
  {
    name: "the size-line limit applies to each line, not their sum",
    wire: `${"1;ext=abcdefg\r\nx\r\n".repeat(10)}0;ext=abcdefg\r\n\r\n`,
    limits: SHORT_LINES,
    expect: { body: "x".repeat(10) },
  },
  {
    name: "extension on the last chunk",
    wire: `5\r\nhello\r\n0;done=1\r\n\r\n`,
    expect: { body: "hello" },
  },
  // Trailers and leftover.
  {
    name: "trailer fields",
    wire: `5\r\nhello\r\n0\r\nExpires: never\r\nX-Checksum: abc\r\nx-checksum: def\r\n\r\n`,
    expect: { body: "hello", trailers: [["Expires", "never"], ["X-Checksum", "abc"], ["x-checksum", "def"]] },
  },
  {
    name: "bytes after the last chunk are leftover",
    wire: `5\r\nhello\r\n0\r\n\r\nGET http://a/ HTTP/1.1\r\n\r\n`,
    expect: { body: "hello", leftover: `GET http://a/ HTTP/1.1\r\n\r\n` },
  },
  {
    name: "bytes after the trailer section are leftover",
    wire: `5\r\nhello\r\n0\r\nX: y\r\n\r\n0\r\n\r\nmore`,
    expect: { body: "hello", trailers: [["X", "y"]], leftover: `0\r\n\r\nmore` },
  },
  {
    name: "needs more: inside data",
    wire: `5\r\nhel`,
    expect: { incomplete: true, body: "hel" },
  },
  {
    name: "needs more: after the last chunk, before the trailer section ends",
    wire: `5\r\nhello\r\n0\r\nX: y\r\n`,
    expect: { incomplete: true, body: "hello" },
  },
  {
    name: "needs more: inside a size line",
    wire: `5\r\nhello\r\n1a;ext`,
    expect: { incomplete: true, body: "hello" },
  },
  // Data framing errors.
  {
    name: "missing CRLF after data",
    wire: `5\r\nhelloX\r\n0\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-chunk-data" },
  },
  {
    name: "chunk longer than its size",
    wire: `3\r\nhello\r\n0\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-chunk-data" },
  },
  {
    name: "bare LF after data",
    wire: `5\r\nhello\n0\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-chunk-data" },
  },
  {
    name: "bare CR after data",
    wire: `5\r\nhello\r0\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-chunk-data" },
  },
  // Size line errors.
  {
    name: "bare LF after the size",
    wire: `5\nhello\r\n0\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-chunk-size" },
  },
  {
    name: "bare CR after the size",
    wire: `5\rhello\r\n0\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-chunk-line" },
  },
  {
    name: "bare LF after an extension",
    wire: `5;a\nhello\r\n0\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-chunk-extension" },
  },
  {
    name: "bare LF on the last-chunk line",
    wire: `5\r\nhello\r\n0\n\r\n`,
    expect: { error: ParseError, code: "invalid-chunk-size" },
  },
  {
    name: "0x prefix",
    wire: `0x5\r\nhello\r\n0\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-chunk-size" },
  },
  {
    name: "plus sign",
    wire: `+5\r\nhello\r\n0\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-chunk-size" },
  },
  {
    name: "minus sign",
    wire: `-5\r\nhello\r\n0\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-chunk-size" },
  },
  {
    name: "empty size",
    wire: `\r\nhello\r\n0\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-chunk-size" },
  },
  {
    name: "leading whitespace",
    wire: ` 5\r\nhello\r\n0\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-chunk-size" },
  },
  {
    name: "non-hex letter after the digits",
    wire: `5g\r\nhello\r\n0\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-chunk-size" },
  },
  {
    name: "14 significant hex digits overflow",
    wire: `10000000000000\r\nx\r\n0\r\n\r\n`,
    expect: { error: ParseError, code: "chunk-size-overflow" },
  },
  {
    name: "20 hex digits overflow before the line ends",
    wire: `ffffffffffffffffffff`,
    expect: { error: ParseError, code: "chunk-size-overflow" },
  },
  {
    name: "trailing space without ';'",
    wire: `5 \r\nhello\r\n0\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-chunk-extension" },
  },
  {
    name: "trailing HTAB without ';'",
    wire: `5\t\r\nhello\r\n0\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-chunk-extension" },
  },
  {
    name: "a second number after whitespace",
    wire: `5 5\r\nhello\r\n0\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-chunk-extension" },
  },
  {
    name: "trailing whitespace after an extension name",
    wire: `5;a \r\nhello\r\n0\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-chunk-extension" },
  },
  {
    name: "trailing whitespace after an extension value",
    wire: `5;a=1 \r\nhello\r\n0\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-chunk-extension" },
  },
  {
    name: "extension without a name",
    wire: `5;\r\nhello\r\n0\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-chunk-extension" },
  },
  {
    name: "extension with '=' but no name",
    wire: `5;=v\r\nhello\r\n0\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-chunk-extension" },
  },
  {
    name: "extension with '=' but no value",
    wire: `5;a=\r\nhello\r\n0\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-chunk-extension" },
  },
  {
    name: "extension value with a space in it",
    wire: `5;a=b c\r\nhello\r\n0\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-chunk-extension" },
  },
  {
    name: "separator in an extension name",
    wire: `5;a@b\r\nhello\r\n0\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-chunk-extension" },
  },
  {
    name: "unterminated quoted string",
    wire: `5;a="abc\r\nhello\r\n0\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-chunk-extension" },
  },
  {
    name: "unterminated quoted string ending in a backslash",
    wire: `5;a="abc\\\r\nhello\r\n0\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-chunk-extension" },
  },
  {
    name: "CTL inside a quoted string",
    wire: `5;a="x\x01y"\r\nhello\r\n0\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-chunk-extension" },
  },
  {
    name: "quoted-pair escaping a bare LF",
    wire: `5;a="x\\\ny"\r\nhello\r\n0\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-chunk-extension" },
  },
  {
    name: "quoted-pair escaping NUL",
    wire: `5;a="x\\\x00y"\r\nhello\r\n0\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-chunk-extension" },
  },
  {
    name: "over-long size line (small limit)",
    wire: `5;aaaaaaaaaaaaaaaaaaaaaaaa\r\nhello\r\n0\r\n\r\n`,
    limits: SHORT_LINES,
    expect: { error: ParseError, code: "chunk-line-too-long" },
  },
  {
    name: "over-long size line detected before its CR arrives (small limit)",
    wire: `5;aaaaaaaaaaaaaaaaaaaaaaaa`,
    limits: SHORT_LINES,
    expect: { error: ParseError, code: "chunk-line-too-long" },
  },
  {
    name: "5000 leading zeros (default limit)",
    wire: `${"0".repeat(5000)}5\r\nhello\r\n0\r\n\r\n`,
    expect: { error: ParseError, code: "chunk-line-too-long" },
  },
  {
    name: "5000-byte extension (default limit)",
    wire: `5;a=${"b".repeat(5000)}\r\nhello\r\n0\r\n\r\n`,
    expect: { error: ParseError, code: "chunk-line-too-long" },
  },
  // Trailer section errors.
  {
    name: "bare LF ending the trailer section",
    wire: `5\r\nhello\r\n0\r\nX: y\n\r\n`,
    expect: { error: ParseError, code: "bare-lf" },
  },
  {
    name: "bare LF right after the last chunk",
    wire: `5\r\nhello\r\n0\r\n\n`,
    expect: { error: ParseError, code: "bare-lf" },
  },
  {
    name: "obs-fold in a trailer",
    wire: `0\r\nX: y\r\n z\r\n\r\n`,
    expect: { error: ParseError, code: "obs-fold" },
  },
  {
    name: "NUL in a trailer value",
    wire: `0\r\nX: y\x00\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-field-value" },
  },
  {
    name: "too many trailer fields",
    wire: `0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n`,
    limits: FEW_TRAILERS,
    expect: { error: HeadTooLargeError, code: "head-too-large" },
  },
  {
    name: "trailer section too large",
    wire: `0\r\nX: ${"v".repeat(100)}\r\n\r\n`,
    limits: FEW_TRAILERS,
    expect: { error: HeadTooLargeError, code: "head-too-large" },
  },
];

Deno.test("ChunkedDecoder decodes the same however the bytes are split", async (t) => {
  for (const row of ROWS) {
    await t.step(row.name, () => assertSplits(row.wire, feedChunked(row.limits), expected(row)));
  }
});

Deno.test("ChunkedDecoder hands out data as views into its input", () => {
  const input = new TextEncoder().encode("5\r\nhello\r\n0\r\n\r\n");
  const decoder = new ChunkedDecoder();
  const n = decoder.step(input);
  assert.equal(n, 8);
  assert.ok(decoder.data !== null);
  assert.equal(decoder.data.buffer, input.buffer);
  assert.equal(decoder.data.byteOffset, 3);
  assert.equal(decoder.data.length, 5);
  assert.equal(decoder.step(input.subarray(n)), 7);
  assert.equal(decoder.data, null);
  assert.ok(decoder.done);
  assert.equal(decoder.step(new Uint8Array([0x30])), 0, "a finished decoder consumes nothing");
});

Deno.test("DEFAULT_CHUNKED_LIMITS", () => {
  assert.equal(DEFAULT_CHUNKED_LIMITS.maxChunkLineBytes, 4096);
  assert.equal(DEFAULT_CHUNKED_LIMITS.trailer, DEFAULT_HEAD_LIMITS);
});

Deno.test("chunkSizeLine writes lower-case hex and CRLF", async (t) => {
  const rows: Array<{ name: string; size: number; wire: string }> = [
    { name: "zero", size: 0, wire: `0\r\n` },
    { name: "one digit", size: 10, wire: `a\r\n` },
    { name: "two digits", size: 255, wire: `ff\r\n` },
    { name: "64 KiB", size: 65536, wire: `10000\r\n` },
  ];
  for (const row of rows) {
    await t.step(row.name, () => assert.equal(chunkSizeLine(row.size), row.wire));
  }
});
