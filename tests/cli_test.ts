/**
 * The one table of options: flags, config keys, --help and the README's table
 * come from it; config files are validated key by key; flags override the
 * file; SIGHUP applies a good file, keeps the running options on a bad or
 * deleted one; the proxy never routes through the proxy in its own environment.
 */
import assert from "node:assert/strict";
import {
  markdownTable,
  OPTIONS,
  parseCommandLine,
  parseConfig,
  proxyOptionsFrom,
  stripComments,
  usage,
  UsageError,
} from "../lib/cli.ts";
import { DEFAULTS } from "../lib/options.ts";
import { echoTarget, fieldValue, get, hasField, type Message, startOrigin } from "./util.ts";
import { parseHead } from "./util.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;

Deno.test("the README's options table is the one lib/cli.ts makes", async () => {
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const start = readme.indexOf("<!-- options table");
  const end = readme.indexOf("<!-- end of options table -->");
  assert.ok(start !== -1 && end > start, "the README has no options table markers");
  const inReadme = readme.slice(readme.indexOf("\n", start) + 1, end).trim();
  assert.equal(inReadme, markdownTable(), "run the table generator: the README's table is stale");
});

Deno.test("--help names every option; every ProxyOptions default a user can set from the CLI has a flag", () => {
  const help = usage();
  for (const o of OPTIONS) assert.ok(help.includes(`--${o.name}`), o.name);
  const covered = new Set(OPTIONS.map((o) => o.option).filter(Boolean));
  // Options only a library user sets (functions, objects, or sizes tuned in code).
  const libraryOnly = new Set([
    "maxRequestLineBytes",
    "maxHeadBytes",
    "maxFields",
    "maxIdlePerOrigin",
    "upstreamIdleTimeoutMs",
    "reusePort",
    "instanceId",
    "metrics", // --no-metrics turns it off
    "memoryRelease", // --no-memory-release turns it off
  ]);
  for (const key of Object.keys(DEFAULTS)) {
    assert.ok(covered.has(key as never) || libraryOnly.has(key), `no flag for ${key}`);
  }
});

Deno.test("--no-metrics and --no-memory-release turn their options off; without them both stay on", () => {
  const off = proxyOptionsFrom(parseCommandLine(["--no-metrics", "--no-memory-release"]).settings);
  assert.equal(off.metrics, false);
  assert.equal(off.memoryRelease, false);
  const on = proxyOptionsFrom(parseCommandLine([]).settings);
  assert.equal(on.metrics, undefined); // the defaults apply: DEFAULTS.metrics, DEFAULTS.memoryRelease
  assert.equal(on.memoryRelease, undefined);
  assert.equal(DEFAULTS.metrics, true);
  assert.equal(DEFAULTS.memoryRelease, true);
});

Deno.test("flags: values checked and converted; a bad one names the flag, the value and why", () => {
  const cli = parseCommandLine([
    "--port",
    "0",
    "--connect-timeout",
    "2s",
    "--admin-allow",
    "10.0.0.0/8",
    "--admin-allow",
    "::1",
    "--timing-header",
  ]);
  assert.deepEqual(cli.settings, {
    port: 0,
    "connect-timeout": 2000,
    "admin-allow": ["10.0.0.0/8", "::1"],
    "timing-header": true,
  });
  for (
    const [args, pattern] of [
      [["--port", "70000"], /--port "70000": expected a port/],
      [["--connect-timeout", "soon"], /--connect-timeout "soon": expected a duration/],
      [["--admin-allow", "10.0.0.0/33"], /--admin-allow "10.0.0.0\/33": invalid prefix length/],
      [["--log-format", "xml"], /expected one of json, squid, common, text, none/],
      [["--nope"], /Unknown option '--nope'/],
    ] as [string[], RegExp][]
  ) {
    assert.throws(
      () => parseCommandLine(args),
      (e: unknown) => e instanceof UsageError && pattern.test(e.message),
      args.join(" "),
    );
  }
});

