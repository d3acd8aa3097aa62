/**
 * Parent proxy building blocks: the `--upstream-proxy` URL, NO_PROXY matching,
 * the absolute-form target, and the CONNECT handshake against scripted fake
 * parents on 127.0.0.1 (the bytes they receive are checked too).
 */
import assert from "node:assert/strict";
import { closeQuietly } from "../lib/conn.ts";
import { UpstreamError, UpstreamTimeoutError } from "../lib/errors.ts";
import {
  authorityOf,
  bypassesParent,
  openParentTunnel,
  PARENT_ERROR_TYPES,
  parentConnectRequest,
  parentRequestTarget,
  type ParentTunnelOptions,
  type ParentTunnelResult,
  parseNoProxy,
  parseParentProxy,
} from "../lib/parent.ts";
import { ConnReader } from "../lib/reader.ts";
import { type OriginConn, type OriginScript, startOrigin, text } from "./util.ts";

/** Basic credentials for `credentials` as UTF-8 (built independently of lib/parent.ts). */
const basic = (credentials: string) => `Basic ${btoa(String.fromCharCode(...new TextEncoder().encode(credentials)))}`;

// ---------------------------------------------------------------------------
// parseParentProxy

Deno.test("parseParentProxy: host, port, credentials and display", () => {
  const cases: [string, { hostname: string; port: number; authorization: string | null; display: string }][] = [
    ["http://proxy.test:3128", {
      hostname: "proxy.test",
      port: 3128,
      authorization: null,
      display: "http://proxy.test:3128",
    }],
    ["HTTP://Proxy.Test:3128/", {
      hostname: "proxy.test",
      port: 3128,
      authorization: null,
      display: "http://proxy.test:3128",
    }],
    ["http://proxy.test", { hostname: "proxy.test", port: 80, authorization: null, display: "http://proxy.test:80" }],
    ["http://127.0.0.1:8080", {
      hostname: "127.0.0.1",
      port: 8080,
      authorization: null,
      display: "http://127.0.0.1:8080",
    }],
    ["http://[::1]:3128", { hostname: "::1", port: 3128, authorization: null, display: "http://[::1]:3128" }],
    ["http://[2001:DB8::1]", {
      hostname: "2001:db8::1",
      port: 80,
      authorization: null,
      display: "http://[2001:db8::1]:80",
    }],
    ["http://user:secret@proxy.test:3128", {
      hostname: "proxy.test",
      port: 3128,
      authorization: basic("user:secret"),
      display: "http://proxy.test:3128",
    }],
    // %40 is "@"; the userinfo ends at the last raw "@"; a ":" in the password is kept.
    ["http://us%40er:p%40ss:w%3Ard@[::1]:1", {
      hostname: "::1",
      port: 1,
      authorization: basic("us@er:p@ss:w:rd"),
      display: "http://[::1]:1",
    }],
    ["http://user:p@ss@proxy.test:1", {
      hostname: "proxy.test",
      port: 1,
      authorization: basic("user:p@ss"),
      display: "http://proxy.test:1",
    }],
    ["http://user@proxy.test:1", {
      hostname: "proxy.test",
      port: 1,
      authorization: basic("user:"),
      display: "http://proxy.test:1",
    }],
    ["http://:pw@proxy.test:1", {
      hostname: "proxy.test",
      port: 1,
      authorization: basic(":pw"),
      display: "http://proxy.test:1",
    }],
    ["http://@proxy.test:1", { hostname: "proxy.test", port: 1, authorization: null, display: "http://proxy.test:1" }],
    // UTF-8, written as such or percent-encoded: the same bytes.
    ["http://j%C3%BCrgen:p%C3%A4ss@proxy.test:1", {
      hostname: "proxy.test",
      port: 1,
      authorization: basic("jürgen:päss"),
      display: "http://proxy.test:1",
    }],
    ["http://jürgen:päss@proxy.test:1", {
      hostname: "proxy.test",
      port: 1,
      authorization: basic("jürgen:päss"),
      display: "http://proxy.test:1",
    }],
  ];
  for (const [url, want] of cases) assert.deepEqual(parseParentProxy(url), want, url);
});

