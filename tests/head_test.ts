import assert from "node:assert/strict";
import { HeadParser } from "../lib/head.ts";
import type { HeadKind, HeadLimits, RequestHead, ResponseHead } from "../lib/head.ts";
import type { Field } from "../lib/fields.ts";
import { HeadTooLargeError, ParseError, UriTooLongError, VersionNotSupportedError } from "../lib/errors.ts";
import { serializeHead } from "../lib/serialize.ts";
import { assertSplits, bytes, ByteSink, type ErrorClass, type Expect, type Feeder, text } from "./wire_util.ts";

/** What feeding one head produced, in a form every split must reproduce exactly. */
type HeadResult<H> =
  | { complete: false; consumed: number }
  | { complete: true; consumed: number; head: H; leftover: string };

type HeadExpect<H> =
  | { head: H; leftover?: string }
  | { incomplete: true }
  | { error: ErrorClass; code: string };

interface Row<H> {
  name: string;
  wire: string;
  limits?: HeadLimits;
  expect: HeadExpect<H>;
}

type TrailerHead = { fields: Field[] };

function headOf(kind: HeadKind, parser: HeadParser): RequestHead | ResponseHead | TrailerHead {
  if (kind === "request") return parser.requestHead();
  if (kind === "response") return parser.responseHead();
  return { fields: parser.fields };
}

/** Feeds pieces to a fresh parser; collects the bytes past the head as leftover. */
function feedHead<H>(kind: HeadKind, limits?: HeadLimits): Feeder<HeadResult<H>> {
  return (pieces) => {
    const parser = new HeadParser(kind, limits);
    const leftover = new ByteSink();
    let consumed = 0;
    for (const piece of pieces) {
      if (parser.complete) {
        leftover.add(piece);
        continue;
      }
      const n = parser.push(piece);
      assert.ok(n >= 0 && n <= piece.length, `push returned ${n} for a ${piece.length}-byte piece`);
      if (parser.complete) leftover.add(piece.subarray(n));
      else assert.equal(n, piece.length, "an incomplete head consumes the whole piece");
      consumed += n;
    }
    if (!parser.complete) return { complete: false, consumed };
    // Copy out: the fields array is the parser's own and must not change after completion.
    return { complete: true, consumed, head: structuredClone(headOf(kind, parser)) as H, leftover: leftover.text() };
  };
}

function expected<H>(row: Row<H>): Expect<HeadResult<H>> {
  const e = row.expect;
  if ("error" in e) return e;
  if ("incomplete" in e) return { value: { complete: false, consumed: row.wire.length } };
  const leftover = e.leftover ?? "";
  return { value: { complete: true, consumed: row.wire.length - leftover.length, head: e.head, leftover } };
}

function req(method: string, target: string, minor: number, fields: Field[] = []): RequestHead {
  return { method, target, minor, fields };
}

function res(minor: number, status: number, reason: string, fields: Field[] = []): ResponseHead {
  return { minor, status, reason, fields };
}

const SMALL: HeadLimits = { maxRequestLineBytes: 64, maxHeadBytes: 256, maxFields: 3 };

/** A request line of exactly `n` bytes (without CRLF). */
function requestLine(n: number): string {
  return `GET /${"a".repeat(n - 14)} HTTP/1.1`;
}

/** A request head of exactly `n` bytes, final CRLF included. */
function requestHeadOf(n: number): string {
  return `GET / HTTP/1.1\r\nX: ${"v".repeat(n - 23)}\r\n\r\n`;
}

function manyFields(count: number, valueBytes: number): string {
  let out = "";
  for (let i = 0; i < count; i++) out += `X-${i}: ${"v".repeat(valueBytes)}\r\n`;
  return out;
}

