/**
 * Every hooks example in examples/ runs against local origins, as a library
 * user would use it, and one runs through the CLI's `--hooks` (with and
 * without `--workers`).
 */
import assert from "node:assert/strict";
import type { ExchangeRecord } from "../mod.ts";
import { blockHosts } from "../examples/block_hosts.ts";
import addHeader from "../examples/add_header.ts";
import rewriteJson from "../examples/rewrite_json.ts";
import { connectOnlyTo } from "../examples/connect_policy.ts";
import errorPages from "../examples/error_pages.ts";
import { logExchanges } from "../examples/log_exchanges.ts";
import { Client, echoTarget, fieldValue, get, ok, serve, startOrigin, startTestProxy, text } from "./util.ts";

Deno.test("examples/block_hosts.ts: a listed host gets 403 and is never contacted", async () => {
  await using origin = startOrigin(echoTarget);
  await using proxy = startTestProxy({ connectPorts: "*", hooks: blockHosts(["localhost"]) });
  const blocked = await proxy.roundTrip(get(`http://localhost:${origin.port}/ad`));
  assert.equal(blocked.status, 403);
  assert.equal(origin.conns.length, 0);
  const allowed = await proxy.roundTrip(get(origin.url("/page")));
  assert.equal(text(allowed.body), "target=/page");
  await using client = await proxy.connect();
  await client.write(`CONNECT localhost:${origin.port} HTTP/1.1\r\nHost: localhost\r\n\r\n`);
  assert.equal((await client.response("CONNECT")).status, 403);
});

Deno.test("examples/add_header.ts: X-Forwarded-For to the origin, X-Proxied-By to the client", async () => {
  await using origin = startOrigin(echoTarget);
  await using proxy = startTestProxy({ hooks: addHeader });
  const res = await proxy.roundTrip(get(origin.url("/"), ["X-Forwarded-For: 10.0.0.1"]));
  assert.equal(fieldValue(res.fields, "x-proxied-by"), "waypost");
  assert.equal(fieldValue(origin.requests[0].fields, "x-forwarded-for"), "10.0.0.1, 127.0.0.1");
});

Deno.test("examples/rewrite_json.ts: JSON gains a member; other bodies stream untouched", async () => {
  await using origin = startOrigin(
    serve((req) =>
      req.target === "/json"
        ? ok('{"a":1}', ["Content-Type: application/json"])
        : ok("plain text", ["Content-Type: text/plain"])
    ),
  );
  await using proxy = startTestProxy({ hooks: rewriteJson });
  const json = await proxy.roundTrip(get(origin.url("/json")));
  assert.deepEqual(JSON.parse(text(json.body)), { a: 1, proxied: true });
  assert.equal(Number(fieldValue(json.fields, "content-length")), json.body.length);
  const plain = await proxy.roundTrip(get(origin.url("/plain")));
  assert.equal(text(plain.body), "plain text");
});

