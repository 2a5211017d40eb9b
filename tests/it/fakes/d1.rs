//! A fake Cloudflare D1 API: axum in-process, a real SQLite database behind each D1 database,
//! answering in the documented v4 shapes.
//!
//! What it keeps faithful, because d1r2 must cope with it:
//! - the envelope `{success, errors: [{code, message}], messages, result, result_info}` and the
//!   bearer-token check;
//! - `/raw` answers `[{results: {columns, rows}, success, meta}]`, one per statement; values are
//!   JSON as D1 (JavaScript) writes them: integers as doubles (so beyond 2^53 they round), BLOBs as
//!   arrays of bytes, infinity as `null`, invalid UTF-8 replaced by U+FFFD;
//! - `_cf_KV` is listed in the catalog but reading it is refused (`SQLITE_AUTH`), as are
//!   transaction statements and `writable_schema`; `PRAGMA foreign_keys=OFF` is accepted and
//!   changes nothing, as in workerd's D1;
//! - `quote(-0.0)` is `0.0`, as D1's SQLite writes it, and the math functions d1r2 asks D1 for
//!   (`atan2`, `log2`, `pow`, `floor`) are there;
//! - the 100,000-byte statement and 100-parameter limits, the 2,000,000-byte limit on any
//!   string, BLOB or row (`SQLITE_LIMIT_LENGTH`): a `quote()` that would be longer fails, and
//!   expressions at most 100 deep, as workerd's D1 answers;
//! - `meta.rows_read` counts rows visited, not returned: a full scan skipping `OFFSET` rows reads
//!   them all;
//! - the import API: `init` hands out an upload URL, the `PUT` answers the MD5 as `ETag`,
//!   `ingest` applies the whole file as one transaction (foreign keys enforced at the end) and
//!   reports `active`, `poll` then `complete` or `error`;
//! - the Time Travel bookmark endpoint, the bookmark moving with every write (through the API,
//!   an import, or [`FakeD1::execute`]), as D1's does;
//! - injectable failures: 429 with `Retry-After`, 500, 502 and connections dropped mid-answer.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use md5::Digest;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::{Connection, StatementStatus, types::ValueRef};
use serde_json::{Value, json};

pub const TOKEN: &str = "fake-cloudflare-token-5c1e";
pub const ACCOUNT: &str = "0123456789abcdef0123456789abcdef";
const MAX_STATEMENT_BYTES: usize = 100_000;
const MAX_PARAMS: usize = 100;
const MAX_LENGTH: i32 = 2_000_000;
/// D1's SQLite refuses expressions nested deeper than this ("Expression tree is too large").
const MAX_EXPR_DEPTH: i32 = 100;

/// A failure the fake can answer instead of the real thing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    TooMany {
        retry_after: u64,
    },
    Internal,
    BadGateway,
    /// Headers sent, then the connection is cut before the body ends.
    Drop,
}

#[derive(Debug, Default)]
pub struct Counters {
    /// Every API request, failed ones included.
    pub requests: AtomicU64,
    pub query_requests: AtomicU64,
    pub rows_read: AtomicU64,
    pub rows_written: AtomicU64,
    pub faults: AtomicU64,
    /// Microseconds spent answering queries (SQLite and JSON): D1's own share of a run's time.
    pub busy_us: AtomicU64,
    /// The most query requests D1 held at once (answering one, the others waiting their turn):
    /// above one when a client asks for its next page before the last one arrives.
    pub most_queries_at_once: AtomicU64,
    /// Requests answered while one that arrived before them was not yet.
    pub overtaken: AtomicU64,
}

struct Database {
    uuid: String,
    name: String,
    conn: Connection,
    version: u64,
}

#[derive(Default)]
struct Faults {
    scripted: VecDeque<Fault>,
    rate: f64,
    seed: u64,
}

impl Faults {
    fn next(&mut self) -> Option<Fault> {
        if let Some(f) = self.scripted.pop_front() {
            return Some(f);
        }
        if self.rate <= 0.0 {
            return None;
        }
        // xorshift: reproducible runs for a given seed.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let unit = (self.seed % 1_000_000) as f64 / 1_000_000.0;
        if unit >= self.rate {
            return None;
        }
        Some(match self.seed % 4 {
            0 => Fault::TooMany { retry_after: 0 },
            1 => Fault::Internal,
            2 => Fault::BadGateway,
            _ => Fault::Drop,
        })
    }
}

struct Import {
    outcome: Result<Value, String>,
    polled: bool,
}

/// An application writing while d1r2 reads: `sql` run on database `id` before the answer to
/// each of its query requests from the `from`-th on, `left` more times (`None`: on every one).
struct Writer {
    id: String,
    sql: String,
    seen: u64,
    from: u64,
    left: Option<u64>,
    made: u64,
}

