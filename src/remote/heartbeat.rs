//! Heartbeats: a dead man's switch for scheduled runs. With `--heartbeat-url URL` every command
//! pings `URL/start` before its work, `URL` when it succeeds and `URL/fail` when it fails, the
//! convention healthchecks.io, Cronitor and Better Stack share; the service alerts when no
//! success arrives in time, which covers the run that never started (a disabled schedule, a
//! runner outage), which nothing inside the run can report.
//!
//! A ping is a POST with a short text body (the command, its status, and for a backup its id,
//! rows and bytes: nothing secret, no stored value). One that fails is retried briefly, then
//! logged as a warning: a heartbeat never fails the command. The URL itself is a secret (anyone
//! holding it can report success), so it is registered with [`crate::redact`] and no message
//! here names it.

use std::time::{Duration, SystemTime};

use url::Url;

use crate::model::report::Report;
use crate::remote::http::{self, Transport};
use crate::remote::retry::{self, RetryPolicy, Verdict};

/// A ping is worth a few quick tries, never a run held up for long.
const POLICY: RetryPolicy = RetryPolicy {
    max_attempts: 3,
    initial_delay: Duration::from_millis(300),
    max_delay: Duration::from_secs(3),
    deadline: Duration::from_secs(20),
};

/// How long one ping may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A `--heartbeat-url` that cannot be used: refused before anything is done. The messages never
/// quote the URL.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HeartbeatError {
    #[error("--heartbeat-url is not a URL ({0}); give the ping URL the monitoring service shows")]
    Unparsable(url::ParseError),
    #[error("--heartbeat-url must be an http or https URL, not {0}:")]
    Scheme(String),
    #[error(
        "--heartbeat-url carries a user name or password; the ping URL needs none (the URL itself is the secret)"
    )]
    Userinfo,
}

impl crate::error::Classify for HeartbeatError {
    fn kind(&self) -> crate::error::Kind {
        match self {
            HeartbeatError::Unparsable(_)
            | HeartbeatError::Scheme(_)
            | HeartbeatError::Userinfo => crate::error::Kind::BadInput,
        }
    }
}

/// Which ping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    Start,
    Success,
    Fail,
}

impl Signal {
    fn as_str(self) -> &'static str {
        match self {
            Signal::Start => "start",
            Signal::Success => "success",
            Signal::Fail => "fail",
        }
    }
}

/// Reads a heartbeat URL: http or https, with a host, and no userinfo.
pub(crate) fn parse(text: &str) -> Result<Url, HeartbeatError> {
    let url = Url::parse(text.trim()).map_err(HeartbeatError::Unparsable)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(HeartbeatError::Scheme(url.scheme().to_string()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(HeartbeatError::Userinfo);
    }
    Ok(url)
}

/// The URL a signal is sent to: `/start` and `/fail` appended to the path (a query stays after
/// it), the URL itself for a success.
pub(crate) fn signal_url(base: &Url, signal: Signal) -> Url {
    let suffix = match signal {
        Signal::Success => return base.clone(),
        Signal::Start => "start",
        Signal::Fail => "fail",
    };
    let mut url = base.clone();
    let path = format!("{}/{suffix}", base.path().trim_end_matches('/'));
    url.set_path(&path);
    url
}

/// A ping's body: `d1r2 COMMAND: STATUS`, then the report's backup id, rows and bytes when it
/// has them, one `name: value` a line; a failure's exit code. Nothing else of the report (an
/// error line may name a table).
pub(crate) fn body(command: &str, signal: Signal, outcome: Option<Result<&Report, u8>>) -> String {
    let mut text = format!("d1r2 {command}: {}\n", signal.as_str());
    match outcome {
        Some(Ok(report)) => {
            for name in ["backup-id", "newest-id", "consistent", "rows", "bytes"] {
                if let Some(value) = report.outputs.get(name) {
                    text.push_str(&format!("{name}: {value}\n"));
                }
            }
        }
        Some(Err(code)) => text.push_str(&format!("exit: {code}\n")),
        None => {}
    }
    crate::redact::text(&text)
}

/// Why one ping failed: said without the URL.
#[derive(Debug)]
enum PingError {
    Transport(Transport),
    Status(u16, Option<Duration>),
}

impl std::fmt::Display for PingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PingError::Transport(t) => f.write_str(t.as_str()),
            PingError::Status(status, _) => write!(f, "HTTP {status}"),
        }
    }
}

