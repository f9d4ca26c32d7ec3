/**
 * The HTTP API as a plain handler: `new Request(...)` in, `Response` out, over a hub whose
 * members are stub peers. `api_test.ts` covers the same API over real sockets.
 */
import assert from "node:assert/strict";
import { createApi } from "../src/api.ts";
import { Hub } from "../src/hub.ts";
import { createLogger } from "../src/log.ts";
import { joinStub } from "./stub_peer.ts";

const KEY = "handler-test-api-key-0123";

function api(maxMessageBytes = 64) {
  const hub = new Hub({ history: 10 });
  const logs: string[] = [];
  const handle = createApi({
    apiKey: KEY,
    maxMessageBytes,
    hub,
    log: createLogger({ level: "debug", format: "json", write: (l) => logs.push(l) }),
  });
  const call = (path: string, init: RequestInit = {}) => {
    const req = new Request(`http://chorus.test${path}`, {
      ...init,
      headers: { authorization: `Bearer ${KEY}`, ...init.headers },
    });
    return handle(req, "192.0.2.7", new URL(req.url));
  };
  return { hub, call, logs };
}

async function error(res: Response): Promise<[number, string]> {
  return [res.status, (await res.json()).error.code];
}

Deno.test("publish sends text to raw members as text and to chat members as a message", async () => {
  const { hub, call } = api();
  const raw = joinStub(hub, "/r", "raw");
  const chat = joinStub(hub, "/r", "chat");
  hub.flush();
  const res = await call("/api/publish?room=/r&name=Prices", {
    method: "POST",
    headers: { "content-type": "text/plain; charset=utf-8" },
    body: "ACME 120",
  });
  assert.equal((await res.json()).delivered, 2);
  hub.flush();
  assert.deepEqual(raw.socket.sent, ["ACME 120"]);
  const [message] = chat.socket.events().filter((e) => e.type === "message");
  assert.deepEqual(message?.from, { id: "server", name: "Prices" });
  assert.equal(message?.text, "ACME 120");
  void hub.dispose();
});

Deno.test("publish of bytes reaches raw members only, as the same bytes", async () => {
  const { hub, call } = api();
  const raw = joinStub(hub, "/r", "raw");
  const chat = joinStub(hub, "/r", "chat");
  hub.flush();
  const res = await call("/api/publish?room=/r", {
    method: "POST",
    headers: { "content-type": "application/octet-stream" },
    body: new Uint8Array([0, 1, 255]),
  });
  assert.equal((await res.json()).delivered, 1);
  hub.flush();
  assert.deepEqual([...new Uint8Array(raw.socket.sent[0] as ArrayBuffer)], [0, 1, 255]);
  assert.deepEqual(chat.socket.events().filter((e) => e.type === "message"), []);
  void hub.dispose();
});

Deno.test("publish refuses a bad room, name, media type, size or encoding with its code", async () => {
  const { hub, call } = api(8);
  const post = (query: string, body: BodyInit, type = "text/plain") =>
    call(`/api/publish?${query}`, { method: "POST", headers: { "content-type": type }, body });
  assert.deepEqual(await error(await post("", "x")), [400, "bad_request"]);
  assert.deepEqual(await error(await post("room=lobby", "x")), [400, "invalid_room"]);
  assert.deepEqual(await error(await post("room=/a/../b", "x")), [400, "invalid_room"]);
  assert.deepEqual(await error(await post("room=/r&name=%20", "x")), [400, "invalid_name"]);
  assert.deepEqual(await error(await post("room=/r", "x", "application/json")), [
    415,
    "unsupported_media_type",
  ]);
  assert.deepEqual(await error(await post("room=/r", "123456789")), [413, "payload_too_large"]);
  assert.deepEqual(await error(await post("room=/r", new Uint8Array([0xff, 0xfe]))), [
    400,
    "bad_request",
  ]);
  void hub.dispose();
});

Deno.test("rooms and members list what the hub holds; wrong methods and paths are refused", async () => {
  const { hub, call } = api();
  const a = joinStub(hub, "/b", "chat");
  joinStub(hub, "/a", "raw");
  joinStub(hub, "/b", "raw");
  assert.deepEqual(await (await call("/api/rooms")).json(), {
    rooms: [{ room: "/a", members: 1 }, { room: "/b", members: 2 }],
  });
  const members = await (await call("/api/rooms/members?room=/b")).json();
  assert.equal(members.room, "/b");
  assert.deepEqual(members.members[0], { id: a.id, name: a.name, mode: "chat" });
  const wrong = await call("/api/rooms", { method: "POST" });
  assert.equal(wrong.headers.get("allow"), "GET");
  assert.deepEqual(await error(wrong), [405, "method_not_allowed"]);
  assert.deepEqual(await error(await call("/api/nothing")), [404, "not_found"]);
  void hub.dispose();
});

Deno.test("a missing or wrong key is 401 with a challenge, logged without the key", async () => {
  const { hub, call, logs } = api();
  const missing = await call("/api/rooms", { headers: { authorization: "" } });
  assert.equal(missing.headers.get("www-authenticate"), 'Bearer realm="chorus"');
  assert.deepEqual(await error(missing), [401, "unauthorized"]);
  const wrong = await call("/api/rooms", { headers: { authorization: "Bearer nope" } });
  assert.equal(
    wrong.headers.get("www-authenticate"),
    'Bearer realm="chorus", error="invalid_token"',
  );
  assert.deepEqual(await error(wrong), [401, "unauthorized"]);
  assert.equal(logs.length, 2);
  assert.ok(logs.every((l) => !l.includes(KEY) && !l.includes("nope")));
  void hub.dispose();
});
