// Test-only: Prisma's query engine behind the HTTP API of its native binary, so that LiteLLM's real proxy runs on a
// real PostgreSQL on a machine that cannot download the binary (docs/testing.md, "The real proxy on PostgreSQL").
//
// prisma-client-python 0.15.0 starts `query-engine -p PORT ...` and speaks GraphQL to it over HTTP. The npm registry
// has the same engine commit compiled to WebAssembly, which speaks only Prisma's JSON protocol and reaches the
// database through a driver adapter (pg). This program serves the binary's routes and rewrites each GraphQL request
// into the JSON protocol; answers are renamed back to the `result` alias the client expects.
import { readFileSync } from "node:fs";
import http from "node:http";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { parse } from "graphql";
import pg from "pg";
import { PrismaPg } from "@prisma/adapter-pg";
import { bindAdapter } from "@prisma/driver-adapter-utils";

const require = createRequire(import.meta.url);
const COMMIT = "393aa359c9ad4a4bb28630fb5613f9c281cde053";

async function loadEngine() {
  const dir = join(dirname(require.resolve("@prisma/query-engine-wasm/package.json")), "postgresql");
  const glue = await import(join(dir, "query_engine_bg.js"));
  const { instance } = await WebAssembly.instantiate(readFileSync(join(dir, "query_engine_bg.wasm")),
    { "./query_engine_bg.js": glue });
  glue.__wbg_set_wasm(instance.exports);
  const info = glue.getBuildTimeInfo();
  if (info.commit !== COMMIT) throw new Error(`engine commit ${info.commit}, expected ${COMMIT}`);
  return glue.QueryEngine;
}

// ---- the datamodel: which fields hold Json, Bytes, DateTime, ... and which point at other models

function readDatamodel(text) {
  const models = {};
  for (const [, name, body] of text.matchAll(/^model\s+(\w+)\s*\{([\s\S]*?)^\}/gm)) {
    const fields = {};
    for (const line of body.split("\n")) {
      const m = line.trim().match(/^(\w+)\s+(\w+)(\[\])?\??/);
      if (m && !line.trim().startsWith("@@")) fields[m[1]] = m[2];
    }
    models[name] = fields;
  }
  return models;
}

function databaseUrl(datamodel) {
  if (process.env.OVERWRITE_DATASOURCES) {
    const [first] = JSON.parse(process.env.OVERWRITE_DATASOURCES);
    if (first?.url) return first.url;
  }
  const m = datamodel.match(/url\s*=\s*env\("(\w+)"\)/);
  const url = m && process.env[m[1]];
  if (!url) throw new Error("no database url: set the datasource's env variable");
  return url;
}

// Postgres `name` and `name[]` (LiteLLM's startup queries ARRAY_AGG(viewname)) are unknown to the pg adapter: read
// them as text, which they are on the wire.
const AS_TEXT = { 19: 25, 1003: 1009 };

function textNames(queryable) {
  return new Proxy(queryable, {
    get(target, prop) {
      if (prop === "query") {
        return async (...args) => {
          const result = await target.query(...args);
          for (const field of result?.fields ?? []) field.dataTypeID = AS_TEXT[field.dataTypeID] ?? field.dataTypeID;
          return result;
        };
      }
      if (prop === "connect") return async () => textNames(await target.connect());
      const value = target[prop];
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

// ---- GraphQL (prisma-client-python's dialect) -> JSON protocol

const ACTIONS = [
  ["findUnique", "OrThrow", "findUniqueOrThrow"], ["findFirst", "OrThrow", "findFirstOrThrow"],
  ["findUnique", "", "findUnique"], ["findFirst", "", "findFirst"], ["findMany", "", "findMany"],
  ["createOne", "", "createOne"], ["createMany", "", "createMany"], ["updateOne", "", "updateOne"],
  ["updateMany", "", "updateMany"], ["deleteOne", "", "deleteOne"], ["deleteMany", "", "deleteMany"],
  ["upsertOne", "", "upsertOne"], ["aggregate", "", "aggregate"], ["groupBy", "", "groupBy"],
];
const TAGGED = new Set(["Json", "Bytes", "DateTime", "Decimal", "BigInt"]);
// Keys under a scalar field whose values are not values of that field's type.
const NOT_A_VALUE = new Set(["mode", "path", "string_contains", "string_starts_with", "string_ends_with"]);

function splitAction(name, models) {
  if (name === "queryRaw" || name === "executeRaw") return { action: name };
  for (const [prefix, suffix, action] of ACTIONS) {
    if (!name.startsWith(prefix) || !name.endsWith(suffix)) continue;
    const model = name.slice(prefix.length, name.length - suffix.length);
    if (models[model]) return { action, modelName: model };
  }
  throw new Error(`unknown operation ${name}`);
}

function literal(node) {
  switch (node.kind) {
    case "StringValue": case "EnumValue": return node.value;
    case "IntValue": {
      const n = Number(node.value);
      return Number.isSafeInteger(n) ? n : { $type: "BigInt", value: node.value };
    }
    case "FloatValue": return Number(node.value);
    case "BooleanValue": return node.value;
    case "NullValue": return null;
    case "ListValue": return node.values.map(literal);
    case "ObjectValue": return Object.fromEntries(node.fields.map((f) => [f.name.value, literal(f.value)]));
    default: throw new Error(`unsupported GraphQL value ${node.kind}`);
  }
}

function tag(type, value) {
  if (value === null || typeof value === "boolean") return value;
  if (Array.isArray(value)) return value.map((v) => tag(type, v));
  if (typeof value === "object") {
    if (value.$type) return value;
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, NOT_A_VALUE.has(k) ? v : tag(type, v)]));
  }
  if (type === "BigInt" || type === "Decimal") return { $type: type, value: String(value) };
  return { $type: type, value };
}

// Walks arguments with the model they apply to: a field of the model switches to its type (a tagged scalar or
// another model); any other key (where, data, AND, set, connect, ...) keeps the context.
function typed(value, model, models) {
  if (value === null || typeof value !== "object" || value.$type) return value;
  if (Array.isArray(value)) return value.map((v) => typed(v, model, models));
  const out = {};
  for (const [key, v] of Object.entries(value)) {
    const type = models[model]?.[key];
    if (key === "orderBy") out[key] = v; // field names with sort orders, no values
    else if (type && TAGGED.has(type)) out[key] = tag(type, v);
    else if (type && models[type]) out[key] = typed(v, type, models);
    else out[key] = typed(v, model, models);
  }
  return out;
}

function selection(set) {
  const out = {};
  for (const field of set?.selections ?? []) {
    const name = field.name.value;
    if (!field.selectionSet && !field.arguments?.length) {
      out[name] = true;
      continue;
    }
    const sub = { selection: selection(field.selectionSet) };
    if (field.arguments?.length) sub.arguments = Object.fromEntries(field.arguments.map((a) => [a.name.value, literal(a.value)]));
    out[name] = sub;
  }
  return out;
}

function toJsonProtocol(source, models) {
  const [operation] = parse(source).definitions;
  const [field] = operation.selectionSet.selections;
  const { action, modelName } = splitAction(field.name.value, models);
  let args = Object.fromEntries(field.arguments.map((a) => [a.name.value, literal(a.value)]));
  if (modelName) args = typed(args, modelName, models);
  const query = { arguments: args, selection: field.selectionSet ? selection(field.selectionSet) : {} };
  if (modelName && !field.selectionSet) query.selection = { $scalars: true };
  return { alias: field.alias?.value ?? field.name.value, request: { ...(modelName ? { modelName } : {}), action, query } };
}

// The binary's GraphQL answers carry plain values where the JSON protocol tags them.
function untag(value) {
  if (Array.isArray(value)) return value.map(untag);
  if (value === null || typeof value !== "object") return value;
  if (typeof value.$type === "string" && "value" in value) return value.value;
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, untag(v)]));
}

