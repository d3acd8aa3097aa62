/**
 * End-to-end tests of CONNECT tunnels (RFC 9110 §9.3.6) and protocol upgrades
 * (RFC 9110 §7.8, §15.2.2) over real loopback sockets: raw clients and scripted
 * origins that record exact bytes, curl over TLS, and a WebSocket echo origin.
 * Bulk data is checked by SHA-256; half-closes, resets and timeouts by what each
 * side sees on its socket, bounded by deadlines (no sleeps as synchronisation).
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import type { ProxyOptions } from "../mod.ts";
import {
  canBindIpv6Loopback,
  type Client,
  closedPort,
  concat,
  deferred,
  fieldValue,
  fieldValues,
  get,
  hasField,
  latin1,
  listTokens,
  ok,
  type Origin,
  type OriginConn,
  type OriginOptions,
  pseudoRandomBytes,
  serve,
  startOrigin,
  startTestProxy,
  type TestProxy,
  text,
  type WireReader,
} from "./util.ts";

type TunnelStats = Parameters<NonNullable<ProxyOptions["onTunnelEnd"]>>[0];

const MIB = 1024 * 1024;
const IPV6 = canBindIpv6Loopback();
const ESTABLISHED = "HTTP/1.1 200 Connection established\r\n\r\n";
/** How soon the far side of a reset tunnel must be closed. */
const PROMPT_CLOSE_MS = 2000;

// ---------------------------------------------------------------------------
// Helpers

/** Hex SHA-256 of bytes. */
function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** Settles like `promise`, or rejects after `ms` (the timer is always cleared). */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Nothing within ${ms} ms while ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** Waits `ms`; only for pacing traffic in timeout tests, never to order steps. */
function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Records `onTunnelEnd` reports; {@link nth} waits (bounded) for the report at an index. */
class TunnelLog {
  readonly ended: TunnelStats[] = [];
  #waiters: Array<PromiseWithResolvers<TunnelStats>> = [];

  /** The callback to pass as `onTunnelEnd`. */
  readonly onTunnelEnd = (stats: TunnelStats): void => {
    this.ended.push(stats);
    this.#waiters.shift()?.resolve(stats);
  };

  /** The report at `index` (0-based), waiting up to 3 s for it. */
  nth(index: number): Promise<TunnelStats> {
    if (index < this.ended.length) return Promise.resolve(this.ended[index]);
    while (this.#waiters.length <= index - this.ended.length) this.#waiters.push(deferred<TunnelStats>());
    return within(this.#waiters[index - this.ended.length].promise, 3000, `waiting for onTunnelEnd #${index}`);
  }
}

/**
 * An origin whose first connection runs `work`; `result` settles with what it
 * returns or throws. Later connections are closed at once.
 */
class OneShotOrigin<T> implements AsyncDisposable {
  readonly origin: Origin;
  readonly result: Promise<T>;

  constructor(work: (c: OriginConn) => Promise<T>, options: OriginOptions = {}) {
    const done = deferred<T>();
    this.result = done.promise;
    // Marked handled here; the test awaits `result` and sees the rejection itself.
    this.result.catch(() => {});
    this.origin = startOrigin(async (c) => {
      if (c.index > 0) return c.close();
      try {
        done.resolve(await work(c));
      } catch (error) {
        done.reject(error);
      }
    }, options);
  }

  get authority(): string {
    return this.origin.authority;
  }

  get port(): number {
    return this.origin.port;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.origin.close();
  }
}

/** A CONNECT request for `authority`. */
function connectRequest(authority: string): string {
  return `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`;
}

/**
 * Opens a tunnel through the proxy: sends CONNECT (and `early` bytes in the same
 * write), then requires exactly the 200 line and an empty line.
 */
async function openTunnel(proxy: TestProxy, authority: string, early?: Uint8Array): Promise<Client> {
  const client = await proxy.connect();
  try {
    const head = latin1(connectRequest(authority));
    await client.write(early ? concat([head, early]) : head);
    const got = await client.reader.readUntil("\r\n\r\n", "waiting for the CONNECT response");
    assert.ok(got, `connection ended before a CONNECT response: ${JSON.stringify(text(client.reader.pending))}`);
    assert.equal(text(got), ESTABLISHED);
    return client;
  } catch (error) {
    client.close();
    throw error;
  }
}

/** Echoes bytes already received and then every new byte until EOF; returns how many. */
async function echoFromPending(c: OriginConn): Promise<number> {
  let echoed = 0;
  while (true) {
    if (c.reader.pending.length > 0) {
      const chunk = await c.reader.readExact(c.reader.pending.length);
      await c.write(chunk);
      echoed += chunk.length;
    }
    if (!await c.reader.fill(65536, "echoing")) return echoed;
  }
}

/** Origin script that echoes every byte until EOF, then half-closes. */
async function echoUntilEof(c: OriginConn): Promise<number> {
  const echoed = await echoFromPending(c);
  await c.closeWrite();
  return echoed;
}

/** A fresh tunnel through `proxy` to a new echo origin carries bytes both ways. */
async function assertTunnelStillWorks(proxy: TestProxy): Promise<void> {
  await using echo = new OneShotOrigin(echoUntilEof);
  await using client = await openTunnel(proxy, echo.authority);
  const data = pseudoRandomBytes(10_000, 77);
  await client.write(data);
  assert.equal(sha256(await client.reader.readExact(data.length)), sha256(data));
  await client.closeWrite();
  assert.equal(text(await client.reader.readToEnd()), "");
  assert.equal(await echo.result, data.length);
}

/** Reads the CONNECT failure response and requires that nothing precedes it and the connection closes. */
async function connectFails(proxy: TestProxy, request: string, status: number): Promise<void> {
  await using client = await proxy.connect();
  await client.write(request);
  const res = await client.response("CONNECT");
  // The failure is the first and only response: no 200 before it, nothing after it.
  assert.equal(res.status, status);
  assert.ok(client.receivedText.startsWith(`HTTP/1.1 ${status} `), JSON.stringify(client.receivedText.slice(0, 40)));
  await client.assertClosed();
}

const CURL_MISSING = "curl is not installed or not on PATH: the TLS tunnel test needs curl as a real client";

/** Starts curl with a clean environment (no *_proxy surprises), body to stdout, errors to stderr. */
function spawnCurl(args: string[]): Deno.ChildProcess {
  return new Deno.Command("curl", {
    args: ["-sS", "--fail", "--noproxy", "", "--max-time", "60", "-o", "-", ...args],
    clearEnv: true,
    env: { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin" },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

// ---------------------------------------------------------------------------
// CONNECT: bulk data, the 200 line, half-close, reset, early data

Deno.test("curl -x https:// through a CONNECT tunnel to a TLS origin: 100 MiB byte-exact", async () => {
  const size = 100 * MIB;
  const block = pseudoRandomBytes(MIB, 0xc0ffee);
  let sent: { sha256: string; bytes: number } | null = null;
  const cert = Deno.readTextFileSync(new URL("./fixtures/cert.pem", import.meta.url));
  const key = Deno.readTextFileSync(new URL("./fixtures/key.pem", import.meta.url));
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, cert, key, onListen() {} }, () => {
    // 1 MiB blocks, each stamped with its index so a dropped or repeated block changes the digest.
    const hash = createHash("sha256");
    let index = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        const piece = block.slice();
        new DataView(piece.buffer).setUint32(0, index++);
        hash.update(piece);
        controller.enqueue(piece);
        if (index * MIB === size) {
          sent = { sha256: hash.digest("hex"), bytes: size };
          controller.close();
        }
      },
    });
    return new Response(body, { headers: { "content-length": String(size) } });
  });
  try {
    const log = new TunnelLog();
    await using proxy = startTestProxy({ connectPorts: "*", onTunnelEnd: log.onTunnelEnd });
    const url = `https://127.0.0.1:${server.addr.port}/bytes`;
    let child: Deno.ChildProcess;
    try {
      child = spawnCurl([
        "--cacert",
        new URL("./fixtures/cert.pem", import.meta.url).pathname,
        "-x",
        `http://127.0.0.1:${proxy.port}`,
        url,
      ]);
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) assert.fail(CURL_MISSING);
      throw error;
    }
    const stderr = new Response(child.stderr).text();
    const hash = createHash("sha256");
    let bytes = 0;
    for await (const piece of child.stdout) {
      hash.update(piece);
      bytes += piece.length;
    }
    const status = await child.status;
    assert.equal(status.code, 0, `curl exited ${status.code}: ${await stderr}`);
    await stderr;
    assert.ok(sent, "the origin did not finish sending");
    assert.deepEqual({ sha256: hash.digest("hex"), bytes }, sent);
    // It went through one tunnel of the proxy (TLS records add to the byte count).
    const stats = await log.nth(0);
    assert.equal(stats.target, `127.0.0.1:${server.addr.port}`);
    assert.ok(stats.bytesDown > size, `bytesDown ${stats.bytesDown}`);
    assert.ok(stats.bytesUp > 0);
  } finally {
    await server.shutdown();
    await server.finished;
  }
});