Deno.test("config files: JSON with comments, keys are the flag names; unknown keys and bad values are named", () => {
  const text = `{
    // the listening port
    "port": 0,
    /* durations as for the flags */ "idle-timeout": "90s",
    "connect-ports": [443, 8443],
    "via": "a // not a comment",
    "admin-allow": "10.0.0.0/8",
    "proxy-status-details": true
  }`;
  assert.deepEqual(parseConfig(text, "w.json"), {
    port: 0,
    "idle-timeout": 90_000,
    "connect-ports": [443, 8443],
    via: "a // not a comment",
    "admin-allow": ["10.0.0.0/8"],
    "proxy-status-details": true,
  });
  assert.equal(stripComments('{"a":"/*x*/"}'), '{"a":"/*x*/"}');
  for (
    const [bad, pattern] of [
      ['{"prot": 1}', /w\.json: unknown key "prot"/],
      ['{"port": "x"}', /w\.json: key "port" "x": expected a port/],
      ['{"idle-timeout": 5}', /^(?!)/], // a bare number is seconds: valid
      ['{"proxy-status-details": "yes"}', /key "proxy-status-details" "yes": expected true or false/],
      ["[1]", /expected a JSON object/],
      ["{", /not JSON/],
      ['{"help": true}', /unknown key "help"/],
    ] as [string, RegExp][]
  ) {
    if (bad === '{"idle-timeout": 5}') {
      assert.equal(parseConfig(bad, "w.json")["idle-timeout"], 5000);
      continue;
    }
    assert.throws(
      () => parseConfig(bad, "w.json"),
      (e: unknown) => e instanceof UsageError && pattern.test(e.message),
      bad,
    );
  }
});

/** Starts main.ts, returns its port and a way to stop it and read stderr. */
async function startCli(args: string[], env: Record<string, string> = {}) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", "--allow-read", ...[MAIN], ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env,
  }).spawn();
  const reader = child.stdout.getReader();
  let line = "";
  while (!line.includes("\n")) {
    const r = await reader.read();
    if (r.done) break;
    line += new TextDecoder().decode(r.value);
  }
  reader.releaseLock();
  const port = Number(/listening on http:\/\/[^ ]*:(\d+)/.exec(line)?.[1]);
  if (!port) {
    child.kill("SIGKILL");
    const err = await new Response(child.stderr).text();
    await child.status;
    await child.stdout.cancel();
    throw new Error(`the proxy did not start: ${line} ${err}`);
  }
  return {
    port,
    async fetch(request: string): Promise<Message> {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      await conn.write(new TextEncoder().encode(request));
      const raw = await new Response(conn.readable).text();
      return parseHead(raw.slice(0, raw.indexOf("\r\n\r\n")), "response");
    },
    async stop(): Promise<{ code: number; err: string }> {
      child.kill("SIGTERM");
      const [status, err] = await Promise.all([child.status, new Response(child.stderr).text()]);
      await child.stdout.cancel();
      return { code: status.code, err };
    },
    hup: () => child.kill("SIGHUP"),
  };
}

Deno.test("CLI --config: flags override the file; SIGHUP applies a good file, keeps the options on a bad or deleted one", async () => {
  await using origin = startOrigin(echoTarget);
  const dir = await Deno.makeTempDir();
  const file = `${dir}/waypost.json`;
  await Deno.writeTextFile(file, `{ "port": 0, "via": "from-file", "timing-header": true, "log-format": "none" }`);
  const cli = await startCli(["--config", file, "--host", "127.0.0.1"]);
  const hup = async () => {
    cli.hup();
    await new Promise((r) => setTimeout(r, 300));
  };
  try {
    const req = get(origin.url("/x"), ["Connection: close"]);
    let res = await cli.fetch(req);
    assert.match(fieldValue(res.fields, "via"), /from-file$/);
    assert.ok(hasField(res.fields, "server-timing"));
    // A good file: applied to the next exchange.
    await Deno.writeTextFile(file, `{ "port": 0, "via": "reloaded", "log-format": "none" }`);
    await hup();
    res = await cli.fetch(req);
    assert.match(fieldValue(res.fields, "via"), /reloaded$/);
    assert.ok(!hasField(res.fields, "server-timing"));
    // A bad file and a deleted one: reported, the running options stay.
    await Deno.writeTextFile(file, `{ "port": 0, "via": 5 }`);
    await hup();
    await Deno.remove(file);
    await hup();
    res = await cli.fetch(req);
    assert.match(fieldValue(res.fields, "via"), /reloaded$/);
  } finally {
    const { code, err } = await cli.stop();
    await Deno.remove(dir, { recursive: true });
    assert.equal(code, 0);
    assert.match(err, /reloaded .*waypost\.json/);
    assert.match(err, /reload failed, the running options stay: .*key "via" 5: expected a non-empty string/);
    assert.match(err, /reload failed, the running options stay: cannot read --config/);
  }
});

