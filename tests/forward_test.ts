/**
 * End-to-end tests of forwarding (RFC 9110 §7.6, RFC 9112) over real loopback
 * sockets: a raw client talks to the proxy, which talks to a scripted origin
 * that records the exact bytes it receives.
 */
import assert from "node:assert/strict";
import {
  canBindIpv6Loopback,
  type Client,
  closedPort,
  concat,
  decodeChunked,
  deferred,
  echoTarget,
  type Field,
  fieldValue,
  fieldValues,
  fullBacklogListener,
  get,
  hasField,
  latin1,
  listTokens,
  type Message,
  ok,
  type Origin,
  type OriginConn,
  pseudoRandomBytes,
  readHead,
  serve,
  startOrigin,
  startTestProxy,
  type TestProxy,
  text,
  withoutFields,
} from "./util.ts";

const IPV6 = canBindIpv6Loopback();
const BACKLOG_BLOCKS = await (async () => {
  const blocked = await fullBacklogListener();
  blocked?.close();
  return blocked !== null;
})();

const IMF_FIXDATE =
  /^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} GMT$/;

/** `Via` entries (comma-split, case kept). */
function viaEntries(fields: readonly Field[]): string[] {
  return fieldValues(fields, "via").flatMap((v) => v.split(",")).map((e) => e.trim());
}

/** The last request the origin read (its body filled in once the script read it). */
function lastRequest(origin: Origin): Message {
  const m = origin.requests.at(-1);
  assert.ok(m, "the origin received no request");
  return m;
}

/** A normal request through the proxy to a fresh healthy origin succeeds. */
async function assertStillServes(proxy: TestProxy): Promise<void> {
  await using healthy = startOrigin(echoTarget);
  const res = await proxy.roundTrip(get(healthy.url("/after")));
  assert.equal(res.status, 200);
  assert.equal(text(res.body), "target=/after");
}

Deno.test("absolute-form is forwarded in origin-form with Host from the URI", async (t) => {
  await using origin = startOrigin(echoTarget);
  await using proxy = startTestProxy();
  const rows = [
    { name: "path and query byte-exact", suffix: "/a/b%2Fc;p=1?x=1&y=%20z&&=", path: "/a/b%2Fc;p=1?x=1&y=%20z&&=" },
    { name: "empty path becomes /", suffix: "", path: "/" },
    { name: "query without a path gets /", suffix: "?q=1", path: "/?q=1" },
    { name: "sub-delims and colons kept", suffix: "/~u/!$&'()*+,;=:@-._?a=/?b", path: "/~u/!$&'()*+,;=:@-._?a=/?b" },
  ];
  for (const row of rows) {
    await t.step(row.name, async () => {
      const res = await proxy.roundTrip(
        `GET ${
          origin.url(row.suffix)
        } HTTP/1.1\r\nHost: wrong.example:8080\r\nAccept: */*\r\nX-Row: ${row.name}\r\n\r\n`,
      );
      assert.equal(res.status, 200);
      const req = lastRequest(origin);
      assert.equal(req.startLine, `GET ${row.path} HTTP/1.1`);
      // The conflicting client Host is replaced by the URI's authority (RFC 9112 §3.2.2).
      assert.deepEqual(fieldValues(req.fields, "host"), [origin.authority]);
      assert.deepEqual(withoutFields(req.fields, "host", "via", "connection"), [["Accept", "*/*"], [
        "X-Row",
        row.name,
      ]]);
    });
  }
  await t.step("HTTP/1.0 request without Host gets Host from the URI", async () => {
    const res = await proxy.roundTrip(`GET ${origin.url("/ten")} HTTP/1.0\r\n\r\n`);
    assert.equal(res.status, 200);
    const req = lastRequest(origin);
    assert.equal(req.startLine, "GET /ten HTTP/1.1");
    assert.deepEqual(fieldValues(req.fields, "host"), [origin.authority]);
  });
});

Deno.test({
  name: IPV6
    ? "IPv6 literal origin http://[::1]:port/ is reached with Host [::1]:port"
    : "IPv6 literal origin (skipped: ::1 cannot be bound on this machine)",
  ignore: !IPV6,
  async fn() {
    await using origin = startOrigin(echoTarget, { hostname: "::1" });
    await using proxy = startTestProxy();
    const url = `http://[::1]:${origin.port}/six?x=1`;
    const res = await proxy.roundTrip(get(url));
    assert.equal(res.status, 200);
    assert.equal(text(res.body), "target=/six?x=1");
    const req = lastRequest(origin);
    assert.equal(req.startLine, "GET /six?x=1 HTTP/1.1");
    assert.deepEqual(fieldValues(req.fields, "host"), [`[::1]:${origin.port}`]);
  },
});

