/// <reference lib="dom" />
/// <reference lib="deno.ns" />
/**
 * The operator's page at `/admin` in a real browser (Debian's Chromium, driven by
 * playwright-core, as in `tests/page_test.ts`) against an in-process server with `--api-key`,
 * and real WebSocket clients in its rooms. Every wait is on page state or on a client's
 * events, never a sleep. Screenshots (desktop 1280×800, phone 390×844) are written to
 * `tests/artifacts/admin/` (gitignored); the time the rooms table takes to render with 1,000
 * rooms is printed, not asserted.
 */
import assert from "node:assert/strict";
import type { Browser, Page, Request as PwRequest } from "playwright-core";
import {
  type BrowserPage,
  chromiumTest,
  launchChromium,
  openPage,
  stepper,
  tearDown,
  waitForValue,
} from "./browser.ts";
import { startEmbedded } from "./embedded.ts";
import {
  type ChatClient,
  chatClient,
  type Client,
  rawClient,
  startMain,
  startServer,
  type TestServer,
} from "./helpers.ts";

const KEY = "admin-test-key-0123456789";
const ARTIFACTS = new URL("./artifacts/admin/", import.meta.url).pathname;
const ADMIN_CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " +
  "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/** One admin page with its script errors, console errors and API answers. */
interface AdminPage extends BrowserPage {
  /** `STATUS PATH` of every `/api` request the page made, in order of answer. */
  api: string[];
}

async function openAdminPage(
  browser: Browser,
  viewport = { width: 1280, height: 800 },
): Promise<AdminPage> {
  const opened = await openPage(browser, viewport);
  const { page } = opened;
  const api: string[] = [];
  const track = (req: PwRequest, status: number | string) => {
    const url = new URL(req.url());
    if (url.pathname.includes("/api/")) api.push(`${status} ${url.pathname}`);
  };
  page.on("requestfinished", async (req) => track(req, (await req.response())?.status() ?? "?"));
  page.on("requestfailed", (req) => track(req, "failed"));
  return { ...opened, api };
}

/** Type the key into the sign-in form and submit it. */
async function signIn(page: Page, key: string): Promise<void> {
  await page.locator("#key").fill(key);
  await page.locator("#key").press("Enter");
}

/** Which of the two views is visible, and the sign-in form's message. */
const views = () => ({
  login: !document.querySelector<HTMLElement>("#login-view")!.hidden,
  app: !document.querySelector<HTMLElement>("#app-view")!.hidden,
  message: document.querySelector("#login-message")!.textContent,
});

/** The names of the open room's member list. */
const memberNames = () =>
  [...document.querySelectorAll("#room-members li .name")].map((e) => e.textContent);

/** The open room's messages as `NAME: TEXT`. */
const streamTexts = () =>
  [...document.querySelectorAll("#room-messages .message")].map((m) =>
    `${m.querySelector(".from")?.textContent}: ${m.querySelector(".text")?.textContent}`
  );

/** A chart legend's current value for one series (`total:received`). */
const legendValue = (series: string) =>
  document.querySelector(`.legend li[data-series="${series}"] .value`)?.textContent ?? null;

/** Screenshot `page` to `ARTIFACTS/NAME.png` and check the file was written. */
async function screenshot(page: Page, name: string, fullPage = false): Promise<void> {
  await Deno.mkdir(ARTIFACTS, { recursive: true });
  const path = `${ARTIFACTS}${name}.png`;
  await page.screenshot({ path, fullPage });
  assert.ok((await Deno.stat(path)).size > 0, `${path} is empty`);
}

