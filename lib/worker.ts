/**
 * Entry point of a worker thread for `--workers N`: it runs one more event loop
 * with its own proxy on the same port (`reusePort`, so the kernel spreads new
 * connections over the threads), and stops when the main thread says so.
 *
 * Messages in: `{ type: "start", options, logLevel }`, `{ type: "shutdown", graceMs }`.
 * Messages out: `{ type: "listening" }`, `{ type: "stopped" }`, `{ type: "error", message }`.
 *
 * @module
 */
/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
import { consoleLogger, type LogLevel } from "./log.ts";
import type { ProxyOptions } from "./options.ts";
import { type ProxyHandle, startProxy } from "./server.ts";

let proxy: ProxyHandle | null = null;

self.onmessage = (event: MessageEvent) => {
  const message = event.data as
    | { type: "start"; options: ProxyOptions; logLevel: LogLevel }
    | { type: "shutdown"; graceMs: number };
  if (message.type === "start") {
    try {
      proxy = startProxy({ ...message.options, reusePort: true, logger: consoleLogger(message.logLevel) });
      self.postMessage({ type: "listening" });
    } catch (error) {
      self.postMessage({ type: "error", message: error instanceof Error ? error.message : String(error) });
    }
  } else if (message.type === "shutdown") {
    const stopping = proxy?.shutdown(message.graceMs) ?? Promise.resolve();
    stopping.catch(() => {
      // Stopping failed part-way; the main thread terminates this thread either way.
    }).finally(() => self.postMessage({ type: "stopped" }));
  }
};
