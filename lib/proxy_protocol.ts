/**
 * Strict, incremental parser for the HAProxy PROXY protocol header, versions 1
 * (one text line) and 2 (binary), which a load balancer sends at the start of a
 * connection to pass on the client's addresses (HAProxy doc/proxy-protocol.txt).
 * Pure, except {@link readProxyHeader}, which reads it from a connection.
 *
 * Every check is made as soon as the bytes it needs have arrived, in byte
 * order: a connection that does not start with a PROXY header (a plain `GET`)
 * fails on its first byte, a v2 length above the cap fails on its 16th, and a
 * given input gives the same result however it is cut into chunks.
 *
 * Where the spec leaves a choice, this parser takes the strict one:
 * - v1: single spaces, CRLF only (a bare CR or LF fails), at most 107 bytes,
 *   addresses of the announced family (IPv4 dotted quads without leading
 *   zeros; IPv6 in RFC 4291 text form, no zone), ports 0-65535 without leading
 *   zeros. After `UNKNOWN` anything may follow up to the CRLF (a space first).
 * - v2: version 2 and command LOCAL or PROXY only; only the assigned
 *   family/protocol bytes. Datagram families (UDP, unix datagram) are refused
 *   for PROXY (`proxy-protocol-unsupported`): this proxy only accepts streams,
 *   and a UDP source cannot have sent a TCP connection. LOCAL ignores the whole
 *   block (family included, as the spec says), so LOCAL with a datagram family
 *   is accepted. For PROXY the block must hold the family's addresses
 *   (UNSPEC: none); the rest must be whole TLVs. A CRC32C TLV must be 4 bytes,
 *   appear at most once, and match. The header size is capped (option `maxBytes`).
 *
 * @module
 */
import { CR, LF } from "./ascii.ts";
import { ProxyError } from "./errors.ts";

/** A source or destination address carried by the header. */
export interface ProxyAddress {
  /** IPv4 dotted quad, or IPv6 in compressed lower-case form (as Deno reports hostnames). */
  hostname: string;
  /** TCP port, 0-65535. */
  port: number;
}

/**
 * The address family: `TCP4`, `TCP6` or `UNKNOWN` for version 1; `INET`,
 * `INET6`, `UNIX` or `UNSPEC` for version 2.
 */
export type ProxyFamily = "TCP4" | "TCP6" | "UNKNOWN" | "INET" | "INET6" | "UNIX" | "UNSPEC";

/** One v2 type-length-value entry, as received. */
export interface ProxyTlv {
  /** The type byte (see {@link PP2_TYPE}). */
  type: number;
  /** The value bytes (a copy). */
  value: Uint8Array;
}

/** A parsed PROXY protocol header. */
export interface ProxyHeader {
  /** The protocol version: 1 (text) or 2 (binary). */
  version: 1 | 2;
  /** `LOCAL` (v2 only): the connection comes from the balancer itself, e.g. a health check. */
  command: "PROXY" | "LOCAL";
  /** The address family (for LOCAL: the one announced, though the spec says to ignore it). */
  family: ProxyFamily;
  /** The client's address; null for UNKNOWN, LOCAL, UNSPEC and UNIX: use the socket's addresses. */
  source: ProxyAddress | null;
  /** The address the client connected to; null exactly when `source` is. */
  destination: ProxyAddress | null;
  /** v2 TLVs after the addresses, in order (empty for v1 and LOCAL). */
  tlvs: ProxyTlv[];
}

/** A complete header and the bytes that followed it in the same read. */
export interface ProxyHeaderResult {
  /** The parsed header. */
  header: ProxyHeader;
  /** The bytes after the header (the start of the proxied stream): never lost, a copy. */
  rest: Uint8Array;
}

/** Options for {@link ProxyProtocolParser} and {@link readProxyHeader}. */
export interface ProxyProtocolOptions {
  /**
   * Largest v2 header accepted, its 16 fixed bytes included (16 to 65551;
   * default {@link DEFAULT_PROXY_MAX_BYTES}). A v1 line is capped at 107 bytes by the spec.
   */
  maxBytes?: number;
}

/** Default cap on a v2 header: room for addresses and ordinary TLVs (SSL, ALPN, authority). */
export const DEFAULT_PROXY_MAX_BYTES = 4096;
/** The largest v2 header the format can express: 16 fixed bytes and a 16-bit length. */
export const PROXY_V2_MAX_BYTES: number = 16 + 65535;
/** The longest v1 line, CRLF included (the spec's worst case). */
export const PROXY_V1_MAX_BYTES = 107;

