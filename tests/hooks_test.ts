/**
 * End-to-end tests of the hook API (lib/hooks.ts) over real loopback sockets:
 * each semantic the contract promises, seen from the client's and the origin's
 * side of the wire.
 */
import assert from "node:assert/strict";
import type { ExchangeRecord, ProxyHooks } from "../mod.ts";
import { ForbiddenError } from "../mod.ts";
import {
  deferred,
  echoTarget,
  fieldValue,
  fieldValues,
  get,
  hasField,
  ok,
  type OriginConn,
  serve,
  startOrigin,
  startTestProxy,
  text,
} from "./util.ts";

/** Collects exchange records; `next()` waits (bounded) for the next one. */
class Records {
  readonly all: ExchangeRecord[] = [];
  #waiters: PromiseWithResolvers<ExchangeRecord>[] = [];
  #taken = 0;
  readonly hooks: ProxyHooks = {
    onExchangeEnd: (record) => {
      this.all.push(record);
      this.#waiters.shift()?.resolve(record);
    },
  };
  async next(): Promise<ExchangeRecord> {
    const index = this.#taken++;
    if (index < this.all.length) return this.all[index];
    const d = deferred<ExchangeRecord>();
    this.#waiters.push(d);
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      return await Promise.race([
        d.promise,
        new Promise<never>((_, reject) => timer = setTimeout(() => reject(new Error("no record within 3 s")), 3000)),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }
}

Deno.test("onRequest sees the request; headers edits reach the origin in place, case kept", async () => {
  await using origin = startOrigin(serve((req) => ok(`target=${req.target}`)));
  const seen: { method: string; url: string; dest: string; host: string | null }[] = [];
  await using proxy = startTestProxy({
    hooks: {
      onRequest(req) {
        seen.push({
          method: req.method,
          url: req.url.href,
          dest: `${req.destination.hostname}:${req.destination.port}`,
          host: req.headers.get("host"),
        });
        req.headers.set("user-agent", "hooked/1");
        req.headers.append("X-Added", "yes");
        req.headers.delete("x-drop");
      },
    },
  });
  const res = await proxy.roundTrip(get(origin.url("/a?b=1"), ["User-Agent: curl/8", "X-Drop: 1", "Accept: */*"]));
  assert.equal(res.status, 200);
  assert.equal(text(res.body), "target=/a?b=1");
  assert.deepEqual(seen, [{
    method: "GET",
    url: origin.url("/a?b=1"),
    dest: origin.authority,
    host: origin.authority,
  }]);
  const fields = origin.requests[0].fields;
  const names = fields.map(([n]) => n);
  assert.ok(names.indexOf("User-Agent") < names.indexOf("Accept"), "set keeps the field's place and case");
  assert.equal(fieldValue(fields, "user-agent"), "hooked/1");
  assert.equal(fieldValue(fields, "x-added"), "yes");
  assert.ok(!hasField(fields, "x-drop"));
});

Deno.test("onRequest answering: the origin is never contacted; onResponse sees the answer", async () => {
  await using origin = startOrigin(echoTarget);
  const calls: string[] = [];
  await using proxy = startTestProxy({
    hooks: [
      {
        onRequest(req) {
          calls.push("first");
          if (req.url.pathname === "/blocked") return { status: 403, headers: { "X-Why": "policy" }, body: "no\n" };
        },
        onResponse(res) {
          calls.push(`response ${res.status}`);
          res.headers.set("X-Seen", "1");
        },
        onError() {
          calls.push("error");
        },
      },
      {
        onRequest() {
          calls.push("second");
        },
      },
    ],
  });
  const res = await proxy.roundTrip(get(origin.url("/blocked")));
  assert.equal(res.status, 403);
  assert.equal(text(res.body), "no\n");
  assert.equal(fieldValue(res.fields, "x-why"), "policy");
  assert.equal(fieldValue(res.fields, "x-seen"), "1");
  assert.equal(fieldValue(res.fields, "content-length"), "3");
  assert.equal(origin.conns.length, 0, "the origin was contacted");
  assert.deepEqual(
    calls,
    ["first", "response 403"],
    "the first hook that answers wins; exactly one of onResponse/onError",
  );
  calls.length = 0;
  const passed = await proxy.roundTrip(get(origin.url("/open")));
  assert.equal(passed.status, 200);
  assert.deepEqual(calls, ["first", "second", "response 200"]);
});

Deno.test("exactly one of onResponse or onError: a failing onResponse is not followed by onError", async () => {
  await using origin = startOrigin(echoTarget);
  const calls: string[] = [];
  await using proxy = startTestProxy({
    hooks: {
      onResponse() {
        calls.push("response");
        throw new Error("boom");
      },
      onError(error) {
        calls.push(`error ${error.code}`);
        return { status: 599 };
      },
    },
  });
  const res = await proxy.roundTrip(get(origin.url("/")));
  assert.equal(res.status, 500);
  assert.deepEqual(calls, ["response"]);
  const refused = await proxy.roundTrip(get("http://127.0.0.1:1/"));
  assert.equal(refused.status, 599);
  assert.deepEqual(calls, ["response", "error upstream-refused"]);
});

Deno.test("a web Response is accepted as a reply, its body streamed with chunked framing", async () => {
  await using proxy = startTestProxy({
    hooks: {
      onRequest: () =>
        new Response(
          new ReadableStream({
            start(c) {
              c.enqueue(new TextEncoder().encode("hello "));
              c.enqueue(new TextEncoder().encode("world"));
              c.close();
            },
          }),
          { status: 418, headers: { "content-type": "text/plain" } },
        ),
    },
  });
  const res = await proxy.roundTrip(get("http://127.0.0.1:9/x"));
  assert.equal(res.status, 418);
  assert.equal(res.framing, "chunked");
  assert.equal(text(res.body), "hello world");
  assert.equal(fieldValue(res.fields, "content-type"), "text/plain");
});

Deno.test("destination rewrite: the proxy connects elsewhere, Host stays as sent; url edits change the path", async () => {
  await using wanted = startOrigin(serve((req) => ok(`wanted ${req.target}`)));
  await using named = startOrigin(echoTarget);
  await using proxy = startTestProxy({
    hooks: {
      onRequest(req) {
        req.destination.port = wanted.port;
        req.url.pathname = "/rewritten";
      },
    },
  });
  const res = await proxy.roundTrip(get(named.url("/orig?q=1")));
  assert.equal(text(res.body), "wanted /rewritten?q=1");
  assert.equal(named.conns.length, 0);
  assert.equal(fieldValue(wanted.requests[0].fields, "host"), named.authority);
});

Deno.test("hooks cannot inject header lines or framing", async (t) => {
  await t.step("headers.set with CR LF throws TypeError in the hook", async () => {
    await using origin = startOrigin(echoTarget);
    let thrown: unknown = null;
    await using proxy = startTestProxy({
      hooks: {
        onRequest(req) {
          try {
            req.headers.set("X-A", "a\r\nInjected: 1");
          } catch (error) {
            thrown = error;
          }
        },
      },
    });
    const res = await proxy.roundTrip(get(origin.url("/")));
    assert.equal(res.status, 200);
    assert.ok(thrown instanceof TypeError);
    assert.ok(!origin.receivedText.includes("Injected"));
  });
  for (
    const row of [
      { name: "CR LF in a value", field: ["X-A", "a\r\nInjected: 1"] },
      { name: "NUL in a value", field: ["X-A", "a\0b"] },
      { name: "a name with a space", field: ["X A", "1"] },
      { name: "an empty name", field: ["", "1"] },
      { name: "a char above latin-1", field: ["X-A", "\u2028"] },
    ]
  ) {
    await t.step(`fields with ${row.name}: 500, the origin never sees it`, async () => {
      await using origin = startOrigin(echoTarget);
      const codes: string[] = [];
      await using proxy = startTestProxy({
        hooks: {
          onRequest(req) {
            req.fields.push(row.field as [string, string]);
          },
          onError(error) {
            codes.push(error.code);
          },
        },
      });
      const res = await proxy.roundTrip(get(origin.url("/")));
      assert.equal(res.status, 500);
      assert.deepEqual(codes, ["hook-on-request-invalid"]);
      assert.equal(origin.conns.length, 0);
    });
  }
  await t.step("framing and hop-by-hop fields a hook adds are the proxy's: removed", async () => {
    await using origin = startOrigin(serve(() => ok("body")));
    await using proxy = startTestProxy({
      hooks: {
        onRequest(req) {
          req.fields.push(["Transfer-Encoding", "chunked"], ["Connection", "x-secret"], ["X-Secret", "1"]);
          req.headers.set("Content-Length", "5");
        },
        onResponse(res) {
          res.headers.set("Transfer-Encoding", "chunked");
          res.headers.set("Keep-Alive", "timeout=1");
        },
      },
    });
    const res = await proxy.roundTrip(get(origin.url("/")));
    assert.equal(res.status, 200);
    assert.equal(text(res.body), "body");
    assert.equal(res.framing, "length");
    assert.ok(!hasField(res.fields, "keep-alive"));
    const fields = origin.requests[0].fields;
    for (const name of ["transfer-encoding", "connection", "x-secret", "content-length"]) {
      assert.ok(!hasField(fields, name), `${name} reached the origin`);
    }
  });
});

Deno.test("onResponse at the head: bodies stream event by event unless a hook asks for them", async (t) => {
  for (const variant of ["untouched", "pipeThrough"] as const) {
    await t.step(variant, async () => {
      const next = deferred();
      await using origin = startOrigin(async (c: OriginConn) => {
        await c.readRequest();
        await c.write("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n");
        await c.write("9\r\ndata: 1\n\n\r\n");
        await next.promise; // the second event only after the client has the first
        await c.write("9\r\ndata: 2\n\n\r\n0\r\n\r\n");
      });
      await using proxy = startTestProxy({
        hooks: {
          onResponse(res) {
            res.headers.set("X-Hooked", "1");
            if (variant === "pipeThrough") {
              res.pipeThrough(
                new TransformStream({
                  transform(chunk, c) {
                    c.enqueue(new TextEncoder().encode(new TextDecoder().decode(chunk).toUpperCase()));
                  },
                }),
              );
            }
          },
        },
      });
      await using client = await proxy.connect();
      await client.write(get(origin.url("/events")));
      const head = await client.reader.readUntil("\r\n\r\n", "response head");
      assert.ok(head);
      assert.match(text(head), /X-Hooked: 1/);
      const first = await client.reader.readUntil("\n\n", "first event");
      assert.match(text(first!), variant === "pipeThrough" ? /DATA: 1/ : /data: 1/);
      next.resolve();
      const rest = await client.reader.readUntil("0\r\n\r\n", "the rest");
      assert.match(text(rest!), variant === "pipeThrough" ? /DATA: 2/ : /data: 2/);
    });
  }
});

Deno.test("text(), setBody() and pipeThrough(): the proxy owns framing", async (t) => {
  const body = JSON.stringify({ name: "waypost", n: 1 });
  const jsonOrigin = () => startOrigin(serve(() => ok(body, ["Content-Type: application/json", "Trailer: X-T"])));
  await t.step("rewritten JSON from text(): Content-Length of the new body", async () => {
    await using origin = jsonOrigin();
    await using proxy = startTestProxy({
      hooks: {
        async onResponse(res) {
          const data = JSON.parse(await res.text());
          data.rewritten = true;
          res.setBody(JSON.stringify(data));
        },
      },
    });
    const res = await proxy.roundTrip(get(origin.url("/")));
    assert.deepEqual(JSON.parse(text(res.body)), { name: "waypost", n: 1, rewritten: true });
    assert.equal(res.framing, "length");
    assert.equal(Number(fieldValue(res.fields, "content-length")), res.body.length);
    assert.ok(!hasField(res.fields, "trailer"));
  });
  await t.step("pipeThrough to an HTTP/1.1 client: chunked", async () => {
    await using origin = jsonOrigin();
    await using proxy = startTestProxy({ hooks: { onResponse: (res) => res.pipeThrough(new TransformStream()) } });
    const res = await proxy.roundTrip(get(origin.url("/")));
    assert.equal(res.framing, "chunked");
    assert.equal(text(res.body), body);
  });
  await t.step("pipeThrough to an HTTP/1.0 client: close-delimited", async () => {
    await using origin = jsonOrigin();
    await using proxy = startTestProxy({ hooks: { onResponse: (res) => res.pipeThrough(new TransformStream()) } });
    await using client = await proxy.connect();
    await client.write(get(origin.url("/"), [], "1.0"));
    const res = await client.response();
    assert.equal(res.framing, "close");
    assert.ok(!hasField(res.fields, "transfer-encoding"));
    assert.equal(text(res.body), body);
  });
  await t.step("setBody on HEAD, 204 and 304 is a TypeError", async () => {
    const errors: unknown[] = [];
    await using origin = startOrigin(
      serve((req) =>
        req.target === "/204"
          ? "HTTP/1.1 204 No Content\r\n\r\n"
          : req.target === "/304"
          ? "HTTP/1.1 304 Not Modified\r\n\r\n"
          : "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
      ),
    );
    await using proxy = startTestProxy({
      hooks: {
        onResponse(res) {
          try {
            res.setBody("x");
          } catch (error) {
            errors.push(error);
          }
        },
      },
    });
    for (const [method, path, status] of [["HEAD", "/", 200], ["GET", "/204", 204], ["GET", "/304", 304]] as const) {
      const res = await proxy.roundTrip(`${method} ${origin.url(path)} HTTP/1.1\r\nHost: ${origin.authority}\r\n\r\n`);
      assert.equal(res.status, status);
      assert.equal(res.body.length, 0);
    }
    assert.equal(errors.length, 3);
    for (const e of errors) assert.ok(e instanceof TypeError);
  });
  await t.step("request body: text() then forwarded with Content-Length; setBody replaces it", async () => {
    await using origin = startOrigin(serve((req) => ok(`got ${text(req.body)}`)));
    const seen: string[] = [];
    await using proxy = startTestProxy({
      hooks: {
        async onRequest(req) {
          const t = await req.text();
          seen.push(t);
          if (t === "replace me") req.setBody("replaced");
        },
      },
    });
    await using client = await proxy.connect();
    await client.write(
      `POST ${
        origin.url("/")
      } HTTP/1.1\r\nHost: ${origin.authority}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`,
    );
    const a = await client.response();
    assert.equal(text(a.body), "got hello");
    await client.write(
      `POST ${origin.url("/")} HTTP/1.1\r\nHost: ${origin.authority}\r\nContent-Length: 10\r\n\r\nreplace me`,
    );
    const b = await client.response();
    assert.equal(text(b.body), "got replaced");
    assert.deepEqual(seen, ["hello", "replace me"]);
    assert.equal(fieldValue(origin.requests[0].fields, "content-length"), "5");
    assert.ok(!hasField(origin.requests[0].fields, "transfer-encoding"));
  });
  await t.step("request setBody without reading: the client's body is drained, keep-alive holds", async () => {
    await using origin = startOrigin(serve((req) => ok(`got ${text(req.body)}`)));
    await using proxy = startTestProxy({ hooks: { onRequest: (req) => req.setBody("short") } });
    await using client = await proxy.connect();
    const big = "x".repeat(200_000);
    await client.write(
      `POST ${origin.url("/")} HTTP/1.1\r\nHost: ${origin.authority}\r\nContent-Length: ${big.length}\r\n\r\n${big}`,
    );
    assert.equal(text((await client.response()).body), "got short");
    await client.write(get(origin.url("/again")));
    assert.equal((await client.response()).status, 200);
  });
  await t.step("text() over its cap: the hook's BodyTooLargeError answers 502 for a response", async () => {
    await using origin = startOrigin(serve(() => ok("y".repeat(100))));
    await using proxy = startTestProxy({ hooks: { onResponse: async (res) => void await res.text(10) } });
    const res = await proxy.roundTrip(get(origin.url("/")));
    assert.equal(res.status, 502);
  });
});

Deno.test("a hook that throws, rejects or never settles: 500, a clean close, the proxy keeps serving", async (t) => {
  // Each hook misbehaves for /x only, so the same proxy is then checked with another request.
  const failing = (req: { url: URL }) => req.url.pathname === "/x";
  const rows: { name: string; hooks: ProxyHooks; code: string; timeoutMs?: number }[] = [
    {
      name: "onRequest throws",
      hooks: {
        onRequest(req) {
          if (failing(req)) throw new Error("boom");
        },
      },
      code: "hook-on-request-failed",
    },
    {
      name: "onResponse rejects",
      hooks: {
        onResponse: (_res, req) => failing(req) ? Promise.reject(new Error("boom")) : undefined,
      },
      code: "hook-on-response-failed",
    },
    {
      name: "onRequest never settles",
      hooks: { onRequest: (req) => failing(req) ? new Promise(() => {}) : undefined },
      code: "hook-on-request-timeout",
      timeoutMs: 300,
    },
    {
      name: "onRequest returns an invalid reply",
      hooks: { onRequest: (req) => failing(req) ? { status: 42 } : undefined },
      code: "hook-on-request-invalid",
    },
  ];
  for (const row of rows) {
    await t.step(row.name, async () => {
      await using origin = startOrigin(echoTarget);
      const records = new Records();
      await using proxy = startTestProxy({
        hooks: [row.hooks, records.hooks],
        hookTimeoutMs: row.timeoutMs ?? 30_000,
      });
      await using client = await proxy.connect();
      const started = performance.now();
      await client.write(get(origin.url("/x")));
      const res = await client.response();
      assert.equal(res.status, 500);
      assert.equal(fieldValue(res.fields, "connection"), "close");
      await client.assertClosed();
      if (row.timeoutMs) assert.ok(performance.now() - started >= row.timeoutMs - 5, "answered before the timeout");
      const record = await records.next();
      assert.equal(record.error, row.code);
      assert.equal(record.status, 500);
      // Everyone else is still served.
      const after = await startTestProxyCheck(proxy.port, origin.url("/after"));
      assert.equal(after, 200);
    });
  }
  await t.step("a ProxyError thrown on purpose keeps its status", async () => {
    await using origin = startOrigin(echoTarget);
    await using proxy = startTestProxy({
      hooks: {
        onRequest() {
          throw new ForbiddenError("Not here", "custom-denied");
        },
      },
    });
    assert.equal((await proxy.roundTrip(get(origin.url("/")))).status, 403);
  });
});

/** One GET through the proxy on `port`; returns the status. */
async function startTestProxyCheck(port: number, url: string): Promise<number> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const req = get(url);
    await conn.write(new TextEncoder().encode(req));
    const buf = new Uint8Array(4096);
    const n = await conn.read(buf);
    return Number(new TextDecoder().decode(buf.subarray(0, n ?? 0)).split(" ")[1]);
  } finally {
    conn.close();
  }
}