pub struct Inner {
    databases: Mutex<Vec<Database>>,
    faults: Mutex<Faults>,
    uploads: Mutex<HashMap<String, Vec<u8>>>,
    imports: Mutex<HashMap<String, Import>>,
    writer: Mutex<Option<Writer>>,
    /// The token may not use Time Travel: the bookmark endpoint answers 403.
    time_travel_denied: std::sync::atomic::AtomicBool,
    pub counters: Counters,
    base: Mutex<String>,
    /// Each request's delay, in turn (empty: none).
    latencies: Mutex<Vec<std::time::Duration>>,
    /// Query requests held now.
    queries_held: AtomicU64,
    /// A request to hold until the test lets it go ([`FakeD1::hold`]).
    hold: Mutex<Option<Hold>>,
    /// Requests arrived so far, and those not yet answered (by arrival).
    arrivals: AtomicU64,
    unanswered: Mutex<std::collections::BTreeSet<u64>>,
    /// The thread that answers queries, one at a time, as D1 answers a database's queries on
    /// the one thread of its Durable Object.
    queries: std::sync::mpsc::Sender<Job>,
}

/// A query for the query thread to answer.
type Job = Box<dyn FnOnce() + Send>;

/// Starts the query thread; it ends when the fake is dropped. A panic answering one query
/// fails that query alone.
fn query_thread() -> std::sync::mpsc::Sender<Job> {
    let (tx, rx) = std::sync::mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("fake-d1".into())
        .spawn(move || {
            for query in rx {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(query));
            }
        })
        .unwrap();
    tx
}

/// A running fake; dropped with the test's runtime.
pub struct FakeD1 {
    /// The API base, as `CLOUDFLARE_API_BASE_URL`.
    pub url: String,
    pub inner: Arc<Inner>,
}

impl FakeD1 {
    pub async fn start() -> FakeD1 {
        let inner = Arc::new(Inner {
            databases: Mutex::new(Vec::new()),
            faults: Mutex::new(Faults::default()),
            uploads: Mutex::new(HashMap::new()),
            imports: Mutex::new(HashMap::new()),
            writer: Mutex::new(None),
            time_travel_denied: std::sync::atomic::AtomicBool::new(false),
            counters: Counters::default(),
            base: Mutex::new(String::new()),
            latencies: Mutex::new(Vec::new()),
            queries_held: AtomicU64::new(0),
            hold: Mutex::new(None),
            arrivals: AtomicU64::new(0),
            unanswered: Mutex::new(std::collections::BTreeSet::new()),
            queries: query_thread(),
        });
        let api = Router::new()
            .route("/accounts/{account}/d1/database", get(list_databases))
            .route("/accounts/{account}/d1/database/{id}", get(get_database))
            .route("/accounts/{account}/d1/database/{id}/raw", post(raw))
            .route("/accounts/{account}/d1/database/{id}/query", post(query))
            .route("/accounts/{account}/d1/database/{id}/import", post(import))
            .route(
                "/accounts/{account}/d1/database/{id}/time_travel/bookmark",
                get(bookmark),
            )
            .layer(middleware::from_fn(authorize));
        let app = Router::new()
            .nest("/client/v4", api)
            .route(
                "/upload/{file}",
                put(upload).layer(axum::extract::DefaultBodyLimit::disable()),
            )
            .layer(middleware::from_fn_with_state(inner.clone(), inject))
            .with_state(inner.clone());
        let addr = super::serve(app).await;
        *inner.base.lock().unwrap() = format!("http://{addr}");
        FakeD1 {
            url: format!("http://{addr}/client/v4"),
            inner,
        }
    }

    /// Adds a database built by `sql` (run directly, as a Worker would have written it); the
    /// `_cf_KV` table D1 keeps in every database is added too. Returns its id.
    pub fn add_database(&self, name: &str, sql: &str) -> String {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("PRAGMA foreign_keys=ON;").unwrap();
        conn.execute_batch(sql).unwrap();
        conn.execute_batch(
            "CREATE TABLE _cf_KV (key TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID; INSERT INTO _cf_KV VALUES ('x', X'00');",
        )
        .unwrap();
        self.add_connection(name, conn)
    }

    /// Adds a database whose contents are copied from a SQLite file.
    pub fn add_database_from_file(&self, name: &str, path: &std::path::Path) -> String {
        let mut conn = Connection::open_in_memory().unwrap();
        {
            let src = Connection::open(path).unwrap();
            let backup = rusqlite::backup::Backup::new(&src, &mut conn).unwrap();
            backup
                .run_to_completion(1000, std::time::Duration::ZERO, None)
                .unwrap();
        }
        conn.execute_batch("PRAGMA foreign_keys=ON;").unwrap();
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS _cf_KV (key TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID;",
        )
        .unwrap();
        self.add_connection(name, conn)
    }

    fn add_connection(&self, name: &str, conn: Connection) -> String {
        with_math(&conn);
        conn.set_limit(rusqlite::limits::Limit::SQLITE_LIMIT_LENGTH, MAX_LENGTH)
            .unwrap();
        conn.set_limit(
            rusqlite::limits::Limit::SQLITE_LIMIT_EXPR_DEPTH,
            MAX_EXPR_DEPTH,
        )
        .unwrap();
        let mut dbs = self.inner.databases.lock().unwrap();
        let uuid = format!(
            "{:08x}-0000-4000-8000-{:012x}",
            dbs.len() + 1,
            dbs.len() + 1
        );
        dbs.push(Database {
            uuid: uuid.clone(),
            name: name.to_string(),
            conn,
            version: 1,
        });
        uuid
    }