Deno.test("examples/connect_policy.ts: tunnels to listed hosts only, on any port", async () => {
  await using origin = startOrigin(async (c) => {
    await c.write("hello");
    await c.waitEof();
  });
  await using proxy = startTestProxy({ hooks: connectOnlyTo(["localhost"]) });
  await using allowed = await proxy.connect();
  await allowed.write(`CONNECT localhost:${origin.port} HTTP/1.1\r\nHost: localhost\r\n\r\n`);
  assert.match(text((await allowed.reader.readUntil("\r\n\r\n", "200"))!), /^HTTP\/1.1 200 /);
  assert.equal(text(await allowed.reader.readExact(5, "tunnel bytes")), "hello");
  await using denied = await proxy.connect();
  await denied.write(`CONNECT 127.0.0.1:${origin.port} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
  assert.equal((await denied.response("CONNECT")).status, 403);
});

Deno.test("examples/error_pages.ts: HTML error pages with the same status", async () => {
  await using proxy = startTestProxy({ hooks: errorPages });
  const bad = await proxy.roundTrip("GET http://127.0.0.1:1/ HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n");
  assert.equal(bad.status, 400);
  assert.match(text(bad.body), /invalid-content-length/);
  const refused = await proxy.roundTrip(get("http://127.0.0.1:1/x?<b>"));
  assert.equal(refused.status, 502);
  assert.equal(fieldValue(refused.fields, "content-type"), "text/html; charset=utf-8");
  assert.match(text(refused.body), /<h1>502<\/h1>/);
  assert.match(text(refused.body), /upstream-refused/);
  assert.ok(!text(refused.body).includes("<b>"), "request bytes are escaped");
});

Deno.test("examples/log_exchanges.ts: one JSON line per exchange and tunnel", async () => {
  await using origin = startOrigin(serve(() => ok("hi")));
  const lines: string[] = [];
  await using proxy = startTestProxy({ hooks: logExchanges((line) => lines.push(line)) });
  await proxy.roundTrip(get(origin.url("/a")));
  await proxy.roundTrip(get(origin.url("/b")));
  // The record is made after the response is written: wait for it, bounded.
  for (let i = 0; i < 100 && lines.length < 2; i++) await new Promise((r) => setTimeout(r, 10));
  assert.equal(lines.length, 2);
  const first = JSON.parse(lines[0]) as Record<string, unknown>;
  assert.equal(first.status, 200);
  assert.equal(first.target, origin.url("/a"));
  assert.equal(first.kind, "http" satisfies ExchangeRecord["kind"]);
});

const MAIN = new URL("../main.ts", import.meta.url).pathname;
const ROOT = new URL("..", import.meta.url).pathname;

/** Runs the CLI with `args`, waits for its listening line, and returns it with the port. */
async function startCli(args: string[], denoFlags: string[]) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", ...denoFlags, MAIN, "--port", "0", ...args],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" },
  }).spawn();
  const reader = child.stdout.getReader();
  let got = "";
  while (!got.includes("\n")) {
    const r = await reader.read();
    if (r.done) break;
    got += new TextDecoder().decode(r.value);
  }
  reader.releaseLock();
  const port = Number(/:(\d+)/.exec(got)?.[1] ?? 0);
  return {
    port,
    line: got,
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch {
        // Already exited.
      }
      const [status, err] = await Promise.all([child.status, new Response(child.stderr).text()]);
      await child.stdout.cancel();
      return { status, err };
    },
  };
}

Deno.test("CLI --hooks loads a module (also in every --workers thread)", async (t) => {
  await using origin = startOrigin(echoTarget);
  for (
    const row of [
      { name: "one event loop", args: [], flags: ["--allow-read"] },
      { name: "--workers 2", args: ["--workers", "2"], flags: ["--allow-read", "--unstable-net"] },
    ]
  ) {
    await t.step(row.name, async () => {
      const cli = await startCli(["--hooks", "examples/add_header.ts", ...row.args], row.flags);
      try {
        assert.ok(cli.port > 0, `no listening line: ${cli.line}`);
        // Several connections: with workers, the kernel spreads them over the threads.
        for (let i = 0; i < 6; i++) {
          await using client = await Client.connect(cli.port);
          await client.write(get(origin.url(`/${i}`), ["Connection: close"]));
          const res = await client.response();
          assert.equal(res.status, 200);
          assert.equal(fieldValue(res.fields, "x-proxied-by"), "waypost");
        }
      } finally {
        const { status } = await cli.stop();
        assert.equal(status.code, 0);
      }
    });
  }
  await t.step("a module that cannot be read: exit 1 naming the permission", async () => {
    const cli = await startCli(["--hooks", "examples/add_header.ts"], []);
    const { status, err } = await cli.stop();
    assert.equal(status.code, 1);
    assert.match(err, /cannot load --hooks/);
    assert.match(err, /--allow-read/);
  });
  await t.step("a module without hooks: exit 1", async () => {
    const cli = await startCli(["--hooks", "tests/util.ts"], ["--allow-read", "--allow-env", "--allow-run"]);
    const { status, err } = await cli.stop();
    assert.equal(status.code, 1);
    assert.match(err, /no default export/);
  });
});