Deno.test("parseParentProxy: bad URLs are TypeErrors that never repeat the password", () => {
  const cases: [string, RegExp][] = [
    ["https://proxy.test:3128", /not supported yet/],
    ["socks5://proxy.test:1080", /unsupported scheme socks5/],
    ["proxy.test:3128", /expected a URL/],
    ["//proxy.test:3128", /expected a URL/],
    ["http://", /no host/],
    ["http://:3128", /no host/],
    ["http://user:secret@", /no host/],
    ["http://proxy.test:3128/path", /path, query or fragment/],
    ["http://proxy.test:3128?x=1", /path, query or fragment/],
    ["http://proxy.test:3128/?", /path, query or fragment/],
    ["http://proxy.test:3128#top", /path, query or fragment/],
    ["http:///proxy.test", /path, query or fragment/],
    ["http://proxy.test:0", /invalid host or port/],
    ["http://proxy.test:65536", /invalid host or port/],
    ["http://proxy.test:31x8", /invalid host or port/],
    ["http://proxy test:3128", /invalid host or port/],
    ["http://[::1:3128", /invalid host or port/],
    ["http://[zz::1]:3128", /invalid host or port/],
    ["http://[1::2::3]:3128", /invalid IPv6/],
    ["http://user:secret%zz@proxy.test:1", /invalid percent-encoding in the password/],
    ["http://us%3Aer:secret@proxy.test:1", /user name must not contain ':'/],
    ["http://user:sec ret@proxy.test:1", /space or control character/],
    ["http://user:secret@proxy.test:99999", /invalid host or port/],
  ];
  for (const [url, message] of cases) {
    assert.throws(() => parseParentProxy(url), (error: unknown) => {
      assert.ok(error instanceof TypeError, url);
      assert.match(error.message, message, url);
      assert.ok(!error.message.includes("secret"), `password in the message for ${url}: ${error.message}`);
      return true;
    });
  }
});

// ---------------------------------------------------------------------------
// NO_PROXY