Deno.test("onError: custom error pages for the proxy's own answers; req given when there is one", async () => {
  const seen: { code: string; status: number; hasReq: boolean }[] = [];
  await using proxy = startTestProxy({
    hooks: {
      onError(error, _ctx, req) {
        seen.push({ code: error.code, status: error.status, hasReq: req !== undefined });
        return {
          status: error.status,
          headers: { "Content-Type": "text/html" },
          body: `<h1>${error.status}</h1>`,
        };
      },
    },
  });
  const refused = await proxy.roundTrip(get("http://127.0.0.1:1/"));
  assert.equal(refused.status, 502);
  assert.equal(text(refused.body), "<h1>502</h1>");
  assert.equal(fieldValue(refused.fields, "content-type"), "text/html");
  const bad = await proxy.roundTrip("GET http://127.0.0.1:1/ HTTP/1.1\r\nHost: x\r\nContent-Length: x\r\n\r\n");
  assert.equal(bad.status, 400);
  assert.equal(text(bad.body), "<h1>400</h1>");
  assert.deepEqual(seen, [
    { code: "upstream-refused", status: 502, hasReq: true },
    { code: "invalid-content-length", status: 400, hasReq: false },
  ]);
});

Deno.test("onExchangeEnd: exactly one record per exchange and per tunnel, with what logs need", async (t) => {
  await t.step("a forwarded exchange, then a reused connection", async () => {
    await using origin = startOrigin(serve(() => ok("hello")));
    const records = new Records();
    await using proxy = startTestProxy({ hooks: records.hooks });
    await using client = await proxy.connect();
    const request = get(origin.url("/r?q=1"));
    await client.write(request);
    const res = await client.response();
    const a = await records.next();
    assert.equal(a.kind, "http");
    assert.equal(a.method, "GET");
    assert.equal(a.target, origin.url("/r?q=1"));
    assert.equal(a.status, 200);
    assert.equal(a.error, null);
    assert.deepEqual(a.upstream, { hostname: "127.0.0.1", port: origin.port });
    assert.equal(a.reused, false);
    assert.equal(a.bytesFromClient, request.length);
    assert.equal(a.bytesToClient, client.reader.received.length);
    assert.equal(a.client.hostname, "127.0.0.1");
    assert.ok(a.timings.connect !== null && a.timings.connect >= 0);
    assert.ok(a.timings.firstByte !== null && a.timings.firstByte >= 0);
    assert.ok(a.timings.total >= a.timings.firstByte);
    assert.equal(text(res.body), "hello");
    await client.write(request);
    await client.response();
    const b = await records.next();
    assert.equal(b.reused, true);
    assert.equal(b.timings.connect, null);
    assert.equal(b.connectionId, a.connectionId);
  });
  await t.step("an error before any origin: kind local, the stable code", async () => {
    const records = new Records();
    await using proxy = startTestProxy({ hooks: records.hooks });
    await proxy.roundTrip("GET http://127.0.0.1:1/ HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n");
    const r = await records.next();
    assert.equal(r.status, 502);
    assert.equal(r.error, "upstream-refused");
    assert.equal(r.upstream, null);
    await proxy.roundTrip("GET http://127.0.0.1:1/ HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n");
    const bad = await records.next();
    assert.equal(bad.status, 400);
    assert.equal(bad.error, "invalid-content-length");
  });
  await t.step("a CONNECT tunnel: kind connect, bytes both ways, who closed first", async () => {
    await using origin = startOrigin(async (c) => {
      const got = await c.reader.readExact(4, "ping");
      await c.write(got);
      await c.closeWrite();
      await c.waitEof();
    });
    const records = new Records();
    await using proxy = startTestProxy({ connectPorts: "*", hooks: records.hooks });
    await using client = await proxy.connect();
    const request = `CONNECT ${origin.authority} HTTP/1.1\r\nHost: ${origin.authority}\r\n\r\n`;
    await client.write(request);
    await client.reader.readUntil("\r\n\r\n", "the 200");
    await client.write("ping");
    assert.equal(text(await client.reader.readExact(4, "pong")), "ping");
    await client.reader.readToEnd("origin FIN");
    await client.closeWrite();
    const r = await records.next();
    assert.equal(r.kind, "connect");
    assert.equal(r.status, 200);
    assert.equal(r.bytesFromClient, request.length + 4);
    assert.equal(r.bytesToClient, client.reader.received.length);
    assert.deepEqual(r.tunnelEnd, { end: "closed", firstFin: "origin" });
    assert.equal(records.all.length, 1);
  });
});

