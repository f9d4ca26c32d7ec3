/// <reference lib="dom" />
/// <reference lib="deno.ns" />
/**
 * The chat page in a real browser: Debian's Chromium, driven by playwright-core, against an
 * in-process server. Two pages in separate browser contexts (separate storage, like two people)
 * and a raw WebSocket client share the room `/lobby`. Every wait is on page state (locators and
 * `waitForFunction`), never a sleep. A third test takes a room over `--presence-limit` and back;
 * a fourth removes `window.WebSocket` from a page, which then chats over SSE + POST.
 * Where Chromium is missing the tests are registered as ignored with the reason in their names.
 */
import assert from "node:assert/strict";
import type { Browser, Page, WebSocketRoute } from "playwright-core";
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
  startServer,
  type TestServer,
} from "./helpers.ts";

const XSS = "<img src=x onerror=window.__xss=1>";
/** Set CHORUS_KEEP_SCREENSHOTS=1 to keep the screenshots and print where they are. */
const KEEP_SCREENSHOTS = Deno.env.get("CHORUS_KEEP_SCREENSHOTS") === "1";

/** A fresh browser context (own storage) whose page is named `name` via localStorage. */
async function openChatPage(browser: Browser, name: string): Promise<BrowserPage> {
  const opened = await openPage(browser, { width: 1100, height: 640 });
  await opened.context.addInitScript((n) => localStorage.setItem("chorus.name", n), name);
  return opened;
}

/** Wait until the page's socket has been welcomed (the status shows "connected"). */
async function waitConnected(page: Page): Promise<void> {
  await page.locator('#status[data-state="open"]').waitFor();
}

/** Member names in list order (yourself first, then by name). */
const memberNames = () => [...document.querySelectorAll("#members li")].map((li) => li.textContent);

/** Every rendered chat message, in order. */
const messageList = () =>
  [...document.querySelectorAll<HTMLElement>("#messages .message")].map((m) => ({
    id: m.dataset.id,
    from: m.querySelector(".from")?.textContent,
    text: m.querySelector(".text")?.textContent,
    own: m.classList.contains("own"),
  }));

/** The rendered messages whose text is exactly `text` (textContent, not innerHTML). */
const messagesWithText = (text: string) =>
  [...document.querySelectorAll<HTMLElement>("#messages .message")]
    .filter((m) => m.querySelector(".text")?.textContent === text)
    .map((m) => ({
      from: m.querySelector(".from")?.textContent,
      own: m.classList.contains("own"),
      textIsPlain: m.querySelector(".text")?.childElementCount === 0,
    }));

/** Wait until exactly one message with `text` is shown, from `from`, own or not. */
async function expectMessage(page: Page, text: string, from: string, own: boolean): Promise<void> {
  await waitForValue(page, `message ${JSON.stringify(text)}`, messagesWithText, text, [
    { from, own, textIsPlain: true },
  ]);
}

/**
 * What the member sidebar shows, as far as it is visible: the header count, the "N members"
 * line of a large room, the list's names, and how many list items exist at all (a hidden list
 * must be empty too, not a stale sample).
 */
const memberPanel = () => {
  const shown = (selector: string) =>
    (document.querySelector(selector)?.getClientRects().length ?? 0) > 0;
  const items = [...document.querySelectorAll("#members li")];
  return {
    count: document.querySelector("#member-count")?.textContent,
    total: shown("#member-total") ? document.querySelector("#member-total")?.textContent : null,
    list: shown("#members") ? items.map((li) => li.textContent) : null,
    items: items.length,
  };
};

/** The texts of the log's notices whose kind is one of the comma-separated `kinds`. */
const noticesOf = (kinds: string) =>
  [...document.querySelectorAll<HTMLElement>("#messages .notice")]
    .filter((n) => kinds.split(",").includes(n.dataset.kind ?? ""))
    .map((n) => n.textContent);

/** Every log entry's text (a message's text alone), in order. */
const logTexts = () =>
  [...document.querySelectorAll("#messages > *")].map((e) =>
    e.querySelector(".text")?.textContent ?? e.textContent
  );

