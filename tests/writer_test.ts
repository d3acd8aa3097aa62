import assert from "node:assert/strict";
import { ChunkedDecoder } from "../lib/chunked.ts";
import type { Field } from "../lib/fields.ts";
import { httpDate, REASON } from "../lib/serialize.ts";
import { ChunkedBodyWriter, CountingWriter, RawBodyWriter, type Writable, writeAll } from "../lib/writer.ts";
import { assertSplits, bytes, ByteSink, type Feeder } from "./wire_util.ts";

/**
 * A connection stand-in: accepts at most `maxPerWrite` bytes per call (a short
 * write, like a socket under pressure), resolves on a later microtask, and keeps
 * a copy of what it accepted.
 */
class FakeConn implements Writable {
  readonly accepted = new ByteSink();
  calls = 0;
  constructor(readonly maxPerWrite = Infinity, readonly failWith?: Error) {}

  async write(p: Uint8Array): Promise<number> {
    this.calls++;
    await Promise.resolve();
    if (this.failWith) throw this.failWith;
    const n = Math.min(p.length, this.maxPerWrite);
    this.accepted.add(p.subarray(0, n));
    return n;
  }
}

/** Short-write sizes every writer row runs with. */
const WRITE_SIZES = [Infinity, 1, 3, 1000];

interface WriterRow {
  name: string;
  pieces: string[];
  trailers?: Field[];
  /** The exact bytes the connection must receive. */
  wire: string;
}

const X64K = "x".repeat(65536);

const CHUNKED_ROWS: WriterRow[] = [
  { name: "no data: only the last chunk", pieces: [], wire: `0\r\n\r\n` },
  { name: "one piece", pieces: ["hello"], wire: `5\r\nhello\r\n0\r\n\r\n` },
  {
    name: "several pieces, sizes in lower-case hex",
    pieces: ["abc", "0123456789"],
    wire: `3\r\nabc\r\na\r\n0123456789\r\n0\r\n\r\n`,
  },
  { name: "empty pieces write nothing", pieces: ["", "a", ""], wire: `1\r\na\r\n0\r\n\r\n` },
  {
    name: "scratch buffer reused across sizes",
    pieces: ["a".repeat(2000), "b", "c".repeat(1500)],
    wire: `7d0\r\n${"a".repeat(2000)}\r\n1\r\nb\r\n5dc\r\n${"c".repeat(1500)}\r\n0\r\n\r\n`,
  },
  { name: "64 KiB piece", pieces: [X64K], wire: `10000\r\n${X64K}\r\n0\r\n\r\n` },
  { name: "64 KiB + 1 piece", pieces: [`${X64K}y`], wire: `10001\r\n${X64K}y\r\n0\r\n\r\n` },
  { name: "every byte value", pieces: [bytesText()], wire: `100\r\n${bytesText()}\r\n0\r\n\r\n` },
  {
    name: "trailers after the last chunk",
    pieces: ["hi"],
    trailers: [["Expires", "never"], ["X-Sum", ""]],
    wire: `2\r\nhi\r\n0\r\nExpires: never\r\nX-Sum: \r\n\r\n`,
  },
];

function bytesText(): string {
  return Array.from({ length: 256 }, (_, i) => String.fromCharCode(i)).join("");
}

/** Decodes a chunked body back to its data and trailers; nothing may be left over. */
const decodeChunked: Feeder<{ body: string; trailers: Field[] }> = (pieces) => {
  const decoder = new ChunkedDecoder();
  const body = new ByteSink();
  for (const piece of pieces) {
    let input = piece;
    while (input.length > 0) {
      assert.ok(!decoder.done, "no bytes after the last chunk");
      const n = decoder.step(input);
      if (decoder.data !== null) body.add(decoder.data);
      input = input.subarray(n);
    }
  }
  assert.ok(decoder.done, "body is complete");
  return { body: body.text(), trailers: structuredClone(decoder.trailers) };
};

Deno.test("ChunkedBodyWriter frames data as chunks (RFC 9112 §7.1)", async (t) => {
  for (const row of CHUNKED_ROWS) {
    await t.step(row.name, async () => {
      for (const size of WRITE_SIZES) {
        const conn = new FakeConn(size);
        const writer = new ChunkedBodyWriter(conn);
        for (const piece of row.pieces) await writer.write(bytes(piece));
        await writer.end(row.trailers);
        assert.equal(conn.accepted.text(), row.wire, `maxPerWrite=${size}`);
        assert.equal(writer.bytes, row.pieces.join("").length, `maxPerWrite=${size}`);
      }
      assertSplits(row.wire, decodeChunked, { value: { body: row.pieces.join(""), trailers: row.trailers ?? [] } });
    });
  }
});

Deno.test("ChunkedBodyWriter write calls", async (t) => {
  const rows: Array<{ name: string; size: number; calls: number }> = [
    { name: "empty data: no call (a zero chunk would end the body)", size: 0, calls: 0 },
    { name: "small chunk: size line, data and CRLF in one call", size: 10, calls: 1 },
    { name: "64 KiB: still one call", size: 65536, calls: 1 },
    { name: "over 64 KiB: size line, data, CRLF without copying the data", size: 65537, calls: 3 },
  ];
  for (const row of rows) {
    await t.step(row.name, async () => {
      const conn = new FakeConn();
      await new ChunkedBodyWriter(conn).write(new Uint8Array(row.size));
      assert.equal(conn.calls, row.calls);
    });
  }
  await t.step("end without trailers: one call", async () => {
    const conn = new FakeConn();
    await new ChunkedBodyWriter(conn).end();
    assert.equal(conn.calls, 1);
  });
});

