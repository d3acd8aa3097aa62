/**
 * End-to-end tests with a real client: `curl -x` through the proxy to a
 * `Deno.serve` origin on 127.0.0.1. Bodies are generated deterministically and
 * hashed while they stream (origin side) and from the files curl reads or
 * writes, so no test holds a large body in memory.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { startTestProxy, type TestProxy } from "./util.ts";

const CURL_MISSING = "curl is not installed or not on PATH: these tests need curl as a real client (CI installs it)";
const SEED = 0x5eed_c0de;
const PIECE_BYTES = 256 * 1024;
const MIB = 1024 * 1024;

/** curl's version line, or null when curl cannot be run. */
function curlVersion(): string | null {
  try {
    const out = new Deno.Command("curl", { args: ["--version"], stdout: "piped", stderr: "null" }).outputSync();
    return out.success ? new TextDecoder().decode(out.stdout).split("\n")[0] : null;
  } catch {
    // NotFound: curl is absent; each test fails with CURL_MISSING instead.
    return null;
  }
}
const CURL = curlVersion();

/**
 * Bytes `offset .. offset+length` of a deterministic stream: every 4-byte word
 * is a hash of its index, so any split of the stream gives the same bytes.
 * `offset` must be a multiple of 4.
 */
function patternPiece(offset: number, length: number): Uint8Array {
  const words = new Uint32Array(Math.ceil(length / 4));
  const first = offset / 4;
  for (let i = 0; i < words.length; i++) {
    let h = (first + i) ^ SEED;
    h ^= h >>> 16;
    h = Math.imul(h, 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35);
    h ^= h >>> 16;
    words[i] = h;
  }
  return new Uint8Array(words.buffer, 0, length);
}

/** Digest of a file, read in pieces. */
async function hashFile(path: string): Promise<{ sha256: string; bytes: number }> {
  using file = await Deno.open(path, { read: true });
  const hash = createHash("sha256");
  const buf = new Uint8Array(MIB);
  let bytes = 0;
  while (true) {
    const n = await file.read(buf);
    if (n === null) break;
    hash.update(buf.subarray(0, n));
    bytes += n;
  }
  return { sha256: hash.digest("hex"), bytes };
}

/** Writes `size` pattern bytes to `path` in pieces; returns their digest. */
async function writePatternFile(path: string, size: number): Promise<string> {
  using file = await Deno.open(path, { write: true, create: true, truncate: true });
  const hash = createHash("sha256");
  for (let offset = 0; offset < size; offset += PIECE_BYTES) {
    const piece = patternPiece(offset, Math.min(PIECE_BYTES, size - offset));
    hash.update(piece);
    let at = 0;
    while (at < piece.length) at += await file.write(piece.subarray(at));
  }
  return hash.digest("hex");
}

interface Upload {
  sha256: string;
  bytes: number;
  contentLength: string | null;
  transferEncoding: string | null;
}

/**
 * The origin: `GET /bytes/<n>?id=<id>` streams n pattern bytes and records
 * their digest under id; `POST /upload` hashes the body as it arrives. Requests
 * that did not come through the proxy (no `Via: ... waypost`) get 421, so a
 * curl that bypassed the proxy cannot pass.
 */
