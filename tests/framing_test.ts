import assert from "node:assert/strict";
import { NotImplementedError, ParseError } from "../lib/errors.ts";
import type { Field } from "../lib/fields.ts";
import { clientFraming, contentLength, type Framing, requestFraming, responseFraming } from "../lib/framing.ts";
import { HeadParser } from "../lib/head.ts";
import { assertSplits, type ErrorClass, type Expect, type Feeder } from "./wire_util.ts";

type FramingExpect = Framing | { error: ErrorClass; code: string };

interface Row {
  name: string;
  wire: string;
  expect: FramingExpect;
}

interface ResponseRow extends Row {
  /** The method of the request this response answers. */
  method: string;
}

/** Parses one head from the pieces, then decides its framing. */
function feedFraming(kind: "request" | "response", method = "GET"): Feeder<Framing> {
  return (pieces) => {
    const parser = new HeadParser(kind);
    for (const piece of pieces) parser.push(piece);
    assert.ok(parser.complete, "fixture is a complete head");
    // Spread: the framing objects are frozen constants; compare plain values.
    return kind === "request"
      ? { ...requestFraming(parser.requestHead()) }
      : { ...responseFraming(parser.responseHead(), method) };
  };
}

function expected(e: FramingExpect): Expect<Framing> {
  return "error" in e ? e : { value: e };
}

const NONE: Framing = { kind: "none" };
const CHUNKED: Framing = { kind: "chunked", codings: [] };
const CLOSE: Framing = { kind: "close", codings: [] };
const length = (n: number): Framing => ({ kind: "length", length: n });

const POST = `POST http://a/ HTTP/1.1\r\nHost: a\r\n`;
const POST10 = `POST http://a/ HTTP/1.0\r\nHost: a\r\n`;

