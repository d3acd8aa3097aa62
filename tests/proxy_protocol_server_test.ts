/**
 * PROXY protocol in the server: the client address a trusted load balancer
 * announces replaces the socket's for records, limits and the admin check;
 * untrusted peers, bad or late headers are closed without an answer; bytes
 * that came with the header are the start of the HTTP stream.
 */
import assert from "node:assert/strict";
import type { ExchangeRecord } from "../lib/hooks.ts";
import { startProxy } from "../lib/server.ts";
import { closedPort, echoTarget, get, startOrigin, startTestProxy, text } from "./util.ts";

const enc = new TextEncoder();

function v2(source: [number, number, number, number], port: number, command = 0x21): Uint8Array {
  const sig = [0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a];
  return new Uint8Array([...sig, command, 0x11, 0, 12, ...source, 127, 0, 0, 1, port >> 8, port & 0xff, 0x0c, 0x38]);
}

/** Sends `bytes` on a new connection and returns everything the proxy sent until it closed. */
async function exchange(port: number, ...parts: Uint8Array[]): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  for (const p of parts) {
    // The proxy may close before everything is written (that is the outcome some tests expect).
    if (!await conn.write(p).then(() => true, () => false)) break;
    await new Promise((r) => setTimeout(r, 5));
  }
  const out = await new Response(conn.readable).arrayBuffer().catch(() => new ArrayBuffer(0));
  return text(new Uint8Array(out));
}

Deno.test("PROXY v1 and v2: the announced client is the client (records, admin pages); the request after the header is served", async () => {
  await using origin = startOrigin(echoTarget);
  const records: ExchangeRecord[] = [];
  await using proxy = startTestProxy({
    proxyProtocol: true,
    trustedProxies: ["127.0.0.0/8"],
    hooks: { onExchangeEnd: (r) => void records.push(r) },
  });
  const request = enc.encode(get(origin.url("/v1"), ["Connection: close"]));
  // v1, the header and the request in one write.
  const v1 = enc.encode("PROXY TCP4 192.0.2.7 127.0.0.1 40001 3128\r\n");
  let reply = await exchange(proxy.port, new Uint8Array([...v1, ...request]));
  assert.match(reply, /^HTTP\/1\.1 200 /);
  // v2, split inside the header, then the request.
  const header = v2([198, 51, 100, 9], 40002);
  reply = await exchange(proxy.port, header.subarray(0, 7), header.subarray(7), request);
  assert.match(reply, /^HTTP\/1\.1 200 /);
  await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(records.map((r) => r.client), [
    { hostname: "192.0.2.7", port: 40001 },
    { hostname: "198.51.100.9", port: 40002 },
  ]);
  // The admin pages see the announced client: 192.0.2.7 is not loopback.
  reply = await exchange(proxy.port, v1, enc.encode("GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"));
  assert.match(reply, /^HTTP\/1\.1 403 /);
  // LOCAL (a balancer's health check): the socket's own address stands.
  reply = await exchange(
    proxy.port,
    v2([0, 0, 0, 0], 0, 0x20),
    enc.encode("GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
  );
  assert.match(reply, /^HTTP\/1\.1 200 /);
  assert.equal(origin.conns.length >= 1, true);
});

Deno.test("PROXY protocol: untrusted peers, a missing, invalid or late header close the connection without an answer", async () => {
  await using origin = startOrigin(echoTarget);
  const request = enc.encode(get(origin.url("/"), ["Connection: close"]));
  {
    await using proxy = startTestProxy({ proxyProtocol: true, trustedProxies: ["10.0.0.0/8"] });
    assert.equal(await exchange(proxy.port, enc.encode("PROXY TCP4 192.0.2.7 127.0.0.1 1 2\r\n"), request), "");
  }
  await using proxy = startTestProxy({
    proxyProtocol: true,
    trustedProxies: ["127.0.0.1"],
    proxyProtocolTimeoutMs: 200,
  });
  assert.equal(await exchange(proxy.port, request), "", "a request without a header");
  assert.equal(await exchange(proxy.port, enc.encode("PROXY TCP4 192.0.2.07 127.0.0.1 1 2\r\n"), request), "");
  const started = Date.now();
  assert.equal(await exchange(proxy.port, enc.encode("PROXY TCP4 ")), "", "a header that never ends");
  assert.ok(Date.now() - started < 2000);
  assert.equal(origin.conns.length, 0, "nothing reached the origin");
});

Deno.test("PROXY protocol: per-client limits count the announced clients", async () => {
  await using proxy = startTestProxy({
    proxyProtocol: true,
    trustedProxies: ["127.0.0.1"],
    maxConnectionsPerClient: 1,
  });
  const hold = async (source: string) => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
    await conn.write(enc.encode(`PROXY TCP4 ${source} 127.0.0.1 5000 3128\r\nG`));
    return conn;
  };
  const a = await hold("192.0.2.1");
  const b = await hold("192.0.2.2"); // another client: admitted
  await new Promise((r) => setTimeout(r, 50));
  const reply = await exchange(proxy.port, enc.encode("PROXY TCP4 192.0.2.1 127.0.0.1 5001 3128\r\n"));
  assert.match(reply, /^HTTP\/1\.1 503 /, "the same client a second time is over its limit");
  assert.equal(proxy.handle.connections, 2);
  a.close();
  b.close();
});

Deno.test("proxyProtocol without trustedProxies is refused at start", () => {
  assert.throws(() => startProxy({ port: 0, proxyProtocol: true }), /trustedProxies/);
});

Deno.test("PROXY protocol: /proxy.pac without a Host names the address the client reached (the balancer's front)", async () => {
  await using proxy = startTestProxy({ proxyProtocol: true, trustedProxies: ["127.0.0.1"] });
  const reply = await exchange(
    proxy.port,
    enc.encode("PROXY TCP4 192.0.2.7 198.51.100.1 40001 3128\r\nGET /proxy.pac HTTP/1.0\r\n\r\n"),
  );
  assert.match(reply, /^HTTP\/1\.1 200 /);
  assert.match(reply, /"PROXY 198\.51\.100\.1:3128"/);
});

Deno.test("adminPort: probes reach /healthz without a PROXY header; nothing is forwarded there", async () => {
  await using origin = startOrigin(echoTarget);
  await using proxy = startTestProxy({ proxyProtocol: true, trustedProxies: ["10.0.0.0/8"], adminPort: closedPort() });
  const admin = proxy.handle.adminAddr!.port;
  assert.match(
    await exchange(admin, enc.encode("GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")),
    /^HTTP\/1\.1 200 /,
  );
  const forwarded = await exchange(admin, enc.encode(get(origin.url("/"), ["Connection: close"])));
  assert.match(forwarded, /^HTTP\/1\.1 403 /);
  assert.match(forwarded, /own pages only/);
  assert.equal(origin.conns.length, 0);
  // The main port still wants the header from a trusted balancer.
  assert.equal(await exchange(proxy.port, enc.encode("GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")), "");
  await proxy.handle.shutdown(100);
  await assert.rejects(Deno.connect({ hostname: "127.0.0.1", port: admin }), "the admin port closes with the proxy");
});
