/**
 * Real clients through the proxy: Deno's own fetch (proxy client, plain HTTP and
 * HTTPS via CONNECT), Node's http module, Python's urllib (http_proxy), wget and
 * git's http transport (both when installed). Each checks the bytes the client got
 * and that the request really went through the proxy (the origin requires our Via).
 */
import assert from "node:assert/strict";
import { startTestProxy } from "./util.ts";

// A leaf certificate signed by a test CA (rustls, under Deno's fetch, refuses a CA as a server certificate).
const CA = Deno.readTextFileSync(new URL("./fixtures/ca.pem", import.meta.url));
const CERT = Deno.readTextFileSync(new URL("./fixtures/leaf.pem", import.meta.url));
const KEY = Deno.readTextFileSync(new URL("./fixtures/leaf-key.pem", import.meta.url));
const BODY = "hello through waypost\n".repeat(500);

/** An origin that answers 421 unless the request came through the proxy (Via: ... waypost). */
function origin(tls: boolean): Deno.HttpServer<Deno.NetAddr> {
  const handler = (req: Request) => {
    if (!tls && !/\bwaypost\b/.test(req.headers.get("via") ?? "")) {
      return new Response("not through the proxy\n", { status: 421 });
    }
    return new Response(`${req.method} ${new URL(req.url).pathname}\n${BODY}`);
  };
  return tls
    ? Deno.serve({ hostname: "127.0.0.1", port: 0, cert: CERT, key: KEY, onListen() {} }, handler)
    : Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, handler);
}

function which(name: string): boolean {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    try {
      if (Deno.statSync(`${dir}/${name}`).isFile) return true;
    } catch {
      // Not in this directory.
    }
  }
  return false;
}

async function run(cmd: string, args: string[], env: Record<string, string> = {}): Promise<string> {
  const out = await new Deno.Command(cmd, {
    args,
    env: { ...env, NO_PROXY: "", no_proxy: "" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  assert.equal(out.code, 0, `${cmd} failed: ${new TextDecoder().decode(out.stderr)}`);
  return text;
}

Deno.test("Deno fetch with a proxy client: http:// forwarded, https:// tunnelled", async () => {
  const tunnelled = Promise.withResolvers<number>();
  await using proxy = startTestProxy({ connectPorts: "*", onTunnelEnd: (stats) => tunnelled.resolve(stats.bytesDown) });
  const plain = origin(false);
  const secure = origin(true);
  const client = Deno.createHttpClient({ proxy: { url: `http://127.0.0.1:${proxy.port}` }, caCerts: [CA] });
  try {
    const a = await fetch(`http://127.0.0.1:${plain.addr.port}/deno`, { client });
    assert.equal(a.status, 200);
    assert.equal(await a.text(), `GET /deno\n${BODY}`);
    const b = await fetch(`https://localhost:${secure.addr.port}/deno-tls`, { client });
    assert.equal(b.status, 200);
    assert.equal(await b.text(), `GET /deno-tls\n${BODY}`);
    const c = await fetch(`http://127.0.0.1:${plain.addr.port}/deno-post`, { client, method: "POST", body: BODY });
    assert.equal(c.status, 200);
    assert.equal(await c.text(), `POST /deno-post\n${BODY}`);
  } finally {
    client.close();
    await plain.shutdown();
    await secure.shutdown();
  }
  // The HTTPS request really crossed a CONNECT tunnel of the proxy (it ends once fetch's client closes).
  assert.ok(await tunnelled.promise > BODY.length);
});

Deno.test("Node http and Python urllib through the proxy", async (t) => {
  await using proxy = startTestProxy();
  const plain = origin(false);
  const url = `http://127.0.0.1:${plain.addr.port}`;
  try {
    await t.step({
      name: "node http.get with an absolute-form path",
      ignore: !which("node"),
      fn: async () => {
        const script = `
const http = require("http");
http.get({ host: "127.0.0.1", port: ${proxy.port}, path: "${url}/node", headers: { Host: "127.0.0.1:${plain.addr.port}" } },
  (res) => { let b = ""; res.setEncoding("latin1"); res.on("data", (d) => b += d); res.on("end", () => process.stdout.write(res.statusCode + "\\n" + b)); });`;
        const text = await run("node", ["-e", script]);
        assert.equal(text, `200\nGET /node\n${BODY}`);
      },
    });
    await t.step({
      name: "python urllib with http_proxy",
      ignore: !which("python3"),
      fn: async () => {
        const script =
          `import urllib.request,sys\nr=urllib.request.urlopen("${url}/python")\nsys.stdout.write(str(r.status)+"\\n"+r.read().decode())`;
        const text = await run("python3", ["-c", script], { http_proxy: `http://127.0.0.1:${proxy.port}` });
        assert.equal(text, `200\nGET /python\n${BODY}`);
      },
    });
    await t.step({
      name: "wget with http_proxy",
      ignore: !which("wget"),
      fn: async () => {
        const text = await run("wget", ["-q", "-O", "-", `${url}/wget`], {
          http_proxy: `http://127.0.0.1:${proxy.port}`,
        });
        assert.equal(text, `GET /wget\n${BODY}`);
      },
    });
  } finally {
    await plain.shutdown();
  }
});

Deno.test({
  name: "git clone over http through the proxy (dumb HTTP transport)",
  ignore: !which("git"),
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "waypost-git-" });
    const git = (args: string[], cwd = dir) =>
      run("git", ["-C", cwd, "-c", "user.name=t", "-c", "user.email=t@example.invalid", ...args]);
    try {
      await Deno.mkdir(`${dir}/src`);
      await git(["init", "-q"], `${dir}/src`);
      await Deno.writeTextFile(`${dir}/src/hello.txt`, BODY);
      await git(["add", "hello.txt"], `${dir}/src`);
      await git(["commit", "-q", "-m", "one"], `${dir}/src`);
      await git(["clone", "-q", "--bare", `${dir}/src`, `${dir}/repo.git`]);
      await git(["update-server-info"], `${dir}/repo.git`);
      // A static file server is all the dumb HTTP protocol needs; it insists on our Via.
      const files = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
        if (!/\bwaypost\b/.test(req.headers.get("via") ?? "")) return new Response("", { status: 421 });
        const path = decodeURIComponent(new URL(req.url).pathname);
        if (path.includes("..")) return new Response("", { status: 400 });
        try {
          return new Response(await Deno.readFile(`${dir}${path}`));
        } catch {
          return new Response("", { status: 404 });
        }
      });
      await using proxy = startTestProxy();
      try {
        await run("git", [
          "-c",
          `http.proxy=http://127.0.0.1:${proxy.port}`,
          "clone",
          "-q",
          `http://127.0.0.1:${files.addr.port}/repo.git`,
          `${dir}/out`,
        ]);
        assert.equal(await Deno.readTextFile(`${dir}/out/hello.txt`), BODY);
      } finally {
        await files.shutdown();
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