/** The v2 TLV types the spec assigns. */
export const PP2_TYPE: Readonly<
  Record<"ALPN" | "AUTHORITY" | "CRC32C" | "NOOP" | "UNIQUE_ID" | "SSL" | "NETNS", number>
> = Object.freeze({ ALPN: 0x01, AUTHORITY: 0x02, CRC32C: 0x03, NOOP: 0x04, UNIQUE_ID: 0x05, SSL: 0x20, NETNS: 0x30 });

/**
 * Stable codes of {@link ProxyProtocolError}:
 * - `proxy-protocol-signature`: the stream does not start with a PROXY header (plain HTTP, TLS, ...).
 * - `proxy-protocol-invalid`: a PROXY header that breaks the spec.
 * - `proxy-protocol-too-long`: a v1 line over 107 bytes, or a v2 header over `maxBytes`.
 * - `proxy-protocol-unsupported`: a valid v2 header for a datagram (UDP) connection.
 * - `proxy-protocol-checksum`: a v2 CRC32C TLV that does not match.
 * - `proxy-protocol-eof` / `proxy-protocol-closed`: the peer closed mid-header / before any byte.
 * - `proxy-protocol-timeout`: no complete header within the time allowed.
 */
export type ProxyProtocolErrorCode =
  | "proxy-protocol-signature"
  | "proxy-protocol-invalid"
  | "proxy-protocol-too-long"
  | "proxy-protocol-unsupported"
  | "proxy-protocol-checksum"
  | "proxy-protocol-eof"
  | "proxy-protocol-closed"
  | "proxy-protocol-timeout";

/**
 * A missing, malformed or refused PROXY header. The spec wants the connection
 * dropped: close it without answering (the status is only there for the
 * {@link ProxyError} contract; messages never echo the received bytes).
 */
export class ProxyProtocolError extends ProxyError {
  /** Which of the {@link ProxyProtocolErrorCode} failures this is. */
  declare readonly code: ProxyProtocolErrorCode;

  /** Creates an error with a stable code. */
  constructor(message: string, code: ProxyProtocolErrorCode) {
    super(message, { status: 400, code });
  }
}

const LETTER_T = 0x54;
const LETTER_U = 0x55;
const DIGIT_4 = 0x34;
const DIGIT_6 = 0x36;

const V1_PREFIX = ascii("PROXY ");
/** The protocol words after the prefix (index 3 of the TCP word is `4` or `6`); a space follows. */
const V1_TCP_WORD = ascii("TCP4 ");
const V1_UNKNOWN_WORD = ascii("UNKNOWN ");
const V2_SIGNATURE = Uint8Array.of(0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a);
const V2_FIXED_BYTES = 16;
const V2_COMMAND_LOCAL = 0x0;
const V2_COMMAND_PROXY = 0x1;
const TLV_HEADER_BYTES = 3;
const CRC32C_BYTES = 4;
/** Bytes asked of the connection per read by {@link readProxyHeader}. */
const READ_BYTES = 4096;

interface V2Family {
  name: "INET" | "INET6" | "UNIX" | "UNSPEC";
  /** Size of the address block for PROXY. */
  addressBytes: number;
  datagram: boolean;
}

/** The family/protocol bytes the spec assigns (high nibble family, low nibble protocol). */
const V2_FAMILIES: ReadonlyMap<number, V2Family> = new Map([
  [0x00, { name: "UNSPEC", addressBytes: 0, datagram: false }],
  [0x11, { name: "INET", addressBytes: 12, datagram: false }],
  [0x12, { name: "INET", addressBytes: 12, datagram: true }],
  [0x21, { name: "INET6", addressBytes: 36, datagram: false }],
  [0x22, { name: "INET6", addressBytes: 36, datagram: true }],
  [0x31, { name: "UNIX", addressBytes: 216, datagram: false }],
  [0x32, { name: "UNIX", addressBytes: 216, datagram: true }],
]);

function ascii(s: string): Uint8Array {
  return Uint8Array.from(s, (c) => c.charCodeAt(0));
}

function table(chars: string): Uint8Array {
  const t = new Uint8Array(256);
  for (let i = 0; i < chars.length; i++) t[chars.charCodeAt(i)] = 1;
  return t;
}