Deno.test("hop-by-hop request fields are removed; end-to-end fields keep order, case and duplicates", async () => {
  await using origin = startOrigin(echoTarget);
  await using proxy = startTestProxy();
  const res = await proxy.roundTrip(
    `GET ${origin.url("/hop")} HTTP/1.1\r\n` +
      `Host: ${origin.authority}\r\n` +
      `Connection: X-Hop, Keep-Alive\r\n` +
      `Accept: text/plain\r\n` +
      `X-Hop: secret\r\n` +
      `Keep-Alive: timeout=5\r\n` +
      `X-Dup: one\r\n` +
      `Proxy-Connection: keep-alive\r\n` +
      `TE: trailers\r\n` +
      `x-dup: two\r\n` +
      `Trailer: X-Checksum\r\n` +
      `Upgrade: example/1\r\n` +
      `Proxy-Authorization: Basic dXNlcjpwYXNz\r\n` +
      `X-MiXeD-Case: VaLuE  with  spaces\r\n` +
      `Cookie: a=1\r\n` +
      `\r\n`,
  );
  assert.equal(res.status, 200);
  const req = lastRequest(origin);
  assert.deepEqual(withoutFields(req.fields, "host", "via", "connection"), [
    ["Accept", "text/plain"],
    ["X-Dup", "one"],
    ["x-dup", "two"],
    ["X-MiXeD-Case", "VaLuE  with  spaces"],
    ["Cookie", "a=1"],
  ]);
  // Whatever Connection the proxy sends for its own hop, it never names the client's tokens.
  assert.ok(!listTokens(req.fields, "connection").includes("x-hop"));
  for (const name of ["X-Hop", "Keep-Alive", "Proxy-Connection", "TE", "Trailer", "Upgrade", "Proxy-Authorization"]) {
    assert.ok(!hasField(req.fields, name), `${name} was forwarded`);
  }
});

Deno.test("hop-by-hop response fields are removed; end-to-end fields keep order, case and duplicates", async () => {
  await using origin = startOrigin(serve(() =>
    `HTTP/1.1 200 OK\r\n` +
    `Connection: X-Resp-Hop\r\n` +
    `Set-Cookie: a=1; Path=/\r\n` +
    `X-Resp-Hop: 1\r\n` +
    `Keep-Alive: timeout=5, max=100\r\n` +
    `Set-Cookie: b=2\r\n` +
    `Proxy-Connection: keep-alive\r\n` +
    `Trailer: X-Checksum\r\n` +
    `Upgrade: example/1\r\n` +
    `Proxy-Authenticate: Basic realm="x"\r\n` +
    `X-MiXeD-Case: VaLuE\r\n` +
    `Date: Tue, 01 Jan 2002 00:00:00 GMT\r\n` +
    `Content-Length: 2\r\n` +
    `\r\n` +
    `ok`
  ));
  await using proxy = startTestProxy();
  const res = await proxy.roundTrip(get(origin.url("/hop")));
  assert.equal(res.status, 200);
  assert.equal(text(res.body), "ok");
  assert.deepEqual(withoutFields(res.fields, "via", "connection", "content-length", "date"), [
    ["Set-Cookie", "a=1; Path=/"],
    ["Set-Cookie", "b=2"],
    ["X-MiXeD-Case", "VaLuE"],
  ]);
  assert.ok(!listTokens(res.fields, "connection").includes("x-resp-hop"));
  for (const name of ["X-Resp-Hop", "Keep-Alive", "Proxy-Connection", "Trailer", "Upgrade", "Proxy-Authenticate"]) {
    assert.ok(!hasField(res.fields, name), `${name} was forwarded`);
  }
});

Deno.test("Via is added per hop version in both directions", async (t) => {
  await using origin = startOrigin(serve((req) => {
    switch (req.target) {
      case "/origin-10":
        return { bytes: "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", close: true };
      case "/origin-via":
        return ok("ok", ["Via: 1.1 inner"]);
      default:
        return ok("ok");
    }
  }));
  // Requests carry this instance's tag (loop detection that lets two instances chain); responses do not.
  await using proxy = startTestProxy({ instanceId: "t1" });
  const rows: { name: string; wire: string; toOrigin: string[]; toClient: string[] }[] = [
    {
      name: "HTTP/1.1 client, HTTP/1.1 origin",
      wire: get(origin.url("/")),
      toOrigin: ["1.1 waypost (t1)"],
      toClient: ["1.1 waypost"],
    },
    {
      name: "HTTP/1.0 client",
      wire: get(origin.url("/"), [], "1.0"),
      toOrigin: ["1.0 waypost (t1)"],
      toClient: ["1.1 waypost"],
    },
    {
      name: "existing request Via entries are kept before ours",
      wire: get(origin.url("/"), ["Via: 1.0 fred, 1.1 example.com (Apache/1.1)"]),
      toOrigin: ["1.0 fred", "1.1 example.com (Apache/1.1)", "1.1 waypost (t1)"],
      toClient: ["1.1 waypost"],
    },
    {
      name: "HTTP/1.0 origin",
      wire: get(origin.url("/origin-10")),
      toOrigin: ["1.1 waypost (t1)"],
      toClient: ["1.0 waypost"],
    },
    {
      name: "existing response Via entries are kept before ours",
      wire: get(origin.url("/origin-via")),
      toOrigin: ["1.1 waypost (t1)"],
      toClient: ["1.1 inner", "1.1 waypost"],
    },
  ];
  for (const row of rows) {
    await t.step(row.name, async () => {
      const res = await proxy.roundTrip(row.wire);
      assert.equal(res.status, 200);
      assert.deepEqual(viaEntries(lastRequest(origin).fields), row.toOrigin);
      assert.deepEqual(viaEntries(res.fields), row.toClient);
    });
  }
});

Deno.test("Date is added when the origin omits it and kept when present", async (t) => {
  await using origin = startOrigin(
    serve((req) => req.target === "/dated" ? ok("x", ["Date: Tue, 01 Jan 2002 00:00:00 GMT"]) : ok("x")),
  );
  await using proxy = startTestProxy();
  await t.step("omitted: one IMF-fixdate close to now", async () => {
    const res = await proxy.roundTrip(get(origin.url("/undated")));
    const date = fieldValue(res.fields, "date");
    assert.match(date, IMF_FIXDATE);
    assert.ok(Math.abs(Date.parse(date) - Date.now()) < 60_000, `Date ${date} is not now`);
  });
  await t.step("present: kept as is", async () => {
    const res = await proxy.roundTrip(get(origin.url("/dated")));
    assert.deepEqual(fieldValues(res.fields, "date"), ["Tue, 01 Jan 2002 00:00:00 GMT"]);
  });
});