function startHashingOrigin() {
  const sent = new Map<string, { sha256: string; bytes: number }>();
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const url = new URL(req.url);
    if (!/\bwaypost\b/.test(req.headers.get("via") ?? "")) return new Response("not via the proxy\n", { status: 421 });
    if (req.method === "GET" && url.pathname.startsWith("/bytes/")) {
      const size = Number(url.pathname.slice("/bytes/".length));
      const id = url.searchParams.get("id") ?? "";
      const hash = createHash("sha256");
      let offset = 0;
      const body = new ReadableStream<Uint8Array>({
        pull(controller) {
          const piece = patternPiece(offset, Math.min(PIECE_BYTES, size - offset));
          hash.update(piece);
          offset += piece.length;
          controller.enqueue(piece);
          if (offset === size) {
            sent.set(id, { sha256: hash.digest("hex"), bytes: offset });
            controller.close();
          }
        },
      });
      return new Response(body, { headers: { "content-length": String(size) } });
    }
    if (req.method === "POST" && url.pathname === "/upload" && req.body) {
      const hash = createHash("sha256");
      let bytes = 0;
      for await (const piece of req.body) {
        hash.update(piece);
        bytes += piece.length;
      }
      const upload: Upload = {
        sha256: hash.digest("hex"),
        bytes,
        contentLength: req.headers.get("content-length"),
        transferEncoding: req.headers.get("transfer-encoding"),
      };
      return Response.json(upload);
    }
    return new Response("not found\n", { status: 404 });
  });
  return {
    sent,
    url: (path: string) => `http://127.0.0.1:${server.addr.port}${path}`,
    async [Symbol.asyncDispose]() {
      await server.shutdown();
      await server.finished;
    },
  };
}

/** Runs curl through the proxy with a clean environment (no *_proxy / NO_PROXY surprises). */
async function curl(proxy: TestProxy, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  assert.ok(CURL, CURL_MISSING);
  const out = await new Deno.Command("curl", {
    args: ["-sS", "--noproxy", "", "-x", `http://127.0.0.1:${proxy.port}`, "--max-time", "60", ...args],
    clearEnv: true,
    env: { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

Deno.test("curl -x downloads bodies byte-exact through the proxy", async (t) => {
  assert.ok(CURL, CURL_MISSING);
  await using origin = startHashingOrigin();
  await using proxy = startTestProxy();
  const dir = await Deno.makeTempDir({ prefix: "waypost-curl-" });
  try {
    for (const [name, size] of [["100 B", 100], ["64 KiB", 64 * 1024], ["100 MiB", 100 * MIB]] as const) {
      await t.step(name, async () => {
        const id = `get-${size}`;
        const file = `${dir}/${id}`;
        const run = await curl(proxy, ["-o", file, "-w", "%{http_code}", origin.url(`/bytes/${size}?id=${id}`)]);
        assert.equal(run.code, 0, `curl exited ${run.code}: ${run.stderr}`);
        assert.equal(run.stdout, "200");
        const sent = origin.sent.get(id);
        assert.ok(sent, "the origin did not finish sending");
        assert.equal(sent.bytes, size);
        assert.deepEqual(await hashFile(file), sent);
      });
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("curl -x uploads 50 MiB byte-exact through the proxy", async (t) => {
  assert.ok(CURL, CURL_MISSING);
  await using origin = startHashingOrigin();
  await using proxy = startTestProxy();
  const dir = await Deno.makeTempDir({ prefix: "waypost-curl-" });
  try {
    const size = 50 * MIB;
    const file = `${dir}/upload.bin`;
    const sha256 = await writePatternFile(file, size);
    const rows = [
      { name: "with Content-Length", headers: [], contentLength: String(size), transferEncoding: null },
      {
        name: "with chunked transfer coding",
        headers: ["-H", "Transfer-Encoding: chunked"],
        contentLength: null,
        transferEncoding: "chunked",
      },
    ];
    for (const row of rows) {
      await t.step(row.name, async () => {
        const run = await curl(proxy, [
          "--fail",
          "-H",
          "Content-Type: application/octet-stream",
          ...row.headers,
          "--data-binary",
          `@${file}`,
          origin.url("/upload"),
        ]);
        assert.equal(run.code, 0, `curl exited ${run.code}: ${run.stderr}`);
        const got: Upload = JSON.parse(run.stdout);
        assert.equal(got.bytes, size);
        assert.equal(got.sha256, sha256);
        assert.equal(got.contentLength, row.contentLength);
        assert.equal(got.transferEncoding, row.transferEncoding);
      });
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