/** Bytes a TCP4 line may hold after its protocol word (space included). */
const V1_TCP4_BYTES = table("0123456789. ");
/** Bytes a TCP6 line may hold after its protocol word (hex digits, colons, an embedded IPv4). */
const V1_TCP6_BYTES = table("0123456789abcdefABCDEF:. ");

const OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])";
const IPV4_TEXT = new RegExp(`^${OCTET}(?:\\.${OCTET}){3}$`);
const HEX_GROUP = /^[0-9A-Fa-f]{1,4}$/;
const PORT_TEXT = /^(?:0|[1-9][0-9]{0,4})$/;

function invalid(message: string): ProxyProtocolError {
  return new ProxyProtocolError(message, "proxy-protocol-invalid");
}

function notProxy(version: 1 | 2): ProxyProtocolError {
  return new ProxyProtocolError(
    `Not a PROXY protocol header (the v${version} signature does not match)`,
    "proxy-protocol-signature",
  );
}

function v1TooLong(): ProxyProtocolError {
  return new ProxyProtocolError(`PROXY v1 line longer than ${PROXY_V1_MAX_BYTES} bytes`, "proxy-protocol-too-long");
}

/**
 * Incremental parser for one PROXY header (either version, told apart by the
 * first byte). Create one per connection.
 */
export class ProxyProtocolParser {
  readonly #maxBytes: number;
  #buf = new Uint8Array(PROXY_V1_MAX_BYTES);
  #length = 0;
  /** Bytes that passed the checks made byte by byte. */
  #checked = 0;
  /** v2: the whole header's size, once its length field has arrived. */
  #total = 0;
  #error: ProxyProtocolError | null = null;
  #done = false;

  /** Creates a parser; `maxBytes` caps a v2 header (see {@link ProxyProtocolOptions}). */
  constructor(options: ProxyProtocolOptions = {}) {
    const max = options.maxBytes ?? DEFAULT_PROXY_MAX_BYTES;
    if (!Number.isInteger(max) || max < V2_FIXED_BYTES || max > PROXY_V2_MAX_BYTES) {
      throw new RangeError(`maxBytes must be an integer from ${V2_FIXED_BYTES} to ${PROXY_V2_MAX_BYTES}`);
    }
    this.#maxBytes = max;
  }

  /** Whether any byte has been received. */
  get started(): boolean {
    return this.#length > 0;
  }