Deno.test("responses are sent as HTTP/1.1 whatever the origin's version", async (t) => {
  await using origin = startOrigin(serve(() => ({
    bytes: "HTTP/1.0 203 Non-Authoritative Information\r\nContent-Length: 3\r\n\r\nabc",
    close: true,
  })));
  await using proxy = startTestProxy();
  for (const version of ["1.1", "1.0"]) {
    await t.step(`HTTP/${version} client`, async () => {
      const res = await proxy.roundTrip(get(origin.url("/"), [], version));
      assert.equal(res.version, "HTTP/1.1");
      assert.equal(res.status, 203);
      assert.equal(text(res.body), "abc");
    });
  }
});

Deno.test("invalid requests are refused with the table's status, and the origin is never contacted", async (t) => {
  await using origin = startOrigin(echoTarget);
  await using proxy = startTestProxy({ maxRequestLineBytes: 256, maxFields: 20, maxHeadBytes: 4096 });
  const url = origin.url("/refused");
  const host = `Host: ${origin.authority}\r\n`;
  const rows: { name: string; wire: string; status: number; close: boolean; keepOpen?: boolean }[] = [
    {
      name: "https:// in absolute-form",
      wire: `GET https://${origin.authority}/ HTTP/1.1\r\n${host}\r\n`,
      status: 400,
      close: false,
    },
    {
      name: "origin-form to the proxy: no such page",
      wire: `GET /refused HTTP/1.1\r\n${host}\r\n`,
      status: 404,
      close: false,
    },
    {
      name: "Content-Length with Transfer-Encoding",
      wire: `POST ${url} HTTP/1.1\r\n${host}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
      status: 400,
      close: true,
    },
    {
      name: "differing Content-Length values",
      wire: `POST ${url} HTTP/1.1\r\n${host}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!`,
      status: 400,
      close: true,
    },
    {
      name: "bare LF line endings",
      wire: `GET ${url} HTTP/1.1\n${host.replace("\r\n", "\n")}\n`,
      status: 400,
      close: true,
    },
    {
      name: "whitespace between field name and colon",
      wire: `GET ${url} HTTP/1.1\r\nHost : ${origin.authority}\r\n\r\n`,
      status: 400,
      close: true,
    },
    {
      name: "Transfer-Encoding: gzip, chunked",
      wire: `POST ${url} HTTP/1.1\r\n${host}Transfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`,
      status: 501,
      close: true,
    },
    { name: "HTTP/2.0 request line", wire: `GET ${url} HTTP/2.0\r\n${host}\r\n`, status: 505, close: false },
    {
      name: "request line over the limit",
      wire: `GET ${url}/${"a".repeat(300)} HTTP/1.1\r\n${host}\r\n`,
      status: 414,
      close: true,
    },
    {
      name: "request line over the limit, before its CRLF arrives",
      wire: `GET ${url}/${"a".repeat(400)}`,
      status: 414,
      close: true,
      keepOpen: true,
    },
    {
      name: "too many fields",
      wire: `GET ${url} HTTP/1.1\r\n${host}${Array.from({ length: 20 }, (_, i) => `X-F${i}: v\r\n`).join("")}\r\n`,
      status: 431,
      close: true,
    },
    {
      name: "head over the byte limit",
      wire: `GET ${url} HTTP/1.1\r\n${host}X-Big: ${"b".repeat(5000)}\r\n\r\n`,
      status: 431,
      close: true,
    },
    {
      name: "loop: Via already names this proxy",
      wire: `GET ${url} HTTP/1.1\r\n${host}Via: 1.1 waypost\r\n\r\n`,
      status: 508,
      close: false,
    },
    {
      name: "loop: our entry after another proxy's",
      wire: `GET ${url} HTTP/1.1\r\n${host}Via: 1.0 fred, 1.1 waypost\r\n\r\n`,
      status: 508,
      close: false,
    },
  ];
  const expectedLines: string[] = [];
  for (const [i, row] of rows.entries()) {
    await t.step(`${row.name} → ${row.status}`, async () => {
      {
        await using client = await proxy.connect();
        await client.write(row.wire);
        const res = await client.response();
        assert.equal(res.status, row.status);
        assert.equal(res.version, "HTTP/1.1");
        if (row.close) await client.assertClosed();
      }
      // Prove the refused request never reached the origin: only the follow-up requests did.
      const res = await proxy.roundTrip(get(origin.url(`/after-${i}`)));
      assert.equal(res.status, 200);
      expectedLines.push(`GET /after-${i} HTTP/1.1`);
      assert.deepEqual(origin.requestLines(), expectedLines);
    });
  }
});

Deno.test("request bodies are delivered byte-exact", async (t) => {
  await using origin = startOrigin(serve((req) => ok(`got=${req.body.length}`)));
  await using proxy = startTestProxy();
  await t.step("Content-Length body (binary, sent in pieces)", async () => {
    const body = pseudoRandomBytes(100_000, 7);
    await using client = await proxy.connect();
    await client.write(
      `POST ${origin.url("/cl")} HTTP/1.1\r\nHost: ${origin.authority}\r\nContent-Length: 100000\r\n\r\n`,
    );
    await client.write(body.subarray(0, 1));
    await client.write(body.subarray(1, 70_000));
    await client.write(body.subarray(70_000));
    const res = await client.response();
    assert.equal(res.status, 200);
    const req = lastRequest(origin);
    assert.deepEqual(fieldValues(req.fields, "content-length"), ["100000"]);
    assert.ok(!hasField(req.fields, "transfer-encoding"));
    assert.equal(req.body.length, body.length);
    assert.deepEqual(req.body, body);
  });
  await t.step("chunked body re-encoded, trailers forwarded", async () => {
    const pieces = [1, 26, 4096, 70_000].map((n, i) => pseudoRandomBytes(n, 100 + i));
    const wire: Uint8Array[] = [
      latin1(
        `POST ${
          origin.url("/chunked")
        } HTTP/1.1\r\nHost: ${origin.authority}\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n`,
      ),
    ];
    for (const p of pieces) wire.push(latin1(`${p.length.toString(16)};ext=1\r\n`), p, latin1("\r\n"));
    wire.push(latin1("0\r\nX-Checksum: abc\r\n\r\n"));
    await using client = await proxy.connect();
    for (const w of wire) await client.write(w);
    const res = await client.response();
    assert.equal(res.status, 200);
    const req = lastRequest(origin);
    assert.deepEqual(listTokens(req.fields, "transfer-encoding"), ["chunked"]);
    assert.ok(!hasField(req.fields, "content-length"));
    assert.equal(req.framing, "chunked");
    assert.ok(req.complete);
    assert.deepEqual(req.body, concat(pieces));
    assert.deepEqual(req.trailers, [["X-Checksum", "abc"]]);
    assert.ok(text(req.bodyRaw).endsWith("0\r\nX-Checksum: abc\r\n\r\n"), "trailer section not at the end");
    assert.deepEqual(decodeChunked(req.bodyRaw).body, concat(pieces));
  });
  await t.step("empty chunked body", async () => {
    const res = await proxy.roundTrip(
      `POST ${
        origin.url("/empty")
      } HTTP/1.1\r\nHost: ${origin.authority}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
    );
    assert.equal(res.status, 200);
    assert.equal(text(res.body), "got=0");
    const req = lastRequest(origin);
    assert.ok(req.complete);
    // A chunked body that arrived whole is validated first and sent with a Content-Length.
    assert.equal(req.framing, "length");
    assert.deepEqual(listTokens(req.fields, "content-length"), ["0"]);
    assert.ok(!hasField(req.fields, "transfer-encoding"));
    assert.equal(req.body.length, 0);
  });
  await t.step("a whole chunked body without trailers is validated first and sent with Content-Length", async () => {
    const res = await proxy.roundTrip(
      `POST ${
        origin.url("/whole")
      } HTTP/1.1\r\nHost: ${origin.authority}\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n`,
    );
    assert.equal(res.status, 200);
    const req = lastRequest(origin);
    assert.deepEqual(listTokens(req.fields, "content-length"), ["5"]);
    assert.equal(text(req.body), "abcde");
  });
});