    /// Copies a database's current contents into a SQLite file, to compare it.
    pub fn save(&self, id: &str, path: &std::path::Path) {
        let dbs = self.inner.databases.lock().unwrap();
        let db = dbs.iter().find(|d| d.uuid == id).unwrap();
        let mut out = Connection::open(path).unwrap();
        let backup = rusqlite::backup::Backup::new(&db.conn, &mut out).unwrap();
        backup
            .run_to_completion(1000, std::time::Duration::ZERO, None)
            .unwrap();
    }

    /// Runs SQL directly on a database (as the application would).
    pub fn execute(&self, id: &str, sql: &str) {
        let mut dbs = self.inner.databases.lock().unwrap();
        write(dbs.iter_mut().find(|d| d.uuid == id).unwrap(), sql);
    }

    /// From now on, runs `sql` on database `id` (as the application would) before answering
    /// its `from`-th query request and each one after, `times` times in all (`None`: until
    /// [`FakeD1::stop_writing`]): writes landing between the pages of a backup.
    pub fn write_during_queries(&self, id: &str, sql: &str, from: u64, times: Option<u64>) {
        *self.inner.writer.lock().unwrap() = Some(Writer {
            id: id.to_string(),
            sql: sql.to_string(),
            seen: 0,
            from,
            left: times,
            made: 0,
        });
    }

    /// From now on the bookmark endpoint refuses the token, as D1 refuses one without access to
    /// Time Travel.
    pub fn deny_time_travel(&self) {
        self.inner.time_travel_denied.store(true, Ordering::SeqCst);
    }

    /// Stops the writer; returns how many writes it made.
    pub fn stop_writing(&self) -> u64 {
        self.inner
            .writer
            .lock()
            .unwrap()
            .take()
            .map_or(0, |w| w.made)
    }

    /// The database's current Time Travel bookmark, as the API answers it.
    pub fn bookmark(&self, id: &str) -> String {
        let dbs = self.inner.databases.lock().unwrap();
        bookmark_of(dbs.iter().find(|d| d.uuid == id).unwrap())
    }

    /// Delays every answer, as the distance to Cloudflare would.
    pub fn set_latency(&self, latency: std::time::Duration) {
        self.set_latencies(&[latency]);
    }

    /// Delays each request by the next of `latencies` in turn, as requests that travel apart
    /// are: two sent together, the first delayed longer, are answered in the other order.
    pub fn set_latencies(&self, latencies: &[std::time::Duration]) {
        *self.inner.latencies.lock().unwrap() = latencies.to_vec();
    }

    /// Holds the request whose path contains `path` after `skip` such requests went through,
    /// until the test lets it go: a client paused at a chosen step, deterministically.
    pub fn hold(&self, path: &str, skip: u64) -> Paused {
        let paused = Paused {
            arrived: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            go: Arc::new(tokio::sync::Semaphore::new(0)),
        };
        *self.inner.hold.lock().unwrap() = Some(Hold {
            path: path.to_string(),
            skip,
            paused: paused.clone(),
        });
        paused
    }

    /// Answers the next requests with these failures, in order.
    pub fn script_faults(&self, faults: &[Fault]) {
        self.inner.faults.lock().unwrap().scripted.extend(faults);
    }

    /// Fails this fraction of all requests, reproducibly for a given seed.
    pub fn fail_randomly(&self, rate: f64, seed: u64) {
        let mut f = self.inner.faults.lock().unwrap();
        f.rate = rate;
        f.seed = seed.max(1);
    }

    pub fn count(&self, counter: fn(&Counters) -> &AtomicU64) -> u64 {
        counter(&self.inner.counters).load(Ordering::SeqCst)
    }

    pub fn reset_counters(&self) {
        let c = &self.inner.counters;
        for a in [
            &c.requests,
            &c.query_requests,
            &c.rows_read,
            &c.rows_written,
            &c.faults,
            &c.busy_us,
            &c.most_queries_at_once,
            &c.overtaken,
        ] {
            a.store(0, Ordering::SeqCst);
        }
    }
}

/// A request to hold: which, and how the test sees it arrive and lets it go.
struct Hold {
    path: String,
    skip: u64,
    paused: Paused,
}

/// The test's side of a held request.
#[derive(Clone)]
pub struct Paused {
    arrived: Arc<std::sync::atomic::AtomicBool>,
    go: Arc<tokio::sync::Semaphore>,
}

