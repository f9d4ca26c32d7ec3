/**
 * A plain HTTP client of chorus' event streams for tests: `fetch` with a streaming body reader
 * that parses SSE messages into an awaitable queue, can stop reading (a stalled reader), and
 * POSTs events with the stream's session.
 * @module
 */
import { type Event, Inbox, within } from "./helpers.ts";

/** One SSE message as received: its fields, or a comment. */
export interface SseMessage {
  event?: string;
  id?: string;
  data?: string;
  comment?: string;
}

/** An open event stream and the messages it has delivered. */
export class SseStream {
  readonly messages = new Inbox<SseMessage>();
  readonly response: Response;
  /** Resolves once the body has ended (or failed), with how it ended. */
  readonly ended: Promise<"end" | "error">;
  #reader: ReadableStreamDefaultReader<string>;
  #paused: PromiseWithResolvers<void> | undefined;

  private constructor(response: Response, refusal?: Response) {
    this.response = refusal ?? response;
    this.#reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
    this.ended = this.#pump();
  }

  /**
   * Open `url` as an event stream; the response is not checked (refusals are tests too). The
   * body of a refusal (any status but 200) is left unread, for `response.json()`.
   */
  static async open(url: string, headers: Record<string, string> = {}): Promise<SseStream> {
    const res = await fetch(url, { headers: { accept: "text/event-stream", ...headers } });
    if (res.status !== 200) return new SseStream(new Response(""), res);
    return new SseStream(res);
  }

  /** The next message that is not a comment. */
  async next(label = "an SSE message"): Promise<SseMessage> {
    for (;;) {
      const m = await this.messages.next(label);
      if (m.comment === undefined) return m;
    }
  }

  /** The next `chorus.v1` event (a message without `event:`), parsed, with its SSE `id`. */
  async event(type?: string): Promise<Event & { sseId?: string }> {
    const m = await this.next(type ? `a "${type}" event` : "an event");
    if (m.event !== undefined) throw new Error(`expected a chorus.v1 event, got ${m.event}`);
    const e = JSON.parse(m.data!);
    if (type && e.type !== type) throw new Error(`expected "${type}", got ${m.data}`);
    return m.id === undefined ? e : { ...e, sseId: m.id };
  }

  /** Skip events until one of `type`. */
  async until(type: string): Promise<Event & { sseId?: string }> {
    for (;;) {
      const m = await this.next(`a "${type}" event`);
      if (m.event !== undefined) throw new Error(`stream ended with ${m.event} ${m.data}`);
      const e = JSON.parse(m.data!);
      if (e.type === type) return m.id === undefined ? e : { ...e, sseId: m.id };
    }
  }

  /** Skip everything until the `close` event, and return its code and reason. */
  async closeEvent(): Promise<{ code: number; reason: string }> {
    for (;;) {
      const m = await this.next("the close event");
      if (m.event === "close") return JSON.parse(m.data!);
    }
  }

  /** Stop reading the body (the bytes pile up in the server), until {@link resume}. */
  pause(): void {
    this.#paused ??= Promise.withResolvers();
  }

  resume(): void {
    this.#paused?.resolve();
    this.#paused = undefined;
  }

  /** Hang up: the server sees the stream cancelled. */
  async cancel(): Promise<void> {
    this.resume();
    await this.#reader.cancel().catch(() => {});
    await within(this.ended, "the stream to end");
  }

  async #pump(): Promise<"end" | "error"> {
    let buffer = "";
    try {
      for (;;) {
        if (this.#paused) await this.#paused.promise;
        const { value, done } = await this.#reader.read();
        if (done) return "end";
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) !== -1) {
          this.messages.push(parse(buffer.slice(0, end)));
          buffer = buffer.slice(end + 2);
        }
      }
    } catch (err) {
      if (err instanceof Error && /cancel|abort|error|closed/i.test(err.message)) return "error";
      throw err;
    }
  }
}

function parse(block: string): SseMessage {
  const m: SseMessage = {};
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) m.comment = line.slice(1).trim();
    else {
      const colon = line.indexOf(":");
      const field = line.slice(0, colon);
      const value = line.slice(colon + 1).replace(/^ /, "");
      if (field === "event" || field === "id" || field === "data") m[field] = value;
    }
  }
  return m;
}

/** Open a stream to `url`, check it started, and read its `welcome`. */
export async function sseMember(
  url: string,
  headers: Record<string, string> = {},
): Promise<{ stream: SseStream; welcome: Event }> {
  const stream = await SseStream.open(url, headers);
  if (stream.response.status !== 200) {
    throw new Error(`stream ${url}: ${stream.response.status} ${await stream.response.text()}`);
  }
  return { stream, welcome: await stream.event("welcome") };
}

/** POST `body` to `url` as the member of `session`; returns the status and the JSON answer. */
export async function post(
  url: string,
  session: string | undefined,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: Event; headers: Headers }> {
  const res = await fetch(url, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      ...(session === undefined ? {} : { authorization: `Bearer ${session}` }),
      ...headers,
    },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  return { status: res.status, body: await res.json(), headers: res.headers };
}
