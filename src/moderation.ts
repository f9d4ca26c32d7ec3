/**
 * The moderation hook (`--publish-hook-url`): every chat message is POSTed to the application,
 * signed, before it is stored or delivered, and the application allows it, replaces its text or
 * rejects it. The hub hands each message to a {@link Moderation} and acts on the
 * {@link Verdict} it gets back.
 *
 * A room's messages keep their order: each room has a line of messages waiting for verdicts,
 * up to {@link PIPELINE_DEPTH} of them asked at once, and verdicts are handed out in the order
 * the messages arrived, whatever order the answers come in. Rooms do not wait for each other.
 * A line holds at most `--publish-hook-queue` messages; more are refused at once, so a slow
 * application cannot grow chorus' memory. An application that fails or does not answer in time
 * gets `--publish-hook-failure`: the message is refused (`closed`) or allowed as it is (`open`).
 * `docs/hooks.md` is the prose twin of this file.
 * @module
 */
import type { HookFailure } from "./config.ts";
import { type HookAnswer, HookError, type HookRequest, postSigned } from "./hook_client.ts";
import type { Logger } from "./log.ts";
import { C } from "./metrics.ts";
import { MAX_TEXT_LENGTH, type MemberInfo, type ProtocolError, protocolError } from "./protocol.ts";
import { TokenBucket } from "./ratelimit.ts";

/** Requests about one room's messages in flight at once; the room's next ones wait their turn. */
export const PIPELINE_DEPTH = 8;

/** Longest rejection reason passed on to the sender; a longer one is cut to this. */
export const MAX_REASON_LENGTH = 256;

/** The reason a sender is told when the application rejects a message without giving one. */
export const DEFAULT_REJECT_REASON = "rejected by moderation";

/** Warn lines about a failing hook per second; the rest are counted into the next line. */
const WARNS_PER_SECOND = 1;

/**
 * What becomes of one message: the text to publish (the sender's own, or the application's
 * replacement), or the `error` its sender is told (`rejected`, `hook_unavailable`).
 */
export type Verdict = string | ProtocolError;

/** The application's answer, once validated. */
export type Decision =
  | { action: "allow" }
  | { action: "replace"; text: string }
  | { action: "reject"; reason: string };

/**
 * Validate the application's answer to a request about `text`. Untrusted input stops here:
 * anything but `200` with one of the three actions, well formed, is a failed request, and the
 * string returned says why (for the log). A replacement may be as long as a chat message may
 * be ({@link MAX_TEXT_LENGTH}) or as the message it replaces, whichever is longer, so it can
 * never make a message longer than its sender could have. A reason is cut to
 * {@link MAX_REASON_LENGTH}.
 */
export function parseDecision(answer: HookAnswer, text: string): Decision | string {
  if (answer.status !== 200) return `status ${answer.status}`;
  const body = answer.body;
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    return "the answer is not a JSON object";
  }
  const fields = body as Record<string, unknown>;
  switch (fields.action) {
    case "allow":
      return { action: "allow" };
    case "replace": {
      if (typeof fields.text !== "string") return `"replace" without a string "text"`;
      const max = Math.max(MAX_TEXT_LENGTH, text.length);
      if (fields.text.length > max) return `replacement text over ${max} characters`;
      return { action: "replace", text: fields.text };
    }
    case "reject": {
      if (fields.reason === undefined) return { action: "reject", reason: DEFAULT_REJECT_REASON };
      if (typeof fields.reason !== "string") return `"reject" with a "reason" that is no string`;
      return { action: "reject", reason: cut(fields.reason, MAX_REASON_LENGTH) };
    }
    default:
      return `"action" must be "allow", "replace" or "reject"`;
  }
}

/** `s` cut to at most `max` UTF-16 code units, never between the two halves of a pair. */
function cut(s: string, max: number): string {
  if (s.length <= max) return s;
  const end = /[\uD800-\uDBFF]/.test(s[max - 1]!) ? max - 1 : max;
  return s.slice(0, end);
}

