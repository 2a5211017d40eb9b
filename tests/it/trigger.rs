//! `d1r2 trigger` against a local HTTP server that checks the TOTP code of every request (the
//! current period only, each code accepted once, as an app would) and answers a scripted
//! sequence. A code is used up when it arrives, whatever the answer, as at an endpoint whose
//! backup fails after the check: every retry needs a code of a later period.

use crate::common::cmd::{D1r2, Run};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// RFC 6238's SHA-1 test secret ("12345678901234567890"), base32.
const SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

#[derive(Clone, Copy)]
enum Reply {
    Status(u16, &'static str, Option<u64>),
}

#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    code: String,
    valid: bool,
    method: String,
    body: String,
    reason: Option<String>,
}

#[derive(Clone, Default)]
struct App {
    period: u64,
    script: Arc<Vec<Reply>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// The periods whose code was accepted.
    used: Arc<Mutex<std::collections::BTreeSet<u64>>>,
}

fn expected_code(now: u64, period: u64) -> String {
    totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(6)
        .with_step_duration(period)
        .with_secret(b"12345678901234567890".to_vec())
        .build_noncompliant()
        .generate(now)
        .to_string()
}

async fn handle(app: App, method: Method, headers: HeaderMap, body: Bytes) -> Response {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let code = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_string();
    let valid =
        code == expected_code(now, app.period) && app.used.lock().unwrap().insert(now / app.period);
    let n = {
        let mut seen = app.seen.lock().unwrap();
        seen.push(Seen {
            at: Instant::now(),
            code: code.clone(),
            valid,
            method: method.to_string(),
            body: String::from_utf8_lossy(&body).into_owned(),
            reason: headers
                .get("x-backup-reason")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        });
        seen.len() - 1
    };
    if !valid {
        return (StatusCode::UNAUTHORIZED, "invalid or expired token").into_response();
    }
    let Reply::Status(status, text, retry_after) = app.script[n.min(app.script.len() - 1)];
    let mut response = (StatusCode::from_u16(status).unwrap(), text).into_response();
    if let Some(after) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", after.to_string().parse().unwrap());
    }
    response
}

async fn serve(script: Vec<Reply>) -> (String, App) {
    serve_with_period(script, 30).await
}