const REQUESTS: Row<RequestHead>[] = [
  // Valid heads.
  {
    name: "absolute-form GET with Host",
    wire: `GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n`,
    expect: { head: req("GET", "http://example.com/", 1, [["Host", "example.com"]]) },
  },
  {
    name: "no fields at all",
    wire: `GET http://a/ HTTP/1.1\r\n\r\n`,
    expect: { head: req("GET", "http://a/", 1) },
  },
  {
    name: "multiple fields, duplicates kept in order with their case",
    wire: `GET http://a/ HTTP/1.1\r\nHost: a\r\nX-Dup: 1\r\nAccept: */*\r\nx-dup: 2\r\nX-DUP: 3\r\n\r\n`,
    expect: {
      head: req("GET", "http://a/", 1, [["Host", "a"], ["X-Dup", "1"], ["Accept", "*/*"], ["x-dup", "2"], [
        "X-DUP",
        "3",
      ]]),
    },
  },
  {
    name: "empty values, with and without whitespace",
    wire: `GET / HTTP/1.1\r\nX-Empty:\r\nX-Blank: \t \r\nX-After: z\r\n\r\n`,
    expect: { head: req("GET", "/", 1, [["X-Empty", ""], ["X-Blank", ""], ["X-After", "z"]]) },
  },
  {
    name: "OWS trimmed at both ends, inner whitespace kept",
    wire: `GET / HTTP/1.1\r\nX-A:   v  \r\nX-B:\tv\t\r\nX-C: inner  space \t kept \r\n\r\n`,
    expect: { head: req("GET", "/", 1, [["X-A", "v"], ["X-B", "v"], ["X-C", "inner  space \t kept"]]) },
  },
  {
    name: "HTAB and obs-text inside a value, colons in a value",
    wire: `GET / HTTP/1.1\r\nX-Bytes: a\tb\xe9\xff\r\nX-Colon: a:b: c\r\n\r\n`,
    expect: { head: req("GET", "/", 1, [["X-Bytes", "a\tb\xe9\xff"], ["X-Colon", "a:b: c"]]) },
  },
  {
    name: "every tchar in a field name",
    wire: `GET / HTTP/1.1\r\n!#$%&'*+-.^_\`|~09azAZ: v\r\n\r\n`,
    expect: { head: req("GET", "/", 1, [["!#$%&'*+-.^_`|~09azAZ", "v"]]) },
  },
  {
    name: "leading CRLFs before the request line are skipped and consumed",
    wire: `\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n`,
    expect: { head: req("GET", "/", 1, [["Host", "a"]]) },
  },
  {
    name: "eight leading CRLFs are still skipped",
    wire: `${"\r\n".repeat(8)}GET / HTTP/1.1\r\n\r\n`,
    expect: { head: req("GET", "/", 1) },
  },
  {
    name: "HTTP/1.0",
    wire: `GET http://a/ HTTP/1.0\r\n\r\n`,
    expect: { head: req("GET", "http://a/", 0) },
  },
  {
    name: "a higher 1.x minor version is read as 1",
    wire: `GET http://a/ HTTP/1.9\r\n\r\n`,
    expect: { head: req("GET", "http://a/", 1) },
  },
  {
    name: "method case and unusual tokens preserved",
    wire: `M-SEARCH * HTTP/1.1\r\n\r\n`,
    expect: { head: req("M-SEARCH", "*", 1) },
  },
  {
    name: "lower-case method is a valid token, kept as received",
    wire: `get http://a/ HTTP/1.1\r\n\r\n`,
    expect: { head: req("get", "http://a/", 1) },
  },
  {
    name: "authority-form CONNECT",
    wire: `CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n`,
    expect: { head: req("CONNECT", "example.com:443", 1, [["Host", "example.com:443"]]) },
  },
  {
    name: "target with query and characters clients send unescaped",
    wire: `GET http://a/p?q=|"{}^\`&r=1 HTTP/1.1\r\n\r\n`,
    expect: { head: req("GET", 'http://a/p?q=|"{}^`&r=1', 1) },
  },
  {
    name: "body bytes after the head are leftover",
    wire: `POST http://a/ HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello`,
    expect: { head: req("POST", "http://a/", 1, [["Content-Length", "5"]]), leftover: "hello" },
  },
  {
    name: "a pipelined request after the head is leftover, byte for byte",
    wire: `GET http://a/ HTTP/1.1\r\n\r\n\r\nGET http://b/ HTTP/1.1\r\n\r\n`,
    expect: { head: req("GET", "http://a/", 1), leftover: `\r\nGET http://b/ HTTP/1.1\r\n\r\n` },
  },
  {
    name: "head without the final empty line needs more bytes",
    wire: `GET / HTTP/1.1\r\nHost: a\r\n`,
    expect: { incomplete: true },
  },
  {
    name: "head ending in CR needs more bytes",
    wire: `GET / HTTP/1.1\r\nHost: a\r\n\r`,
    expect: { incomplete: true },
  },
  {
    name: "request line without LF needs more bytes",
    wire: `GET / HTTP/1.1\r`,
    expect: { incomplete: true },
  },
  // Line terminators.
  {
    name: "bare LF ending the request line",
    wire: `GET / HTTP/1.1\nHost: a\r\n\r\n`,
    expect: { error: ParseError, code: "bare-lf" },
  },
  {
    name: "bare LF ending a field line",
    wire: `GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n`,
    expect: { error: ParseError, code: "bare-lf" },
  },
  {
    name: "bare LF as the final empty line",
    wire: `GET / HTTP/1.1\r\nHost: a\r\n\n`,
    expect: { error: ParseError, code: "bare-lf" },
  },
  {
    name: "bare LF as a leading empty line",
    wire: `\nGET / HTTP/1.1\r\n\r\n`,
    expect: { error: ParseError, code: "bare-lf" },
  },
  {
    name: "bare CR inside a field value",
    wire: `GET / HTTP/1.1\r\nHost: a\rX-Smuggled: b\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-field-value" },
  },
  {
    name: "bare CR just before CRLF",
    wire: `GET / HTTP/1.1\r\nHost: a\r\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-field-value" },
  },
  {
    name: "bare CR inside a field name",
    wire: `GET / HTTP/1.1\r\nHo\rst: a\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-field-name" },
  },
  {
    name: "bare CR inside the request target",
    wire: `GET /a\rb HTTP/1.1\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-target" },
  },
  {
    name: "bare CR after the version",
    wire: `GET / HTTP/1.1\r\rHost: a\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-version" },
  },
  {
    name: "CR CR LF as a field line",
    wire: `GET / HTTP/1.1\r\n\r\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-field-name" },
  },
  {
    name: "a ninth leading CRLF",
    wire: `${"\r\n".repeat(9)}GET / HTTP/1.1\r\n\r\n`,
    expect: { error: ParseError, code: "leading-empty-lines" },
  },
  // Field names and values.
  {
    name: "NUL in a field name",
    wire: `GET / HTTP/1.1\r\nX-\x00: a\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-field-name" },
  },
  {
    name: "NUL in a field value",
    wire: `GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-field-value" },
  },
  {
    name: "DEL in a field name",
    wire: `GET / HTTP/1.1\r\nX\x7f: a\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-field-name" },
  },
  {
    name: "DEL in a field value",
    wire: `GET / HTTP/1.1\r\nX: a\x7f\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-field-value" },
  },
  {
    name: "CTL (0x01) in a field value",
    wire: `GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-field-value" },
  },
  {
    name: "CTL (VT) in a field value",
    wire: `GET / HTTP/1.1\r\nX: a\x0bb\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-field-value" },
  },
  {
    name: "CTL (0x1f) in a field name",
    wire: `GET / HTTP/1.1\r\nX\x1f: a\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-field-name" },
  },
  {
    name: "space before the colon",
    wire: `GET / HTTP/1.1\r\nHost : a\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-field-name" },
  },
  {
    name: "tab before the colon",
    wire: `GET / HTTP/1.1\r\nHost\t: a\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-field-name" },
  },
  {
    name: "empty field name",
    wire: `GET / HTTP/1.1\r\n: a\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-field-name" },
  },
  {
    name: "field line without a colon",
    wire: `GET / HTTP/1.1\r\nHost a\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-field-name" },
  },
  {
    name: "separator in a field name",
    wire: `GET / HTTP/1.1\r\nX(y): a\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-field-name" },
  },
  {
    name: "obs-fold in a request",
    wire: `GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n`,
    expect: { error: ParseError, code: "obs-fold" },
  },
  {
    name: "obs-fold with HTAB in a request",
    wire: `GET / HTTP/1.1\r\nX: a\r\n\tb\r\n\r\n`,
    expect: { error: ParseError, code: "obs-fold" },
  },
  {
    name: "whitespace line before the first field",
    wire: `GET / HTTP/1.1\r\n Host: a\r\n\r\n`,
    expect: { error: ParseError, code: "obs-fold" },
  },
  // Request line.
  {
    name: "separator in the method",
    wire: `G(ET / HTTP/1.1\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-method" },
  },
  {
    name: "@ in the method",
    wire: `GE@T / HTTP/1.1\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-method" },
  },
  {
    name: "empty method",
    wire: ` / HTTP/1.1\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-method" },
  },
  {
    name: "HTAB after the method",
    wire: `GET\t/ HTTP/1.1\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-method" },
  },
  {
    name: "NUL in the method",
    wire: `GE\x00T / HTTP/1.1\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-method" },
  },
  {
    name: "method alone",
    wire: `GET\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-method" },
  },
  {
    name: "two spaces after the method",
    wire: `GET  / HTTP/1.1\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-target" },
  },
  {
    name: "obs-text in the target",
    wire: `GET /\xe9 HTTP/1.1\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-target" },
  },
  {
    name: "DEL in the target",
    wire: `GET /a\x7f HTTP/1.1\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-target" },
  },
  {
    name: "HTTP/0.9-style line without a version",
    wire: `GET /\r\n\r\n`,
    expect: { error: ParseError, code: "missing-version" },
  },
  {
    name: "empty version after the target",
    wire: `GET / \r\n\r\n`,
    expect: { error: ParseError, code: "invalid-version" },
  },
  {
    name: "space after the version",
    wire: `GET / HTTP/1.1 \r\n\r\n`,
    expect: { error: ParseError, code: "invalid-version" },
  },
  {
    name: "version HTTP/01.1",
    wire: `GET / HTTP/01.1\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-version" },
  },
  {
    name: "version HTTP/1.01",
    wire: `GET / HTTP/1.01\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-version" },
  },
  {
    name: "version HTTP/1.",
    wire: `GET / HTTP/1.\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-version" },
  },
  {
    name: "version HTTP/1",
    wire: `GET / HTTP/1\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-version" },
  },
  {
    name: "lower-case http/1.1",
    wire: `GET / http/1.1\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-version" },
  },
  {
    name: "version HTTP/1.x",
    wire: `GET / HTTP/1.x\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-version" },
  },
  {
    name: "version HTTP-1.1",
    wire: `GET / HTTP-1.1\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-version" },
  },
  {
    name: "HTTP/2.0 request",
    wire: `GET / HTTP/2.0\r\n\r\n`,
    expect: { error: VersionNotSupportedError, code: "version-not-supported" },
  },
  {
    name: "HTTP/0.9 request",
    wire: `GET / HTTP/0.9\r\n\r\n`,
    expect: { error: VersionNotSupportedError, code: "version-not-supported" },
  },
  {
    name: "HTTP/3.0 request",
    wire: `GET / HTTP/3.0\r\n\r\n`,
    expect: { error: VersionNotSupportedError, code: "version-not-supported" },
  },
  // Limits.
  {
    name: "request line of exactly maxRequestLineBytes",
    wire: `${requestLine(64)}\r\n\r\n`,
    limits: SMALL,
    expect: { head: req("GET", `/${"a".repeat(50)}`, 1) },
  },
  {
    name: "request line one byte over maxRequestLineBytes",
    wire: `${requestLine(65)}\r\n\r\n`,
    limits: SMALL,
    expect: { error: UriTooLongError, code: "uri-too-long" },
  },
  {
    name: "over-long request line detected before its LF arrives",
    wire: `GET /${"a".repeat(100)}`,
    limits: SMALL,
    expect: { error: UriTooLongError, code: "uri-too-long" },
  },
  {
    name: "request line of 8192 bytes with default limits",
    wire: `${requestLine(8192)}\r\n\r\n`,
    expect: { head: req("GET", `/${"a".repeat(8192 - 14)}`, 1) },
  },
  {
    name: "request line over 8192 bytes with default limits",
    wire: `GET /${"a".repeat(9000)} HTTP/1.1\r\nHost: a\r\n\r\n`,
    expect: { error: UriTooLongError, code: "uri-too-long" },
  },
  {
    name: "request line over 8192 bytes with default limits, no LF yet",
    wire: `GET /${"a".repeat(9000)}`,
    expect: { error: UriTooLongError, code: "uri-too-long" },
  },
  {
    name: "exactly maxFields fields",
    wire: `GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n`,
    limits: SMALL,
    expect: { head: req("GET", "/", 1, [["A", "1"], ["B", "2"], ["C", "3"]]) },
  },
  {
    name: "one field more than maxFields",
    wire: `GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n`,
    limits: SMALL,
    expect: { error: HeadTooLargeError, code: "head-too-large" },
  },
  {
    name: "head of exactly maxHeadBytes",
    wire: requestHeadOf(256),
    limits: SMALL,
    expect: { head: req("GET", "/", 1, [["X", "v".repeat(233)]]) },
  },
  {
    name: "head one byte over maxHeadBytes",
    wire: requestHeadOf(257),
    limits: SMALL,
    expect: { error: HeadTooLargeError, code: "head-too-large" },
  },
  {
    name: "leading CRLFs do not count towards maxHeadBytes",
    wire: `\r\n\r\n${requestHeadOf(256)}`,
    limits: SMALL,
    expect: { head: req("GET", "/", 1, [["X", "v".repeat(233)]]) },
  },
  {
    name: "over-long field line detected before its LF arrives",
    wire: `GET / HTTP/1.1\r\nX: ${"v".repeat(300)}`,
    limits: SMALL,
    expect: { error: HeadTooLargeError, code: "head-too-large" },
  },
  {
    name: "1,001 fields with default limits",
    wire: `GET / HTTP/1.1\r\n${manyFields(1001, 1)}\r\n`,
    expect: { error: HeadTooLargeError, code: "head-too-large" },
  },
  {
    name: "head over 65536 bytes with default limits",
    wire: `GET / HTTP/1.1\r\n${manyFields(70, 1000)}\r\n`,
    expect: { error: HeadTooLargeError, code: "head-too-large" },
  },
];

