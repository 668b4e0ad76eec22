// @supabase/stripe-sync-engine as a webhook endpoint, for `tally bench`.
//
//   SYNC_ENGINE_DIR=<dir with node_modules> DATABASE_URL=... node sync_engine_server.cjs migrate
//   SYNC_ENGINE_DIR=... DATABASE_URL=... PORT=... DB_POOL_SIZE=16 \
//     STRIPE_WEBHOOK_SECRET=whsec_... node sync_engine_server.cjs serve
//
// The package is installed by the benchmark into a scratch directory outside
// the repository (SYNC_ENGINE_DIR); only this wrapper is ours. It is loaded as
// CommonJS because the package's ES module build resolves its migrations
// through __dirname, which ES modules do not have.
//
// `serve` answers POST /webhooks/stripe with the package's own
// processWebhook(rawBody, signature): 200 once stored, 400 for a bad
// signature, 500 for anything else; GET /readyz once the database answers.
// The package must never call Stripe's API here: refetching and backfilling
// are off, and its Stripe client points at a closed local port, so a call
// that slipped through would fail (and count as an error), not leave the
// machine.
"use strict";

const http = require("node:http");
const path = require("node:path");
const { createRequire } = require("node:module");

const engineRequire = createRequire(path.join(process.env.SYNC_ENGINE_DIR, "package.json"));
const { StripeSync, runMigrations } = engineRequire("@supabase/stripe-sync-engine");
const Stripe = engineRequire("stripe");

const PLACEHOLDER_KEY = "sk_test_tally_bench_placeholder_never_used";
const CLOSED_PORT = 9; // discard: nothing listens there on loopback

const quietLogger = {
  level: "warn",
  trace() {},
  debug() {},
  info() {},
  warn: (...args) => console.error(...args),
  error: (...args) => console.error(...args),
  fatal: (...args) => console.error(...args),
  child() {
    return quietLogger;
  },
};

async function migrate() {
  await runMigrations({
    databaseUrl: process.env.DATABASE_URL,
    schema: "stripe",
    logger: quietLogger,
  });
}

function createSync() {
  const sync = new StripeSync({
    poolConfig: {
      connectionString: process.env.DATABASE_URL,
      max: Number(process.env.DB_POOL_SIZE || "16"),
    },
    stripeSecretKey: PLACEHOLDER_KEY,
    stripeWebhookSecret: process.env.STRIPE_WEBHOOK_SECRET,
    backfillRelatedEntities: false,
    revalidateObjectsViaStripeApi: [],
    autoExpandLists: false,
  });
  sync.stripe = new Stripe(PLACEHOLDER_KEY, {
    host: "127.0.0.1",
    port: CLOSED_PORT,
    protocol: "http",
    maxNetworkRetries: 0,
  });
  return sync;
}

function readBody(request) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    request.on("data", (chunk) => chunks.push(chunk));
    request.on("end", () => resolve(Buffer.concat(chunks)));
    request.on("error", reject);
  });
}

function answer(response, status, document) {
  const body = JSON.stringify(document);
  response.writeHead(status, {
    "Content-Type": "application/json",
    "Content-Length": Buffer.byteLength(body),
  });
  response.end(body);
}

async function handle(sync, request, response) {
  if (request.method === "GET" && request.url === "/readyz") {
    await sync.postgresClient.pool.query("select 1");
    return answer(response, 200, { status: "ready" });
  }
  if (request.method !== "POST" || request.url !== "/webhooks/stripe") {
    return answer(response, 404, { error: "not found" });
  }
  const body = await readBody(request);
  try {
    await sync.processWebhook(body, request.headers["stripe-signature"]);
  } catch (error) {
    const badSignature = error && error.type === "StripeSignatureVerificationError";
    return answer(response, badSignature ? 400 : 500, { error: String(error && error.message) });
  }
  return answer(response, 200, { received: true });
}

function serve() {
  const sync = createSync();
  const server = http.createServer((request, response) => {
    handle(sync, request, response).catch((error) =>
      answer(response, 500, { error: String(error && error.message) }),
    );
  });
  server.keepAliveTimeout = 60_000;
  server.listen(Number(process.env.PORT), "127.0.0.1");
  process.on("SIGTERM", () => {
    server.close(() => sync.close().then(() => process.exit(0)));
    server.closeAllConnections();
  });
}

const mode = process.argv[2];
if (mode === "migrate") {
  migrate().catch((error) => {
    console.error(error);
    process.exit(1);
  });
} else if (mode === "serve") {
  serve();
} else {
  console.error("usage: node sync_engine_server.cjs migrate|serve");
  process.exit(2);
}