Deno.test("GET /admin: headers, 403 from another site, 404 without --api-key", async () => {
  const server = startServer({ apiKey: KEY });
  const off = startServer();
  try {
    const res = await fetch(`${server.origin}/admin`);
    const html = await res.text();
    assert.equal(res.status, 200);
    assert.match(html, /<title>chorus admin<\/title>/);
    assert.equal(res.headers.get("content-security-policy"), ADMIN_CSP);
    assert.equal(res.headers.get("x-frame-options"), "DENY");
    assert.equal(res.headers.get("referrer-policy"), "no-referrer");
    assert.equal(res.headers.get("cache-control"), "no-store");
    assert.equal(res.headers.get("x-content-type-options"), "nosniff");
    const head = await fetch(`${server.origin}/admin`, { method: "HEAD" });
    assert.equal(head.status, 200);
    assert.equal(await head.text(), "");

    const asked = async (headers: Record<string, string>) => {
      const r = await fetch(`${server.origin}/admin`, { headers });
      await r.body?.cancel();
      return r.status;
    };
    assert.equal(await asked({ "sec-fetch-site": "cross-site" }), 403);
    assert.equal(await asked({ "sec-fetch-site": "same-site" }), 403);
    assert.equal(await asked({ origin: "http://evil.example" }), 403);
    assert.equal(await asked({ origin: "null" }), 403);
    assert.equal(await asked({ "sec-fetch-site": "same-origin", origin: server.origin }), 200);
    assert.equal(await asked({ "sec-fetch-site": "none" }), 200);

    // Every module under static/admin/ is embedded and served, or admin.js could not import it.
    const modules = [];
    for await (const f of Deno.readDir(new URL("../static/admin/", import.meta.url))) {
      if (f.name.endsWith(".js")) modules.push(`/_static/admin/${f.name}`);
    }
    assert.ok(modules.length > 0, "static/admin/ holds the page's modules");
    for (const path of ["/_static/admin.js", "/_static/admin.css", ...modules]) {
      const asset = await fetch(`${server.origin}${path}`);
      await asset.body?.cancel();
      assert.equal(asset.status, 200, path);
      if (path.endsWith(".js")) {
        assert.equal(asset.headers.get("content-type"), "text/javascript; charset=utf-8", path);
      }
    }

    for (const path of ["/admin", "/api/admin/rooms", "/api/admin/stream"]) {
      const r = await fetch(`${off.origin}${path}`, {
        headers: { authorization: `Bearer ${KEY}` },
      });
      await r.body?.cancel();
      assert.equal(r.status, 404, `${path} without --api-key`);
    }
    // The chat page still serves every other room.
    const chat = await fetch(`${off.origin}/lobby`);
    assert.match(await chat.text(), /<title>chorus<\/title>/);
  } finally {
    await server.close();
    await off.close();
  }
});