Deno.test("keep-alive: two sequential requests on one client connection are both answered", async () => {
  await using origin = startOrigin(echoTarget);
  await using proxy = startTestProxy();
  await using client = await proxy.connect();
  for (const path of ["/one", "/two"]) {
    await client.write(get(origin.url(path)));
    const res = await client.response();
    assert.equal(res.status, 200);
    assert.equal(text(res.body), `target=${path}`);
  }
  assert.equal(proxy.handle.connections, 1);
});

Deno.test("pipelining: requests written at once are answered in order", async () => {
  await using origin = startOrigin(serve((req) => ok(`${req.method} ${req.target} ${text(req.body)}`)));
  await using proxy = startTestProxy();
  await using client = await proxy.connect();
  await client.write(
    get(origin.url("/1")) +
      `POST ${origin.url("/2")} HTTP/1.1\r\nHost: ${origin.authority}\r\nContent-Length: 5\r\n\r\nhello` +
      get(origin.url("/3")),
  );
  const bodies = [];
  for (let i = 0; i < 3; i++) bodies.push(text((await client.response()).body));
  assert.deepEqual(bodies, ["GET /1 ", "POST /2 hello", "GET /3 "]);
});

Deno.test("HTTP/1.0 client without keep-alive gets the response, then the close", async () => {
  await using origin = startOrigin(echoTarget);
  await using proxy = startTestProxy();
  await using client = await proxy.connect();
  await client.write(`GET ${origin.url("/ten")} HTTP/1.0\r\n\r\n`);
  const res = await client.response();
  assert.equal(res.status, 200);
  assert.equal(text(res.body), "target=/ten");
  await client.assertClosed();
});

Deno.test("HTTP/1.0 client with Connection: keep-alive gets its response, then close (RFC 9112 §9.3)", async () => {
  // "A proxy server MUST NOT maintain a persistent connection with an HTTP/1.0 client."
  await using origin = startOrigin(echoTarget);
  await using proxy = startTestProxy();
  await using client = await proxy.connect();
  await client.write(get(origin.url("/a"), ["Connection: keep-alive"], "1.0"));
  const res = await client.response();
  assert.equal(res.status, 200);
  assert.equal(text(res.body), "target=/a");
  assert.ok(listTokens(res.fields, "connection").includes("close"));
  assert.ok(!listTokens(res.fields, "connection").includes("keep-alive"));
  await client.assertClosed();
});

