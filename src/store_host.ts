/**
 * The stream store of `--workers`: the main thread owns the one {@link LocalStream} and serves
 * it to every worker over a `MessagePort` of its own, so that every room has one sequencer and
 * one order on every worker. A worker's hub sees it as a {@link RemoteStream}.
 *
 * Why the order holds: the host hears the store's frames in one serial sequence (its
 * subscriber), puts each into every attached port's queue at once, and a port delivers in
 * order; so every worker hears every room's frames in the same order. A read's answer goes
 * into the same queue as the frames, after every frame stored before the read: the head it
 * reports never runs behind the frames the worker already has, which a hub's tail relies on.
 *
 * The wire, one array of messages per post ({@link ToHost}, {@link FromHost}): a worker posts
 * `append`, `read` and `close`; the host answers `page`, `done` and `closed` to the asking port
 * only, and sends `frame` to every port. Posts are batched per turn of the event loop on both
 * sides (see `docs/performance.md` for what that buys).
 * @module
 */
import type { Logger } from "./log.ts";
import { C } from "./metrics.ts";
import type { Appended, Frame, Receive, StreamPage, StreamQuery, StreamStore } from "./store.ts";

/** What a worker posts to the host. `id` is set on an append only when it wants `done`. */
export type ToHost =
  | { t: "append"; room: string; frame: Frame; id?: number }
  | { t: "read"; id: number; room: string; query: StreamQuery }
  /** The worker lets go: the host stores what is pending, answers `closed` and detaches. */
  | { t: "close" };

/** What the host posts to a worker. */
export type FromHost =
  /** A stored frame of any room, to every worker, in the store's one order. */
  | { t: "frame"; room: string; epoch: string; frame: Frame }
  | { t: "done"; id: number; result: Appended }
  /** A read's answer, or the message of the error it failed with. */
  | { t: "page"; id: number; page?: StreamPage; error?: string }
  | { t: "closed" };

/** A store the host can serve: reads answered at once (so in order), and a way to flush. */
export type HostedStore = Omit<StreamStore, "read"> & {
  read(room: string, query: StreamQuery): StreamPage;
  /** Store and hand out everything appended so far (see {@link LocalStream.flush}). */
  flush(): void;
};

/** Whether to post each message on its own instead of once per turn; only to measure it. */
export interface PostOptions {
  batch?: boolean;
}

/**
 * Messages for one port, posted together at the end of the turn: a worker hears one batch of
 * the store (one write, often hundreds of frames) in one post rather than one each.
 */
class PortQueue<T> {
  #queue: T[] = [];
  #scheduled = false;
  readonly #batch: boolean;

  constructor(readonly port: MessagePort, options: PostOptions) {
    this.#batch = options.batch ?? true;
  }

