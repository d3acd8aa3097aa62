import assert from "node:assert/strict";
import {
  connectionTokens,
  type Field,
  getAll,
  has,
  HOP_BY_HOP,
  splitList,
  stripHopByHop,
  viaContains,
} from "../lib/fields.ts";
import { HeadParser } from "../lib/head.ts";
import { assertSplits, type Feeder } from "./wire_util.ts";

/**
 * Parses a field section (field lines and the empty line) from the pieces and
 * applies `f` to the fields, so every row sees fields exactly as the parser
 * delivers them, however the bytes were split.
 */
function withFields<T>(f: (fields: Field[]) => T): Feeder<T> {
  return (pieces) => {
    const parser = new HeadParser("trailer");
    for (const piece of pieces) parser.push(piece);
    assert.ok(parser.complete, "fixture is a complete field section");
    return f(parser.fields);
  };
}

Deno.test("splitList splits list-based field values (RFC 9110 §5.6.1)", async (t) => {
  const rows: Array<{ name: string; wire: string; expect: string[] }> = [
    { name: "one element", wire: `X: a\r\n\r\n`, expect: ["a"] },
    { name: "commas with and without OWS", wire: `X: a, b,c ,\td\r\n\r\n`, expect: ["a", "b", "c", "d"] },
    { name: "empty elements dropped", wire: `X: , a ,, b ,\r\n\r\n`, expect: ["a", "b"] },
    { name: "only commas and whitespace", wire: `X: , ,\t,\r\n\r\n`, expect: [] },
    { name: "empty value", wire: `X:\r\n\r\n`, expect: [] },
    { name: "several fields, in order", wire: `X: a, b\r\nY: z\r\nx: c\r\n\r\n`, expect: ["a", "b", "c"] },
    { name: "inner whitespace kept", wire: `X: a b , c\td\r\n\r\n`, expect: ["a b", "c\td"] },
    { name: "commas inside a quoted string", wire: `X: a, "b, c", d\r\n\r\n`, expect: ["a", `"b, c"`, "d"] },
    {
      name: "escaped quote inside a quoted string",
      wire: `X: "x\\", y", z\r\n\r\n`,
      expect: [`"x\\", y"`, "z"],
    },
    { name: "parameters with quoted commas", wire: `X: a;q="1,2", b\r\n\r\n`, expect: [`a;q="1,2"`, "b"] },
    { name: "unterminated quoted string runs to the end", wire: `X: a, "b, c\r\n\r\n`, expect: ["a", `"b, c`] },
    { name: "NBSP (obs-text) is not OWS", wire: `X: chunked\xa0, \xa0\r\n\r\n`, expect: ["chunked\xa0", "\xa0"] },
  ];
  for (const row of rows) {
    await t.step(
      row.name,
      () => assertSplits(row.wire, withFields((f) => splitList(getAll(f, "x"))), { value: row.expect }),
    );
  }
});

Deno.test("getAll and has compare names case-insensitively", async (t) => {
  const rows: Array<{ name: string; wire: string; expect: { all: string[]; has: boolean } }> = [
    { name: "absent", wire: `Y: 1\r\n\r\n`, expect: { all: [], has: false } },
    { name: "one field", wire: `X-Thing: 1\r\n\r\n`, expect: { all: ["1"], has: true } },
    {
      name: "duplicates in order, any case",
      wire: `x-thing: 1\r\nY: 2\r\nX-THING: 3\r\nX-Thing:\r\n\r\n`,
      expect: { all: ["1", "3", ""], has: true },
    },
    { name: "prefix is not a match", wire: `X-Things: 1\r\nX-Thin: 2\r\n\r\n`, expect: { all: [], has: false } },
  ];
  for (const row of rows) {
    await t.step(
      row.name,
      () =>
        assertSplits(row.wire, withFields((f) => ({ all: getAll(f, "x-thing"), has: has(f, "x-thing") })), {
          value: row.expect,
        }),
    );
  }
});

Deno.test("connectionTokens collects lower-cased Connection options (RFC 9110 §7.6.1)", async (t) => {
  const rows: Array<{ name: string; wire: string; expect: string[] }> = [
    { name: "no Connection field", wire: `Host: a\r\n\r\n`, expect: [] },
    { name: "close", wire: `Connection: close\r\n\r\n`, expect: ["close"] },
    {
      name: "several options over several fields, lower-cased",
      wire: `Connection: Keep-Alive, X-Foo\r\nconnection: CLOSE\r\nCONNECTION: ,upgrade,\r\n\r\n`,
      expect: ["close", "keep-alive", "upgrade", "x-foo"],
    },
    { name: "duplicates collapse", wire: `Connection: a, A\r\nConnection: a\r\n\r\n`, expect: ["a"] },
  ];
  for (const row of rows) {
    await t.step(
      row.name,
      () => assertSplits(row.wire, withFields((f) => [...connectionTokens(f)].sort()), { value: row.expect }),
    );
  }
});