/**
 * Sends `out` and reads `inLength` bytes (then EOF) at the same time. The second
 * half of `out` is held back until half of the incoming bytes arrived, so a relay
 * that does not carry both directions at once deadlocks (and the read deadline fails).
 */
async function exchangeAtOnce(
  side: { reader: WireReader; write(data: Uint8Array): Promise<void>; closeWrite(): Promise<void> },
  out: Uint8Array,
  inLength: number,
): Promise<{ sha256: string; length: number; eof: boolean }> {
  const halfIn = deferred();
  const [got] = await Promise.all([
    (async () => {
      const first = await side.reader.readExact(inLength >> 1, "reading the first half");
      halfIn.resolve();
      const rest = await side.reader.readExact(inLength - first.length + 1, "reading the second half");
      const all = concat([first, rest]);
      return { sha256: sha256(all), length: all.length, eof: side.reader.eof };
    })(),
    (async () => {
      await side.write(out.subarray(0, out.length >> 1));
      await halfIn.promise;
      await side.write(out.subarray(out.length >> 1));
      await side.closeWrite();
    })(),
  ]);
  return got;
}

Deno.test("raw CONNECT: exact 200 line, then over 1 MiB each way at once, byte-exact", async () => {
  const up = pseudoRandomBytes(MIB + 4321, 1);
  const down = pseudoRandomBytes(MIB + 8765, 2);
  await using origin = new OneShotOrigin((c) => exchangeAtOnce(c, down, up.length));
  const log = new TunnelLog();
  await using proxy = startTestProxy({ connectPorts: [origin.port], onTunnelEnd: log.onTunnelEnd });
  await using client = await proxy.connect();
  await client.write(connectRequest(origin.authority));
  // Exactly the status line and the empty line: no fields (RFC 9110 §9.3.6: no content, no framing).
  const head = await client.reader.readExact(ESTABLISHED.length);
  assert.equal(text(head), ESTABLISHED);
  assert.deepEqual(await exchangeAtOnce(client, up, down.length), {
    sha256: sha256(down),
    length: down.length,
    eof: true,
  });
  assert.deepEqual(await origin.result, { sha256: sha256(up), length: up.length, eof: true });
  const stats = await log.nth(0);
  assert.deepEqual(
    { target: stats.target, bytesUp: stats.bytesUp, bytesDown: stats.bytesDown, end: stats.end },
    { target: origin.authority, bytesUp: up.length, bytesDown: down.length, end: "closed" },
  );
});