function renamed(answer, alias) {
  if (!answer.data) return answer;
  const [value] = Object.values(answer.data);
  return { data: { [alias]: untag(value) } };
}

// ---- the binary's HTTP API

async function main() {
  const port = Number(process.argv[process.argv.indexOf("-p") + 1]);
  const datamodel = readFileSync(process.env.PRISMA_DML_PATH, "utf8");
  const models = readDatamodel(datamodel);
  const pool = new pg.Pool({ connectionString: databaseUrl(datamodel), max: 10 });
  const QueryEngine = await loadEngine();
  const logLevel = process.env.RUST_LOG === "info" ? "info" : "error";
  const engine = new QueryEngine({ datamodel, logLevel, logQueries: false }, (line) => {
    if (logLevel === "info") process.stderr.write(`${line}\n`);
  }, bindAdapter(new PrismaPg(textNames(pool))));
  await engine.connect("{}");

  async function run(body, txId) {
    if (body.batch) {
      const parts = body.batch.map((item) => toJsonProtocol(item.query, models));
      const request = { batch: parts.map((p) => p.request) };
      if (body.transaction) request.transaction = body.isolationLevel ? { isolationLevel: body.isolationLevel } : {};
      const answer = JSON.parse(await engine.query(JSON.stringify(request), "{}", txId));
      if (!answer.batchResult) return answer;
      return { batchResult: answer.batchResult.map((item, i) => renamed(item, parts[i].alias)) };
    }
    const { alias, request } = toJsonProtocol(body.query, models);
    return renamed(JSON.parse(await engine.query(JSON.stringify(request), "{}", txId)), alias);
  }

  const server = http.createServer(async (req, res) => {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const text = Buffer.concat(chunks).toString("utf8");
    const send = (status, payload) => {
      res.writeHead(status, { "content-type": "application/json" });
      res.end(typeof payload === "string" ? payload : JSON.stringify(payload));
    };
    try {
      const path = req.url.split("?")[0];
      const tx = path.match(/^\/transaction\/([^/]+)\/(commit|rollback)$/);
      if (req.method === "GET" && path === "/status") return send(200, { status: "ok" });
      if (req.method === "GET" && path === "/metrics") return send(200, { counters: [], gauges: [], histograms: [] });
      if (req.method === "POST" && path === "/transaction/start") return send(200, await engine.startTransaction(text, "{}"));
      if (req.method === "POST" && tx) {
        const done = tx[2] === "commit" ? engine.commitTransaction(tx[1], "{}") : engine.rollbackTransaction(tx[1], "{}");
        return send(200, await done);
      }
      if (req.method === "POST" && path === "/") return send(200, await run(JSON.parse(text), req.headers["x-transaction-id"]));
      return send(404, { errors: [{ error: `no route ${req.method} ${path}` }] });
    } catch (error) {
      return send(200, { errors: [{ error: String(error?.message ?? error), user_facing_error: { message: String(error?.message ?? error) } }] });
    }
  });
  server.listen(port, "127.0.0.1");
  const stop = async () => {
    server.close();
    await engine.disconnect("{}").catch(() => {});
    await pool.end().catch(() => {});
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((error) => {
  process.stderr.write(`query-engine bridge: ${error?.stack ?? error}\n`);
  process.exit(1);
});