Deno.test("NO_PROXY: names, suffixes, *, IPs, CIDR ranges, ports, IPv6, case", () => {
  const cases: [list: string, host: string, port: number, bypass: boolean][] = [
    ["", "example.com", 80, false],
    ["*", "anything.test", 443, true],
    ["*", "10.1.2.3", 80, true],
    ["foo.test, *", "anything.test", 1, true],
    // A name: itself and its subdomains, on a label boundary.
    ["example.com", "example.com", 80, true],
    ["example.com", "www.example.com", 80, true],
    ["example.com", "a.b.example.com", 80, true],
    ["example.com", "badexample.com", 80, false],
    ["example.com", "example.com.evil.test", 80, false],
    ["example.com", "example.org", 80, false],
    // A leading "." or "*.": subdomains, and (as curl does) the bare name too.
    [".example.com", "www.example.com", 80, true],
    [".example.com", "example.com", 80, true],
    ["*.example.com", "example.com", 80, true],
    ["*.example.com", "x.example.com", 80, true],
    [".example.com", "notexample.com", 80, false],
    // Trailing dots and case do not matter.
    ["Example.COM.", "WWW.example.com", 80, true],
    ["example.com", "www.example.com.", 80, true],
    // Separators: commas, spaces, tabs, newlines, mixed.
    ["a.test,b.test", "b.test", 80, true],
    ["a.test b.test", "b.test", 80, true],
    [" a.test ,\tb.test\n, ", "b.test", 80, true],
    ["a.test,,b.test", "c.test", 80, false],
    // IP literals: exact; never matched as names.
    ["10.0.0.1", "10.0.0.1", 80, true],
    ["10.0.0.1", "10.0.0.2", 80, false],
    ["0.0.1", "10.0.0.1", 80, false],
    ["10.0.0.1", "::ffff:10.0.0.1", 80, true],
    // CIDR ranges, for IP-literal destinations only (no lookups).
    ["10.0.0.0/8", "10.200.3.4", 80, true],
    ["10.0.0.0/8", "11.0.0.1", 80, false],
    ["10.0.0.0/8", "ten.test", 80, false],
    ["192.168.0.0/16,172.16.0.0/12", "172.31.255.255", 443, true],
    ["0.0.0.0/0", "203.0.113.9", 80, true],
    ["0.0.0.0/0", "2001:db8::1", 80, false],
    // IPv6: bare or in brackets, exact or a range; destination with or without brackets.
    ["::1", "::1", 80, true],
    ["::1", "[::1]", 80, true],
    ["[::1]", "::1", 8080, true],
    ["2001:DB8::/32", "2001:db8:ffff::1", 80, true],
    ["2001:db8::/32", "2001:db9::1", 80, false],
    ["[fd00::]/8", "fdab::1", 80, true],
    ["fe80::1", "FE80::1", 80, true],
    // :port restricts any entry to that port.
    ["example.com:443", "www.example.com", 443, true],
    ["example.com:443", "www.example.com", 80, false],
    [".example.com:8080", "example.com", 8080, true],
    ["10.0.0.0/8:22", "10.1.1.1", 22, true],
    ["10.0.0.0/8:22", "10.1.1.1", 23, false],
    ["10.0.0.1:80", "10.0.0.1", 80, true],
    ["[::1]:8080", "::1", 8080, true],
    ["[::1]:8080", "::1", 80, false],
    ["[fd00::]/8:443", "fd00::5", 443, true],
    ["[fd00::]/8:443", "fd00::5", 80, false],
    ["*:443", "anything.test", 443, true],
    ["*:443", "anything.test", 80, false],
    // Nothing implicit: loopback goes through the parent unless listed.
    ["example.com", "localhost", 80, false],
    ["example.com", "127.0.0.1", 80, false],
    ["localhost", "localhost", 80, true],
    ["127.0.0.0/8", "127.0.0.1", 80, true],
  ];
  for (const [list, host, port, bypass] of cases) {
    assert.equal(
      bypassesParent(parseNoProxy(list), host, port),
      bypass,
      `NO_PROXY=${JSON.stringify(list)} ${host}:${port}`,
    );
  }
});

Deno.test("NO_PROXY: parsed rules; invalid entries are TypeErrors naming the entry", () => {
  assert.deepEqual(parseNoProxy(".Example.com:8080"), [
    { kind: "name", name: "example.com", port: 8080, text: ".Example.com:8080" },
  ]);
  assert.deepEqual(parseNoProxy("*").map((r) => r.kind), ["all"]);
  const [ip] = parseNoProxy("::ffff:10.0.0.0/104");
  assert.equal(ip.kind, "ip");
  if (ip.kind === "ip") assert.equal(ip.range.prefix, 8, "an IPv4-mapped range is an IPv4 range");
  for (
    const bad of [
      "10.0.0.0/33",
      "example.com:0",
      "example.com:99999",
      "example.com:x",
      "example.com:",
      "[::1",
      "[::1]x",
    ]
  ) {
    assert.throws(() => parseNoProxy(bad), TypeError, bad);
  }
  for (const bad of ["ex*mple.com", "a..b", "foo/bar", "1.2.3.4/8/1", "[zz::]", "user@host"]) {
    assert.throws(() => parseNoProxy(bad), (error: unknown) => {
      assert.ok(error instanceof TypeError, bad);
      assert.ok(error.message.includes(JSON.stringify(bad)), error.message);
      return true;
    });
  }
});

// ---------------------------------------------------------------------------
// Plain requests: the absolute-form target

