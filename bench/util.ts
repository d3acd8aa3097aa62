/**
 * Helpers shared by the end-to-end benchmark runners: finding tools, loopback
 * ports, and CPU pinning with `taskset` when it exists.
 *
 * @module
 */

/** The full path of an executable on PATH (or in the sbin directories), or null. */
export function which(name: string): string | null {
  for (const dir of (Deno.env.get("PATH") ?? "/usr/bin:/bin").split(":").concat(["/usr/sbin", "/sbin"])) {
    try {
      if (Deno.statSync(`${dir}/${name}`).isFile) return `${dir}/${name}`;
    } catch {
      // Not in this directory.
    }
  }
  return null;
}

const TASKSET = which("taskset");

/** The runtime flags of the README's command line (deno.json "start"): every runner starts the proxy with them. */
export const RUN_FLAGS: readonly string[] = [
  "--no-code-cache",
  "--v8-flags=--max-semi-space-size=2,--no-turbofan,--no-concurrent-recompilation,--no-concurrent-sparkplug,--no-concurrent-osr,--concurrent-maglev-max-threads=1,--no-allocation-site-pretenuring",
];

/** Whether commands are pinned to CPUs (taskset is installed). */
export const PINNING: boolean = TASKSET !== null;

/** `cmd args` pinned to `cpu` when taskset exists, else unchanged. */
export function pinned(cpu: number, cmd: string, args: string[]): [string, string[]] {
  return TASKSET ? [TASKSET, ["-c", String(cpu), cmd, ...args]] : [cmd, args];
}

/** A loopback port that was free a moment ago. */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** Resolves once something accepts connections on 127.0.0.1:`port` (at most 5 s). */
export async function waitForPort(port: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  throw new Error(`nothing listens on ${port}`);
}

/** The median of `xs` (the upper one of the middle two for an even count). */
export function median(xs: readonly number[]): number {
  return xs.toSorted((a, b) => a - b)[xs.length >> 1];
}

/** A field of `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`: resident memory now, and its peak). */
export function procStatusKiB(pid: number, field: "VmRSS" | "VmHWM"): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  return Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)![1]);
}

/** The user + system CPU time a process has used, in seconds (`/proc/PID/stat`, 100 ticks per second). */
export function cpuSeconds(pid: number): number {
  const fields = Deno.readTextFileSync(`/proc/${pid}/stat`).split(") ")[1].split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/**
 * The wrk script of the load runners: absolute-form requests through a proxy
 * (args: target, Host, expected body file), every body compared; prints
 * `RESULT <requests> <invalid> <p99 µs>`.
 */
export const WRK_CHECK_LUA: string = `threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  wrk.path = args[1]; wrk.headers["Host"] = args[2]
  local f = assert(io.open(args[3], "rb")); expected = f:read("*a"); f:close()
  bad = 0
end
function response(status, headers, body)
  if status ~= 200 or body ~= expected then bad = bad + 1 end
end
function done(summary, latency, requests)
  local invalid = 0
  for _, t in ipairs(threads) do invalid = invalid + t:get("bad") end
  io.write(string.format("RESULT %d %d %d\\n", summary.requests, invalid, latency:percentile(99)))
end
`;
