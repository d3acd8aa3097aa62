/**
 * Regression tests: each guards one fix and fails on the behaviour before it
 * (described per test). Same harness as forward_test.ts: a raw client, the
 * proxy on port 0 and a scripted raw-TCP origin, all on loopback.
 */
import assert from "node:assert/strict";
import {
  closedPort,
  concat,
  DeadlineError,
  deferred,
  echoTarget,
  fieldValue,
  fieldValues,
  get,
  hasField,
  latin1,
  listTokens,
  type Message,
  ok,
  type OriginConn,
  pseudoRandomBytes,
  readHead,
  serve,
  startOrigin,
  startTestProxy,
  text,
} from "./util.ts";

/** Resolves true when `promise` settles within `ms`, false otherwise (the timer is always cleared). */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<false>((resolve) => timer = setTimeout(() => resolve(false), ms));
  try {
    return await Promise.race([promise.then(() => true), expired]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `condition` every 10 ms for at most `ms`; resolves whether it became true. */
async function pollUntil(condition: () => boolean, ms: number): Promise<boolean> {
  const end = performance.now() + ms;
  while (!condition()) {
    if (performance.now() > end) return false;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return true;
}

/** Waits for the proxy to close `c` (FIN or reset) for at most `ms`; true if it did. */
async function proxyClosesWithin(c: OriginConn, ms: number): Promise<boolean> {
  const saved = c.reader.timeoutMs;
  c.reader.timeoutMs = ms;
  try {
    await c.waitEof();
    return true;
  } catch (error) {
    if (error instanceof DeadlineError) return false; // the deadline closed the connection
    throw error;
  } finally {
    c.reader.timeoutMs = saved;
  }
}

// Old behaviour: an idle pooled connection was not read, so bytes the origin sent while it
// was idle stayed queued and were taken as the answer to the next request on it.
Deno.test("late bytes on an idle pooled upstream connection never reach another client", async () => {
  const aReceived = deferred();
  const conn0Ended = deferred();
  await using origin = startOrigin(async (c) => {
    while (true) {
      const req = await c.readRequest();
      if (req === null) {
        if (c.index === 0) conn0Ended.resolve();
        return;
      }
      if (req.target === "/a") {
        await c.write("HTTP/1.1 204 No Content\r\n\r\n");
        await aReceived.promise; // the proxy has read the 204 and pooled the connection
        await c.write("HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nSECRET");
      } else {
        await c.write(ok("for-b"));
      }
    }
  });
  await using proxy = startTestProxy();
  await using a = await proxy.connect();
  await a.write(get(origin.url("/a")));
  const resA = await a.response();
  assert.equal(resA.status, 204);
  aReceived.resolve();
  // A fixed proxy drops the connection when the late bytes arrive, which the origin sees
  // as EOF. An unfixed one never does: after a bounded wait, B's request decides.
  const dropped = await settlesWithin(conn0Ended.promise, 2000);

  await using b = await proxy.connect();
  await b.write(get(origin.url("/b")));
  const resB = await b.response();
  assert.ok(!b.receivedText.includes("SECRET"), "client B received bytes the origin sent to nobody");
  assert.equal(resB.status, 200);
  assert.equal(text(resB.body), "for-b");
  assert.equal(text(a.reader.pending), "", "client A received bytes after its response");
  assert.ok(dropped, "the proxy kept the idle connection after the late bytes");
});

// Old behaviour: the stale pooled connection was used for the POST; its write succeeded,
// the read saw EOF, and a POST is never retried, so the client got 502.
Deno.test("a pooled connection the origin closed while idle is not used for a POST", async () => {
  const idleClosed = deferred<boolean>();
  await using origin = startOrigin(async (c) => {
    const req = await c.readRequest();
    if (req === null) return;
    await c.write(ok(`${req.method} ${req.target} ${text(req.body)}`, ["Keep-Alive: timeout=1"]));
    if (c.index !== 0) {
      await c.waitEof();
      return;
    }
    // The origin's own idle timeout. It sends its FIN first so it can observe the proxy
    // dropping the connection (the proxy closes it), then closes fully in any case.
    await new Promise((resolve) => setTimeout(resolve, 100));
    await c.closeWrite();
    const dropped = await proxyClosesWithin(c, 1000);
    c.close();
    idleClosed.resolve(dropped);
  });
  await using proxy = startTestProxy();
  {
    await using first = await proxy.connect();
    await first.write(get(origin.url("/first")));
    const res = await first.response();
    assert.equal(res.status, 200);
    assert.equal(text(res.body), "GET /first ");
  }
  const dropped = await idleClosed.promise;

  await using client = await proxy.connect();
  await client.write(
    `POST ${origin.url("/post")} HTTP/1.1\r\nHost: ${origin.authority}\r\nContent-Length: 5\r\n\r\nhello`,
  );
  const res = await client.response();
  assert.equal(res.status, 200);
  assert.equal(text(res.body), "POST /post hello");
  assert.equal(origin.conns.length, 2);
  assert.ok(dropped, "the proxy kept the idle connection after the origin's FIN");
});

// Old behaviour: the 502 for a HEAD request carried its 34-byte text body.
Deno.test("HEAD to an unreachable origin: 502 with a Content-Length and no body bytes", async () => {
  await using proxy = startTestProxy();
  await using client = await proxy.connect();
  const port = closedPort();
  await client.write(`HEAD http://127.0.0.1:${port}/ HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`);
  const res = await client.response("HEAD");
  assert.equal(res.status, 502);
  assert.equal(fieldValues(res.fields, "content-length").length, 1);
  assert.match(fieldValues(res.fields, "content-length")[0], /^[0-9]+$/);
  await client.assertClosed();
});

// Old behaviour: after relaying the early answer, the proxy waited for the rest of the
// request body (which never came) until the 120 s body timeout before closing.
Deno.test("early answer to an incomplete request body: the client sees the close within 3 s", async (t) => {
  const body10 = "0123456789";
  await t.step("HTTP/1.1 client, Content-Length answer with Connection: close", async () => {
    await using origin = startOrigin(async (c) => {
      const req = await c.readHead();
      if (req === null) return;
      // Read what was forwarded, so the close is a FIN rather than a reset.
      await c.reader.readExact(body10.length);
      await c.write("HTTP/1.1 413 Content Too Large\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope");
      c.close();
    });
    await using proxy = startTestProxy();
    await using client = await proxy.connect(3000);
    const started = performance.now();
    await client.write(
      `POST ${origin.url("/up")} HTTP/1.1\r\nHost: ${origin.authority}\r\nContent-Length: 100000\r\n\r\n${body10}`,
    );
    const res = await client.response("POST");
    assert.equal(res.status, 413);
    assert.equal(text(res.body), "nope");
    assert.ok(listTokens(res.fields, "connection").includes("close"));
    await client.assertClosed(); // throws DeadlineError after 3 s
    assert.ok(!client.reader.reset, "the proxy reset the connection instead of closing it");
    assert.ok(performance.now() - started < 3000);
  });
  await t.step("HTTP/1.0 client, close-delimited answer", async () => {
    await using origin = startOrigin(async (c) => {
      const req = await c.readHead();
      if (req === null) return;
      await c.reader.readExact(body10.length);
      await c.write("HTTP/1.1 413 Content Too Large\r\nConnection: close\r\n\r\nnope");
      c.close();
    });
    await using proxy = startTestProxy();
    await using client = await proxy.connect(3000);
    const started = performance.now();
    await client.write(
      `POST ${origin.url("/up")} HTTP/1.0\r\nHost: ${origin.authority}\r\nContent-Length: 100000\r\n\r\n${body10}`,
    );
    const head = await readHead(client.reader, "response");
    assert.ok(head);
    assert.equal(head.status, 413);
    assert.ok(listTokens(head.fields, "connection").includes("close"));
    // The body ends with the connection: reading it to EOF throws DeadlineError after 3 s.
    const rest = await client.reader.readToEnd("waiting for the end of the close-delimited body");
    assert.equal(text(rest), "nope");
    assert.ok(!client.reader.reset, "the proxy reset the connection instead of closing it");
    assert.ok(performance.now() - started < 3000);
  });
});

// Old behaviour: an HTTP/1.0 client asking for keep-alive was answered with
// `Connection: keep-alive` and the connection was kept.
Deno.test("HTTP/1.0 keep-alive is not honoured (RFC 9112 §9.3)", async (t) => {
  await using origin = startOrigin(echoTarget);
  await using proxy = startTestProxy();
  await t.step("forwarded GET", async () => {
    await using client = await proxy.connect();
    await client.write(get(origin.url("/ten"), ["Connection: keep-alive"], "1.0"));
    const res = await client.response();
    assert.equal(res.status, 200);
    assert.equal(text(res.body), "target=/ten");
    assert.deepEqual(listTokens(res.fields, "connection"), ["close"]);
    await client.assertClosed();
  });
  await t.step("OPTIONS * answered by the proxy itself", async () => {
    await using client = await proxy.connect();
    await client.write("OPTIONS * HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    const res = await client.response("OPTIONS");
    assert.equal(res.status, 200);
    assert.deepEqual(listTokens(res.fields, "connection"), ["close"]);
    await client.assertClosed();
  });
});

// Old behaviour: trailer fields were filtered by the hop-by-hop list only, so a field the
// message's Connection named (hop-by-hop by declaration) was forwarded in the trailers.
Deno.test("trailer fields named by Connection are not forwarded", async (t) => {
  await t.step("request trailers (streamed chunked body)", async () => {
    const headReceived = deferred();
    let received: Message | null = null;
    await using origin = startOrigin(async (c) => {
      const req = await c.readHead();
      if (req === null) return;
      headReceived.resolve();
      received = await c.readBody(req);
      await c.write(ok("done"));
      await c.waitEof();
    });
    await using proxy = startTestProxy();
    await using client = await proxy.connect();
    await client.write(
      `POST ${origin.url("/t")} HTTP/1.1\r\nHost: ${origin.authority}\r\nConnection: X-Secret\r\n` +
        `Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n`,
    );
    // The head went out before the body was complete: the body streams, trailers included.
    await headReceived.promise;
    await client.write("0\r\nX-Secret: s\r\nX-Ok: 1\r\n\r\n");
    const res = await client.response("POST");
    assert.equal(res.status, 200);
    assert.ok(received);
    const req: Message = received;
    assert.deepEqual(listTokens(req.fields, "transfer-encoding"), ["chunked"]);
    assert.equal(text(req.body), "hello");
    assert.ok(req.complete);
    assert.deepEqual(req.trailers, [["X-Ok", "1"]]);
  });
  await t.step("request trailers (whole chunked body sent with the head)", async () => {
    await using origin = startOrigin(serve(() => ok("done")));
    await using proxy = startTestProxy();
    const res = await proxy.roundTrip(
      `POST ${origin.url("/t")} HTTP/1.1\r\nHost: ${origin.authority}\r\nConnection: X-Secret\r\n` +
        `Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Secret: s\r\nX-Ok: 1\r\n\r\n`,
    );
    assert.equal(res.status, 200);
    const req = origin.requests.at(-1);
    assert.ok(req);
    assert.equal(text(req.body), "hello");
    assert.deepEqual(req.trailers, [["X-Ok", "1"]]);
  });
  await t.step("response trailers", async () => {
    await using origin = startOrigin(
      serve(() =>
        "HTTP/1.1 200 OK\r\nConnection: X-Secret\r\nTransfer-Encoding: chunked\r\n\r\n" +
        "5\r\nhello\r\n0\r\nX-Secret: s\r\nX-Ok: 1\r\n\r\n"
      ),
    );
    await using proxy = startTestProxy();
    const res = await proxy.roundTrip(get(origin.url("/t")));
    assert.equal(res.status, 200);
    assert.equal(text(res.body), "hello");
    assert.ok(res.complete);
    assert.deepEqual(res.trailers, [["X-Ok", "1"]]);
    assert.ok(!hasField(res.fields, "x-secret"));
  });
});

// Old behaviour: `Trailer` was treated as hop-by-hop and always removed.
Deno.test("Trailer is end-to-end: kept with a trailer section, dropped without one", async (t) => {
  await using origin = startOrigin(
    serve((req) =>
      req.target === "/chunked"
        ? "HTTP/1.1 200 OK\r\nTrailer: X-Ok\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Ok: 1\r\n\r\n"
        : "HTTP/1.1 200 OK\r\nTrailer: X-Ok\r\nContent-Length: 5\r\n\r\nhello"
    ),
  );
  await using proxy = startTestProxy();
  await t.step("chunked response: Trailer field and trailer reach an HTTP/1.1 client", async () => {
    const res = await proxy.roundTrip(get(origin.url("/chunked")));
    assert.equal(res.status, 200);
    assert.equal(res.framing, "chunked");
    assert.deepEqual(fieldValues(res.fields, "trailer"), ["X-Ok"]);
    assert.equal(text(res.body), "hello");
    assert.deepEqual(res.trailers, [["X-Ok", "1"]]);
  });
  await t.step("Content-Length response: Trailer field dropped", async () => {
    const res = await proxy.roundTrip(get(origin.url("/length")));
    assert.equal(res.status, 200);
    assert.equal(res.framing, "length");
    assert.equal(text(res.body), "hello");
    assert.ok(!hasField(res.fields, "trailer"));
  });
});

// Old behaviour: any transfer coding besides chunked made the response a 502.
Deno.test("response Transfer-Encoding: gzip, chunked is relayed to HTTP/1.1 and refused for HTTP/1.0", async (t) => {
  const payload = pseudoRandomBytes(3000, 8);
  const framed = concat([
    latin1(`${(1000).toString(16)}\r\n`),
    payload.subarray(0, 1000),
    latin1(`\r\n${(2000).toString(16)}\r\n`),
    payload.subarray(1000),
    latin1("\r\n0\r\n\r\n"),
  ]);
  await using origin = startOrigin(
    serve(() => concat([latin1("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"), framed])),
  );
  await using proxy = startTestProxy();
  await t.step("HTTP/1.1 client: codings kept, bytes identical", async () => {
    const res = await proxy.roundTrip(get(origin.url("/gz")));
    assert.equal(res.status, 200);
    assert.deepEqual(listTokens(res.fields, "transfer-encoding"), ["gzip", "chunked"]);
    assert.ok(res.complete);
    assert.deepEqual(res.body, payload);
  });
  await t.step("HTTP/1.0 client: 502", async () => {
    const res = await proxy.roundTrip(get(origin.url("/gz"), [], "1.0"));
    assert.equal(res.status, 502);
  });
});

const RESET_BURST = `
import socket, struct, sys
port = int(sys.argv[1])
for _ in range(500):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.connect(("127.0.0.1", port))
    s.close()
`;

// Old behaviour: an accept that failed for a connection already reset (the peer address
// cannot be read) ended the accept loop, and with it the proxy.
Deno.test("a burst of connections reset right after connect does not stop the proxy", async () => {
  await using origin = startOrigin(echoTarget);
  await using proxy = startTestProxy();
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command("python3", {
      args: ["-c", RESET_BURST, String(proxy.port)],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      assert.fail("python3 is required for this test (SO_LINGER 0 resets cannot be made from Deno); install it");
    }
    throw error;
  }
  assert.equal(out.code, 0, `python3 failed: ${new TextDecoder().decode(out.stderr)}`);
  // Every session of a reset connection ends (none is leaked, none counts against limits).
  assert.ok(await pollUntil(() => proxy.handle.connections === 0, 3000), "sessions of reset connections remain");
  const res = await proxy.roundTrip(get(origin.url("/after")));
  assert.equal(res.status, 200);
  assert.equal(text(res.body), "target=/after");
});

// Old behaviour: the request head limit of 100 fields applied to responses: 502.
Deno.test("a response with 150 Set-Cookie fields is relayed", async () => {
  const cookies = Array.from({ length: 150 }, (_, i) => `c${i}=v${i}; Path=/`);
  await using origin = startOrigin(serve(() => ok("many", cookies.map((c) => `Set-Cookie: ${c}`))));
  await using proxy = startTestProxy();
  const res = await proxy.roundTrip(get(origin.url("/cookies")));
  assert.equal(res.status, 200);
  assert.equal(text(res.body), "many");
  assert.deepEqual(fieldValues(res.fields, "set-cookie"), cookies);
});

Deno.test("a malformed second request on a kept-alive connection still gets its 400", async (t) => {
  // Old behaviour: the flag "final head sent" from the first response was still set, so the
  // error of the second head was never answered: 200, then a silent close.
  await using origin = startOrigin(echoTarget);
  await using proxy = startTestProxy();
  for (
    const [name, bad, status] of [
      [
        "invalid field name",
        `GET ${origin.url("/b")} HTTP/1.1\r\nHost: ${origin.authority}\r\nBad Name: x\r\n\r\n`,
        400,
      ],
      ["HTTP/2.0 request line", `GET ${origin.url("/b")} HTTP/2.0\r\n\r\n`, 505],
    ] as const
  ) {
    await t.step(name, async () => {
      await using client = await proxy.connect();
      await client.write(get(origin.url("/a")));
      assert.equal((await client.response()).status, 200);
      await client.write(bad);
      const res = await client.response();
      assert.equal(res.status, status);
      assert.ok(listTokens(res.fields, "connection").includes("close"));
      await client.assertClosed();
    });
  }
});

Deno.test("after a HEAD, the next request's error response carries its body", async () => {
  // Old behaviour: the method of the previous request (HEAD) was still recorded.
  await using origin = startOrigin(echoTarget);
  await using proxy = startTestProxy();
  await using client = await proxy.connect();
  await client.write(`HEAD ${origin.url("/h")} HTTP/1.1\r\nHost: ${origin.authority}\r\n\r\n`);
  assert.equal((await client.response("HEAD")).status, 200);
  await client.write(`GET ${origin.url("/b")} HTTP/1.1\r\nHost: ${origin.authority}\r\nBad Name: x\r\n\r\n`);
  const res = await client.response();
  assert.equal(res.status, 400);
  assert.ok(res.body.length > 0);
});

Deno.test("a connection that carried NTLM/Negotiate stays with its client and is never shared", async () => {
  // Issue 5: "a connection that carried connection-oriented auth (NTLM, Negotiate) is never
  // shared between clients". The origin answers with the id of the TCP connection each
  // request arrived on, and challenges NTLM requests like a Windows server does.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const originPort = (listener.addr as Deno.NetAddr).port;
  const conns: Deno.Conn[] = [];
  const serving = (async () => {
    let next = 0;
    for await (const conn of listener) {
      const id = next++;
      conns.push(conn);
      (async () => {
        const buf = new Uint8Array(8192);
        let pending = "";
        try {
          while (true) {
            const n = await conn.read(buf);
            if (n === null) break;
            pending += new TextDecoder().decode(buf.subarray(0, n));
            let end;
            while ((end = pending.indexOf("\r\n\r\n")) !== -1) {
              const head = pending.slice(0, end);
              pending = pending.slice(end + 4);
              const ntlm = /\r\nauthorization: ntlm /i.test(head) && !/\/final /.test(head);
              const body = `conn=${id}`;
              await conn.write(new TextEncoder().encode(
                ntlm
                  ? `HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: NTLM TlRMTVNTUAACAAAA\r\nContent-Length: ${body.length}\r\n\r\n${body}`
                  : `HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
              ));
            }
          }
        } catch {
          // The proxy closed the connection: the test is over for it.
        }
      })();
    }
  })();
  await using proxy = startTestProxy();
  try {
    const url = `http://127.0.0.1:${originPort}`;
    await using a = await proxy.connect();
    await using b = await proxy.connect();
    await a.write(get(`${url}/a`, ["Authorization: NTLM TlRMTVNTUAABAAAA"]));
    const first = await a.response();
    assert.equal(first.status, 401);
    const pinned = text(first.body);
    await b.write(get(`${url}/b`));
    const other = await b.response();
    assert.equal(other.status, 200);
    assert.notEqual(text(other.body), pinned, "another client was given the NTLM connection");
    await a.write(get(`${url}/final`, ["Authorization: NTLM TlRMTVNTUAADAAAA"]));
    const second = await a.response();
    assert.equal(second.status, 200);
    assert.equal(text(second.body), pinned, "the NTLM handshake did not stay on its connection");
  } finally {
    listener.close();
    for (const conn of conns) {
      try {
        conn.close();
      } catch {
        // Already closed by the proxy.
      }
    }
    await serving.catch(() => {
      // The listener was closed: accepting ends.
    });
  }
});

const RESET_WHILE_WAITING = `
import socket, struct, sys, time
port, target, host = int(sys.argv[1]), sys.argv[2], sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.connect(("127.0.0.1", port))
s.sendall(("GET %s HTTP/1.1\\r\\nHost: %s\\r\\n\\r\\n" % (target, host)).encode())
time.sleep(0.3)
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.close()
`;

// Behaviour kept through the hot-path work: a keep-alive client that resets while the
// origin is still working has its origin request abandoned at once, not when the origin
// answers or the response timeout (60 s) fires.
Deno.test("a client reset while the origin works closes the origin connection at once", async () => {
  const seen = deferred<number>();
  await using origin = startOrigin(async (c) => {
    await c.readHead();
    const start = performance.now();
    await c.waitEof();
    seen.resolve(performance.now() - start);
  });
  await using proxy = startTestProxy();
  const out = await new Deno.Command("python3", {
    args: ["-c", RESET_WHILE_WAITING, String(proxy.port), origin.url("/slow"), `127.0.0.1:${origin.port}`],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, `python3 failed: ${new TextDecoder().decode(out.stderr)}`);
  const ms = await seen.promise;
  assert.ok(ms < 3000, `origin connection closed ${ms.toFixed(0)} ms after the request`);
  assert.ok(await pollUntil(() => proxy.handle.connections === 0, 3000), "the session of the reset client remains");
});

// Guards the ASCII fast paths (native UTF-8 decode and encodeInto): obs-text bytes
// (0x80-0xFF, RFC 9110 §5.5) in field values pass through byte for byte both ways.
Deno.test("obs-text in field values is relayed byte for byte in both directions", async () => {
  const requestValue = "caf\xe9 \xff\x80 na\xefve \xa0end";
  const responseValue = "r\xe9sum\xe9 \xc3\xa9 \xef\xbb\xbf \xfe";
  let seen = "";
  await using origin = startOrigin(serve((req) => {
    seen = fieldValue(req.fields, "x-latin");
    return ok("fine", [`X-Latin: ${responseValue}`, "X-Padding: " + "p".repeat(64)]);
  }));
  await using proxy = startTestProxy();
  const res = await proxy.roundTrip(get(origin.url("/obs"), [`X-Latin: ${requestValue}`]));
  assert.equal(res.status, 200);
  assert.equal(seen, requestValue);
  assert.equal(fieldValue(res.fields, "x-latin"), responseValue);
  assert.equal(text(res.body), "fine");
});
