/**
 * A real HTTP server standing in for the application behind chorus: it receives the signed
 * requests of webhooks and hooks on port 0, answers them as a test says, and hands each one to
 * the test as an event (never slept for).
 * @module
 */
import { signingKey, verify } from "../src/signing.ts";
import { Inbox } from "./events.ts";

/** One request the receiver got, as it came over the wire. */
export interface Received {
  path: string;
  headers: Headers;
  /** The raw body text, which is what is signed. */
  text: string;
  // deno-lint-ignore no-explicit-any
  body: any;
}

/** How the receiver answers a request: a Response, or one built from status and JSON. */
export type Answer = (req: Received) => Response | Promise<Response>;

/** A running receiver. */
export interface Receiver {
  /** `http://127.0.0.1:PORT` + path */
  url(path?: string): string;
  /** Every request, in arrival order. */
  requests: Inbox<Received>;
  /** How many requests came so far. */
  count: number;
  /** Change how the next requests are answered. */
  answer: Answer;
  close(): Promise<void>;
}

/** `200 {"ok":true}`, the answer of a receiver that accepts everything. */
export const ok: Answer = () => Response.json({ ok: true });

/** Start a receiver on a free port answering with `answer` (200 by default). */
export function startReceiver(answer: Answer = ok): Receiver {
  const requests = new Inbox<Received>();
  const receiver: Receiver = {
    url: (path = "/hook") => `http://127.0.0.1:${server.addr.port}${path}`,
    requests,
    count: 0,
    answer,
    close: async () => {
      await server.shutdown();
    },
  };
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, async (req) => {
    const text = await req.text();
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch (err) {
      if (!(err instanceof SyntaxError)) throw err;
      body = undefined;
    }
    const received = { path: new URL(req.url).pathname, headers: req.headers, text, body };
    receiver.count++;
    requests.push(received);
    return await receiver.answer(received);
  });
  return receiver;
}

/** Whether a received request carries a valid signature for `secret`, by the documented recipe. */
export async function signedWith(req: Received, secret: string): Promise<boolean> {
  const ts = req.headers.get("x-chorus-timestamp") ?? "";
  const signature = req.headers.get("x-chorus-signature") ?? "";
  return verify(await signingKey(secret), ts, req.text, signature);
}
