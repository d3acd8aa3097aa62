/**
 * Pure wire-format benchmarks: the head parser, the chunked decoder and head
 * serialization, each against a simple baseline in the same group (a naive
 * `TextDecoder` + `split` parser, a copy loop, string concatenation).
 *
 *   deno task bench
 */
import { ChunkedDecoder } from "../lib/chunked.ts";
import type { Field } from "../lib/fields.ts";
import { HeadParser } from "../lib/head.ts";
import { serializeHead } from "../lib/serialize.ts";

const enc = new TextEncoder();
const REQUEST = enc.encode(
  "GET http://example.com:8080/some/path/index.html?query=1&b=2 HTTP/1.1\r\n" +
    "Host: example.com:8080\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36\r\n" +
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n" +
    "Accept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate\r\n" +
    "Cookie: session=abcdef0123456789; theme=dark\r\nConnection: keep-alive\r\n\r\n",
);

Deno.bench({ name: "waypost HeadParser (request, 8 fields)", group: "head", baseline: true }, () => {
  const p = new HeadParser("request");
  p.push(REQUEST);
  if (!p.complete) throw new Error("incomplete");
});

Deno.bench({ name: "naive TextDecoder + split (no validation)", group: "head" }, () => {
  const text = new TextDecoder().decode(REQUEST);
  const lines = text.split("\r\n");
  const [method, target, version] = lines[0].split(" ");
  const fields: Field[] = [];
  for (let i = 1; i < lines.length && lines[i] !== ""; i++) {
    const c = lines[i].indexOf(":");
    fields.push([lines[i].slice(0, c), lines[i].slice(c + 1).trim()]);
  }
  if (!method || !target || !version || fields.length !== 7) throw new Error("bad");
});

const CHUNKED = (() => {
  const piece = "x".repeat(4096);
  let s = "";
  for (let i = 0; i < 16; i++) s += `1000;ext=1\r\n${piece}\r\n`;
  return enc.encode(`${s}0\r\n\r\n`);
})();

Deno.bench({ name: "waypost ChunkedDecoder (16 x 4 KiB)", group: "chunked", baseline: true }, () => {
  const d = new ChunkedDecoder();
  let input = CHUNKED;
  let total = 0;
  while (input.length > 0 && !d.done) {
    const n = d.step(input);
    if (d.data) total += d.data.length;
    input = input.subarray(n);
  }
  if (total !== 65536) throw new Error(`got ${total}`);
});

Deno.bench({ name: "copy the same 64 KiB (memcpy floor)", group: "chunked" }, () => {
  const out = new Uint8Array(CHUNKED.length);
  out.set(CHUNKED);
});

const FIELDS: Field[] = [
  ["Host", "example.com:8080"],
  ["User-Agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36"],
  ["Accept", "text/html,application/xhtml+xml"],
  ["Accept-Encoding", "gzip, deflate"],
  ["Via", "1.1 waypost"],
];

Deno.bench({ name: "waypost serializeHead (5 fields)", group: "serialize", baseline: true }, () => {
  serializeHead("GET /some/path/index.html?query=1 HTTP/1.1", FIELDS);
});

Deno.bench({ name: "string concat + TextEncoder", group: "serialize" }, () => {
  let s = "GET /some/path/index.html?query=1 HTTP/1.1\r\n";
  for (const [n, v] of FIELDS) s += `${n}: ${v}\r\n`;
  enc.encode(`${s}\r\n`);
});