Deno.test("close-delimited origin response", async (t) => {
  const body = pseudoRandomBytes(20_000, 3);
  await using origin = startOrigin(serve(() => ({
    bytes: concat([latin1("HTTP/1.1 200 OK\r\nX-Kind: close-delimited\r\n\r\n"), body]),
    close: true,
  })));
  await using proxy = startTestProxy();
  await t.step("re-framed as chunked for an HTTP/1.1 client, which is kept alive", async () => {
    await using client = await proxy.connect();
    for (let i = 0; i < 2; i++) {
      await client.write(get(origin.url(`/c${i}`)));
      const res = await client.response();
      assert.equal(res.status, 200);
      assert.deepEqual(listTokens(res.fields, "transfer-encoding"), ["chunked"]);
      assert.ok(!hasField(res.fields, "content-length"));
      assert.ok(res.complete);
      assert.deepEqual(res.body, body);
    }
  });
  await t.step("read whole, sent with Content-Length, then closed, for an HTTP/1.0 client", async () => {
    // A body of unknown length is read ahead for HTTP/1.0 clients (up to 1 MiB), so a truncated
    // one can still become a 502 instead of a close that looks like the end (tests/review_test.ts).
    await using client = await proxy.connect();
    await client.write(get(origin.url("/c10"), ["Connection: keep-alive"], "1.0"));
    const res = await client.response();
    assert.equal(res.status, 200);
    assert.equal(res.framing, "length");
    assert.ok(!hasField(res.fields, "transfer-encoding"));
    assert.equal(fieldValue(res.fields, "content-length"), String(body.length));
    assert.deepEqual(res.body, body);
    await client.assertClosed();
  });
  await t.step(
    "origin ends the body with a half-close (FIN, still reading): complete, then upstream closed",
    async () => {
      const leftover = deferred<Uint8Array>();
      await using halfOrigin = startOrigin(async (c) => {
        await c.readRequest();
        await c.write(concat([latin1("HTTP/1.1 200 OK\r\n\r\n"), body]));
        await c.closeWrite();
        // The proxy must close (not pool) a connection whose response ended with the origin's FIN.
        leftover.resolve(await c.waitEof());
      });
      await using client = await proxy.connect();
      await client.write(get(halfOrigin.url("/half")));
      const res = await client.response();
      assert.equal(res.status, 200);
      assert.deepEqual(listTokens(res.fields, "transfer-encoding"), ["chunked"]);
      assert.ok(res.complete);
      assert.deepEqual(res.body, body);
      assert.equal((await leftover.promise).length, 0);
    },
  );
});

Deno.test("Connection: close from the client is honoured", async () => {
  await using origin = startOrigin(echoTarget);
  await using proxy = startTestProxy();
  await using client = await proxy.connect();
  await client.write(get(origin.url("/bye"), ["Connection: close"]));
  const res = await client.response();
  assert.equal(res.status, 200);
  assert.equal(text(res.body), "target=/bye");
  assert.ok(listTokens(res.fields, "connection").includes("close"));
  await client.assertClosed();
});

Deno.test("HEAD response keeps its Content-Length and has no body", async () => {
  await using origin = startOrigin(
    serve((req) =>
      req.method === "HEAD" ? "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1234\r\n\r\n" : ok("next")
    ),
  );
  await using proxy = startTestProxy();
  await using client = await proxy.connect();
  // The GET right behind proves no body bytes follow the HEAD response's head.
  await client.write(
    `HEAD ${origin.url("/h")} HTTP/1.1\r\nHost: ${origin.authority}\r\n\r\n` + get(origin.url("/next")),
  );
  const head = await client.response("HEAD");
  assert.equal(head.status, 200);
  assert.deepEqual(fieldValues(head.fields, "content-length"), ["1234"]);
  assert.ok(!hasField(head.fields, "transfer-encoding"));
  assert.equal(head.body.length, 0);
  const next = await client.response();
  assert.equal(next.status, 200);
  assert.equal(text(next.body), "next");
});

Deno.test("204 and 304 responses have no body", async () => {
  await using origin = startOrigin(serve((req) => {
    if (req.target === "/204") return "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n";
    if (req.target === "/304") return 'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\n\r\n';
    return ok(req.target);
  }));
  await using proxy = startTestProxy();
  await using client = await proxy.connect();
  await client.write(
    get(origin.url("/204")) + get(origin.url("/after-204")) + get(origin.url("/304")) + get(origin.url("/after-304")),
  );
  const got = [];
  for (let i = 0; i < 4; i++) {
    const res = await client.response();
    if (res.status === 204 || res.status === 304) {
      assert.ok(!hasField(res.fields, "transfer-encoding"), `${res.status} with Transfer-Encoding`);
      assert.ok(!hasField(res.fields, "content-length"), `${res.status} with Content-Length`);
    }
    got.push(`${res.status} ${text(res.body)}`);
  }
  assert.deepEqual(got, ["204 ", "200 /after-204", "304 ", "200 /after-304"]);
});

Deno.test("Expect: 100-continue: the origin's 100 reaches the client before it sends the body", async () => {
  await using origin = startOrigin(async (c) => {
    const head = await c.readHead();
    assert.ok(head);
    assert.deepEqual(fieldValues(head.fields, "expect"), ["100-continue"]);
    await c.write("HTTP/1.1 100 Continue\r\n\r\n");
    const req = await c.readBody(head);
    await c.write(ok(`got ${text(req.body)}`));
    await c.waitEof();
  });
  await using proxy = startTestProxy();
  await using client = await proxy.connect();
  await client.write(
    `PUT ${
      origin.url("/up")
    } HTTP/1.1\r\nHost: ${origin.authority}\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n`,
  );
  const interim = await client.response("PUT");
  assert.equal(interim.status, 100);
  assert.equal(interim.version, "HTTP/1.1");
  await client.write("hello");
  const res = await client.response("PUT");
  assert.equal(res.status, 200);
  assert.equal(text(res.body), "got hello");
});