  push(message: T): void {
    this.#queue.push(message);
    if (!this.#batch) return this.send();
    if (this.#scheduled) return;
    this.#scheduled = true;
    queueMicrotask(() => this.send());
  }

  /** Post what is queued now. */
  send(): void {
    this.#scheduled = false;
    if (this.#queue.length === 0) return;
    const queue = this.#queue;
    this.#queue = [];
    this.port.postMessage(queue);
  }

  /** Forget what is queued: the other end is gone. */
  drop(): void {
    this.#queue = [];
  }
}

/** The main thread's side: one local stream, served to every attached worker's port. */
export class StoreHost {
  readonly #store: HostedStore;
  readonly #log: Logger;
  readonly #row: Float64Array;
  readonly #options: PostOptions;
  readonly #ports = new Map<MessagePort, PortQueue<FromHost>>();
  #closed = false;

  /**
   * `row` is the host's own row in the metrics table: appends the store refuses are counted
   * there, as `openStore` counts the store's write errors.
   */
  constructor(store: HostedStore, log: Logger, row: Float64Array, options: PostOptions = {}) {
    this.#store = store;
    this.#log = log;
    this.#row = row;
    this.#options = options;
    store.listen((room, epoch, frame) => {
      const message: FromHost = { t: "frame", room, epoch, frame };
      for (const out of this.#ports.values()) out.push(message);
    });
  }

  /**
   * Serve a worker on `port` (the main thread's end of its channel): from now on it hears
   * every stored frame. Attach before the worker starts, so it misses nothing once it reads.
   */
  attach(port: MessagePort): void {
    if (this.#closed) throw new Error("attach to a closed store host");
    const out = new PortQueue<FromHost>(port, this.#options);
    this.#ports.set(port, out);
    port.onmessage = (e: MessageEvent<ToHost[]>) => {
      for (const m of e.data) this.#handle(out, m);
    };
  }

  /**
   * Stop serving a port: its worker closed its store, crashed or was terminated. What it
   * appended is still stored and heard by the others. A port not attached is ignored.
   */
  detach(port: MessagePort): void {
    const out = this.#ports.get(port);
    if (out === undefined) return;
    this.#ports.delete(port);
    out.drop();
    port.onmessage = null;
    port.close();
  }

  /** Store what is pending and close the store; call once every worker stopped. */
  close(): void | Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const port of [...this.#ports.keys()]) this.detach(port);
    return this.#store.close();
  }

  #handle(out: PortQueue<FromHost>, m: ToHost): void {
    if (!this.#ports.has(out.port)) return;
    switch (m.t) {
      case "append":
        return this.#append(out, m.room, m.frame, m.id);
      case "read":
        return this.#read(out, m.id, m.room, m.query);
      case "close":
        // Its appends are in the store's pending batch: store them and send their dones and
        // frames first, so its hub's shutdown never waits for a `done` that cannot come.
        this.#store.flush();
        out.push({ t: "closed" });
        out.send();
        return this.detach(out.port);
    }
  }

  #append(out: PortQueue<FromHost>, room: string, frame: Frame, id: number | undefined): void {
    const done = id === undefined ? undefined : (result: Appended) => {
      if (this.#ports.has(out.port)) out.push({ t: "done", id, result });
    };
    try {
      this.#store.append(room, frame, done);
    } catch (err) {
      if (!(err instanceof Error)) throw err;
      // The store could not even number it (its room could not be read back): deliver it
      // unnumbered, like a message whose write failed, rather than lose it.
      this.#row[C.storeErrors]!++;
      if (!(frame instanceof Uint8Array)) this.#row[C.unstored]!++;
      this.#log.error("store append failed; message goes out unstored", {
        room,
        error: err.message.split("\n")[0],
      });
      if (!(frame instanceof Uint8Array)) delete frame.offset;
      done?.(null);
      const message: FromHost = { t: "frame", room, epoch: "", frame };
      for (const o of this.#ports.values()) o.push(message);
    }
  }

  #read(out: PortQueue<FromHost>, id: number, room: string, query: StreamQuery): void {
    let page: StreamPage;
    try {
      page = this.#store.read(room, query);
    } catch (err) {
      if (!(err instanceof Error)) throw err;
      const error = err.message.split("\n")[0]!;
      this.#log.warn("store read failed", { room, error });
      return out.push({ t: "page", id, error });
    }
    out.push({ t: "page", id, page });
  }
}

/**
 * How long {@link RemoteStream.close} waits for the host's `closed`; the host is the main
 * thread, which answers at once unless it is itself stopping.
 */
export const CLOSE_TIMEOUT_MS = 2_000;

/**
 * A worker's store: the main thread's {@link StoreHost} over a `MessagePort`. Appends are
 * numbered and stored there; every room's stored frames come back in the one order.
 */
export class RemoteStream implements StreamStore {
  readonly #out: PortQueue<ToHost>;
  readonly #dones = new Map<number, (result: Appended) => void>();
  readonly #reads = new Map<number, { resolve(p: StreamPage): void; reject(e: Error): void }>();
  #nextId = 1;
  #receive: Receive | undefined;
  #acked: (() => void) | undefined;
  #closing: Promise<void> | undefined;

  /** `port` is the worker's end of the channel the host attached the other end of. */
  constructor(port: MessagePort, options: PostOptions = {}) {
    this.#out = new PortQueue<ToHost>(port, options);
    port.onmessage = (e: MessageEvent<FromHost[]>) => {
      for (const m of e.data) this.#handle(m);
    };
  }

  append(room: string, frame: Frame, done?: (result: Appended) => void): void {
    if (this.#closing) throw new Error("append to a closed stream store");
    if (done === undefined) return this.#out.push({ t: "append", room, frame });
    const id = this.#nextId++;
    this.#dones.set(id, done);
    this.#out.push({ t: "append", room, frame, id });
  }

  listen(receive: Receive): void {
    this.#receive = receive;
  }

  read(room: string, query: StreamQuery): Promise<StreamPage> {
    if (this.#closing) return Promise.reject(new Error("read from a closed stream store"));
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#reads.set(id, { resolve, reject });
      this.#out.push({ t: "read", id, room, query });
    });
  }

  /**
   * Send what is queued and wait (at most {@link CLOSE_TIMEOUT_MS}) until the host has stored
   * it and sent the frames and dones it makes; then reads still unanswered fail.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const acked = new Promise<void>((resolve) => this.#acked = resolve);
      const timeout = new Promise<void>((resolve) => timer = setTimeout(resolve, CLOSE_TIMEOUT_MS));
      this.#out.push({ t: "close" });
      this.#out.send();
      await Promise.race([acked, timeout]);
      clearTimeout(timer);
      this.#out.port.onmessage = null;
      this.#out.port.close();
      for (const { reject } of this.#reads.values()) reject(new Error("stream store closed"));
      this.#reads.clear();
      this.#dones.clear();
    })();
    return this.#closing;
  }

  #handle(m: FromHost): void {
    switch (m.t) {
      case "frame":
        return this.#receive?.(m.room, m.epoch, m.frame);
      case "done": {
        const done = this.#dones.get(m.id);
        this.#dones.delete(m.id);
        return done?.(m.result);
      }
      case "page": {
        const read = this.#reads.get(m.id);
        this.#reads.delete(m.id);
        if (m.page) read?.resolve(m.page);
        else read?.reject(new Error(`store read failed: ${m.error}`));
        return;
      }
      case "closed":
        return this.#acked?.();
    }
  }
}
