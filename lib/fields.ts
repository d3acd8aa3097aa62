/**
 * Ordered field lists and the field rules a forwarding proxy applies
 * (RFC 9110 §5, §7.6). Pure: no I/O.
 *
 * A message's fields are kept as received: order, case and duplicates intact,
 * so end-to-end fields pass through unchanged.
 *
 * @module
 */

/** One field line: the name as received and its value with OWS trimmed. */
export type Field = [name: string, value: string];

/**
 * Hop-by-hop fields a proxy never forwards (RFC 9110 §7.6.1), including the
 * framing field `Transfer-Encoding`, which the proxy regenerates for the next
 * hop (RFC 9112 §6). `Trailer` is end-to-end (RFC 9110 §6.6.2): it is dropped
 * only where no trailer section can follow.
 */
export const HOP_BY_HOP: ReadonlySet<string> = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "te",
  "transfer-encoding",
  "upgrade",
  "proxy-authorization",
  "proxy-authenticate",
]);

const NO_VALUES: readonly string[] = Object.freeze([]);
// Shared by every message. Object.freeze does not stop Set.add: these are typed ReadonlySet
// (as connectionTokens returns them) and nothing may add to them.
const NO_TOKENS: ReadonlySet<string> = Object.freeze(new Set<string>());
const KEEP_ALIVE_TOKENS: ReadonlySet<string> = Object.freeze(new Set(["keep-alive"]));
const CLOSE_TOKENS: ReadonlySet<string> = Object.freeze(new Set(["close"]));

/**
 * Whether a field name equals `lower` (a lower-case name) case-insensitively
 * (RFC 9110 §5.1), without building a lower-cased copy.
 */
export function nameIs(name: string, lower: string): boolean {
  if (name.length !== lower.length) return false;
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    const l = lower.charCodeAt(i);
    if (c !== l && !(l >= 0x61 && l <= 0x7a && c === l - 0x20)) return false;
  }
  return true;
}

/** Whether `name` equals one of the lower-case names in `names`, case-insensitively. */
function nameInSet(name: string, names: ReadonlySet<string>): boolean {
  if (names.size === 0) return false;
  for (const lower of names) if (nameIs(name, lower)) return true;
  return false;
}

/** Whether `name` is a hop-by-hop field or `Content-Length` (by length first: most names match none). */
export function isHopByHopOrLength(name: string): boolean {
  switch (name.length) {
    case 2:
      return nameIs(name, "te");
    case 7:
      return nameIs(name, "upgrade");
    case 10:
      return nameIs(name, "connection") || nameIs(name, "keep-alive");
    case 14:
      return nameIs(name, "content-length");
    case 16:
      return nameIs(name, "proxy-connection");
    case 17:
      return nameIs(name, "transfer-encoding");
    case 18:
      return nameIs(name, "proxy-authenticate");
    case 19:
      return nameIs(name, "proxy-authorization");
    default:
      return false;
  }
}

/** All values of a field (name compared case-insensitively, lower-case `name`). */
export function getAll(fields: readonly Field[], name: string): readonly string[] {
  let out: string[] | null = null;
  for (let i = 0; i < fields.length; i++) {
    if (nameIs(fields[i][0], name)) (out ??= []).push(fields[i][1]);
  }
  return out ?? NO_VALUES;
}

/** Whether a field is present (lower-case `name`). */
export function has(fields: readonly Field[], name: string): boolean {
  for (let i = 0; i < fields.length; i++) if (nameIs(fields[i][0], name)) return true;
  return false;
}

/** Trims SP and HTAB only (OWS, RFC 9110 §5.6.3): never NBSP or other Unicode spaces. */
export function trimOws(text: string): string {
  let start = 0;
  let end = text.length;
  while (start < end && (text.charCodeAt(start) === 0x20 || text.charCodeAt(start) === 0x09)) start++;
  while (end > start && (text.charCodeAt(end - 1) === 0x20 || text.charCodeAt(end - 1) === 0x09)) end--;
  return start === 0 && end === text.length ? text : text.slice(start, end);
}

/**
 * Splits list-based field values (RFC 9110 §5.6.1) into OWS-trimmed elements,
 * dropping empty ones. Quoted strings are not split on commas.
 */
export function splitList(values: readonly string[]): string[] {
  const out: string[] = [];
  for (const v of values) {
    let start = 0;
    let quoted = false;
    for (let i = 0; i <= v.length; i++) {
      const c = i < v.length ? v.charCodeAt(i) : 0x2c;
      if (quoted) {
        if (c === 0x5c) i++;
        else if (c === 0x22) quoted = false;
        continue;
      }
      if (c === 0x22) quoted = true;
      else if (c === 0x2c) {
        const item = trimOws(v.slice(start, i));
        if (item) out.push(item);
        start = i + 1;
      }
    }
    if (quoted) {
      const item = trimOws(v.slice(start));
      if (item) out.push(item);
    }
  }
  return out;
}

