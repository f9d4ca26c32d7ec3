/**
 * Authenticated connections over real sockets: HS256, RS256 and ES256 tokens, every way a
 * token is refused (401) or a room is (403), room patterns, the name a token fixes, one user
 * on several connections, the 4001 close at expiry, the constant-time compare, and
 * `main.ts token`.
 */
import assert from "node:assert/strict";
import * as jose from "jose";
import {
  constantTimeEqual,
  createVerifier,
  loadPublicKey,
  parseRoom,
  parseRoomPattern,
  roomAllowed,
} from "../src/auth.ts";
import {
  chatClient,
  Client,
  DENO,
  rawClient,
  ROOT,
  runMain,
  runToEnd,
  startMain,
  startServer,
  type TestServer,
  upgradeOverTcp,
  waitFor,
} from "./helpers.ts";

const SECRET = "a-test-secret-that-is-long-enough-for-hs256";
const encoder = new TextEncoder();

/** Seconds since the epoch, as JWT claims count time. */
const nowSeconds = () => Math.floor(Date.now() / 1000);

interface Signing {
  alg?: string;
  key?: Parameters<jose.SignJWT["sign"]>[0];
  exp?: number;
  nbf?: number;
  aud?: string;
  iss?: string;
}

/** A token with `claims`, HS256 with {@link SECRET} unless another key and algorithm are given. */
async function sign(claims: jose.JWTPayload, s: Signing = {}): Promise<string> {
  const jwt = new jose.SignJWT(claims)
    .setProtectedHeader({ alg: s.alg ?? "HS256" })
    .setIssuedAt()
    .setExpirationTime(s.exp ?? nowSeconds() + 3600);
  if (s.nbf !== undefined) jwt.setNotBefore(s.nbf);
  if (s.aud !== undefined) jwt.setAudience(s.aud);
  if (s.iss !== undefined) jwt.setIssuer(s.iss);
  return await jwt.sign(s.key ?? encoder.encode(SECRET));
}

/** The refusal of an upgrade to `path` carrying `token`: status, error code, headers. */
async function refusal(server: TestServer, path: string, token?: string) {
  const target = token === undefined ? path : `${path}?token=${token}`;
  const res = await upgradeOverTcp(server.port, target);
  const code = res.status === 101 ? undefined : JSON.parse(res.body).error.code;
  return { status: res.status, code, head: res.head };
}

/** Log lines of the server parsed, to find the warn line of a refusal. */
function warnings(server: TestServer) {
  return server.logs.map((l) => JSON.parse(l)).filter((l) => l.level === "warn");
}

async function withServer(
  overrides: Parameters<typeof startServer>[0],
  fn: (server: TestServer) => Promise<void>,
  options: Parameters<typeof startServer>[1] = {},
): Promise<void> {
  const server = startServer(overrides, options);
  try {
    await fn(server);
  } finally {
    await server.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Pure functions

Deno.test("constantTimeEqual: true for equal keys, false for unequal and different-length ones", () => {
  assert.equal(constantTimeEqual("s3cret-key-s3cret", "s3cret-key-s3cret"), true);
  assert.equal(constantTimeEqual("", ""), true);
  assert.equal(constantTimeEqual("s3cret-key-s3creT", "s3cret-key-s3cret"), false);
  assert.equal(constantTimeEqual("s3cret", "s3cret-key-s3cret"), false);
  assert.equal(constantTimeEqual("s3cret-key-s3cret-and-more", "s3cret-key-s3cret"), false);
  assert.equal(constantTimeEqual("", "s3cret-key-s3cret"), false);
  assert.equal(constantTimeEqual("zoë", "zoe"), false);
});

Deno.test("the API compares its key only through constantTimeEqual", async () => {
  const source = await Deno.readTextFile(`${ROOT}src/api.ts`);
  assert.match(source, /import \{[^}]*\bconstantTimeEqual\b[^}]*\} from "\.\/auth\.ts"/);
  assert.match(source, /constantTimeEqual\(match\[1\]!?, apiKey\)/);
  // Neither the configured key nor the presented one is ever compared any other way.
  const compare = String.raw`(===?|!==?)`;
  for (const operand of [String.raw`(deps\.)?apiKey\b`, String.raw`match\[1\]`]) {
    assert.doesNotMatch(source, new RegExp(`${compare}\\s*${operand}|${operand}\\s*${compare}`));
    assert.doesNotMatch(source, new RegExp(`${operand}\\.(startsWith|includes|localeCompare)`));
  }
});