impl Paused {
    /// Waits until the held request has arrived (a minute at most).
    pub async fn arrived(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !self.arrived.load(Ordering::SeqCst) {
            assert!(
                std::time::Instant::now() < deadline,
                "the held request never came"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Lets the held request be answered.
    pub fn release(&self) {
        self.go.add_permits(1);
    }
}

/// The held request, if `path` is the one to hold now.
fn take_hold(inner: &Inner, path: &str) -> Option<Paused> {
    let mut hold = inner.hold.lock().unwrap();
    let h = hold.as_mut().filter(|h| path.contains(&h.path))?;
    if h.skip > 0 {
        h.skip -= 1;
        return None;
    }
    hold.take().map(|h| h.paused)
}

fn envelope(status: StatusCode, result: Value, result_info: Option<Value>) -> Response {
    let mut body = json!({"success": true, "errors": [], "messages": [], "result": result});
    if let Some(info) = result_info {
        body["result_info"] = info;
    }
    (status, axum::Json(body)).into_response()
}

fn error(status: StatusCode, code: i64, message: &str) -> Response {
    (
        status,
        axum::Json(json!({
            "success": false,
            "errors": [{"code": code, "message": message}],
            "messages": [],
            "result": null
        })),
    )
        .into_response()
}

async fn inject(State(inner): State<Arc<Inner>>, request: Request, next: Next) -> Response {
    inner.counters.requests.fetch_add(1, Ordering::SeqCst);
    let arrival = inner.arrivals.fetch_add(1, Ordering::SeqCst);
    inner.unanswered.lock().unwrap().insert(arrival);
    let _answered = Answered(inner.clone(), arrival);
    if let Some(paused) = take_hold(&inner, request.uri().path()) {
        paused.arrived.store(true, Ordering::SeqCst);
        let _ = paused.go.acquire().await;
    }
    let latency = {
        let latencies = inner.latencies.lock().unwrap();
        (!latencies.is_empty()).then(|| latencies[arrival as usize % latencies.len()])
    };
    if let Some(latency) = latency.filter(|l| !l.is_zero()) {
        tokio::time::sleep(latency).await;
    }
    let fault = inner.faults.lock().unwrap().next();
    let Some(fault) = fault else {
        return next.run(request).await;
    };
    inner.counters.faults.fetch_add(1, Ordering::SeqCst);
    match fault {
        Fault::TooMany { retry_after } => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                971,
                "Please wait and consider throttling your request speed",
            );
            r.headers_mut()
                .insert("retry-after", retry_after.to_string().parse().unwrap());
            r
        }
        Fault::Internal => error(StatusCode::INTERNAL_SERVER_ERROR, 7500, "Internal error"),
        Fault::BadGateway => {
            (StatusCode::BAD_GATEWAY, "<html>502 Bad Gateway</html>").into_response()
        }
        Fault::Drop => {
            let body = futures::stream::iter([
                Ok(Bytes::from_static(b"{\"success\": true, \"res")),
                Err(std::io::Error::other("connection dropped")),
            ]);
            Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/json")
                .body(Body::from_stream(body))
                .unwrap()
        }
    }
}

async fn authorize(request: Request, next: Next) -> Response {
    let ok = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {TOKEN}"));
    if !ok {
        return error(StatusCode::UNAUTHORIZED, 10000, "Authentication error");
    }
    let account_ok = request
        .uri()
        .path()
        .strip_prefix("/accounts/")
        .is_some_and(|rest| rest.starts_with(&format!("{ACCOUNT}/")));
    if !account_ok {
        return error(
            StatusCode::FORBIDDEN,
            7403,
            "The given account is not valid or is not authorized to access this service",
        );
    }
    next.run(request).await
}

fn database_json(db: &Database) -> Value {
    json!({
        "uuid": db.uuid,
        "name": db.name,
        "created_at": "2026-01-01T00:00:00.000Z",
        "version": "production",
        "num_tables": 0,
        "file_size": 0,
    })
}

async fn list_databases(
    State(inner): State<Arc<Inner>>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let dbs = inner.databases.lock().unwrap();
    let matching: Vec<&Database> = dbs
        .iter()
        .filter(|d| params.get("name").is_none_or(|n| &d.name == n))
        .collect();
    let per_page: usize = params
        .get("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1000);
    let page: usize = params.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    let items: Vec<Value> = matching
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|d| database_json(d))
        .collect();
    let count = items.len();
    envelope(
        StatusCode::OK,
        Value::Array(items),
        Some(
            json!({"page": page, "per_page": per_page, "count": count, "total_count": matching.len()}),
        ),
    )
}

fn not_found(id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        7404,
        &format!("The database {id} could not be found"),
    )
}

async fn get_database(
    State(inner): State<Arc<Inner>>,
    Path((_, id)): Path<(String, String)>,
) -> Response {
    let dbs = inner.databases.lock().unwrap();
    match dbs.iter().find(|d| d.uuid == id) {
        Some(db) => envelope(StatusCode::OK, database_json(db), None),
        None => not_found(&id),
    }
}

async fn bookmark(
    State(inner): State<Arc<Inner>>,
    Path((_, id)): Path<(String, String)>,
) -> Response {
    if inner.time_travel_denied.load(Ordering::SeqCst) {
        return error(StatusCode::FORBIDDEN, 10000, "Authentication error");
    }
    let dbs = inner.databases.lock().unwrap();
    match dbs.iter().find(|d| d.uuid == id) {
        Some(db) => envelope(StatusCode::OK, json!({"bookmark": bookmark_of(db)}), None),
        None => not_found(&id),
    }
}