async fn serve_with_period(script: Vec<Reply>, period: u64) -> (String, App) {
    let app = App {
        period,
        script: Arc::new(script),
        seen: Arc::default(),
        used: Arc::default(),
    };
    let state = app.clone();
    let router = Router::new().fallback(move |method: Method, headers: HeaderMap, body: Bytes| {
        handle(state.clone(), method, headers, body)
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (format!("http://{addr}/api/backup?key=query-secret"), app)
}

async fn d1r2(args: &[&str], env: &[(&str, &str)]) -> Run {
    D1r2::new()
        .args(args)
        .env_remove("GITHUB_ACTIONS")
        .env("TOTP_SECRET", SECRET)
        .envs(env.iter().copied())
        .run_async()
        .await
}

fn all_text(out: &Run) -> String {
    let kept: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| !l.starts_with("::add-mask::"))
        .collect();
    format!("{}\n{}", kept.join("\n"), out.stderr)
}

fn outputs(path: &std::path::Path) -> BTreeMap<String, String> {
    crate::common::parse_outputs(&std::fs::read_to_string(path).unwrap())
        .into_iter()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_with_a_fresh_valid_code_each_time() {
    let (url, app) = serve_with_period(
        vec![
            Reply::Status(503, "warming up", None),
            Reply::Status(503, "warming up", None),
            Reply::Status(429, "slow down", Some(1)),
            Reply::Status(200, "{\"ok\":true,\"backup\":\"b-42\"}", None),
        ],
        2,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("output");
    let summary = dir.path().join("summary");
    let out = d1r2(
        &[],
        &[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_OUTPUT", output.to_str().unwrap()),
            ("GITHUB_STEP_SUMMARY", summary.to_str().unwrap()),
            ("INPUT_COMMAND", "trigger"),
            ("INPUT_URL", &url),
            ("INPUT_METHOD", "PUT"),
            ("INPUT_BODY", "{\"reason\": \"nightly\"}"),
            ("INPUT_HEADER", "X-Backup-Reason: nightly, scheduled"),
            ("INPUT_INITIAL-DELAY", "0.01"),
            ("INPUT_MAX-DELAY", "3"),
            ("INPUT_PERIOD", "2"),
        ],
    )
    .await;
    let text = all_text(&out);
    assert!(out.status.success(), "{text}");
    let seen = app.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4, "{seen:?}");
    for s in &seen {
        assert!(s.valid, "a stale or wrong code was sent: {s:?}");
        assert_eq!(s.method, "PUT");
        assert_eq!(s.body, "{\"reason\": \"nightly\"}");
        assert_eq!(s.reason.as_deref(), Some("nightly, scheduled"));
        assert!(!text.contains(&s.code), "a code was printed");
    }
    assert!(
        seen[3].at - seen[2].at >= Duration::from_secs(1),
        "Retry-After was not honoured"
    );
    let o = outputs(&output);
    assert_eq!(o["status"], "success");
    assert_eq!(o["attempts"], "4");
    assert_eq!(o["http-status"], "200");
    assert_eq!(o["body"], "{\"ok\":true,\"backup\":\"b-42\"}");
    let summary = std::fs::read_to_string(&summary).unwrap();
    assert!(summary.contains("b-42"), "{summary}");
    for secret in [SECRET, "query-secret"] {
        assert!(!text.contains(secret), "{secret} printed: {text}");
        assert!(!summary.contains(secret));
    }
    assert_eq!(
        text.matches("retrying in").count(),
        3,
        "one log line per retried attempt: {text}"
    );
}

/// With 2-second codes, the retries cross periods: a code made once and reused would be refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codes_are_made_per_attempt_not_reused_across_periods() {
    let (url, app) = serve_with_period(
        vec![
            Reply::Status(429, "wait", Some(1)),
            Reply::Status(503, "wait", Some(1)),
            Reply::Status(204, "", None),
        ],
        2,
    )
    .await;
    let out = d1r2(
        &[
            "trigger",
            "--url",
            &url,
            "--period",
            "2",
            "--min-validity",
            "1",
            "--initial-delay",
            "0.01",
        ],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", all_text(&out));
    let seen = app.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|s| s.valid), "{seen:?}");
    assert_ne!(
        seen[0].code, seen[2].code,
        "the same code was sent across periods"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausting_the_retries_fails_with_the_last_status() {
    let (url, app) =
        serve_with_period(vec![Reply::Status(500, "database is locked", None)], 2).await;
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("output");
    let out = d1r2(
        &[],
        &[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_OUTPUT", output.to_str().unwrap()),
            ("INPUT_COMMAND", "trigger"),
            ("INPUT_URL", &url),
            ("INPUT_MAX-ATTEMPTS", "3"),
            ("INPUT_INITIAL-DELAY", "0.01"),
            ("INPUT_PERIOD", "2"),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", all_text(&out));
    assert_eq!(app.seen.lock().unwrap().len(), 3);
    let o = outputs(&output);
    assert_eq!(o["status"], "failure");
    assert_eq!(o["attempts"], "3");
    assert_eq!(o["http-status"], "500");
    assert!(
        o["error"].contains("HTTP 500: database is locked"),
        "{}",
        o["error"]
    );
    assert!(all_text(&out).contains("::error::"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_is_not_retried() {
    let (url, app) = serve(vec![Reply::Status(401, "token rejected by the app", None)]).await;
    let out = d1r2(&["trigger", "--url", &url, "--initial-delay", "0.01"], &[]).await;
    let stderr = &out.stderr;
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(app.seen.lock().unwrap().len(), 1);
    assert!(
        stderr.contains("HTTP 401 (not retried): token rejected by the app"),
        "{stderr}"
    );
    assert!(!stderr.contains("query-secret"));
}

/// A raw server: the first connection is dropped unanswered, the second hangs past the
/// timeout, the third is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_and_timeouts_are_retried() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(Mutex::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let n = {
                let mut c = counted.lock().unwrap();
                *c += 1;
                *c
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = socket.read(&mut buf).await;
                match n {
                    1 => drop(socket),
                    2 => tokio::time::sleep(Duration::from_secs(5)).await,
                    _ => {
                        let _ = socket
                            .write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 7\r\nconnection: close\r\n\r\nstarted")
                            .await;
                    }
                }
            });
        }
    });
    let url = format!("http://{addr}/backup");
    let out = d1r2(
        &[
            "trigger",
            "--url",
            &url,
            "--initial-delay",
            "0.01",
            "--timeout",
            "0.5",
            // Short periods: a retry waits for the next one.
            "--period",
            "2",
        ],
        &[],
    )
    .await;
    let text = all_text(&out);
    assert!(out.status.success(), "{text}");
    assert_eq!(*connections.lock().unwrap(), 3);
    assert!(text.contains("timed out"), "{text}");
    assert!(
        text.contains("HTTP status  202") || text.contains("202"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_before_any_request() {
    let (url, app) = serve(vec![Reply::Status(200, "ok", None)]).await;
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec!["trigger", "--url", &url],
            vec![("TOTP_SECRET", "")],
            "TOTP_SECRET",
        ),
        (
            vec!["trigger", "--url", &url, "--body", "{not json"],
            vec![],
            "--body",
        ),
        (
            vec![
                "trigger",
                "--url",
                &url,
                "--header",
                "Authorization: Bearer x",
            ],
            vec![],
            "Authorization",
        ),
        (vec!["trigger", "--url", "ftp://x/y"], vec![], "--url"),
        (
            vec!["trigger", "--url", &url, "--method", "G E T"],
            vec![],
            "--method",
        ),
    ];
    for (args, env, expected) in cases {
        let out = d1r2(&args, &env).await;
        let stderr = &out.stderr;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
    assert!(app.seen.lock().unwrap().is_empty());
}