Deno.test("room patterns: exact paths, prefixes ending in /*, normalised like URL paths", () => {
  assert.equal(parseRoomPattern("/lobby"), "/lobby");
  assert.equal(parseRoomPattern("/stocks/*"), "/stocks/*");
  assert.equal(parseRoomPattern("/*"), "/*");
  assert.equal(parseRoomPattern("/café"), "/caf%C3%A9");
  for (
    const bad of ["lobby", "", "*", "//evil.example/x", "/a/../b", "/a/%2e%2e/b", "/a?b", "/a#b"]
  ) {
    assert.equal(parseRoomPattern(bad), null, bad);
  }
  assert.equal(parseRoom("/a\\b"), null);
  assert.equal(parseRoom("/%zz"), null);

  const patterns = ["/lobby", "/stocks/*"];
  assert.equal(roomAllowed(patterns, "/lobby"), true);
  assert.equal(roomAllowed(patterns, "/stocks/acme"), true);
  assert.equal(roomAllowed(patterns, "/stocks/us/acme"), true);
  assert.equal(roomAllowed(patterns, "/stocks"), false, "a prefix does not include itself");
  assert.equal(roomAllowed(patterns, "/stocksx"), false);
  assert.equal(roomAllowed(patterns, "/lobby/x"), false, "an exact path is exact");
  assert.equal(roomAllowed(patterns, "/"), false);
  assert.equal(roomAllowed(["/*"], "/anything/at/all"), true);
  assert.equal(roomAllowed([], "/lobby"), false, "an empty list allows nothing");
  assert.equal(roomAllowed(undefined, "/lobby"), true, "no list allows everything");
});

Deno.test("loadPublicKey takes RSA and EC P-256 public keys and refuses anything else", async () => {
  const rsa = await jose.generateKeyPair("RS256", { extractable: true });
  assert.equal((await loadPublicKey(await jose.exportSPKI(rsa.publicKey))).alg, "RS256");
  const ec = await jose.generateKeyPair("ES256", { extractable: true });
  assert.equal((await loadPublicKey(await jose.exportSPKI(ec.publicKey))).alg, "ES256");
  await assert.rejects(
    loadPublicKey(await jose.exportPKCS8(rsa.privateKey)),
    { name: "KeyError", message: /private key/ },
  );
  await assert.rejects(loadPublicKey("not a pem"), { name: "KeyError" });
  const p384 = await jose.generateKeyPair("ES384", { extractable: true });
  await assert.rejects(
    loadPublicKey(await jose.exportSPKI(p384.publicKey)),
    { name: "KeyError", message: /RSA or EC P-256/ },
  );
  const small = await crypto.subtle.generateKey(
    {
      name: "RSASSA-PKCS1-v1_5",
      modulusLength: 1024,
      publicExponent: new Uint8Array([1, 0, 1]),
      hash: "SHA-256",
    },
    true,
    ["sign", "verify"],
  );
  await assert.rejects(
    loadPublicKey(await jose.exportSPKI(small.publicKey)),
    { name: "KeyError", message: /1024 bits/ },
  );
});

