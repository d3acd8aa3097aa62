/**
 * Unit tests of hook composition (lib/hooks.ts) and hook calls
 * (lib/hook_runner.ts): order, first answer wins, no promise for synchronous
 * hooks, failures and deadlines mapped to HookError codes.
 */
import assert from "node:assert/strict";
import { composeHooks, HookError, isThenable, type ProxyHooks } from "../lib/hooks.ts";
import { callHook, expireHook, type HookWatch } from "../lib/hook_runner.ts";
import { ForbiddenError } from "../lib/errors.ts";

const watch = (): HookWatch => ({ hookDeadline: 0, hookName: null, hookExpire: null });
const timing = { hookTimeoutMs: 1000, tickMs: 10 };
// deno-lint-ignore no-explicit-any
const anyReq = {} as any;
// deno-lint-ignore no-explicit-any
const anyCtx = {} as any;

Deno.test("composeHooks: none set → null (the hook-free path runs)", () => {
  assert.equal(composeHooks(undefined), null);
  assert.equal(composeHooks([]), null);
  assert.equal(composeHooks([{}, {}]), null);
  assert.notEqual(composeHooks({ onExchangeEnd() {} }), null);
});

Deno.test("composeHooks: invalid entries are a TypeError at start", () => {
  assert.throws(() => composeHooks([null as unknown as ProxyHooks]), TypeError);
  assert.throws(() => composeHooks({ onRequest: 1 } as unknown as ProxyHooks), TypeError);
});

Deno.test("composed hooks run in order; the first answer wins; synchronous chains return no promise", async () => {
  const calls: string[] = [];
  const composed = composeHooks([
    { onRequest: () => void calls.push("a") },
    {
      onRequest: () => {
        calls.push("b");
        return { status: 204 };
      },
    },
    { onRequest: () => void calls.push("c") },
  ])!;
  const result = composed.onRequest!(anyReq, anyCtx);
  assert.ok(!isThenable(result), "a synchronous chain made a promise");
  assert.deepEqual(result, { status: 204 });
  assert.deepEqual(calls, ["a", "b"]);

  calls.length = 0;
  const mixed = composeHooks([
    { onRequest: () => void calls.push("sync") },
    {
      onRequest: () => {
        calls.push("async");
        return Promise.resolve();
      },
    },
    { onRequest: () => (calls.push("last"), { status: 403 }) },
  ])!;
  const pending = mixed.onRequest!(anyReq, anyCtx);
  assert.ok(isThenable(pending));
  assert.deepEqual(await pending, { status: 403 });
  assert.deepEqual(calls, ["sync", "async", "last"]);
});

Deno.test("every onExchangeEnd sees every record, even after one throws", () => {
  const seen: string[] = [];
  const composed = composeHooks([
    {
      onExchangeEnd: () => {
        seen.push("a");
        throw new Error("x");
      },
    },
    { onExchangeEnd: () => void seen.push("b") },
  ])!;
  // deno-lint-ignore no-explicit-any
  assert.throws(() => composed.onExchangeEnd!({} as any));
  assert.deepEqual(seen, ["a", "b"]);
});

Deno.test("callHook: a synchronous result is returned as is, without a promise", () => {
  const w = watch();
  const value = { status: 200 };
  const result = callHook(w, timing, "onRequest", () => value);
  assert.equal(result, value);
  assert.equal(w.hookDeadline, 0, "a synchronous hook set a deadline");
});

Deno.test("callHook: failures become HookError codes; a ProxyError keeps its status", async (t) => {
  await t.step("throws", () => {
    assert.throws(() =>
      callHook(watch(), timing, "onRequest", () => {
        throw new Error("x");
      }), (e: unknown) => e instanceof HookError && e.code === "hook-on-request-failed" && e.status === 500);
  });
  await t.step("rejects", async () => {
    await assert.rejects(
      Promise.resolve(callHook(watch(), timing, "onResponse", () => Promise.reject(new Error("x")))),
      (e: unknown) => e instanceof HookError && e.code === "hook-on-response-failed",
    );
  });
  await t.step("a ProxyError thrown on purpose", () => {
    assert.throws(() =>
      callHook(watch(), timing, "onConnect", () => {
        throw new ForbiddenError("no", "custom");
      }), (e: unknown) => e instanceof ForbiddenError && e.code === "custom");
  });
});

Deno.test("callHook: the deadline is the sweeper's (expireHook), no timer per call", async () => {
  const w = watch();
  const never = new Promise<void>(() => {});
  const result = callHook(w, { hookTimeoutMs: 50, tickMs: 10 }, "onRequest", () => never);
  // Handled from the start: the expiry below rejects synchronously.
  const settled = Promise.resolve(result).then(() => null, (e: unknown) => e);
  assert.ok(w.hookDeadline > 0);
  expireHook(w, w.hookDeadline - 1); // not yet (a deadline, not the wall clock: a loaded machine cannot make it late)
  assert.ok(w.hookDeadline > 0);
  expireHook(w, w.hookDeadline + 1);
  const e = await settled;
  assert.ok(e instanceof HookError && e.code === "hook-on-request-timeout", String(e));
  assert.equal(w.hookDeadline, 0);
});

Deno.test("callHook: a late hook does not clear a later hook's deadline", async () => {
  const w = watch();
  let settleFirst!: () => void;
  const first = callHook(w, timing, "onRequest", () => new Promise<void>((r) => settleFirst = r));
  expireHook(w, w.hookDeadline + 1);
  await assert.rejects(Promise.resolve(first));
  const second = callHook(w, timing, "onResponse", () => new Promise<void>(() => {}));
  const deadline = w.hookDeadline;
  settleFirst();
  await Promise.resolve();
  assert.equal(w.hookDeadline, deadline);
  assert.equal(w.hookName, "onResponse");
  expireHook(w, deadline + 1);
  await assert.rejects(Promise.resolve(second));
});

Deno.test("callHook: hookTimeoutMs 0 means no deadline", async () => {
  const w = watch();
  const result = callHook(w, { hookTimeoutMs: 0, tickMs: 10 }, "onRequest", () => Promise.resolve(7));
  assert.equal(w.hookDeadline, 0);
  assert.equal(await result, 7);
});