Deno.test("onConnect decides CONNECT: nothing → port policy, allow, deny, a reply, redirect", async (t) => {
  const opened = async (port: number, authority: string): Promise<string> => {
    await using client = await (await import("./util.ts")).Client.connect(port);
    await client.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
    const head = await client.reader.readUntil("\r\n\r\n", "CONNECT answer");
    return text(head!);
  };
  await using origin = startOrigin(async (c) => {
    await c.write("hi");
    await c.waitEof();
  });
  await using other = startOrigin(async (c) => {
    await c.write("other");
    await c.waitEof();
  });
  await t.step("nothing returned: the port policy (443 only) refuses", async () => {
    await using proxy = startTestProxy({ hooks: { onConnect() {} } });
    assert.match(await opened(proxy.port, origin.authority), /^HTTP\/1.1 403 /);
  });
  await t.step("allow overrides the port policy", async () => {
    await using proxy = startTestProxy({ hooks: { onConnect: () => "allow" } });
    assert.match(await opened(proxy.port, origin.authority), /^HTTP\/1.1 200 /);
  });
  await t.step("deny: 403 even where the port policy allows", async () => {
    await using proxy = startTestProxy({
      connectPorts: "*",
      hooks: { onConnect: () => Promise.resolve("deny" as const) },
    });
    const before = origin.conns.length;
    assert.match(await opened(proxy.port, origin.authority), /^HTTP\/1.1 403 /);
    assert.equal(origin.conns.length, before, "the origin was dialled");
  });
  await t.step("a reply: 407 with Proxy-Authenticate, then close", async () => {
    await using proxy = startTestProxy({
      connectPorts: "*",
      hooks: {
        onConnect: (req) =>
          req.headers.get("proxy-authorization") === "Basic dTpw" ? undefined : {
            status: 407,
            headers: { "Proxy-Authenticate": 'Basic realm="waypost"' },
          },
      },
    });
    await using client = await proxy.connect();
    await client.write(`CONNECT ${origin.authority} HTTP/1.1\r\nHost: ${origin.authority}\r\n\r\n`);
    const res = await client.response("CONNECT");
    assert.equal(res.status, 407);
    assert.equal(fieldValue(res.fields, "proxy-authenticate"), 'Basic realm="waypost"');
    await client.assertClosed();
  });
  await t.step("redirect dials another host", async () => {
    await using proxy = startTestProxy({
      hooks: { onConnect: () => ({ redirect: { hostname: "127.0.0.1", port: other.port } }) },
    });
    await using client = await proxy.connect();
    await client.write(`CONNECT example.invalid:443 HTTP/1.1\r\nHost: example.invalid:443\r\n\r\n`);
    await client.reader.readUntil("\r\n\r\n", "200");
    assert.equal(text(await client.reader.readExact(5, "bytes from the other origin")), "other");
  });
});