/** Count, from now on, every DOM change inside the member sidebar (in `__memberMutations`). */
function watchMemberPanel(page: Page): Promise<void> {
  return page.evaluate(() => {
    Reflect.set(window, "__memberMutations", 0);
    new MutationObserver((records) => {
      const seen = Number(Reflect.get(window, "__memberMutations"));
      Reflect.set(window, "__memberMutations", seen + records.length);
    }).observe(document.querySelector(".members")!, {
      subtree: true,
      childList: true,
      characterData: true,
      attributes: true,
    });
  });
}

/** Stop `server`, then remove the screenshots in `dir` unless they are to be kept. */
async function stopServer(server: TestServer, dir: string): Promise<void> {
  await server.close();
  if (!KEEP_SCREENSHOTS) await Deno.remove(dir, { recursive: true });
}

/** Screenshot each page to `DIR/NAME.png`, checking each file was written. */
async function screenshots(dir: string, pages: [Page, string][]): Promise<void> {
  for (const [page, name] of pages) {
    const path = `${dir}/${name}.png`;
    await page.screenshot({ path });
    const { size } = await Deno.stat(path);
    assert.ok(size > 0, `${path} is empty`);
  }
  if (KEEP_SCREENSHOTS) console.log(`screenshots kept in ${dir}`);
}

/** Type `text` into the message box and press Enter. */
async function say(page: Page, text: string): Promise<void> {
  await page.locator("#input").fill(text);
  await page.locator("#input").press("Enter");
}