Deno.test("parentRequestTarget: absolute form as received, without fragment or userinfo", () => {
  const cases: [URL | string, string][] = [
    ["http://example.test/a/b?x=1&y=%20", "http://example.test/a/b?x=1&y=%20"],
    ["http://Example.TEST:8080/p", "http://Example.TEST:8080/p"],
    ["http://example.test/p?q#frag", "http://example.test/p?q"],
    ["http://example.test#frag", "http://example.test"],
    ["http://example.test", "http://example.test"],
    ["http://[::1]:8080/x", "http://[::1]:8080/x"],
    [new URL("http://example.test/p?q#frag"), "http://example.test/p?q"],
    [new URL("http://user:pw@example.test:80/p"), "http://example.test/p"],
    [new URL("http://example.test"), "http://example.test/"],
  ];
  for (const [input, want] of cases) assert.equal(parentRequestTarget(input), want, String(input));
  for (const bad of ["/origin-form", "example.test:80", "http://example.test/a b", "http://x/\r\nX: y"]) {
    assert.throws(() => parentRequestTarget(bad), TypeError, bad);
  }
});

Deno.test("authorityOf and parentConnectRequest: brackets for IPv6, no header injection", () => {
  assert.equal(authorityOf("localhost", 443), "localhost:443");
  assert.equal(authorityOf("::1", 443), "[::1]:443");
  assert.equal(authorityOf("[::1]", 443), "[::1]:443");
  const parent = parseParentProxy("http://u:p@127.0.0.1:3128");
  assert.equal(
    text(parentConnectRequest(parent, "[::1]:443")),
    `CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\nProxy-Authorization: ${basic("u:p")}\r\n\r\n`,
  );
  for (const bad of ["localhost", "localhost:443\r\nX-Injected: 1", "::1:443", "local host:443", "localhost:443/x"]) {
    assert.throws(() => parentConnectRequest(parent, bad), TypeError, bad);
  }
});

Deno.test("PARENT_ERROR_TYPES names an RFC 9209 type for every code", () => {
  for (const type of Object.values(PARENT_ERROR_TYPES)) assert.match(type, /^[a-z_]+$/);
  assert.equal(PARENT_ERROR_TYPES["parent-timeout"], "http_response_timeout");
});

// ---------------------------------------------------------------------------
// CONNECT through scripted parents

interface Handshake {
  result: ParentTunnelResult | null;
  error: unknown;
  /** Every byte the fake parent received, as latin-1 text. */
  received: string;
  elapsedMs: number;
}

/**
 * Runs openParentTunnel against a fake parent on 127.0.0.1 that answers with
 * `script`; `after` runs on the open connection when the handshake succeeded.
 */
async function handshake(
  script: OriginScript,
  opts: {
    credentials?: string;
    authority?: string;
    options?: Partial<ParentTunnelOptions>;
    after?: (conn: Deno.TcpConn, reader: ConnReader) => Promise<void>;
  } = {},
): Promise<Handshake> {
  const origin = startOrigin(script);
  const out: Handshake = { result: null, error: null, received: "", elapsedMs: 0 };
  try {
    const parent = parseParentProxy(`http://${opts.credentials ?? ""}127.0.0.1:${origin.port}`);
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: origin.port });
    const reader = new ConnReader(conn);
    const started = performance.now();
    try {
      out.result = await openParentTunnel(conn, reader, parent, opts.authority ?? "localhost:8443", {
        timeoutMs: 3000,
        ...opts.options,
      });
      out.elapsedMs = performance.now() - started;
      if (out.result.ok && opts.after) await opts.after(conn, reader);
    } catch (error) {
      out.elapsedMs = performance.now() - started;
      out.error = error;
    } finally {
      closeQuietly(conn);
      reader.dispose();
    }
  } finally {
    await origin.close();
  }
  out.received = origin.conns.map((c) => c.receivedText).join("");
  return out;
}

