/**
 * Who may use the proxy and where it may go: Basic proxy authentication
 * (407 flows, credentials never forwarded, the same time for any wrong
 * credential), the client allow-list, ordered destination rules with IP
 * ranges on resolved addresses, the private-address block and the refusal to
 * start as an open relay.
 */
import assert from "node:assert/strict";
import { Credentials, decodeBasic, FailureDelay, parseAuthFile } from "../lib/auth.ts";
import { parseIp } from "../lib/cidr.ts";
import { parseCommandLine } from "../lib/cli.ts";
import {
  type DestinationPolicy,
  destinationVerdict,
  isSpecialAddress,
  listensBeyondLoopback,
  parseHostRule,
  verdictBeforeLookup,
} from "../lib/rules.ts";
import { startProxy } from "../lib/server.ts";
import { silentLogger } from "../lib/log.ts";
import {
  closedPort,
  echoTarget,
  fieldValue,
  get,
  hasField,
  type Message,
  serve,
  startOrigin,
  startTestProxy,
  text,
} from "./util.ts";

const basic = (userPass: string) => `Basic ${btoa(userPass)}`;

Deno.test("decodeBasic: user:password in UTF-8; malformed or empty credentials are null", () => {
  assert.equal(decodeBasic(basic("alice:s3cret")), "alice:s3cret");
  assert.equal(
    decodeBasic(`basic   ${btoa("a:b:c")}`),
    "a:b:c",
    "the scheme is case-insensitive; the password may hold :",
  );
  const utf8 = btoa(String.fromCharCode(...new TextEncoder().encode("jürgen:pässword")));
  assert.equal(decodeBasic(`Basic ${utf8}`), "jürgen:pässword");
  for (
    const bad of [
      null,
      "",
      "Basic",
      "Basic !!!",
      `Bearer ${btoa("a:b")}`,
      basic(":pw"),
      basic("user:"),
      basic("nocolon"),
    ]
  ) {
    assert.equal(decodeBasic(bad), null, String(bad));
  }
  assert.equal(decodeBasic(`Basic ${btoa("\xff\xfe:x")}`), null, "not UTF-8");
});

Deno.test("Credentials: the right user for the right password only; auth files with comments", () => {
  const c = new Credentials(["alice:s3cret", "bob:pa:ss"]);
  assert.equal(c.check(basic("alice:s3cret")), "alice");
  assert.equal(c.check(basic("bob:pa:ss")), "bob");
  assert.equal(c.check(basic("alice:wrong")), null);
  assert.equal(c.check(basic("carol:s3cret")), null);
  assert.equal(c.check(null), null);
  assert.deepEqual(parseAuthFile("# team\nalice:s3cret\n\n  bob:pw  \n", "users"), ["alice:s3cret", "bob:pw"]);
  assert.throws(() => parseAuthFile("alice\n", "users"), /users:1: expected user:password/);
  assert.throws(() => new Credentials([":x"]), TypeError);
});

Deno.test("Credentials: a wrong user and a wrong password take the same time (statistical, not timed)", () => {
  // The same work is done for every wrong credential: a digest, then a full comparison with every entry.
  // Interleave the two kinds, take many samples, and compare medians: they must not differ by more than noise.
  const entries = Array.from({ length: 50 }, (_, i) => `user${i}:password-number-${i}`);
  const c = new Credentials(entries);
  const wrongUser = basic("nobody:password-number-7");
  const wrongPassword = basic("user7:password-number-8");
  const almostRight = basic("user7:password-number-7x");
  const samples: Record<string, number[]> = { wrongUser: [], wrongPassword: [], almostRight: [] };
  const cases: [string, string][] = [["wrongUser", wrongUser], ["wrongPassword", wrongPassword], [
    "almostRight",
    almostRight,
  ]];
  for (let round = 0; round < 300; round++) {
    for (const [name, value] of round % 2 === 0 ? cases : [...cases].reverse()) {
      const t = performance.now();
      for (let i = 0; i < 20; i++) c.check(value);
      samples[name].push(performance.now() - t);
    }
  }
  const median = (xs: number[]) => xs.sort((a, b) => a - b)[xs.length >> 1];
  const m = Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, median(v)]));
  const ratio = Math.max(m.wrongUser, m.wrongPassword, m.almostRight) /
    Math.min(m.wrongUser, m.wrongPassword, m.almostRight);
  assert.ok(ratio < 1.25, `medians differ: ${JSON.stringify(m)}`);
});