chromiumTest(
  "the chat page: two browsers and a raw client chat in one room, history, XSS, keyboard",
  "the chat page in a browser",
  async (t) => {
    const server: TestServer = startServer();
    let browser: Browser | undefined;
    let raw: Client | undefined;
    const shots = await Deno.makeTempDir({ prefix: "chorus-page-" });
    const step = stepper(t);
    try {
      browser = await launchChromium();
      const ada = await openChatPage(browser, "Ada");
      const lin = await openChatPage(browser, "Lin");
      const a = ada.page;
      const b = lin.page;

      await step("two pages join /lobby under their names and see each other", async () => {
        await a.goto(`${server.origin}/lobby`);
        await waitConnected(a);
        await b.goto(`${server.origin}/lobby`);
        await waitConnected(b);
        await waitForValue(a, "Ada's member list", memberNames, "", ["Ada", "Lin"]);
        await waitForValue(b, "Lin's member list", memberNames, "", ["Lin", "Ada"]);
        for (const [page, name] of [[a, "Ada"], [b, "Lin"]] as const) {
          assert.equal(await page.locator("#status").textContent(), "connected · WebSocket");
          assert.equal(await page.locator("#room-name").textContent(), "/lobby");
          assert.equal(await page.locator("#member-count").textContent(), "2");
          assert.equal(await page.locator("#members li.own").textContent(), name);
          assert.equal(await page.locator("#name").inputValue(), name);
          assert.equal(await page.title(), "/lobby · chorus");
        }
      });

      await step("messages go both ways; your own are marked own", async () => {
        await say(a, "hello from Ada");
        await expectMessage(a, "hello from Ada", "Ada", true);
        await expectMessage(b, "hello from Ada", "Ada", false);
        assert.equal(await a.locator("#input").inputValue(), "", "the input is cleared");
        await say(b, "hi Ada, Lin here");
        await expectMessage(b, "hi Ada, Lin here", "Lin", true);
        await expectMessage(a, "hi Ada, Lin here", "Lin", false);
      });

      await step("a raw ws client shares the room with the pages", async () => {
        raw = await rawClient(server.ws("/lobby?name=Rawley"));
        await waitForValue(a, "member list with Rawley", memberNames, "", [
          "Ada",
          "Lin",
          "Rawley",
        ]);
        await waitForValue(b, "member list with Rawley", memberNames, "", [
          "Lin",
          "Ada",
          "Rawley",
        ]);
        raw.send("plain text from a raw socket");
        assert.equal(await raw.text(), "plain text from a raw socket", "raw mode echoes");
        await expectMessage(a, "plain text from a raw socket", "Rawley", false);
        await expectMessage(b, "plain text from a raw socket", "Rawley", false);
        await say(a, "Ada to the raw client");
        assert.equal(await raw.text(), "Ada to the raw client", "a page message arrives as text");
        await expectMessage(b, "Ada to the raw client", "Ada", false);
        await raw.close();
        raw = undefined;
        await waitForValue(a, "member list after Rawley left", memberNames, "", [
          "Ada",
          "Lin",
        ]);
      });

      await step("a reload shows the history exactly once", async () => {
        const before = await a.evaluate(messageList);
        assert.equal(before.length, 4, JSON.stringify(before));
        await a.reload();
        await waitConnected(a);
        // A message sent after the reload is delivered after the welcome on the same socket, so
        // once it shows, everything the welcome carried has been rendered too.
        await say(b, "after the reload");
        await expectMessage(a, "after the reload", "Lin", false);
        const after = await a.evaluate(messageList);
        // Same ids, senders and texts in the same order, and Ada's own messages still marked
        // own although the reloaded page has a new member id.
        assert.deepEqual(after.slice(0, before.length), before);
        assert.deepEqual(before.filter((m) => m.own).map((m) => m.text), [
          "hello from Ada",
          "Ada to the raw client",
        ]);
        assert.equal(after.length, before.length + 1, JSON.stringify(after));
        for (const { id } of after) {
          const count = await a.locator(`#messages [data-id="${id}"]`).count();
          assert.equal(count, 1, `message ${id} is shown ${count} times`);
        }
        await waitForValue(a, "member list after the reload", memberNames, "", [
          "Ada",
          "Lin",
        ]);
        // The page that stayed saw nothing twice either: an end marker comes after anything
        // the reload could have sent it again.
        await say(a, "end of the reload check");
        await expectMessage(b, "end of the reload check", "Ada", false);
        await expectMessage(a, "end of the reload check", "Ada", true);
        const ids = (await b.evaluate(messageList)).map((m) => m.id);
        const marker = ids.pop();
        assert.deepEqual(ids, after.map((m) => m.id));
        assert.equal((await a.evaluate(messageList)).at(-1)?.id, marker);
      });

      await step("markup in a message is shown as text, never run", async () => {
        await say(a, XSS);
        await expectMessage(a, XSS, "Ada", true);
        await expectMessage(b, XSS, "Ada", false);
        for (const page of [a, b]) {
          const text = await page.locator("#messages .message .text").last().textContent();
          assert.equal(text, XSS);
          assert.equal(await page.locator("#messages img").count(), 0);
          assert.equal(await page.evaluate(() => typeof Reflect.get(window, "__xss")), "undefined");
        }
        // The same for a member name, which the member list and message headers show.
        const evil = "<img src=x onerror=__xss=2>"; // names are at most 32 characters
        raw = await rawClient(server.ws(`/lobby?name=${encodeURIComponent(evil)}`));
        raw.send("named with markup");
        await expectMessage(b, "named with markup", evil, false);
        // Yourself first, then by name: "<" sorts before letters.
        await waitForValue(b, "member list with the markup name", memberNames, "", [
          "Lin",
          evil,
          "Ada",
        ]);
        await raw.close();
        raw = undefined;
        for (const page of [a, b]) {
          assert.equal(await page.locator("img").count(), 0);
          assert.equal(await page.evaluate(() => typeof Reflect.get(window, "__xss")), "undefined");
        }
      });

      await step("keyboard only: Tab from the body reaches the input, Enter sends", async () => {
        // A fresh load, so focus and the sequential-navigation start are at the top (a blur()
        // alone would leave navigation starting after the last focused element).
        await b.reload();
        await waitConnected(b);
        assert.equal(await b.evaluate(() => document.activeElement === document.body), true);
        const path: string[] = [];
        for (let i = 0; i < 20; i++) {
          await b.keyboard.press("Tab");
          const focused = await b.evaluate(() => {
            const el = document.activeElement;
            return el ? `${el.tagName.toLowerCase()}#${el.id}` : "none";
          });
          path.push(focused);
          if (focused === "input#input") break;
        }
        assert.equal(path.at(-1), "input#input", `Tab visited ${path.join(" → ")}`);
        assert.ok(!path.includes("body#"), `Tab wrapped around: ${path.join(" → ")}`);
        await b.keyboard.type("typed without a mouse");
        await b.keyboard.press("Enter");
        await expectMessage(b, "typed without a mouse", "Lin", true);
        await expectMessage(a, "typed without a mouse", "Lin", false);
        assert.equal(await b.locator("#input").inputValue(), "");
        assert.equal(await b.evaluate(() => document.activeElement?.id), "input");
      });

      await step("screenshots are written", () => screenshots(shots, [[a, "ada"], [b, "lin"]]));

      await step("no script errors or CSP violations", () => {
        assert.deepEqual([...ada.errors, ...lin.errors], []);
        return Promise.resolve();
      });
    } finally {
      await tearDown([raw], browser, () => stopServer(server, shots));
    }
  },
);