const RESPONSES: Row<ResponseHead>[] = [
  {
    name: "200 with a body as leftover",
    wire: `HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello`,
    expect: { head: res(1, 200, "OK", [["Content-Length", "5"]]), leftover: "hello" },
  },
  {
    name: "reason phrase with spaces",
    wire: `HTTP/1.1 404 Not Found\r\n\r\n`,
    expect: { head: res(1, 404, "Not Found") },
  },
  {
    name: "status line without a reason",
    wire: `HTTP/1.1 204 \r\n\r\n`,
    expect: { head: res(1, 204, "") },
  },
  {
    name: "status line without SP after the code",
    wire: `HTTP/1.1 204\r\n\r\n`,
    expect: { head: res(1, 204, "") },
  },
  {
    name: "obs-text and HTAB in the reason",
    wire: `HTTP/1.1 200 Cr\xe9\xe9\tok\r\n\r\n`,
    expect: { head: res(1, 200, "Cr\xe9\xe9\tok") },
  },
  {
    name: "HTTP/1.0 response",
    wire: `HTTP/1.0 200 OK\r\n\r\n`,
    expect: { head: res(0, 200, "OK") },
  },
  {
    name: "a higher 1.x minor version is read as 1",
    wire: `HTTP/1.7 200 OK\r\n\r\n`,
    expect: { head: res(1, 200, "OK") },
  },
  {
    name: "status 100, the final response after it is leftover",
    wire: `HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 599 X\r\n\r\n`,
    expect: { head: res(1, 100, "Continue"), leftover: `HTTP/1.1 599 X\r\n\r\n` },
  },
  {
    name: "status 599",
    wire: `HTTP/1.1 599 X\r\n\r\n`,
    expect: { head: res(1, 599, "X") },
  },
  {
    name: "duplicate Set-Cookie fields kept in order",
    wire: `HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\n\r\n`,
    expect: { head: res(1, 200, "OK", [["Set-Cookie", "a=1"], ["set-cookie", "b=2"]]) },
  },
  {
    name: "obs-fold replaced by SP",
    wire: `HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\t c \r\nY: d\r\n\r\n`,
    expect: { head: res(1, 200, "OK", [["X", "a b c"], ["Y", "d"]]) },
  },
  {
    name: "obs-fold onto an empty value",
    wire: `HTTP/1.1 200 OK\r\nX:\r\n  b\r\n\r\n`,
    expect: { head: res(1, 200, "OK", [["X", "b"]]) },
  },
  {
    name: "whitespace-only obs-fold line adds nothing",
    wire: `HTTP/1.1 200 OK\r\nX: a\r\n \t\r\n\r\n`,
    expect: { head: res(1, 200, "OK", [["X", "a"]]) },
  },
  {
    name: "head without the final empty line needs more bytes",
    wire: `HTTP/1.1 200 OK\r\nX: a\r\n`,
    expect: { incomplete: true },
  },
  {
    name: "whitespace line before the first field",
    wire: `HTTP/1.1 200 OK\r\n X: a\r\n\r\n`,
    expect: { error: ParseError, code: "obs-fold" },
  },
  {
    name: "obs-fold carrying a CTL",
    wire: `HTTP/1.1 200 OK\r\nX: a\r\n b\x01\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-field-value" },
  },
  {
    name: "status 099",
    wire: `HTTP/1.1 099 X\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-status" },
  },
  {
    name: "status 600",
    wire: `HTTP/1.1 600 X\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-status" },
  },
  {
    name: "status 000",
    wire: `HTTP/1.1 000 X\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-status" },
  },
  {
    name: "four-digit status",
    wire: `HTTP/1.1 2000 OK\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-status" },
  },
  {
    name: "two-digit status with a reason",
    wire: `HTTP/1.1 20 OK\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-status" },
  },
  {
    name: "letter in the status",
    wire: `HTTP/1.1 2x0 OK\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-status" },
  },
  {
    name: "two spaces before the status",
    wire: `HTTP/1.1  200 OK\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-status" },
  },
  {
    name: "status line too short",
    wire: `HTTP/1.1 20\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-status-line" },
  },
  {
    name: "HTAB after the version",
    wire: `HTTP/1.1\t200 OK\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-status-line" },
  },
  {
    name: "NUL in the reason",
    wire: `HTTP/1.1 200 O\x00K\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-reason" },
  },
  {
    name: "bare CR in the reason",
    wire: `HTTP/1.1 200 O\rK\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-reason" },
  },
  {
    name: "lower-case http/1.1",
    wire: `http/1.1 200 OK\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-version" },
  },
  {
    name: "HTTP/2.0 response",
    wire: `HTTP/2.0 200 OK\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-version" },
  },
  {
    name: "bare LF ending the status line",
    wire: `HTTP/1.1 200 OK\nX: a\r\n\r\n`,
    expect: { error: ParseError, code: "bare-lf" },
  },
  {
    name: "bare LF ending a field line",
    wire: `HTTP/1.1 200 OK\r\nX: a\n\r\n`,
    expect: { error: ParseError, code: "bare-lf" },
  },
  {
    // RFC 9112 §5.1: "A proxy MUST remove any such whitespace from a response message before forwarding".
    name: "whitespace before the colon is removed",
    wire: `HTTP/1.1 200 OK\r\nX : a\r\nY\t \t: b\r\n\r\n`,
    expect: { head: res(1, 200, "OK", [["X", "a"], ["Y", "b"]]) },
  },
  {
    name: "whitespace inside a field name",
    wire: `HTTP/1.1 200 OK\r\nen-US Content-Type: a\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-field-name" },
  },
  {
    name: "over-long status line",
    wire: `HTTP/1.1 200 ${"r".repeat(100)}\r\n\r\n`,
    limits: SMALL,
    expect: { error: ParseError, code: "status-line-too-long" },
  },
  {
    name: "over-long status line detected before its LF arrives",
    wire: `HTTP/1.1 200 ${"r".repeat(100)}`,
    limits: SMALL,
    expect: { error: ParseError, code: "status-line-too-long" },
  },
  {
    name: "too many fields",
    wire: `HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n`,
    limits: SMALL,
    expect: { error: HeadTooLargeError, code: "head-too-large" },
  },
  {
    name: "too many bytes",
    wire: `HTTP/1.1 200 OK\r\nX: ${"v".repeat(300)}\r\n\r\n`,
    limits: SMALL,
    expect: { error: HeadTooLargeError, code: "head-too-large" },
  },
];

const TRAILERS: Row<TrailerHead>[] = [
  {
    name: "empty trailer section",
    wire: `\r\n`,
    expect: { head: { fields: [] } },
  },
  {
    name: "trailer fields, then the next message as leftover",
    wire: `Expires: never\r\nX-Sum: 1\r\nx-sum: 2\r\n\r\nHTTP/1.1 200 OK\r\n`,
    expect: {
      head: { fields: [["Expires", "never"], ["X-Sum", "1"], ["x-sum", "2"]] },
      leftover: `HTTP/1.1 200 OK\r\n`,
    },
  },
  {
    name: "bare LF ending the trailer section",
    wire: `X: a\r\n\n`,
    expect: { error: ParseError, code: "bare-lf" },
  },
  {
    name: "obs-fold in a trailer",
    wire: `X: a\r\n b\r\n\r\n`,
    expect: { error: ParseError, code: "obs-fold" },
  },
  {
    name: "NUL in a trailer value",
    wire: `X: a\x00\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-field-value" },
  },
  {
    name: "too many trailer fields",
    wire: `A: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n`,
    limits: SMALL,
    expect: { error: HeadTooLargeError, code: "head-too-large" },
  },
  {
    name: "trailer section too large, before its LF arrives",
    wire: `X: ${"v".repeat(300)}`,
    limits: SMALL,
    expect: { error: HeadTooLargeError, code: "head-too-large" },
  },
];