Deno.test("ChunkedBodyWriter does not keep the caller's buffer", async () => {
  const conn = new FakeConn(2);
  const writer = new ChunkedBodyWriter(conn);
  const buf = bytes("abc");
  await writer.write(buf);
  buf.fill(0x21);
  await writer.write(bytes("de"));
  await writer.end();
  assert.equal(conn.accepted.text(), `3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n`);
});

Deno.test("RawBodyWriter writes data as-is", async (t) => {
  const rows: Array<{ name: string; pieces: string[]; trailers?: Field[]; wire: string }> = [
    { name: "nothing", pieces: [], wire: "" },
    { name: "pieces concatenated", pieces: ["abc", "", "de\r\n0\r\n\r\n"], wire: `abcde\r\n0\r\n\r\n` },
    { name: "trailers cannot be sent with identity framing", pieces: ["x"], trailers: [["X", "y"]], wire: "x" },
    { name: "64 KiB + 1", pieces: [`${X64K}y`], wire: `${X64K}y` },
  ];
  for (const row of rows) {
    await t.step(row.name, async () => {
      for (const size of WRITE_SIZES) {
        const conn = new FakeConn(size);
        const writer = new RawBodyWriter(conn);
        for (const piece of row.pieces) await writer.write(bytes(piece));
        await writer.end(row.trailers);
        assert.equal(conn.accepted.text(), row.wire, `maxPerWrite=${size}`);
        assert.equal(writer.bytes, row.wire.length, `maxPerWrite=${size}`);
      }
    });
  }
});

Deno.test("writers pass connection errors on", async (t) => {
  const boom = new Error("connection reset");
  await t.step("ChunkedBodyWriter.write", async () => {
    await assert.rejects(new ChunkedBodyWriter(new FakeConn(Infinity, boom)).write(bytes("a")), (e) => e === boom);
  });
  await t.step("ChunkedBodyWriter.write, over 64 KiB", async () => {
    await assert.rejects(
      new ChunkedBodyWriter(new FakeConn(Infinity, boom)).write(new Uint8Array(70000)),
      (e) => e === boom,
    );
  });
  await t.step("ChunkedBodyWriter.end", async () => {
    await assert.rejects(new ChunkedBodyWriter(new FakeConn(Infinity, boom)).end([["X", "y"]]), (e) => e === boom);
  });
  await t.step("RawBodyWriter.write", async () => {
    await assert.rejects(new RawBodyWriter(new FakeConn(Infinity, boom)).write(bytes("a")), (e) => e === boom);
  });
  await t.step("writeAll", async () => {
    await assert.rejects(writeAll(new FakeConn(Infinity, boom), bytes("a")), (e) => e === boom);
  });
});

Deno.test("writeAll finishes short writes", async (t) => {
  for (const size of [1, 2, 7, Infinity]) {
    await t.step(`maxPerWrite=${size}`, async () => {
      const conn = new FakeConn(size);
      await writeAll(conn, bytes("0123456789"));
      assert.equal(conn.accepted.text(), "0123456789");
      assert.equal(conn.calls, size === Infinity ? 1 : Math.ceil(10 / size));
    });
  }
  await t.step("empty data: no call", async () => {
    const conn = new FakeConn();
    await writeAll(conn, new Uint8Array(0));
    assert.equal(conn.calls, 0);
  });
});

Deno.test("httpDate writes an IMF-fixdate, cached per second (RFC 9110 §5.6.7)", async (t) => {
  await t.step("epoch", () => assert.equal(httpDate(0), "Thu, 01 Jan 1970 00:00:00 GMT"));
  await t.step(
    "a known date",
    () => assert.equal(httpDate(Date.UTC(1994, 10, 6, 8, 49, 37)), "Sun, 06 Nov 1994 08:49:37 GMT"),
  );
  await t.step("milliseconds truncated, same second same text", () => {
    assert.equal(httpDate(1999), "Thu, 01 Jan 1970 00:00:01 GMT");
    assert.equal(httpDate(1000), "Thu, 01 Jan 1970 00:00:01 GMT");
    assert.equal(httpDate(2000), "Thu, 01 Jan 1970 00:00:02 GMT");
  });
  await t.step("now", () => {
    assert.match(
      httpDate(),
      /^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT$/,
    );
  });
});

Deno.test("REASON phrases are valid reason-phrase text (RFC 9112 §4)", () => {
  for (const [status, reason] of Object.entries(REASON)) {
    assert.match(status, /^[1-5]\d\d$/);
    assert.match(reason, /^[\x21-\x7e]+( [\x21-\x7e]+)*$/, status);
  }
});

Deno.test("CountingWriter: a failed write counts nothing, a partial one only what was written", async () => {
  let calls = 0;
  const flaky: Writable = {
    write(p: Uint8Array) {
      calls++;
      if (calls === 1) return Promise.resolve(Math.min(3, p.length)); // partial
      if (calls === 2) return Promise.reject(new Error("reset"));
      return Promise.resolve(p.length);
    },
  };
  const out = new CountingWriter(flaky);
  await assert.rejects(writeAll(out, new Uint8Array(10)), /reset/);
  assert.equal(out.written, 3);
  await assert.rejects(
    writeAll(new CountingWriter({ write: () => Promise.reject(new Error("gone")) }), new Uint8Array(5)),
  );
  await writeAll(out, new Uint8Array(4));
  assert.equal(out.written, 7);
});