Deno.test("103 Early Hints is relayed before the final response", async () => {
  const hintsSeen = deferred();
  await using origin = startOrigin(async (c) => {
    await c.readRequest();
    await c.write("HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n");
    // The final response is only sent once the client has the 103: it cannot have been held back.
    await hintsSeen.promise;
    await c.write(ok("final"));
    await c.waitEof();
  });
  await using proxy = startTestProxy();
  await using client = await proxy.connect();
  await client.write(get(origin.url("/hints")));
  const hints = await client.response();
  assert.equal(hints.status, 103);
  assert.deepEqual(fieldValues(hints.fields, "link"), ["</style.css>; rel=preload; as=style"]);
  hintsSeen.resolve();
  const res = await client.response();
  assert.equal(res.status, 200);
  assert.equal(text(res.body), "final");
});

Deno.test("no 1xx is sent to an HTTP/1.0 client", async (t) => {
  await using origin = startOrigin(async (c) => {
    // The proxy may reuse this connection for the next step: serve until it closes.
    for (let head = await c.readHead(); head !== null; head = await c.readHead()) {
      if (head.target === "/expect") {
        // RFC 9110 §10.1.1: a 100-continue expectation from HTTP/1.0 is ignored, not forwarded.
        assert.ok(!hasField(head.fields, "expect"), "Expect from an HTTP/1.0 client was forwarded");
        await c.write("HTTP/1.1 100 Continue\r\n\r\n");
      } else {
        await c.write("HTTP/1.1 103 Early Hints\r\nLink: </a.js>; rel=preload\r\n\r\n");
      }
      const req = await c.readBody(head);
      await c.write(ok(`final ${text(req.body)}`));
    }
  });
  await using proxy = startTestProxy();
  await t.step("103 from the origin", async () => {
    await using client = await proxy.connect();
    await client.write(`GET ${origin.url("/hints")} HTTP/1.0\r\n\r\n`);
    const res = await client.response();
    assert.equal(res.status, 200);
    assert.equal(text(res.body), "final ");
    await client.assertClosed();
    assert.ok(client.receivedText.startsWith("HTTP/1.1 200 "), "a 1xx preceded the final response");
  });
  await t.step("100 from the origin after Expect: 100-continue", async () => {
    await using client = await proxy.connect();
    await client.write(
      `POST ${origin.url("/expect")} HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello`,
    );
    const res = await client.response("POST");
    assert.equal(res.status, 200);
    assert.equal(text(res.body), "final hello");
    await client.assertClosed();
    assert.ok(client.receivedText.startsWith("HTTP/1.1 200 "), "a 1xx preceded the final response");
  });
});

Deno.test("Max-Forwards on TRACE and OPTIONS", async (t) => {
  await using origin = startOrigin(echoTarget);
  await using proxy = startTestProxy();
  const url = origin.url("/mf");
  const host = `Host: ${origin.authority}\r\n`;
  const forwarded: string[] = [];
  const reqFor = (method: string) => (method === "OPTIONS" ? "OPTIONS /mf HTTP/1.1" : `${method} /mf HTTP/1.1`);

  await t.step("TRACE with Max-Forwards: 0 is answered by the proxy with a message/http echo", async () => {
    const wire = `TRACE ${url} HTTP/1.1\r\n${host}Max-Forwards: 0\r\nX-Echo: yes\r\n\r\n`;
    const res = await proxy.roundTrip(wire);
    assert.equal(res.status, 200);
    assert.match(fieldValue(res.fields, "content-type"), /^message\/http\b/);
    const echo = text(res.body);
    assert.ok(echo.startsWith(`TRACE ${url} HTTP/1.1\r\n`), `echo starts ${JSON.stringify(echo.slice(0, 60))}`);
    assert.ok(echo.includes("\r\nX-Echo: yes\r\n"));
    assert.ok(echo.includes("\r\nMax-Forwards: 0\r\n"));
    assert.ok(echo.endsWith("\r\n\r\n"));
    assert.deepEqual(origin.requestLines(), forwarded);
  });
  await t.step("OPTIONS with Max-Forwards: 0 is answered by the proxy with 200 and Allow", async () => {
    const res = await proxy.roundTrip(`OPTIONS ${url} HTTP/1.1\r\n${host}Max-Forwards: 0\r\n\r\n`);
    assert.equal(res.status, 200);
    assert.ok(listTokens(res.fields, "allow").length > 0, "Allow missing or empty");
    assert.deepEqual(origin.requestLines(), forwarded);
  });
  for (const method of ["TRACE", "OPTIONS"]) {
    await t.step(`${method} with Max-Forwards: 5 is forwarded with 4`, async () => {
      const res = await proxy.roundTrip(`${method} ${url} HTTP/1.1\r\n${host}Max-Forwards: 5\r\n\r\n`);
      assert.equal(res.status, 200);
      forwarded.push(reqFor(method));
      assert.deepEqual(origin.requestLines(), forwarded);
      assert.deepEqual(fieldValues(lastRequest(origin).fields, "max-forwards"), ["4"]);
    });
  }
  await t.step("GET with Max-Forwards: 0 is forwarded unchanged (only TRACE and OPTIONS use it)", async () => {
    const res = await proxy.roundTrip(`GET ${url} HTTP/1.1\r\n${host}Max-Forwards: 0\r\n\r\n`);
    assert.equal(res.status, 200);
    forwarded.push("GET /mf HTTP/1.1");
    assert.deepEqual(origin.requestLines(), forwarded);
    assert.deepEqual(fieldValues(lastRequest(origin).fields, "max-forwards"), ["0"]);
  });
});