Deno.test("the verifier reports why each bad token is refused", async () => {
  const verify = createVerifier({ key: { secret: SECRET }, clockSkew: 0 });
  const reason = async (token: string) => {
    const check = await verify(token);
    return check.ok ? "ok" : check.reason;
  };
  assert.equal(await reason(await sign({ sub: "a" })), "ok");
  assert.equal(await reason(await sign({}, { exp: nowSeconds() - 10 })), "expired");
  assert.equal(await reason(await sign({}, { nbf: nowSeconds() + 60 })), "not_yet_valid");
  assert.equal(
    await reason(await sign({}, { key: encoder.encode(SECRET.toUpperCase()) })),
    "bad_signature",
  );
  assert.equal(await reason(new jose.UnsecuredJWT({ sub: "a" }).encode()), "bad_algorithm");
  assert.equal(await reason("not.a.token"), "malformed");
  assert.equal(await reason(""), "malformed");
  assert.equal(await reason(await sign({ sub: "x".repeat(129) })), "bad_claims");
  assert.equal(await reason(await sign({ sub: 42 } as unknown as jose.JWTPayload)), "bad_claims");
  assert.equal(await reason(await sign({ name: "bell\u0007" })), "bad_claims");
  assert.equal(await reason(await sign({ rooms: "/lobby" })), "bad_claims");
  assert.equal(await reason(await sign({ rooms: ["lobby"] })), "bad_claims");
  assert.equal(
    await reason(await sign({ nbf: "soon" } as unknown as jose.JWTPayload)),
    "bad_claims",
  );
});

// ---------------------------------------------------------------------------------------------
// Connections with --jwt-secret

Deno.test("without --jwt-secret or --jwt-public-key, connections need no token", async () => {
  await withServer({}, async (server) => {
    const { client, welcome } = await chatClient(server.ws("/open?name=Ada"));
    assert.equal(welcome.name, "Ada");
    await client.close();
  });
});

Deno.test("with --jwt-secret, a valid token connects: sub is the id, name the display name", async () => {
  await withServer({ jwtSecret: SECRET }, async (server) => {
    const token = await sign({ sub: "alice", name: "Alice" });
    const { client, welcome } = await chatClient(server.ws(`/lobby?name=Other&token=${token}`));
    assert.equal(welcome.id, "alice");
    assert.equal(welcome.name, "Alice", "the token's name wins over ?name=");
    const anonymous = await sign({});
    const { client: guest, welcome: wg } = await chatClient(server.ws(`/lobby?token=${anonymous}`));
    assert.match(wg.id, /^[0-9a-f]{6}-/, "no sub: a generated id");
    assert.match(wg.name, /^guest-/);
    const raw = await rawClient(server.ws(`/lobby?token=${token}`));
    await Promise.all([client.close(), guest.close(), raw.close()]);
  });
});

Deno.test("a missing, expired, not-yet-valid or wrongly signed token is refused with 401 and a warning", async () => {
  await withServer({ jwtSecret: SECRET, jwtClockSkew: 0 }, async (server) => {
    const cases: [string | undefined, string][] = [
      [undefined, "missing"],
      ["", "missing"],
      [await sign({ sub: "a" }, { exp: nowSeconds() - 5 }), "expired"],
      [await sign({ sub: "a" }, { nbf: nowSeconds() + 60 }), "not_yet_valid"],
      [
        await sign({ sub: "a" }, { key: encoder.encode("another-secret-of-enough-length-000") }),
        "bad_signature",
      ],
      ["garbage", "malformed"],
    ];
    for (const [token, detail] of cases) {
      const before = warnings(server).length;
      const r = await refusal(server, "/lobby", token);
      assert.equal(r.status, 401, detail);
      assert.equal(r.code, "invalid_token", detail);
      assert.match(r.head, /^www-authenticate: Bearer realm="chorus", error="invalid_token"$/im);
      const warn = warnings(server).slice(before);
      assert.equal(warn.length, 1, `one warn line for ${detail}`);
      assert.equal(warn[0].msg, "upgrade refused");
      assert.equal(warn[0].status, 401);
      assert.equal(warn[0].detail, detail);
      assert.ok(!JSON.stringify(warn[0]).includes(token || "no token"), "the token is not logged");
    }
    assert.equal(server.hub.connections, 0);
    const metrics = await (await fetch(`${server.origin}/metrics`)).text();
    assert.match(metrics, /chorus_upgrades_refused_total\{reason="bad_token"\} 6/);
  });
});