/// Runs `sql` on `db` as the application would; a write moves the bookmark.
fn write(db: &mut Database, sql: &str) {
    let before = db.conn.total_changes();
    db.conn.execute_batch(sql).unwrap();
    if db.conn.total_changes() > before {
        db.version += 1;
    }
}

/// The writer's turn before a query request to database `db` is answered.
fn writer_turn(writer: &mut Option<Writer>, db: &mut Database) {
    let Some(w) = writer.as_mut().filter(|w| w.id == db.uuid) else {
        return;
    };
    w.seen += 1;
    if w.seen < w.from || w.left == Some(0) {
        return;
    }
    write(db, &w.sql);
    w.made += 1;
    w.left = w.left.map(|n| n - 1);
}

fn bookmark_of(db: &Database) -> String {
    format!("{:08x}-00000000-00004e2f-{:032x}", db.version, db.version)
}

/// A double as JavaScript's `JSON.stringify` writes it.
fn js_number(f: f64) -> Value {
    if !f.is_finite() {
        Value::Null
    } else if f.fract() == 0.0 && f.abs() < 9.0e15 {
        json!(f as i64)
    } else {
        json!(f)
    }
}

/// Writes `v` as JSON, as D1 (JavaScript) writes it, straight into `out`: a page's thousands of
/// cells made into a tree of values first spent more of the fake's time than SQLite did.
fn write_json_value(out: &mut Vec<u8>, v: ValueRef<'_>) {
    let written = match v {
        ValueRef::Null => {
            out.extend_from_slice(b"null");
            Ok(())
        }
        ValueRef::Integer(i) => serde_json::to_writer(&mut *out, &js_number(i as f64)),
        ValueRef::Real(f) => serde_json::to_writer(&mut *out, &js_number(f)),
        ValueRef::Text(t) => serde_json::to_writer(&mut *out, &*String::from_utf8_lossy(t)),
        ValueRef::Blob(b) => serde_json::to_writer(&mut *out, b),
    };
    written.expect("JSON into memory");
}

/// D1's guard: D1-internal tables cannot be read, and the dump must not manage transactions or
/// the schema table itself.
/// A math function over its arguments.
type Math = fn(&[f64]) -> f64;

/// The math functions d1r2 asks D1 for (to read reals exactly, see `source::d1::wire`): D1's
/// SQLite has SQLite's math functions, the bundled one is built without them.
fn with_math(conn: &Connection) {
    use rusqlite::functions::FunctionFlags;
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    let functions: [(&str, i32, Math); 4] = [
        ("atan2", 2, |a| a[0].atan2(a[1])),
        ("pow", 2, |a| a[0].powf(a[1])),
        ("log2", 1, |a| a[0].log2()),
        ("floor", 1, |a| a[0].floor()),
    ];
    for (name, arity, f) in functions {
        // Called for every real a page holds: its arguments stay on the stack, as SQLite's own
        // math functions' do, so the fake spends no more on them than D1 does.
        conn.create_scalar_function(name, arity, flags, move |ctx| {
            let mut args = [0f64; 2];
            for (i, arg) in args.iter_mut().enumerate().take(ctx.len()) {
                *arg = match ctx.get_raw(i) {
                    ValueRef::Integer(x) => x as f64,
                    ValueRef::Real(x) => x,
                    // SQLite's math functions answer NULL for NULL arguments and for NaN.
                    ValueRef::Null => return Ok(None),
                    _ => ctx.get::<f64>(i)?,
                };
            }
            Ok(Some(f(&args[..ctx.len()])).filter(|r| !r.is_nan()))
        })
        .unwrap();
    }
}

fn d1_authorizer(ctx: AuthContext<'_>) -> Authorization {
    match ctx.action {
        AuthAction::Read { table_name, .. } if table_name.starts_with("_cf_") => {
            Authorization::Deny
        }
        AuthAction::Transaction { .. } | AuthAction::Savepoint { .. } => Authorization::Deny,
        AuthAction::Pragma { pragma_name, .. }
            if pragma_name.eq_ignore_ascii_case("writable_schema") =>
        {
            Authorization::Deny
        }
        // D1 keeps foreign keys on: setting the pragma is accepted and changes nothing.
        AuthAction::Pragma {
            pragma_name,
            pragma_value: Some(_),
        } if pragma_name.eq_ignore_ascii_case("foreign_keys") => Authorization::Ignore,
        _ => Authorization::Allow,
    }
}

struct Executed {
    columns: Vec<String>,
    /// The rows as a JSON array, in the answer's shape.
    rows: Vec<u8>,
    rows_read: u64,
    changes: u64,
}

/// How an answer holds its rows: `/raw` as arrays of values, `/query` as objects keyed by column.
#[derive(Clone, Copy)]
enum Shape {
    Arrays,
    Objects,
}