Deno.test({
  name: IPV6
    ? "raw CONNECT to an IPv6 literal [::1]:port"
    : "raw CONNECT to an IPv6 literal (skipped: ::1 cannot be bound on this machine)",
  ignore: !IPV6,
  async fn() {
    await using echo = new OneShotOrigin(echoUntilEof, { hostname: "::1" });
    await using proxy = startTestProxy({ connectPorts: [echo.port] });
    await using client = await openTunnel(proxy, `[::1]:${echo.port}`);
    await client.write("over six");
    assert.equal(text(await client.reader.readExact(8)), "over six");
    await client.closeWrite();
    assert.equal(text(await client.reader.readToEnd()), "");
    assert.equal(await echo.result, 8);
  },
});

Deno.test("half-close: client FIN first, the origin sees EOF after the client's bytes and still sends 1 MiB", async () => {
  const up = pseudoRandomBytes(100_000, 3);
  const down = pseudoRandomBytes(MIB, 4);
  await using origin = new OneShotOrigin(async (c) => {
    const got = await c.reader.readExact(up.length, "reading the client's bytes");
    // The client's FIN arrives here as EOF: read returns null, with nothing after the bytes.
    const rest = await c.reader.readToEnd("waiting for the client's FIN");
    const seen = { got: sha256(got), rest: rest.length, eof: c.reader.eof, reset: c.reader.reset };
    await c.write(down);
    c.close();
    return seen;
  });
  const log = new TunnelLog();
  await using proxy = startTestProxy({ connectPorts: [origin.port], onTunnelEnd: log.onTunnelEnd });
  await using client = await openTunnel(proxy, origin.authority);
  await client.write(up);
  await client.closeWrite();
  const got = await client.reader.readExact(down.length, "reading after our FIN");
  assert.equal(got.length, down.length);
  assert.equal(sha256(got), sha256(down));
  assert.equal(text(await client.reader.readToEnd()), "");
  assert.ok(client.reader.eof && !client.reader.reset, "the client did not see a clean EOF");
  assert.deepEqual(await origin.result, { got: sha256(up), rest: 0, eof: true, reset: false });
  const stats = await log.nth(0);
  assert.deepEqual(
    { bytesUp: stats.bytesUp, bytesDown: stats.bytesDown, firstFin: stats.firstFin, end: stats.end },
    { bytesUp: up.length, bytesDown: down.length, firstFin: "client", end: "closed" },
  );
});

Deno.test("half-close: origin FIN first, the client sees EOF and still uploads 1 MiB", async () => {
  const down = pseudoRandomBytes(100_000, 5);
  const up = pseudoRandomBytes(MIB, 6);
  await using origin = new OneShotOrigin(async (c) => {
    await c.write(down);
    await c.closeWrite();
    const got = await c.reader.readExact(up.length, "reading the upload after our FIN");
    const rest = await c.reader.readToEnd("waiting for the client's FIN");
    return { got: sha256(got), length: got.length, rest: rest.length, eof: c.reader.eof };
  });
  const log = new TunnelLog();
  await using proxy = startTestProxy({ connectPorts: [origin.port], onTunnelEnd: log.onTunnelEnd });
  await using client = await openTunnel(proxy, origin.authority);
  assert.equal(sha256(await client.reader.readExact(down.length)), sha256(down));
  assert.equal(text(await client.reader.readToEnd("waiting for the origin's FIN")), "");
  assert.ok(client.reader.eof && !client.reader.reset, "the client did not see a clean EOF");
  await client.write(up);
  await client.closeWrite();
  assert.deepEqual(await origin.result, { got: sha256(up), length: up.length, rest: 0, eof: true });
  const stats = await log.nth(0);
  assert.deepEqual(
    { bytesUp: stats.bytesUp, bytesDown: stats.bytesDown, firstFin: stats.firstFin, end: stats.end },
    { bytesUp: up.length, bytesDown: down.length, firstFin: "origin", end: "closed" },
  );
});

/**
 * A Deno child process running `code` (`deno eval`). A process that exits
 * closes its sockets without shutdown(): with unread bytes, Linux sends only
 * a RST. (In-process `conn.close()` in Deno sends a FIN first, then the RST.)
 */
class ChildScript implements AsyncDisposable {
  readonly child: Deno.ChildProcess;
  readonly #lines: ReadableStreamDefaultReader<string>;
  #buffered = "";

