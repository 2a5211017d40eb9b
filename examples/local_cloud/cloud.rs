//! The local cloud: the fakes d1r2's tests run against (tests/it/fakes), started together on
//! fixed loopback ports, plus an app backup endpoint, so d1r2 (or a workflow) can be tried with
//! no account: D1 and Cloudflare's Lists and rulesets behind one API base, S3, GitHub's `/meta`
//! and check runs, and `POST /api/backup` checking TOTP codes as examples/app does. One control
//! of its own, beside the Cloudflare API: `POST /local-cloud/s3/outage?requests=N` makes S3
//! answer the next N requests with 503 SlowDown, an outage to try retries against.
//!
//! `examples/local_cloud/main.rs` runs it; `tests/it/local_cloud.rs` starts it in-process (this
//! file is a module of both) and backs up through it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::fakes::d1::{ACCOUNT, FakeD1, TOKEN};
use crate::fakes::github::{self, FakeGitHub};
use crate::fakes::lists::FakeLists;
use crate::fakes::s3::{FakeS3, S3State};

/// The app endpoint's TOTP secret (base32, 20 bytes). Made up, as every key here is.
pub const TOTP_SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXPJBSWY3DP";

/// The database served when none is given: a few rows to back up.
const DEMO_SQL: &str = "
CREATE TABLE notes (id INTEGER PRIMARY KEY AUTOINCREMENT, title TEXT NOT NULL, body BLOB);
INSERT INTO notes (title, body) VALUES ('first', X'00ff'), ('second', NULL), ('third', 'text');
CREATE INDEX notes_title ON notes (title);
";

/// Ranges in the shape of GitHub's `/meta` (GitHub's own published ranges, a few of each).
fn meta() -> serde_json::Value {
    json!({
        "verifiable_password_authentication": false,
        "hooks": ["192.30.252.0/22", "185.199.108.0/22", "140.82.112.0/20", "143.55.64.0/20",
                  "2a0a:a440::/29", "2606:50c0::/32"],
        "actions": ["4.148.0.0/16", "4.175.114.51/32", "13.64.0.0/16", "20.102.35.120/32",
                    "2a01:111:f403:f90c::/62"],
    })
}

pub struct Options {
    /// The Cloudflare API's port; S3, GitHub and the app take the next three. 0: free ports.
    pub port_base: u16,
    /// D1 databases to serve, by name, each a copy of a SQLite file; none: one named `app`.
    pub databases: Vec<(String, PathBuf)>,
    /// The S3 bucket made at start.
    pub bucket: String,
}

/// The servers; the D1 and Lists fakes live on behind the Cloudflare API's address.
pub struct LocalCloud {
    pub s3: FakeS3,
    pub github: FakeGitHub,
    /// The API base d1r2 takes as `CLOUDFLARE_API_BASE_URL`: D1 and Lists behind one address.
    pub cloudflare_url: String,
    /// The app's backup endpoint, for `d1r2 trigger --url`.
    pub app_url: String,
    /// The D1 databases served: name and id.
    pub databases: Vec<(String, String)>,
    pub bucket: String,
}

fn port(base: u16, offset: u16) -> u16 {
    if base == 0 { 0 } else { base + offset }
}

impl LocalCloud {
    pub async fn start(options: &Options) -> LocalCloud {
        let d1 = FakeD1::start().await;
        let databases = if options.databases.is_empty() {
            vec![("app".to_string(), d1.add_database("app", DEMO_SQL))]
        } else {
            options
                .databases
                .iter()
                .map(|(name, file)| (name.clone(), d1.add_database_from_file(name, file)))
                .collect()
        };
        let lists = FakeLists::start().await;
        let s3 = FakeS3::start_at(&[&options.bucket], port(options.port_base, 1)).await;
        let cloudflare = crate::fakes::serve_at(
            Router::new()
                .route("/local-cloud/s3/outage", axum::routing::post(s3_outage))
                .fallback(forward)
                .with_state(Arc::new(Backends {
                    d1: origin(&d1.url),
                    lists: origin(&lists.url),
                    s3: s3.state.clone(),
                    client: reqwest::Client::new(),
                })),
            port(options.port_base, 0),
        )
        .await;
        let github = FakeGitHub::start_at(port(options.port_base, 2)).await;
        github.set_meta(meta());
        let app = crate::fakes::serve_at(
            Router::new()
                .route("/api/backup", axum::routing::post(backup_endpoint))
                .with_state(Arc::new(Mutex::new(None))),
            port(options.port_base, 3),
        )
        .await;
        LocalCloud {
            s3,
            github,
            cloudflare_url: format!("http://{cloudflare}/client/v4"),
            app_url: format!("http://{app}/api/backup"),
            databases,
            bucket: options.bucket.clone(),
        }
    }