const REQUESTS: Row[] = [
  { name: "no body fields", wire: `GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n`, expect: NONE },
  { name: "Content-Length", wire: `${POST}Content-Length: 42\r\n\r\n`, expect: length(42) },
  { name: "Content-Length: 0", wire: `${POST}Content-Length: 0\r\n\r\n`, expect: length(0) },
  { name: "Content-Length with leading zeros", wire: `${POST}Content-Length: 007\r\n\r\n`, expect: length(7) },
  { name: "Content-Length, name in lower case", wire: `${POST}content-length: 3\r\n\r\n`, expect: length(3) },
  {
    name: "Content-Length of 15 digits",
    wire: `${POST}Content-Length: 999999999999999\r\n\r\n`,
    expect: length(999999999999999),
  },
  { name: "Content-Length in HTTP/1.0", wire: `${POST10}Content-Length: 5\r\n\r\n`, expect: length(5) },
  { name: "equal list members: 42, 42", wire: `${POST}Content-Length: 42, 42\r\n\r\n`, expect: length(42) },
  { name: "equal list members: 42,42", wire: `${POST}Content-Length: 42,42\r\n\r\n`, expect: length(42) },
  {
    name: "repeated equal Content-Length fields",
    wire: `${POST}Content-Length: 42\r\ncontent-length: 42\r\n\r\n`,
    expect: length(42),
  },
  {
    name: "differing list members: 1, 2",
    wire: `${POST}Content-Length: 1, 2\r\n\r\n`,
    expect: { error: ParseError, code: "conflicting-content-length" },
  },
  {
    name: "repeated differing Content-Length fields",
    wire: `${POST}Content-Length: 1\r\nContent-Length: 2\r\n\r\n`,
    expect: { error: ParseError, code: "conflicting-content-length" },
  },
  {
    name: "Content-Length with a plus sign",
    wire: `${POST}Content-Length: +42\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-content-length" },
  },
  {
    name: "negative Content-Length",
    wire: `${POST}Content-Length: -1\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-content-length" },
  },
  {
    name: "hex Content-Length",
    wire: `${POST}Content-Length: 0x10\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-content-length" },
  },
  {
    name: "fractional Content-Length",
    wire: `${POST}Content-Length: 4.2\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-content-length" },
  },
  {
    name: "exponent Content-Length",
    wire: `${POST}Content-Length: 1e3\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-content-length" },
  },
  {
    name: "space inside Content-Length",
    wire: `${POST}Content-Length: 4 2\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-content-length" },
  },
  {
    name: "empty Content-Length",
    wire: `${POST}Content-Length:\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-content-length" },
  },
  {
    name: "Content-Length of 16 digits",
    wire: `${POST}Content-Length: 1234567890123456\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-content-length" },
  },
  {
    name: "Content-Length followed by NBSP (obs-text is not OWS)",
    wire: `${POST}Content-Length: 42\xa0\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-content-length" },
  },
  {
    name: "Content-Length list member padded with NBSP",
    wire: `${POST}Content-Length: 42,\xa042\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-content-length" },
  },
  { name: "Transfer-Encoding: chunked", wire: `${POST}Transfer-Encoding: chunked\r\n\r\n`, expect: CHUNKED },
  {
    name: "coding names are case-insensitive",
    wire: `${POST}TRANSFER-ENCODING: Chunked\r\n\r\n`,
    expect: CHUNKED,
  },
  {
    name: "empty list members around chunked",
    wire: `${POST}Transfer-Encoding: , chunked ,\r\n\r\n`,
    expect: CHUNKED,
  },
  {
    name: "Transfer-Encoding with Content-Length",
    wire: `${POST}Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n`,
    expect: { error: ParseError, code: "te-with-cl" },
  },
  {
    name: "Content-Length before Transfer-Encoding",
    wire: `${POST}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n`,
    expect: { error: ParseError, code: "te-with-cl" },
  },
  {
    name: "Transfer-Encoding with an invalid Content-Length",
    wire: `${POST}Transfer-Encoding: chunked\r\nContent-Length: x\r\n\r\n`,
    expect: { error: ParseError, code: "te-with-cl" },
  },
  {
    name: "Transfer-Encoding in HTTP/1.0",
    wire: `${POST10}Transfer-Encoding: chunked\r\n\r\n`,
    expect: { error: ParseError, code: "te-in-http10" },
  },
  {
    name: "chunked, chunked",
    wire: `${POST}Transfer-Encoding: chunked, chunked\r\n\r\n`,
    expect: { error: ParseError, code: "te-not-chunked" },
  },
  {
    name: "chunked in two Transfer-Encoding fields",
    wire: `${POST}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n`,
    expect: { error: ParseError, code: "te-not-chunked" },
  },
  {
    name: "chunked, gzip",
    wire: `${POST}Transfer-Encoding: chunked, gzip\r\n\r\n`,
    expect: { error: ParseError, code: "te-not-chunked" },
  },
  {
    name: "gzip alone",
    wire: `${POST}Transfer-Encoding: gzip\r\n\r\n`,
    expect: { error: ParseError, code: "te-not-chunked" },
  },
  {
    name: "empty Transfer-Encoding",
    wire: `${POST}Transfer-Encoding:\r\n\r\n`,
    expect: { error: ParseError, code: "te-not-chunked" },
  },
  {
    name: "chunked with a parameter (chunked takes none)",
    wire: `${POST}Transfer-Encoding: chunked;q=1\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-transfer-encoding" },
  },
  {
    name: "quoted coding",
    wire: `${POST}Transfer-Encoding: "chunked"\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-transfer-encoding" },
  },
  {
    name: "chunked followed by NBSP (obs-text is not OWS)",
    wire: `${POST}Transfer-Encoding: chunked\xa0\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-transfer-encoding" },
  },
  {
    name: "gzip, chunked",
    wire: `${POST}Transfer-Encoding: gzip, chunked\r\n\r\n`,
    expect: { error: NotImplementedError, code: "unsupported-transfer-coding" },
  },
  {
    name: "gzip and chunked in two fields",
    wire: `${POST}Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n`,
    expect: { error: NotImplementedError, code: "unsupported-transfer-coding" },
  },
];

const RESPONSES: ResponseRow[] = [
  {
    name: "response to HEAD with Content-Length",
    method: "HEAD",
    wire: `HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n`,
    expect: NONE,
  },
  {
    name: "response to HEAD with Transfer-Encoding",
    method: "HEAD",
    wire: `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n`,
    expect: NONE,
  },
  { name: "100 Continue", method: "POST", wire: `HTTP/1.1 100 Continue\r\n\r\n`, expect: NONE },
  {
    name: "101 Switching Protocols",
    method: "GET",
    wire: `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n`,
    expect: NONE,
  },
  { name: "103 Early Hints", method: "GET", wire: `HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n`, expect: NONE },
  {
    name: "204 with Content-Length",
    method: "GET",
    wire: `HTTP/1.1 204 No Content\r\nContent-Length: 42\r\n\r\n`,
    expect: NONE,
  },
  {
    name: "304 with Content-Length",
    method: "GET",
    wire: `HTTP/1.1 304 Not Modified\r\nContent-Length: 42\r\n\r\n`,
    expect: NONE,
  },
  { name: "200 without framing", method: "GET", wire: `HTTP/1.1 200 OK\r\n\r\n`, expect: CLOSE },
  { name: "HTTP/1.0 200 without framing", method: "GET", wire: `HTTP/1.0 200 OK\r\n\r\n`, expect: CLOSE },
  { name: "404 without framing", method: "GET", wire: `HTTP/1.1 404 Not Found\r\n\r\n`, expect: CLOSE },
  {
    name: "200 with Content-Length",
    method: "GET",
    wire: `HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n`,
    expect: length(5),
  },
  {
    name: "200 with equal Content-Length members",
    method: "GET",
    wire: `HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n`,
    expect: length(5),
  },
  {
    name: "200 chunked",
    method: "GET",
    wire: `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n`,
    expect: CHUNKED,
  },
  {
    name: "Transfer-Encoding with Content-Length",
    method: "GET",
    wire: `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n`,
    expect: { error: ParseError, code: "te-with-cl" },
  },
  {
    name: "Transfer-Encoding in HTTP/1.0",
    method: "GET",
    wire: `HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n`,
    expect: { error: ParseError, code: "te-in-http10" },
  },
  {
    name: "gzip, chunked",
    method: "GET",
    wire: `HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n`,
    // RFC 9112 §6.3: a final chunked frames the body; gzip stays applied and is relayed.
    expect: { kind: "chunked", codings: ["gzip"] },
  },
  {
    name: "chunked, chunked",
    method: "GET",
    wire: `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n`,
    expect: { error: ParseError, code: "te-not-chunked" },
  },
  {
    name: "differing Content-Length fields",
    method: "GET",
    wire: `HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n`,
    expect: { error: ParseError, code: "conflicting-content-length" },
  },
  {
    name: "invalid Content-Length",
    method: "GET",
    wire: `HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\n`,
    expect: { error: ParseError, code: "invalid-content-length" },
  },
];

Deno.test("requestFraming decides request body framing (RFC 9112 §6.3)", async (t) => {
  for (const row of REQUESTS) {
    await t.step(row.name, () => assertSplits(row.wire, feedFraming("request"), expected(row.expect)));
  }
});

Deno.test("responseFraming decides response body framing (RFC 9112 §6.3)", async (t) => {
  for (const row of RESPONSES) {
    await t.step(row.name, () => assertSplits(row.wire, feedFraming("response", row.method), expected(row.expect)));
  }
});

Deno.test("contentLength reads field lists directly", async (t) => {
  const rows: Array<{ name: string; fields: Field[]; expect: number | { error: ErrorClass; code: string } }> = [
    { name: "absent", fields: [["Host", "a"]], expect: -1 },
    { name: "one value", fields: [["Content-Length", "10"]], expect: 10 },
    { name: "name case ignored", fields: [["CONTENT-LENGTH", "10"]], expect: 10 },
    {
      name: "equal values across fields and lists",
      fields: [["content-length", "3, 3"], ["Content-Length", "3"]],
      expect: 3,
    },
    {
      name: "differing values across fields",
      fields: [["content-length", "3, 3"], ["Content-Length", "4"]],
      expect: { error: ParseError, code: "conflicting-content-length" },
    },
    {
      name: "empty list member",
      fields: [["Content-Length", "3,"]],
      expect: { error: ParseError, code: "invalid-content-length" },
    },
    {
      name: "fullwidth digits",
      fields: [["Content-Length", "\uff11"]],
      expect: { error: ParseError, code: "invalid-content-length" },
    },
  ];
  for (const row of rows) {
    await t.step(row.name, () => {
      if (typeof row.expect === "number") {
        assert.equal(contentLength(row.fields), row.expect);
      } else {
        const { error, code } = row.expect;
        assert.throws(
          () => contentLength(row.fields),
          (e: unknown) => e instanceof error && (e as ParseError).code === code,
        );
      }
    });
  }
});

Deno.test("clientFraming re-chooses the origin's framing for the client (RFC 9112 §6, §7)", async (t) => {
  const res = (status: number, fields: Field[] = []) => ({ minor: 1, status, reason: "", fields });
  const rows: { name: string; status: number; fields?: Field[]; framing: Framing; minor: number; expect: unknown }[] = [
    {
      name: "a length stays a length",
      status: 200,
      framing: { kind: "length", length: 5 },
      minor: 1,
      expect: { kind: "length", length: 5 },
    },
    {
      name: "chunked to HTTP/1.1: chunked",
      status: 200,
      framing: { kind: "chunked", codings: [] },
      minor: 1,
      expect: { kind: "chunked", codings: [] },
    },
    {
      name: "close-delimited to HTTP/1.1: chunked",
      status: 200,
      framing: { kind: "close", codings: [] },
      minor: 1,
      expect: { kind: "chunked", codings: [] },
    },
    {
      name: "gzip, chunked to HTTP/1.1: gzip stays listed",
      status: 200,
      framing: { kind: "chunked", codings: ["gzip"] },
      minor: 1,
      expect: { kind: "chunked", codings: ["gzip"] },
    },
    {
      name: "chunked to HTTP/1.0: until close",
      status: 200,
      framing: { kind: "chunked", codings: [] },
      minor: 0,
      expect: { kind: "close" },
    },
    {
      name: "gzip to HTTP/1.0: cannot be sent",
      status: 200,
      framing: { kind: "close", codings: ["gzip"] },
      minor: 0,
      expect: { kind: "unsendable" },
    },
    {
      name: "HEAD/304 keep a valid Content-Length",
      status: 304,
      fields: [["Content-Length", "42"]],
      framing: { kind: "none" },
      minor: 1,
      expect: { kind: "none", length: 42 },
    },
    {
      name: "an invalid Content-Length on a body-less response is dropped",
      status: 200,
      fields: [["Content-Length", "4x"]],
      framing: { kind: "none" },
      minor: 1,
      expect: { kind: "none", length: -1 },
    },
    {
      name: "204 never gets a Content-Length",
      status: 204,
      fields: [["Content-Length", "0"]],
      framing: { kind: "none" },
      minor: 1,
      expect: { kind: "none", length: -1 },
    },
  ];
  for (const row of rows) {
    await t.step(row.name, () => {
      assert.deepEqual(clientFraming(res(row.status, row.fields), row.framing, row.minor), row.expect);
    });
  }
});