  constructor(code: string) {
    this.child = new Deno.Command(Deno.execPath(), {
      args: ["eval", code],
      // No update check or other traffic from the child: it only talks to loopback.
      env: { DENO_NO_UPDATE_CHECK: "1" },
      stdin: "null",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    this.#lines = this.child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  }

  /** The next line the child prints (bounded: 10 s for the child to start). */
  async line(): Promise<string> {
    while (!this.#buffered.includes("\n")) {
      const { value, done } = await within(this.#lines.read(), 10_000, "waiting for the child process");
      assert.ok(!done, "the child process ended without printing");
      this.#buffered += value;
    }
    const at = this.#buffered.indexOf("\n");
    const line = this.#buffered.slice(0, at);
    this.#buffered = this.#buffered.slice(at + 1);
    return line;
  }

  /** Waits (bounded) for the child to exit; returns its exit code. */
  async exited(): Promise<number> {
    return (await within(this.child.status, 10_000, "waiting for the child process to exit")).code;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.child.kill("SIGKILL");
    } catch {
      // It has exited already.
    }
    await this.child.status;
    await this.#lines.cancel();
  }
}

Deno.test("reset propagation: an abrupt close on one side closes the other promptly", async (t) => {
  // One proxy for all steps (the last checks it still serves); one log per step.
  let log = new TunnelLog();
  await using proxy = startTestProxy({ connectPorts: "*", onTunnelEnd: (stats) => log.onTunnelEnd(stats) });

  await t.step("origin process exits with unread bytes (RST only): the client connection is closed", async () => {
    log = new TunnelLog();
    await using origin = new ChildScript(`
      const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      console.log(l.addr.port);
      const c = await l.accept();
      await c.read(new Uint8Array(1));
      Deno.exit(0);
    `);
    const port = Number(await origin.line());
    await using client = await openTunnel(proxy, `127.0.0.1:${port}`);
    client.reader.timeoutMs = PROMPT_CLOSE_MS;
    await client.write(pseudoRandomBytes(64 * 1024, 7));
    assert.equal(await origin.exited(), 0);
    const exitedAt = performance.now();
    await client.reader.readToEnd("waiting for the proxy to close after the origin's reset");
    const ms = performance.now() - exitedAt;
    assert.ok(client.reader.eof);
    assert.ok(ms < PROMPT_CLOSE_MS, `client closed ${ms.toFixed(0)} ms after the origin's reset`);
    assert.equal((await log.nth(0)).end, "reset");
  });

  await t.step("client process exits with unread bytes (RST only): the origin connection is closed", async () => {
    log = new TunnelLog();
    await using origin = new OneShotOrigin(async (c) => {
      c.reader.timeoutMs = 5000;
      await c.write(pseudoRandomBytes(64 * 1024, 8));
      await c.waitEof();
      return { eof: c.reader.eof, at: performance.now() };
    });
    await using client = new ChildScript(`
      const c = await Deno.connect({ hostname: "127.0.0.1", port: ${proxy.port} });
      await c.write(new TextEncoder().encode(${JSON.stringify(connectRequest(origin.authority))}));
      // The 200 and one tunnelled byte; the rest of the origin's bytes stay unread.
      const want = ${ESTABLISHED.length + 1};
      const buf = new Uint8Array(want);
      let got = 0;
      while (got < want) {
        const n = await c.read(buf.subarray(got));
        if (n === null) Deno.exit(3);
        got += n;
      }
      Deno.exit(new TextDecoder().decode(buf.subarray(0, want - 1)) === ${JSON.stringify(ESTABLISHED)} ? 0 : 4);
    `);
    assert.equal(await client.exited(), 0);
    const exitedAt = performance.now();
    const seen = await origin.result;
    assert.ok(seen.eof);
    const ms = seen.at - exitedAt;
    assert.ok(ms < PROMPT_CLOSE_MS, `origin closed ${ms.toFixed(0)} ms after the client's reset`);
    assert.equal((await log.nth(0)).end, "reset");
  });

  await t.step(
    "origin closes with unread bytes (FIN, then RST): the client sees EOF; its next byte ends the tunnel",
    async () => {
      log = new TunnelLog();
      const closedAt = deferred<number>();
      await using origin = new OneShotOrigin(async (c) => {
        await c.reader.readExact(1, "waiting for the client's bytes");
        c.close();
        closedAt.resolve(performance.now());
      });
      await using client = await openTunnel(proxy, origin.authority);
      client.reader.timeoutMs = PROMPT_CLOSE_MS;
      await client.write(pseudoRandomBytes(64 * 1024, 9));
      await origin.result;
      await client.reader.readToEnd("waiting for the proxy to pass on the origin's close");
      const ms = performance.now() - await closedAt.promise;
      assert.ok(client.reader.eof);
      assert.ok(ms < PROMPT_CLOSE_MS, `client saw EOF ${ms.toFixed(0)} ms after the origin's close`);
      // The origin is gone: relaying the next byte fails, and the proxy then closes everything.
      await client.write("more");
      assert.equal((await log.nth(0)).end, "reset");
    },
  );

  await t.step(
    "client closes with unread bytes (FIN, then RST): the origin sees EOF; its next byte ends the tunnel",
    async () => {
      log = new TunnelLog();
      const eofSeen = deferred<number>();
      const more = deferred();
      await using origin = new OneShotOrigin(async (c) => {
        c.reader.timeoutMs = PROMPT_CLOSE_MS;
        await c.write(pseudoRandomBytes(64 * 1024, 10));
        await c.waitEof();
        eofSeen.resolve(performance.now());
        await more.promise;
        await c.write("more");
      });
      await using client = await openTunnel(proxy, origin.authority);
      await client.reader.readExact(1, "waiting for the origin's bytes");
      const closedAt = performance.now();
      client.close();
      const ms = await within(eofSeen.promise, PROMPT_CLOSE_MS + 1000, "waiting for the origin to see EOF") - closedAt;
      assert.ok(ms < PROMPT_CLOSE_MS, `origin saw EOF ${ms.toFixed(0)} ms after the client's close`);
      more.resolve();
      await origin.result;
      assert.equal((await log.nth(0)).end, "reset");
    },
  );

  await t.step("the proxy still serves a fresh tunnel", async () => {
    await assertTunnelStillWorks(proxy);
  });
});

Deno.test("early data: bytes sent with the CONNECT head, before the 200, reach the origin intact and first", async (t) => {
  let log = new TunnelLog();
  await using proxy = startTestProxy({ connectPorts: "*", onTunnelEnd: (stats) => log.onTunnelEnd(stats) });
  const rows = [
    { name: "5 bytes", size: 5 },
    { name: "30 KiB (within the head read)", size: 30 * 1024 },
    { name: "300 KiB (more than the proxy's head buffer)", size: 300 * 1024 },
  ];
  for (const row of rows) {
    await t.step(row.name, async () => {
      log = new TunnelLog();
      const early = pseudoRandomBytes(row.size, 100 + row.size);
      const later = latin1("after the 200");
      await using origin = new OneShotOrigin(async (c) => {
        // Read from the first byte of the connection: the early data must come first.
        const first = await c.reader.readExact(early.length, "reading the early data");
        await c.write("ack");
        const second = await c.reader.readToEnd("reading the rest up to the client's FIN");
        await c.closeWrite();
        return { first: sha256(first), firstLength: first.length, second: text(second) };
      });
      const client = await openTunnel(proxy, origin.authority, early);
      try {
        assert.equal(text(await client.reader.readExact(3)), "ack");
        await client.write(later);
        await client.closeWrite();
        assert.equal(text(await client.reader.readToEnd()), "");
      } finally {
        client.close();
      }
      assert.deepEqual(await origin.result, {
        first: sha256(early),
        firstLength: early.length,
        second: "after the 200",
      });
      const stats = await log.nth(0);
      assert.equal(stats.bytesUp, early.length + later.length);
      assert.equal(stats.bytesDown, 3);
    });
  }
});

// ---------------------------------------------------------------------------
// CONNECT: policy and failures before the 200

Deno.test("CONNECT port policy: the default allows only 443 (403, origin never contacted); connectPorts [port] allows exactly that port", async (t) => {
  await using origin = new OneShotOrigin(async (c) => {
    const got = await c.reader.readExact(7, "reading the allowed tunnel's bytes");
    await c.write("welcome");
    return text(got);
  });
  await t.step("default policy: a port other than 443 → 403", async () => {
    await using proxy = startTestProxy();
    await connectFails(proxy, connectRequest(origin.authority), 403);
  });
  await t.step("default policy: 443 is not refused by policy", async () => {
    // Nothing of ours listens on 443: 502 (refused) shows the policy let it through.
    await using proxy = startTestProxy();
    await using client = await proxy.connect();
    await client.write(connectRequest("127.0.0.1:443"));
    const res = await client.response("CONNECT");
    assert.notEqual(res.status, 403);
  });
  await using proxy = startTestProxy({ connectPorts: [origin.port] });
  await t.step("connectPorts [port]: another port → 403 (not 502: the refused port is never tried)", async () => {
    await connectFails(proxy, connectRequest(`127.0.0.1:${closedPort()}`), 403);
  });
  await t.step("connectPorts [port]: that port → 200, and it is the origin's first connection", async () => {
    await using client = await openTunnel(proxy, origin.authority);
    await client.write("allowed");
    assert.equal(text(await client.reader.readExact(7)), "welcome");
    assert.equal(await origin.result, "allowed");
    // Connections are accepted in order: a connect made for the 403s would be conns[0].
    assert.equal(origin.origin.conns.length, 1);
  });
});

Deno.test("CONNECT to a refused or unresolvable target → 502, before any 200", async (t) => {
  await using proxy = startTestProxy({ connectPorts: "*" });
  await t.step("refused (a port that was bound, then closed) → 502", async () => {
    await connectFails(proxy, connectRequest(`127.0.0.1:${closedPort()}`), 502);
  });
  // An unresolvable name is classified in tests/upstream_test.ts (a lookup would leave the machine).
  await t.step("the proxy still serves a tunnel", async () => {
    await assertTunnelStillWorks(proxy);
  });
});

Deno.test("invalid CONNECT targets → 400 (RFC 9112 §3.2.3: authority-form with a port)", async (t) => {
  await using proxy = startTestProxy({ connectPorts: "*" });
  const rows = [
    { name: "origin-form /path", target: "/path" },
    { name: "absolute-form http://x:443", target: "http://x:443" },
    { name: "host without a port", target: "localhost" },
    { name: "host with an empty port", target: "localhost:" },
    { name: "unterminated IPv6 literal [::1", target: "[::1" },
    { name: "IPv6 literal without a port [::1]", target: "[::1]" },
    { name: "empty host :443", target: ":443" },
    { name: "userinfo u@localhost:443", target: "u@localhost:443" },
    { name: "port out of range", target: "localhost:65536" },
    { name: "path after the port", target: "localhost:443/x" },
  ];
  for (const row of rows) {
    await t.step(row.name, async () => {
      await connectFails(proxy, `CONNECT ${row.target} HTTP/1.1\r\nHost: localhost:443\r\n\r\n`, 400);
    });
  }
});

// ---------------------------------------------------------------------------
// Tunnel lifetime: idle timeout, stats, shutdown

Deno.test("tunnel idle timeout: tunnelIdleTimeoutMs 300 closes an idle tunnel, not an active one", async (t) => {
  const log = new TunnelLog();
  await using proxy = startTestProxy({ connectPorts: "*", tunnelIdleTimeoutMs: 300, onTunnelEnd: log.onTunnelEnd });

  await t.step("a tunnel with a byte every 100 ms outlives the timeout; idle, it is closed", async () => {
    await using origin = new OneShotOrigin(async (c) => ({ echoed: await echoFromPending(c), at: performance.now() }));
    await using client = await openTunnel(proxy, origin.authority);
    const started = performance.now();
    for (let i = 0; i < 8; i++) {
      if (i > 0) await pause(100);
      await client.write("p");
      assert.equal(text(await client.reader.readExact(1, "waiting for the echo")), "p", `round ${i} failed`);
    }
    // The last byte just arrived: from here on the tunnel is idle.
    const idleFrom = performance.now();
    assert.ok(idleFrom - started > 600);
    assert.equal(text(await client.reader.readToEnd("waiting for the idle timeout")), "");
    const ms = performance.now() - idleFrom;
    assert.ok(ms >= 250 && ms < 2000, `closed after ${ms.toFixed(0)} ms idle (tunnelIdleTimeoutMs 300)`);
    const seen = await origin.result;
    assert.equal(seen.echoed, 8);
    assert.ok(seen.at - idleFrom < 2000, "the origin side was not closed");
    const stats = await log.nth(0);
    assert.deepEqual(
      { bytesUp: stats.bytesUp, bytesDown: stats.bytesDown, end: stats.end },
      { bytesUp: 8, bytesDown: 8, end: "idle-timeout" },
    );
  });

  await t.step("an upgraded connection follows the same idle timeout", async () => {
    await using origin = new OneShotOrigin(async (c) => {
      await c.readHead();
      await c.write("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n");
      await c.waitEof();
      return performance.now();
    });
    await using client = await proxy.connect();
    const idleFrom = performance.now();
    await client.write(get(origin.origin.url("/idle"), ["Connection: Upgrade", "Upgrade: echo"]));
    assert.equal((await client.response()).status, 101);
    assert.equal(text(await client.reader.readToEnd("waiting for the idle timeout")), "");
    const ms = performance.now() - idleFrom;
    assert.ok(ms >= 250 && ms < 2000, `closed after ${ms.toFixed(0)} ms idle (tunnelIdleTimeoutMs 300)`);
    assert.ok(await origin.result - idleFrom < 2000);
    assert.equal((await log.nth(1)).end, "idle-timeout");
  });
});

Deno.test('onTunnelEnd reports exact byte counts, end "closed" and which side sent the first FIN', async (t) => {
  let log = new TunnelLog();
  await using proxy = startTestProxy({ connectPorts: "*", onTunnelEnd: (stats) => log.onTunnelEnd(stats) });
  const rows = [
    { name: "client closes first", first: "client" as const, up: 1234, down: 56789 },
    { name: "origin closes first", first: "origin" as const, up: 98765, down: 4321 },
  ];
  for (const row of rows) {
    await t.step(row.name, async () => {
      log = new TunnelLog();
      const up = pseudoRandomBytes(row.up, row.up);
      const down = pseudoRandomBytes(row.down, row.down);
      await using origin = new OneShotOrigin(async (c) => {
        await c.write(down);
        const got = await c.reader.readExact(up.length, "reading the upload");
        if (row.first === "origin") await c.closeWrite();
        const rest = await c.reader.readToEnd("waiting for the client's FIN");
        if (row.first === "client") await c.closeWrite();
        return sha256(got) === sha256(up) && rest.length === 0;
      });
      await using client = await openTunnel(proxy, origin.authority);
      await client.write(up);
      assert.equal(sha256(await client.reader.readExact(down.length)), sha256(down));
      if (row.first === "client") {
        await client.closeWrite();
        assert.equal(text(await client.reader.readToEnd()), "");
      } else {
        assert.equal(text(await client.reader.readToEnd()), "");
        await client.closeWrite();
      }
      assert.equal(await origin.result, true);
      const stats = await log.nth(0);
      assert.deepEqual(
        { target: stats.target, bytesUp: stats.bytesUp, bytesDown: stats.bytesDown, firstFin: stats.firstFin },
        { target: origin.authority, bytesUp: row.up, bytesDown: row.down, firstFin: row.first },
      );
      assert.equal(stats.end, "closed");
      assert.ok(stats.durationMs >= 0 && stats.durationMs < 5000);
    });
  }
});

Deno.test("graceful shutdown with an open tunnel: it works during the grace period, is closed after it, and finished resolves", async () => {
  const log = new TunnelLog();
  await using origin = new OneShotOrigin(echoFromPending);
  await using proxy = startTestProxy({ connectPorts: "*", onTunnelEnd: log.onTunnelEnd });
  await using client = await openTunnel(proxy, origin.authority);
  await client.write("before");
  assert.equal(text(await client.reader.readExact(6)), "before");

  const graceMs = 300;
  const started = performance.now();
  const stopped = proxy.handle.shutdown(graceMs);
  await client.write("during");
  assert.equal(text(await client.reader.readExact(6)), "during");
  assert.equal(text(await client.reader.readToEnd("waiting for shutdown to close the tunnel")), "");
  const ms = performance.now() - started;
  assert.ok(ms >= graceMs - 50 && ms < 3000, `tunnel closed ${ms.toFixed(0)} ms after shutdown(${graceMs})`);
  await within(stopped, 3000, "waiting for shutdown()");
  await within(proxy.handle.finished, 3000, "waiting for finished");
  assert.equal(await origin.result, 12, "the origin side was not closed");
  // TunnelEnd documents "aborted" as the end of a tunnel closed by shutdown.
  const stats = await log.nth(0);
  assert.deepEqual(
    { bytesUp: stats.bytesUp, bytesDown: stats.bytesDown, end: stats.end },
    { bytesUp: 12, bytesDown: 12, end: "aborted" },
  );
});

// ---------------------------------------------------------------------------
// Upgrade (RFC 9110 §7.8)

const WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/** One WebSocket frame from the client: always masked (RFC 6455 §5.3). */
function wsFrame(opcode: number, payload: Uint8Array, maskKey = [0x37, 0xfa, 0x21, 0x3d]): Uint8Array {
  const n = payload.length;
  const ext = n < 126 ? 0 : n < 65536 ? 2 : 8;
  const out = new Uint8Array(2 + ext + 4 + n);
  const view = new DataView(out.buffer);
  out[0] = 0x80 | opcode; // FIN, one frame per message
  out[1] = 0x80 | (ext === 0 ? n : ext === 2 ? 126 : 127);
  if (ext === 2) view.setUint16(2, n);
  if (ext === 8) view.setBigUint64(2, BigInt(n));
  out.set(maskKey, 2 + ext);
  for (let i = 0; i < n; i++) out[6 + ext + i] = payload[i] ^ maskKey[i & 3];
  return out;
}

interface WsFrame {
  fin: boolean;
  opcode: number;
  masked: boolean;
  payload: Uint8Array;
}

/** Reads one WebSocket frame. */
async function readWsFrame(r: WireReader): Promise<WsFrame> {
  const exact = async (n: number) => {
    const b = await r.readExact(n, "reading a WebSocket frame");
    assert.equal(b.length, n, "connection ended inside a WebSocket frame");
    return b;
  };
  const h = await exact(2);
  let n = h[1] & 0x7f;
  if (n === 126) {
    const e = await exact(2);
    n = (e[0] << 8) | e[1];
  } else if (n === 127) {
    const e = await exact(8);
    n = Number(new DataView(e.buffer, e.byteOffset, 8).getBigUint64(0));
  }
  const masked = (h[1] & 0x80) !== 0;
  const key = masked ? await exact(4) : null;
  const payload = n === 0 ? new Uint8Array(0) : await exact(n);
  if (key) { for (let i = 0; i < n; i++) payload[i] ^= key[i & 3]; }
  return { fin: (h[0] & 0x80) !== 0, opcode: h[0] & 0x0f, masked, payload };
}

/** Reads one whole data message (joining continuation frames); every frame must be unmasked. */
async function readWsMessage(r: WireReader): Promise<{ opcode: number; payload: Uint8Array }> {
  const first = await readWsFrame(r);
  assert.equal(first.masked, false, "a server frame was masked");
  const parts = [first.payload];
  let frame = first;
  while (!frame.fin) {
    frame = await readWsFrame(r);
    assert.equal(frame.masked, false, "a server frame was masked");
    assert.equal(frame.opcode, 0, "expected a continuation frame");
    parts.push(frame.payload);
  }
  return { opcode: first.opcode, payload: concat(parts) };
}

Deno.test("WebSocket through the proxy over plain HTTP: 101 with a correct accept key, masked frames echoed", async () => {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    if (req.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      return new Response("upgrade please\n", { status: 426 });
    }
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.onmessage = (e) => socket.send(e.data);
    return response;
  });
  try {
    const log = new TunnelLog();
    await using proxy = startTestProxy({ onTunnelEnd: log.onTunnelEnd });
    const authority = `127.0.0.1:${server.addr.port}`;
    const key = btoa(String.fromCharCode(...pseudoRandomBytes(16, 42)));
    await using client = await proxy.connect();
    await client.write(
      `GET http://${authority}/ws HTTP/1.1\r\nHost: ${authority}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
        `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
    );
    const res = await client.response();
    assert.equal(res.status, 101);
    assert.deepEqual(listTokens(res.fields, "upgrade"), ["websocket"]);
    assert.ok(listTokens(res.fields, "connection").includes("upgrade"));
    const accept = createHash("sha1").update(key + WS_GUID).digest("base64");
    assert.equal(fieldValue(res.fields, "sec-websocket-accept"), accept);

    const message = "hello through the proxy ✓";
    await client.write(wsFrame(0x1, new TextEncoder().encode(message)));
    const echoed = await readWsMessage(client.reader);
    assert.equal(echoed.opcode, 0x1);
    assert.equal(new TextDecoder().decode(echoed.payload), message);

    // A binary message with a 64-bit length.
    const blob = pseudoRandomBytes(70_000, 43);
    await client.write(wsFrame(0x2, blob));
    const back = await readWsMessage(client.reader);
    assert.equal(back.opcode, 0x2);
    assert.equal(sha256(back.payload), sha256(blob));

    // Close handshake: code 1000, echoed by the server; then the TCP connection ends.
    await client.write(wsFrame(0x8, new Uint8Array([0x03, 0xe8])));
    const close = await readWsFrame(client.reader);
    assert.equal(close.opcode, 0x8);
    assert.deepEqual([...close.payload.subarray(0, 2)], [0x03, 0xe8]);
    await client.closeWrite();
    assert.equal(text(await client.reader.readToEnd("waiting for the WebSocket connection to end")), "");
    const stats = await log.nth(0);
    assert.equal(stats.target, authority);
    assert.equal(stats.end, "closed");
  } finally {
    await server.shutdown();
    await server.finished;
  }
});

Deno.test("upgrade offer answered with 200: relayed as a normal response without Upgrade, and HTTP continues", async (t) => {
  const rows = [
    { name: "Upgrade listed in the origin's Connection", fields: "Connection: upgrade\r\nUpgrade: websocket\r\n" },
    { name: "Upgrade alone (hop-by-hop by definition, RFC 9110 §7.6.1)", fields: "Upgrade: websocket\r\n" },
  ];
  for (const row of rows) {
    await t.step(row.name, async () => {
      await using origin = startOrigin(serve((req) => {
        if (req.target === "/chat") {
          return `HTTP/1.1 200 OK\r\n${row.fields}Content-Length: 11\r\n\r\nnot upgrade`;
        }
        return ok(`target=${req.target}`);
      }));
      await using proxy = startTestProxy();
      await using client = await proxy.connect();
      await client.write(get(origin.url("/chat"), ["Connection: Upgrade", "Upgrade: websocket"]));
      const res = await client.response();
      assert.equal(res.status, 200);
      assert.equal(text(res.body), "not upgrade");
      assert.ok(!hasField(res.fields, "upgrade"), `Upgrade relayed: ${JSON.stringify(res.headRaw)}`);
      assert.ok(!listTokens(res.fields, "connection").includes("upgrade"));
      // The offer itself was forwarded (RFC 9110 §7.8).
      const offer = origin.requests[0];
      assert.deepEqual(listTokens(offer.fields, "upgrade"), ["websocket"]);
      assert.ok(listTokens(offer.fields, "connection").includes("upgrade"));

      // The same client connection carries another HTTP request, parsed and rewritten by the proxy.
      await client.write(get(origin.url("/next")));
      const next = await client.response();
      assert.equal(next.status, 200);
      assert.equal(text(next.body), "target=/next");
      const second = origin.requests[1];
      assert.equal(second.startLine, "GET /next HTTP/1.1");
      assert.ok(fieldValues(second.fields, "via").some((v) => /\bwaypost\b/.test(v)));
    });
  }
});

Deno.test("101 from a raw origin: early bytes after the head, 1 MiB echoed, half-close both ways", async () => {
  const up = pseudoRandomBytes(MIB, 9);
  await using origin = new OneShotOrigin(async (c) => {
    const req = await c.readHead();
    assert.ok(req);
    // The 101 head and the first bytes of the new protocol in one write.
    await c.write("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\n\r\nHELLO");
    const echoed = await echoFromPending(c);
    await c.write("BYE");
    await c.closeWrite();
    return { req, echoed };
  });
  const log = new TunnelLog();
  await using proxy = startTestProxy({ onTunnelEnd: log.onTunnelEnd });
  await using client = await proxy.connect();
  await client.write(get(origin.origin.url("/up"), ["Connection: Upgrade", "Upgrade: echo/1"]));
  const res = await client.response();
  assert.equal(res.status, 101);
  assert.deepEqual(listTokens(res.fields, "upgrade"), ["echo/1"]);
  assert.ok(listTokens(res.fields, "connection").includes("upgrade"));
  assert.equal(text(await client.reader.readExact(5)), "HELLO");
  const [got] = await Promise.all([
    client.reader.readExact(up.length + 3, "reading the echo"),
    (async () => {
      await client.write(up);
      await client.closeWrite();
    })(),
  ]);
  assert.equal(sha256(got.subarray(0, up.length)), sha256(up));
  assert.equal(text(got.subarray(up.length)), "BYE");
  assert.equal(text(await client.reader.readToEnd()), "");
  assert.ok(client.reader.eof && !client.reader.reset);
  const { req, echoed } = await origin.result;
  assert.equal(echoed, up.length);
  assert.deepEqual(listTokens(req.fields, "upgrade"), ["echo/1"]);
  assert.ok(listTokens(req.fields, "connection").includes("upgrade"));
  const stats = await log.nth(0);
  assert.deepEqual(
    { bytesUp: stats.bytesUp, bytesDown: stats.bytesDown, firstFin: stats.firstFin, end: stats.end },
    { bytesUp: up.length, bytesDown: 5 + up.length + 3, firstFin: "client", end: "closed" },
  );
});

Deno.test("an active upgraded connection is not cut by the request-body timeout", async () => {
  // bodyTimeoutMs bounds a silent request or response body; after a 101 there is no body, and
  // bytes flow every 100 ms, so nothing may close this connection before the client does.
  await using origin = new OneShotOrigin(async (c) => {
    await c.readHead();
    await c.write("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n");
    const echoed = await echoFromPending(c);
    await c.closeWrite();
    return echoed;
  });
  await using proxy = startTestProxy({ bodyTimeoutMs: 300 });
  await using client = await proxy.connect();
  await client.write(get(origin.origin.url("/live"), ["Connection: Upgrade", "Upgrade: echo"]));
  assert.equal((await client.response()).status, 101);
  for (let i = 0; i < 10; i++) {
    await client.write("p");
    const got = await client.reader.readExact(1, "waiting for the echo");
    assert.equal(text(got), "p", `echo ${i} missing: the connection was closed ${i * 100} ms in`);
    await pause(100);
  }
  await client.closeWrite();
  assert.equal(text(await client.reader.readToEnd()), "");
  assert.equal(await origin.result, 10);
});

Deno.test("101 to a request that offered no upgrade → 502 (RFC 9110 §15.2.2)", async () => {
  await using origin = startOrigin(async (c) => {
    await c.readHead();
    await c.write("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nraw bytes");
    await c.waitEof();
  });
  await using proxy = startTestProxy();
  await using client = await proxy.connect();
  await client.write(get(origin.url("/no-offer")));
  const res = await client.response();
  assert.equal(res.status, 502);
  assert.ok(!client.receivedText.includes("raw bytes"));
});

Deno.test("a half-open tunnel (client FIN, origin silent and never closing) ends after the body timeout", async () => {
  // RFC 9110 §9.3.6: a tunnel ends once a side has closed; the other direction may still
  // flow (half-close), but a peer that neither sends nor closes cannot hold it forever.
  const log = new TunnelLog();
  await using proxy = startTestProxy({ connectPorts: "*", bodyTimeoutMs: 300, onTunnelEnd: log.onTunnelEnd });
  await using origin = new OneShotOrigin(async (c) => {
    await c.waitEof(); // sees the client's FIN, then stays silent without closing
    return performance.now();
  });
  await using client = await openTunnel(proxy, origin.authority);
  const finAt = performance.now();
  await client.closeWrite();
  assert.equal(text(await client.reader.readToEnd("waiting for the half-open tunnel to end")), "");
  const ms = performance.now() - finAt;
  assert.ok(ms >= 250 && ms < 3000, `closed ${ms.toFixed(0)} ms after the FIN (bodyTimeoutMs 300)`);
  const stats = await log.nth(0);
  assert.deepEqual({ firstFin: stats.firstFin, end: stats.end }, { firstFin: "client", end: "idle-timeout" });
});