Deno.test("alg none and an HS256 token against an RS256 key are refused with 401", async () => {
  const { publicKey, privateKey } = await jose.generateKeyPair("RS256", { extractable: true });
  const pem = await jose.exportSPKI(publicKey);
  await withServer({ jwtPublicKey: "rs256.pem" }, async (server) => {
    const good = await sign({ sub: "rsa-user" }, { alg: "RS256", key: privateKey });
    const { client, welcome } = await chatClient(server.ws(`/r?token=${good}`));
    assert.equal(welcome.id, "rsa-user");
    await client.close();

    const none = new jose.UnsecuredJWT({ sub: "mallory" }).setExpirationTime("1h").encode();
    // An HS256 token "signed" with the public key's text: the classic algorithm confusion.
    const confused = await sign({ sub: "mallory" }, { alg: "HS256", key: encoder.encode(pem) });
    const hs = await sign({ sub: "mallory" });
    for (const token of [none, confused, hs]) {
      const r = await refusal(server, "/r", token);
      assert.deepEqual([r.status, r.code], [401, "invalid_token"]);
    }
    const details = warnings(server).map((w) => w.detail);
    assert.deepEqual(details, ["bad_algorithm", "bad_algorithm", "bad_algorithm"]);
  }, { jwtPublicKeyPem: pem });
});

Deno.test("an ES256 public key verifies ES256 tokens and refuses RS256 ones", async () => {
  const ec = await jose.generateKeyPair("ES256", { extractable: true });
  const rsa = await jose.generateKeyPair("RS256", { extractable: true });
  const pem = await jose.exportSPKI(ec.publicKey);
  await withServer({ jwtPublicKey: "es256.pem" }, async (server) => {
    const good = await sign({ sub: "ec-user" }, { alg: "ES256", key: ec.privateKey });
    const { client, welcome } = await chatClient(server.ws(`/r?token=${good}`));
    assert.equal(welcome.id, "ec-user");
    await client.close();
    const wrong = await sign({ sub: "ec-user" }, { alg: "RS256", key: rsa.privateKey });
    assert.equal((await refusal(server, "/r", wrong)).status, 401);
  }, { jwtPublicKeyPem: pem });
});

Deno.test("--jwt-audience and --jwt-issuer refuse tokens for another audience or issuer", async () => {
  await withServer(
    { jwtSecret: SECRET, jwtAudience: "chorus", jwtIssuer: "https://id.example" },
    async (server) => {
      const ok = await sign({}, { aud: "chorus", iss: "https://id.example" });
      assert.equal((await refusal(server, "/r", ok)).status, 101);
      for (
        const token of [
          await sign({}, { aud: "other", iss: "https://id.example" }),
          await sign({}, { aud: "chorus", iss: "https://evil.example" }),
          await sign({}),
        ]
      ) {
        const r = await refusal(server, "/r", token);
        assert.deepEqual([r.status, r.code], [401, "invalid_token"]);
      }
      assert.ok(warnings(server).every((w) => w.detail === "bad_claims"));
    },
  );
});

Deno.test("the clock skew allowance accepts a token that expired moments ago", async () => {
  const lately = await sign({ sub: "late" }, { exp: nowSeconds() - 5 });
  await withServer({ jwtSecret: SECRET, jwtClockSkew: 30 }, async (server) => {
    assert.equal((await refusal(server, "/r", lately)).status, 101);
    const early = await sign({}, { nbf: nowSeconds() + 5 });
    assert.equal((await refusal(server, "/r", early)).status, 101);
    const tooEarly = await sign({}, { nbf: nowSeconds() + 120 });
    assert.equal((await refusal(server, "/r", tooEarly)).status, 401);
  });
});

