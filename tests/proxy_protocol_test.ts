/**
 * PROXY protocol header parser (lib/proxy_protocol.ts): raw-byte fixtures for
 * versions 1 and 2, each fed whole, one byte at a time, cut at every position
 * and at seeded random splits (tests/wire_util.ts), checking the header and the
 * exact bytes after it; how early invalid input fails; a seeded fuzz of
 * mutated headers and random bytes; and readProxyHeader over scripted and real
 * loopback connections.
 */
import assert from "node:assert/strict";
import {
  crc32c,
  PP2_TYPE,
  type ProxyAddress,
  type ProxyFamily,
  type ProxyHeader,
  ProxyProtocolError,
  type ProxyProtocolErrorCode,
  type ProxyProtocolOptions,
  ProxyProtocolParser,
  type ProxyTlv,
  readProxyHeader,
} from "../lib/proxy_protocol.ts";
import { assertSplits, bytes, ByteSink, type Expect, type Feeder, mulberry32, randomSizes, text } from "./wire_util.ts";

// ---------------------------------------------------------------------------
// Fixture builders

/** What feeding one input produced, in a form every split must reproduce exactly. */
type Parsed = { complete: false } | { complete: true; header: ProxyHeader; rest: string };

type Part = Uint8Array | string | readonly number[];

