/**
 * Proxy authentication, Basic scheme (RFC 7617, RFC 9110 §11.7): the
 * configured `user:password` entries and the check of a request's
 * `Proxy-Authorization`.
 *
 * The check takes the same time whether the user exists or not and however
 * many characters match: the presented `user:password` is hashed (SHA-256,
 * fixed length) and compared, without an early exit, with the digest of
 * every configured entry. Repeated failures from one client address are
 * slowed down by a short, bounded delay.
 *
 * @module
 */
import { encodeLatin1 } from "./ascii.ts";
import { sha256 } from "./sha256.ts";

/** The challenge sent with a 407 (RFC 7617 §2: realm, and the charset the proxy decodes credentials with). */
export function basicChallenge(realm: string): string {
  return `Basic realm="${realm.replace(/["\\]/g, "\\$&")}", charset="UTF-8"`;
}

const encoder = new TextEncoder();

function digest(text: string): Uint8Array {
  return sha256(encoder.encode(text));
}

/** Whether text holds a control character (CR, LF, NUL, DEL, ...). */
export function hasControl(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return true;
  }
  return false;
}

/**
 * Parses `user:password` entries (the password may hold `:`, the user may
 * not, neither may be empty).
 *
 * @throws {TypeError} naming the entry's position (never the password).
 */
export function parseCredential(entry: string, where: string): { user: string; password: string } {
  const colon = entry.indexOf(":");
  if (colon <= 0 || colon === entry.length - 1) {
    throw new TypeError(`${where}: expected user:password (neither empty)`);
  }
  if (hasControl(entry)) throw new TypeError(`${where}: control characters are not allowed`);
  return { user: entry.slice(0, colon), password: entry.slice(colon + 1) };
}

/** Parses an auth file: one `user:password` per line; blank lines and `#` comments skipped. */
export function parseAuthFile(text: string, path: string): string[] {
  const out: string[] = [];
  text.split(/\r?\n/).forEach((line, i) => {
    const t = line.trim();
    if (t === "" || t.startsWith("#")) return;
    parseCredential(t, `${path}:${i + 1}`);
    out.push(t);
  });
  return out;
}

/** The configured users; {@link check} says who a request's credentials name, or null. */
export class Credentials {
  readonly #entries: { user: string; digest: Uint8Array }[];

  /** From `user:password` entries (validated). */
  constructor(entries: readonly string[]) {
    this.#entries = entries.map((entry, i) => {
      const { user } = parseCredential(entry, `credential ${i + 1}`);
      return { user, digest: digest(entry) };
    });
  }

  /** How many entries there are. */
  get size(): number {
    return this.#entries.length;
  }

  /**
   * The user a `Proxy-Authorization` value authenticates, or null when it is
   * missing, malformed, empty or wrong. Same work for every wrong value.
   */
  check(value: string | null): string | null {
    const presented = decodeBasic(value);
    // A missing or malformed value is still compared (against a digest of ""), so the
    // time does not tell a malformed value from a wrong one either.
    const d = digest(presented ?? "");
    let found = -1;
    for (let i = 0; i < this.#entries.length; i++) {
      const e = this.#entries[i].digest;
      let diff = 0;
      for (let j = 0; j < 32; j++) diff |= e[j] ^ d[j];
      // Branch-free selection: keep the first match without leaving the loop.
      const match = ((diff - 1) >> 31) & 1; // 1 when diff === 0
      found = found === -1 && match === 1 ? i : found;
    }
    return presented === null || found === -1 ? null : this.#entries[found].user;
  }
}

const BASIC = /^[Bb][Aa][Ss][Ii][Cc] +([A-Za-z0-9+/]+={0,2}) *$/;

/** The `user:password` in a Basic credential (UTF-8), or null when malformed or empty. */
export function decodeBasic(value: string | null): string | null {
  if (value === null) return null;
  const m = BASIC.exec(value);
  if (m === null) return null;
  let bytes: Uint8Array;
  try {
    bytes = encodeLatin1(atob(m[1])); // atob gives one char (0-255) per byte
  } catch {
    return null;
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    return null;
  }
  const colon = text.indexOf(":");
  return colon <= 0 || colon === text.length - 1 ? null : text;
}

/** Per-address failure counts: each failure in a row adds a delay before the 407 (bounded). */
export class FailureDelay {
  readonly #failures = new Map<string, { count: number; last: number }>();
  readonly #stepMs: number;
  readonly #maxMs: number;
  readonly #maxEntries: number;

  /** `stepMs` per failure in a row, at most `maxMs`; a quiet minute forgets an address. */
  constructor(stepMs = 100, maxMs = 2000, maxEntries = 10_000) {
    this.#stepMs = stepMs;
    this.#maxMs = maxMs;
    this.#maxEntries = maxEntries;
  }

  /** Notes a failure from `address`; returns how long to wait before answering (ms). */
  fail(address: string, now = Date.now()): number {
    let f = this.#failures.get(address);
    if (f === undefined || now - f.last > 60_000) {
      if (f === undefined && this.#failures.size >= this.#maxEntries) {
        // Forget the oldest entry (Map keeps insertion order): memory stays bounded under a spray of addresses.
        this.#failures.delete(this.#failures.keys().next().value!);
      }
      f = { count: 0, last: now };
      this.#failures.delete(address);
      this.#failures.set(address, f);
    }
    f.count++;
    f.last = now;
    return Math.min(this.#maxMs, (f.count - 1) * this.#stepMs);
  }

  /** A success from `address` clears its failures. */
  succeed(address: string): void {
    if (this.#failures.size > 0) this.#failures.delete(address);
  }

  /** Failures in a row from `address` (for logs). */
  count(address: string): number {
    return this.#failures.get(address)?.count ?? 0;
  }
}