Deno.test("a token's rooms claim admits exact rooms and prefixes; other rooms get 403", async () => {
  await withServer({ jwtSecret: SECRET }, async (server) => {
    const token = await sign({ sub: "bob", rooms: ["/lobby", "/stocks/*", "/café"] });
    for (const path of ["/lobby", "/stocks/acme", "/stocks/us/acme", "/caf%C3%A9"]) {
      assert.equal((await refusal(server, path, token)).status, 101, path);
    }
    for (const path of ["/stocks", "/lobby/x", "/", "/other"]) {
      const before = warnings(server).length;
      const r = await refusal(server, path, token);
      assert.deepEqual([r.status, r.code], [403, "forbidden_room"], path);
      const [warn] = warnings(server).slice(before);
      assert.deepEqual([warn.msg, warn.status, warn.sub, warn.room], [
        "upgrade refused",
        403,
        "bob",
        path,
      ]);
    }
    const metrics = await (await fetch(`${server.origin}/metrics`)).text();
    assert.match(metrics, /chorus_upgrades_refused_total\{reason="forbidden_room"\} 4/);
  });
});

Deno.test("a member whose token sets its name cannot rename; others still can", async () => {
  await withServer({ jwtSecret: SECRET }, async (server) => {
    const { client: fixed } = await chatClient(
      server.ws(`/r?token=${await sign({ sub: "ann", name: "Ann" })}`),
    );
    fixed.sendEvent({ type: "rename", name: "Queen Ann" });
    const error = await fixed.next("error");
    assert.equal(error.code, "name_locked");
    fixed.say("still here");
    assert.deepEqual((await fixed.next("message")).from, { id: "ann", name: "Ann" });

    const { client: free } = await chatClient(
      server.ws(`/r?token=${await sign({ sub: "ben" })}`),
    );
    free.sendEvent({ type: "rename", name: "Benjamin" });
    assert.equal((await free.until("rename")).name, "Benjamin");
    await Promise.all([fixed.close(), free.close()]);
  });
});

Deno.test("one user on two connections has the same id twice; each connection works on its own", async () => {
  await withServer({ jwtSecret: SECRET }, async (server) => {
    const token = await sign({ sub: "carol", name: "Carol" });
    const { client: tab1 } = await chatClient(server.ws(`/r?token=${token}`));
    const { client: tab2, welcome } = await chatClient(server.ws(`/r?token=${token}`));
    assert.deepEqual(welcome.members, [
      { id: "carol", name: "Carol" },
      { id: "carol", name: "Carol" },
    ]);
    assert.deepEqual(await tab1.next("join"), { type: "join", id: "carol", name: "Carol" });
    await tab1.close();
    assert.deepEqual(await tab2.next("leave"), { type: "leave", id: "carol", name: "Carol" });
    tab2.say("tab 2 still works");
    assert.equal((await tab2.next("message")).text, "tab 2 still works");
    assert.equal(server.hub.connections, 1);
    await tab2.close();
  });
});

Deno.test('an open socket is closed with 4001 "token expired" when its token expires', async () => {
  await withServer({ jwtSecret: SECRET, jwtClockSkew: 0 }, async (server) => {
    const short = await sign({ sub: "dave" }, { exp: nowSeconds() + 2 });
    const long = await sign({ sub: "erin" });
    const { client: chat } = await chatClient(server.ws(`/r?token=${short}`));
    const raw = await rawClient(server.ws(`/r?token=${short}`));
    const { client: stays } = await chatClient(server.ws(`/r?token=${long}`));
    assert.deepEqual(await chat.closed, { code: 4001, reason: "token expired" });
    assert.deepEqual(await raw.closed, { code: 4001, reason: "token expired" });
    await waitFor(() => server.hub.connections === 1, "the expired connections are gone");
    const dropped = server.logs.map((l) => JSON.parse(l))
      .filter((l) => l.msg === "connection closed by policy" && l.reason === "token_expired");
    assert.equal(dropped.length, 2);
    stays.say("unaffected");
    assert.equal((await stays.until("message")).text, "unaffected");
    await stays.close();
  });
});

