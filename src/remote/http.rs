//! The one HTTP setup and the one reading of a failed answer that every client shares: the
//! Cloudflare API, `trigger`, GitHub's `/meta` and check runs. The retry loop itself is
//! [`crate::remote::retry::run`]; this module says what it is retrying.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;

use crate::remote::retry::{self, Verdict};

/// What every request says it is, so a server's operator can tell d1r2's traffic apart.
pub(crate) const USER_AGENT: &str = concat!("d1r2/", env!("CARGO_PKG_VERSION"));

/// How long a connection may take to open: a server that has not answered by then is down or
/// unreachable, and a retry on a fresh connection does better than waiting on.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a request may take in all: D1 stops a query after 30 s, so anything slower than this
/// is a lost connection.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(90);

/// A reqwest client with the shared user agent and connect timeout, and `timeout` for each
/// request in all (`trigger --timeout` sets its own).
/// A client that cannot be built (no TLS backend) or a request that failed on the way: the
/// operation failed.
impl crate::error::Classify for reqwest::Error {
    fn kind(&self) -> crate::error::Kind {
        crate::error::Kind::Failed
    }
}

pub(crate) fn client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(timeout)
        .build()
}

/// An octocrab builder with the shared timeouts. octocrab has no overall timeout, so
/// [`TIMEOUT`] bounds each read instead. The user agent stays octocrab's own: its builder adds
/// extra headers beside that one rather than replacing it, which would send two.
pub(crate) fn octocrab() -> octocrab::OctocrabBuilder<
    octocrab::NoSvc,
    octocrab::DefaultOctocrabBuilderConfig,
    octocrab::NoAuth,
    octocrab::NotLayerReady,
> {
    octocrab::Octocrab::builder()
        .set_connect_timeout(Some(CONNECT_TIMEOUT))
        .set_read_timeout(Some(TIMEOUT))
}

/// A `Retry-After` header's wait, delay-seconds or an HTTP date; none when absent or unreadable.
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| retry::parse_retry_after(v, now))
}

/// What an HTTP status means: none for a success, a retry (after the server's `Retry-After`, if
/// it gave one) for 408, 429 and 5xx, and a final failure for anything else.
pub(crate) fn status_verdict(status: u16, retry_after: Option<Duration>) -> Option<Verdict> {
    if (200..300).contains(&status) {
        None
    } else if retry::is_transient_status(status) {
        Some(Verdict::Retry { after: retry_after })
    } else {
        Some(Verdict::Fail)
    }
}

/// A rate limit GitHub answered with, and how long it asks to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateLimit {
    pub wait: Duration,
    /// What said so: `retry-after`, `x-ratelimit-remaining: 0`, or only the message.
    pub signal: &'static str,
}

/// Reads a rate limit from a GitHub 403 or 429 the way GitHub's REST documentation says to: wait
/// `retry-after` seconds when it is given; else, with `x-ratelimit-remaining: 0`, until
/// `x-ratelimit-reset` (UTC epoch seconds, plus a second for the clocks' difference and the
/// header's whole seconds); else, for a message about a (secondary) rate limit, a minute.
pub(crate) fn github_rate_limit(
    status: u16,
    header: impl Fn(&str) -> Option<String>,
    message: &str,
    now: SystemTime,
) -> Option<RateLimit> {
    if status != 403 && status != 429 {
        return None;
    }
    if let Some(wait) = header("retry-after").and_then(|v| retry::parse_retry_after(&v, now)) {
        return Some(RateLimit {
            wait,
            signal: "retry-after",
        });
    }
    let exhausted = header("x-ratelimit-remaining").is_some_and(|v| v.trim() == "0");
    if let Some(reset) = header("x-ratelimit-reset")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|_| exhausted)
    {
        let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        return Some(RateLimit {
            wait: Duration::from_secs(reset).saturating_sub(since_epoch) + Duration::from_secs(1),
            signal: "x-ratelimit-remaining: 0",
        });
    }
    message
        .to_ascii_lowercase()
        .contains("rate limit")
        .then_some(RateLimit {
            wait: Duration::from_secs(60),
            signal: "a rate-limit message",
        })
}

