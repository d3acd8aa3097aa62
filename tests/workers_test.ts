/**
 * `--workers N`: N event loops (worker threads) share the port with SO_REUSEPORT.
 * Runs the CLI as a child process, as a user would.
 */
import assert from "node:assert/strict";

const MAIN = new URL("../main.ts", import.meta.url).pathname;
const LIB = new URL("../lib", import.meta.url).pathname;

async function readLine(stream: ReadableStream<Uint8Array>): Promise<string> {
  const reader = stream.getReader();
  let text = "";
  try {
    while (!text.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) break;
      text += new TextDecoder().decode(value);
    }
  } finally {
    reader.releaseLock();
  }
  return text;
}

async function get(proxyPort: number, originPort: number, path: string): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxyPort });
  try {
    await conn.write(
      new TextEncoder().encode(
        `GET http://127.0.0.1:${originPort}${path} HTTP/1.1\r\nHost: 127.0.0.1:${originPort}\r\nConnection: close\r\n\r\n`,
      ),
    );
    const buf = new Uint8Array(4096);
    let text = "";
    while (true) {
      const n = await conn.read(buf);
      if (n === null) break;
      text += new TextDecoder().decode(buf.subarray(0, n));
    }
    return text;
  } finally {
    conn.close();
  }
}

Deno.test("--workers 2: every request is served through the shared port, SIGTERM stops all threads", async () => {
  const spare = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const adminPort = (spare.addr as Deno.NetAddr).port;
  spare.close();
  const origin = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    (req) => new Response(`ok ${new URL(req.url).pathname}`),
  );
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      `--allow-read=${LIB}`,
      "--unstable-net",
      MAIN,
      "--port",
      "0",
      "--workers",
      "2",
      "--log-level",
      "warn",
      "--admin-port",
      String(adminPort),
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  try {
    const line = await readLine(child.stdout);
    assert.match(line, /listening on http:\/\/127\.0\.0\.1:\d+ \(2 workers\)/);
    // The admin port is the main thread's alone (threads sharing it would not start).
    const health = await Deno.connect({ hostname: "127.0.0.1", port: adminPort });
    await health.write(new TextEncoder().encode("GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"));
    assert.match(await new Response(health.readable).text(), /^HTTP\/1\.1 200 /);
    const port = Number(/:(\d+) /.exec(line)![1]);
    const answers = await Promise.all(
      Array.from({ length: 40 }, (_, i) => get(port, origin.addr.port, `/w${i}`)),
    );
    answers.forEach((text, i) => {
      assert.ok(text.startsWith("HTTP/1.1 200 "), text.slice(0, 40));
      assert.ok(text.endsWith(`ok /w${i}`), text.slice(-20));
    });
    // The admin port (the main thread's) counts every thread's requests: the others send theirs each second.
    let metrics = "";
    for (let i = 0; i < 30; i++) {
      await new Promise((r) => setTimeout(r, 200));
      const scrape = await Deno.connect({ hostname: "127.0.0.1", port: adminPort });
      await scrape.write(new TextEncoder().encode("GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"));
      metrics = await new Response(scrape.readable).text();
      if (/^waypost_requests_total\{kind="http",method="GET",code="200"\} 40$/m.test(metrics)) break;
    }
    assert.match(metrics, /^waypost_requests_total\{kind="http",method="GET",code="200"\} 40$/m);
    child.kill("SIGTERM");
    const status = await child.status;
    assert.equal(status.code, 0);
  } finally {
    await child.stdout.cancel().catch(() => {
      // Already released or closed: nothing left to cancel.
    });
    try {
      child.kill("SIGKILL");
    } catch {
      // Already exited.
    }
    await child.status;
    await origin.shutdown();
  }
});

Deno.test("--workers without --unstable-net is a usage error (exit 2), not a crash", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", MAIN, "--port", "0", "--workers", "2"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 2);
  assert.match(new TextDecoder().decode(out.stderr), /--unstable-net/);
});

