/**
 * Logging: the only module that prints. Records are one line each:
 * `time level event key=value ...`.
 *
 * @module
 */

/** Severity levels, least to most severe. */
export const LOG_LEVELS = ["debug", "info", "warn", "error", "silent"] as const;
/** A severity level. */
export type LogLevel = typeof LOG_LEVELS[number];

/** Receives log records. */
export interface Logger {
  /** Records one event with its level and fields. */
  log(level: Exclude<LogLevel, "silent">, event: string, fields?: Record<string, unknown>): void;
}

/** A logger that prints records at `level` or above to stderr. */
export function consoleLogger(level: LogLevel = "warn"): Logger {
  const min = LOG_LEVELS.indexOf(level);
  return {
    log(at, event, fields) {
      if (LOG_LEVELS.indexOf(at) < min) return;
      let line = `${new Date().toISOString()} ${at} ${event}`;
      if (fields) {
        for (const [k, v] of Object.entries(fields)) {
          if (v !== undefined) line += ` ${k}=${typeof v === "string" && /\s/.test(v) ? JSON.stringify(v) : v}`;
        }
      }
      console.error(line);
    },
  };
}

/** A logger that drops everything. */
export const silentLogger: Logger = { log() {} };