/** A parent that reads the CONNECT head, writes `answer`, then closes (or waits for our close). */
function answers(answer: string | string[], then: "close" | "wait" = "wait"): OriginScript {
  return async (c: OriginConn) => {
    assert.ok(await c.readHead(), "the parent received a CONNECT head");
    for (const part of typeof answer === "string" ? [answer] : answer) await c.write(part);
    if (then === "close") c.close();
    else await c.waitEof();
  };
}

function refusal(h: Handshake) {
  assert.equal(h.error, null, `unexpected error ${h.error}`);
  assert.ok(h.result !== null && !h.result.ok, "a refusal");
  return h.result;
}

function failure(h: Handshake, code: string, status = 502): UpstreamError | UpstreamTimeoutError {
  assert.equal(h.result, null, "no result");
  const error = h.error;
  assert.ok(error instanceof UpstreamError || error instanceof UpstreamTimeoutError, `got ${error}`);
  assert.equal(error.code, code);
  assert.equal(error.status, status);
  assert.ok(code in PARENT_ERROR_TYPES, `${code} has a Proxy-Status type`);
  return error;
}

Deno.test("CONNECT via parent: 200 with early tunnel bytes in the same packet; they stay in the reader", async () => {
  let upstreamSaw = "";
  const h = await handshake(async (c) => {
    await c.readHead();
    await c.write("HTTP/1.1 200 Connection established\r\nVia: 1.1 parent\r\n\r\nSSH-2.0-origin\r\n");
    upstreamSaw = text(await c.reader.readExact(12));
    await c.write("pong");
    await c.waitEof();
  }, {
    after: async (conn, reader) => {
      assert.equal(text(reader.peek()), "SSH-2.0-origin\r\n", "the early bytes arrived with the head and are buffered");
      assert.equal(text((await reader.next())!), "SSH-2.0-origin\r\n");
      await conn.write(new TextEncoder().encode("client-hello"));
      let got = "";
      while (got.length < 4) got += text((await reader.next())!);
      assert.equal(got, "pong");
    },
  });
  assert.deepEqual(h.result, { ok: true });
  assert.equal(h.received, "CONNECT localhost:8443 HTTP/1.1\r\nHost: localhost:8443\r\n\r\nclient-hello");
  assert.equal(upstreamSaw, "client-hello");
  assert.ok(!h.received.toLowerCase().includes("proxy-authorization"), "no credentials: no Proxy-Authorization");
});

Deno.test("CONNECT via parent: credentials are sent as Basic Proxy-Authorization", async () => {
  const h = await handshake(answers("HTTP/1.1 200 OK\r\n\r\n"), {
    credentials: "alice:p%40ss%3Aw0rd@",
    authority: "[::1]:443",
  });
  assert.deepEqual(h.result, { ok: true });
  assert.equal(
    h.received,
    `CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\nProxy-Authorization: ${basic("alice:p@ss:w0rd")}\r\n\r\n`,
  );
});

Deno.test("CONNECT via parent: a 2xx's framing fields are ignored (RFC 9110 §9.3.6); its bytes are tunnel bytes", async () => {
  const h = await handshake(async (c) => {
    await c.readHead();
    await c.write("HTTP/1.1 204 Fine\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nabcdefgh");
    await c.waitEof();
  }, {
    after: async (_conn, reader) => {
      let got = "";
      while (got.length < 8) got += text((await reader.next())!);
      assert.equal(got, "abcdefgh");
    },
  });
  assert.deepEqual(h.result, { ok: true });
});

Deno.test("CONNECT via parent: 100 Continue and 103 are skipped, then 200", async () => {
  const h = await handshake(
    answers([
      "HTTP/1.1 100 Continue\r\n\r\n",
      "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\n\r\nX",
    ]),
    { after: async (_conn, reader) => assert.equal(text((await reader.next())!), "X") },
  );
  assert.deepEqual(h.result, { ok: true });
});