Deno.test("stripHopByHop keeps only end-to-end fields (RFC 9110 §7.6.1)", async (t) => {
  const rows: Array<{ name: string; wire: string; keep?: string[]; expect: Field[] }> = [
    {
      name: "end-to-end fields pass in order with case and duplicates",
      wire: `Host: a\r\nAccept: */*\r\nX-Dup: 1\r\nx-dup: 2\r\n\r\n`,
      expect: [["Host", "a"], ["Accept", "*/*"], ["X-Dup", "1"], ["x-dup", "2"]],
    },
    {
      name: "every standard hop-by-hop field and the framing fields are dropped",
      wire: `Connection: close\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\n` +
        `Trailer: X-Sum\r\nTransfer-Encoding: chunked\r\nUpgrade: websocket\r\nProxy-Authorization: Basic eA==\r\n` +
        `Proxy-Authenticate: Basic\r\nContent-Length: 5\r\nHost: a\r\n\r\n`,
      // Trailer is end-to-end (RFC 9110 §6.6.2); the proxy drops it only where no trailers follow.
      expect: [["Trailer", "X-Sum"], ["Host", "a"]],
    },
    {
      name: "hop-by-hop names matched in any case",
      wire: `CONNECTION: close\r\nkeep-alive: 1\r\nTe: trailers\r\nX: y\r\n\r\n`,
      expect: [["X", "y"]],
    },
    {
      name: "fields named by Connection are dropped, in any case",
      wire: `Connection: X-Hop, x-other\r\nX-Hop: 1\r\nx-hop: 2\r\nX-OTHER: 3\r\nX-Keep: 4\r\n\r\n`,
      expect: [["X-Keep", "4"]],
    },
    {
      name: "Connection options from a second Connection field count",
      wire: `Connection: close\r\nConnection: X-Hop\r\nX-Hop: 1\r\nX-Keep: 2\r\n\r\n`,
      expect: [["X-Keep", "2"]],
    },
    {
      name: "keep retains a listed field",
      wire: `Connection: Upgrade\r\nUpgrade: websocket\r\nHost: a\r\n\r\n`,
      keep: ["upgrade"],
      expect: [["Upgrade", "websocket"], ["Host", "a"]],
    },
    {
      name: "keep retains a field named by Connection",
      wire: `Connection: X-Hop\r\nX-Hop: 1\r\n\r\n`,
      keep: ["x-hop"],
      expect: [["X-Hop", "1"]],
    },
  ];
  for (const row of rows) {
    const keep = row.keep ? new Set(row.keep) : undefined;
    await t.step(
      row.name,
      () =>
        assertSplits(row.wire, withFields((f) => structuredClone(stripHopByHop(f, connectionTokens(f), keep))), {
          value: row.expect,
        }),
    );
  }
});

Deno.test("stripHopByHop leaves its input untouched", () => {
  const fields: Field[] = [["Connection", "x"], ["X", "1"], ["Y", "2"]];
  const copy = structuredClone(fields);
  stripHopByHop(fields, connectionTokens(fields));
  assert.deepStrictEqual(fields, copy);
});

Deno.test("HOP_BY_HOP holds lower-case names", () => {
  for (const name of HOP_BY_HOP) assert.equal(name, name.toLowerCase());
  for (
    const name of ["connection", "keep-alive", "proxy-connection", "te", "transfer-encoding", "upgrade"]
  ) {
    assert.ok(HOP_BY_HOP.has(name), name);
  }
  assert.ok(!HOP_BY_HOP.has("trailer"), "Trailer is end-to-end (RFC 9110 §6.6.2)");
});

Deno.test("viaContains finds this proxy's pseudonym in Via (RFC 9110 §7.6.3)", async (t) => {
  const rows: Array<{ name: string; wire: string; expect: boolean }> = [
    { name: "no Via", wire: `Host: a\r\n\r\n`, expect: false },
    { name: "our pseudonym", wire: `Via: 1.1 waypost\r\n\r\n`, expect: true },
    { name: "with protocol name", wire: `Via: HTTP/1.1 waypost\r\n\r\n`, expect: true },
    { name: "pseudonym in another case, with a comment", wire: `Via: 1.1 WayPost (Waypost/0.1)\r\n\r\n`, expect: true },
    { name: "HTAB as separator", wire: `Via: 1.1\twaypost\r\n\r\n`, expect: true },
    { name: "second list member", wire: `Via: 1.0 other, 1.1 waypost\r\n\r\n`, expect: true },
    { name: "second Via field", wire: `Via: 1.0 other\r\nvia: 1.1 waypost\r\n\r\n`, expect: true },
    { name: "another proxy", wire: `Via: 1.1 other\r\n\r\n`, expect: false },
    { name: "a longer name that starts with ours", wire: `Via: 1.1 waypost.example\r\n\r\n`, expect: false },
    { name: "our name only in a comment", wire: `Via: 1.1 other (waypost)\r\n\r\n`, expect: false },
    { name: "our name as the protocol", wire: `Via: waypost other\r\n\r\n`, expect: false },
    { name: "no received-by at all", wire: `Via: waypost\r\n\r\n`, expect: false },
    { name: "our name in another field", wire: `X-Via: 1.1 waypost\r\n\r\n`, expect: false },
  ];
  for (const row of rows) {
    await t.step(
      row.name,
      () => assertSplits(row.wire, withFields((f) => viaContains(f, "waypost")), { value: row.expect }),
    );
  }
});

Deno.test("stripHopByHop drops every HOP_BY_HOP name and Content-Length, in any case, and keeps others", () => {
  for (const name of [...HOP_BY_HOP, "content-length"]) {
    for (const spelled of [name, name.toUpperCase(), name[0].toUpperCase() + name.slice(1)]) {
      assert.deepEqual(stripHopByHop([[spelled, "x"], ["X-Kept", "y"]], new Set()), [["X-Kept", "y"]], spelled);
    }
  }
  // Same lengths as hop-by-hop names, different names: kept.
  const sameLength: Field[] = [["tx", "1"], ["upgradx", "2"], ["connectiom", "3"], ["content-lengtx", "4"]];
  assert.deepEqual(stripHopByHop(sameLength, new Set()), sameLength);
});
