/**
 * lib/idle_release.ts: when the proxy gives heap memory back (after a burst,
 * once idle, once per growth), and that it does give it back in a real process.
 */
import assert from "node:assert/strict";
import { GROWTH_BYTES, IDLE_MS, IdleRelease, type ReleaseRuntime } from "../lib/idle_release.ts";
import { activityCount } from "../lib/session.ts";
import { startSweeper, type Swept } from "../lib/sweeper.ts";
import { silentLogger } from "../mod.ts";
import { echoTarget, get, startOrigin, startTestProxy } from "./util.ts";

/** A runtime whose heap the test sets; gc() shrinks it to `afterGc` and counts calls. */
function fakeRuntime(heap: number, available = true) {
  const state = { heap, afterGc: heap, calls: 0 };
  const runtime: ReleaseRuntime = {
    heapTotal: () => state.heap,
    gc: () =>
      Promise.resolve(
        available
          ? () => {
            state.calls++;
            state.heap = state.afterGc;
          }
          : null,
      ),
  };
  return { state, runtime };
}

const settle = () => new Promise((resolve) => setTimeout(resolve, 0));

Deno.test("idle release: none while exchanges run, one after IDLE_MS idle once the heap has grown", async () => {
  const { state, runtime } = fakeRuntime(10e6);
  const release = new IdleRelease(runtime, 0);
  state.heap = 10e6 + GROWTH_BYTES + 1;
  state.afterGc = 9e6;
  release.tick(1000, true, 0);
  release.tick(1000 + IDLE_MS - 1, false, 0); // idle, but not long enough
  await settle();
  assert.equal(state.calls, 0);
  release.tick(1000 + IDLE_MS, false, 0);
  await settle();
  assert.equal(state.calls, 1);
  assert.equal(state.heap, 9e6);
  // Still idle, nothing grew since: no second release.
  release.tick(1000 + 2 * IDLE_MS, false, 0);
  release.tick(1000 + 10 * IDLE_MS, false, 0);
  await settle();
  assert.equal(state.calls, 1);
});

Deno.test("idle release: growth is counted from the heap after the last release, not from the start", async () => {
  const { state, runtime } = fakeRuntime(10e6);
  const release = new IdleRelease(runtime, 0);
  state.heap = 20e6;
  state.afterGc = 6e6;
  release.tick(IDLE_MS, false, 0);
  await settle();
  assert.equal(state.calls, 1);
  // Grown again, but by less than GROWTH_BYTES from 6 MB: no release.
  state.heap = 6e6 + GROWTH_BYTES - 1;
  release.tick(IDLE_MS + 1, true, 0);
  release.tick(2 * IDLE_MS + 1, false, 0);
  await settle();
  assert.equal(state.calls, 1);
  // Now by enough.
  state.heap = 6e6 + GROWTH_BYTES;
  release.tick(3 * IDLE_MS + 1, false, 0);
  await settle();
  assert.equal(state.calls, 2);
});

Deno.test("idle release: a heap that did not grow is left alone, and so is one whose gc() cannot be had", async () => {
  const grew = fakeRuntime(10e6);
  const quiet = new IdleRelease(grew.runtime, 0);
  grew.state.heap = 10e6 + GROWTH_BYTES - 1;
  quiet.tick(IDLE_MS * 5, false, 0);
  await settle();
  assert.equal(grew.state.calls, 0);

  const none = fakeRuntime(10e6, false);
  const unavailable = new IdleRelease(none.runtime, 0);
  none.state.heap = 30e6;
  unavailable.tick(IDLE_MS, false, 0);
  await settle();
  assert.equal(unavailable.releases, 0);
  assert.equal(none.state.heap, 30e6);
});

Deno.test("idle release: a proxy gives the heap back after a burst; with memoryRelease: false it does not", async () => {
  // In processes of their own, so that the heap measured is the program's alone.
  const program = new URL("./programs/idle_release.ts", import.meta.url).pathname;
  const run = async (mode: string) => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-net", "--v8-flags=--max-semi-space-size=2", program, mode],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    return JSON.parse(new TextDecoder().decode(out.stdout)) as { before: number; after: number; releases: number };
  };
  const [released, kept] = await Promise.all([run("release"), run("off")]);
  const mib = (n: number) => (n / 2 ** 20).toFixed(1);
  assert.equal(released.releases, 1);
  assert.ok(
    released.after < released.before - 4 * 2 ** 20,
    `with the release: heap ${mib(released.before)} -> ${mib(released.after)} MiB`,
  );
  // The same proxy with the option off: V8 alone kept the heap (what the release is measured against).
  assert.equal(kept.releases, 0);
  assert.ok(kept.after > kept.before - 2 * 2 ** 20, `option off: heap ${mib(kept.before)} -> ${mib(kept.after)} MiB`);
});

Deno.test("idle release: a connection opened or an exchange started between two ticks counts as activity", async () => {
  const { state, runtime } = fakeRuntime(10e6);
  const release = new IdleRelease(runtime, 0);
  state.heap = 30e6;
  // No tick saw a busy session, but the count moved: still active, so the idle time starts over.
  release.tick(IDLE_MS, false, 1);
  release.tick(2 * IDLE_MS - 1, false, 1);
  await settle();
  assert.equal(state.calls, 0);
  release.tick(2 * IDLE_MS, false, 1);
  await settle();
  assert.equal(state.calls, 1);
});

Deno.test("idle release: the sweeper reports whether an exchange is in progress on any connection", async () => {
  const session = (busy: boolean) =>
    ({ busy, hookDeadline: 0, waitingHead: false, responseDeadline: 0, inBody: false }) as unknown as Swept;
  const sessions = new Set<Swept>([session(false)]);
  const seen: boolean[] = [];
  let wake: (() => void) | null = null;
  const sweeper = startSweeper(sessions, {
    intervalMs: 5,
    bodyTimeoutMs: 0,
    logger: silentLogger,
    expireHead: () => {},
    onTick: (_now, busy) => {
      seen.push(busy);
      wake?.();
    },
  });
  const nextTick = () => new Promise<void>((resolve) => wake = resolve);
  // The sweeper's timer does not keep a process alive (unrefTimer); this one does while the test waits.
  const keepAlive = setInterval(() => {}, 1000);
  try {
    await nextTick();
    const idle = seen.at(-1);
    sessions.add(session(true));
    await nextTick();
    const busy = seen.at(-1);
    sessions.clear();
    await nextTick();
    assert.deepEqual([idle, busy, seen.at(-1)], [false, true, false]);
  } finally {
    sweeper.stop();
    clearInterval(keepAlive);
  }
});

Deno.test("idle release: every connection and every exchange moves the activity count", async () => {
  await using origin = startOrigin(echoTarget);
  await using proxy = startTestProxy();
  const before = activityCount();
  for (let i = 0; i < 3; i++) {
    const response = await proxy.roundTrip(get(`http://127.0.0.1:${origin.port}/n${i}`));
    assert.equal(response.status, 200);
  }
  assert.equal(activityCount() - before, 6); // three connections, one exchange each
});
