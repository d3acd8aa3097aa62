/**
 * Writes the options table of lib/cli.ts into README.md between its markers
 * (`deno task readme`); tests/cli_test.ts fails while the README is stale.
 */
import { markdownTable } from "../lib/cli.ts";

const path = new URL("../README.md", import.meta.url);
const readme = await Deno.readTextFile(path);
const start = readme.indexOf("<!-- options table");
const end = readme.indexOf("<!-- end of options table -->");
if (start === -1 || end < start) throw new Error("README.md has no options table markers");
const head = readme.slice(0, readme.indexOf("\n", start) + 1);
await Deno.writeTextFile(path, `${head}\n${markdownTable()}\n\n${readme.slice(end)}`);