Deno.test("OPTIONS with an authority-only URI is forwarded as OPTIONS *", async (t) => {
  await using origin = startOrigin(echoTarget);
  await using proxy = startTestProxy();
  const rows = [
    { name: "no path → *", suffix: "", line: "OPTIONS * HTTP/1.1" },
    { name: "path / stays /", suffix: "/", line: "OPTIONS / HTTP/1.1" },
  ];
  for (const row of rows) {
    await t.step(row.name, async () => {
      const res = await proxy.roundTrip(
        `OPTIONS ${origin.url(row.suffix)} HTTP/1.1\r\nHost: ${origin.authority}\r\n\r\n`,
      );
      assert.equal(res.status, 200);
      assert.equal(lastRequest(origin).startLine, row.line);
      assert.deepEqual(fieldValues(lastRequest(origin).fields, "host"), [origin.authority]);
    });
  }
});

Deno.test("half-close: a client that sends its request then FIN still receives the whole response", async () => {
  const body = pseudoRandomBytes(300_000, 11);
  await using origin = startOrigin(serve(() => ok(body)));
  await using proxy = startTestProxy();
  await using client = await proxy.connect();
  await client.write(get(origin.url("/big")));
  await client.closeWrite();
  const res = await client.response();
  assert.equal(res.status, 200);
  assert.ok(res.complete);
  assert.deepEqual(res.body, body);
  await client.assertClosed();
});

/** Sends a GET for `url` and returns the response and how long it took. */
async function timedGet(proxy: TestProxy, url: string): Promise<{ res: Message; ms: number }> {
  const started = performance.now();
  const res = await proxy.roundTrip(get(url));
  return { res, ms: performance.now() - started };
}

Deno.test("upstream failures before a response head become 502/504", async (t) => {
  await using proxy = startTestProxy({ responseTimeoutMs: 300 });
  await t.step("connection refused → 502", async () => {
    const { res } = await timedGet(proxy, `http://127.0.0.1:${closedPort()}/`);
    assert.equal(res.status, 502);
    await assertStillServes(proxy);
  });
  // An unresolvable name is classified in tests/upstream_test.ts: a name lookup here would
  // leave the machine (only IP literals and localhost stay local).
  const scripted: { name: string; status: number; script: (c: OriginConn) => Promise<void> }[] = [
    {
      name: "origin closes after reading the request, before any response byte → 502",
      status: 502,
      script: async (c) => {
        await c.readRequest();
        c.close();
      },
    },
    {
      name: "origin resets (closes with request bytes unread) → 502",
      status: 502,
      script: async (c) => {
        await c.reader.readExact(8);
        c.close();
      },
    },
    {
      name: "garbage status line → 502",
      status: 502,
      script: async (c) => {
        await c.readRequest();
        await c.write("HELLO WORLD\r\n\r\n");
        await c.waitEof();
      },
    },
    {
      name: "non-numeric status code → 502",
      status: 502,
      script: async (c) => {
        await c.readRequest();
        await c.write("HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n");
        await c.waitEof();
      },
    },
    {
      name: "head cut off by a close → 502",
      status: 502,
      script: async (c) => {
        await c.readRequest();
        await c.write("HTTP/1.1 200 OK\r\nContent-Le");
        c.close();
      },
    },
    {
      name: "origin accepts and never answers: response-head timeout → 504",
      status: 504,
      script: async (c) => {
        await c.readRequest();
        await c.waitEof();
      },
    },
  ];
  for (const row of scripted) {
    await t.step(row.name, async () => {
      await using origin = startOrigin(row.script);
      const { res, ms } = await timedGet(proxy, origin.url("/fail"));
      assert.equal(res.status, row.status);
      if (row.status === 504) assert.ok(ms >= 250 && ms < 4000, `504 after ${ms} ms (responseTimeoutMs 300)`);
      assert.equal(origin.conns.length, 1);
      await assertStillServes(proxy);
    });
  }
});

Deno.test({
  name: BACKLOG_BLOCKS
    ? "upstream connect timeout → 504 (origin with a full accept queue)"
    : "upstream connect timeout (skipped: cannot make a loopback connect hang deterministically here)",
  ignore: !BACKLOG_BLOCKS,
  async fn() {
    const blocked = await fullBacklogListener();
    assert.ok(blocked, "the accept queue no longer blocks");
    try {
      await using proxy = startTestProxy({ connectTimeoutMs: 300 });
      const { res, ms } = await timedGet(proxy, `http://127.0.0.1:${blocked.port}/`);
      assert.equal(res.status, 504);
      assert.ok(ms >= 250 && ms < 4000, `504 after ${ms} ms (connectTimeoutMs 300)`);
      await assertStillServes(proxy);
    } finally {
      blocked.close();
    }
  },
});