/// Writes the rows of `raw` into `out` as a JSON array in `shape`; returns how many there were.
/// An object holds each column name once, where it first appears, with the value of the last
/// column so named, as a JavaScript object built column by column does.
fn write_rows(
    out: &mut Vec<u8>,
    raw: &mut rusqlite::Rows<'_>,
    columns: &[String],
    shape: Shape,
) -> Result<u64, String> {
    let keys: Vec<(usize, Vec<u8>)> = columns
        .iter()
        .enumerate()
        .filter(|(i, c)| !columns[..*i].contains(c))
        .map(|(i, c)| {
            let last = columns.iter().rposition(|d| d == c).unwrap_or(i);
            (last, serde_json::to_vec(c).expect("JSON into memory"))
        })
        .collect();
    let mut count = 0u64;
    out.push(b'[');
    while let Some(row) = raw.next().map_err(sqlite_error)? {
        if count > 0 {
            out.push(b',');
        }
        count += 1;
        match shape {
            Shape::Arrays => {
                out.push(b'[');
                for i in 0..columns.len() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_json_value(out, row.get_ref(i).map_err(sqlite_error)?);
                }
                out.push(b']');
            }
            Shape::Objects => {
                out.push(b'{');
                for (n, (i, key)) in keys.iter().enumerate() {
                    if n > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(key);
                    out.push(b':');
                    write_json_value(out, row.get_ref(*i).map_err(sqlite_error)?);
                }
                out.push(b'}');
            }
        }
    }
    out.push(b']');
    Ok(count)
}

/// Runs every statement of `sql` under D1's rules, each one's rows as JSON in `shape`.
fn run_statements(
    conn: &mut Connection,
    sql: &str,
    params: &[Value],
    shape: Shape,
) -> Result<Vec<Executed>, String> {
    conn.authorizer(Some(d1_authorizer)).unwrap();
    let result = (|| {
        let mut out = Vec::new();
        let mut rest = sql;
        while !rest.trim().is_empty() {
            let (statement, tail) = next_statement(rest);
            rest = tail;
            if statement.trim().trim_end_matches(';').trim().is_empty() {
                continue;
            }
            if statement.len() > MAX_STATEMENT_BYTES {
                return Err("statement too long: SQLITE_TOOBIG".to_string());
            }
            let mut stmt = conn.prepare(statement).map_err(sqlite_error)?;
            let n = stmt.parameter_count();
            if n > MAX_PARAMS {
                return Err("too many SQL variables: SQLITE_ERROR".to_string());
            }
            for (i, p) in params.iter().take(n).enumerate() {
                let bound = match p {
                    Value::Null => stmt.raw_bind_parameter(i + 1, rusqlite::types::Null),
                    Value::Number(x) if x.is_i64() => stmt.raw_bind_parameter(i + 1, x.as_i64()),
                    Value::Number(x) => stmt.raw_bind_parameter(i + 1, x.as_f64()),
                    Value::String(s) => stmt.raw_bind_parameter(i + 1, s),
                    other => stmt.raw_bind_parameter(i + 1, other.to_string()),
                };
                bound.map_err(sqlite_error)?;
            }
            let columns: Vec<String> = stmt.column_names().map(|c| c.to_string()).collect();
            let mut rows = Vec::new();
            let count = write_rows(&mut rows, &mut stmt.raw_query(), &columns, shape)?;
            let scanned = stmt.get_status(StatementStatus::FullscanStep) as u64;
            let changes = if stmt.readonly() { 0 } else { conn.changes() };
            out.push(Executed {
                columns,
                rows_read: scanned.max(count),
                rows,
                changes,
            });
        }
        Ok(out)
    })();
    conn.authorizer(None::<fn(AuthContext<'_>) -> Authorization>)
        .unwrap();
    result
}

/// The first complete statement of `sql` and the rest, by SQLite's own `sqlite3_complete`.
fn next_statement(sql: &str) -> (&str, &str) {
    let mut end = 0;
    for (i, c) in sql.char_indices() {
        if c == ';' {
            let candidate = &sql[..=i];
            if rusqlite_complete(candidate) {
                end = i + 1;
                break;
            }
        }
    }
    if end == 0 {
        (sql, "")
    } else {
        (&sql[..end], &sql[end..])
    }
}

fn rusqlite_complete(sql: &str) -> bool {
    let c = std::ffi::CString::new(sql.replace('\0', " ")).unwrap();
    unsafe { rusqlite::ffi::sqlite3_complete(c.as_ptr()) != 0 }
}

fn sqlite_error(e: rusqlite::Error) -> String {
    let code = match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::AuthorizationForStatementDenied) => "SQLITE_AUTH",
        Some(rusqlite::ErrorCode::ConstraintViolation) => "SQLITE_CONSTRAINT",
        _ => "SQLITE_ERROR",
    };
    format!("{e}: {code}")
}

/// The statements of a `/raw` or `/query` body: `{sql, params}` or `{batch: [...]}`.
fn statements(body: &Value) -> Result<Vec<(String, Vec<Value>)>, String> {
    let one = |v: &Value| -> Result<(String, Vec<Value>), String> {
        let sql = v["sql"].as_str().ok_or("sql is required")?.to_string();
        let params = v["params"].as_array().cloned().unwrap_or_default();
        Ok((sql, params))
    };
    match body["batch"].as_array() {
        Some(batch) => batch.iter().map(one).collect(),
        None => Ok(vec![one(body)?]),
    }
}