Deno.test("HeadParser reads request heads the same however the bytes are split", async (t) => {
  for (const row of REQUESTS) {
    await t.step(row.name, () => assertSplits(row.wire, feedHead<RequestHead>("request", row.limits), expected(row)));
  }
});

Deno.test("HeadParser reads response heads the same however the bytes are split", async (t) => {
  for (const row of RESPONSES) {
    await t.step(row.name, () => assertSplits(row.wire, feedHead<ResponseHead>("response", row.limits), expected(row)));
  }
});

Deno.test("HeadParser reads trailer sections the same however the bytes are split", async (t) => {
  for (const row of TRAILERS) {
    await t.step(row.name, () => assertSplits(row.wire, feedHead<TrailerHead>("trailer", row.limits), expected(row)));
  }
});

Deno.test("HeadParser reports errors with the status the client sees", () => {
  const cases: Array<[string, number]> = [
    [`GET / HTTP/1.1\nHost: a\r\n\r\n`, 400],
    [`GET / HTTP/2.0\r\n\r\n`, 505],
    [`GET /${"a".repeat(9000)}`, 414],
    [`GET / HTTP/1.1\r\n${manyFields(1001, 1)}\r\n`, 431],
  ];
  for (const [wire, status] of cases) {
    const parser = new HeadParser("request");
    assert.throws(
      () => parser.push(bytes(wire)),
      (e: unknown) => (e as { status?: number }).status === status,
    );
  }
});