Deno.test("a stale pooled connection's retry does not run onRequest twice", async () => {
  let served = 0;
  await using origin = startOrigin(async (c) => {
    // First connection: answers once, then reads the next request and closes without a response.
    const first = await c.readRequest();
    if (first === null) return;
    served++;
    await c.write(ok("one"));
    if (c.index === 0) {
      await c.readRequest();
      c.close();
      return;
    }
    while (await c.readRequest() !== null) await c.write(ok("again"));
  });
  let calls = 0;
  await using proxy = startTestProxy({ hooks: { onRequest: () => void calls++ } });
  assert.equal(text((await proxy.roundTrip(get(origin.url("/1")))).body), "one");
  const res = await proxy.roundTrip(get(origin.url("/2")));
  assert.equal(res.status, 200);
  assert.equal(origin.conns.length, 2, "the request was retried on a new connection");
  assert.equal(calls, 2, "onRequest ran once per client request");
  assert.equal(served, 2);
});

Deno.test("HookContext: locals per exchange, connectionId per connection, the client's address", async () => {
  await using origin = startOrigin(echoTarget);
  const ids: number[] = [];
  const locals: unknown[] = [];
  await using proxy = startTestProxy({
    hooks: {
      onRequest(_req, ctx) {
        locals.push({ ...ctx.locals });
        ctx.locals.mark = "set";
        ids.push(ctx.connectionId);
        assert.equal(ctx.client.hostname, "127.0.0.1");
        assert.equal(ctx.signal.aborted, false);
      },
      onResponse(res, _req, ctx) {
        res.headers.set("X-Mark", String(ctx.locals.mark));
      },
    },
  });
  await using client = await proxy.connect();
  for (let i = 0; i < 2; i++) {
    await client.write(get(origin.url("/")));
    assert.equal(fieldValue((await client.response()).fields, "x-mark"), "set");
  }
  const other = await proxy.roundTrip(get(origin.url("/")));
  assert.equal(other.status, 200);
  assert.deepEqual(locals, [{}, {}, {}]);
  assert.equal(ids[0], ids[1]);
  assert.notEqual(ids[1], ids[2]);
});

