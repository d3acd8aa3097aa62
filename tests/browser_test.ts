/**
 * A real browser against the proxy's own pages: headless Chromium renders the
 * status page (DOM dump and a screenshot kept in `tests/output/`) and loads a
 * page through the proxy configured only by the proxy's `/proxy.pac`.
 *
 * Chromium talks to loopback only: background networking, component updates,
 * sync and default apps are off, proxy variables are removed from its
 * environment, and `--host-resolver-rules` makes every name but 127.0.0.1
 * unresolvable, so no page can reach out even by mistake. Each run has a fresh
 * profile (removed after), a 30 s bound (SIGTERM, then SIGKILL, by PID), and is
 * awaited with both pipes drained, so nothing outlives a test.
 *
 * The tests are skipped (not failed) where `chromium` is not on PATH; `.ci/run`
 * installs it from apt, so CI runs them.
 */
import assert from "node:assert/strict";
import type { ExchangeRecord } from "../mod.ts";
import { closedPort, get, ok, type OriginScript, serve, startOrigin, startTestProxy, text } from "./util.ts";

/** The absolute path of `name` on PATH, or null. */
function which(name: string): string | null {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    if (dir === "") continue;
    try {
      if (Deno.statSync(`${dir}/${name}`).isFile) return `${dir}/${name}`;
    } catch {
      // Not in this directory (or PATH not readable): try the next one.
    }
  }
  return null;
}

const CHROMIUM = which("chromium");
const SKIPPED = CHROMIUM === null ? " (skipped: chromium is not installed; CI installs it from apt)" : "";
/** Longest a Chromium run may take before it is killed. */
const RUN_TIMEOUT_MS = 30_000;
/** After SIGTERM, how long Chromium gets to exit before SIGKILL. */
const KILL_GRACE_MS = 3_000;
/** After Chromium exited, how long its pipes may stay open (held by a lingering helper) before they are cancelled. */
const PIPE_GRACE_MS = 5_000;
const OUTPUT_DIR = new URL("./output/", import.meta.url);
const SCREENSHOT = new URL("status-page.png", OUTPUT_DIR);
const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
/** A name that is not loopback to Chromium (see the PAC test); the proxy maps it to 127.0.0.1. */
const PAC_HOST = "pac-check.test";

/**
 * Flags for every run, all meant to keep Chromium on loopback: headless, no
 * sandbox (CI runs as root), background networking, component updates, sync,
 * default apps and extensions off. Those flags alone are not enough: Chromium 156
 * still asks for clients2.google.com/time, update.googleapis.com and
 * accounts.google.com (seen at the proxy when a PAC file sends everything there).
 * So the network-time query is off, the component updater and Google accounts
 * are pointed at a closed loopback port, and `--host-resolver-rules` answers
 * "not found" for every name but 127.0.0.1: any other host can only be reached
 * through a proxy, and the test proxies refuse every host but their origin's.
 */
function baseFlags(profile: string): string[] {
  const nowhere = `http://127.0.0.1:${closedPort()}/`;
  return [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-first-run",
    "--no-default-browser-check",
    "--no-pings",
    "--disable-breakpad",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--metrics-recording-only",
    "--disable-features=NetworkTimeServiceQuerying,OptimizationHints,Translate,MediaRouter",
    `--component-updater=url-source=${nowhere}`,
    `--gaia-url=${nowhere}`,
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    `--user-data-dir=${profile}`,
  ];
}

interface ChromiumRun {
  code: number;
  timedOut: boolean;
  stdout: string;
  stderr: string;
}

/** Reads a pipe to its end; `cancel()` stops early (a helper process may hold it open). */
function drain(stream: ReadableStream<Uint8Array>): { done: Promise<Uint8Array>; cancel(): Promise<void> } {
  const reader = stream.getReader();
  const chunks: Uint8Array[] = [];
  const done = (async () => {
    try {
      while (true) {
        const { value, done } = await reader.read();
        if (done) break;
        chunks.push(value);
      }
    } catch {
      // Cancelled: keep what was read.
    }
    const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
    let at = 0;
    for (const c of chunks) {
      out.set(c, at);
      at += c.length;
    }
    return out;
  })();
  return { done, cancel: () => reader.cancel().catch(() => {}) };
}

/**
 * Runs Chromium once with a fresh profile, bounded by {@link RUN_TIMEOUT_MS}:
 * SIGTERM to its PID when time is up, SIGKILL if it still runs after
 * {@link KILL_GRACE_MS}. Waits for its exit and both pipes; removes the profile.
 */
