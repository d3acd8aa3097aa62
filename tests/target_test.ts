import assert from "node:assert/strict";
import { ParseError } from "../lib/errors.ts";
import { HeadParser } from "../lib/head.ts";
import { type AbsoluteTarget, parseAbsoluteTarget, parseAuthority } from "../lib/target.ts";
import { assertSplits, type ErrorClass, type Expect, type Feeder } from "./wire_util.ts";

type TargetExpect<T> = T | { error: ErrorClass; code: string };

function expected<T extends object>(e: TargetExpect<T>): Expect<T> {
  return "error" in e ? e : { value: e };
}

/** Parses the request head from the pieces, then applies `f` to its method and target. */
function withRequestLine<T>(f: (target: string, method: string) => T): Feeder<T> {
  return (pieces) => {
    const parser = new HeadParser("request");
    for (const piece of pieces) parser.push(piece);
    assert.ok(parser.complete, "fixture is a complete head");
    return f(parser.target, parser.method);
  };
}

const INVALID = { error: ParseError, code: "invalid-target" } as const;

const ABSOLUTE: Array<{ name: string; wire: string; expect: TargetExpect<AbsoluteTarget> }> = [
  {
    name: "http://host",
    wire: `GET http://host HTTP/1.1\r\n\r\n`,
    expect: { hostname: "host", port: 80, authority: "host", path: "/" },
  },
  {
    name: "http://host/",
    wire: `GET http://host/ HTTP/1.1\r\n\r\n`,
    expect: { hostname: "host", port: 80, authority: "host", path: "/" },
  },
  {
    name: "port, path and query",
    wire: `GET http://host:8080/p?q HTTP/1.1\r\n\r\n`,
    expect: { hostname: "host", port: 8080, authority: "host:8080", path: "/p?q" },
  },
  {
    name: "query without a path",
    wire: `GET http://host?q=1 HTTP/1.1\r\n\r\n`,
    expect: { hostname: "host", port: 80, authority: "host", path: "/?q=1" },
  },
  {
    name: "OPTIONS with an empty path becomes *",
    wire: `OPTIONS http://host:81 HTTP/1.1\r\n\r\n`,
    expect: { hostname: "host", port: 81, authority: "host:81", path: "*" },
  },
  {
    name: "OPTIONS with a path keeps it",
    wire: `OPTIONS http://host/ HTTP/1.1\r\n\r\n`,
    expect: { hostname: "host", port: 80, authority: "host", path: "/" },
  },
  {
    name: "OPTIONS with only a query",
    wire: `OPTIONS http://host?q HTTP/1.1\r\n\r\n`,
    expect: { hostname: "host", port: 80, authority: "host", path: "/?q" },
  },
  {
    name: "IPv6 literal with port",
    wire: `GET http://[::1]:8080/x HTTP/1.1\r\n\r\n`,
    expect: { hostname: "::1", port: 8080, authority: "[::1]:8080", path: "/x" },
  },
  {
    name: "IPv6 literal without port",
    wire: `GET http://[2001:DB8::1] HTTP/1.1\r\n\r\n`,
    expect: { hostname: "2001:db8::1", port: 80, authority: "[2001:DB8::1]", path: "/" },
  },
  {
    name: "IPv4 literal",
    wire: `GET http://127.0.0.1:3128/ HTTP/1.1\r\n\r\n`,
    expect: { hostname: "127.0.0.1", port: 3128, authority: "127.0.0.1:3128", path: "/" },
  },
  {
    name: "upper-case scheme and host; path case kept; authority as received",
    wire: `GET HTTP://Example.COM:80/A/b HTTP/1.1\r\n\r\n`,
    expect: { hostname: "example.com", port: 80, authority: "Example.COM:80", path: "/A/b" },
  },
  {
    name: "empty port means the default",
    wire: `GET http://host:/p HTTP/1.1\r\n\r\n`,
    expect: { hostname: "host", port: 80, authority: "host:", path: "/p" },
  },
  {
    name: "ports 1 and 65535 are valid (1)",
    wire: `GET http://host:1/ HTTP/1.1\r\n\r\n`,
    expect: { hostname: "host", port: 1, authority: "host:1", path: "/" },
  },
  {
    name: "ports 1 and 65535 are valid (65535)",
    wire: `GET http://host:65535/ HTTP/1.1\r\n\r\n`,
    expect: { hostname: "host", port: 65535, authority: "host:65535", path: "/" },
  },
  {
    name: "fragment dropped",
    wire: `GET http://host/p?q#frag HTTP/1.1\r\n\r\n`,
    expect: { hostname: "host", port: 80, authority: "host", path: "/p?q" },
  },
  {
    name: "fragment right after the authority",
    wire: `GET http://host:8080#frag/x HTTP/1.1\r\n\r\n`,
    expect: { hostname: "host", port: 8080, authority: "host:8080", path: "/" },
  },
  {
    name: "@ in the path is not userinfo",
    wire: `GET http://host/a@b?c@d HTTP/1.1\r\n\r\n`,
    expect: { hostname: "host", port: 80, authority: "host", path: "/a@b?c@d" },
  },
  {
    name: "sub-delims in a reg-name",
    wire: `GET http://a-b_c.d~e!$&'()*+,;=/ HTTP/1.1\r\n\r\n`,
    expect: { hostname: "a-b_c.d~e!$&'()*+,;=", port: 80, authority: "a-b_c.d~e!$&'()*+,;=", path: "/" },
  },
  {
    name: "https is refused",
    wire: `GET https://host/ HTTP/1.1\r\n\r\n`,
    expect: { error: ParseError, code: "unsupported-scheme" },
  },
  {
    name: "HTTPS upper-case is refused",
    wire: `GET HTTPS://host/ HTTP/1.1\r\n\r\n`,
    expect: { error: ParseError, code: "unsupported-scheme" },
  },
  {
    name: "ftp is refused",
    wire: `GET ftp://host/ HTTP/1.1\r\n\r\n`,
    expect: { error: ParseError, code: "unsupported-scheme" },
  },
  {
    name: "userinfo with password",
    wire: `GET http://user:pw@host/ HTTP/1.1\r\n\r\n`,
    expect: { error: ParseError, code: "userinfo-in-target" },
  },
  {
    name: "userinfo without password",
    wire: `GET http://user@host HTTP/1.1\r\n\r\n`,
    expect: { error: ParseError, code: "userinfo-in-target" },
  },
  { name: "port 0", wire: `GET http://host:0/ HTTP/1.1\r\n\r\n`, expect: INVALID },
  { name: "port 65536", wire: `GET http://host:65536/ HTTP/1.1\r\n\r\n`, expect: INVALID },
  { name: "port 99999", wire: `GET http://host:99999/ HTTP/1.1\r\n\r\n`, expect: INVALID },
  { name: "port with letters", wire: `GET http://host:80a/ HTTP/1.1\r\n\r\n`, expect: INVALID },
  { name: "port with a sign", wire: `GET http://host:+80/ HTTP/1.1\r\n\r\n`, expect: INVALID },
  { name: "port longer than five digits", wire: `GET http://host:000080/ HTTP/1.1\r\n\r\n`, expect: INVALID },
  { name: "two ports", wire: `GET http://host:80:81/ HTTP/1.1\r\n\r\n`, expect: INVALID },
  { name: "empty host", wire: `GET http:///p HTTP/1.1\r\n\r\n`, expect: INVALID },
  { name: "empty host with port", wire: `GET http://:8080/ HTTP/1.1\r\n\r\n`, expect: INVALID },
  { name: "percent-encoded host", wire: `GET http://ex%61mple.com/ HTTP/1.1\r\n\r\n`, expect: INVALID },
  { name: "origin-form", wire: `GET /p HTTP/1.1\r\n\r\n`, expect: INVALID },
  { name: "asterisk-form", wire: `OPTIONS * HTTP/1.1\r\n\r\n`, expect: INVALID },
  {
    name: "authority-form with GET reads as an unknown scheme",
    wire: `GET host:80 HTTP/1.1\r\n\r\n`,
    expect: { error: ParseError, code: "unsupported-scheme" },
  },
  { name: "one slash", wire: `GET http:/host/ HTTP/1.1\r\n\r\n`, expect: INVALID },
  { name: "no slashes", wire: `GET http:host HTTP/1.1\r\n\r\n`, expect: INVALID },
  { name: "unterminated IPv6 literal", wire: `GET http://[::1/ HTTP/1.1\r\n\r\n`, expect: INVALID },
  { name: "IPvFuture literal", wire: `GET http://[v1.fe]/ HTTP/1.1\r\n\r\n`, expect: INVALID },
  { name: "IPv4 in brackets", wire: `GET http://[127.0.0.1]/ HTTP/1.1\r\n\r\n`, expect: INVALID },
  { name: "IPv6 zone id", wire: `GET http://[fe80::1%25eth0]/ HTTP/1.1\r\n\r\n`, expect: INVALID },
  { name: "junk after an IPv6 literal", wire: `GET http://[::1]x/ HTTP/1.1\r\n\r\n`, expect: INVALID },
  { name: "backslash in the host", wire: `GET http://host\\evil/ HTTP/1.1\r\n\r\n`, expect: INVALID },
];

