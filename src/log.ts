/**
 * Structured logs to stderr, as text or JSON lines, with a level threshold.
 * @module
 */
import { TokenBucket } from "./ratelimit.ts";

/** Log levels from most to least severe. */
export const LOG_LEVELS = ["error", "warn", "info", "debug"] as const;

/** One of {@link LOG_LEVELS}. */
export type LogLevel = typeof LOG_LEVELS[number];

/** How lines are written: human `text` or one JSON object per line. */
export type LogFormat = "text" | "json";

/** Extra key/value context attached to a log line. */
export type LogFields = Record<string, string | number | boolean | undefined>;

/** What modules log through; they receive one instead of reaching for a global. */
export interface Logger {
  error(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  debug(msg: string, fields?: LogFields): void;
}

/** Options of {@link createLogger}. */
export interface LoggerOptions {
  level: LogLevel;
  format: LogFormat;
  /** Where finished lines go; stderr by default, a buffer in tests. */
  write?: (line: string) => void;
  /** Clock for timestamps. */
  now?: () => number;
  /**
   * Warn lines allowed per second (burst of the same size); the rest are counted and the
   * count is reported on the next line written, so a flood of bad clients cannot fill the disk.
   */
  maxWarnPerSecond?: number;
}

const encoder = new TextEncoder();

function writeStderr(line: string): void {
  Deno.stderr.writeSync(encoder.encode(line + "\n"));
}

/** Build a logger that drops lines below `level` and formats the rest. */
export function createLogger(options: LoggerOptions): Logger {
  const threshold = LOG_LEVELS.indexOf(options.level);
  const write = options.write ?? writeStderr;
  const now = options.now ?? Date.now;
  const warnRate = options.maxWarnPerSecond ?? 20;
  const warnBucket = new TokenBucket(warnRate, warnRate);
  let suppressed = 0;
  const emit = (level: LogLevel, msg: string, fields: LogFields = {}) => {
    if (LOG_LEVELS.indexOf(level) > threshold) return;
    if (level === "warn" && !warnBucket.take()) {
      suppressed++;
      return;
    }
    if (suppressed > 0) {
      fields = { ...fields, suppressed };
      suppressed = 0;
    }
    const time = new Date(now()).toISOString();
    if (options.format === "json") {
      write(JSON.stringify({ time, level, msg, ...fields }));
      return;
    }
    const extra = Object.entries(fields)
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => `${k}=${typeof v === "string" && /[\s"=]/.test(v) ? JSON.stringify(v) : v}`)
      .join(" ");
    write(`${time} ${level.toUpperCase().padEnd(5)} ${msg}${extra ? " " + extra : ""}`);
  };
  return {
    error: (msg, fields) => emit("error", msg, fields),
    warn: (msg, fields) => emit("warn", msg, fields),
    info: (msg, fields) => emit("info", msg, fields),
    debug: (msg, fields) => emit("debug", msg, fields),
  };
}