Deno.test("CONNECT via parent: 407 with Proxy-Authenticate and a body is returned faithfully", async () => {
  const h = await handshake(
    answers(
      "HTTP/1.1 407 Proxy Authentication Required\r\n" +
        'Proxy-Authenticate: Basic realm="parent"\r\n' +
        "Connection: close, X-Hop\r\nX-Hop: dropped\r\nKeep-Alive: timeout=5\r\n" +
        "Content-Type: text/plain\r\nX-Squid-Error: ERR_CACHE_ACCESS_DENIED 0\r\nContent-Length: 14\r\n\r\n" +
        "access denied\n",
    ),
    { credentials: "bob:wrong@" },
  );
  const r = refusal(h);
  assert.equal(r.status, 407);
  assert.equal(r.reason, "Proxy Authentication Required");
  assert.deepEqual(r.fields, [
    ["Proxy-Authenticate", 'Basic realm="parent"'],
    ["Content-Type", "text/plain"],
    ["X-Squid-Error", "ERR_CACHE_ACCESS_DENIED 0"],
  ]);
  assert.equal(text(r.body), "access denied\n");
  assert.equal(r.truncated, false);
  assert.match(h.received, new RegExp(`\r\nProxy-Authorization: ${basic("bob:wrong")}\r\n`));
});

Deno.test("CONNECT via parent: 502 with a chunked body is decoded (the connection stays open: no wait for EOF)", async () => {
  const h = await handshake(
    answers(
      "HTTP/1.1 502 Bad Gateway\r\nTransfer-Encoding: chunked\r\nContent-Type: text/html\r\n\r\n" +
        "6\r\n<html>\r\n7;ext=1\r\n upstre\r\n8\r\nam down\n\r\n0\r\nX-Trailer: t\r\n\r\n",
    ),
  );
  const r = refusal(h);
  assert.equal(r.status, 502);
  assert.deepEqual(r.fields, [["Content-Type", "text/html"]]);
  assert.equal(text(r.body), "<html> upstream down\n");
  assert.equal(r.truncated, false);
});

Deno.test("CONNECT via parent: a close-delimited refusal body is read to EOF", async () => {
  const h = await handshake(answers("HTTP/1.0 403 Forbidden\r\nServer: parent\r\n\r\nblocked by policy", "close"));
  const r = refusal(h);
  assert.equal(r.status, 403);
  assert.deepEqual(r.fields, [["Server", "parent"]]);
  assert.equal(text(r.body), "blocked by policy");
  assert.equal(r.truncated, false);
});

Deno.test("CONNECT via parent: refusal bodies are bounded (over the bound, cut short, or coded: truncated)", async () => {
  const big = await handshake(async (c) => {
    await c.readHead();
    try {
      await c.write(`HTTP/1.1 500 Oops\r\nContent-Length: 100000\r\n\r\n${"x".repeat(100000)}`);
    } catch {
      // We stopped reading at the bound and closed: the rest may not fit.
    }
  });
  const r1 = refusal(big);
  assert.equal(r1.body.length, 64 * 1024);
  assert.equal(r1.truncated, true);

  const small = refusal(
    await handshake(answers("HTTP/1.1 503 No\r\nContent-Length: 10\r\n\r\n0123456789"), {
      options: { maxBodyBytes: 4 },
    }),
  );
  assert.equal(text(small.body), "0123");
  assert.equal(small.truncated, true);

  const exact = refusal(
    await handshake(answers("HTTP/1.1 503 No\r\nContent-Length: 4\r\n\r\n0123"), {
      options: { maxBodyBytes: 4 },
    }),
  );
  assert.equal(text(exact.body), "0123");
  assert.equal(exact.truncated, false);

  const cut = refusal(await handshake(answers("HTTP/1.1 503 No\r\nContent-Length: 10\r\n\r\n0123", "close")));
  assert.equal(text(cut.body), "0123");
  assert.equal(cut.truncated, true);

  const badChunks = refusal(
    await handshake(answers("HTTP/1.1 503 No\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXYZ")),
  );
  assert.equal(badChunks.status, 503);
  assert.equal(badChunks.truncated, true);

  const coded = refusal(
    await handshake(answers("HTTP/1.1 503 No\r\nTransfer-Encoding: gzip\r\n\r\n\x1f\x8b", "close")),
  );
  assert.equal(coded.body.length, 0);
  assert.equal(coded.truncated, true);
});