  /**
   * Feeds the next bytes (copied: the chunk may be reused afterwards). Returns
   * null while the header is incomplete; then the header and the chunk's bytes
   * after it. After an error, every call throws that error again.
   *
   * @throws {ProxyProtocolError} as soon as the bytes so far cannot start a valid header.
   */
  push(chunk: Uint8Array): ProxyHeaderResult | null {
    if (this.#error !== null) throw this.#error;
    if (this.#done) throw new Error("ProxyProtocolParser.push() after the header was complete");
    try {
      return this.#push(chunk);
    } catch (error) {
      if (error instanceof ProxyProtocolError) this.#error = error;
      throw error;
    }
  }

  #push(chunk: Uint8Array): ProxyHeaderResult | null {
    let at = 0;
    while (at < chunk.length) {
      const take = Math.min(this.#room(), chunk.length - at);
      if (take === 0) throw new Error("ProxyProtocolParser: no progress (bug)");
      this.#buf.set(chunk.subarray(at, at + take), this.#length);
      this.#length += take;
      at += take;
      const end = this.#scan();
      if (end > 0) {
        const header = this.#buf[0] === CR ? parseV2(this.#buf, end) : parseV1(this.#buf, end);
        this.#done = true;
        // The bytes buffered past the header all came from this chunk: the last push stopped short of its end.
        return { header, rest: chunk.slice(at - (this.#length - end)) };
      }
    }
    return null;
  }

  /** How many more bytes to buffer before the next check (never past what the header can need). */
  #room(): number {
    if (this.#length === 0 || this.#buf[0] !== CR) return PROXY_V1_MAX_BYTES - this.#length;
    return (this.#checked < V2_FIXED_BYTES ? V2_FIXED_BYTES : this.#total) - this.#length;
  }

  /** Checks the new bytes; returns the header's size once it is complete, else 0. */
  #scan(): number {
    const first = this.#buf[0];
    if (first === V1_PREFIX[0]) return this.#scanV1();
    if (first === V2_SIGNATURE[0]) return this.#scanV2();
    throw new ProxyProtocolError("Not a PROXY protocol header", "proxy-protocol-signature");
  }

  #scanV1(): number {
    const b = this.#buf;
    const n = this.#length;
    let i = this.#checked;
    for (; i < n && i < V1_PREFIX.length; i++) if (b[i] !== V1_PREFIX[i]) throw notProxy(1);
    for (; i < n && i < PROXY_V1_MAX_BYTES; i++) {
      const c = b[i];
      if (c === LF) throw invalid("PROXY v1 line with a line feed not preceded by a carriage return");
      if (c === CR) {
        if (i + 1 === PROXY_V1_MAX_BYTES) throw v1TooLong();
        if (i + 1 === n) {
          this.#checked = i; // check this CR again with the byte after it
          return 0;
        }
        if (b[i + 1] !== LF) throw invalid("PROXY v1 line with a carriage return not followed by a line feed");
        return i + 2;
      }
      if (!v1ByteFits(b, i)) throw invalid("PROXY v1 line with an unexpected byte");
    }
    this.#checked = i;
    if (i === PROXY_V1_MAX_BYTES) throw v1TooLong();
    return 0;
  }

  #scanV2(): number {
    const b = this.#buf;
    const n = this.#length;
    let i = this.#checked;
    for (; i < n && i < V2_SIGNATURE.length; i++) if (b[i] !== V2_SIGNATURE[i]) throw notProxy(2);
    if (i === 12 && n > 12) {
      if (b[12] >> 4 !== 2) throw invalid("PROXY v2 header with a version other than 2");
      const command = b[12] & 0x0f;
      if (command !== V2_COMMAND_LOCAL && command !== V2_COMMAND_PROXY) {
        throw invalid("PROXY v2 header with an unassigned command");
      }
      i = 13;
    }
    if (i === 13 && n > 13) {
      const family = V2_FAMILIES.get(b[13]);
      if (family === undefined) throw invalid("PROXY v2 header with an unassigned family or protocol");
      if (family.datagram && (b[12] & 0x0f) === V2_COMMAND_PROXY) {
        throw new ProxyProtocolError("PROXY v2 header for a datagram connection", "proxy-protocol-unsupported");
      }
      i = 14;
    }
    if (i === 14 && n >= V2_FIXED_BYTES) {
      const length = b[14] << 8 | b[15];
      const total = V2_FIXED_BYTES + length;
      if (total > this.#maxBytes) {
        throw new ProxyProtocolError(`PROXY v2 header longer than ${this.#maxBytes} bytes`, "proxy-protocol-too-long");
      }
      if ((b[12] & 0x0f) === V2_COMMAND_PROXY && length < V2_FAMILIES.get(b[13])!.addressBytes) {
        throw invalid("PROXY v2 address block shorter than its family's addresses");
      }
      this.#total = total;
      if (total > b.length) {
        const grown = new Uint8Array(total);
        grown.set(b.subarray(0, n));
        this.#buf = grown;
      }
      i = V2_FIXED_BYTES;
    }
    this.#checked = i;
    return i === V2_FIXED_BYTES && n >= this.#total ? this.#total : 0;
  }
}

/** Whether byte `i` (past `PROXY `) of a v1 line fits the protocol word it starts with. */
function v1ByteFits(b: Uint8Array, i: number): boolean {
  const c = b[i];
  const k = i - V1_PREFIX.length;
  const first = b[V1_PREFIX.length];
  if (first === LETTER_T) {
    if (k < V1_TCP_WORD.length) return k === 3 ? c === DIGIT_4 || c === DIGIT_6 : c === V1_TCP_WORD[k];
    return (b[V1_PREFIX.length + 3] === DIGIT_4 ? V1_TCP4_BYTES : V1_TCP6_BYTES)[c] === 1;
  }
  if (first === LETTER_U) return k >= V1_UNKNOWN_WORD.length || c === V1_UNKNOWN_WORD[k];
  return false;
}

/** Parses a complete v1 line of `end` bytes (CRLF included); the byte checks have passed. */
function parseV1(b: Uint8Array, end: number): ProxyHeader {
  let line = "";
  for (let i = V1_PREFIX.length; i < end - 2; i++) line += String.fromCharCode(b[i]);
  if (line === "UNKNOWN" || line.startsWith("UNKNOWN ")) {
    return { version: 1, command: "PROXY", family: "UNKNOWN", source: null, destination: null, tlvs: [] };
  }
  const parts = line.split(" ");
  const family = parts[0];
  if (family !== "TCP4" && family !== "TCP6") throw invalid("PROXY v1 line with an unknown protocol");
  if (parts.length !== 5) throw invalid("PROXY v1 line without exactly four single-space separated fields");
  const address = family === "TCP4" ? ipv4Text : ipv6Text;
  return {
    version: 1,
    command: "PROXY",
    family,
    source: { hostname: address(parts[1]), port: portText(parts[3]) },
    destination: { hostname: address(parts[2]), port: portText(parts[4]) },
    tlvs: [],
  };
}

function ipv4Text(text: string): string {
  if (!IPV4_TEXT.test(text)) throw invalid("PROXY v1 TCP4 line with an invalid IPv4 address");
  return text;
}

function ipv6Text(text: string): string {
  const groups = ipv6Groups(text);
  if (groups === null) throw invalid("PROXY v1 TCP6 line with an invalid IPv6 address");
  return formatIPv6(groups);
}

function portText(text: string): number {
  const port = PORT_TEXT.test(text) ? Number(text) : -1;
  if (port < 0 || port > 65535) throw invalid("PROXY v1 line with an invalid port");
  return port;
}

/** The eight 16-bit groups of an IPv6 address in RFC 4291 §2.2 text form (no zone), or null. */
function ipv6Groups(text: string): number[] | null {
  const gap = text.indexOf("::");
  if (gap === -1) {
    const groups = groupsOf(text, true);
    return groups !== null && groups.length === 8 ? groups : null;
  }
  if (text.indexOf("::", gap + 1) !== -1) return null;
  const head = groupsOf(text.slice(0, gap), false);
  const tail = groupsOf(text.slice(gap + 2), true);
  if (head === null || tail === null || head.length + tail.length > 7) return null;
  return [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail];
}

/** Colon-separated hex groups (the last may be an embedded IPv4 address); null when malformed. */
function groupsOf(text: string, ipv4Last: boolean): number[] | null {
  if (text === "") return [];
  const pieces = text.split(":");
  const groups: number[] = [];
  for (let k = 0; k < pieces.length; k++) {
    const piece = pieces[k];
    if (HEX_GROUP.test(piece)) groups.push(parseInt(piece, 16));
    else if (ipv4Last && k === pieces.length - 1 && IPV4_TEXT.test(piece)) {
      const [a, b, c, d] = piece.split(".").map(Number);
      groups.push(a << 8 | b, c << 8 | d);
    } else return null;
  }
  return groups;
}

/**
 * RFC 5952 text: lower case, no leading zeros, the longest run of two or more
 * zero groups (the first of equal runs) as `::`; IPv4-mapped addresses as
 * `::ffff:a.b.c.d`. This is how Deno reports IPv6 hostnames.
 */
function formatIPv6(g: readonly number[]): string {
  if (g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0xffff) {
    return `::ffff:${g[6] >> 8}.${g[6] & 0xff}.${g[7] >> 8}.${g[7] & 0xff}`;
  }
  let best = -1;
  let bestLength = 1;
  for (let i = 0; i < 8;) {
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLength) {
      best = i;
      bestLength = j - i;
    }
    i = j === i ? i + 1 : j;
  }
  const hex = (groups: readonly number[]) => groups.map((x) => x.toString(16)).join(":");
  if (best === -1) return hex(g);
  return `${hex(g.slice(0, best))}::${hex(g.slice(best + bestLength))}`;
}

function u16(b: Uint8Array, at: number): number {
  return b[at] << 8 | b[at + 1];
}

function ipv4At(b: Uint8Array, at: number): string {
  return `${b[at]}.${b[at + 1]}.${b[at + 2]}.${b[at + 3]}`;
}

function ipv6At(b: Uint8Array, at: number): string {
  const groups: number[] = [];
  for (let k = 0; k < 8; k++) groups.push(u16(b, at + 2 * k));
  return formatIPv6(groups);
}

/** Parses a complete v2 header of `total` bytes; the fixed 16 bytes have been checked. */
function parseV2(b: Uint8Array, total: number): ProxyHeader {
  const family = V2_FAMILIES.get(b[13])!;
  if ((b[12] & 0x0f) === V2_COMMAND_LOCAL) {
    // The spec: the receiver uses the real connection endpoints and discards the block, family included.
    return { version: 2, command: "LOCAL", family: family.name, source: null, destination: null, tlvs: [] };
  }
  const at = V2_FIXED_BYTES;
  let source: ProxyAddress | null = null;
  let destination: ProxyAddress | null = null;
  if (family.name === "INET") {
    source = { hostname: ipv4At(b, at), port: u16(b, at + 8) };
    destination = { hostname: ipv4At(b, at + 4), port: u16(b, at + 10) };
  } else if (family.name === "INET6") {
    source = { hostname: ipv6At(b, at), port: u16(b, at + 32) };
    destination = { hostname: ipv6At(b, at + 16), port: u16(b, at + 34) };
  }
  const tlvs = parseTlvs(b, at + family.addressBytes, total);
  return { version: 2, command: "PROXY", family: family.name, source, destination, tlvs };
}

/** The TLVs in `b[from, total)`; verifies a CRC32C TLV against the whole header. */
function parseTlvs(b: Uint8Array, from: number, total: number): ProxyTlv[] {
  const tlvs: ProxyTlv[] = [];
  let crcAt = -1;
  for (let at = from; at < total;) {
    if (total - at < TLV_HEADER_BYTES) throw invalid("PROXY v2 header with a truncated TLV");
    const type = b[at];
    const start = at + TLV_HEADER_BYTES;
    const end = start + u16(b, at + 1);
    if (end > total) throw invalid("PROXY v2 TLV longer than the header");
    if (type === PP2_TYPE.CRC32C) {
      if (end - start !== CRC32C_BYTES) throw invalid("PROXY v2 CRC32C TLV not 4 bytes long");
      if (crcAt !== -1) throw invalid("PROXY v2 header with two CRC32C TLVs");
      crcAt = start;
    }
    tlvs.push({ type, value: b.slice(start, end) });
    at = end;
  }
  if (crcAt !== -1) {
    // Over the whole header with the checksum field zeroed (RFC 4960 Appendix B), sent big-endian.
    let crc = crc32c(b.subarray(0, crcAt));
    crc = crc32c(ZERO_CRC, crc);
    crc = crc32c(b.subarray(crcAt + CRC32C_BYTES, total), crc);
    const sent = (b[crcAt] << 24 | b[crcAt + 1] << 16 | b[crcAt + 2] << 8 | b[crcAt + 3]) >>> 0;
    if (crc !== sent) throw new ProxyProtocolError("PROXY v2 header with a wrong CRC32C", "proxy-protocol-checksum");
  }
  return tlvs;
}

const ZERO_CRC = new Uint8Array(CRC32C_BYTES);

const CRC32C_TABLE: Uint32Array = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/**
 * CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as an unsigned
 * number. Pass a previous result as `crc` to continue over more bytes:
 * `crc32c(b, crc32c(a))` equals the CRC of `a` followed by `b`.
 */
export function crc32c(data: Uint8Array, crc = 0): number {
  let c = ~crc;
  for (let i = 0; i < data.length; i++) c = CRC32C_TABLE[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

/**
 * Reads one PROXY header from `conn`: reads until the header is complete and
 * returns it with the bytes read past it (the start of the proxied stream).
 * A `timeoutMs` of 0 or less (or Infinity) sets no deadline.
 *
 * On rejection the connection must be closed: after a timeout a read may still
 * be in flight. Errors from `conn.read()` itself are passed through unchanged.
 *
 * @throws {ProxyProtocolError} `proxy-protocol-timeout` when the header is not complete after `timeoutMs`,
 * `proxy-protocol-closed` / `proxy-protocol-eof` when the peer closes before any byte / mid-header,
 * or the parser's error for bytes that are not a valid header.
 */
export async function readProxyHeader(
  conn: { read(p: Uint8Array): Promise<number | null> },
  timeoutMs: number,
  options?: ProxyProtocolOptions,
): Promise<ProxyHeaderResult> {
  const parser = new ProxyProtocolParser(options);
  const buf = new Uint8Array(READ_BYTES);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    if (timeoutMs > 0 && Number.isFinite(timeoutMs)) {
      timer = setTimeout(
        () => reject(new ProxyProtocolError(`No PROXY header within ${timeoutMs} ms`, "proxy-protocol-timeout")),
        timeoutMs,
      );
    }
  });
  try {
    while (true) {
      const n = await Promise.race([conn.read(buf), expired]);
      if (n === null) {
        throw parser.started
          ? new ProxyProtocolError("Connection closed before the PROXY header was complete", "proxy-protocol-eof")
          : new ProxyProtocolError("Connection closed before a PROXY header", "proxy-protocol-closed");
      }
      const result = parser.push(buf.subarray(0, n));
      if (result !== null) return result;
    }
  } finally {
    clearTimeout(timer);
  }
}
