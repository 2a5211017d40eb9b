// Cloudflare's D1 REST API, answered by D1's own engine as workerd runs it locally.
//
// The tests start this Worker under `wrangler dev --local` (see tests/common/workerd.rs). Every
// statement d1r2 sends goes to the D1 binding (`prepare().bind().raw()`, `batch()`), so D1's
// SQLite build, its authorizer, its limits and its JSON typing of values answer, not our
// imitation of them (tests/fakes/d1.rs). Only the REST layer around the binding is ours, and it
// follows Cloudflare's API documentation (developers.cloudflare.com/api, "D1 > Database"):
// - every answer is the v4 envelope `{success, errors: [{code, message}], messages, result}`;
// - `/raw` answers one `{results: {columns, rows}, success, meta}` per statement, `/query` one
//   `{results: [row objects], success, meta}`; a body is `{sql, params}` or `{batch: [...]}`,
//   and `sql` may hold several statements joined by semicolons. The documentation says they run
//   "as a batch"; here they run one after another through `raw()`, each on its own, because the
//   binding's `batch()` answers rows as objects, which lose the column order and repeated names;
// - `meta` has the documented fields, but the binding's `raw()` does not hand D1's own meta
//   back, so its figures are placeholders (d1r2 reads none of them): see `meta()` below;
// - SQL errors are HTTP 400 with code 7500 and D1's own message, as the documented examples show;
// - the import API (`init`, `PUT` to the upload URL, `ingest`, `poll`), in the shapes wrangler's
//   own client reads (as tests/fakes/d1.rs answers them), applies the file with one `batch()`,
//   which D1 runs as one transaction: all of the file or none of it.
//
// The databases, the token and the account come from the `vars` the test writes into the
// generated wrangler configuration.

export default {
  async fetch(request, env) {
    try {
      return await route(request, env);
    } catch (e) {
      return failure(500, 7500, `the test Worker failed: ${e && e.stack ? e.stack : e}`);
    }
  },
};

const uploads = new Map();
const imports = new Map();

async function route(request, env) {
  const url = new URL(request.url);
  if (url.pathname === "/health") {
    return new Response("ok");
  }
  if (url.pathname.startsWith("/upload/") && request.method === "PUT") {
    const body = new Uint8Array(await request.arrayBuffer());
    const etag = await md5(body);
    uploads.set(decodeURIComponent(url.pathname.slice("/upload/".length)), body);
    return new Response(null, { status: 200, headers: { etag: `"${etag}"` } });
  }
  if (request.headers.get("authorization") !== `Bearer ${env.TOKEN}`) {
    return failure(401, 10000, "Authentication error");
  }
  const m = url.pathname.match(/^\/client\/v4\/accounts\/([^/]+)\/d1\/database(?:\/([^/]+)(\/.*)?)?$/);
  if (!m) {
    return failure(404, 7000, "No route for that URI");
  }
  const [, account, id, rest] = m;
  if (account !== env.ACCOUNT) {
    return failure(403, 7403, "The given account is not valid or is not authorized to access this service");
  }
  const databases = JSON.parse(env.DATABASES);
  if (id === undefined && request.method === "GET") {
    return list(databases, url.searchParams);
  }
  const db = databases.find((d) => d.uuid === id);
  if (!db) {
    return failure(404, 7404, `The database ${id} could not be found`);
  }
  const binding = env[db.binding];
  const action = `${request.method} ${rest ?? ""}`;
  switch (action) {
    case "GET ":
      return envelope(databaseJson(db));
    case "POST /raw":
      return statements(binding, await request.json(), (columns, rows) => ({ columns, rows }));
    case "POST /query":
      return statements(binding, await request.json(), (columns, rows) =>
        rows.map((row) => Object.fromEntries(columns.map((c, i) => [c, row[i]]))),
      );
    case "GET /time_travel/bookmark":
      return envelope({ bookmark: await bookmark(binding) });
    case "POST /import":
      return importAction(binding, db, url, await request.json());
    default:
      return failure(404, 7000, "No route for that URI");
  }
}

function envelope(result, resultInfo) {
  const body = { success: true, errors: [], messages: [], result };
  if (resultInfo) {
    body.result_info = resultInfo;
  }
  return Response.json(body);
}

function failure(status, code, message) {
  return Response.json({ success: false, errors: [{ code, message }], messages: [], result: null }, { status });
}

function databaseJson(db) {
  return {
    uuid: db.uuid,
    name: db.name,
    created_at: "2026-01-01T00:00:00.000Z",
    version: "production",
    num_tables: 0,
    file_size: 0,
  };
}

function list(databases, params) {
  const name = params.get("name");
  const matching = databases.filter((d) => name === null || d.name === name);
  const perPage = Number(params.get("per_page") ?? 1000);
  const page = Number(params.get("page") ?? 1);
  const items = matching.slice((page - 1) * perPage, page * perPage).map(databaseJson);
  return envelope(items, { page, per_page: perPage, count: items.length, total_count: matching.length });
}

/// Runs each statement of the body through the binding, in order; the first error fails the
/// whole request, as D1's REST API does.
async function statements(binding, body, shape) {
  const requests = Array.isArray(body.batch) ? body.batch : [body];
  const results = [];
  for (const { sql, params } of requests) {
    if (typeof sql !== "string") {
      return failure(400, 7400, "sql is required");
    }
    for (const statement of split(sql)) {
      let answer;
      try {
        answer = await binding
          .prepare(statement)
          .bind(...(params ?? []))
          .raw({ columnNames: true });
      } catch (e) {
        return failure(400, 7500, d1Message(e));
      }
      const [columns, ...rows] = answer;
      results.push({ results: shape(columns ?? [], rows), success: true, meta: meta(rows) });
    }
  }
  return envelope(results);
}

