/**
 * The harness of the abuse tests (`abuse_*_test.ts`): the server keeps serving healthy clients
 * while others send it bad input.
 *
 * Every bad-input test runs while {@link steadyTraffic} keeps a publisher and a subscriber busy
 * in the same room; at the end the subscriber must have received every `seq:N` in order, with
 * an end marker proving nothing else arrived unseen, and the hub and `/healthz` counts must be
 * back where they started. Where the protocol has to be broken on purpose, the clients are raw
 * TCP sockets with hand-made frames (`./wire.ts`). Nothing here sleeps to synchronise: tests
 * await events, or poll a condition with `waitFor`.
 * @module
 */
import assert from "node:assert/strict";
import type { Config } from "../src/config.ts";
import {
  type Client,
  EVENT_TIMEOUT_MS,
  rawClient,
  startServer,
  type TestServer,
  waitFor,
  within,
} from "./helpers.ts";
import { closeLeftoverRaw } from "./wire.ts";

export const MiB = 1024 * 1024;

/**
 * A production-built server for these tests. The steady publisher sends far faster than the
 * default 50 messages/s, so rate limiting is off unless a test turns it on (it has its own test).
 */
export function serve(overrides: Partial<Config> = {}): TestServer {
  const server = startServer({ rateLimit: 0, ...overrides });
  return {
    ...server,
    async close() {
      for (const traffic of liveTraffic) await traffic.abort();
      await server.close();
      await closeLeftoverRaw();
    },
  };
}

/** Traffic not finished yet, so a failed test's server close can stop its publisher. */
const liveTraffic = new Set<Traffic>();

/** The `/healthz` counts, read over HTTP. */
async function health(server: TestServer): Promise<{ connections: number; rooms: number }> {
  return await (await fetch(`${server.origin}/healthz`)).json();
}

/** One sample of `/metrics`, e.g. `chorus_disconnects_total{reason="idle"}`. */
export async function metric(server: TestServer, sample: string): Promise<number> {
  return sampleOf(await (await fetch(`${server.origin}/metrics`)).text(), sample);
}

/** The same sample read in-process, for polling and for a server that stopped listening. */
export function counter(server: TestServer, sample: string): number {
  return sampleOf(server.hub.metrics.render(server.hub.rooms), sample);
}

/** The value of `sample` in a Prometheus exposition; fails if it is missing. */
function sampleOf(exposition: string, sample: string): number {
  const line = exposition.split("\n").find((l) => l.startsWith(sample + " "));
  assert.ok(line, `${sample} is in /metrics`);
  return Number(line.slice(sample.length + 1));
}

export const disconnects = (reason: string) => `chorus_disconnects_total{reason="${reason}"}`;
export const refusals = (reason: string) => `chorus_upgrades_refused_total{reason="${reason}"}`;

/** Wait until the hub holds `expected` connections, then check `/healthz` agrees. */
export async function assertCounts(
  server: TestServer,
  expected: number,
  rooms?: number,
): Promise<void> {
  await waitFor(
    () => server.hub.connections === expected,
    `hub.connections === ${expected} (is ${server.hub.connections})`,
  );
  const h = await health(server);
  assert.equal(h.connections, expected, "/healthz connections");
  if (rooms !== undefined) {
    assert.equal(server.hub.rooms, rooms, "hub.rooms");
    assert.equal(h.rooms, rooms, "/healthz rooms");
  }
}

/** Every connection gone: hub, rooms and `/healthz` all at zero. */
export function assertDrained(server: TestServer): Promise<void> {
  return assertCounts(server, 0, 0);
}

/** A publisher and a subscriber in one room, proving nobody healthy is disturbed. */
export interface Traffic {
  readonly publisher: Client;
  readonly subscriber: Client;
  /** Frames the subscriber got that are not the publisher's `seq:N`, in arrival order. */
  readonly others: (string | ArrayBuffer)[];
  /** `seq:N` messages the subscriber has received so far. */
  readonly delivered: number;
  /** Resolve once the subscriber has `n` more messages than now: traffic is still flowing. */
  advance(n: number): Promise<void>;
  /**
   * Stop publishing, send a final marker, await it at the subscriber and assert it received
   * `seq:0` to `seq:N-1` in order with no gap; then close both clients (unless `keepOpen`).
   */
  finish(options?: { keepOpen?: boolean }): Promise<number>;
  /** Stop publishing without checking anything (cleanup after a failure). */
  abort(): Promise<void>;
}