Deno.test("origin failure after the response head: the client connection is aborted, never a complete-looking body", async (t) => {
  await using proxy = startTestProxy();
  await t.step("Content-Length body cut short", async () => {
    await using origin = startOrigin(async (c) => {
      await c.readRequest();
      await c.write(`HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n${"a".repeat(100)}`);
      c.close();
    });
    await using client = await proxy.connect();
    await client.write(get(origin.url("/cut")));
    const res = await client.response();
    assert.equal(res.status, 200);
    assert.deepEqual(fieldValues(res.fields, "content-length"), ["1000"]);
    assert.equal(res.complete, false);
    assert.ok(res.body.length < 1000, `got ${res.body.length} of 1000 bytes`);
    assert.ok(client.reader.eof, "client connection not closed");
    await assertStillServes(proxy);
  });
  for (const version of ["1.1"]) {
    await t.step(`chunked body cut short (HTTP/${version} client): no terminating 0-chunk`, async () => {
      await using origin = startOrigin(async (c) => {
        await c.readRequest();
        await c.write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
        c.close();
      });
      await using client = await proxy.connect();
      await client.write(get(origin.url("/cut"), [], version));
      const res = await client.response();
      assert.equal(res.status, 200);
      assert.equal(res.framing, "chunked");
      assert.equal(res.complete, false);
      assert.equal(text(res.body), "hello");
      assert.ok(!text(res.bodyRaw).includes("0\r\n\r\n"), "a terminating chunk was faked");
      assert.ok(client.reader.eof, "client connection not closed");
      await assertStillServes(proxy);
    });
  }
});

Deno.test("ambiguous origin framing → 502", async (t) => {
  await using proxy = startTestProxy();
  const rows = [
    { name: "Transfer-Encoding with Content-Length", fields: "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n" },
    { name: "two different Content-Length fields", fields: "Content-Length: 5\r\nContent-Length: 6\r\n" },
    { name: "one Content-Length with two values", fields: "Content-Length: 5, 6\r\n" },
    { name: "non-numeric Content-Length", fields: "Content-Length: 5a\r\n" },
  ];
  for (const row of rows) {
    await t.step(row.name, async () => {
      await using origin = startOrigin(async (c) => {
        await c.readRequest();
        await c.write(`HTTP/1.1 200 OK\r\n${row.fields}\r\n5\r\nhello\r\n0\r\n\r\n`);
        await c.waitEof();
      });
      const res = await proxy.roundTrip(get(origin.url("/ambiguous")));
      assert.equal(res.status, 502);
      await assertStillServes(proxy);
    });
  }
});

Deno.test("upstream keep-alive: two client connections in sequence reuse one origin connection", async () => {
  await using origin = startOrigin(echoTarget);
  await using proxy = startTestProxy();
  for (const path of ["/first", "/second"]) {
    await using client = await proxy.connect();
    await client.write(get(origin.url(path)));
    const res = await client.response();
    assert.equal(res.status, 200);
    assert.equal(text(res.body), `target=${path}`);
  }
  assert.equal(origin.conns.length, 1);
  assert.deepEqual(origin.requestLines(), ["GET /first HTTP/1.1", "GET /second HTTP/1.1"]);
});

Deno.test("graceful shutdown lets an in-flight slow response finish, then finished resolves", async () => {
  const rest = deferred();
  await using origin = startOrigin(async (c) => {
    await c.readRequest();
    await c.write("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello");
    await rest.promise;
    await c.write("world");
    await c.waitEof();
  });
  await using proxy = startTestProxy();
  await using client: Client = await proxy.connect();
  await client.write(get(origin.url("/slow")));
  const head = await readHead(client.reader, "response");
  assert.equal(head?.status, 200);
  assert.equal(text(await client.reader.readExact(5)), "hello");

  const started = performance.now();
  const stopped = proxy.handle.shutdown(5000);
  // Shutdown stops accepting at once: a new connection is refused, or reset unanswered.
  try {
    await using late = await proxy.connect();
    await late.write(get(origin.url("/late")));
    assert.equal(text(await late.reader.readToEnd()), "", "a connection made during shutdown was served");
  } catch (error) {
    const refused = error instanceof Deno.errors.ConnectionRefused || error instanceof Deno.errors.ConnectionReset ||
      error instanceof Deno.errors.BrokenPipe;
    if (!refused) throw error;
  }
  rest.resolve();
  assert.equal(text(await client.reader.readExact(5)), "world");
  await client.assertClosed();
  await stopped;
  await proxy.handle.finished;
  const ms = performance.now() - started;
  assert.ok(ms < 4000, `shutdown took ${ms} ms: it waited for the grace period instead of the exchange`);
  assert.deepEqual(origin.requestLines(), ["GET /slow HTTP/1.1"]);
});

Deno.test("small keep-alive exchanges are not held back by Nagle's algorithm and delayed ACKs", async () => {
  // Each exchange below takes about a millisecond on loopback. A proxy that writes a response
  // head and its body in separate small segments without TCP_NODELAY waits for the client's
  // delayed ACK (about 40 ms on Linux) on every exchange after the first.
  await using origin = startOrigin(serve(() => ok("x".repeat(100))));
  await using proxy = startTestProxy();
  await using client = await proxy.connect();
  const exchanges = 20;
  const started = performance.now();
  for (let i = 0; i < exchanges; i++) {
    await client.write(get(origin.url(`/small-${i}`)));
    const res = await client.response();
    assert.equal(res.body.length, 100);
  }
  const ms = performance.now() - started;
  assert.ok(ms < exchanges * 25, `${exchanges} keep-alive exchanges of 100 bytes took ${ms.toFixed(0)} ms`);
});