/** What a {@link Moderation} is built from; all but the last three come from `Config`. */
export interface ModerationOptions {
  /** `--publish-hook-url`. */
  url: string;
  /** The signing key of `--webhook-secret` (see {@link HookRequest.key}). */
  key: HookRequest["key"];
  /** `--publish-hook-timeout`, in ms. */
  timeoutMs: number;
  /** `--publish-hook-failure`. */
  failure: HookFailure;
  /** `--publish-hook-queue`: messages of one room that may wait for their verdicts. */
  queue: number;
  /** The hub's counters row, for the verdicts. */
  row: Float64Array;
  log: Logger;
  /** Sends one request; {@link postSigned} unless a test stands in for the application. */
  post?: (request: HookRequest) => Promise<HookAnswer>;
  /** Clock of the warn limit, in ms; injectable for tests. */
  now?: () => number;
}

/** One message waiting for its verdict. */
interface Waiting {
  readonly room: string;
  readonly text: string;
  readonly body: string;
  readonly settle: (verdict: Verdict) => void;
  verdict: Verdict | undefined;
}

/** The messages of one room waiting for verdicts: all of them, and those not asked about yet. */
interface Line {
  readonly all: Fifo<Waiting>;
  readonly unasked: Fifo<Waiting>;
  inFlight: number;
}

/** The moderation hook of one hub: a line of waiting messages per room. */
export class Moderation {
  readonly #options: ModerationOptions;
  readonly #post: (request: HookRequest) => Promise<HookAnswer>;
  readonly #lines = new Map<string, Line>();
  readonly #warns: TokenBucket;
  /** Warn lines not written since the last one. */
  #skipped = 0;
  #closed = false;

  constructor(options: ModerationOptions) {
    this.#options = options;
    this.#post = options.post ?? postSigned;
    this.#warns = new TokenBucket(WARNS_PER_SECOND, WARNS_PER_SECOND, options.now);
  }

  /** Messages of `room` waiting for their verdicts. */
  waiting(room: string): number {
    return this.#lines.get(room)?.all.size ?? 0;
  }

  /**
   * Ask the application about `text`, sent to `room` by `from`; `settle` hears the verdict
   * once, after the verdicts of every earlier message of the room. A room whose line is full
   * (or a hook that is closed) is refused at once, before this returns.
   */
  check(room: string, from: MemberInfo, text: string, settle: (verdict: Verdict) => void): void {
    if (this.#closed) {
      return settle(protocolError("hook_unavailable", "the server is shutting down"));
    }
    let line = this.#lines.get(room);
    if (line === undefined) {
      line = { all: new Fifo(), unasked: new Fifo(), inFlight: 0 };
      this.#lines.set(room, line);
    }
    const queue = this.#options.queue;
    if (line.all.size >= queue) {
      this.#options.row[C.publishUnavailable]!++;
      this.#warn("moderation queue full", { room, queue });
      const message = `the room's moderation queue is full (--publish-hook-queue ${queue})`;
      return settle(protocolError("hook_unavailable", message));
    }
    const body = JSON.stringify({ room, from: { id: from.id, name: from.name }, text });
    const waiting: Waiting = { room, text, body, settle, verdict: undefined };
    line.all.push(waiting);
    line.unasked.push(waiting);
    this.#ask(line);
  }