const RESET_AFTER_REQUEST = `
import socket, struct, sys, time
port, target, host = int(sys.argv[1]), sys.argv[2], sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.connect(("127.0.0.1", port))
s.sendall(("GET %s HTTP/1.1\\r\\nHost: %s\\r\\n\\r\\n" % (target, host)).encode())
time.sleep(0.3)
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.close()
`;

Deno.test("ctx.signal is aborted when the client resets during an asynchronous hook", async () => {
  await using origin = startOrigin(echoTarget);
  const aborted = deferred<boolean>();
  await using proxy = startTestProxy({
    hooks: {
      onRequest(_req, ctx) {
        return new Promise((resolve) => {
          const timer = setTimeout(() => {
            aborted.resolve(false);
            resolve();
          }, 3000);
          ctx.signal.addEventListener("abort", () => {
            clearTimeout(timer);
            aborted.resolve(true);
            resolve({ status: 499 });
          });
        });
      },
    },
  });
  // SO_LINGER 0 resets cannot be made from Deno: python3 plays the vanishing client.
  const out = await new Deno.Command("python3", {
    args: ["-c", RESET_AFTER_REQUEST, String(proxy.port), origin.url("/"), origin.authority],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, `python3 failed: ${new TextDecoder().decode(out.stderr)}`);
  assert.equal(await aborted.promise, true, "ctx.signal was not aborted by the reset");
});

Deno.test("a header timeout goes through onError too (408)", async () => {
  const codes: string[] = [];
  await using proxy = startTestProxy({
    headerTimeoutMs: 200,
    hooks: {
      onError(error) {
        codes.push(error.code);
        return { status: 408, body: "too slow\n" };
      },
    },
  });
  await using client = await proxy.connect();
  await client.write("GET http://127.0.0.1:1/ HTTP/1.1\r\n");
  const res = await client.response();
  assert.equal(res.status, 408);
  assert.equal(text(res.body), "too slow\n");
  await client.assertClosed();
  assert.deepEqual(codes, ["header-timeout"]);
});

// ---------------------------------------------------------------------------
// Findings of the review of the hook pipeline, each from the wire.

Deno.test("a hook that catches BodyTooLargeError loses nothing: the whole body is still forwarded", async (t) => {
  await t.step("request body over the cap, then a pipelined request", async () => {
    await using origin = startOrigin(serve((req) => ok(`${req.target} got ${text(req.body)}`)));
    await using proxy = startTestProxy({
      hooks: {
        async onRequest(req) {
          try {
            await req.text(5);
          } catch {
            // Too large for this hook: let it through as it came.
          }
        },
      },
    });
    await using client = await proxy.connect();
    const body = "A".repeat(20);
    await client.write(
      `POST ${origin.url("/one")} HTTP/1.1\r\nHost: ${origin.authority}\r\nContent-Length: 20\r\n\r\n${body}` +
        get(origin.url("/two")),
    );
    assert.equal(text((await client.response()).body), `/one got ${body}`);
    assert.equal(text((await client.response()).body), "/two got ");
  });
  await t.step("response body over the cap", async () => {
    const body = "B".repeat(100_000);
    await using origin = startOrigin(serve(() => ok(body)));
    await using proxy = startTestProxy({
      bodyTimeoutMs: 2000,
      hooks: {
        async onResponse(res) {
          try {
            await res.text(10);
          } catch {
            // Too large: sent on as it came.
          }
        },
      },
    });
    const res = await proxy.roundTrip(get(origin.url("/")));
    assert.ok(res.complete);
    assert.equal(text(res.body), body);
  });
});

Deno.test("onResponse changing a status across 204/304 and 200 keeps the framing right", async () => {
  await using origin = startOrigin(
    serve((req) =>
      req.target === "/204"
        ? "HTTP/1.1 204 No Content\r\n\r\n"
        : req.target === "/304"
        ? "HTTP/1.1 304 Not Modified\r\nContent-Length: 1000\r\n\r\n"
        : ok("body")
    ),
  );
  await using proxy = startTestProxy({
    hooks: {
      onResponse(res, req) {
        if (req.url.pathname !== "/next") res.status = 200;
      },
    },
  });
  await using client = await proxy.connect();
  for (const path of ["/204", "/304"]) {
    await client.write(get(origin.url(path)));
    const res = await client.response();
    assert.equal(res.status, 200);
    assert.equal(fieldValue(res.fields, "content-length"), "0");
    assert.equal(res.body.length, 0);
  }
  // The connection is still in step: the next response is the next response.
  await client.write(get(origin.url("/next")));
  const next = await client.response();
  assert.equal(text(next.body), "body");
});

Deno.test("the proxy's Via pair cannot be edited in place for later exchanges", async () => {
  await using origin = startOrigin(echoTarget);
  let first = true;
  await using proxy = startTestProxy({
    hooks: {
      onResponse(res) {
        if (!first) return;
        first = false;
        for (const f of res.fields) if (/^via$/i.test(f[0])) f[1] = "1.1 x\r\nSet-Cookie: evil=1";
      },
    },
  });
  const a = await proxy.roundTrip(get(origin.url("/a")));
  assert.equal(a.status, 500, "editing a shared pair fails that exchange");
  const b = await proxy.roundTrip(get(origin.url("/b")));
  assert.equal(b.status, 200);
  assert.ok(!hasField(b.fields, "set-cookie"));
  assert.deepEqual(b.fields.filter(([n]) => n === "Via").map(([, v]) => v), ["1.1 waypost"]);
  assert.ok(!origin.receivedText.includes("evil"));
});

Deno.test("a stalled body stream from a hook is cancelled by the body timeout; the proxy still stops", async () => {
  let cancelled = false;
  await using proxy = startTestProxy({
    bodyTimeoutMs: 300,
    hooks: {
      onRequest: () =>
        new Response(
          new ReadableStream({
            start(c) {
              c.enqueue(new TextEncoder().encode("data: 1\n\n"));
            },
            cancel() {
              cancelled = true;
            },
          }),
          { headers: { "content-type": "text/event-stream" } },
        ),
    },
  });
  await using client = await proxy.connect();
  await client.write(get("http://127.0.0.1:9/events"));
  const head = await client.reader.readUntil("data: 1\n\n", "the first event");
  assert.match(text(head!), /Transfer-Encoding: chunked/);
  const rest = await client.reader.readToEnd("the close after the body timeout");
  assert.ok(!text(rest).includes("0\r\n\r\n"), "the cut stream was made to look complete");
  assert.ok(cancelled, "the stream was not cancelled");
  assert.equal(proxy.handle.connections, 0);
});

Deno.test("a transform that ends a request body early does not let its rest become a request", async () => {
  await using origin = startOrigin(serve((req) => ok(`${req.method} ${req.target} ${text(req.body)}`)));
  await using proxy = startTestProxy({
    hooks: {
      onRequest(req) {
        req.pipeThrough(
          new TransformStream({
            transform(chunk, c) {
              c.enqueue(chunk.subarray(0, 4));
              c.terminate();
            },
          }),
        );
      },
    },
  });
  const smuggled = `GET ${origin.url("/smuggled")} HTTP/1.1\r\nHost: ${origin.authority}\r\n\r\n`;
  const body = `DATA${smuggled}`;
  await using client = await proxy.connect();
  // "DATA" first; the rest of the declared body only after the response to the cut body.
  await client.write(
    `POST ${origin.url("/up")} HTTP/1.1\r\nHost: ${origin.authority}\r\nContent-Length: ${body.length}\r\n\r\nDATA`,
  );
  const res = await client.response();
  assert.equal(text(res.body), "POST /up DATA");
  assert.equal(fieldValue(res.fields, "connection"), "close");
  await client.write(smuggled).catch(() => {
    // The proxy may have closed already: the rest is not read as a request either way.
  });
  await client.assertClosed();
  assert.ok(!origin.requestLines().some((l) => l.includes("/smuggled")), "the rest reached the origin");
});

Deno.test("an onError reply to an HTTP/1.0 client is not chunked", async () => {
  await using proxy = startTestProxy({
    hooks: {
      onError: (e) =>
        new Response(new ReadableStream({ start: (c) => (c.enqueue(new Uint8Array([65])), c.close()) }), {
          status: e.status,
        }),
    },
  });
  await using client = await proxy.connect();
  await client.write("GET http://127.0.0.1:1/ HTTP/1.0\r\n\r\n");
  const res = await client.response();
  assert.equal(res.status, 502);
  assert.ok(!hasField(res.fields, "transfer-encoding"));
  assert.equal(text(res.body), "A");
});

Deno.test("Expect: 100-continue: a hook reading the body makes the proxy send the 100 itself", async () => {
  await using origin = startOrigin(
    serve((req) => ok(`got ${text(req.body)} expect=${fieldValues(req.fields, "expect").join(",")}`)),
  );
  await using proxy = startTestProxy({
    hookTimeoutMs: 2000,
    hooks: { onRequest: async (req) => void await req.text() },
  });
  await using client = await proxy.connect();
  await client.write(
    `POST ${
      origin.url("/")
    } HTTP/1.1\r\nHost: ${origin.authority}\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n`,
  );
  const interim = await client.response();
  assert.equal(interim.status, 100);
  await client.write("hello");
  const res = await client.response();
  assert.equal(res.status, 200);
  assert.equal(text(res.body), "got hello expect=");
});

Deno.test("HEAD and 304 keep their Content-Length when a hook reads the (empty) body", async () => {
  await using origin = startOrigin(
    serve((req) =>
      req.method === "HEAD"
        ? "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 123456\r\n\r\n"
        : ok("next")
    ),
  );
  await using proxy = startTestProxy({ hooks: { onResponse: async (res) => void await res.text() } });
  await using client = await proxy.connect();
  await client.write(`HEAD ${origin.url("/")} HTTP/1.1\r\nHost: ${origin.authority}\r\n\r\n` + get(origin.url("/n")));
  const head = await client.response("HEAD");
  assert.equal(fieldValue(head.fields, "content-length"), "123456");
  assert.equal(text((await client.response()).body), "next");
});

Deno.test("records: a 408 gets one, a client that closes while idle makes none", async () => {
  const records: ExchangeRecord[] = [];
  await using proxy = startTestProxy({ headerTimeoutMs: 200, hooks: { onExchangeEnd: (r) => void records.push(r) } });
  await using slow = await proxy.connect();
  await slow.write("GET http://127.0.0.1:1/ HTTP/1.1\r\n");
  assert.equal((await slow.response()).status, 408);
  await slow.assertClosed();
  const idle = await proxy.connect();
  idle.close();
  for (let i = 0; i < 50 && (records.length < 1 || proxy.handle.connections > 0); i++) {
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.deepEqual(records.map((r) => [r.status, r.error]), [[408, "header-timeout"]]);
});