chromiumTest(
  "the admin page: sign-in, live charts, rooms, a room's members and stream, kick, post",
  "the admin page in a browser",
  async (t) => {
    const server: TestServer = startServer({ apiKey: KEY, rateLimit: 1000, rateBurst: 1000 });
    const clients: Client[] = [];
    let browser: Browser | undefined;
    const step = stepper(t);
    let ada: ChatClient | undefined;
    let bo: ChatClient | undefined;
    try {
      browser = await launchChromium();
      const desk = await openAdminPage(browser);
      const p = desk.page;

      ada = (await chatClient(server.ws("/lobby?name=Ada"))).client;
      bo = (await chatClient(server.ws("/lobby?name=Bo"))).client;
      clients.push(ada, bo, await rawClient(server.ws("/alpha?name=Al")));
      clients.push(await rawClient(server.ws("/beta?name=Bea")));
      ada.say("before the page opened");
      await bo.until("message");

      await step("before a key: only the sign-in form, no API call", async () => {
        await p.goto(`${server.origin}/admin`);
        await p.locator("#key").waitFor();
        assert.deepEqual(await p.evaluate(views), { login: true, app: false, message: "" });
        assert.equal(await p.locator("#app-view").isVisible(), false);
        assert.deepEqual(desk.api, []);
      });

      await step("a wrong key: the form says 401; the app never shows", async () => {
        await signIn(p, "not-the-key-at-all");
        await p.waitForFunction(() =>
          document.querySelector("#login-message")?.textContent?.includes("401")
        );
        assert.deepEqual(await p.evaluate(views), {
          login: true,
          app: false,
          message: "That key was refused (401).",
        });
        assert.deepEqual(desk.api, ["401 /api/admin/rooms"]);
        assert.equal(await p.evaluate(() => sessionStorage.length), 0);
      });

      await step("the right key: the overview and the rooms table", async () => {
        await signIn(p, KEY);
        await p.locator("#app-view").waitFor();
        assert.deepEqual(await p.evaluate(views), { login: false, app: true, message: "" });
        await p.locator('#rooms tr[data-room="/lobby"]').waitFor();
        assert.equal(
          await p.locator('#rooms tr[data-room="/lobby"] td').first().textContent(),
          "2",
        );
        await p.locator('#status[data-state="open"]').waitFor();
        assert.equal(
          await p.evaluate(() => sessionStorage.getItem("chorus.admin.key")),
          KEY,
          "the key is kept in sessionStorage",
        );
      });

      await step("the charts move while a client sends messages", async () => {
        await p.waitForFunction(() => document.querySelector(".legend li .value")?.textContent);
        const before = await p.evaluate(() =>
          document.querySelector('#chart-messages path[class*="c0"]')?.getAttribute("d") ?? ""
        );
        // At most 45 messages, so that the room's first page of history (50) still holds all.
        let n = 0;
        const talk = setInterval(() => n < 45 && ada!.say(`traffic ${n++}`), 100);
        try {
          // At least one second with messages in it: received per second above 0.
          await p.waitForFunction(
            (s) => Number(document.querySelector(`[data-series="${s}"] .value`)?.textContent) > 0,
            "total:received",
          );
          await p.waitForFunction(
            (s) => Number(document.querySelector(`[data-series="${s}"] .value`)?.textContent) > 0,
            "total:delivered",
          );
          // Two seconds with rates: the line has a segment.
          await p.waitForFunction(() =>
            document.querySelector('#chart-messages path[class*="c0"]')?.getAttribute("d")
              ?.includes("L")
          );
        } finally {
          clearInterval(talk);
        }
        const after = await p.evaluate(() =>
          document.querySelector('#chart-messages path[class*="c0"]')?.getAttribute("d") ?? ""
        );
        assert.notEqual(after, before, "the received line was redrawn");
        const connections = await p.evaluate(legendValue, "total:chat");
        assert.equal(connections, "2", "two chorus.v1 connections");
        assert.equal(await p.evaluate(legendValue, "total:raw"), "2", "two raw connections");
      });

      await step("the filter finds a room; sorting by a header (Enter) works", async () => {
        await p.locator("#filter").fill("lob");
        await p.waitForFunction(() => document.querySelectorAll("#rooms tbody tr").length === 1);
        assert.equal(await p.locator("#rooms tbody tr").getAttribute("data-room"), "/lobby");
        await p.locator("#filter").fill("");
        await p.waitForFunction(() => document.querySelectorAll("#rooms tbody tr").length === 3);
        await p.locator('th[data-key="room"] button').focus();
        await p.keyboard.press("Enter");
        await p.locator('th[data-key="room"][aria-sort="ascending"]').waitFor();
        const order = await p.evaluate(() =>
          [...document.querySelectorAll<HTMLElement>("#rooms tbody tr")].map((r) => r.dataset.room)
        );
        assert.deepEqual(order, ["/alpha", "/beta", "/lobby"]);
        await p.locator("#filter").fill("lob");
      });

      await step("a room: its members, its history and a new message, live", async () => {
        // By keyboard: the room's link, then Enter. The table is redrawn at every poll (3 s);
        // the link keeps the focus through a redraw.
        await p.locator('#rooms tr[data-room="/lobby"] a').focus();
        await p.evaluate(() =>
          new Promise<void>((resolve) => {
            const redrawn = new MutationObserver(() => {
              redrawn.disconnect();
              resolve();
            });
            redrawn.observe(document.querySelector("#rooms tbody")!, { childList: true });
          })
        );
        assert.equal(
          await p.evaluate(() => document.activeElement?.closest("tr")?.dataset.room),
          "/lobby",
          "the focus stays on the room's link",
        );
        await p.keyboard.press("Enter");
        await p.locator("#room-view").waitFor();
        assert.equal(await p.evaluate(() => document.activeElement?.id), "room-heading");
        assert.equal(await p.locator("#room-heading").textContent(), "/lobby");
        await p.waitForFunction(() =>
          document.querySelectorAll("#room-members .name").length === 2
        );
        assert.deepEqual((await p.evaluate(memberNames)).sort(), ["Ada", "Bo"]);
        await p.waitForFunction(() =>
          [...document.querySelectorAll("#room-messages .text")].some((e) =>
            e.textContent === "before the page opened"
          )
        );
        bo!.say("<b>live</b> from Bo");
        await p.waitForFunction(() =>
          [...document.querySelectorAll("#room-messages .text")].some((e) =>
            e.textContent === "<b>live</b> from Bo"
          )
        );
        assert.equal(await p.locator("#room-messages b").count(), 0, "text, not markup");
        assert.equal((await p.evaluate(streamTexts)).at(-1), "Bo: <b>live</b> from Bo");
      });

      await step("screenshots: overview and room, desktop", async () => {
        await p.evaluate(() => scrollTo(0, 0));
        await screenshot(p, "desktop-overview");
        await p.locator("#room-view").scrollIntoViewIfNeeded();
        await screenshot(p, "desktop-room", true);
      });

      await step("kick Ada after a confirmation: her socket closes with 4003", async () => {
        const adaId = await p.evaluate(() =>
          [...document.querySelectorAll<HTMLElement>("#room-members li")].find((li) =>
            li.querySelector(".name")?.textContent === "Ada"
          )?.dataset.id
        );
        assert.ok(adaId);
        await p.locator(`#room-members li[data-id="${adaId}"] button`).click();
        await p.locator("#confirm[open]").waitFor();
        await screenshot(p, "desktop-confirm");
        // Cancel first: nothing happens.
        await p.keyboard.press("Escape");
        await p.locator("#confirm:not([open])").waitFor({ state: "attached" });
        await p.locator(`#room-members li[data-id="${adaId}"] button`).click();
        await p.locator("#confirm-reason").fill("spamming");
        await p.locator("#confirm-ok").click();
        const closed = await ada!.closed;
        assert.equal(closed.code, 4003);
        assert.equal(closed.reason, "spamming");
        await p.locator('#action-result[data-kind="ok"]').waitFor();
        assert.match((await p.locator("#action-result").textContent()) ?? "", /^Disconnected Ada/);
        await p.waitForFunction(() =>
          document.querySelectorAll("#room-members .name").length === 1
        );
        assert.deepEqual(await p.evaluate(memberNames), ["Bo"]);
        assert.ok(
          server.logs.some((l) => l.includes("admin disconnect") && l.includes('"level":"info"')),
          "the kick is logged at info",
        );
      });

      await step("post a system message: a WebSocket client gets it", async () => {
        await p.locator("#post-text").fill("maintenance at 22:00");
        await p.locator("#post-form button[type=submit]").click();
        await p.locator("#confirm[open]").waitFor();
        assert.match(
          (await p.locator("#confirm-text").textContent()) ?? "",
          /maintenance at 22:00/,
        );
        await p.locator("#confirm-ok").click();
        let got = await bo!.until("message");
        while (got.text !== "maintenance at 22:00") got = await bo!.until("message");
        assert.deepEqual(got.from, { id: "server", name: "system" });
        await p.waitForFunction(() =>
          [...document.querySelectorAll("#room-messages .message.system .text")].some((e) =>
            e.textContent === "maintenance at 22:00"
          )
        );
        await p.locator('#action-result[data-kind="ok"]').waitFor();
        assert.match((await p.locator("#action-result").textContent()) ?? "", /^Posted to \/lobby/);
        assert.equal(await p.locator("#post-text").inputValue(), "");
      });

      await step("close the room: the last member's socket closes with 4004", async () => {
        await p.locator("#close-room").click();
        await p.locator("#confirm[open]").waitFor();
        await p.locator("#confirm-ok").click();
        assert.equal((await bo!.closed).code, 4004);
        // The disconnects by reason count both closes (these are counted once a second).
        for (const reason of ["kicked", "room_closed"]) {
          await p.waitForFunction(
            (r) =>
              document.querySelector(`#disconnects [data-reason="${r}"] dd`)?.textContent
                ?.startsWith("1 +1 in"),
            reason,
          );
        }
        await p.waitForFunction(() =>
          document.querySelector("#room-member-count")?.textContent === "0"
        );
      });

      await step(
        "a kept key that is no longer right: the sign-in form, the key forgotten",
        async () => {
          const stale = await openAdminPage(browser!);
          await stale.context.addInitScript(() =>
            sessionStorage.setItem("chorus.admin.key", "an-old-key-0123456789")
          );
          await stale.page.goto(`${server.origin}/admin`);
          await stale.page.waitForFunction(() =>
            document.querySelector("#login-message")?.textContent?.includes("401")
          );
          assert.deepEqual(await stale.page.evaluate(views), {
            login: true,
            app: false,
            message: "That key was refused (401).",
          });
          assert.deepEqual(stale.api, ["401 /api/admin/rooms"]);
          assert.equal(
            await stale.page.evaluate(() => sessionStorage.getItem("chorus.admin.key")),
            null,
          );
          await stale.context.close();
        },
      );

      await step("phone: overview and room, 390×844", async () => {
        const phone = await openAdminPage(browser!, { width: 390, height: 844 });
        // Same origin, new context: the key is asked for again (sessionStorage is per tab).
        await phone.page.goto(`${server.origin}/admin#room=${encodeURIComponent("/alpha")}`);
        await signIn(phone.page, KEY);
        await phone.page.locator("#room-view").waitFor();
        await phone.page.waitForFunction(() =>
          document.querySelectorAll("#room-members .name").length === 1
        );
        await phone.page.locator('#status[data-state="open"]').waitFor();
        await phone.page.waitForFunction(() =>
          document.querySelector("#chart-connections path")?.getAttribute("d")?.includes("L")
        );
        await phone.page.evaluate(() => scrollTo(0, 0));
        await screenshot(phone.page, "phone-overview");
        await phone.page.locator("#room-view").scrollIntoViewIfNeeded();
        await screenshot(phone.page, "phone-room", true);
        assert.deepEqual(phone.errors, []);
      });

      await step(
        "a 401 later (the key changed): back to the sign-in form, with a message",
        async () => {
          await p.route("**/api/admin/rooms", (route) =>
            route.fulfill({
              status: 401,
              contentType: "application/json",
              body: '{"error":{"code":"unauthorized","message":"wrong API key"}}',
            }));
          await p.locator("#login-view").waitFor();
          assert.deepEqual(await p.evaluate(views), {
            login: true,
            app: false,
            message: "The server refused the key (401, Rooms).",
          });
          assert.equal(await p.evaluate(() => sessionStorage.getItem("chorus.admin.key")), null);
          assert.equal(await p.locator("#rooms tbody tr").count(), 0, "the numbers are forgotten");
        },
      );

      await step("no script errors or CSP violations", () => {
        // Chromium logs every 401 as a failed resource: the two above were meant.
        const unexpected = desk.errors.filter((e) => !e.includes("status of 401 (Unauthorized)"));
        assert.deepEqual(unexpected, []);
        assert.equal(
          desk.errors.length - unexpected.length,
          2,
          "the wrong key's and the later 401",
        );
        return Promise.resolve();
      });
    } finally {
      await tearDown(clients, browser, () => server.close());
    }
  },
);

