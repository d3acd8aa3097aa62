/**
 * Findings of the correctness review (issue 13), each shown from the wire:
 * field-count limits real clients hit, trailers and transfer-coding parameters
 * from origins, endless interim responses, retries after an interim response,
 * timeouts of 0, and option validation.
 */
import assert from "node:assert/strict";
import { resolveOptions } from "../lib/options.ts";
import { silentLogger, startProxy } from "../mod.ts";
import {
  echoTarget,
  fieldValue,
  get,
  ok,
  type OriginConn,
  readHead,
  serve,
  startOrigin,
  startTestProxy,
  text,
} from "./util.ts";

Deno.test("field-count limit: 1,000 request fields pass, 1,001 get 431 (the 64 KiB byte limit is the real bound)", async () => {
  await using origin = startOrigin(serve((req) => ok(`fields=${req.fields.length}`)));
  await using proxy = startTestProxy();
  const many = (n: number) => Array.from({ length: n }, (_, i) => `X-F${i}: ${i}`);
  // get() adds Host: 1 field, so 999 more make 1,000.
  const passed = await proxy.roundTrip(get(origin.url("/"), many(999)));
  assert.equal(passed.status, 200);
  assert.match(text(passed.body), /^fields=\d+$/);
  const refused = await proxy.roundTrip(get(origin.url("/"), many(1000)));
  assert.equal(refused.status, 431);
});

Deno.test("field-count limit: a response with 1,500 fields (many Set-Cookie) is relayed", async () => {
  const cookies = Array.from({ length: 1500 }, (_, i) => `Set-Cookie: c${i}=${i}`);
  await using origin = startOrigin(serve(() => ok("many", cookies)));
  await using proxy = startTestProxy();
  const res = await proxy.roundTrip(get(origin.url("/")));
  assert.equal(res.status, 200);
  assert.equal(res.fields.filter(([n]) => n.toLowerCase() === "set-cookie").length, 1500);
});

Deno.test("trailers from an origin with obs-fold or whitespace before the colon are repaired, not fatal", async () => {
  await using origin = startOrigin(
    serve(() =>
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n" +
      "5\r\nhello\r\n0\r\nX-Sum: a\r\n  b\r\nX-Other : c\r\n\r\n"
    ),
  );
  await using proxy = startTestProxy();
  const res = await proxy.roundTrip(get(origin.url("/")));
  assert.equal(res.status, 200);
  assert.equal(text(res.body), "hello");
  assert.ok(res.complete);
  assert.deepEqual(res.trailers, [["X-Sum", "a b"], ["X-Other", "c"]]);
});