Deno.test("serializeHead output parses back to the same head", async (t) => {
  const rows: Array<{ name: string; wire: string; expect: RequestHead }> = [
    {
      name: "start line, fields in order with case and duplicates, empty value",
      wire: text(
        serializeHead("GET http://a/p?q HTTP/1.1", [["Host", "a"], ["X-Dup", "1"], ["x-dup", "2"], ["E", ""]]),
      ),
      expect: req("GET", "http://a/p?q", 1, [["Host", "a"], ["X-Dup", "1"], ["x-dup", "2"], ["E", ""]]),
    },
    {
      name: "obs-text in a value is written one byte per char",
      wire: text(serializeHead("GET / HTTP/1.1", [["X", "caf\xe9"]])),
      expect: req("GET", "/", 1, [["X", "caf\xe9"]]),
    },
  ];
  for (const row of rows) {
    await t.step(row.name, () => {
      assert.ok(row.wire.endsWith("\r\n\r\n"));
      assertSplits(row.wire, feedHead<RequestHead>("request"), expected({ ...row, expect: { head: row.expect } }));
    });
  }
  await t.step("exact bytes", () => {
    assert.equal(
      text(serializeHead("HTTP/1.1 200 OK", [["A", "1"], ["b", ""]])),
      `HTTP/1.1 200 OK\r\nA: 1\r\nb: \r\n\r\n`,
    );
    assert.equal(text(serializeHead("0", [])), `0\r\n\r\n`);
  });
  await t.step("a body after the head; a scratch buffer is used when the whole fits, else a new array", () => {
    const body = new TextEncoder().encode("hi");
    const scratch = new Uint8Array(64).fill(0x2a);
    const inPlace = serializeHead("HTTP/1.1 200 OK", [["X", "\xff"]], body, scratch);
    assert.equal(inPlace.buffer, scratch.buffer);
    assert.deepEqual([...inPlace], [
      ...new TextEncoder().encode("HTTP/1.1 200 OK\r\nX: "),
      0xff,
      13,
      10,
      13,
      10,
      104,
      105,
    ]);
    const tooSmall = new Uint8Array(8);
    const fresh = serializeHead("HTTP/1.1 200 OK", [["X", "y"]], body, tooSmall);
    assert.notEqual(fresh.buffer, tooSmall.buffer);
    assert.equal(text(fresh), "HTTP/1.1 200 OK\r\nX: y\r\n\r\nhi");
  });
});
