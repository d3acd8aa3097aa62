/**
 * `deno compile` builds one binary of the CLI. Compiling needs the `denort`
 * runtime, which Deno downloads from dl.deno.land: tests never contact anything
 * but loopback, so the test runs only when denort is already available
 * (DENORT_BIN, or Deno's download cache) and is skipped with that reason otherwise.
 */
import assert from "node:assert/strict";

function findDenort(): string | null {
  const explicit = Deno.env.get("DENORT_BIN");
  if (explicit) return explicit;
  const home = Deno.env.get("HOME") ?? "";
  const dir = Deno.env.get("DENO_DIR") ?? `${home}/.cache/deno`;
  try {
    for (const entry of Deno.readDirSync(`${dir}/dl/release/v${Deno.version.deno}`)) {
      if (entry.name.startsWith("denort")) return `${dir}/dl/release/v${Deno.version.deno}/${entry.name}`;
    }
  } catch {
    // No download cache: denort was never fetched on this machine.
  }
  return null;
}

const denort = findDenort();

Deno.test({
  name: denort
    ? "deno compile builds a binary that runs"
    : "deno compile builds a binary that runs (skipped: denort is not cached and fetching it needs dl.deno.land)",
  ignore: denort === null,
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      const out = `${dir}/waypost`;
      const main = new URL("../main.ts", import.meta.url).pathname;
      const build = await new Deno.Command(Deno.execPath(), {
        args: ["compile", "--allow-net", "--output", out, main],
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.equal(build.code, 0, new TextDecoder().decode(build.stderr));
      const run = await new Deno.Command(out, { args: ["--version"], stdout: "piped" }).output();
      assert.equal(run.code, 0);
      assert.match(new TextDecoder().decode(run.stdout), /^waypost \d+\.\d+\.\d+/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
