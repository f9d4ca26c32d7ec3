/**
 * A real `redis-server` for tests: whether it is installed, and a child process on a free port.
 * No dependency on the hub, so the Redis backplane's tests can use it alone.
 * @module
 */
import { waitFor } from "./events.ts";

/** A free TCP port on 127.0.0.1 (free when asked; another process could take it after). */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

/**
 * Why Redis tests cannot run here, or undefined when `redis-server` is installed. Tests that
 * need it are registered as ignored with this reason in their name.
 */
export async function redisMissing(): Promise<string | undefined> {
  try {
    const out = await new Deno.Command("redis-server", { args: ["--version"], stdout: "null" })
      .output();
    return out.success ? undefined : "redis-server --version failed";
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
    return "redis-server is not installed (.ci/run installs it with apt-get)";
  }
}

/** A `redis-server` child without persistence, for backplane tests. */
export interface RedisServer {
  port: number;
  /** `redis://127.0.0.1:PORT` */
  url: string;
  /** The server's process id while it runs. */
  pid(): number | undefined;
  /** Kill it at once (SIGKILL), as a crash would. */
  kill(): Promise<void>;
  /** Start it again on the same port, empty. */
  restart(): Promise<void>;
}

/** Whether something on `port` answers a Redis PING. */
async function answersPing(port: number): Promise<boolean> {
  let conn: Deno.TcpConn;
  try {
    conn = await Deno.connect({ hostname: "127.0.0.1", port });
  } catch (err) {
    if (err instanceof Deno.errors.ConnectionRefused) return false;
    throw err;
  }
  try {
    await conn.write(new TextEncoder().encode("PING\r\n"));
    const buf = new Uint8Array(64);
    const n = await conn.read(buf);
    return n !== null && /^(\+PONG|-NOAUTH)/.test(new TextDecoder().decode(buf.subarray(0, n)));
  } catch (err) {
    if (err instanceof Deno.errors.ConnectionReset) return false;
    throw err;
  } finally {
    conn.close();
  }
}

/**
 * Start `redis-server` on a free port (or `port`), with extra `args` (e.g. `--requirepass`), and
 * wait until it answers PING (a `-NOAUTH` answer counts: it is up).
 */
export async function startRedis(port = freePort(), args: string[] = []): Promise<RedisServer> {
  let child: Deno.ChildProcess | undefined;
  const start = async () => {
    child = new Deno.Command("redis-server", {
      args: [
        ...["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        ...args,
      ],
      stdout: "null",
      stderr: "null",
    }).spawn();
    await waitFor(() => answersPing(port), `redis-server on port ${port}`);
  };
  const kill = async () => {
    if (!child) return;
    child.kill("SIGKILL");
    await child.status;
    child = undefined;
  };
  await start();
  return { port, url: `redis://127.0.0.1:${port}`, pid: () => child?.pid, kill, restart: start };
}