Deno.test("FailureDelay: each failure in a row adds a step, bounded; success clears; memory bounded", () => {
  const f = new FailureDelay(100, 250, 3);
  assert.deepEqual([f.fail("a", 0), f.fail("a", 1), f.fail("a", 2), f.fail("a", 3)], [0, 100, 200, 250]);
  f.succeed("a");
  assert.equal(f.fail("a", 4), 0);
  assert.equal(f.fail("a", 70_000), 0, "a quiet minute forgets");
  for (const x of ["b", "c", "d", "e"]) f.fail(x, 70_001);
  assert.equal(f.count("a"), 0, "the oldest address was forgotten to stay within 3 entries");
});

async function send(port: number, request: string, readAll = true): Promise<Message & { raw: string }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(new TextEncoder().encode(request)).catch(() => {});
  const raw = readAll ? await new Response(conn.readable).text() : "";
  const head = raw.slice(0, raw.indexOf("\r\n\r\n"));
  const [statusLine, ...lines] = head.split("\r\n");
  return {
    raw,
    status: Number(statusLine.split(" ")[1]),
    fields: lines.map((l) => [l.slice(0, l.indexOf(":")), l.slice(l.indexOf(":") + 1).trim()]),
  } as unknown as Message & { raw: string };
}

Deno.test("407 flows: missing, wrong and right credentials, for plain requests and CONNECT; never forwarded", async () => {
  const seen: string[] = [];
  await using origin = startOrigin(serve((req) => {
    seen.push(req.fields.map(([n]) => n.toLowerCase()).join(","));
    return `HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok`;
  }));
  const users: string[] = [];
  await using proxy = startTestProxy({
    auth: ["alice:s3cret"],
    hooks: { onExchangeEnd: (r) => void users.push(`${r.status}:${r.user ?? "-"}`) },
  });
  const plain = (auth: string[]) => get(origin.url("/"), [...auth, "Connection: close"]);
  let res = await proxy.roundTrip(plain([]));
  assert.equal(res.status, 407);
  assert.equal(fieldValue(res.fields, "proxy-authenticate"), 'Basic realm="waypost", charset="UTF-8"');
  assert.equal(fieldValue(res.fields, "proxy-status"), "waypost; error=http_request_denied");
  res = await proxy.roundTrip(plain([`Proxy-Authorization: ${basic("alice:wrong")}`]));
  assert.equal(res.status, 407);
  res = await proxy.roundTrip(plain([`Proxy-Authorization: ${basic("alice:s3cret")}`]));
  assert.equal(res.status, 200);
  assert.ok(!seen.some((s) => s.includes("proxy-authorization")), "credentials were forwarded");
  // CONNECT: 407 before any dial; with credentials, a tunnel.
  const connect = `CONNECT 127.0.0.1:${origin.port} HTTP/1.1\r\nHost: 127.0.0.1:${origin.port}\r\n`;
  res = await proxy.roundTrip(connect + "\r\n", "CONNECT");
  assert.equal(res.status, 407);
  assert.ok(hasField(res.fields, "proxy-authenticate"));
  // The proxy's own pages ask for no credentials (their own rules apply).
  assert.equal((await proxy.roundTrip("GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")).status, 200);
  await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(users.slice(0, 3), ["407:-", "407:-", "200:alice"]);
});