function concat(...parts: Part[]): Uint8Array {
  const chunks = parts.map((p) => typeof p === "string" ? bytes(p) : p instanceof Uint8Array ? p : Uint8Array.from(p));
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

function fromHex(hex: string): Uint8Array {
  const clean = hex.replace(/\s+/g, "");
  return Uint8Array.from({ length: clean.length / 2 }, (_, i) => parseInt(clean.slice(2 * i, 2 * i + 2), 16));
}

const SIG = "\r\n\r\n\x00\r\nQUIT\n";
/** What follows the header in most fixtures: it must come out of the parser untouched. */
const HTTP = "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n";

/** A v2 header: signature, version/command byte, family byte, the block's length (default: its real length), block. */
function v2(verCmd: number, family: number, block: Part = [], length?: number): Uint8Array {
  const body = concat(block);
  const n = length ?? body.length;
  return concat(SIG, [verCmd, family, n >> 8, n & 0xff], body);
}

function tlv(type: number, value: Part): Uint8Array {
  const v = concat(value);
  return concat([type, v.length >> 8, v.length & 0xff], v);
}

function u16(n: number): number[] {
  return [n >> 8, n & 0xff];
}

/** An INET address block: 192.0.2.1:54321 to 198.51.100.2:443. */
const INET_BLOCK = [192, 0, 2, 1, 198, 51, 100, 2, ...u16(54321), ...u16(443)];
/** An INET6 address block: 2001:db8::1 port 1234 to ::ffff:10.0.0.1 port 80. */
const INET6_BLOCK = [
  ...[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
  ...[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1],
  ...u16(1234),
  ...u16(80),
];

/** A unix socket path padded with NULs to the 108 bytes of the address block. */
function unixPath(path: string): Uint8Array {
  const out = new Uint8Array(108);
  out.set(bytes(path));
  return out;
}

/** CRC-32C bit by bit: an independent reference for the library's table-driven one. */
function crc32cReference(data: Uint8Array): number {
  let c = 0xffffffff;
  for (const byte of data) {
    c ^= byte;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0x82f63b78 & -(c & 1));
  }
  return (c ^ 0xffffffff) >>> 0;
}

/** A v2 PROXY header with a CRC32C TLV after `before` and before `after`, the checksum filled in (+ `delta`). */
function withCrc(family: number, block: Part, before: Part = [], after: Part = [], delta = 0): Uint8Array {
  const wire = v2(0x21, family, concat(block, before, tlv(PP2_TYPE.CRC32C, [0, 0, 0, 0]), after));
  const at = 16 + concat(block).length + concat(before).length + 3;
  const crc = (crc32cReference(wire) + delta) >>> 0;
  wire.set([crc >>> 24, (crc >>> 16) & 0xff, (crc >>> 8) & 0xff, crc & 0xff], at);
  return wire;
}

function address(hostname: string, port: number): ProxyAddress {
  return { hostname, port };
}

function v1Header(family: "TCP4" | "TCP6", source: ProxyAddress, destination: ProxyAddress): ProxyHeader {
  return { version: 1, command: "PROXY", family, source, destination, tlvs: [] };
}

const V1_UNKNOWN: ProxyHeader = {
  version: 1,
  command: "PROXY",
  family: "UNKNOWN",
  source: null,
  destination: null,
  tlvs: [],
};

function v2Header(
  command: "PROXY" | "LOCAL",
  family: ProxyFamily,
  source: ProxyAddress | null = null,
  destination: ProxyAddress | null = null,
  tlvs: ProxyTlv[] = [],
): ProxyHeader {
  return { version: 2, command, family, source, destination, tlvs };
}

function t(type: number, value: Part): ProxyTlv {
  return { type, value: concat(value) };
}

const INET_SOURCE = address("192.0.2.1", 54321);
const INET_DESTINATION = address("198.51.100.2", 443);

// ---------------------------------------------------------------------------
// Feeding

/** Feeds pieces to a fresh parser; collects the bytes after the header as `rest`. */
function feedProxy(options?: ProxyProtocolOptions): Feeder<Parsed> {
  return (pieces) => {
    const parser = new ProxyProtocolParser(options);
    const rest = new ByteSink();
    let header: ProxyHeader | null = null;
    for (const piece of pieces) {
      if (header !== null) {
        rest.add(piece); // the stream after the header, delivered by later reads
        continue;
      }
      const result = parser.push(piece);
      if (result === null) continue;
      header = result.header;
      rest.add(result.rest);
    }
    return header === null ? { complete: false } : { complete: true, header, rest: rest.text() };
  };
}

interface Row {
  name: string;
  wire: Uint8Array | string;
  options?: ProxyProtocolOptions;
  expect: Expect<Parsed>;
}

/** A valid row: `header` then `rest` on the wire. */
function valid(name: string, head: Part, header: ProxyHeader, rest: Part = HTTP, options?: ProxyProtocolOptions): Row {
  return {
    name,
    wire: concat(head, rest),
    options,
    expect: { value: { complete: true, header, rest: text(concat(rest)) } },
  };
}

function invalid(name: string, wire: Part, code: ProxyProtocolErrorCode, options?: ProxyProtocolOptions): Row {
  return { name, wire: concat(wire), options, expect: { error: ProxyProtocolError, code } };
}

function incomplete(name: string, wire: Part): Row {
  return { name, wire: concat(wire), expect: { value: { complete: false } } };
}

// ---------------------------------------------------------------------------
// Version 1

const FFFF = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
/** The spec's worst case: exactly 107 bytes. */
const V1_UNKNOWN_MAX = `PROXY UNKNOWN ${FFFF} ${FFFF} 65535 65535\r\n`;
/** A TCP6 line of exactly 107 bytes: a 45-char address (embedded IPv4) and a 36-char one. */
const V1_TCP6_MAX =
  "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 ffff:ffff:ffff:ffff:ffff:ffff:ffff:f 65535 65535\r\n";
/** The same with one more hex digit: 108 bytes. */
const V1_TCP6_108 =
  "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff 65535 65535\r\n";

/** A TCP4 line with the given address and port fields. */
function tcp4(src: string, dst: string, sport: string, dport: string): string {
  return `PROXY TCP4 ${src} ${dst} ${sport} ${dport}\r\n`;
}

function tcp6(src: string, dst: string, sport = "1", dport = "2"): string {
  return `PROXY TCP6 ${src} ${dst} ${sport} ${dport}\r\n`;
}

const V1_ROWS: Row[] = [
  valid(
    "TCP4",
    tcp4("192.0.2.1", "198.51.100.2", "54321", "443"),
    v1Header("TCP4", INET_SOURCE, INET_DESTINATION),
  ),
  valid(
    "TCP4 with the extreme octets and ports",
    tcp4("255.255.255.255", "0.0.0.0", "65535", "0"),
    v1Header("TCP4", address("255.255.255.255", 65535), address("0.0.0.0", 0)),
  ),
  valid(
    "TCP4 followed by binary bytes (a TLS ClientHello)",
    tcp4("10.0.0.1", "10.0.0.2", "1", "2"),
    v1Header("TCP4", address("10.0.0.1", 1), address("10.0.0.2", 2)),
    [0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x0d, 0x0a],
  ),
  valid(
    "TCP4 with nothing after it",
    tcp4("10.0.0.1", "10.0.0.2", "1", "2"),
    v1Header("TCP4", address("10.0.0.1", 1), address("10.0.0.2", 2)),
    "",
  ),
  valid(
    "TCP6, addresses normalised to compressed lower case",
    tcp6("2001:DB8:0:0:0:0:0:1", "::1", "65535", "80"),
    v1Header("TCP6", address("2001:db8::1", 65535), address("::1", 80)),
  ),
  valid(
    "TCP6 with IPv4-mapped and IPv4-compatible addresses",
    tcp6("::FFFF:192.0.2.1", "::192.0.2.1"),
    v1Header("TCP6", address("::ffff:192.0.2.1", 1), address("::c000:201", 2)),
  ),
  valid(
    "TCP6: the longest zero run is compressed, the first of equal runs, never a single group",
    tcp6("2001:db8:0:0:1:0:0:1", "1:0:2:3:4:5:6:7"),
    v1Header("TCP6", address("2001:db8::1:0:0:1", 1), address("1:0:2:3:4:5:6:7", 2)),
  ),
  valid(
    "TCP6: all zeros, a trailing run, leading zeros in groups",
    tcp6("0:0:0:0:0:0:0:0", "fe80:0000:0:0:0:0:0:0000"),
    v1Header("TCP6", address("::", 1), address("fe80::", 2)),
  ),
  valid(
    "TCP6: `::` standing for a single group, full form with an embedded IPv4",
    tcp6("1:2:3:4:5:6::7", "0001:0002:0003:0004:0005:0006:1.2.3.4"),
    v1Header("TCP6", address("1:2:3:4:5:6:0:7", 1), address("1:2:3:4:5:6:102:304", 2)),
  ),
  valid("UNKNOWN alone", "PROXY UNKNOWN\r\n", V1_UNKNOWN),
  valid("UNKNOWN with addresses", "PROXY UNKNOWN 192.0.2.1 198.51.100.2 54321 443\r\n", V1_UNKNOWN),
  valid("UNKNOWN with arbitrary bytes up to the CRLF", "PROXY UNKNOWN  x\t\x00\xff::: \r\n", V1_UNKNOWN),
  valid("UNKNOWN, the spec's 107-byte worst case", V1_UNKNOWN_MAX, V1_UNKNOWN),
  valid(
    "TCP6 line of exactly 107 bytes",
    V1_TCP6_MAX,
    v1Header("TCP6", address(FFFF, 65535), address("ffff:ffff:ffff:ffff:ffff:ffff:ffff:f", 65535)),
  ),
  valid(
    "a second PROXY line after the header is left in rest",
    "PROXY UNKNOWN\r\n",
    V1_UNKNOWN,
    "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
  ),

  incomplete("an unfinished line waits for more", "PROXY TCP4 192.0.2.1 198.51.100.2 54321 443"),
  incomplete("a CR waits for its LF", "PROXY TCP4 192.0.2.1 198.51.100.2 54321 443\r"),
  incomplete("nothing at all", ""),

  invalid("bare LF", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\nGET / HTTP/1.1\r\n", "proxy-protocol-invalid"),
  invalid("bare LF after UNKNOWN", "PROXY UNKNOWN\nGET / HTTP/1.1\r\n", "proxy-protocol-invalid"),
  invalid("bare CR", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rGET / HTTP/1.1\r\n", "proxy-protocol-invalid"),
  invalid("CR CR LF", "PROXY UNKNOWN\r\r\n", "proxy-protocol-invalid"),
  invalid("missing CRLF: the line runs into HTTP", `PROXY TCP4 1.2.3.4 5.6.7.8 1 2${HTTP}`, "proxy-protocol-invalid"),
  invalid("double space after PROXY", "PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "proxy-protocol-invalid"),
  invalid("double space between addresses", "PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "proxy-protocol-invalid"),
  invalid("double space between ports", "PROXY TCP4 1.2.3.4 5.6.7.8 1  2\r\n", "proxy-protocol-invalid"),
  invalid("trailing space", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "proxy-protocol-invalid"),
  invalid("a tab as separator", "PROXY TCP4\t1.2.3.4 5.6.7.8 1 2\r\n", "proxy-protocol-invalid"),
  invalid("three fields", "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "proxy-protocol-invalid"),
  invalid("five fields", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "proxy-protocol-invalid"),
  invalid("protocol word only", "PROXY TCP4\r\n", "proxy-protocol-invalid"),
  invalid("nothing after PROXY", "PROXY \r\n", "proxy-protocol-invalid"),
  invalid("leading zero in an octet", tcp4("192.0.02.1", "5.6.7.8", "1", "2"), "proxy-protocol-invalid"),
  invalid("octet 00", tcp4("1.2.3.4", "5.00.7.8", "1", "2"), "proxy-protocol-invalid"),
  invalid("leading zero in a port", tcp4("1.2.3.4", "5.6.7.8", "0443", "2"), "proxy-protocol-invalid"),
  invalid("port 00", tcp4("1.2.3.4", "5.6.7.8", "1", "00"), "proxy-protocol-invalid"),
  invalid("port 65536", tcp4("1.2.3.4", "5.6.7.8", "65536", "2"), "proxy-protocol-invalid"),
  invalid("port of six digits", tcp4("1.2.3.4", "5.6.7.8", "1", "100000"), "proxy-protocol-invalid"),
  invalid("octet 256", tcp4("1.2.3.256", "5.6.7.8", "1", "2"), "proxy-protocol-invalid"),
  invalid("three octets", tcp4("1.2.3", "5.6.7.8", "1", "2"), "proxy-protocol-invalid"),
  invalid("five octets", tcp4("1.2.3.4.5", "5.6.7.8", "1", "2"), "proxy-protocol-invalid"),
  invalid("empty octet", tcp4("1..3.4", "5.6.7.8", "1", "2"), "proxy-protocol-invalid"),
  invalid("TCP4 with an IPv6 address", tcp4("::1", "5.6.7.8", "1", "2"), "proxy-protocol-invalid"),
  invalid("TCP6 with an IPv4 address", tcp6("1.2.3.4", "::1"), "proxy-protocol-invalid"),
  invalid("IPv6 with a zone", tcp6("fe80::1%eth0", "::1"), "proxy-protocol-invalid"),
  invalid("IPv6 with two `::`", tcp6("1::2::3", "::1"), "proxy-protocol-invalid"),
  invalid("IPv6 `:::`", tcp6(":::1", "::1"), "proxy-protocol-invalid"),
  invalid("IPv6 with nine groups", tcp6("1:2:3:4:5:6:7:8:9", "::1"), "proxy-protocol-invalid"),
  invalid("IPv6 with seven groups, no `::`", tcp6("1:2:3:4:5:6:7", "::1"), "proxy-protocol-invalid"),
  invalid("IPv6 `::` with eight groups", tcp6("1:2:3:4:5:6:7::8", "::1"), "proxy-protocol-invalid"),
  invalid("IPv6 group of five digits", tcp6("12345::", "::1"), "proxy-protocol-invalid"),
  invalid("IPv6 leading single colon", tcp6(":1:2:3:4:5:6:7", "::1"), "proxy-protocol-invalid"),
  invalid("IPv6 trailing single colon", tcp6("1::", "::1:"), "proxy-protocol-invalid"),
  invalid("IPv6 embedded IPv4 with a leading zero", tcp6("::ffff:01.2.3.4", "::1"), "proxy-protocol-invalid"),
  invalid("IPv6 embedded IPv4 before the end", tcp6("1.2.3.4::", "::1"), "proxy-protocol-invalid"),
  invalid("IPv6 in brackets", tcp6("[::1]", "::1"), "proxy-protocol-invalid"),
  invalid("108-byte TCP6 line", V1_TCP6_108, "proxy-protocol-too-long"),
  invalid("108-byte UNKNOWN line", `PROXY UNKNOWN ${"x".repeat(92)}\r\n`, "proxy-protocol-too-long"),
  invalid("107 bytes and no line end", `PROXY UNKNOWN ${"x".repeat(200)}`, "proxy-protocol-too-long"),
  invalid("lower-case proxy", "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "proxy-protocol-signature"),
  invalid("PROXY without its space", "PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n", "proxy-protocol-signature"),
  invalid("PROXY as an HTTP method", "PROXY / HTTP/1.1\r\n\r\n", "proxy-protocol-invalid"),
  invalid("lower-case protocol", "PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", "proxy-protocol-invalid"),
  invalid("TCP5", "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "proxy-protocol-invalid"),
  invalid("UDP4", "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", "proxy-protocol-invalid"),
  invalid("UNKNOWN run into a word", "PROXY UNKNOWNX\r\n", "proxy-protocol-invalid"),
  invalid("UNKNOW", "PROXY UNKNOW\r\n", "proxy-protocol-invalid"),
  invalid("plain HTTP", HTTP, "proxy-protocol-signature"),
  invalid("TLS ClientHello", [0x16, 0x03, 0x01, 0x00, 0xa5, 0x01], "proxy-protocol-signature"),
];

// ---------------------------------------------------------------------------
// Version 2

const SSL_TLV = tlv(PP2_TYPE.SSL, concat([0x01, 0, 0, 0, 0], tlv(0x21, "TLSv1.3"), tlv(0x22, "client")));
const BIG_VALUE = Uint8Array.from({ length: 300 }, (_, i) => i & 0xff);
/** The largest header the format allows: a TLV filling the 16-bit length. */
const V2_MAX = v2(0x21, 0x11, concat(INET_BLOCK, tlv(0xe1, new Uint8Array(65535 - 12 - 3))));

const V2_ROWS: Row[] = [
  valid(
    "PROXY INET (hand-written bytes)",
    fromHex("0d0a0d0a000d0a515549540a 21 11 000c c0000201 c6336402 d431 01bb"),
    v2Header("PROXY", "INET", INET_SOURCE, INET_DESTINATION),
  ),
  valid(
    "PROXY INET followed by binary bytes",
    v2(0x21, 0x11, INET_BLOCK),
    v2Header("PROXY", "INET", INET_SOURCE, INET_DESTINATION),
    [0x16, 0x03, 0x01, 0x0d, 0x0a, 0x0d, 0x0a, 0x00],
  ),
  valid(
    "PROXY INET6 (compressed, IPv4-mapped)",
    v2(0x21, 0x21, INET6_BLOCK),
    v2Header("PROXY", "INET6", address("2001:db8::1", 1234), address("::ffff:10.0.0.1", 80)),
  ),
  valid("LOCAL UNSPEC", v2(0x20, 0x00), v2Header("LOCAL", "UNSPEC")),
  valid(
    "LOCAL ignores its block, even one too short for its family",
    v2(0x20, 0x11, [1, 2, 3, 4, 5]),
    v2Header("LOCAL", "INET"),
  ),
  valid("LOCAL ignores a datagram family", v2(0x20, 0x12, INET_BLOCK), v2Header("LOCAL", "INET")),
  valid("PROXY UNSPEC", v2(0x21, 0x00), v2Header("PROXY", "UNSPEC")),
  valid(
    "PROXY UNSPEC with TLVs (no address block)",
    v2(0x21, 0x00, tlv(PP2_TYPE.ALPN, "h2")),
    v2Header("PROXY", "UNSPEC", null, null, [t(PP2_TYPE.ALPN, "h2")]),
  ),
  valid(
    "PROXY UNIX stream",
    v2(0x21, 0x31, concat(unixPath("/run/client.sock"), unixPath("/run/proxy.sock"), tlv(PP2_TYPE.NOOP, []))),
    v2Header("PROXY", "UNIX", null, null, [t(PP2_TYPE.NOOP, [])]),
  ),
  valid(
    "PROXY INET with TLVs (empty, sub-TLVs, a 300-byte value, a custom type)",
    v2(
      0x21,
      0x11,
      concat(
        INET_BLOCK,
        tlv(PP2_TYPE.ALPN, "http/1.1"),
        tlv(PP2_TYPE.AUTHORITY, "example.com"),
        tlv(PP2_TYPE.NOOP, []),
        SSL_TLV,
        tlv(PP2_TYPE.UNIQUE_ID, BIG_VALUE),
        tlv(0xe0, [0xff]),
      ),
    ),
    v2Header("PROXY", "INET", INET_SOURCE, INET_DESTINATION, [
      t(PP2_TYPE.ALPN, "http/1.1"),
      t(PP2_TYPE.AUTHORITY, "example.com"),
      t(PP2_TYPE.NOOP, []),
      { type: PP2_TYPE.SSL, value: SSL_TLV.subarray(3) },
      t(PP2_TYPE.UNIQUE_ID, BIG_VALUE),
      t(0xe0, [0xff]),
    ]),
  ),
  valid(
    "PROXY INET with a correct CRC32C",
    withCrc(0x11, INET_BLOCK),
    v2Header("PROXY", "INET", INET_SOURCE, INET_DESTINATION, [
      { type: PP2_TYPE.CRC32C, value: withCrc(0x11, INET_BLOCK).subarray(31, 35) },
    ]),
  ),
  valid(
    "PROXY INET6 with a correct CRC32C between other TLVs",
    withCrc(0x21, INET6_BLOCK, tlv(PP2_TYPE.ALPN, "h2"), tlv(PP2_TYPE.AUTHORITY, "a.example")),
    v2Header("PROXY", "INET6", address("2001:db8::1", 1234), address("::ffff:10.0.0.1", 80), [
      t(PP2_TYPE.ALPN, "h2"),
      {
        type: PP2_TYPE.CRC32C,
        value: withCrc(0x21, INET6_BLOCK, tlv(PP2_TYPE.ALPN, "h2"), tlv(PP2_TYPE.AUTHORITY, "a.example"))
          .subarray(16 + 36 + 5 + 3, 16 + 36 + 5 + 7),
      },
      t(PP2_TYPE.AUTHORITY, "a.example"),
    ]),
  ),
  valid(
    "a header exactly at the cap",
    v2(0x21, 0x11, concat(INET_BLOCK, tlv(0xe0, new Uint8Array(64 - 16 - 12 - 3)))),
    v2Header("PROXY", "INET", INET_SOURCE, INET_DESTINATION, [t(0xe0, new Uint8Array(64 - 16 - 12 - 3))]),
    HTTP,
    { maxBytes: 64 },
  ),
  valid(
    "the largest header the format allows, when the cap allows it",
    V2_MAX,
    v2Header("PROXY", "INET", INET_SOURCE, INET_DESTINATION, [t(0xe1, new Uint8Array(65535 - 12 - 3))]),
    HTTP,
    { maxBytes: 16 + 65535 },
  ),

  incomplete("the fixed part only", v2(0x21, 0x11, INET_BLOCK).subarray(0, 16)),
  incomplete("one byte short", v2(0x21, 0x11, INET_BLOCK).subarray(0, 27)),

  invalid("version 1", v2(0x11, 0x11, INET_BLOCK), "proxy-protocol-invalid"),
  invalid("version 3", v2(0x31, 0x11, INET_BLOCK), "proxy-protocol-invalid"),
  invalid("version 0", v2(0x01, 0x11, INET_BLOCK), "proxy-protocol-invalid"),
  invalid("command 2", v2(0x22, 0x11, INET_BLOCK), "proxy-protocol-invalid"),
  invalid("command 15", v2(0x2f, 0x11, INET_BLOCK), "proxy-protocol-invalid"),
  invalid("family 4", v2(0x21, 0x41, INET_BLOCK), "proxy-protocol-invalid"),
  invalid("family 4 with LOCAL", v2(0x20, 0x41), "proxy-protocol-invalid"),
  invalid("INET with an unspecified protocol", v2(0x21, 0x10, INET_BLOCK), "proxy-protocol-invalid"),
  invalid("UNSPEC family with STREAM", v2(0x21, 0x01), "proxy-protocol-invalid"),
  invalid("protocol 3", v2(0x21, 0x13, INET_BLOCK), "proxy-protocol-invalid"),
  invalid("UDP over IPv4", v2(0x21, 0x12, INET_BLOCK), "proxy-protocol-unsupported"),
  invalid("UDP over IPv6", v2(0x21, 0x22, INET6_BLOCK), "proxy-protocol-unsupported"),
  invalid("unix datagram", v2(0x21, 0x32, new Uint8Array(216)), "proxy-protocol-unsupported"),
  invalid("INET block of 11 bytes", v2(0x21, 0x11, INET_BLOCK.slice(0, 11)), "proxy-protocol-invalid"),
  invalid("INET6 block of 35 bytes", v2(0x21, 0x21, INET6_BLOCK.slice(0, 35)), "proxy-protocol-invalid"),
  invalid("UNIX block of 215 bytes", v2(0x21, 0x31, new Uint8Array(215)), "proxy-protocol-invalid"),
  invalid("INET block announced as empty", v2(0x21, 0x11, [], 0), "proxy-protocol-invalid"),
  invalid(
    "TLV overrunning the header",
    v2(0x21, 0x11, concat(INET_BLOCK, [PP2_TYPE.ALPN, 0, 10], "h2")),
    "proxy-protocol-invalid",
  ),
  invalid("truncated TLV header", v2(0x21, 0x11, concat(INET_BLOCK, [PP2_TYPE.NOOP, 0])), "proxy-protocol-invalid"),
  invalid("one stray byte after the addresses", v2(0x21, 0x11, concat(INET_BLOCK, [0])), "proxy-protocol-invalid"),
  invalid("wrong CRC32C", withCrc(0x11, INET_BLOCK, [], [], 1), "proxy-protocol-checksum"),
  invalid(
    "wrong CRC32C (a TLV changed after the checksum)",
    (() => {
      const wire = withCrc(0x11, INET_BLOCK, [], tlv(PP2_TYPE.ALPN, "h2"));
      wire[wire.length - 1] ^= 0x20;
      return wire;
    })(),
    "proxy-protocol-checksum",
  ),
  invalid(
    "CRC32C TLV of 3 bytes",
    v2(0x21, 0x11, concat(INET_BLOCK, tlv(PP2_TYPE.CRC32C, [0, 0, 0]))),
    "proxy-protocol-invalid",
  ),
  invalid(
    "two CRC32C TLVs",
    v2(0x21, 0x11, concat(INET_BLOCK, tlv(PP2_TYPE.CRC32C, [0, 0, 0, 0]), tlv(PP2_TYPE.CRC32C, [0, 0, 0, 0]))),
    "proxy-protocol-invalid",
  ),
  invalid("length above the default cap", concat(v2(0x21, 0x11, [], 4096 - 16 + 1), HTTP), "proxy-protocol-too-long"),
  invalid(
    "the largest length with the default cap",
    concat(v2(0x21, 0x11, [], 65535), HTTP),
    "proxy-protocol-too-long",
  ),
  invalid(
    "one byte above a small cap",
    v2(0x21, 0x11, concat(INET_BLOCK, [0xe0, 0, 1, 0])),
    "proxy-protocol-too-long",
    {
      maxBytes: 31,
    },
  ),
  invalid(
    "signature wrong at its last byte",
    concat(SIG.slice(0, 11), "\r", [0x21, 0x11, 0, 0]),
    "proxy-protocol-signature",
  ),
  invalid("HTTP after empty lines", `\r\n\r\n${HTTP}`, "proxy-protocol-signature"),
  invalid("a v1 line after the first v2 bytes", "\r\nPROXY UNKNOWN\r\n", "proxy-protocol-signature"),
];

Deno.test("ProxyProtocolParser reads v1 headers the same however the bytes are split", async (tc) => {
  for (const row of V1_ROWS) {
    await tc.step(row.name, () => assertSplits(row.wire, feedProxy(row.options), row.expect));
  }
});

Deno.test("ProxyProtocolParser reads v2 headers the same however the bytes are split", async (tc) => {
  for (const row of V2_ROWS) {
    await tc.step(row.name, () => assertSplits(row.wire, feedProxy(row.options), row.expect));
  }
});

Deno.test("the v1 fixtures at the limit are exactly 107 and 108 bytes", () => {
  assert.equal(V1_UNKNOWN_MAX.length, 107);
  assert.equal(V1_TCP6_MAX.length, 107);
  assert.equal(V1_TCP6_108.length, 108);
  assert.equal(V2_MAX.length, 16 + 65535);
});

// ---------------------------------------------------------------------------
// Failing early

/** The index of the byte whose push throws, feeding one byte at a time (-1: none did). */
function failingByte(wire: Uint8Array): number {
  const parser = new ProxyProtocolParser();
  for (let i = 0; i < wire.length; i++) {
    try {
      parser.push(wire.subarray(i, i + 1));
    } catch (error) {
      assert.ok(error instanceof ProxyProtocolError, `byte ${i}: ${error}`);
      return i;
    }
  }
  return -1;
}

Deno.test("ProxyProtocolParser fails on the first byte that cannot start a valid header", () => {
  const cases: Array<[string, Uint8Array, number]> = [
    ["plain HTTP", bytes(HTTP), 0],
    ["lower-case proxy", bytes("proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), 0],
    ["HTTP after an empty line", bytes(`\r\n${HTTP}`), 2],
    ["PROXYX", bytes("PROXYX"), 5],
    ["unknown protocol word", bytes("PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n"), 6],
    ["TCP5", bytes("PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n"), 9],
    ["HTTP right after a TCP4 address", bytes(`PROXY TCP4 1.2.3.4 ${HTTP}`), 19],
    ["IPv6 address on a TCP4 line", bytes("PROXY TCP4 ::1 ::1 1 2\r\n"), 11],
    ["bare LF", bytes(`PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n${HTTP}`), 30],
    ["a line that never ends", bytes(`PROXY UNKNOWN ${"x".repeat(500)}`), 106],
    ["v2 version 1", v2(0x11, 0x11, INET_BLOCK), 12],
    ["v2 command 2", v2(0x22, 0x11, INET_BLOCK), 12],
    ["v2 family 4", v2(0x21, 0x41, INET_BLOCK), 13],
    ["v2 UDP", v2(0x21, 0x12, INET_BLOCK), 13],
    ["v2 length above the cap: no waiting for the block", concat(v2(0x21, 0x11, [], 65535), HTTP), 15],
    ["v2 block too short for its family", v2(0x21, 0x21, INET6_BLOCK.slice(0, 20)), 15],
  ];
  for (const [name, wire, at] of cases) assert.equal(failingByte(wire), at, name);
});

Deno.test("ProxyProtocolParser rejects plain HTTP in the first push, whatever its size", () => {
  for (const wire of ["G", "GE", "GET / HTTP/1.1", HTTP]) {
    assert.throws(() => new ProxyProtocolParser().push(bytes(wire)), { code: "proxy-protocol-signature" });
  }
});

// ---------------------------------------------------------------------------
// Parser contract

Deno.test("ProxyProtocolParser: an error is sticky, a push after completion is a bug, empty pushes wait", () => {
  const bad = new ProxyProtocolParser();
  let first: unknown;
  try {
    bad.push(bytes("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"));
  } catch (error) {
    first = error;
  }
  assert.ok(first instanceof ProxyProtocolError);
  assert.equal(first.code, "proxy-protocol-invalid");
  assert.equal(first.status, 400);
  assert.throws(() => bad.push(bytes("\r\n")), (e: unknown) => e === first);

  const parser = new ProxyProtocolParser();
  assert.equal(parser.push(new Uint8Array(0)), null);
  assert.equal(parser.started, false);
  assert.equal(parser.push(bytes("PROXY UNKNOWN\r")), null);
  assert.equal(parser.started, true);
  const done = parser.push(bytes("\nGET"));
  assert.ok(done !== null);
  assert.equal(text(done.rest), "GET");
  assert.throws(
    () => parser.push(bytes("x")),
    (e: unknown) => e instanceof Error && !(e instanceof ProxyProtocolError),
  );
});

Deno.test("ProxyProtocolParser: the header and rest are copies, not views of the pushed chunk", () => {
  const chunk = concat(v2(0x21, 0x11, concat(INET_BLOCK, tlv(PP2_TYPE.ALPN, "h2"))), "GET");
  const result = new ProxyProtocolParser().push(chunk)!;
  chunk.fill(0);
  assert.deepEqual(result.header.tlvs, [t(PP2_TYPE.ALPN, "h2")]);
  assert.equal(text(result.rest), "GET");
});

Deno.test("ProxyProtocolParser: maxBytes must be from 16 to 65551", () => {
  for (const maxBytes of [15, 65552, 100.5, NaN, -1]) {
    assert.throws(() => new ProxyProtocolParser({ maxBytes }), RangeError, String(maxBytes));
  }
  new ProxyProtocolParser({ maxBytes: 16 });
  new ProxyProtocolParser({ maxBytes: 65551 });
});

Deno.test("crc32c: the standard check value, chaining, and agreement with a bit-by-bit reference", () => {
  assert.equal(crc32c(bytes("123456789")), 0xe3069283);
  assert.equal(crc32c(new Uint8Array(0)), 0);
  assert.equal(crc32c(new Uint8Array(32)), 0x8a9136aa); // RFC 3720 B.4: 32 bytes of zeros
  assert.equal(crc32c(new Uint8Array(32).fill(0xff)), 0x62a8ab43); // RFC 3720 B.4: 32 bytes of 0xff
  const rng = mulberry32(9);
  for (let n = 0; n < 200; n++) {
    const data = Uint8Array.from({ length: n }, () => Math.floor(rng() * 256));
    const cut = Math.floor(rng() * (n + 1));
    assert.equal(crc32c(data), crc32cReference(data));
    assert.equal(crc32c(data.subarray(cut), crc32c(data.subarray(0, cut))), crc32c(data));
  }
});

// ---------------------------------------------------------------------------
// Fuzz

type Rng = () => number;

function int(rng: Rng, n: number): number {
  return Math.floor(rng() * n);
}

/** Valid headers the mutations start from. */
const FUZZ_SEEDS: Uint8Array[] = [...V1_ROWS, ...V2_ROWS]
  .filter((row) => "value" in row.expect && row.expect.value.complete && row.wire.length < 1000)
  .map((row) => concat(row.wire));

const TOKENS = [
  "\r\n",
  "\r",
  "\n",
  " ",
  "  ",
  "0",
  "00",
  "1",
  "255",
  "256",
  "65535",
  "65536",
  ".",
  ":",
  "::",
  ":::",
  "ffff",
  "1.2.3.4",
  "::ffff:1.2.3.4",
  "TCP4 ",
  "TCP6 ",
  "UNKNOWN",
  "PROXY ",
  SIG,
  "%",
  "\x00",
  "\xff",
];

function randomBytes(rng: Rng, n: number): Uint8Array {
  return Uint8Array.from({ length: n }, () => int(rng, 256));
}

/** One to four random edits: byte changes, token inserts, deletions, duplications, truncation, v2 length. */
function mutate(rng: Rng, input: Uint8Array): Uint8Array {
  let b: Uint8Array = input.slice();
  for (let edits = 1 + int(rng, 4); edits > 0; edits--) {
    const at = int(rng, b.length + 1);
    switch (int(rng, 8)) {
      case 0:
        if (at < b.length) b[at] = int(rng, 256);
        break;
      case 1:
        if (at < b.length) b[at] ^= 1 << int(rng, 8);
        break;
      case 2:
        b = concat(b.subarray(0, at), TOKENS[int(rng, TOKENS.length)], b.subarray(at));
        break;
      case 3:
        b = concat(b.subarray(0, at), b.subarray(Math.min(b.length, at + 1 + int(rng, 4))));
        break;
      case 4:
        b = concat(b.subarray(0, at), b.subarray(at, at + int(rng, 8)), b.subarray(at));
        break;
      case 5:
        b = b.slice(0, at);
        break;
      case 6:
        if (b.length >= 16 && b[0] === 0x0d) b.set(u16(int(rng, 4) === 0 ? int(rng, 65536) : int(rng, 300)), 14);
        break;
      default:
        if (b.length >= 14 && b[0] === 0x0d) b[12 + int(rng, 2)] = int(rng, 256);
        break;
    }
  }
  return b;
}

function generate(rng: Rng): Uint8Array {
  const kind = int(rng, 10);
  if (kind < 7) return mutate(rng, FUZZ_SEEDS[int(rng, FUZZ_SEEDS.length)]);
  const tail = randomBytes(rng, int(rng, 160));
  if (kind === 7) return concat("PROXY ", tail);
  if (kind === 8) return concat(SIG, tail);
  return tail;
}

type FuzzOutcome = { ok: true; value: Parsed } | { ok: false; code: string };

/** Feeds `input` in pieces of `sizes` through a scribbled scratch buffer; any error but ProxyProtocolError fails. */
function fuzzFeed(input: Uint8Array, sizes: readonly number[], options: ProxyProtocolOptions | undefined): FuzzOutcome {
  let largest = 1;
  for (const size of sizes) largest = Math.max(largest, size);
  const scratch = new Uint8Array(largest);
  function* pieces() {
    let at = 0;
    for (const size of sizes) {
      scratch.fill(0xee);
      scratch.set(input.subarray(at, at + size));
      at += size;
      yield scratch.subarray(0, size);
    }
  }
  try {
    return { ok: true, value: feedProxy(options)(pieces()) };
  } catch (error) {
    if (!(error instanceof ProxyProtocolError)) {
      throw new Error(`not a ProxyProtocolError for input ${toHex(input)} split ${sizes}: ${error}`, { cause: error });
    }
    return { ok: false, code: error.code };
  }
}

function toHex(data: Uint8Array): string {
  return Array.from(data, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** What every success must satisfy: rest is the input's tail, the header fits its limit, addresses are well formed. */
function checkSuccess(input: Uint8Array, value: Parsed, maxBytes: number): void {
  const where = `input ${toHex(input)}`;
  if (!value.complete) {
    // Incomplete only while the input is shorter than the longest header it could start.
    assert.ok(input.length < Math.max(107, maxBytes), `${where}: incomplete after ${input.length} bytes`);
    return;
  }
  const { header, rest } = value;
  const headerBytes = input.length - rest.length;
  assert.equal(rest, text(input.subarray(headerBytes)), `${where}: rest is not the input's tail`);
  assert.ok(headerBytes <= (header.version === 1 ? 107 : maxBytes), `${where}: header of ${headerBytes} bytes`);
  assert.equal(header.source === null, header.destination === null, where);
  for (const a of [header.source, header.destination]) {
    if (a === null) continue;
    assert.ok(Number.isInteger(a.port) && a.port >= 0 && a.port <= 65535, `${where}: port ${a.port}`);
    if (header.family === "TCP4" || header.family === "INET") {
      assert.match(a.hostname, /^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/);
    } else {
      assert.equal(a.hostname, a.hostname.toLowerCase(), where);
      new URL(`http://[${a.hostname}]/`); // throws on a malformed IPv6 address
    }
  }
}

Deno.test("fuzz: mutated headers and random bytes parse or throw ProxyProtocolError, the same for any split", () => {
  const rng = mulberry32(0x9e3779b9);
  const counts = { complete: 0, incomplete: 0, rejected: 0 };
  for (let i = 0; i < 20_000; i++) {
    const input = generate(rng);
    const maxBytes = int(rng, 8) === 0 ? 16 + int(rng, 65536) : 4096;
    const options = maxBytes === 4096 ? undefined : { maxBytes };
    const whole = fuzzFeed(input, [input.length], options);
    const splits = [randomSizes(input.length, 1 + int(rng, 1 << 30))];
    if (i % 8 === 0) splits.push(Array.from({ length: input.length }, () => 1));
    for (const sizes of splits) {
      assert.deepStrictEqual(fuzzFeed(input, sizes, options), whole, `input ${toHex(input)} split ${sizes}`);
    }
    if (whole.ok) {
      checkSuccess(input, whole.value, maxBytes);
      counts[whole.value.complete ? "complete" : "incomplete"]++;
    } else counts.rejected++;
  }
  // The generator must reach every outcome, or the test proves little.
  assert.ok(counts.complete > 1000 && counts.incomplete > 200 && counts.rejected > 5000, JSON.stringify(counts));
});

// ---------------------------------------------------------------------------
// readProxyHeader

/** A connection serving scripted reads, then EOF; records how many reads were made. */
function scripted(chunks: Part[]) {
  const conn = {
    reads: 0,
    read(p: Uint8Array): Promise<number | null> {
      const chunk = conn.reads < chunks.length ? concat(chunks[conn.reads]) : null;
      conn.reads++;
      if (chunk === null) return Promise.resolve(null);
      assert.ok(chunk.length <= p.length);
      p.set(chunk);
      return Promise.resolve(chunk.length);
    },
  };
  return conn;
}

/** A connection whose reads after `chunks` hang until `release()` ends them with EOF. */
function hanging(chunks: Part[] = []) {
  const inner = scripted(chunks);
  const waiting: Array<(n: number | null) => void> = [];
  return {
    read(p: Uint8Array): Promise<number | null> {
      if (inner.reads < chunks.length) return inner.read(p);
      return new Promise((resolve) => waiting.push(resolve));
    },
    release(): void {
      for (const resolve of waiting.splice(0)) resolve(null);
    },
  };
}

async function rejectsWith(promise: Promise<unknown>, code: ProxyProtocolErrorCode): Promise<void> {
  await assert.rejects(promise, (e: unknown) => e instanceof ProxyProtocolError && e.code === code);
}

Deno.test("readProxyHeader returns the header and exactly the bytes read past it", async () => {
  const conn = scripted(["PROXY TCP4 192.0.2.1 198.51.100.2 54321 443\r", "\nGET / HT", "TP/1.1\r\n\r\n"]);
  const { header, rest } = await readProxyHeader(conn, 1000);
  assert.deepEqual(header, v1Header("TCP4", INET_SOURCE, INET_DESTINATION));
  assert.equal(text(rest), "GET / HT");
  assert.equal(conn.reads, 2, "no read past the one that completed the header");
});

Deno.test("readProxyHeader reads a v2 header spread over several reads", async () => {
  const wire = concat(withCrc(0x21, INET6_BLOCK, tlv(PP2_TYPE.AUTHORITY, "example.com")), [0x16, 0x03, 0x01]);
  const conn = scripted([wire.subarray(0, 5), wire.subarray(5, 15), wire.subarray(15, 60), wire.subarray(60)]);
  const { header, rest } = await readProxyHeader(conn, 0);
  assert.equal(header.command, "PROXY");
  assert.deepEqual(header.source, address("2001:db8::1", 1234));
  assert.deepEqual(rest, Uint8Array.of(0x16, 0x03, 0x01));
});

Deno.test("readProxyHeader rejects EOF mid-header, EOF before any byte, and invalid bytes", async () => {
  await rejectsWith(readProxyHeader(scripted(["PROXY TCP4 192.0.", "2.1"]), 1000), "proxy-protocol-eof");
  await rejectsWith(
    readProxyHeader(scripted([v2(0x21, 0x11, INET_BLOCK).subarray(0, 20)]), 1000),
    "proxy-protocol-eof",
  );
  await rejectsWith(readProxyHeader(scripted([]), 1000), "proxy-protocol-closed");
  const conn = scripted([HTTP, HTTP]);
  await rejectsWith(readProxyHeader(conn, 1000), "proxy-protocol-signature");
  assert.equal(conn.reads, 1);
  await rejectsWith(readProxyHeader(scripted([concat(v2(0x21, 0x11, [], 5000))]), 1000), "proxy-protocol-too-long");
  await rejectsWith(
    readProxyHeader(scripted([concat(v2(0x21, 0x11, [], 5000))]), 1000, { maxBytes: 65551 }),
    "proxy-protocol-eof",
  );
});

Deno.test("readProxyHeader rejects when the deadline passes, with or without partial bytes", async () => {
  for (const chunks of [[], ["PROXY TCP4 1.2.3.4"]]) {
    const conn = hanging(chunks);
    const started = performance.now();
    try {
      await rejectsWith(readProxyHeader(conn, 30), "proxy-protocol-timeout");
      assert.ok(performance.now() - started >= 25, "not before the deadline");
    } finally {
      conn.release(); // the read left in flight ends, as a close would end it
    }
  }
});

Deno.test("readProxyHeader passes read errors through unchanged", async () => {
  const reset = new Deno.errors.ConnectionReset("reset by peer");
  const conn = { read: () => Promise.reject(reset) };
  await assert.rejects(readProxyHeader(conn, 1000), (e: unknown) => e === reset);
});

Deno.test("readProxyHeader over a loopback TCP connection", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const client = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
  const server = await listener.accept();
  try {
    const header = v2(0x21, 0x11, concat(INET_BLOCK, tlv(PP2_TYPE.ALPN, "http/1.1")));
    await client.write(header.subarray(0, 10));
    const reading = readProxyHeader(server, 2000);
    await client.write(concat(header.subarray(10), HTTP));
    await client.closeWrite(); // the reads below end at EOF, whatever a bug may have lost
    const { header: parsed, rest } = await reading;
    assert.deepEqual(parsed, v2Header("PROXY", "INET", INET_SOURCE, INET_DESTINATION, [t(PP2_TYPE.ALPN, "http/1.1")]));
    // The request may arrive with the header's last bytes or in a later read: what was read past it is its start.
    const more = new Uint8Array(HTTP.length);
    let got = text(rest);
    for (let n = await server.read(more); n !== null; n = await server.read(more)) got += text(more.subarray(0, n));
    assert.equal(got, HTTP);
  } finally {
    client.close();
    server.close();
    listener.close();
  }
});