Deno.test("a transfer coding with parameters is relayed with them", async () => {
  await using origin = startOrigin(
    serve(() => "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip ; level=1, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
  );
  await using proxy = startTestProxy();
  const res = await proxy.roundTrip(get(origin.url("/")));
  assert.equal(res.status, 200);
  assert.equal(fieldValue(res.fields, "transfer-encoding"), "gzip;level=1, chunked");
  assert.equal(text(res.body), "abc");
});

Deno.test("chunked with parameters is not chunked: 400 for a request, 502 for a response", async () => {
  await using origin = startOrigin(
    serve((req) =>
      req.target === "/bad" ? "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked;x=1\r\n\r\n0\r\n\r\n" : ok("fine")
    ),
  );
  await using proxy = startTestProxy();
  const request = await proxy.roundTrip(
    `POST ${origin.url("/")} HTTP/1.1\r\nHost: ${origin.authority}\r\nTransfer-Encoding: chunked;x=1\r\n\r\n0\r\n\r\n`,
  );
  assert.equal(request.status, 400);
  assert.equal((await proxy.roundTrip(get(origin.url("/bad")))).status, 502);
});

Deno.test("endless interim responses: capped, then 502", async () => {
  await using origin = startOrigin(async (c: OriginConn) => {
    await c.readRequest();
    try {
      for (let i = 0; i < 10_000; i++) await c.write("HTTP/1.1 100 Continue\r\n\r\n");
    } catch {
      // The proxy gave up and closed: expected.
    }
  });
  await using proxy = startTestProxy();
  await using client = await proxy.connect();
  await client.write(get(origin.url("/")));
  let interim = 0;
  while (true) {
    const res = await client.response();
    if (res.status >= 200) {
      assert.equal(res.status, 502);
      break;
    }
    interim++;
  }
  assert.ok(interim <= 32, `${interim} interim responses relayed`);
});

Deno.test("a pooled connection that sent a 1xx and then closed is not retried", async () => {
  let requests = 0;
  await using origin = startOrigin(async (c: OriginConn) => {
    if (c.index === 0) {
      await c.readRequest();
      requests++;
      await c.write(ok("first"));
      await c.readRequest();
      requests++;
      await c.write("HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n");
      c.close();
      return;
    }
    while (await c.readRequest() !== null) {
      requests++;
      await c.write(ok("again"));
    }
  });
  await using proxy = startTestProxy();
  assert.equal(text((await proxy.roundTrip(get(origin.url("/1")))).body), "first");
  await using client = await proxy.connect();
  await client.write(get(origin.url("/2")));
  const interim = await client.response();
  assert.equal(interim.status, 103);
  const final = await client.response();
  assert.equal(final.status, 502);
  assert.equal(requests, 2, "the origin saw the request twice");
});

Deno.test("a 101 for a protocol the client did not offer is 502", async () => {
  await using origin = startOrigin(async (c: OriginConn) => {
    await c.readRequest();
    await c.write("HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n");
    await c.waitEof();
  });
  await using proxy = startTestProxy();
  const res = await proxy.roundTrip(
    `GET ${origin.url("/")} HTTP/1.1\r\nHost: ${origin.authority}\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n`,
  );
  assert.equal(res.status, 502);
});

Deno.test("timeouts of 0 mean off", async (t) => {
  await t.step("idle 0: a kept-alive connection stays open between requests", async () => {
    await using origin = startOrigin(echoTarget);
    await using proxy = startTestProxy({ idleTimeoutMs: 0 });
    await using client = await proxy.connect();
    await client.write(get(origin.url("/a")));
    assert.equal((await client.response()).status, 200);
    await new Promise((r) => setTimeout(r, 300));
    await client.write(get(origin.url("/b")));
    assert.equal(text((await client.response()).body), "target=/b");
  });
  await t.step("header 0: a slow head still arrives", async () => {
    await using origin = startOrigin(echoTarget);
    await using proxy = startTestProxy({ headerTimeoutMs: 0 });
    await using client = await proxy.connect();
    const request = get(origin.url("/slow"));
    await client.write(request.slice(0, 10));
    await new Promise((r) => setTimeout(r, 300));
    await client.write(request.slice(10));
    assert.equal((await client.response()).status, 200);
  });
  for (
    const [name, options] of [
      ["response 0", { responseTimeoutMs: 0 }],
      ["body 0", { bodyTimeoutMs: 0 }],
      ["connect 0", { connectTimeoutMs: 0 }],
      ["upstream idle 0", { upstreamIdleTimeoutMs: 0 }],
    ] as const
  ) {
    await t.step(`${name}: a slow origin is waited for`, async () => {
      await using origin = startOrigin(serve(async () => {
        await new Promise((r) => setTimeout(r, 300));
        return ok("late");
      }));
      await using proxy = startTestProxy(options);
      const res = await proxy.roundTrip(get(origin.url("/")));
      assert.equal(res.status, 200);
      assert.equal(text(res.body), "late");
    });
  }
});

Deno.test("options are validated in one place, with a clear TypeError", async (t) => {
  const rows: [string, Record<string, unknown>][] = [
    ["a negative timeout", { idleTimeoutMs: -1 }],
    ["NaN", { connectTimeoutMs: NaN }],
    ["a fraction", { maxConnections: 1.5 }],
    ["a timeout past the timer's range (2^31 ms)", { connectTimeoutMs: 2 ** 31 }],
    ["a port out of range", { port: 70000 }],
    ["zero connections", { maxConnections: 0 }],
    ["a string for a number", { maxFields: "10" }],
    ["an invalid CONNECT port", { connectPorts: [0] }],
    ["a non-token via", { via: "a b" }],
  ];
  for (const [name, options] of rows) {
    await t.step(name, () => {
      assert.throws(() => resolveOptions(options), TypeError);
    });
  }
  await t.step("startProxy refuses before listening", () => {
    assert.throws(() => startProxy({ port: 0, logger: silentLogger, bodyTimeoutMs: -5 }), TypeError);
  });
  await t.step("the limits of the range are accepted", () => {
    resolveOptions({ connectTimeoutMs: 2 ** 31 - 1, idleTimeoutMs: 0, port: 0 });
  });
});

Deno.test("an error answer survives a request body the proxy never reads (lingering close)", async (t) => {
  // More than the loopback socket buffers hold, so the proxy must read it for the client to finish sending.
  const body = "x".repeat(32 * 1024 * 1024);
  await t.step(
    "400 (TE with CL) answered at the head; the client sends its whole 32 MiB body before reading",
    async () => {
      await using origin = startOrigin(echoTarget);
      await using proxy = startTestProxy();
      await using client = await proxy.connect();
      const head =
        `POST ${origin.url("/")} HTTP/1.1\r\nHost: ${origin.authority}\r\nContent-Length: ${body.length}\r\n` +
        `Transfer-Encoding: gzip, chunked\r\n\r\n`;
      await client.write(head + body);
      const res = await client.response();
      assert.equal(res.status, 400);
      assert.ok(res.complete);
      await client.assertClosed();
      assert.equal(origin.conns.length, 0);
    },
  );
  await t.step("503 at the connection limit, with a request body already sent", async () => {
    await using origin = startOrigin(echoTarget);
    await using proxy = startTestProxy({ maxConnectionsPerClient: 1 });
    await using first = await proxy.connect();
    await first.write(get(origin.url("/")));
    assert.equal((await first.response()).status, 200);
    await using second = await proxy.connect();
    const request = `POST ${
      origin.url("/")
    } HTTP/1.1\r\nHost: ${origin.authority}\r\nContent-Length: ${body.length}\r\n\r\n`;
    await second.write(request + body);
    const res = await second.response();
    assert.equal(res.status, 503);
    assert.equal(fieldValue(res.fields, "retry-after"), "1");
    await second.assertClosed();
  });
});

const FIN_THEN_RESET = `
import socket, struct, sys, time
port, target = int(sys.argv[1]), sys.argv[2]
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.connect(("127.0.0.1", port))
s.sendall(("CONNECT %s HTTP/1.1\\r\\nHost: %s\\r\\n\\r\\n" % (target, target)).encode())
got = b""
while b"\\r\\n\\r\\n" not in got:
    got += s.recv(100)
s.shutdown(socket.SHUT_WR)
time.sleep(0.3)
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.close()
`;

Deno.test("a client that resets a half-closed tunnel closes both sides at once", async () => {
  const finSeen = Promise.withResolvers<void>();
  const release = Promise.withResolvers<void>();
  await using origin = startOrigin(async (c: OriginConn) => {
    await c.reader.readToEnd("the client's FIN"); // relayed as our closeWrite
    finSeen.resolve();
    // The origin keeps its side open and sends nothing: only the client's reset can end the tunnel.
    await release.promise;
  });
  await using proxy = startTestProxy({ connectPorts: "*" });
  const out = await new Deno.Command("python3", {
    args: ["-c", FIN_THEN_RESET, String(proxy.port), origin.authority],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, `python3 failed: ${new TextDecoder().decode(out.stderr)}`);
  await finSeen.promise;
  const reset = performance.now();
  while (proxy.handle.connections > 0 && performance.now() - reset < 2500) {
    await new Promise((r) => setTimeout(r, 20));
  }
  release.resolve();
  assert.equal(proxy.handle.connections, 0, "the tunnel outlived the client's reset");
  assert.ok(performance.now() - reset < 2000);
});

const MAIN = new URL("../main.ts", import.meta.url).pathname;

/** Runs the CLI to its exit with `args` and returns the status and stderr (bounded: 15 s). */
async function cliExit(args: string[], denoFlags: string[] = []): Promise<{ code: number; err: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", ...denoFlags, MAIN, ...args],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
  const [status, err] = await Promise.all([child.status, new Response(child.stderr).text()]);
  clearTimeout(timer);
  return { code: status.code, err };
}

Deno.test("usability: errors name what to fix", async (t) => {
  await t.step("a CONNECT refused by the port policy names the port and --connect-ports", async () => {
    await using proxy = startTestProxy();
    const res = await proxy.roundTrip("CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n", "CONNECT");
    assert.equal(res.status, 403);
    assert.match(text(res.body), /port 22/);
    assert.match(text(res.body), /--connect-ports/);
  });
  const held = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (held.addr as Deno.NetAddr).port;
  try {
    await t.step("address in use: exit 1 naming the address", async () => {
      const { code, err } = await cliExit(["--host", "127.0.0.1", "--port", String(port)]);
      assert.equal(code, 1);
      assert.match(err, new RegExp(`127\\.0\\.0\\.1:${port}`));
      assert.match(err, /in use/);
    });
    await t.step("--workers on a port in use: refused, not shared", async () => {
      const { code, err } = await cliExit(
        ["--host", "127.0.0.1", "--port", String(port), "--workers", "2"],
        ["--allow-read", "--unstable-net"],
      );
      assert.equal(code, 1);
      assert.match(err, /in use/);
    });
  } finally {
    held.close();
  }
  await t.step("SIGHUP does not end the proxy", async () => {
    await using origin = startOrigin(echoTarget);
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-net", MAIN, "--host", "127.0.0.1", "--port", "0"],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const reader = child.stdout.getReader();
    let line = "";
    while (!line.includes("\n")) {
      const r = await reader.read();
      if (r.done) break;
      line += new TextDecoder().decode(r.value);
    }
    reader.releaseLock();
    const proxyPort = Number(/:(\d+)/.exec(line)?.[1]);
    child.kill("SIGHUP");
    await new Promise((r) => setTimeout(r, 200));
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxyPort });
    await conn.write(new TextEncoder().encode(get(origin.url("/hup"), ["Connection: close"])));
    const reply = await new Response(conn.readable).text();
    assert.match(reply, /^HTTP\/1.1 200 /);
    child.kill("SIGTERM");
    const [status, err] = await Promise.all([child.status, new Response(child.stderr).text()]);
    await child.stdout.cancel();
    assert.equal(status.code, 0);
    assert.match(err, /SIGHUP ignored/);
  });
});