Deno.test("407 to a POST with a large body still reaches the client intact (lingering close)", async () => {
  await using origin = startOrigin(echoTarget);
  await using proxy = startTestProxy({ auth: ["alice:s3cret"] });
  const body = "x".repeat(16 * 1024 * 1024);
  const res = await send(
    proxy.port,
    `POST ${origin.url("/")} HTTP/1.1\r\nHost: ${origin.authority}\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
  );
  assert.equal(res.status, 407);
  assert.match(res.raw, /Proxy authentication required\n$/);
  assert.equal(origin.conns.length, 0);
});

Deno.test("curl --proxy-user: plain and CONNECT through an authenticating proxy; a wrong password gets 407", async () => {
  await using origin = startOrigin(echoTarget);
  await using proxy = startTestProxy({ auth: ["alice:s3cret"], connectPorts: "*" });
  const curl = async (...args: string[]) => {
    const out = await new Deno.Command("curl", {
      args: [
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{http_connect}",
        "--proxy",
        `http://127.0.0.1:${proxy.port}`,
        ...args,
      ],
      env: { no_proxy: "", NO_PROXY: "" },
    }).output();
    return new TextDecoder().decode(out.stdout);
  };
  assert.equal(await curl("--proxy-user", "alice:s3cret", origin.url("/a")), "200 000");
  assert.equal(await curl("--proxy-user", "alice:nope", origin.url("/a")), "407 000");
  assert.equal(await curl(origin.url("/a")), "407 000");
  // CONNECT through the tunnel (plain HTTP inside it), with credentials.
  assert.equal(await curl("--proxytunnel", "--proxy-user", "alice:s3cret", origin.url("/t")), "200 200");
  assert.equal(await curl("--proxytunnel", "--proxy-user", "alice:nope", origin.url("/t")), "000 407");
});

Deno.test("destination rules: names, *.suffix, CIDR, ports, first match wins; IPv4-mapped and 0.0.0.0", () => {
  const policy = (rules: string[], extra: Partial<DestinationPolicy> = {}): DestinationPolicy => ({
    rules: rules.map(parseHostRule),
    blockPrivate: false,
    defaultAllow: true,
    ...extra,
  });
  const v = (p: DestinationPolicy, host: string, port = 80, address?: string) =>
    destinationVerdict(p, host, port, address === undefined ? null : parseIp(address));
  const p = policy([
    "allow ok.ads.test",
    "deny *.ads.test",
    "deny 10.0.0.0/8:443",
    "deny [::1]:8080",
    "deny example.test",
  ]);
  assert.equal(v(p, "ok.ads.test")?.allowed, true, "an earlier allow wins");
  assert.equal(v(p, "x.ads.test")?.why, "deny *.ads.test");
  assert.equal(v(p, "ADS.TEST.")?.allowed, false, "the suffix itself, any case, trailing dot");
  assert.equal(v(p, "notads.test", 80, "192.0.2.1")?.allowed, true);
  assert.equal(v(p, "10.1.2.3", 443)?.allowed, false);
  assert.equal(v(p, "10.1.2.3", 80)?.allowed, true, "the rule is for port 443 only");
  assert.equal(v(p, "::ffff:10.1.2.3", 443)?.allowed, false, "IPv4-mapped is the IPv4 address");
  assert.equal(v(p, "[::1]", 8080)?.allowed, false);
  assert.equal(
    v(p, "name.test", 443)?.allowed,
    true,
    "unresolved (through a parent): name rules and the default decide",
  );
  assert.equal(
    v(p, "name.test", 443, "10.9.9.9")?.why,
    "deny 10.0.0.0/8:443",
    "CIDR rules apply to resolved addresses",
  );
  const privateBlock = policy([], { blockPrivate: true });
  for (
    const a of [
      "127.0.0.1",
      "10.0.0.1",
      "172.16.5.4",
      "192.168.1.1",
      "169.254.169.254",
      "0.0.0.0",
      "::",
      "::1",
      "fe80::1",
      "fd00::1",
      "224.0.0.1",
      "::ffff:127.0.0.1",
      "100.64.0.1",
    ]
  ) {
    assert.ok(isSpecialAddress(parseIp(a)!), a);
    assert.equal(v(privateBlock, a)?.type, "destination_ip_prohibited", a);
  }
  for (const a of ["192.0.2.1", "8.8.8.8", "2001:db8::1"]) assert.ok(!isSpecialAddress(parseIp(a)!), a);
  assert.equal(
    v(policy(["allow 10.0.0.0/8"], { blockPrivate: true }), "10.1.1.1")?.allowed,
    true,
    "an explicit allow lifts it",
  );
  assert.equal(v(policy([], { defaultAllow: false }), "a.test", 80, "192.0.2.1")?.allowed, false);
  for (const bad of ["deny", "maybe x.test", "deny x.test:0", "deny 10.0.0.0/40", "deny a..b", "deny [::1"]) {
    assert.throws(() => parseHostRule(bad), TypeError, bad);
  }
  assert.deepEqual(
    parseCommandLine(["--deny-host", "*.ads.test", "--allow-host", "10.0.0.0/8", "--deny-host", "*"])
      .settings["host-rules"],
    ["deny *.ads.test", "allow 10.0.0.0/8", "deny *"],
    "flags keep their order",
  );
});