/// Answers a query on the query thread, as D1 answers on its own machine: however long it
/// takes, the other fakes of a test (S3) go on serving. One long-lived thread, as D1 has, not
/// tokio's blocking pool, whose threads come and go: glibc gives a new thread's arena its memory
/// anew, and in isolation a page query took 1.45 times as long on a fresh thread.
async fn execute(inner: Arc<Inner>, id: String, body: Bytes, shape: Shape) -> Response {
    inner.counters.query_requests.fetch_add(1, Ordering::SeqCst);
    let held = inner.queries_held.fetch_add(1, Ordering::SeqCst) + 1;
    inner
        .counters
        .most_queries_at_once
        .fetch_max(held, Ordering::SeqCst);
    let _held = Held(inner.clone());
    let (tx, rx) = tokio::sync::oneshot::channel();
    let queries = inner.queries.clone();
    let query = Box::new(move || {
        let _ = tx.send(answer(&inner, &id, body, shape));
    });
    // A query the thread cannot take is dropped with its sender: the answer below is then an
    // error, as it is when answering panics.
    let _ = queries.send(query);
    rx.await
        .unwrap_or_else(|_| error(StatusCode::INTERNAL_SERVER_ERROR, 7500, "internal error"))
}

/// A request arrived `.1`-th, answered however its answer ends: counts whether one that arrived
/// before it is still waiting.
struct Answered(Arc<Inner>, u64);

impl Drop for Answered {
    fn drop(&mut self) {
        let mut unanswered = self.0.unanswered.lock().unwrap();
        unanswered.remove(&self.1);
        if unanswered.first().is_some_and(|first| *first < self.1) {
            self.0.counters.overtaken.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// A query request D1 holds, released however its answer ends (a client may hang up).
struct Held(Arc<Inner>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.queries_held.fetch_sub(1, Ordering::SeqCst);
    }
}

fn answer(inner: &Inner, id: &str, body: Bytes, shape: Shape) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, 7400, "The request is malformed");
    };
    let statements = match statements(&body) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, 7400, &e),
    };
    let mut dbs = inner.databases.lock().unwrap();
    // D1 runs one query at a time: its busy time is the time it holds the database.
    let started = std::time::Instant::now();
    let busy = BusyTimer(&inner.counters.busy_us, started);
    let Some(db) = dbs.iter_mut().find(|d| d.uuid == id) else {
        return not_found(id);
    };
    writer_turn(&mut inner.writer.lock().unwrap(), db);
    let mut results = Vec::new();
    for (sql, params) in statements {
        let total_before = db.conn.total_changes();
        match run_statements(&mut db.conn, &sql, &params, shape) {
            Ok(executed) => {
                let written = db.conn.total_changes() - total_before;
                if written > 0 {
                    db.version += 1;
                }
                inner
                    .counters
                    .rows_written
                    .fetch_add(written, Ordering::SeqCst);
                for e in executed {
                    inner
                        .counters
                        .rows_read
                        .fetch_add(e.rows_read, Ordering::SeqCst);
                    let meta = json!({
                        "served_by": "fake-d1",
                        "duration": 0.1,
                        "changes": e.changes,
                        "last_row_id": db.conn.last_insert_rowid(),
                        "changed_db": written > 0,
                        "size_after": 0,
                        "rows_read": e.rows_read,
                        "rows_written": written,
                    });
                    results.push((e, meta));
                }
            }
            Err(message) => return error(StatusCode::BAD_REQUEST, 7500, &message),
        }
    }
    let response = results_envelope(results, shape);
    drop(busy);
    response
}