Deno.test("parseAbsoluteTarget reads absolute-form targets (RFC 9112 §3.2.2)", async (t) => {
  for (const row of ABSOLUTE) {
    await t.step(
      row.name,
      () =>
        assertSplits(
          row.wire,
          withRequestLine((target, method) => ({ ...parseAbsoluteTarget(target, method) })),
          expected(row.expect),
        ),
    );
  }
});

Deno.test("parseAuthority reads CONNECT authority-form targets (RFC 9112 §3.2.3)", async (t) => {
  const rows: Array<{ name: string; wire: string; expect: TargetExpect<{ hostname: string; port: number }> }> = [
    {
      name: "host and port",
      wire: `CONNECT example.com:443 HTTP/1.1\r\n\r\n`,
      expect: { hostname: "example.com", port: 443 },
    },
    {
      name: "host lower-cased",
      wire: `CONNECT Example.COM:8443 HTTP/1.1\r\n\r\n`,
      expect: { hostname: "example.com", port: 8443 },
    },
    { name: "IPv6 literal", wire: `CONNECT [::1]:443 HTTP/1.1\r\n\r\n`, expect: { hostname: "::1", port: 443 } },
    {
      name: "no port gives the default",
      wire: `CONNECT example.com HTTP/1.1\r\n\r\n`,
      expect: { hostname: "example.com", port: 0 },
    },
    { name: "empty host", wire: `CONNECT :443 HTTP/1.1\r\n\r\n`, expect: INVALID },
    { name: "port 0", wire: `CONNECT example.com:0 HTTP/1.1\r\n\r\n`, expect: INVALID },
    { name: "port 65536", wire: `CONNECT example.com:65536 HTTP/1.1\r\n\r\n`, expect: INVALID },
    { name: "letters in the port", wire: `CONNECT example.com:https HTTP/1.1\r\n\r\n`, expect: INVALID },
    { name: "userinfo", wire: `CONNECT user@example.com:443 HTTP/1.1\r\n\r\n`, expect: INVALID },
    { name: "path after the port", wire: `CONNECT example.com:443/x HTTP/1.1\r\n\r\n`, expect: INVALID },
  ];
  for (const row of rows) {
    await t.step(
      row.name,
      () =>
        assertSplits(row.wire, withRequestLine((target) => ({ ...parseAuthority(target, 0) })), expected(row.expect)),
    );
  }
});