chromiumTest(
  "the chat page under a base path: room without the prefix, connects, room box stays under it",
  "the chat page under a base path",
  async () => {
    const { chorus, origin, close } = await startEmbedded();
    let browser: Browser | undefined;
    try {
      browser = await launchChromium();
      const { page, errors } = await openChatPage(browser, "Ada");
      await page.goto(`${origin}/ws/lobby`);
      await waitConnected(page);
      assert.equal(await page.locator("#room-name").textContent(), "/lobby");
      assert.deepEqual(chorus.rooms().map((r) => r.room), ["/lobby"]);
      assert.equal(chorus.publish("/lobby", "published by the app", "app"), 1);
      await expectMessage(page, "published by the app", "app", false);
      await page.locator("#room").fill("/stocks");
      await page.locator("#room").press("Enter");
      await page.waitForURL(`${origin}/ws/stocks`);
      await waitConnected(page);
      assert.equal(await page.locator("#room-name").textContent(), "/stocks");
      assert.deepEqual(errors, []);
    } finally {
      await tearDown([], browser, close);
    }
  },
);

chromiumTest(
  "the chat page in a room over --presence-limit: a count, no list, a bounded log, list back",
  "the chat page in a large room",
  async (t) => {
    // A room of 4 is large; counts every 0.1 s. Streamed messages must not trip the rate limit.
    const server = startServer({
      presenceLimit: 3,
      presenceInterval: 0.1,
      rateLimit: 10_000,
      rateBurst: 10_000,
    });
    const clients: Client[] = [];
    const chat = async (name: string) => {
      const { client } = await chatClient(server.ws(`/crowd?name=${name}`));
      clients.push(client);
      return client;
    };
    const raw = async (name: string) => {
      const client = await rawClient(server.ws(`/crowd?name=${name}`));
      clients.push(client);
      return client;
    };
    let browser: Browser | undefined;
    const shots = await Deno.makeTempDir({ prefix: "chorus-page-crowd-" });
    const step = stepper(t);
    try {
      browser = await launchChromium();
      const ada = await openChatPage(browser, "Ada");
      const lin = await openChatPage(browser, "Lin");
      const a = ada.page;
      const b = lin.page;
      // Lin's socket passes through Playwright untouched, so that a count can be added to it.
      let linSocket: WebSocketRoute | undefined;
      await b.routeWebSocket((url) => url.pathname === "/crowd", (ws) => {
        linSocket = ws;
        ws.connectToServer();
      });
      await b.setViewportSize({ width: 390, height: 844 });
      let bo: ChatClient | undefined;
      let cy: Client | undefined;

      await step("within the limit: the list and join notices, as in any room", async () => {
        await a.goto(`${server.origin}/crowd`);
        await waitConnected(a);
        bo = await chat("Bo");
        cy = await raw("Cy");
        await waitForValue(a, "Ada's member panel", memberPanel, "", {
          count: "3",
          total: null,
          list: ["Ada", "Bo", "Cy"],
          items: 3,
        });
        await waitForValue(a, "Ada's join notices", noticesOf, "join,leave", [
          "Bo joined.",
          "Cy joined.",
        ]);
      });

      await step("over the limit: '5 members', no list, no join notices", async () => {
        await chat("Dee");
        await raw("Eve");
        const large = { count: "5", total: "5 members", list: null, items: 0 };
        await waitForValue(a, "Ada's member panel", memberPanel, "", large);
        // A page that joins the large room gets a partial welcome: a count, never the sample.
        await b.goto(`${server.origin}/crowd`);
        await waitConnected(b);
        for (const page of [a, b]) {
          await waitForValue(page, "member panel with Lin", memberPanel, "", {
            ...large,
            count: "6",
            total: "6 members",
          });
        }
        // Any join event for Dee, Eve or Lin came before the count of 6.
        assert.deepEqual(await a.evaluate(noticesOf, "join,leave"), ["Bo joined.", "Cy joined."]);
        assert.deepEqual(await b.evaluate(noticesOf, "join,leave"), []);
      });

      await step("a rename in a large room reaches the renamer; messages carry it", async () => {
        await a.locator("#name").fill("Ada L");
        await a.locator("#name").press("Enter");
        await waitForValue(a, "Ada's rename notice", noticesOf, "rename", [
          "You are now known as Ada L.",
        ]);
        await say(a, "renamed");
        await expectMessage(b, "renamed", "Ada L", false);
        assert.deepEqual(await b.evaluate(noticesOf, "rename"), []);
      });

      await step(
        "2,100 streamed messages: shown, at most 2,000 log entries, panel untouched",
        async () => {
          await Promise.all([watchMemberPanel(a), watchMemberPanel(b)]);
          const n = 2_100;
          for (let i = 0; i < n; i++) bo!.say(`s${i}`);
          // The log keeps its last 2,000 entries: exactly the last 2,000 messages, in order.
          const kept = Array.from({ length: 2_000 }, (_, i) => `s${n - 2_000 + i}`);
          for (const page of [a, b]) {
            await expectMessage(page, `s${n - 1}`, "Bo", false);
            assert.deepEqual(await page.evaluate(logTexts), kept);
            // The count did not change, so the sidebar was not redrawn even once.
            assert.equal(await page.evaluate(() => Reflect.get(window, "__memberMutations")), 0);
          }
        },
      );

      await step(
        "screenshots of the large room, desktop and phone",
        () => screenshots(shots, [[a, "crowd-desktop"], [b, "crowd-phone"]]),
      );

      await step("counts have thousands separators; 1 is singular", async () => {
        // Counts added to Lin's socket as if the server had sent them.
        const cases: [number, string, string][] = [
          [1234, "1,234", "1,234 members"],
          [1, "1", "1 member"],
        ];
        for (const [count, shown, total] of cases) {
          linSocket!.send(JSON.stringify({ type: "presence", count }));
          await waitForValue(b, `Lin's panel at ${count}`, memberPanel, "", {
            count: shown,
            total,
            list: null,
            items: 0,
          });
        }
      });

      await step("a dropped socket: Lin's page says so, reconnects and resumes", async () => {
        linSocket!.close({ code: 1012, reason: "service restart" });
        await waitForValue(b, "Lin's notices", noticesOf, "close,info", [
          "Disconnected: service restart (1012).",
          "Reconnected.",
        ]);
        await waitConnected(b);
        assert.equal(await b.locator("#status").textContent(), "connected · WebSocket");
        // Resumed after s2099: nothing shown again, and what follows still arrives.
        bo!.say("after the drop");
        await expectMessage(b, "after the drop", "Bo", false);
        const texts = await b.evaluate(logTexts);
        assert.deepEqual(texts.slice(-4), [
          "s2099",
          "Disconnected: service restart (1012).",
          "Reconnected.",
          "after the drop",
        ]);
      });

      await step(
        "back within the limit: the whole list, then join/leave notices resume",
        async () => {
          await lin.context.close();
          const closing = clients.filter((c) => c !== bo && c !== cy);
          await Promise.all(closing.map((c) => c.close()));
          await waitForValue(a, "Ada's member panel", memberPanel, "", {
            count: "3",
            total: null,
            list: ["Ada L", "Bo", "Cy"],
            items: 3,
          });
          // The first join notices scrolled out with the stream; none came for the crowd's leaves.
          assert.deepEqual(await a.evaluate(noticesOf, "join,leave"), []);
          await cy!.close();
          await chat("Fay");
          await waitForValue(a, "Ada's member panel", memberPanel, "", {
            count: "3",
            total: null,
            list: ["Ada L", "Bo", "Fay"],
            items: 3,
          });
          await waitForValue(a, "Ada's join and leave notices", noticesOf, "join,leave", [
            "Cy left.",
            "Fay joined.",
          ]);
        },
      );

      await step("no script errors or CSP violations", () => {
        assert.deepEqual([...ada.errors, ...lin.errors], []);
        return Promise.resolve();
      });
    } finally {
      await tearDown(clients, browser, () => stopServer(server, shots));
    }
  },
);