async function runChromium(args: string[]): Promise<ChromiumRun> {
  assert.ok(CHROMIUM !== null);
  const profile = await Deno.makeTempDir({ prefix: "waypost-chromium-" });
  // Chromium reads proxy settings from the environment when no flag says otherwise: drop them.
  const env = Object.fromEntries(
    Object.entries(Deno.env.toObject()).filter(([k]) => !/^(https?|ftp|all|no)_proxy$/i.test(k)),
  );
  try {
    const child = new Deno.Command(CHROMIUM, {
      args: [...baseFlags(profile), ...args],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      clearEnv: true,
      env,
    }).spawn();
    const out = drain(child.stdout);
    const err = drain(child.stderr);
    let timedOut = false;
    let hardKill: ReturnType<typeof setTimeout> | undefined;
    const kill = (signal: Deno.Signal) => {
      try {
        child.kill(signal);
      } catch {
        // Already exited.
      }
    };
    const deadline = setTimeout(() => {
      timedOut = true;
      kill("SIGTERM");
      hardKill = setTimeout(() => kill("SIGKILL"), KILL_GRACE_MS);
    }, RUN_TIMEOUT_MS);
    let status: Deno.CommandStatus;
    try {
      status = await child.status;
    } finally {
      clearTimeout(deadline);
      clearTimeout(hardKill);
    }
    let pipeTimer: ReturnType<typeof setTimeout> | undefined;
    const bound = new Promise<void>((resolve) => pipeTimer = setTimeout(resolve, PIPE_GRACE_MS));
    await Promise.race([Promise.all([out.done, err.done]), bound]);
    clearTimeout(pipeTimer);
    await Promise.all([out.cancel(), err.cancel()]);
    const decoder = new TextDecoder();
    return {
      code: status.code,
      timedOut,
      stdout: decoder.decode(await out.done),
      stderr: decoder.decode(await err.done),
    };
  } finally {
    await Deno.remove(profile, { recursive: true }).catch(() => {});
  }
}

/** Fails with Chromium's last stderr lines unless the run ended by itself with status 0. */
function assertRan(run: ChromiumRun, what: string): void {
  const tail = run.stderr.split("\n").filter((l) => !/dbus|^\s*$/i.test(l)).slice(-15).join("\n");
  assert.ok(!run.timedOut, `${what}: Chromium was killed after ${RUN_TIMEOUT_MS} ms\n${tail}`);
  assert.equal(run.code, 0, `${what}: Chromium exited with ${run.code}\n${tail}`);
}

/**
 * An origin script whose reads wait as long as a Chromium run may take: the
 * proxy keeps its upstream connection idle in the pool meanwhile (the proxy
 * closes it when the test disposes of it).
 */
function patient(script: OriginScript): OriginScript {
  return (c, origin) => {
    c.reader.timeoutMs = RUN_TIMEOUT_MS + KILL_GRACE_MS + PIPE_GRACE_MS;
    return script(c, origin);
  };
}

Deno.test({
  name: `the status page in headless Chromium: title, counters and escaped targets in the DOM; a screenshot${SKIPPED}`,
  ignore: CHROMIUM === null,
  async fn() {
    await using origin = startOrigin(patient(serve((req) => ok(`target=${req.target}`))));
    await using proxy = startTestProxy();
    assert.equal((await proxy.roundTrip(get(origin.url("/<b>x</b>")))).status, 200);
    assert.equal((await proxy.roundTrip(get(origin.url("/plain")))).status, 200);
    // Records are made just after an exchange's last byte: give them a moment.
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(proxy.handle.metrics?.summary().requests, 2);
    const url = `http://127.0.0.1:${proxy.port}/`;

    // The DOM first, while the counter is still exactly 2 (Chromium's own page loads are exchanges too).
    const dom = await runChromium(["--no-proxy-server", "--dump-dom", url]);
    assertRan(dom, "--dump-dom");
    const html = dom.stdout;
    assert.match(html, /<title>waypost: status<\/title>/);
    assert.match(html, /<meta http-equiv="refresh" content="5">/);
    assert.match(html, /<th>requests<\/th><td>2<\/td>/);
    assert.match(html, /<p id="state">serving<\/p>/);
    // The target is text in its cell, not markup: serialized back with &lt; &gt;, and no <b> element.
    const cell = `<td class="t">http://${origin.authority}/&lt;b&gt;x&lt;/b&gt;</td>`;
    assert.ok(html.includes(cell), `no escaped row for the <b> target in:\n${html}`);
    assert.ok(!/<b>/i.test(html), "a target became markup");
    assert.ok(html.includes(`<td class="t">http://${origin.authority}/plain</td>`));
    assert.equal(origin.requests.length, 2, "Chromium's page loads went to the proxy's page, not the origin");

    // Then the screenshot, kept for a human look.
    await Deno.mkdir(OUTPUT_DIR, { recursive: true });
    await Deno.remove(SCREENSHOT).catch(() => {});
    const shot = await runChromium([
      "--no-proxy-server",
      "--hide-scrollbars",
      `--screenshot=${SCREENSHOT.pathname}`,
      "--window-size=1200,800",
      url,
    ]);
    assertRan(shot, "--screenshot");
    const png = await Deno.readFile(SCREENSHOT);
    assert.deepEqual([...png.subarray(0, 8)], PNG_SIGNATURE, "not a PNG");
    assert.ok(png.length > 8 * 1024, `a ${png.length}-byte screenshot is too small to show the page`);
    // IHDR: width and height, big-endian, at bytes 16 and 20.
    const ihdr = new DataView(png.buffer, png.byteOffset + 16, 8);
    assert.deepEqual([ihdr.getUint32(0), ihdr.getUint32(4)], [1200, 800]);
  },
});

