//! A fake GitHub REST API (axum): records every request, answers check-run creation in the
//! documented shape (`POST /repos/{owner}/{repo}/check-runs`, 201 with the check run), lists the
//! check runs created on a commit (`GET /repos/{owner}/{repo}/commits/{ref}/check-runs`, by full
//! SHA, optionally `?check_name=`), and serves `GET /meta` from a document the test sets
//! (sections of IP ranges, as GitHub publishes them).

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::{Value, json};

pub const TOKEN: &str = "ghs_fake_github_token_77aa";

/// A request the fake saw: path, `Authorization` header and JSON body.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub authorization: String,
    pub body: Value,
}

#[derive(Clone)]
struct Shared {
    seen: Arc<Mutex<Vec<Seen>>>,
    meta: Arc<Mutex<Value>>,
    meta_failures: Arc<Mutex<u32>>,
    meta_limits: Arc<Mutex<Vec<RateLimited>>>,
    meta_requests: Arc<Mutex<u32>>,
    check_run_failures: Arc<Mutex<u32>>,
    /// The check runs created: repository (`owner/repo`) and the check run as answered.
    check_runs: Arc<Mutex<Vec<(String, Value)>>>,
}

/// A rate-limited answer to `/meta`: the status and its headers.
pub type RateLimited = (u16, Vec<(&'static str, String)>);

pub struct FakeGitHub {
    pub url: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    meta: Arc<Mutex<Value>>,
    meta_failures: Arc<Mutex<u32>>,
    meta_limits: Arc<Mutex<Vec<RateLimited>>>,
    meta_requests: Arc<Mutex<u32>>,
    check_run_failures: Arc<Mutex<u32>>,
}

impl FakeGitHub {
    pub async fn start() -> FakeGitHub {
        FakeGitHub::start_at(0).await
    }

    /// [`FakeGitHub::start`] on loopback port `port` (0: a free one).
    pub async fn start_at(port: u16) -> FakeGitHub {
        let shared = Shared {
            seen: Arc::new(Mutex::new(Vec::new())),
            meta: Arc::new(Mutex::new(json!({}))),
            meta_failures: Arc::new(Mutex::new(0)),
            meta_limits: Arc::new(Mutex::new(Vec::new())),
            meta_requests: Arc::new(Mutex::new(0)),
            check_run_failures: Arc::new(Mutex::new(0)),
            check_runs: Arc::new(Mutex::new(Vec::new())),
        };
        let app = Router::new()
            .route("/repos/{owner}/{repo}/check-runs", post(create_check_run))
            .route(
                "/repos/{owner}/{repo}/commits/{reference}/check-runs",
                get(list_check_runs),
            )
            .route("/meta", get(meta))
            .with_state(shared.clone());
        let addr = super::serve_at(app, port).await;
        FakeGitHub {
            url: format!("http://{addr}"),
            seen: shared.seen,
            meta: shared.meta,
            meta_failures: shared.meta_failures,
            meta_limits: shared.meta_limits,
            meta_requests: shared.meta_requests,
            check_run_failures: shared.check_run_failures,
        }
    }

    /// Answers the next `n` check runs created with 503 and `Retry-After: 1`, as GitHub does
    /// when it is unavailable; each is still recorded in `seen`.
    pub fn fail_check_runs(&self, n: u32) {
        *self.check_run_failures.lock().unwrap() = n;
    }

    /// What `GET /meta` answers from now on.
    pub fn set_meta(&self, meta: Value) {
        *self.meta.lock().unwrap() = meta;
    }

    /// Answers the next `n` requests for `/meta` with 503.
    pub fn fail_meta(&self, n: u32) {
        *self.meta_failures.lock().unwrap() = n;
    }

    /// Answers the next requests for `/meta` as rate limited, one entry each, in GitHub's
    /// documented shape: the status, the headers, and its message.
    pub fn rate_limit_meta(&self, answers: Vec<RateLimited>) {
        self.meta_limits.lock().unwrap().extend(answers);
    }

    /// Requests for `/meta` so far.
    pub fn meta_requests(&self) -> u32 {
        *self.meta_requests.lock().unwrap()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn meta(State(shared): State<Shared>) -> axum::response::Response {
    *shared.meta_requests.lock().unwrap() += 1;
    let limited = {
        let mut limits = shared.meta_limits.lock().unwrap();
        (!limits.is_empty()).then(|| limits.remove(0))
    };
    if let Some((status, headers)) = limited {
        let mut response = (
            StatusCode::from_u16(status).unwrap(),
            axum::Json(json!({
                "message": "API rate limit exceeded for 192.0.2.1. (But here's the good news: Authenticated requests get a higher rate limit.)",
                "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"
            })),
        )
            .into_response();
        for (name, value) in headers {
            response.headers_mut().insert(name, value.parse().unwrap());
        }
        return response;
    }
    {
        let mut failures = shared.meta_failures.lock().unwrap();
        if *failures > 0 {
            *failures -= 1;
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({"message": "Service Unavailable"})),
            )
                .into_response();
        }
    }
    axum::Json(shared.meta.lock().unwrap().clone()).into_response()
}

async fn create_check_run(
    State(shared): State<Shared>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::Json<Value>,
) -> axum::response::Response {
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    shared.seen.lock().unwrap().push(Seen {
        path: format!("/repos/{owner}/{repo}/check-runs"),
        authorization: authorization.clone(),
        body: body.0.clone(),
    });
    if authorization != format!("Bearer {TOKEN}") {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(
                json!({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"}),
            ),
        )
            .into_response();
    }
    {
        let mut failures = shared.check_run_failures.lock().unwrap();
        if *failures > 0 {
            *failures -= 1;
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [("retry-after", "1")],
                axum::Json(json!({"message": "Service Unavailable"})),
            )
                .into_response();
        }
    }
    let b = body.0;
    let mut check_runs = shared.check_runs.lock().unwrap();
    let id = check_runs.len() + 4;
    let check_run = json!({
            "id": id,
            "head_sha": b["head_sha"],
            "node_id": "MDg6Q2hlY2tSdW40",
            "external_id": "",
            "url": format!("https://api.github.com/repos/{owner}/{repo}/check-runs/{id}"),
            "html_url": format!("https://github.com/{owner}/{repo}/runs/{id}"),
            "details_url": null,
            "status": b["status"],
            "conclusion": b["conclusion"],
            "started_at": "2026-11-25T04:00:00Z",
            "completed_at": "2026-11-25T04:00:01Z",
            "output": {
                "title": b["output"]["title"],
                "summary": b["output"]["summary"],
                "text": null,
                "annotations_count": 0,
                "annotations_url": format!("https://api.github.com/repos/{owner}/{repo}/check-runs/{id}/annotations")
            },
            "name": b["name"],
            "check_suite": {"id": 5},
            "app": null,
            "pull_requests": []
    });
    check_runs.push((format!("{owner}/{repo}"), check_run.clone()));
    (StatusCode::CREATED, axum::Json(check_run)).into_response()
}

/// The check runs created on commit `reference` (a full SHA) of the repository, newest first, in
/// GitHub's shape (`total_count`, `check_runs`); `check_name` keeps those of that name.
async fn list_check_runs(
    State(shared): State<Shared>,
    Path((owner, repo, reference)): Path<(String, String, String)>,
    Query(query): Query<std::collections::BTreeMap<String, String>>,
) -> axum::response::Response {
    let repository = format!("{owner}/{repo}");
    let runs: Vec<Value> = shared
        .check_runs
        .lock()
        .unwrap()
        .iter()
        .rev()
        .filter(|(r, run)| *r == repository && run["head_sha"] == json!(reference))
        .map(|(_, run)| run.clone())
        .filter(|run| {
            query
                .get("check_name")
                .is_none_or(|name| run["name"] == json!(name))
        })
        .collect();
    axum::Json(json!({"total_count": runs.len(), "check_runs": runs})).into_response()
}