Deno.test("destination rules end to end: 403 naming the rule, CIDR on a resolved name (localhost), CONNECT too", async () => {
  await using origin = startOrigin(echoTarget);
  await using proxy = startTestProxy({ hostRules: ["deny *.blocked.test", "deny 127.0.0.0/8:" + origin.port] });
  const res = await proxy.roundTrip(get(`http://localhost:${origin.port}/`));
  assert.equal(res.status, 403);
  assert.match(text(res.body), /rule "deny 127\.0\.0\.0\/8:\d+"/);
  assert.equal(fieldValue(res.fields, "proxy-status"), "waypost; error=destination_ip_prohibited");
  const named = await proxy.roundTrip(get("http://www.blocked.test/"));
  assert.equal(named.status, 403, "a name rule needs no lookup");
  const tunnel = await proxy.roundTrip(
    `CONNECT localhost:${origin.port} HTTP/1.1\r\nHost: localhost\r\n\r\n`,
    "CONNECT",
  );
  assert.equal(tunnel.status, 403);
  assert.equal(origin.conns.length, 0);
  // Another port of the same address is allowed.
  await using other = startOrigin(echoTarget);
  assert.equal((await proxy.roundTrip(get(`http://localhost:${other.port}/`))).status, 200);
});

Deno.test("safe defaults: listening beyond loopback without auth or an allow-list refuses to start", () => {
  assert.ok(listensBeyondLoopback("0.0.0.0") && listensBeyondLoopback("::") && listensBeyondLoopback("192.0.2.1"));
  assert.ok(
    !listensBeyondLoopback("127.0.0.1") && !listensBeyondLoopback("::1") && !listensBeyondLoopback("localhost"),
  );
  assert.throws(
    () => startProxy({ hostname: "0.0.0.0", port: 0, logger: silentLogger }),
    /open proxy\. Add --auth user:password .*--allow-client CIDR, or --allow-open/,
  );
});

Deno.test("safe defaults: beyond loopback, private destinations are refused unless --allow-private", async () => {
  await using origin = startOrigin(echoTarget);
  {
    await using proxy = startTestProxy({ hostname: "0.0.0.0", allowClient: ["127.0.0.1"] });
    const res = await proxy.roundTrip(get(origin.url("/")));
    assert.equal(res.status, 403);
    assert.equal(fieldValue(res.fields, "proxy-status"), "waypost; error=destination_ip_prohibited");
    const mapped = await proxy.roundTrip(get(`http://[::ffff:127.0.0.1]:${origin.port}/`));
    assert.equal(mapped.status, 403, "the IPv4-mapped form of loopback");
    const zero = await proxy.roundTrip(get(`http://0.0.0.0:${origin.port}/`));
    assert.equal(zero.status, 403, "0.0.0.0");
  }
  await using open = startTestProxy({ hostname: "0.0.0.0", allowClient: ["127.0.0.1"], allowPrivate: true });
  assert.equal((await open.roundTrip(get(origin.url("/")))).status, 200);
});

Deno.test("client allow-list: others are closed without an answer", async () => {
  await using proxy = startTestProxy({ allowClient: ["10.0.0.0/8"] });
  const res = await send(proxy.port, "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n");
  assert.equal(res.raw, "");
  await using allowed = startTestProxy({ allowClient: ["127.0.0.1/32", "::1"] });
  assert.equal((await allowed.roundTrip("GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")).status, 200);
});

