/**
 * Loading a hooks module for `--hooks FILE_OR_URL`: its default export is a
 * {@link ProxyHooks} object or an array of them. Used by the CLI and by each
 * `--workers` thread (functions cannot cross threads, so every thread imports
 * the module itself).
 *
 * @module
 */
import { composeHooks, type ProxyHooks } from "./hooks.ts";

/** A local path or a URL, as a module specifier (paths are relative to `cwd`). */
export function hooksSpecifier(text: string, cwd: string): string {
  if (/^(?:https?|file|data|jsr|npm):/i.test(text)) return text;
  const base = new URL(`file://${cwd.endsWith("/") ? cwd : `${cwd}/`}`);
  return new URL(text, base).href;
}

/**
 * Imports a hooks module and checks its default export.
 *
 * @throws {TypeError} when the module has no default export or it is not hook objects.
 * @throws whatever `import()` throws (not found, no permission: NotCapable).
 */
export async function loadHooks(specifier: string): Promise<ProxyHooks | ProxyHooks[]> {
  const mod = await import(specifier);
  const hooks = mod.default;
  if (hooks === undefined) {
    throw new TypeError("the module has no default export (export default { onRequest(req) { ... } })");
  }
  composeHooks(hooks); // throws a TypeError naming what is wrong
  return hooks;
}
