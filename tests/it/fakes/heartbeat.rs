//! A fake heartbeat service (healthchecks.io's ping API): every request to it is recorded
//! (method, path and query, body), answered `200 OK` with the body `OK`, or with a scripted
//! status first.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;

/// One request the service received.
#[derive(Debug, Clone, PartialEq)]
pub struct Ping {
    pub method: String,
    /// Path and query, e.g. `/ping/5bf6/start`.
    pub target: String,
    pub body: String,
}

#[derive(Default)]
struct Inner {
    pings: Mutex<Vec<Ping>>,
    statuses: Mutex<VecDeque<u16>>,
}

/// A running fake; dropped with the test's runtime.
pub struct FakeHeartbeat {
    /// The server's base, `http://127.0.0.1:PORT`.
    pub url: String,
    inner: Arc<Inner>,
}

impl FakeHeartbeat {
    pub async fn start() -> FakeHeartbeat {
        let inner = Arc::new(Inner::default());
        let app = Router::new().fallback(record).with_state(inner.clone());
        let addr = super::serve(app).await;
        FakeHeartbeat {
            url: format!("http://{addr}"),
            inner,
        }
    }

    /// Answers the next requests with these statuses, in order, before `200 OK` again.
    pub fn answer(&self, statuses: &[u16]) {
        self.inner.statuses.lock().unwrap().extend(statuses);
    }

    /// Every request so far, in the order they arrived.
    pub fn pings(&self) -> Vec<Ping> {
        self.inner.pings.lock().unwrap().clone()
    }
}

async fn record(State(inner): State<Arc<Inner>>, request: Request) -> impl IntoResponse {
    let method = request.method().to_string();
    let target = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let body: Bytes = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    inner.pings.lock().unwrap().push(Ping {
        method,
        target,
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let status = inner.statuses.lock().unwrap().pop_front().unwrap_or(200);
    (StatusCode::from_u16(status).unwrap(), "OK")
}
