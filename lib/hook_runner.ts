/**
 * Calling a user hook: a synchronous result is used as is (no promise); a
 * thenable is awaited under the session's hook deadline, which the server's
 * sweeper enforces (no timer per call). Whatever a hook throws or rejects
 * with becomes a {@link HookError} (500) naming the hook, except a
 * {@link ProxyError}, which a hook may throw on purpose (for example a
 * `ForbiddenError` for a 403).
 *
 * @module
 */
import { deadlineIn } from "./clock.ts";
import { ProxyError } from "./errors.ts";
import { type Awaitable, HookError, type HookName, isThenable } from "./hooks.ts";

/** Per-session state the sweeper checks for a hook that does not settle. */
export interface HookWatch {
  /** Deadline (clock.ts) of the hook being awaited; 0 when none is. */
  hookDeadline: number;
  /** The hook being awaited. */
  hookName: HookName | null;
  /** Fails the awaited hook (called by the sweeper on expiry). */
  hookExpire: ((error: HookError) => void) | null;
  /** Called when a hook goes asynchronous (the session then watches the client for a reset). */
  hookWaiting?: () => void;
}

/** How long hooks may take, and the sweeper's tick (clock.ts `deadlineIn`). */
export interface HookTiming {
  /** 0 = no limit. */
  readonly hookTimeoutMs: number;
  readonly tickMs: number;
}

/** Maps what a hook threw to the error the exchange fails with. */
export function hookFailure(name: HookName, error: unknown): ProxyError {
  if (error instanceof ProxyError) return error;
  return new HookError(name, "failed", error);
}

/**
 * Calls a hook. Returns its value directly when it is synchronous; otherwise a
 * promise that settles with it, or fails when the deadline passes first.
 */
export function callHook<T>(
  watch: HookWatch,
  timing: HookTiming,
  name: HookName,
  call: () => Awaitable<T>,
): T | Promise<T> {
  let result: Awaitable<T>;
  try {
    result = call();
  } catch (error) {
    throw hookFailure(name, error);
  }
  if (!isThenable(result)) return result as T;
  watch.hookWaiting?.();
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    const expire = (error: HookError) => finish(() => reject(error));
    // A hook that settles after its deadline must not clear the watch of a later hook.
    const finish = (then: () => void) => {
      if (settled) return;
      settled = true;
      if (watch.hookExpire === expire) {
        watch.hookDeadline = 0;
        watch.hookName = null;
        watch.hookExpire = null;
      }
      then();
    };
    if (timing.hookTimeoutMs > 0) {
      watch.hookDeadline = deadlineIn(timing.hookTimeoutMs, timing.tickMs);
      watch.hookName = name;
      watch.hookExpire = expire;
    }
    (result as PromiseLike<T>).then(
      (value) => finish(() => resolve(value)),
      (error) => finish(() => reject(hookFailure(name, error))),
    );
  });
}

/** The sweeper's check: fails the awaited hook when its deadline has passed. */
export function expireHook(watch: HookWatch, now: number): void {
  if (watch.hookDeadline === 0 || now <= watch.hookDeadline) return;
  const name = watch.hookName ?? "onRequest";
  const expire = watch.hookExpire;
  watch.hookDeadline = 0;
  expire?.(new HookError(name, "timeout"));
}