Deno.test("HTTP/1.0 clients: a body of unknown length is read ahead, so a truncated one is a 502, not a complete-looking close", async (t) => {
  await t.step("truncated chunked body → 502", async () => {
    await using origin = startOrigin(async (c: OriginConn) => {
      await c.readRequest();
      await c.write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
      c.close(); // the last chunk never comes
    });
    await using proxy = startTestProxy();
    await using client = await proxy.connect();
    await client.write(get(origin.url("/"), [], "1.0"));
    const res = await client.response();
    assert.equal(res.status, 502);
  });
  await t.step("a whole chunked body → 200 with Content-Length", async () => {
    await using origin = startOrigin(
      serve(() => "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
    );
    await using proxy = startTestProxy();
    await using client = await proxy.connect();
    await client.write(get(origin.url("/"), [], "1.0"));
    const res = await client.response();
    assert.equal(res.status, 200);
    assert.equal(fieldValue(res.fields, "content-length"), "11");
    assert.equal(text(res.body), "hello world");
    await client.assertClosed();
  });
  await t.step("a body over the read-ahead still streams (close-delimited)", async () => {
    const big = "z".repeat(3 * 1024 * 1024);
    await using origin = startOrigin(async (c: OriginConn) => {
      await c.readRequest();
      await c.write(`HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n${big}`);
      c.close();
    });
    await using proxy = startTestProxy();
    await using client = await proxy.connect();
    await client.write(get(origin.url("/"), [], "1.0"));
    const res = await client.response();
    assert.equal(res.status, 200);
    assert.equal(res.framing, "close");
    assert.equal(res.body.length, big.length);
  });
  const cases: [string, string, number][] = [["a slow body", "text/plain", 1500], [
    "an event stream",
    "text/event-stream",
    200,
  ]];
  for (const [name, type, waitMs] of cases) {
    await t.step(`${name} is not held back: the head and the first bytes come before the rest`, async () => {
      const gate = Promise.withResolvers<void>();
      await using origin = startOrigin(async (c: OriginConn) => {
        await c.readRequest();
        await c.write(`HTTP/1.1 200 OK\r\nContent-Type: ${type}\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nfirst\n\r\n`);
        await gate.promise;
        await c.write("5\r\nlast\n\r\n0\r\n\r\n");
      });
      await using proxy = startTestProxy();
      await using client = await proxy.connect();
      await client.write(get(origin.url("/"), [], "1.0"));
      const started = Date.now();
      const head = await readHead(client.reader, "response");
      assert.ok(head !== null);
      assert.equal(head.status, 200);
      assert.ok(Date.now() - started < waitMs, `the head took ${Date.now() - started} ms`);
      assert.equal(text(await client.reader.readUntil("first\n") ?? new Uint8Array()), "first\n");
      gate.resolve();
      assert.equal(text(await client.reader.readToEnd()), "last\n");
    });
  }
});

// ---- Waiting in slots (issue 14): a slot's bytes are a message's first bytes, handed on at once ----

/** A request of exactly `size` bytes (padded in a field value). */
function requestOfSize(url: string, authority: string, size: number): string {
  const start = `GET ${url} HTTP/1.1\r\nHost: ${authority}\r\nX-Pad: `;
  const request = start + "a".repeat(size - start.length - 4) + "\r\n\r\n";
  assert.equal(request.length, size);
  return request;
}

Deno.test("a kept-alive request of exactly the idle slot's size (512 bytes) is answered, after a wait and back to back", async () => {
  await using origin = startOrigin(serve(() => ok("hi")));
  await using proxy = startTestProxy({ idleTimeoutMs: 5_000 });
  for (const size of [511, 512, 513]) {
    await using client = await proxy.connect(3_000);
    await client.write(requestOfSize(origin.url("/"), origin.authority, 200));
    assert.equal((await client.response()).status, 200);
    await new Promise((r) => setTimeout(r, 30)); // the proxy now waits in its slot
    await client.write(requestOfSize(origin.url("/"), origin.authority, size));
    const second = await client.response();
    assert.equal(second.status, 200, `second request of ${size} bytes`);
    // Back to back: the read started while the response was sent (the prefetch path).
    await client.write(requestOfSize(origin.url("/"), origin.authority, size));
    assert.equal((await client.response()).status, 200, `third request of ${size} bytes`);
  }
});

Deno.test("a head that starts in a slot gets the head timeout and its 408: one byte on a fresh connection, 512 on a kept-alive one", async () => {
  await using origin = startOrigin(serve(() => ok("hi")));
  const records: number[] = [];
  await using proxy = startTestProxy({
    headerTimeoutMs: 300,
    idleTimeoutMs: 5_000,
    hooks: { onExchangeEnd: (r) => void records.push(r.status) },
  });
  {
    await using client = await proxy.connect(3_000);
    const started = performance.now();
    await client.write("G");
    const res = await client.response();
    assert.equal(res.status, 408);
    assert.ok(performance.now() - started < 2_000, "the head timeout, not the idle one");
  }
  {
    await using client = await proxy.connect(3_000);
    await client.write(requestOfSize(origin.url("/"), origin.authority, 200));
    assert.equal((await client.response()).status, 200);
    await new Promise((r) => setTimeout(r, 30));
    const started = performance.now();
    await client.write(requestOfSize(origin.url("/"), origin.authority, 600).slice(0, 512)); // an unfinished head
    const res = await client.response();
    assert.equal(res.status, 408);
    assert.ok(performance.now() - started < 2_000, "the head timeout, not the idle one");
  }
  assert.deepEqual(records.filter((s) => s === 408).length, 2);
});