Deno.test("--workers without read access to lib/ is a usage error naming the exact command line", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", "--unstable-net", MAIN, "--port", "0", "--workers", "2"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 2);
  const err = new TextDecoder().decode(out.stderr);
  assert.match(err, /--workers 2 needs read access to \S+\/lib\//);
  assert.match(err, /deno run --allow-net --allow-read=\S+\/lib\/ --unstable-net \S+main\.ts --workers 2/);
  assert.ok(!err.includes("a worker failed"), "it failed in a worker instead of before starting");
});

Deno.test("a remote run (main.ts by URL) starts --workers without any read permission", async () => {
  // Serve this checkout over HTTP on loopback, as a remote main.ts would be served.
  const root = new URL("../", import.meta.url);
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const path = new URL(req.url).pathname;
    if (path.includes("..")) return new Response("no", { status: 400 });
    try {
      const body = await Deno.readFile(new URL(`.${path}`, root));
      const type = path.endsWith(".json") ? "application/json" : "application/typescript";
      return new Response(body, { headers: { "content-type": type } });
    } catch {
      return new Response("not found", { status: 404 });
    }
  });
  const at = `127.0.0.1:${server.addr.port}`;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      `--allow-import=${at}`,
      "--unstable-net",
      "--no-lock",
      "--reload",
      `http://${at}/main.ts`,
      "--port",
      "0",
      "--workers",
      "2",
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
    const deadline = Date.now() + 60_000;
    while (!line.includes("\n") && Date.now() < deadline) {
      const r = await reader.read();
      if (r.done) break;
      line += new TextDecoder().decode(r.value);
    }
    reader.releaseLock();
    assert.match(line, /listening on http:\/\/127\.0\.0\.1:\d+ \(2 workers\)/);
  } finally {
    child.kill("SIGTERM");
    const [status, err] = await Promise.all([child.status, new Response(child.stderr).text()]);
    await child.stdout.cancel().catch(() => {});
    await server.shutdown();
    assert.equal(status.code, 0, err);
  }
});

Deno.test("--workers 2 with --config: SIGHUP reaches every thread (no restart-only key trips the reload)", async () => {
  const origin = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => new Response("ok"));
  const dir = await Deno.makeTempDir();
  const file = `${dir}/w.json`;
  await Deno.writeTextFile(file, `{ "port": 0, "via": "before", "log-format": "none" }`);
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      `--allow-read=${LIB},${dir}`,
      "--unstable-net",
      MAIN,
      "--config",
      file,
      "--workers",
      "2",
    ],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const viaOf = async (port: number) => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await conn.write(
      new TextEncoder().encode(
        `GET http://127.0.0.1:${origin.addr.port}/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`,
      ),
    );
    const text = await new Response(conn.readable).text();
    return /\r\nVia: ([^\r]*)/i.exec(text)?.[1] ?? "";
  };
  try {
    const line = await readLine(child.stdout);
    const port = Number(/:(\d+) /.exec(line)![1]);
    assert.equal(await viaOf(port), "1.1 before");
    await Deno.writeTextFile(file, `{ "port": 0, "via": "after", "log-format": "none" }`);
    child.kill("SIGHUP");
    await new Promise((r) => setTimeout(r, 400));
    // New connections land on either thread: all of them use the new options.
    const vias = await Promise.all(Array.from({ length: 16 }, () => viaOf(port)));
    assert.deepEqual([...new Set(vias)], ["1.1 after"]);
    child.kill("SIGTERM");
    const [status, err] = await Promise.all([child.status, new Response(child.stderr).text()]);
    assert.equal(status.code, 0);
    assert.match(err, /reloaded /);
    assert.ok(!err.includes("reload failed") && !err.includes("kept its options"), err);
  } finally {
    await child.stdout.cancel().catch(() => {});
    try {
      child.kill("SIGKILL");
    } catch {
      // Already exited.
    }
    await child.status;
    await child.stderr.cancel().catch(() => {});
    await origin.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});