Deno.test("CLI: a flag wins over the file; a bad file stops the start naming key, value and reason", async () => {
  await using origin = startOrigin(echoTarget);
  const dir = await Deno.makeTempDir();
  const file = `${dir}/w.json`;
  try {
    await Deno.writeTextFile(file, `{ "via": "from-file", "log-format": "none" }`);
    const cli = await startCli(["--config", file, "--port", "0", "--via", "from-flag"]);
    const res = await cli.fetch(get(origin.url("/y"), ["Connection: close"]));
    assert.match(fieldValue(res.fields, "via"), /from-flag$/);
    assert.equal((await cli.stop()).code, 0);
    await Deno.writeTextFile(file, `{ "max-connections": 0 }`);
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-net", "--allow-read", MAIN, "--config", file],
      stdout: "null",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 2);
    assert.match(new TextDecoder().decode(out.stderr), /key "max-connections" 0: expected a whole number from 1/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("CLI: http_proxy in the proxy's own environment is not used (no loop through itself)", async () => {
  await using origin = startOrigin(echoTarget);
  const cli = await startCli(["--port", "0", "--log-format", "none"], {
    http_proxy: "http://127.0.0.1:1",
    HTTP_PROXY: "http://127.0.0.1:1",
    https_proxy: "http://127.0.0.1:1",
    all_proxy: "http://127.0.0.1:1",
  });
  try {
    const res = await cli.fetch(get(origin.url("/z"), ["Connection: close"]));
    assert.equal(res.status, 200);
  } finally {
    assert.equal((await cli.stop()).code, 0);
  }
});

Deno.test("CLI --auth-file: users from the file; SIGHUP re-reads it (no --config needed)", async () => {
  await using origin = startOrigin(echoTarget);
  const dir = await Deno.makeTempDir();
  const users = `${dir}/users`;
  await Deno.writeTextFile(users, "# team\nalice:one\n");
  const cli = await startCli(["--port", "0", "--log-format", "none", "--auth-file", users]);
  const as = (user: string) => get(origin.url("/"), [`Proxy-Authorization: Basic ${btoa(user)}`, "Connection: close"]);
  try {
    assert.equal((await cli.fetch(as("alice:one"))).status, 200);
    assert.equal((await cli.fetch(as("bob:two"))).status, 407);
    await Deno.writeTextFile(users, "bob:two\n");
    cli.hup();
    await new Promise((r) => setTimeout(r, 300));
    assert.equal((await cli.fetch(as("bob:two"))).status, 200);
    assert.equal((await cli.fetch(as("alice:one"))).status, 407);
  } finally {
    const { code, err } = await cli.stop();
    await Deno.remove(dir, { recursive: true });
    assert.equal(code, 0);
    assert.match(err, /reloaded .*users/);
    assert.ok(!err.includes("one") && !err.includes("two"), "a password was printed");
  }
});

Deno.test("the README's complete example config file parses, and names every config key", async () => {
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const start = readme.indexOf("```jsonc\n");
  assert.ok(start !== -1, "the README has no jsonc example");
  const text = readme.slice(start + "```jsonc\n".length, readme.indexOf("```", start + 8));
  const settings = parseConfig(text, "README example");
  const keys = OPTIONS.filter((o) => !o.flagOnly).map((o) => o.name);
  const missing = keys.filter((k) => !(k in settings));
  assert.deepEqual(missing, [], `keys missing from the README's example: ${missing.join(", ")}`);
});
