/**
 * The HTTP API over real HTTP and real sockets: 404 without a key, 401 without the right
 * one, every status of `POST /api/publish`, publishing to raw and chat clients and into
 * history, room and member listings, and a publish crossing `--workers`.
 */
import assert from "node:assert/strict";
import {
  chatClient,
  type MainProcess,
  rawClient,
  startMain,
  startServer,
  type TestServer,
  waitFor,
} from "./helpers.ts";

const KEY = "test-api-key-0123456789";

async function withApi(
  fn: (server: TestServer, api: Api) => Promise<void>,
  overrides: Parameters<typeof startServer>[0] = {},
): Promise<void> {
  const server = startServer({ apiKey: KEY, ...overrides });
  try {
    await fn(server, api(server.origin));
  } finally {
    await server.close();
  }
}

/** Requests to one server's API: `call` sends anything, the others carry the key. */
interface Api {
  call(path: string, init?: RequestInit): Promise<Response>;
  publish(
    room: string | null,
    body: BodyInit,
    type?: string,
    params?: Record<string, string>,
  ): Promise<Response>;
  get(path: string): Promise<Response>;
}

function api(origin: string, key = KEY): Api {
  const call = (path: string, init: RequestInit = {}) => fetch(`${origin}${path}`, init);
  const auth = { authorization: `Bearer ${key}` };
  return {
    call,
    publish(room, body, type = "text/plain", params = {}) {
      const query = new URLSearchParams(params);
      if (room !== null) query.set("room", room);
      return call(`/api/publish?${query}`, {
        method: "POST",
        headers: { ...auth, "content-type": type },
        body,
      });
    },
    get: (path) => call(path, { headers: auth }),
  };
}

/** The status and error code of an error response, consuming its body. */
async function failure(res: Response): Promise<[number, string]> {
  assert.equal(res.headers.get("content-type"), "application/json; charset=utf-8");
  return [res.status, (await res.json()).error.code];
}

Deno.test("without --api-key every /api path answers 404, whatever the method or key", async () => {
  const server = startServer();
  try {
    const client = api(server.origin);
    for (const path of ["/api", "/api/", "/api/publish?room=/r", "/api/rooms", "/api/x"]) {
      assert.deepEqual(await failure(await client.get(path)), [404, "not_found"], path);
    }
    const res = await client.publish("/r", "hi");
    assert.deepEqual(await failure(res), [404, "not_found"]);
    const page = await fetch(`${server.origin}/apiary`);
    assert.equal(page.status, 200, "only /api and below belong to the API");
    await page.body?.cancel();
  } finally {
    await server.close();
  }
});

Deno.test("a missing or wrong API key gets 401 with WWW-Authenticate and a warning", async () => {
  await withApi(async (server, client) => {
    const cases: [Record<string, string>, string, string][] = [
      [{}, 'Bearer realm="chorus"', "missing"],
      [{ authorization: `Basic ${btoa(`user:${KEY}`)}` }, 'Bearer realm="chorus"', "missing"],
      [{ authorization: "Bearer" }, 'Bearer realm="chorus"', "missing"],
      [
        { authorization: `Bearer ${KEY.slice(0, -1)}X` },
        'Bearer realm="chorus", error="invalid_token"',
        "wrong",
      ],
      [
        { authorization: `Bearer ${KEY}-and-more` },
        'Bearer realm="chorus", error="invalid_token"',
        "wrong",
      ],
    ];
    for (const [headers, challenge, detail] of cases) {
      for (
        const [method, path] of [["GET", "/api/rooms"], ["POST", "/api/publish?room=/r"]] as const
      ) {
        const before = server.logs.length;
        const res = await client.call(path, {
          method,
          headers,
          body: method === "POST" ? "x" : null,
        });
        assert.deepEqual(await failure(res), [401, "unauthorized"], `${method} ${path} ${detail}`);
        assert.equal(res.headers.get("www-authenticate"), challenge);
        const [warn] = server.logs.slice(before).map((l) => JSON.parse(l));
        assert.deepEqual(
          [warn.level, warn.msg, warn.status, warn.detail],
          ["warn", "api request refused", 401, detail],
        );
        assert.ok(!server.logs.at(-1)!.includes(KEY.slice(0, 10)), "the key is never logged");
      }
    }
    assert.deepEqual(await failure(await client.get("/api/nope")), [404, "not_found"]);
    const lower = await client.call("/api/rooms", { headers: { authorization: `bearer ${KEY}` } });
    assert.equal(lower.status, 200, "the scheme is case-insensitive");
    await lower.body?.cancel();
  });
});

