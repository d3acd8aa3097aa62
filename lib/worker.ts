/**
 * Entry point of a worker thread for `--workers N`: it runs one more event loop
 * with its own proxy on the same port (`reusePort`, so the kernel spreads new
 * connections over the threads), and stops when the main thread says so.
 *
 * Messages in: `{ type: "start", options, logLevel, hooksModule? }`, `{ type: "shutdown", graceMs }`.
 * Hooks are functions, which cannot cross threads: each worker imports the hooks module itself.
 * Messages out: `{ type: "listening" }`, `{ type: "stopped" }`, `{ type: "error", message }`.
 *
 * @module
 */
/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
import { consoleLogger, type LogLevel } from "./log.ts";
import type { ProxyOptions } from "./options.ts";
import { loadHooks } from "./hooks_loader.ts";
import { type AccessLogConfig, accessLogFor, reopenAccessLog } from "./access_log.ts";
import type { ProxyHooks } from "./hooks.ts";
import { type ProxyHandle, startProxy } from "./server.ts";

let proxy: ProxyHandle | null = null;
let access: ReturnType<typeof accessLogFor> | null = null;
let accessConfig: AccessLogConfig | null = null;
let snapshots: ReturnType<typeof setInterval> | undefined;

self.onmessage = async (event: MessageEvent) => {
  const message = event.data as
    | {
      type: "start";
      options: ProxyOptions;
      logLevel: LogLevel;
      hooksModule?: string;
      accessLog: AccessLogConfig | null;
    }
    | { type: "shutdown"; graceMs: number }
    | { type: "reconfigure"; options: ProxyOptions }
    | { type: "reopen-log"; accessLog: AccessLogConfig | null };
  if (message.type === "start") {
    try {
      const user = message.hooksModule === undefined ? [] : await loadHooks(message.hooksModule);
      accessConfig = message.accessLog;
      access = accessConfig === null ? null : accessLogFor(accessConfig);
      const hooks: ProxyHooks[] = [...(access ? [access.log.hooks] : []), ...(Array.isArray(user) ? user : [user])];
      const logger = consoleLogger(message.logLevel);
      proxy = startProxy({ ...message.options, hooks: hooks.length > 0 ? hooks : undefined, reusePort: true, logger });
      if (access !== null) proxy.metrics?.watchAccessLog(access.log);
      // Every second this thread's counters go to the main thread, which adds them to its own when it
      // renders /metrics (the admin port, the main thread's alone, sees the whole process).
      const metrics = proxy.metrics;
      if (metrics !== null) {
        snapshots = setInterval(() => self.postMessage({ type: "metrics", snapshot: metrics.snapshot() }), 1000);
        Deno.unrefTimer(snapshots);
      }
      self.postMessage({ type: "listening" });
    } catch (error) {
      self.postMessage({ type: "error", message: error instanceof Error ? error.message : String(error) });
    }
  } else if (message.type === "shutdown") {
    clearInterval(snapshots);
    const stopping = (proxy?.shutdown(message.graceMs) ?? Promise.resolve()).then(() => access?.log.flush(1000));
    stopping.catch(() => {
      // Stopping failed part-way; the main thread terminates this thread either way.
    }).finally(() => self.postMessage({ type: "stopped" }));
  } else if (message.type === "reconfigure") {
    try {
      proxy?.reconfigure(message.options);
    } catch (error) {
      console.error(`waypost: a worker kept its options: ${error instanceof Error ? error.message : error}`);
    }
  } else if (message.type === "reopen-log" && access !== null && accessConfig !== null) {
    if (message.accessLog !== null) {
      access.log.configure({ format: message.accessLog.format, query: message.accessLog.query });
      accessConfig = message.accessLog;
    }
    const problem = reopenAccessLog(access, accessConfig);
    if (problem !== null) console.error(`waypost: ${problem}`);
  }
};