Deno.test("a socket closed before its token expires leaves no timer behind", async () => {
  // The test sanitizer fails this test if the expiry timer outlives the closed socket.
  await withServer({ jwtSecret: SECRET }, async (server) => {
    const client = await rawClient(server.ws(`/r?token=${await sign({ sub: "fay" })}`));
    await client.close();
    await waitFor(() => server.hub.connections === 0, "the connection is gone");
  });
});

// ---------------------------------------------------------------------------------------------
// main.ts: the token subcommand and --jwt-public-key

Deno.test("main.ts token prints a token the server accepts, with sub, name, rooms and ttl", async () => {
  const out = await runMain(
    ["token", "--sub", "alice", "--name", "Alice", "--rooms", "/lobby,/stocks/*", "--ttl", "15m"],
    { CHORUS_JWT_SECRET: SECRET },
  );
  assert.equal(out.code, 0, out.stderr);
  assert.equal(out.stderr, "");
  const token = out.stdout.trim();
  assert.equal(out.stdout, `${token}\n`);
  const check = await createVerifier({ key: { secret: SECRET }, clockSkew: 0 })(token);
  assert.ok(check.ok);
  assert.equal(check.grant.sub, "alice");
  assert.equal(check.grant.name, "Alice");
  assert.deepEqual(check.grant.rooms, ["/lobby", "/stocks/*"]);
  const ttl = (check.grant.expiresAt! - Date.now()) / 1000;
  assert.ok(ttl > 14 * 60 && ttl <= 15 * 60, `expires in ${ttl} s`);

  await withServer({ jwtSecret: SECRET }, async (server) => {
    const { client, welcome } = await chatClient(server.ws(`/stocks/acme?token=${token}`));
    assert.deepEqual([welcome.id, welcome.name], ["alice", "Alice"]);
    await client.close();
    assert.equal((await refusal(server, "/elsewhere", token)).status, 403);
  });

  const flagged = await runMain(["token", "--sub", "bob", "--jwt-secret", SECRET]);
  assert.equal(flagged.code, 0);
  const defaults = await createVerifier({ key: { secret: SECRET }, clockSkew: 0 })(
    flagged.stdout.trim(),
  );
  assert.ok(defaults.ok);
  assert.equal(defaults.grant.rooms, undefined, "no --rooms: every room");
  assert.ok(defaults.grant.expiresAt! - Date.now() > 3590_000, "default ttl is an hour");
});