chromiumTest(
  "the chat page without WebSocket: SSE + POST, chats with a WebSocket client, says SSE",
  "the chat page over SSE",
  async (t) => {
    const server: TestServer = startServer();
    let browser: Browser | undefined;
    let wes: ChatClient | undefined;
    const shots = await Deno.makeTempDir({ prefix: "chorus-page-sse-" });
    const step = stepper(t);
    try {
      browser = await launchChromium();
      const sam = await openChatPage(browser, "Sam");
      const a = sam.page;
      // A browser (or a network) where a WebSocket cannot be made at all.
      await sam.context.addInitScript(() => Reflect.deleteProperty(globalThis, "WebSocket"));

      await step("the page connects over SSE and says so in its status line", async () => {
        await a.goto(`${server.origin}/lobby`);
        await waitConnected(a);
        assert.equal(await a.evaluate(() => typeof Reflect.get(window, "WebSocket")), "undefined");
        assert.equal(await a.locator("#status").textContent(), "connected · SSE");
        assert.equal(await a.locator("#status").getAttribute("data-transport"), "sse");
        assert.deepEqual(await a.evaluate(memberNames, ""), ["Sam"]);
      });

      await step("a WebSocket client joins: both see each other", async () => {
        const joined = await chatClient(server.ws("/lobby?name=Wes"));
        wes = joined.client;
        assert.deepEqual(
          joined.welcome.members.map((m: { name: string }) => m.name).sort(),
          ["Sam", "Wes"],
        );
        await waitForValue(a, "Sam's member list", memberNames, "", ["Sam", "Wes"]);
        await waitForValue(a, "Sam's join notices", noticesOf, "join,leave", ["Wes joined."]);
      });

      await step("the page sends by POST; the WebSocket client hears it", async () => {
        await say(a, "hello over SSE");
        await expectMessage(a, "hello over SSE", "Sam", true);
        const got = await wes!.until("message");
        assert.deepEqual([got.from.name, got.text], ["Sam", "hello over SSE"]);
        assert.equal(await a.locator("#input").inputValue(), "", "the input is cleared");
      });

      await step("the WebSocket client speaks; the page shows it on its stream", async () => {
        wes!.say("hello over WebSocket");
        await expectMessage(a, "hello over WebSocket", "Wes", false);
        wes!.say(XSS);
        await expectMessage(a, XSS, "Wes", false);
        assert.equal(await a.locator("#messages img").count(), 0);
      });

      await step("a rename over POST reaches the WebSocket client", async () => {
        await a.locator("#name").fill("Sam S");
        await a.locator("#name").press("Enter");
        await waitForValue(a, "Sam's rename notice", noticesOf, "rename", [
          "You are now known as Sam S.",
        ]);
        const renamed = await wes!.until("rename");
        assert.deepEqual([renamed.oldName, renamed.name], ["Sam", "Sam S"]);
        await waitForValue(a, "Sam's member list", memberNames, "", ["Sam S", "Wes"]);
        await say(a, "still over SSE");
        assert.equal((await wes!.until("message")).from.name, "Sam S");
        assert.equal(await a.locator("#status").textContent(), "connected · SSE");
      });

      await step("screenshots over SSE, desktop and phone", async () => {
        await screenshots(shots, [[a, "sse-desktop"]]);
        await a.setViewportSize({ width: 390, height: 844 });
        await screenshots(shots, [[a, "sse-phone"]]);
      });

      await step("the WebSocket client leaves; the page sees it", async () => {
        await wes!.close();
        wes = undefined;
        await waitForValue(a, "Sam's member list", memberNames, "", ["Sam S"]);
      });

      await step("no script errors or CSP violations", () => {
        assert.deepEqual(sam.errors, []);
        return Promise.resolve();
      });
    } finally {
      await tearDown([wes], browser, () => stopServer(server, shots));
    }
  },
);