chromiumTest(
  "the admin page with several nodes: one line per node and the cluster total",
  "the admin page with several nodes",
  async () => {
    const server = startServer({ apiKey: KEY });
    let browser: Browser | undefined;
    try {
      browser = await launchChromium();
      const { page, errors } = await openAdminPage(browser);
      // Three seconds of a two-worker cluster, as the stream would send them.
      const node = (id: string, label: string, i: number, k: number) => ({
        node: id,
        label,
        connections: { raw: 2 + k, chat: 10 * k, sse: 1 },
        received: 100 * i * k,
        delivered: 900 * i * k,
        bytesOut: 50_000 * i * k,
        rooms: 3,
      });
      const events = [0, 1, 2].map((i) => {
        const nodes = [node("a1", "worker 1", i, 1), node("b2", "worker 2", i, 2)];
        return {
          ts: 1_764_000_000_000 + i * 1000,
          nodes,
          total: {
            connections: { raw: 7, chat: 30, sse: 2 },
            received: 300 * i,
            delivered: 2700 * i,
            bytesOut: 150_000 * i,
            rooms: 5,
          },
          refused: { bad_origin: i },
          disconnects: { idle: 0 },
        };
      });
      await page.route("**/api/admin/stream", (route) =>
        route.fulfill({
          status: 200,
          headers: { "content-type": "text/event-stream" },
          body: events.map((e) => `event: stats\ndata: ${JSON.stringify(e)}\n\n`).join(""),
        }));
      await page.goto(`${server.origin}/admin`);
      await signIn(page, KEY);
      await page.waitForFunction(() =>
        document.querySelector('#refused [data-reason="bad_origin"] dd')?.textContent?.startsWith(
          "2",
        )
      );
      const legend = (chart: string) =>
        [...document.querySelectorAll(`#${chart} .legend li`)].map((li) => li.textContent);
      await waitForValue(page, "connections legend", legend, "chart-connections", [
        "worker 1 14",
        "worker 2 25",
        "total 39",
      ]);
      await waitForValue(page, "messages legend", legend, "chart-messages", [
        "worker 1 received 100",
        "worker 1 delivered 900",
        "worker 2 received 200",
        "worker 2 delivered 1,800",
        "total received 300",
        "total delivered 2,700",
      ]);
      assert.equal(
        await page.locator("#nodes-line").textContent(),
        "2 nodes: worker 1, worker 2 · 5 rooms",
      );
      // One line per node can be turned off: the cluster's lines by kind again.
      await page.locator("#split-nodes").uncheck();
      assert.deepEqual(await page.evaluate(legend, "chart-connections"), [
        "raw · WebSocket 7",
        "chat · WebSocket 30",
        "chat · SSE 2",
      ]);
      await page.locator("#split-nodes").check();
      assert.deepEqual(errors, []);
    } finally {
      await tearDown([], browser, () => server.close());
    }
  },
);