Deno.test("main.ts token refuses bad input with one line on stderr and exit 2", async () => {
  const env = { CHORUS_JWT_SECRET: SECRET };
  for (
    const [args, e, pattern] of [
      [
        ["token", "--sub", "a"],
        {},
        /^chorus: token: --jwt-secret or CHORUS_JWT_SECRET is required$/m,
      ],
      [["token"], env, /^chorus: token: --sub is required$/m],
      [["token", "--sub", "a", "--ttl", "forever"], env, /^chorus: --ttl: expected a duration/],
      [["token", "--sub", "a", "--ttl", "0s"], env, /^chorus: --ttl: expected a duration/],
      [["token", "--sub", "a", "--rooms", "lobby"], env, /^chorus: --rooms: "lobby" is not/],
      [["token", "--sub", "a", "--name", " "], env, /^chorus: --name: name must not be empty$/m],
      [
        ["token", "--sub", "a", "--jwt-secret", "short"],
        {},
        /^chorus: --jwt-secret: must be at least 32/,
      ],
      [["token", "--sub", "a", "--bogus"], env, /^chorus: Unknown option '--bogus'/],
    ] as [string[], Record<string, string>, RegExp][]
  ) {
    const out = await runMain(args, e);
    assert.equal(out.code, 2, args.join(" "));
    assert.match(out.stderr, pattern);
    assert.equal(out.stderr.trimEnd().split("\n").length, 1, `one line: ${out.stderr}`);
    assert.equal(out.stdout, "");
  }
  const help = await runMain(["token", "--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^Usage: chorus token --sub ID/);
});

Deno.test("--jwt-public-key: unreadable or unusable files stop the server with exit 2", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const privatePem = `${dir}/private.pem`;
    const rsa = await jose.generateKeyPair("RS256", { extractable: true });
    await Deno.writeTextFile(privatePem, await jose.exportPKCS8(rsa.privateKey));
    const cases: [string[], RegExp][] = [
      [
        ["--jwt-public-key", `${dir}/public.pem`],
        /^chorus: --jwt-public-key: cannot read .*public\.pem: .*\(grant --allow-read=/,
      ],
      [["--jwt-public-key", "/nonexistent/key.pem"], /^chorus: --jwt-public-key: cannot read /],
      [["--jwt-public-key", "deno.json"], /^chorus: --jwt-public-key: deno\.json: expected a PEM/],
      [["--jwt-public-key", "x.pem", "--jwt-secret", SECRET], /mutually exclusive/],
      [["--jwt-audience", "chorus"], /need --jwt-secret or --jwt-public-key/],
      [["--jwt-secret", "short"], /^chorus: --jwt-secret: must be at least 32 characters$/m],
    ];
    for (const [args, pattern] of cases) {
      const out = await runToEnd(DENO, {
        args: [
          "run",
          "--allow-net",
          "--allow-env=PORT,CHORUS_*",
          "--allow-read=.",
          "main.ts",
          ...args,
        ],
        cwd: ROOT,
      });
      const stderr = out.stderr;
      assert.equal(out.code, 2, `${args.join(" ")}: ${stderr}`);
      assert.match(stderr, pattern);
    }
    const out = await runToEnd(DENO, {
      args: [
        "run",
        "--allow-net",
        "--allow-env",
        `--allow-read=${dir}`,
        "main.ts",
        "--jwt-public-key",
        privatePem,
      ],
      cwd: ROOT,
    });
    assert.equal(out.code, 2);
    assert.match(out.stderr, /^chorus: --jwt-public-key: .*private key/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("main.ts with --jwt-public-key and read access to it verifies RS256 tokens", async () => {
  const dir = await Deno.makeTempDir();
  const { publicKey, privateKey } = await jose.generateKeyPair("RS256", { extractable: true });
  await Deno.writeTextFile(`${dir}/public.pem`, await jose.exportSPKI(publicKey));
  const main = await startMain(
    ["--jwt-public-key", `${dir}/public.pem`],
    {},
    [
      DENO,
      "run",
      "--unstable-net",
      "--allow-net",
      "--allow-env=PORT,CHORUS_*",
      `--allow-read=./src,./static,${dir}`,
      "main.ts",
    ],
  );
  try {
    const token = await sign({ sub: "rs" }, { alg: "RS256", key: privateKey });
    const { client, welcome } = await chatClient(`ws://127.0.0.1:${main.port}/r?token=${token}`);
    assert.equal(welcome.id, "rs");
    await client.close();
    const refused = new Client(`ws://127.0.0.1:${main.port}/r`);
    await assert.rejects(refused.opened);
    await refused.closed;
  } finally {
    main.child.kill("SIGTERM");
    const out = await main.output();
    assert.equal(out.code, 0);
    assert.match(out.stderr, /upgrade refused .*status=401 code=invalid_token detail=missing/);
    await Deno.remove(dir, { recursive: true });
  }
});