/// The envelope of a query's answer, written as bytes around each statement's rows, already JSON:
/// in [`envelope`]'s key order, `/raw`'s `results` holding `columns` and `rows`, `/query`'s the rows.
fn results_envelope(results: Vec<(Executed, Value)>, shape: Shape) -> Response {
    let mut body = br#"{"errors":[],"messages":[],"result":["#.to_vec();
    for (n, (e, meta)) in results.into_iter().enumerate() {
        if n > 0 {
            body.push(b',');
        }
        body.extend_from_slice(br#"{"meta":"#);
        body.extend(serde_json::to_vec(&meta).expect("JSON into memory"));
        body.extend_from_slice(br#","results":"#);
        match shape {
            Shape::Arrays => {
                body.extend_from_slice(br#"{"columns":"#);
                body.extend(serde_json::to_vec(&e.columns).expect("JSON into memory"));
                body.extend_from_slice(br#","rows":"#);
                body.extend_from_slice(&e.rows);
                body.push(b'}');
            }
            Shape::Objects => body.extend_from_slice(&e.rows),
        }
        body.extend_from_slice(br#","success":true}"#);
    }
    body.extend_from_slice(br#"],"success":true}"#);
    (
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// Adds the time since it was made to a busy counter when dropped, whichever way the answer ends.
struct BusyTimer<'a>(&'a AtomicU64, std::time::Instant);

impl Drop for BusyTimer<'_> {
    fn drop(&mut self) {
        self.0
            .fetch_add(self.1.elapsed().as_micros() as u64, Ordering::SeqCst);
    }
}

async fn raw(
    State(inner): State<Arc<Inner>>,
    Path((_, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    execute(inner, id, body, Shape::Arrays).await
}

async fn query(
    State(inner): State<Arc<Inner>>,
    Path((_, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    execute(inner, id, body, Shape::Objects).await
}

fn md5_hex(data: &[u8]) -> String {
    hex::encode(md5::Md5::digest(data))
}

async fn upload(
    State(inner): State<Arc<Inner>>,
    Path(file): Path<String>,
    body: Bytes,
) -> Response {
    let etag = md5_hex(&body);
    inner.uploads.lock().unwrap().insert(file, body.to_vec());
    let mut headers = HeaderMap::new();
    headers.insert("etag", format!("\"{etag}\"").parse().unwrap());
    (StatusCode::OK, headers).into_response()
}

async fn import(
    State(inner): State<Arc<Inner>>,
    Path((_, id)): Path<(String, String)>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    match body["action"].as_str() {
        Some("init") => {
            let Some(etag) = body["etag"].as_str() else {
                return error(StatusCode::BAD_REQUEST, 7400, "etag is required");
            };
            let filename = format!("{id}-{etag}.sql");
            let base = inner.base.lock().unwrap().clone();
            envelope(
                StatusCode::OK,
                json!({"success": true, "filename": filename, "upload_url": format!("{base}/upload/{filename}")}),
                None,
            )
        }
        Some("ingest") => {
            let (Some(etag), Some(filename)) = (body["etag"].as_str(), body["filename"].as_str())
            else {
                return error(
                    StatusCode::BAD_REQUEST,
                    7400,
                    "etag and filename are required",
                );
            };
            let Some(sql) = inner.uploads.lock().unwrap().remove(filename) else {
                return error(StatusCode::BAD_REQUEST, 7400, "no such upload");
            };
            if md5_hex(&sql) != etag {
                return error(
                    StatusCode::BAD_REQUEST,
                    7400,
                    "etag does not match the upload",
                );
            }
            let mut dbs = inner.databases.lock().unwrap();
            let Some(db) = dbs.iter_mut().find(|d| d.uuid == id) else {
                return not_found(&id);
            };
            let at_bookmark = bookmark_of(db);
            let outcome = ingest(db, &sql);
            if let Ok(written) = &outcome {
                inner
                    .counters
                    .rows_written
                    .fetch_add(*written, Ordering::SeqCst);
            }
            let outcome = outcome.map(|_| {
                json!({"num_queries": 1, "final_bookmark": bookmark_of(db), "meta": {"duration": 1.0, "rows_read": 0, "rows_written": 0, "size_after": 0}})
            });
            inner.imports.lock().unwrap().insert(
                at_bookmark.clone(),
                Import {
                    outcome,
                    polled: false,
                },
            );
            envelope(
                StatusCode::OK,
                json!({"success": true, "status": "active", "at_bookmark": at_bookmark, "messages": ["Uploaded, now ingesting"], "errors": []}),
                None,
            )
        }
        Some("poll") => {
            let bookmark = body["current_bookmark"].as_str().unwrap_or_default();
            let mut imports = inner.imports.lock().unwrap();
            let Some(import) = imports.get_mut(bookmark) else {
                return error(StatusCode::BAD_REQUEST, 7400, "no import at that bookmark");
            };
            if !import.polled {
                // Real imports take a while: the first poll still finds it running.
                import.polled = true;
                return envelope(
                    StatusCode::OK,
                    json!({"success": true, "status": "active", "at_bookmark": bookmark, "messages": ["Still ingesting"], "errors": []}),
                    None,
                );
            }
            match &import.outcome {
                Ok(result) => envelope(
                    StatusCode::OK,
                    json!({"success": true, "status": "complete", "at_bookmark": bookmark, "messages": ["Import complete"], "errors": [], "result": result}),
                    None,
                ),
                Err(message) => envelope(
                    StatusCode::OK,
                    json!({"success": false, "status": "error", "at_bookmark": bookmark, "error": message, "messages": [], "errors": [message]}),
                    None,
                ),
            }
        }
        _ => error(StatusCode::BAD_REQUEST, 7400, "unknown action"),
    }
}

/// Applies an uploaded file as one unit: all of it or, on any error, none of it.
fn ingest(db: &mut Database, sql: &[u8]) -> Result<u64, String> {
    let sql = std::str::from_utf8(sql).map_err(|_| "the file is not UTF-8".to_string())?;
    let before = db.conn.total_changes();
    db.conn.execute_batch("BEGIN").map_err(sqlite_error)?;
    let applied = run_statements(&mut db.conn, sql, &[], Shape::Arrays)
        .and_then(|_| db.conn.execute_batch("COMMIT").map_err(sqlite_error));
    match applied {
        Ok(()) => {
            db.version += 1;
            Ok(db.conn.total_changes() - before)
        }
        Err(e) => {
            let _ = db.conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}