Deno.test("POST /api/publish answers 400, 405, 413 and 415 for bad requests", async () => {
  await withApi(async (_server, client) => {
    assert.deepEqual(await failure(await client.publish(null, "hi")), [400, "bad_request"]);
    assert.deepEqual(await failure(await client.publish("", "hi")), [400, "bad_request"]);
    for (const room of ["lobby", "/a/../b", "//host/x"]) {
      assert.deepEqual(await failure(await client.publish(room, "hi")), [400, "invalid_room"]);
    }
    const badName = await client.publish("/r", "hi", "text/plain", { name: "x".repeat(33) });
    assert.deepEqual(await failure(badName), [400, "invalid_name"]);
    const badUtf8 = await client.publish("/r", new Uint8Array([0x68, 0xff, 0xfe]));
    assert.deepEqual(await failure(badUtf8), [400, "bad_request"]);

    const get = await client.get("/api/publish?room=/r");
    assert.deepEqual(await failure(get), [405, "method_not_allowed"]);
    assert.equal(get.headers.get("allow"), "POST");
    const post = await client.call("/api/rooms", {
      method: "POST",
      headers: { authorization: `Bearer ${KEY}` },
    });
    assert.deepEqual(await failure(post), [405, "method_not_allowed"]);
    assert.equal(post.headers.get("allow"), "GET");

    for (
      const type of ["application/json", "text/html", "text/plain; charset=iso-8859-1", ""]
    ) {
      const res = await client.publish("/r", "{}", type);
      assert.deepEqual(await failure(res), [415, "unsupported_media_type"], type);
    }
  });
});

Deno.test("a body over --max-message-bytes gets 413, declared or streamed; one at the limit passes", async () => {
  await withApi(async (_server, client) => {
    const tooBig = await client.publish("/r", "x".repeat(101));
    assert.deepEqual(await failure(tooBig), [413, "payload_too_large"]);
    const bytes = await client.publish("/r", new Uint8Array(101), "application/octet-stream");
    assert.deepEqual(await failure(bytes), [413, "payload_too_large"]);
    // A chunked body has no Content-Length: the limit holds while reading.
    const chunks = [new Uint8Array(60).fill(0x61), new Uint8Array(60).fill(0x62)];
    const streamed = await client.publish("/r", ReadableStream.from(chunks));
    assert.deepEqual(await failure(streamed), [413, "payload_too_large"]);
    const atLimit = await client.publish("/r", "é".repeat(50)); // 100 bytes of UTF-8
    assert.equal(atLimit.status, 200);
    assert.equal((await atLimit.json()).delivered, 0);
  }, { maxMessageBytes: 100 });
});

