/**
 * IP addresses and CIDR ranges: strict parsing of IPv4 and IPv6 text, and
 * matching an address against a list of ranges. An IPv4-mapped
 * (`::ffff:a.b.c.d`) or IPv4-compatible (`::a.b.c.d`) IPv6 address is the IPv4
 * address it carries, so one rule covers both forms. Pure: no I/O.
 *
 * @module
 */

/** A parsed address: 4 bytes (IPv4) or 16 (IPv6). */
export type IpBytes = Uint8Array;

/** A range: the network's bytes and the prefix length in bits. */
export interface Cidr {
  readonly bytes: IpBytes;
  readonly prefix: number;
  /** The range as given (for messages and logs). */
  readonly text: string;
}

const DOTTED_OCTET = /^(?:0|[1-9][0-9]{0,2})$/;

/** Parses dotted-quad IPv4 (no leading zeros, each part 0-255); null when it is not one. */
export function parseIPv4(text: string): IpBytes | null {
  const parts = text.split(".");
  if (parts.length !== 4) return null;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    if (!DOTTED_OCTET.test(parts[i])) return null;
    const n = Number(parts[i]);
    if (n > 255) return null;
    out[i] = n;
  }
  return out;
}

const HEX_GROUP = /^[0-9A-Fa-f]{1,4}$/;

/** Parses IPv6 text (RFC 4291 §2.2, with an optional trailing dotted quad; no zone); null when it is not one. */
export function parseIPv6(text: string): IpBytes | null {
  if (text.length < 2 || text.length > 45) return null;
  const out = new Uint8Array(16);
  const halves = text.split("::");
  if (halves.length > 2) return null;
  const groups = (half: string): number[] | null => {
    if (half === "") return [];
    const parts = half.split(":");
    const values: number[] = [];
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i];
      if (i === parts.length - 1 && p.includes(".")) {
        const v4 = parseIPv4(p);
        if (v4 === null) return null;
        values.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
      } else {
        if (!HEX_GROUP.test(p)) return null;
        values.push(parseInt(p, 16));
      }
    }
    return values;
  };
  const head = groups(halves[0]);
  const tail = halves.length === 2 ? groups(halves[1]) : [];
  if (head === null || tail === null) return null;
  // A dotted quad may only end the address.
  if (halves.length === 2 && halves[0].includes(".")) return null;
  const total = head.length + tail.length;
  if (halves.length === 1 ? total !== 8 : total > 7) return null;
  const all = [...head, ...new Array(8 - total).fill(0), ...tail];
  for (let i = 0; i < 8; i++) {
    out[2 * i] = all[i] >> 8;
    out[2 * i + 1] = all[i] & 0xff;
  }
  return out;
}

/**
 * Parses an address as a runtime reports it or a user writes it: IPv4, IPv6,
 * or IPv6 in brackets. An IPv4-mapped or IPv4-compatible IPv6 address becomes
 * its IPv4 address (but not `::` or `::1`). Null when it is not an IP address.
 */
export function parseIp(text: string): IpBytes | null {
  const bare = text.startsWith("[") && text.endsWith("]") ? text.slice(1, -1) : text;
  if (!bare.includes(":")) return parseIPv4(bare);
  const v6 = parseIPv6(bare);
  if (v6 === null) return null;
  return embeddedIPv4(v6) ?? v6;
}

/** The IPv4 address an IPv4-mapped (`::ffff:0:0/96`) or IPv4-compatible (`::/96`, not `::`/`::1`) address carries. */
function embeddedIPv4(v6: IpBytes): IpBytes | null {
  for (let i = 0; i < 10; i++) if (v6[i] !== 0) return null;
  const mapped = v6[10] === 0xff && v6[11] === 0xff;
  const compatible = v6[10] === 0 && v6[11] === 0;
  if (!mapped && !compatible) return null;
  const v4 = v6.slice(12);
  // `::` and `::1` are IPv6's own unspecified and loopback addresses, not IPv4 ones.
  if (compatible && v4[0] === 0 && v4[1] === 0 && v4[2] === 0 && v4[3] <= 1) return null;
  return v4;
}

/**
 * Parses `address/prefix` (or a bare address: a single host). IPv4-mapped
 * ranges (`::ffff:10.0.0.0/104`) become IPv4 ranges.
 *
 * @throws {TypeError} naming the text and what is wrong with it.
 */
export function parseCidr(text: string): Cidr {
  const slash = text.indexOf("/");
  const addressText = slash === -1 ? text : text.slice(0, slash);
  const bare = addressText.startsWith("[") && addressText.endsWith("]") ? addressText.slice(1, -1) : addressText;
  const raw = bare.includes(":") ? parseIPv6(bare) : parseIPv4(bare);
  if (raw === null) throw new TypeError(`not an IP address range: ${JSON.stringify(text)}`);
  let prefix = raw.length * 8;
  if (slash !== -1) {
    const p = text.slice(slash + 1);
    if (!/^(?:0|[1-9][0-9]{0,2})$/.test(p) || Number(p) > raw.length * 8) {
      throw new TypeError(`invalid prefix length in ${JSON.stringify(text)}: 0-${raw.length * 8}`);
    }
    prefix = Number(p);
  }
  let bytes = raw;
  const v4 = raw.length === 16 && prefix >= 96 ? embeddedIPv4(raw) : null;
  if (v4 !== null) {
    bytes = v4;
    prefix -= 96;
  }
  return { bytes: mask(bytes, prefix), prefix, text };
}

function mask(bytes: IpBytes, prefix: number): IpBytes {
  const out = bytes.slice();
  for (let i = 0; i < out.length; i++) {
    const bits = Math.max(0, Math.min(8, prefix - i * 8));
    out[i] &= bits === 0 ? 0 : (0xff << (8 - bits)) & 0xff;
  }
  return out;
}

/** Whether `address` (parsed) lies in `range`. */
export function inCidr(address: IpBytes, range: Cidr): boolean {
  if (address.length !== range.bytes.length) return false;
  let bits = range.prefix;
  for (let i = 0; bits > 0; i++, bits -= 8) {
    const m = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if ((address[i] & m) !== range.bytes[i]) return false;
  }
  return true;
}

/** The first range of `list` that holds `address` (text as the runtime reports it), or null. */
export function matchCidr(list: readonly Cidr[], address: string): Cidr | null {
  const bytes = parseIp(address);
  if (bytes === null) return null;
  for (const range of list) if (inCidr(bytes, range)) return range;
  return null;
}

/** The loopback ranges: the default for the proxy's own admin pages. */
export const LOOPBACK: readonly Cidr[] = Object.freeze([parseCidr("127.0.0.0/8"), parseCidr("::1/128")]);
