/// <reference lib="dom" />
/// <reference lib="deno.ns" />
/**
 * What the browser tests (`page_test.ts`, `admin_page_test.ts`) share: Debian's Chromium,
 * headless, driven by playwright-core; tests registered as ignored, with the reason in their
 * names, where Chromium is missing; a page that collects its script errors; waiting on page
 * state; a step runner; and the teardown. Not a `_test.ts` file: importing it runs no test.
 */
import fs from "node:fs";
import type { Browser, BrowserContext, JSHandle, Page } from "playwright-core";
import { EVENT_TIMEOUT_MS } from "./helpers.ts";

const CHROMIUM = "/usr/bin/chromium";
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  "--disable-quic",
];

async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

const haveChromium = await isFile(CHROMIUM);

/**
 * Register a test that needs Chromium: named `name`, or, where Chromium is missing, registered
 * as ignored under `ignoredAs` with the reason added (`.ci/run` lists ignored tests by name).
 */
export function chromiumTest(
  name: string,
  ignoredAs: string,
  fn: (t: Deno.TestContext) => Promise<void>,
): void {
  Deno.test({
    name: haveChromium
      ? name
      : `${ignoredAs} (ignored: ${CHROMIUM} not found; apt-get install chromium)`,
    ignore: !haveChromium,
    fn,
  });
}

/**
 * Load playwright-core. While loading, it probes for WSL with
 * `fs.existsSync("/proc/sys/fs/binfmt_misc/WSLInterop")`; Deno guards `/proc/sys` behind
 * `--allow-all`, and its `existsSync` throws `NotCapable` there where Node's never throws. So
 * for the duration of the import, `existsSync` answers false when permission is missing, as
 * Node would for a path it cannot see; the test keeps the task's explicit permissions.
 */
async function loadPlaywright(): Promise<typeof import("playwright-core")> {
  const existsSync = fs.existsSync;
  fs.existsSync = (path) => {
    try {
      return existsSync(path);
    } catch (err) {
      if (err instanceof Deno.errors.NotCapable) return false;
      throw err;
    }
  };
  try {
    return await import("playwright-core");
  } finally {
    fs.existsSync = existsSync;
  }
}

/** Debian's Chromium, headless, driven by playwright-core. */
export async function launchChromium(): Promise<Browser> {
  const { chromium } = await loadPlaywright();
  return await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
}

/** A page in a browser context of its own, with the script errors and console errors it made. */
export interface BrowserPage {
  context: BrowserContext;
  page: Page;
  errors: string[];
}

/** A fresh browser context (own storage) of `viewport` size, with one page. */
export async function openPage(
  browser: Browser,
  viewport: { width: number; height: number },
): Promise<BrowserPage> {
  const context = await browser.newContext({ viewport });
  context.setDefaultTimeout(EVENT_TIMEOUT_MS);
  const page = await context.newPage();
  const errors: string[] = [];
  page.on("pageerror", (err) => errors.push(`pageerror: ${err.message}`));
  page.on("console", (msg) => {
    if (msg.type() === "error") errors.push(`console.error: ${msg.text()}`);
  });
  return { context, page, errors };
}

/**
 * Wait until `read(arg)`, evaluated in the page, deep-equals `want` (compared as JSON); on a
 * timeout, fail with what the page showed instead. `read` must be self-contained: it is sent
 * to the page as source text and compiled once, while Playwright's own evaluation is exempt
 * from the page's CSP; the polling then only calls it (no `eval`, which the CSP forbids).
 */
export async function waitForValue<T>(
  page: Page,
  label: string,
  read: (arg: string) => T,
  arg: string,
  want: T,
): Promise<void> {
  const fn: JSHandle<(arg: string) => T> = await page.evaluateHandle(`(${read})`);
  try {
    await page.waitForFunction(
      ({ fn, arg, want }) => JSON.stringify(fn(arg)) === want,
      { fn, arg, want: JSON.stringify(want) },
    );
  } catch (err) {
    const got = await fn.evaluate((f, a) => f(a), arg).catch((e) => `<unreadable: ${e}>`);
    throw new Error(
      `${label}: wanted ${JSON.stringify(want)}, page shows ${JSON.stringify(got)}`,
      { cause: err },
    );
  } finally {
    await fn.dispose().catch(() => {});
  }
}

/** A step runner that stops the test at the first failed step: later steps build on its state. */
export function stepper(
  t: Deno.TestContext,
): (name: string, fn: () => Promise<void>) => Promise<void> {
  return async (name, fn) => {
    if (!(await t.step(name, fn))) throw new Error(`step failed: ${name}`);
  };
}

/**
 * The end of a browser test: close its `clients` (those still set), then the browser, and last,
 * even when one of those failed, `stop` the server they used.
 */
export async function tearDown(
  clients: ({ close(): Promise<unknown> } | undefined)[],
  browser: Browser | undefined,
  stop: () => Promise<unknown>,
): Promise<void> {
  try {
    await Promise.all(clients.map((c) => c?.close()));
    await browser?.close();
  } finally {
    await stop();
  }
}