chromiumTest(
  "the admin page gives up a stats stream that says nothing for 10 s, and says so",
  "the admin page with a silent stream",
  async () => {
    const server = startServer({ apiKey: KEY });
    let browser: Browser | undefined;
    try {
      browser = await launchChromium();
      const { page, errors } = await openAdminPage(browser);
      // A stream that is accepted somewhere along the way and then carries nothing.
      await page.route("**/api/admin/stream", () => {});
      await page.goto(`${server.origin}/admin`);
      await signIn(page, KEY);
      await page.waitForFunction(
        () => document.querySelector("#errors")?.textContent === "Live numbers: nothing for 10 s",
        undefined,
        { timeout: 25_000 },
      );
      const retry = page.waitForRequest("**/api/admin/stream");
      assert.equal(await page.locator("#status").getAttribute("data-state"), "reconnecting");
      await retry;
      assert.deepEqual(errors, []);
    } finally {
      await tearDown([], browser, () => server.close());
    }
  },
);

chromiumTest(
  "the admin page of main.ts --workers 2: a line per worker, live",
  "the admin page of --workers 2",
  async () => {
    const main = await startMain(["--workers", "2", "--api-key", KEY]);
    const clients: ChatClient[] = [];
    let browser: Browser | undefined;
    let talk: ReturnType<typeof setInterval> | undefined;
    try {
      // Ten members in five rooms; the kernel spreads them over the two workers.
      for (let i = 0; i < 10; i++) {
        const url = `ws://127.0.0.1:${main.port}/team-${i % 5}?name=m${i}`;
        clients.push((await chatClient(url)).client);
      }
      let n = 0;
      talk = setInterval(() => clients[n % 10]!.say(`tick ${n++}`), 50);
      browser = await launchChromium();
      const { page, errors } = await openAdminPage(browser);
      await page.goto(`${main.url}admin`);
      await signIn(page, KEY);
      const legend = (chart: string) =>
        [...document.querySelectorAll(`#${chart} .legend li`)].map((li) =>
          li.firstElementChild?.nextElementSibling?.textContent?.trim()
        );
      await waitForValue(page, "connections legend", legend, "chart-connections", [
        "worker 1",
        "worker 2",
        "total",
      ]);
      await page.waitForFunction(() =>
        document.querySelector('[data-series="total:all"] .value')?.textContent === "10"
      );
      // A few seconds of lines for both workers before the screenshot.
      await page.waitForFunction(() =>
        [...document.querySelectorAll("#chart-messages path")].every((p) =>
          (p.getAttribute("d")?.split("L").length ?? 0) > 4
        )
      );
      await screenshot(page, "desktop-workers");
      assert.deepEqual(errors, []);
    } finally {
      clearInterval(talk);
      await tearDown(clients, browser, () => main.stop());
    }
  },
);