  /**
   * Stop: every message still waiting is refused with `hook_unavailable` (its sender is
   * leaving), answers that come later are ignored, and new messages are refused.
   */
  close(): void {
    this.#closed = true;
    const lines = [...this.#lines.values()];
    this.#lines.clear();
    for (const line of lines) {
      for (let w = line.all.shift(); w !== undefined; w = line.all.shift()) {
        w.settle(protocolError("hook_unavailable", "the server is shutting down"));
      }
    }
  }

  /** Send the line's next requests, up to {@link PIPELINE_DEPTH} in flight. */
  #ask(line: Line): void {
    while (line.inFlight < PIPELINE_DEPTH) {
      const waiting = line.unasked.shift();
      if (waiting === undefined) return;
      line.inFlight++;
      const { url, key, timeoutMs } = this.#options;
      this.#post({ url, key, body: waiting.body, timeoutMs }).then(
        (answer) => this.#answered(line, waiting, answer),
        (err) => this.#failed(line, waiting, err),
      );
    }
  }

  /** The application answered about one message. */
  #answered(line: Line, waiting: Waiting, answer: HookAnswer): void {
    if (this.#closed) return;
    const decision = parseDecision(answer, waiting.text);
    const row = this.#options.row;
    if (typeof decision === "string") {
      return this.#decided(line, waiting, this.#unavailable(waiting, "malformed", decision));
    }
    switch (decision.action) {
      case "allow":
        row[C.publishAllowed]!++;
        return this.#decided(line, waiting, waiting.text);
      case "replace":
        row[C.publishReplaced]!++;
        return this.#decided(line, waiting, decision.text);
      case "reject":
        row[C.publishRejected]!++;
        return this.#decided(line, waiting, protocolError("rejected", decision.reason));
    }
  }

  /** No answer about one message: a timeout, a network error, an answer too large. */
  #failed(line: Line, waiting: Waiting, err: unknown): void {
    if (this.#closed) return;
    if (!(err instanceof HookError)) {
      // Not a failure of the application's: say so louder than a warn, and go on.
      this.#options.log.error("moderation hook request failed unexpectedly", {
        room: waiting.room,
        error: String(err),
      });
    }
    const kind = err instanceof HookError ? err.kind : "error";
    const detail = err instanceof Error ? err.message : String(err);
    this.#decided(line, waiting, this.#unavailable(waiting, kind, detail));
  }

  /** Count and log a failed request, and say what `--publish-hook-failure` makes of it. */
  #unavailable(waiting: Waiting, kind: string, detail: string): Verdict {
    this.#options.row[C.publishUnavailable]!++;
    const failure = this.#options.failure;
    this.#warn("moderation hook failed", { room: waiting.room, kind, detail, failure });
    return failure === "open"
      ? waiting.text
      : protocolError("hook_unavailable", "the moderation hook did not answer; message not sent");
  }

  /** One message has its verdict: hand out every verdict at the head of its line, in order. */
  #decided(line: Line, waiting: Waiting, verdict: Verdict): void {
    waiting.verdict = verdict;
    line.inFlight--;
    for (let head = line.all.peek(); head?.verdict !== undefined; head = line.all.peek()) {
      line.all.shift();
      head.settle(head.verdict);
    }
    if (line.all.size > 0) this.#ask(line);
    else if (this.#lines.get(waiting.room) === line) this.#lines.delete(waiting.room);
  }

  /** A warn line, unless one was written within the last second (then it is counted). */
  #warn(msg: string, fields: Record<string, string | number>): void {
    if (!this.#warns.take()) {
      this.#skipped++;
      return;
    }
    const skipped = this.#skipped;
    this.#skipped = 0;
    this.#options.log.warn(msg, skipped > 0 ? { ...fields, skipped } : fields);
  }
}

/** A first-in first-out queue whose `shift` does not move the rest (a line may be long). */
class Fifo<T> {
  #items: (T | undefined)[] = [];
  #head = 0;

  get size(): number {
    return this.#items.length - this.#head;
  }

  push(item: T): void {
    this.#items.push(item);
  }

  peek(): T | undefined {
    return this.#items[this.#head];
  }

  shift(): T | undefined {
    if (this.#head === this.#items.length) return undefined;
    const item = this.#items[this.#head];
    this.#items[this.#head++] = undefined;
    if (this.#head === this.#items.length) {
      this.#items = [];
      this.#head = 0;
    } else if (this.#head >= 1024 && this.#head * 2 >= this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
    return item;
  }
}