Deno.test("review: numeric IPv4 forms are the address they name; allow * never opens private addresses", () => {
  const policy = (rules: string[], blockPrivate = false): DestinationPolicy => ({
    rules: rules.map(parseHostRule),
    blockPrivate,
    defaultAllow: true,
  });
  const p = policy(["deny 127.0.0.0/8", "allow *"]);
  for (const host of ["127.0.0.1", "2130706433", "0x7f.1", "0177.0.0.1", "127.1", "0x7f000001", "[::ffff:127.0.0.1]"]) {
    assert.equal(destinationVerdict(p, host, 80, null).allowed, false, host);
  }
  assert.equal(destinationVerdict(p, "1.2.3.4", 80, null).allowed, true);
  const open = policy(["deny *.ads.test", "allow *", "allow localhost"], true);
  assert.equal(destinationVerdict(open, "localhost", 80, parseIp("127.0.0.1")).why, "private address");
  assert.equal(destinationVerdict(open, "2130706433", 80, null).why, "private address");
  assert.equal(
    destinationVerdict(policy(["allow 127.0.0.0/8"], true), "x.test", 80, parseIp("127.0.0.1")).allowed,
    true,
  );
  // A name rule that decides before any IP rule saves the lookup (a denied name is never looked up).
  assert.equal(
    verdictBeforeLookup(policy(["deny *.blocked.test", "deny 10.0.0.0/8"]), "www.blocked.test", 80)?.allowed,
    false,
  );
  assert.equal(verdictBeforeLookup(policy(["allow 10.0.0.0/8", "deny *.blocked.test"]), "www.blocked.test", 80), null);
});

Deno.test("review: rules hold through a parent and on pooled connections; a reload's new deny applies at once", async () => {
  await using origin = startOrigin(echoTarget);
  await using parent = startTestProxy();
  await using child = startTestProxy({
    upstreamProxy: `http://127.0.0.1:${parent.port}`,
    hostRules: ["allow 127.0.0.1:" + origin.port],
    hostDefault: "deny",
  });
  assert.equal((await child.roundTrip(get(origin.url("/ok")))).status, 200);
  // The pooled connection is the parent's: the next request is still checked by its own destination.
  assert.equal((await child.roundTrip(get(`http://localhost:${origin.port}/no`))).status, 403);
  // 2130706433 is 127.0.0.1 (allowed); 2130706434 is 127.0.0.2 (the default: deny).
  assert.equal((await child.roundTrip(get(`http://2130706434:${origin.port}/no`))).status, 403);
  await using direct = startTestProxy();
  assert.equal((await direct.roundTrip(get(origin.url("/a")))).status, 200);
  direct.handle.reconfigure({ hostRules: ["deny 127.0.0.1"] });
  assert.equal(
    (await direct.roundTrip(get(origin.url("/b")))).status,
    403,
    "a pooled connection to a now-denied address",
  );
});

Deno.test("review: the admin pages cannot be reached through the proxy itself; a CONNECT loop through parents is caught", async () => {
  await using proxy = startTestProxy({ adminAllow: ["127.0.0.2"] });
  assert.equal((await proxy.roundTrip("GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n")).status, 403);
  const looped = await proxy.roundTrip(get(`http://127.0.0.1:${proxy.port}/metrics`));
  assert.notEqual(looped.status, 200);
  // A proxy that is its own parent: the CONNECT it sends carries its Via tag, so the second hop is a 508.
  const port = proxy.port;
  await using self = startTestProxy({ connectPorts: "*", instanceId: "selfloop" });
  self.handle.reconfigure({ upstreamProxy: `http://127.0.0.1:${self.port}`, connectPorts: "*" });
  const res = await self.roundTrip(`CONNECT 127.0.0.1:${port} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`, "CONNECT");
  assert.equal(res.status, 508);
});

Deno.test("review: our credentials for the parent are not visible to hooks; a 407 has its reason phrase", async () => {
  await using origin = startOrigin(echoTarget);
  await using parent = startTestProxy({ auth: ["c:pw"] });
  const seen: (string | null)[] = [];
  await using child = startTestProxy({
    upstreamProxy: `http://c:pw@127.0.0.1:${parent.port}`,
    hooks: { onResponse: (_res, req) => void seen.push(req.headers.get("proxy-authorization")) },
  });
  assert.equal((await child.roundTrip(get(origin.url("/")))).status, 200);
  assert.deepEqual(seen, [null]);
  const raw = await send(parent.port, get(origin.url("/")));
  assert.match(raw.raw, /^HTTP\/1\.1 407 Proxy Authentication Required\r\n/);
});