Deno.test("published text reaches raw clients as text and chat clients as a message from the publisher", async () => {
  await withApi(async (server, client) => {
    const raw = await rawClient(server.ws("/news"));
    const { client: chat } = await chatClient(server.ws("/news?name=Ada"));
    const { client: elsewhere } = await chatClient(server.ws("/other"));
    await waitFor(() => server.hub.connections === 3, "three connections");

    const res = await client.publish("/news", "breaking: it works", "text/plain; charset=utf-8", {
      name: "newsroom",
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-type"), "application/json; charset=utf-8");
    assert.equal((await res.json()).delivered, 2);
    assert.equal(await raw.text(), "breaking: it works");
    const event = await chat.next("message");
    assert.deepEqual(event.from, { id: "server", name: "newsroom" });
    assert.equal(event.text, "breaking: it works");
    assert.equal(typeof event.id, "string");

    const unnamed = await client.publish("/news", "second");
    assert.equal((await unnamed.json()).delivered, 2);
    assert.deepEqual((await chat.next("message")).from, { id: "server", name: "server" });
    assert.equal(await raw.text(), "second");

    // Published messages enter history: a newcomer sees both, oldest first.
    const { client: late, welcome } = await chatClient(server.ws("/news"));
    assert.deepEqual(welcome.history.map((m: { text: string }) => m.text), [
      "breaking: it works",
      "second",
    ]);
    // Other rooms hear nothing: a marker said there after both publishes is its next event.
    elsewhere.say("marker");
    assert.equal((await elsewhere.next("message")).text, "marker", "other rooms hear nothing");
    await Promise.all([raw.close(), chat.close(), elsewhere.close(), late.close()]);
  });
});

Deno.test("a published octet-stream body reaches raw clients as a binary frame, and chat clients not at all", async () => {
  await withApi(async (server, client) => {
    const raw = await rawClient(server.ws("/bin"));
    const { client: chat } = await chatClient(server.ws("/bin"));
    await waitFor(() => server.hub.connections === 2, "two connections");
    const bytes = new Uint8Array([0, 1, 2, 250, 255]);
    const res = await client.publish("/bin", bytes, "application/octet-stream");
    assert.equal((await res.json()).delivered, 1);
    const frame = await raw.frames.next("a binary frame");
    assert.ok(frame instanceof ArrayBuffer);
    assert.deepEqual(new Uint8Array(frame), bytes);
    // The next thing the chat client hears is the text published after the bytes.
    await (await client.publish("/bin", "then text")).body?.cancel();
    assert.equal((await chat.next("message")).text, "then text");
    assert.equal(await raw.text(), "then text");
    const { client: late, welcome } = await chatClient(server.ws("/bin"));
    assert.deepEqual(welcome.history.map((m: { text: string }) => m.text), ["then text"]);
    await Promise.all([raw.close(), chat.close(), late.close()]);
  });
});

Deno.test("a publish to an empty room delivers to nobody but is kept in its history", async () => {
  await withApi(async (server, client) => {
    const res = await client.publish("/quiet", "anyone?");
    assert.equal((await res.json()).delivered, 0);
    const { client: chat, welcome } = await chatClient(server.ws("/quiet"));
    assert.deepEqual(welcome.history.map((m: { text: string }) => m.text), ["anyone?"]);
    await chat.close();
  });
});

Deno.test("a room given as /café reaches the clients of /caf%C3%A9", async () => {
  await withApi(async (server, client) => {
    const raw = await rawClient(server.ws("/caf%C3%A9"));
    await waitFor(() => server.hub.connections === 1, "one connection");
    const res = await client.publish("/café", "bonjour");
    assert.equal((await res.json()).delivered, 1);
    assert.equal(await raw.text(), "bonjour");
    await raw.close();
  });
});

Deno.test("GET /api/rooms lists rooms with member counts; /api/rooms/members lists the members", async () => {
  await withApi(async (server, client) => {
    assert.deepEqual(await (await client.get("/api/rooms")).json(), { rooms: [] });
    const { client: ada, welcome: wa } = await chatClient(server.ws("/b?name=Ada"));
    const raw = await rawClient(server.ws("/b?name=Rawley"));
    const { client: lin, welcome: wl } = await chatClient(server.ws("/a?name=Lin"));
    await waitFor(() => server.hub.directory().get("/b")?.length === 2, "raw client joined");

    const rooms = await client.get("/api/rooms");
    assert.equal(rooms.status, 200);
    assert.equal(rooms.headers.get("cache-control"), "no-store");
    assert.deepEqual(await rooms.json(), {
      rooms: [{ room: "/a", members: 1 }, { room: "/b", members: 2 }],
    });

    const members = await (await client.get("/api/rooms/members?room=/b")).json();
    assert.equal(members.room, "/b");
    const rawId = members.members.find((m: { mode: string }) => m.mode === "raw").id;
    assert.deepEqual(members.members, [
      { id: wa.id, name: "Ada", mode: "chat" },
      { id: rawId, name: "Rawley", mode: "raw" },
    ]);
    assert.equal(members.count, 2);
    assert.equal(members.next, null, "one page holds them all");
    assert.deepEqual(await (await client.get("/api/rooms/members?room=/a")).json(), {
      room: "/a",
      count: 1,
      members: [{ id: wl.id, name: "Lin", mode: "chat" }],
      next: null,
    });
    assert.deepEqual(await (await client.get("/api/rooms/members?room=/nobody")).json(), {
      room: "/nobody",
      count: 0,
      members: [],
      next: null,
    });
    const first = await (await client.get("/api/rooms/members?room=/b&limit=1")).json();
    assert.deepEqual([first.count, first.members.length], [2, 1]);
    assert.equal(first.next, first.members[0].id);
    const second = await (await client.get(`/api/rooms/members?room=/b&after=${first.next}`))
      .json();
    assert.deepEqual([...first.members, ...second.members], members.members);
    assert.equal(second.next, null);
    for (const bad of ["0", "10001", "ten", "1.5", ""]) {
      assert.deepEqual(
        await failure(await client.get(`/api/rooms/members?room=/b&limit=${bad}`)),
        [400, "bad_request"],
        `limit=${bad}`,
      );
    }
    assert.deepEqual(await failure(await client.get("/api/rooms/members")), [400, "bad_request"]);
    assert.deepEqual(
      await failure(await client.get("/api/rooms/members?room=nope")),
      [400, "invalid_room"],
    );

    await Promise.all([ada.close(), raw.close(), lin.close()]);
    await waitFor(() => server.hub.connections === 0, "everyone gone");
    assert.deepEqual(await (await client.get("/api/rooms")).json(), { rooms: [] });
  });
});

Deno.test("with --workers 2, a publish on one worker reaches clients on the other", async () => {
  const main: MainProcess = await startMain(["--workers", "2", "--api-key", KEY]);
  try {
    const client = api(main.url.slice(0, -1));
    const n = 20;
    const clients = await Promise.all(
      Array.from({ length: n }, () => rawClient(`ws://127.0.0.1:${main.port}/ticker`)),
    );
    const { client: chat } = await chatClient(`ws://127.0.0.1:${main.port}/ticker`);
    // Presence crosses workers on the bus: wait until whichever worker answers counts all.
    await waitFor(async () => {
      const { rooms } = await (await client.get("/api/rooms")).json();
      return rooms[0]?.members === n + 1;
    }, "every worker sees every member");
    const delivered: number[] = [];
    for (let i = 0; i < 4; i++) {
      const res = await client.publish("/ticker", `tick ${i}`);
      assert.equal(res.status, 200);
      delivered.push((await res.json()).delivered);
    }
    for (const c of clients) {
      for (let i = 0; i < 4; i++) assert.equal(await c.text(), `tick ${i}`);
    }
    for (let i = 0; i < 4; i++) assert.equal((await chat.until("message")).text, `tick ${i}`);
    // Each answer counts only its own worker's sockets, yet all 21 heard every tick.
    assert.ok(delivered.every((d) => d >= 0 && d <= n + 1), `delivered ${delivered}`);
    assert.ok(
      delivered.some((d) => d < n + 1),
      `some publish was answered by a worker without every client: ${delivered}`,
    );
    await Promise.all([...clients, chat].map((c) => c.close()));
  } finally {
    main.child.kill("SIGTERM");
    assert.equal((await main.output()).code, 0);
  }
});