/*
 * Chromium never sends a request for a loopback destination to a proxy that a
 * PAC file chose: in PAC mode it always applies its implicit bypass rules (localhost,
 * *.localhost, 127.0.0.0/8, [::1], link-local; net/proxy_resolution
 * ConfiguredProxyResolutionService::ApplyPacBypassRules, "to prevent PAC scripts
 * from being able to proxy localhost"). `--proxy-bypass-list=<-loopback>` removes
 * those rules for `--proxy-server` only; with `--proxy-pac-url` it has no effect.
 * Tried with Chromium 156: 127.0.0.1, localhost and [::ffff:127.0.0.1] all went
 * direct (no Via at the origin) with and without `<-loopback>`.
 *
 * So the page is asked for by a name that is not loopback, `pac-check.test`
 * (.test is reserved: it never resolves publicly). Chromium cannot resolve it
 * (--host-resolver-rules), so the only way the page can load is through the
 * proxy the PAC file names; the proxy maps the name to 127.0.0.1 in an
 * `onRequest` hook and refuses every other destination, so it never resolves or
 * dials anything but loopback either.
 */
Deno.test({
  name: `/proxy.pac used by headless Chromium: the page loads through the proxy the PAC file names${SKIPPED}`,
  ignore: CHROMIUM === null,
  async fn() {
    await using origin = startOrigin(patient(serve((req) => {
      const via = req.fields.find((f) => f[0].toLowerCase() === "via")?.[1] ?? "none";
      const body = `<!doctype html><html><head><title>pac-check</title></head>` +
        `<body><p id="target">${req.target}</p><p id="via">${via}</p></body></html>`;
      return ok(body, ["Content-Type: text/html; charset=utf-8"]);
    })));
    const records: ExchangeRecord[] = [];
    await using proxy = startTestProxy({
      hooks: {
        onExchangeEnd: (r) => void records.push(r),
        onConnect: () => "deny",
        onRequest(req) {
          if (req.destination.hostname !== PAC_HOST) {
            return new Response(`this test proxy only forwards to ${PAC_HOST}\n`, { status: 403 });
          }
          req.destination.hostname = "127.0.0.1";
        },
      },
    });
    // The PAC file Chromium will get (its Host is 127.0.0.1:port, a plain name:port).
    const pac = text(
      (await proxy.roundTrip(
        `GET /proxy.pac HTTP/1.1\r\nHost: 127.0.0.1:${proxy.port}\r\n\r\n`,
      )).body,
    );
    assert.match(pac, new RegExp(`return "PROXY 127\\.0\\.0\\.1:${proxy.port}";`));

    const run = await runChromium([
      `--proxy-pac-url=http://127.0.0.1:${proxy.port}/proxy.pac`,
      "--dump-dom",
      `http://${PAC_HOST}:${origin.port}/pac-check`,
    ]);
    assertRan(run, "--proxy-pac-url");
    // The browser's side: the origin's page, which says it was reached through waypost.
    assert.match(run.stdout, /<title>pac-check<\/title>/, `not the origin's page:\n${run.stdout}`);
    assert.match(run.stdout, /<p id="target">\/pac-check<\/p>/);
    assert.match(run.stdout, /<p id="via">1\.1 waypost \([0-9a-f]{8}\)<\/p>/);
    // The origin's side: the request came from the proxy, for the name Chromium was given.
    const req = origin.requests.find((r) => r.target === "/pac-check");
    assert.ok(req !== undefined, `the origin got no /pac-check: ${origin.requestLines().join(", ")}`);
    const field = (name: string) => req.fields.filter((f) => f[0].toLowerCase() === name).map((f) => f[1]);
    assert.deepEqual(field("via"), [/^1\.1 waypost \([0-9a-f]{8}\)$/.exec(field("via")[0])![0]]);
    assert.deepEqual(field("host"), [`${PAC_HOST}:${origin.port}`]);
    // The proxy's side: Chromium fetched the PAC file from it (one fetch above was this test's), and the page
    // was forwarded to the origin; anything else Chromium sent was refused without a dial.
    await new Promise((r) => setTimeout(r, 50));
    const pacFetches = records.filter((r) => r.kind === "local" && r.method === "GET" && r.target === "/proxy.pac");
    assert.ok(pacFetches.length >= 2, `Chromium never fetched /proxy.pac: ${JSON.stringify(records)}`);
    const forwarded = records.filter((r) => r.upstream !== null);
    assert.ok(
      forwarded.some((r) => r.target === `http://${PAC_HOST}:${origin.port}/pac-check` && r.status === 200),
      `no forwarded /pac-check: ${JSON.stringify(records)}`,
    );
    for (const r of forwarded) assert.deepEqual(r.upstream, { hostname: "127.0.0.1", port: origin.port });
  },
});