Deno.test("CONNECT via parent: a parent that closes before answering or mid-head", async () => {
  failure(await handshake(answers("", "close")), "parent-closed");
  const mid = failure(await handshake(answers("HTTP/1.1 200 Conn", "close")), "parent-truncated-head");
  assert.equal(mid.status, 502);
  failure(await handshake(answers("HTTP/1.1 100 Continue\r\n\r\n", "close")), "parent-closed");
});

Deno.test("CONNECT via parent: garbage, an invalid head, bad framing, 101, endless 1xx: parent-bad-response", async () => {
  // Not HTTP at all: refused on the first bytes, not at the deadline.
  const ssh = await handshake(answers("SSH-2.0-OpenSSH_9.6\r\n"));
  failure(ssh, "parent-bad-response");
  assert.ok(ssh.elapsedMs < 2000, `answered at once (${ssh.elapsedMs} ms)`);
  failure(await handshake(answers("\x15\x03\x01\x00\x02\x02\x46")), "parent-bad-response");
  const invalid = failure(await handshake(answers("HTTP/1.1 2x0 OK\r\n\r\n")), "parent-bad-response");
  assert.equal((invalid.cause as { code?: string }).code, "invalid-status");
  failure(await handshake(answers("HTTP/1.1 200 OK\nbare: lf\n\n")), "parent-bad-response");
  failure(
    await handshake(answers("HTTP/1.1 407 No\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd")),
    "parent-bad-response",
  );
  failure(await handshake(answers("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n")), "parent-bad-response");
  failure(await handshake(answers("HTTP/1.1 100 Continue\r\n\r\n".repeat(33))), "parent-too-many-interim");
});

Deno.test("CONNECT via parent: a silent parent times out (504 parent-timeout), leaking no timer or op", async () => {
  const silent = await handshake(async (c) => {
    await c.readHead();
    await c.waitEof(); // our deadline closes the connection
  }, { options: { timeoutMs: 200 } });
  const error = failure(silent, "parent-timeout", 504);
  assert.ok(error instanceof UpstreamTimeoutError);
  assert.ok(silent.elapsedMs >= 150 && silent.elapsedMs < 2000, `${silent.elapsedMs} ms`);

  // Half a head, then silence: still the deadline, not a truncated head.
  const half = await handshake(async (c) => {
    await c.readHead();
    await c.write("HTTP/1.1 200 Conn");
    await c.waitEof();
  }, { options: { timeoutMs: 200 } });
  failure(half, "parent-timeout", 504);

  // Head in time, body never finishing: the refusal is kept, marked truncated.
  const slowBody = refusal(
    await handshake(answers("HTTP/1.1 407 Auth\r\nContent-Length: 100\r\n\r\nsome"), { options: { timeoutMs: 200 } }),
  );
  assert.equal(slowBody.status, 407);
  assert.equal(text(slowBody.body), "some");
  assert.equal(slowBody.truncated, true);
});

Deno.test("CONNECT via parent: an invalid authority is a TypeError and nothing is sent", async () => {
  const h = await handshake(async (c) => {
    assert.equal(await c.readHead(), null);
  }, { authority: "localhost:443\r\nX-Injected: 1" });
  assert.ok(h.error instanceof TypeError);
  assert.equal(h.received, "");
});