/**
 * Start a steady publisher and a healthy subscriber (both Deno WebSocket clients in raw mode) in
 * `room`. The publisher sends `burst` messages `seq:N[:padding]`, waits until the subscriber has
 * them, waits `intervalMs` more (pacing only), and repeats until {@link Traffic.finish}.
 */
export async function steadyTraffic(
  server: TestServer,
  room: string,
  { payloadBytes = 0, burst = 1, intervalMs = 2 } = {},
): Promise<Traffic> {
  const before = server.hub.membersOf(room).length;
  const subscriber = await rawClient(server.ws(room));
  const publisher = await rawClient(server.ws(room));
  publisher.socket.onmessage = () => {}; // its own echoes are not the point
  await waitFor(() => server.hub.membersOf(room).length === before + 2, `traffic in ${room}`);

  const pad = payloadBytes > 0 ? ":" + "x".repeat(payloadBytes) : "";
  const others: (string | ArrayBuffer)[] = [];
  const disorder: string[] = [];
  const ended = Promise.withResolvers<string>();
  let count = 0;
  let expected = 0;
  const waiters = new Set<{ at: number; resolve: () => void }>();
  subscriber.socket.onmessage = (e: MessageEvent<string | ArrayBuffer>) => {
    const data = e.data;
    if (typeof data === "string" && data.startsWith("seq:")) {
      const colon = data.indexOf(":", 4);
      const n = Number(data.slice(4, colon === -1 ? undefined : colon));
      if (n !== expected && disorder.length < 10) disorder.push(`got seq:${n}, wanted ${expected}`);
      expected = n + 1;
      count++;
      for (const w of waiters) if (count >= w.at) w.resolve();
    } else if (typeof data === "string" && data.startsWith("end:")) {
      ended.resolve(data);
    } else {
      others.push(data);
    }
  };
  const reached = (at: number, label: string): Promise<void> => {
    if (count >= at) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const w = {
        at,
        resolve: () => {
          clearTimeout(timer);
          waiters.delete(w);
          resolve();
        },
      };
      const timer = setTimeout(() => {
        waiters.delete(w);
        reject(new Error(`timed out: subscriber has ${count} messages, waiting for ${label}`));
      }, EVENT_TIMEOUT_MS);
      waiters.add(w);
    });
  };

  let sent = 0;
  let stopped = false;
  let failure: unknown;
  const loop = (async () => {
    while (!stopped) {
      for (let i = 0; i < burst; i++) publisher.send(`seq:${sent++}${pad}`);
      const pacing = intervalMs > 0 ? new Promise((r) => setTimeout(r, intervalMs)) : undefined;
      await Promise.all([reached(sent, `seq:${sent - 1}`), pacing]);
    }
  })().catch((err) => failure = err);

  const traffic: Traffic = {
    publisher,
    subscriber,
    others,
    get delivered() {
      return count;
    },
    advance: (n) => reached(count + n, `${n} more messages`),
    async abort() {
      liveTraffic.delete(traffic);
      stopped = true;
      for (const w of waiters) w.resolve();
      await loop;
    },
    async finish({ keepOpen = false } = {}) {
      liveTraffic.delete(traffic);
      stopped = true;
      await loop;
      if (failure) throw failure;
      publisher.send(`end:${sent}`);
      const marker = await within(ended.promise, "the end marker at the subscriber");
      assert.equal(marker, `end:${sent}`);
      assert.deepEqual(disorder, [], "the subscriber got the messages in order, without gaps");
      assert.equal(count, sent, "the subscriber got every message");
      assert.ok(sent > 0, "the publisher sent something");
      if (!keepOpen) {
        await publisher.close();
        await subscriber.close();
      }
      return sent;
    },
  };
  liveTraffic.add(traffic);
  return traffic;
}