Deno.test("least privilege: a destination outside --allow-net=<hosts> is a 403 from Deno's permissions, not a crash", async () => {
  await using origin = startOrigin(echoTarget);
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net=127.0.0.1",
      new URL("../main.ts", import.meta.url).pathname,
      "--port",
      "0",
      "--log-format",
      "none",
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  try {
    const reader = child.stdout.getReader();
    let line = "";
    while (!line.includes("\n")) {
      const r = await reader.read();
      if (r.done) break;
      line += new TextDecoder().decode(r.value);
    }
    reader.releaseLock();
    const port = Number(/:(\d+)/.exec(line)?.[1]);
    const allowed = await send(port, get(origin.url("/in"), ["Connection: close"]));
    assert.equal(allowed.status, 200);
    const refused = await send(port, get(`http://localhost:${origin.port}/out`, ["Connection: close"]));
    assert.equal(refused.status, 403);
    assert.match(refused.raw, /not permitted/);
    assert.equal((await send(port, get(origin.url("/again"), ["Connection: close"]))).status, 200, "still serving");
  } finally {
    child.kill("SIGTERM");
    await child.status;
    await child.stdout.cancel().catch(() => {});
    await child.stderr.cancel().catch(() => {});
  }
});

Deno.test("review: a name no address could change the verdict for is never looked up", async () => {
  const { checkDestination } = await import("../lib/destination.ts");
  const policy = (rules: string[], defaultAllow: boolean, blockPrivate: boolean): DestinationPolicy => ({
    rules: rules.map(parseHostRule),
    blockPrivate,
    defaultAllow,
  });
  // The README's locked-down team proxy: an unknown name falls to the default deny whatever it resolves to.
  const team = policy(["deny *.internal.example", "allow *.example.com", "allow *.npmjs.org"], false, true);
  assert.equal(verdictBeforeLookup(team, "anything.else.test", 443)?.why, "default");
  assert.throws(() => checkDestination(team, "anything.else.test", 443), /no rule allows it/);
  // IP deny rules before a name deny cannot open it.
  const denyFirst = policy(["deny 10.0.0.0/8", "deny localhost"], true, false);
  assert.equal(verdictBeforeLookup(denyFirst, "localhost", 80)?.why, "deny localhost");
  // An IP rule for another port cannot match.
  assert.equal(
    verdictBeforeLookup(policy(["allow 10.0.0.0/8:443", "deny *"], true, false), "a.test", 80)?.why,
    "deny *",
  );
  // Still looked up when an address can matter: an earlier IP allow, or the private block on an allowed name.
  assert.equal(verdictBeforeLookup(policy(["allow 10.0.0.0/8", "deny *"], true, false), "a.test", 80), null);
  assert.equal(verdictBeforeLookup(policy(["allow *.example.com"], false, true), "www.example.com", 80), null);
  assert.equal(verdictBeforeLookup(policy([], true, false), "a.test", 80)?.allowed, true);
  // 0x without digits is not a number (glibc's inet_aton refuses it too).
  assert.equal(destinationVerdict(policy(["deny 0.0.0.0/8"], true, false), "0x", 80, null).allowed, true);
});

Deno.test("review: the admin port opens first or not at all, differs from the port, and serves no PAC file", async () => {
  const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = closedPort();
  try {
    assert.throws(() => startProxy({ port, adminPort: (taken.addr as Deno.NetAddr).port, logger: silentLogger }));
    // The main port was released again.
    Deno.listen({ hostname: "127.0.0.1", port }).close();
  } finally {
    taken.close();
  }
  assert.throws(() => startProxy({ port: 3999, adminPort: 3999, logger: silentLogger }), /adminPort: it must differ/);
  await using proxy = startTestProxy({ adminPort: closedPort() });
  const admin = proxy.handle.adminAddr!.port;
  assert.equal((await send(admin, "GET /proxy.pac HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")).status, 404);
  assert.equal((await send(admin, "GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")).status, 200);
});