chromiumTest(
  "the admin page under a base path: /ws/admin, its assets and API calls under /ws",
  "the admin page under a base path",
  async () => {
    const { origin, close } = await startEmbedded({ apiKey: KEY });
    let browser: Browser | undefined;
    try {
      browser = await launchChromium();
      const { page, errors, api } = await openAdminPage(browser);
      await page.goto(`${origin}/ws/admin`);
      await signIn(page, KEY);
      await page.locator('#status[data-state="open"]').waitFor();
      assert.ok(
        api.length > 0 && api.every((a) => a.split(" ")[1]!.startsWith("/ws/api/")),
        `${api}`,
      );
      assert.deepEqual(errors, []);
    } finally {
      await tearDown([], browser, close);
    }
  },
);

chromiumTest(
  "the admin page with 1,000 rooms: the table renders, filters and stays responsive",
  "the admin page with 1,000 rooms",
  async () => {
    const server = startServer({ apiKey: KEY, maxConnectionsPerIp: 10_000 });
    const clients: Client[] = [];
    let browser: Browser | undefined;
    try {
      // 1,000 rooms, one raw member each, opened 100 at a time.
      for (let batch = 0; batch < 10; batch++) {
        clients.push(
          ...await Promise.all(Array.from({ length: 100 }, (_, i) => {
            const n = String(batch * 100 + i).padStart(4, "0");
            return rawClient(server.ws(`/room-${n}?name=m${n}`));
          })),
        );
      }
      browser = await launchChromium();
      const { context, page, errors } = await openAdminPage(browser);
      // Long tasks (over 50 ms) from the start, to report how busy the page's main thread gets.
      await context.addInitScript(() => {
        const long: number[] = [];
        Reflect.set(window, "__longTasks", long);
        new PerformanceObserver((list) => {
          for (const e of list.getEntries()) long.push(e.duration);
        }).observe({ type: "longtask", buffered: true });
      });
      await page.goto(`${server.origin}/admin`);
      await signIn(page, KEY);
      await page.locator("#rooms tbody tr").first().waitFor();
      const first = await page.evaluate(() => {
        const signin = performance.getEntriesByName("chorus:signin")[0]!.startTime;
        const rendered = performance.getEntriesByName("chorus:rooms-rendered")[0]!.startTime;
        return {
          sinceSignIn: rendered - signin,
          sinceNavigation: rendered,
          rows: document.querySelectorAll("#rooms tbody tr").length,
          count: document.querySelector("#room-count")?.textContent,
        };
      });
      assert.equal(first.count, "1,000");
      assert.equal(first.rows, 100, "the first 100 rows, then Show more");

      // Responsive: a filter keystroke, a sort and "Show more", each timed to the next frame.
      const timed = (action: string) =>
        page.evaluate(async (action) => {
          const start = performance.now();
          if (action === "filter") {
            const filter = document.querySelector<HTMLInputElement>("#filter")!;
            filter.value = "room-09";
            filter.dispatchEvent(new Event("input"));
          } else if (action === "sort") {
            document.querySelector<HTMLButtonElement>('th[data-key="room"] button')!.click();
          } else document.querySelector<HTMLButtonElement>("#rooms-more")!.click();
          await new Promise((r) => requestAnimationFrame(() => setTimeout(r)));
          return performance.now() - start;
        }, action);
      const sortMs = await timed("sort");
      assert.equal(
        await page.locator("#rooms tbody tr").first().getAttribute("data-room"),
        "/room-0000",
      );
      const moreMs = await timed("more");
      assert.equal(await page.locator("#rooms tbody tr").count(), 200);
      const filterMs = await timed("filter");
      assert.equal(await page.locator("#rooms tbody tr").count(), 100, "room-0900 … room-0999");
      // Two more polls of 1,000 rooms while the page keeps a frame loop going.
      const frames = await page.evaluate(async () => {
        const gaps: number[] = [];
        let last = performance.now();
        const until = last + 6500;
        await new Promise<void>((done) => {
          const tick = (now: number) => {
            gaps.push(now - last);
            last = now;
            if (now < until) requestAnimationFrame(tick);
            else done();
          };
          requestAnimationFrame(tick);
        });
        return { frames: gaps.length, worstMs: Math.max(...gaps) };
      });
      const longTasks = await page.evaluate(() => Reflect.get(window, "__longTasks") as number[]);
      await screenshot(page, "desktop-1000-rooms");
      console.log(
        `1,000 rooms: table first rendered ${first.sinceSignIn.toFixed(0)} ms after the key ` +
          `was submitted (${first.sinceNavigation.toFixed(0)} ms after navigation); ` +
          `sort ${sortMs.toFixed(0)} ms, show more ${moreMs.toFixed(0)} ms, filter ` +
          `${filterMs.toFixed(0)} ms (each to the next frame); over 6.5 s of polling ` +
          `${frames.frames} frames, the longest ${frames.worstMs.toFixed(0)} ms; long tasks: ` +
          `${longTasks.length ? longTasks.map((d) => d.toFixed(0)).join(", ") + " ms" : "none"}`,
      );
      assert.deepEqual(errors, []);
    } finally {
      await tearDown(clients, browser, () => server.close());
    }
  },
);