/** The lower-cased tokens of every `Connection` field (RFC 9110 §7.6.1). */
export function connectionTokens(fields: readonly Field[]): ReadonlySet<string> {
  const values = getAll(fields, "connection");
  if (values.length === 0) return NO_TOKENS;
  // The usual single values get shared sets (read-only: callers never add to them).
  if (values.length === 1) {
    if (nameIs(values[0], "keep-alive")) return KEEP_ALIVE_TOKENS;
    if (nameIs(values[0], "close")) return CLOSE_TOKENS;
  }
  const tokens = new Set<string>();
  for (const t of splitList(values)) tokens.add(t.toLowerCase());
  return tokens;
}

/**
 * Returns the end-to-end fields of a message: drops every hop-by-hop field,
 * every field named by `Connection`, `Content-Length` and `Transfer-Encoding`
 * (RFC 9110 §7.6.1). `keep` names fields to retain even if listed (for
 * example `upgrade` when an upgrade is being forwarded).
 */
export function stripHopByHop(
  fields: readonly Field[],
  connection: ReadonlySet<string>,
  keep?: ReadonlySet<string>,
): Field[] {
  const out: Field[] = [];
  for (let i = 0; i < fields.length; i++) {
    const f = fields[i];
    const name = f[0];
    if (keep !== undefined && nameInSet(name, keep)) {
      out.push(f);
      continue;
    }
    if (isHopByHopOrLength(name) || nameInSet(name, connection)) continue;
    out.push(f);
  }
  return out;
}

/**
 * Whether any `Via` entry was added by `pseudonym` (RFC 9110 §7.6.3
 * received-by), which means the message is looping through this proxy.
 */
export function viaContains(fields: readonly Field[], pseudonym: string, tag: string | null = null): boolean {
  const values = getAll(fields, "via");
  if (values.length === 0) return false;
  const want = pseudonym.toLowerCase();
  for (const entry of splitList(values)) {
    // entry = received-protocol RWS received-by [ RWS comment ]
    const parts = entry.split(/[ \t]+/);
    if (parts.length < 2 || parts[1].toLowerCase() !== want) continue;
    // Another instance with the same pseudonym tags its entries with its own id: not a loop.
    // An entry without a tag (another product using the name) still counts, as before.
    if (tag === null || parts.length < 3 || !parts[2].startsWith("(") || parts[2] === `(${tag})`) return true;
  }
  return false;
}

/** Removes every field called `name` (lower-case) in place. */
export function dropField(fields: Field[], name: string): void {
  for (let i = fields.length - 1; i >= 0; i--) if (nameIs(fields[i][0], name)) fields.splice(i, 1);
}

/**
 * Trailer fields worth forwarding: drop hop-by-hop and framing fields, and those
 * named by the message's `Connection` (RFC 9110 §7.6.1 applies to trailers too).
 */
export function endToEndTrailers(trailers: readonly Field[], connection: ReadonlySet<string>): Field[] {
  if (trailers.length === 0) return [];
  const out = stripHopByHop(trailers, connection);
  dropField(out, "host");
  dropField(out, "trailer");
  return out;
}

let viaCache: { pseudonym: string; values: readonly [string, string] } | null = null;
let taggedCache: { key: string; values: readonly [string, string] } | null = null;

/**
 * The `Via` entry for a forwarded request: the pseudonym and this instance's
 * tag as a comment (`1.1 waypost (4f2a9c1e)`), so a loop through this very
 * instance is told from a chain of instances that share the pseudonym.
 */
export function taggedViaField(pseudonym: string, tag: string, minor: number): Field {
  const key = `${pseudonym} ${tag}`;
  if (taggedCache === null || taggedCache.key !== key) {
    taggedCache = { key, values: [`1.0 ${pseudonym} (${tag})`, `1.1 ${pseudonym} (${tag})`] };
  }
  return ["Via", taggedCache.values[minor]];
}

/** The `Via` field this proxy adds for a message received as HTTP/1.`minor` (RFC 9110 §7.6.3). */
export function viaField(pseudonym: string, minor: number): Field {
  if (viaCache === null || viaCache.pseudonym !== pseudonym) {
    viaCache = { pseudonym, values: [`1.0 ${pseudonym}`, `1.1 ${pseudonym}`] };
  }
  // A new pair per message (the value strings are shared): a hook editing it in place changes
  // that message only. (Frozen shared pairs cost 5% per request: mixed element kinds in field lists.)
  return ["Via", viaCache.values[minor]];
}