impl PingError {
    fn verdict(&self) -> Verdict {
        match self {
            PingError::Transport(_) => Verdict::Retry { after: None },
            PingError::Status(status, after) => {
                http::status_verdict(*status, *after).unwrap_or(Verdict::Fail)
            }
        }
    }
}

/// Sends `signal` with `body` to the heartbeat at `base`, retried briefly; a ping that still
/// fails is a warning.
pub(crate) async fn ping(base: &Url, signal: Signal, body: String) {
    let client = match http::client(TIMEOUT) {
        Ok(client) => client,
        Err(_) => {
            tracing::warn!("heartbeat ({}) not sent: no HTTP client", signal.as_str());
            return;
        }
    };
    let url = signal_url(base, signal);
    let attempt = |_| {
        let request = client
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(body.clone());
        async move {
            let response = request
                .send()
                .await
                .map_err(|e| PingError::Transport(Transport::of(&e)))?;
            let status = response.status().as_u16();
            if (200..300).contains(&status) {
                return Ok(());
            }
            let after = http::retry_after(response.headers(), SystemTime::now());
            Err(PingError::Status(status, after))
        }
    };
    let (result, attempts) = retry::run(&POLICY, attempt, PingError::verdict, |e, wait| {
        tracing::debug!(
            "heartbeat ({}) failed ({e}); retrying in {:.1} s",
            signal.as_str(),
            wait.as_secs_f64()
        )
    })
    .await;
    if let Err(e) = result {
        tracing::warn!(
            "heartbeat ({}) not delivered after {attempts} attempts ({e}); the command's own result stands",
            signal.as_str()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_table() {
        for (text, want) in [
            ("https://hc-ping.com/5bf6", Ok(())),
            ("http://127.0.0.1:8080/ping/abc", Ok(())),
            ("  https://example.com/x  ", Ok(())),
            ("ftp://example.com/x", Err("not ftp:")),
            ("file:///tmp/x", Err("not file:")),
            ("hc-ping.com/5bf6", Err("is not a URL")),
            ("", Err("is not a URL")),
            (
                "https://user:pw@example.com/x",
                Err("user name or password"),
            ),
            ("https://token@example.com/x", Err("user name or password")),
        ] {
            match (parse(text), want) {
                (Ok(_), Ok(())) => {}
                (Err(e), Err(part)) => {
                    let message = e.to_string();
                    assert!(message.contains(part), "{text:?}: {message}");
                    assert!(!message.contains("example.com"), "{message}");
                }
                (got, _) => panic!("{text:?}: {got:?}"),
            }
        }
    }

    #[test]
    fn signal_urls_table() {
        for (base, signal, want) in [
            (
                "https://hc-ping.com/u1",
                Signal::Start,
                "https://hc-ping.com/u1/start",
            ),
            (
                "https://hc-ping.com/u1",
                Signal::Fail,
                "https://hc-ping.com/u1/fail",
            ),
            (
                "https://hc-ping.com/u1",
                Signal::Success,
                "https://hc-ping.com/u1",
            ),
            (
                "https://hc-ping.com/u1/",
                Signal::Start,
                "https://hc-ping.com/u1/start",
            ),
            (
                "https://hc-ping.com/key/slug?create=1",
                Signal::Fail,
                "https://hc-ping.com/key/slug/fail?create=1",
            ),
            (
                "https://example.com",
                Signal::Start,
                "https://example.com/start",
            ),
        ] {
            let base = parse(base).unwrap();
            assert_eq!(
                signal_url(&base, signal).as_str(),
                want,
                "{base} {signal:?}"
            );
        }
    }

    #[test]
    fn bodies_table() {
        let mut report = Report::new("backup");
        report
            .output("backup-id", "20261124T221500Z")
            .output("rows", 12)
            .output("bytes", 3400)
            .output("sha256", "ab12")
            .output("duration-ms", 5);
        report.row("Source", "d1://private-name");
        for (signal, outcome, want) in [
            (Signal::Start, None, "d1r2 backup: start\n"),
            (
                Signal::Success,
                Some(Ok(&report)),
                "d1r2 backup: success\nbackup-id: 20261124T221500Z\nrows: 12\nbytes: 3400\n",
            ),
            (Signal::Fail, Some(Err(2)), "d1r2 backup: fail\nexit: 2\n"),
        ] {
            assert_eq!(body("backup", signal, outcome), want);
        }
    }
}