/// The documented `meta` fields. `raw()` does not return D1's own meta, so these are not D1's
/// figures: d1r2 reads none of them.
function meta(rows) {
  return {
    served_by: "d1r2-workerd-tests",
    duration: 0,
    changes: 0,
    last_row_id: 0,
    changed_db: false,
    size_after: 0,
    rows_read: rows.length,
    rows_written: 0,
  };
}

/// D1's message without the binding's `D1_ERROR: ` prefix, which the REST API does not add.
function d1Message(e) {
  const message = e && e.message ? e.message : String(e);
  return message.replace(/^D1_ERROR: /, "");
}

/// The bookmark after the latest write, from a session: D1 hands it back with every answer.
async function bookmark(binding) {
  const session = binding.withSession("first-primary");
  await session.prepare("SELECT 1").raw();
  return session.getBookmark();
}

async function importAction(binding, db, url, body) {
  switch (body.action) {
    case "init": {
      if (typeof body.etag !== "string") {
        return failure(400, 7400, "etag is required");
      }
      const filename = `${db.uuid}-${body.etag}.sql`;
      return envelope({ success: true, filename, upload_url: `${url.origin}/upload/${encodeURIComponent(filename)}` });
    }
    case "ingest": {
      const file = uploads.get(body.filename);
      uploads.delete(body.filename);
      if (!file) {
        return failure(400, 7400, "no such upload");
      }
      if ((await md5(file)) !== body.etag) {
        return failure(400, 7400, "etag does not match the upload");
      }
      const at = await bookmark(binding);
      let outcome;
      try {
        const sql = new TextDecoder("utf-8", { fatal: true }).decode(file);
        const prepared = split(sql).map((s) => binding.prepare(s));
        const applied = await binding.batch(prepared);
        outcome = {
          ok: {
            num_queries: applied.length,
            final_bookmark: await bookmark(binding),
            meta: { duration: 0, rows_read: 0, rows_written: 0, size_after: 0 },
          },
        };
      } catch (e) {
        outcome = { error: d1Message(e) };
      }
      imports.set(at, outcome);
      return envelope({ success: true, status: "active", at_bookmark: at, messages: ["Uploaded, now ingesting"], errors: [] });
    }
    case "poll": {
      const outcome = imports.get(body.current_bookmark);
      if (!outcome) {
        return failure(400, 7400, "no import at that bookmark");
      }
      if (outcome.error !== undefined) {
        return envelope({ success: false, status: "error", at_bookmark: body.current_bookmark, error: outcome.error, messages: [], errors: [outcome.error] });
      }
      return envelope({ success: true, status: "complete", at_bookmark: body.current_bookmark, messages: ["Import complete"], errors: [], result: outcome.ok });
    }
    default:
      return failure(400, 7400, "unknown action");
  }
}

async function md5(bytes) {
  const digest = await crypto.subtle.digest("MD5", bytes);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

// SQL split into statements the way SQLite's own `sqlite3_complete()` finds their ends (a
// trigger body's semicolons do not end it), so each statement gets its own answer, as D1's REST
// API gives. Statements that are only blanks and comments are dropped.
const SEMI = 0, WS = 1, OTHER = 2, EXPLAIN = 3, CREATE = 4, TEMP = 5, TRIGGER = 6, END = 7;
// sqlite3_complete's transitions: [state][token]; state 1 is "between statements".
const TRANS = [
  [1, 0, 2, 3, 4, 2, 2, 2],
  [1, 1, 2, 3, 4, 2, 2, 2],
  [1, 2, 2, 2, 2, 2, 2, 2],
  [1, 3, 3, 2, 4, 2, 2, 2],
  [1, 4, 2, 2, 2, 4, 5, 2],
  [6, 5, 5, 5, 5, 5, 5, 5],
  [6, 6, 5, 5, 5, 5, 5, 7],
  [1, 7, 5, 5, 5, 5, 5, 5],
];
const KEYWORDS = { create: CREATE, trigger: TRIGGER, temp: TEMP, temporary: TEMP, end: END, explain: EXPLAIN };

export function split(sql) {
  const out = [];
  let state = 0;
  let start = 0;
  let substance = false;
  let i = 0;
  while (i < sql.length) {
    const c = sql[i];
    let token;
    let next = i + 1;
    if (c === ";") {
      token = SEMI;
    } else if (/\s/.test(c)) {
      token = WS;
    } else if (c === "/" && sql[i + 1] === "*") {
      const close = sql.indexOf("*/", i + 2);
      next = close < 0 ? sql.length : close + 2;
      token = WS;
    } else if (c === "-" && sql[i + 1] === "-") {
      const close = sql.indexOf("\n", i + 2);
      next = close < 0 ? sql.length : close + 1;
      token = WS;
    } else if (c === "[" || c === "`" || c === '"' || c === "'") {
      const close = sql.indexOf(c === "[" ? "]" : c, i + 1);
      next = close < 0 ? sql.length : close + 1;
      token = OTHER;
    } else if (/[A-Za-z0-9_$\u0080-\uffff]/.test(c)) {
      while (next < sql.length && /[A-Za-z0-9_$\u0080-\uffff]/.test(sql[next])) {
        next++;
      }
      token = KEYWORDS[sql.slice(i, next).toLowerCase()] ?? OTHER;
    } else {
      token = OTHER;
    }
    if (token !== WS && token !== SEMI) {
      substance = true;
    }
    state = TRANS[state][token];
    i = next;
    if (token === SEMI && state === 1) {
      if (substance) {
        out.push(sql.slice(start, i));
      }
      start = i;
      substance = false;
    }
  }
  if (substance) {
    out.push(sql.slice(start));
  }
  return out;
}