    /// The environment that points d1r2 at this cloud.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("CLOUDFLARE_API_BASE_URL", self.cloudflare_url.clone()),
            ("CLOUDFLARE_API_TOKEN", TOKEN.to_string()),
            ("CLOUDFLARE_ACCOUNT_ID", ACCOUNT.to_string()),
        ];
        env.extend(self.s3.env());
        env.extend([
            ("GITHUB_API_URL", self.github.url.clone()),
            ("GITHUB_TOKEN", github::TOKEN.to_string()),
            ("TOTP_SECRET", TOTP_SECRET.to_string()),
        ]);
        env
    }

    /// [`LocalCloud::env`] as shell `export` lines, then what to try, as comments.
    pub fn exports(&self) -> String {
        let mut text = String::new();
        for (name, value) in self.env() {
            text.push_str(&format!("export {name}='{value}'\n"));
        }
        let database = &self.databases[0].0;
        text.push_str(&format!(
            "# d1r2 backup --source d1://{database} --dest s3://{bucket}/{database}\n\
             # d1r2 list --from s3://{bucket}/{database}\n\
             # d1r2 firewall --list github_actions --dry-run\n\
             # d1r2 trigger --url {app}\n",
            bucket = self.bucket,
            app = self.app_url,
        ));
        text
    }
}

/// `http://host:port` of an API base.
fn origin(url: &str) -> String {
    url.trim_end_matches("/client/v4").to_string()
}

struct Backends {
    d1: String,
    lists: String,
    s3: Arc<S3State>,
    client: reqwest::Client,
}

/// `POST /local-cloud/s3/outage?requests=N`: S3 answers the next N requests (any client's) with
/// 503 SlowDown, as R2 does when it is overloaded.
async fn s3_outage(
    State(backends): State<Arc<Backends>>,
    Query(query): Query<std::collections::BTreeMap<String, String>>,
) -> Response {
    match query.get("requests").and_then(|n| n.parse::<u64>().ok()) {
        Some(n) => {
            backends.s3.fail_next(n);
            (
                StatusCode::OK,
                format!("S3 answers the next {n} requests with 503\n"),
            )
                .into_response()
        }
        None => (StatusCode::BAD_REQUEST, "expected ?requests=N\n").into_response(),
    }
}

/// One Cloudflare API: Lists' and rulesets' paths go to the Lists fake, the rest (D1, and the
/// import's uploads) to the D1 fake.
async fn forward(State(backends): State<Arc<Backends>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let lists = path.contains("/rules/lists") || path.starts_with("/client/v4/zones/");
    let to = if lists { &backends.lists } else { &backends.d1 };
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        return (StatusCode::BAD_REQUEST, "unreadable body").into_response();
    };
    let mut headers = parts.headers.clone();
    headers.remove(header::HOST);
    let sent = backends
        .client
        .request(parts.method, format!("{to}{path}"))
        .headers(headers)
        .body(body)
        .send()
        .await;
    let answer = match sent {
        Ok(answer) => answer,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = answer.status();
    let mut headers = answer.headers().clone();
    headers.remove(header::TRANSFER_ENCODING);
    headers.remove(header::CONNECTION);
    let body = answer.bytes().await.unwrap_or_default();
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// The app's backup endpoint, as examples/app's: a code of [`TOTP_SECRET`] (HMAC-SHA1, 6 digits,
/// 30 s, one period of drift), compared in constant time and accepted once (the highest period
/// accepted is kept), then 202; 401 otherwise.
async fn backup_endpoint(
    State(last): State<Arc<Mutex<Option<u64>>>>,
    headers: HeaderMap,
) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let key = totp_rs::Secret::try_from_base32(TOTP_SECRET)
        .expect("TOTP_SECRET is base32")
        .as_bytes()
        .to_vec();
    let totp = totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(6)
        .with_step_duration(30)
        .with_secret(key)
        .build_noncompliant();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut matched = None;
    for counter in [now / 30 - 1, now / 30, now / 30 + 1] {
        let code = totp.generate(counter * 30).to_string();
        let differ = code
            .bytes()
            .zip(token.bytes())
            .fold(code.len() ^ token.len(), |d, (a, b)| d | usize::from(a ^ b));
        if differ == 0 {
            matched = Some(counter);
        }
    }
    let mut last = last.lock().unwrap();
    match matched {
        Some(counter) if last.is_none_or(|l| counter > l) => {
            *last = Some(counter);
            let backup = format!("local-{now}");
            (
                StatusCode::ACCEPTED,
                axum::Json(json!({"accepted": true, "backup": backup})),
            )
                .into_response()
        }
        _ => (StatusCode::UNAUTHORIZED, "invalid or expired code\n").into_response(),
    }
}
