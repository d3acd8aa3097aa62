/**
 * The version of this build (kept equal to `deno.json`'s by a test: a module
 * under lib/ must not import files outside it, which `--workers` threads cannot read).
 *
 * @module
 */

/** This build's version. */
export const VERSION = "0.1.0";