/// What a failed GitHub answer says: its JSON `message`, or the start of the body when it has
/// none (a proxy's error page, say); either through [`crate::redact::remote_body`], since a
/// proxy may copy our headers into it.
pub(crate) fn github_message(body: &str) -> String {
    let message = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string));
    crate::redact::remote_body(message.as_deref().unwrap_or(body), BODY_QUOTED)
}

/// How much of a remote answer an error message quotes.
pub(crate) const BODY_QUOTED: usize = 200;

/// A header of `headers` as text, in the shape [`github_rate_limit`] reads.
pub(crate) fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// How a request failed to get a whole answer. Every kind is worth a retry: the server never
/// said no.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    Timeout,
    Connect,
    /// The connection dropped while the answer's body was on its way.
    Body,
    Other,
}

impl Transport {
    /// The kind of a reqwest error.
    pub(crate) fn of(err: &reqwest::Error) -> Transport {
        Transport::from_flags(err.is_timeout(), err.is_connect(), err.is_body())
    }

    /// The kind from reqwest's flags, a timeout first since a connect that timed out is both.
    pub(crate) fn from_flags(timeout: bool, connect: bool, body: bool) -> Transport {
        match (timeout, connect, body) {
            (true, _, _) => Transport::Timeout,
            (_, true, _) => Transport::Connect,
            (_, _, true) => Transport::Body,
            _ => Transport::Other,
        }
    }

    /// What happened, as the start of a message.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Transport::Timeout => "timed out",
            Transport::Connect => "could not connect",
            Transport::Body | Transport::Other => "connection failed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_verdicts_table() {
        let after = Some(Duration::from_secs(3));
        for (status, want) in [
            (200, None),
            (204, None),
            (401, Some(Verdict::Fail)),
            (403, Some(Verdict::Fail)),
            (404, Some(Verdict::Fail)),
            (408, Some(Verdict::Retry { after })),
            (429, Some(Verdict::Retry { after })),
            (500, Some(Verdict::Retry { after })),
            (503, Some(Verdict::Retry { after })),
        ] {
            assert_eq!(status_verdict(status, after), want, "{status}");
        }
    }

    #[test]
    fn retry_after_headers_table() {
        let now = UNIX_EPOCH + Duration::from_secs(1_445_412_470);
        for (value, want) in [
            (Some("7"), Some(7)),
            (Some("Wed, 21 Oct 2015 07:28:00 GMT"), Some(10)),
            (Some("soon"), None),
            (None, None),
        ] {
            let mut headers = HeaderMap::new();
            if let Some(value) = value {
                headers.insert(reqwest::header::RETRY_AFTER, value.parse().unwrap());
            }
            assert_eq!(
                retry_after(&headers, now),
                want.map(Duration::from_secs),
                "{value:?}"
            );
            assert_eq!(header_text(&headers, "retry-after").as_deref(), value);
        }
    }

    #[test]
    fn github_messages_table() {
        let page = "<html>".repeat(50);
        for (body, want) in [
            (
                r#"{"message": "Bad credentials"}"#,
                "Bad credentials".to_string(),
            ),
            (
                r#"{"documentation_url": "x"}"#,
                r#"{"documentation_url": "x"}"#.into(),
            ),
            ("Service Unavailable", "Service Unavailable".into()),
            (page.as_str(), format!("{}…", &page[..200])),
            (
                "proxy said:\n\u{1b}[2Jauthorization: Bearer abcdefgh",
                "proxy said: [2Jauthorization: Bearer [redacted]".into(),
            ),
        ] {
            assert_eq!(github_message(body), want, "{body}");
        }
    }

    #[test]
    fn transport_kinds_table() {
        for (timeout, connect, body, want, text) in [
            (true, true, false, Transport::Timeout, "timed out"),
            (true, false, true, Transport::Timeout, "timed out"),
            (false, true, false, Transport::Connect, "could not connect"),
            (false, false, true, Transport::Body, "connection failed"),
            (false, false, false, Transport::Other, "connection failed"),
        ] {
            let got = Transport::from_flags(timeout, connect, body);
            assert_eq!((got, got.as_str()), (want, text));
        }
    }

    #[tokio::test]
    async fn transport_errors_from_reqwest() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let refused = client(TIMEOUT)
            .unwrap()
            .get(format!("http://127.0.0.1:{port}/"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(Transport::of(&refused), Transport::Connect);
    }
}
