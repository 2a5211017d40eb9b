//! `d1r2 trigger`: call the application's own backup endpoint with a TOTP bearer code, retrying
//! with the shared policy.
//!
//! Every attempt gets a fresh code, made just before it is sent, and never one with less than
//! `--min-validity` seconds left (it would expire on the way): the hand-written workflow that
//! computes one code and reuses it across retry delays gets 401s once the first delay outlasts
//! the code. Nor is a code ever sent twice: an endpoint accepts each code once (RFC 6238 §5.2),
//! and one that answered 5xx may have used it up before failing, so a retry within the period of
//! the code before waits for the next period. 408, 429 (honouring `Retry-After`), 5xx, timeouts
//! and connection failures are retried; any other 4xx fails at once. Neither the secret nor a
//! code is ever printed, and the URL is shown without its query and credentials, which may carry
//! tokens too.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderName, HeaderValue};

use crate::error::{Result, bad_input};
use crate::model::report::{Failure, Report};
use crate::ops::totp::{Generator, TotpShape};
use crate::remote::http::{self, Transport};
use crate::remote::retry::{self, RetryPolicy, Verdict};

/// The most of a response body kept for outputs and messages.
pub(crate) const BODY_LIMIT: usize = 1000;

/// The flags of `d1r2 trigger`; each field is the flag of its name, documented (defaults and
/// bounds) where the command line parses it, in `cli/args.rs`.
#[derive(Debug, Clone)]
pub(crate) struct TriggerOptions {
    pub url: String,
    pub method: String,
    pub body: Option<String>,
    pub headers: Vec<String>,
    pub max_attempts: u32,
    pub initial_delay: f64,
    pub max_delay: f64,
    pub deadline: f64,
    pub timeout: f64,
    pub min_validity: u64,
    pub totp: TotpShape,
}

/// How long to wait at unix time `now` (seconds, fractional) before a code has at least
/// `min_validity` seconds left in its `period` and is of a later period than `last_sent`, the
/// period (counter) of the code the attempt before sent. A `min_validity` of half the period or
/// more is treated as half, so there is always a time that satisfies it.
pub(crate) fn wait_for_fresh_code(
    now: f64,
    period: u64,
    min_validity: u64,
    last_sent: Option<u64>,
) -> Duration {
    let period_f = period as f64;
    if let Some(last) = last_sent {
        let next = (last + 1) as f64 * period_f;
        if now < next {
            // The next period's code, sent at its start, has the whole period left.
            return Duration::from_secs_f64(next - now + 0.01);
        }
    }
    let left = period_f - now.rem_euclid(period_f);
    let needed = (min_validity as f64).min(period_f / 2.0);
    if left < needed {
        Duration::from_secs_f64(left + 0.01)
    } else {
        Duration::ZERO
    }
}

/// `Name: value` as a header, refusing `Authorization` (the code goes there).
pub(crate) fn parse_header(text: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("header {text:?}: expected `Name: value`"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("header {:?}: not a header name", name.trim()))?;
    if name == reqwest::header::AUTHORIZATION {
        return Err("header Authorization: d1r2 sends the TOTP bearer code there itself".into());
    }
    let value = HeaderValue::from_str(value.trim())
        .map_err(|_| format!("header {name}: the value has characters a header cannot hold"))?;
    Ok((name, value))
}

/// At most `limit` bytes of `text`, cut at a character boundary, with `…` when cut.
pub(crate) fn truncate(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_string();
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Refuses a URL with credentials in it (bad input): the request's `Authorization` header holds
/// the TOTP bearer code, and a `user:password@` would be sent as a second one. The URL is not
/// quoted: the credentials are what must not be.
fn refuse_userinfo(url: &reqwest::Url) -> Result<()> {
    if url.username().is_empty() && url.password().is_none() {
        return Ok(());
    }
    Err(bad_input(
        "--url holds credentials (user:password@): d1r2 authenticates with the TOTP bearer \
         code in the Authorization header; remove them from the URL",
    ))
}

/// Registers the values of the URL's query as secrets: an endpoint key is often passed there,
/// and an endpoint that echoes its arguments would otherwise give it back in its answer.
fn register_query(url: &reqwest::Url) {
    for (_, value) in url.query_pairs() {
        crate::redact::register(&value);
    }
}

/// A URL fit for logs: scheme, host, port and path; no credentials, query or fragment.
pub(crate) fn shown_url(url: &reqwest::Url) -> String {
    let mut shown = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
    if let Some(port) = url.port() {
        shown.push_str(&format!(":{port}"));
    }
    shown.push_str(url.path());
    shown
}

/// One attempt that did not succeed.
#[derive(Debug)]
enum Miss {
    Status {
        status: u16,
        body: String,
        retry_after: Option<Duration>,
        elapsed: Duration,
    },
    Transport {
        message: String,
        elapsed: Duration,
    },
}

impl Miss {
    fn verdict(&self) -> Verdict {
        match self {
            Miss::Status {
                status,
                retry_after,
                ..
            } => http::status_verdict(*status, *retry_after).unwrap_or(Verdict::Fail),
            Miss::Transport { .. } => Verdict::Retry { after: None },
        }
    }

    fn describe(&self) -> String {
        match self {
            Miss::Status {
                status, elapsed, ..
            } => format!("HTTP {status} in {} ms", elapsed.as_millis()),
            Miss::Transport { message, elapsed } => {
                format!("{message} after {} ms", elapsed.as_millis())
            }
        }
    }
}

struct Answer {
    status: u16,
    body: String,
    elapsed: Duration,
}

fn seconds(name: &str, value: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(value).map_err(|_| {
        bad_input(format!(
            "--{name} {value}: expected a number of seconds ≥ 0"
        ))
    })
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `d1r2 trigger`, with `TOTP_SECRET` given as `secret`.
pub(crate) async fn run(args: &TriggerOptions, secret: Option<&str>) -> Result<Report> {
    let generator = Generator::new(&args.totp, secret)?;
    let url = reqwest::Url::parse(&args.url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| bad_input("--url: expected an http:// or https:// URL"))?;
    refuse_userinfo(&url)?;
    register_query(&url);
    let shown = shown_url(&url);
    let method = reqwest::Method::from_bytes(args.method.trim().to_ascii_uppercase().as_bytes())
        .map_err(|_| bad_input(format!("--method {:?}: not an HTTP method", args.method)))?;
    if let Some(body) = &args.body {
        serde_json::from_str::<serde_json::Value>(body)
            .map_err(|e| bad_input(format!("--body is not JSON: {e}")))?;
    }
    let headers = args
        .headers
        .iter()
        .filter(|h| !h.trim().is_empty())
        .map(|h| parse_header(h).map_err(bad_input))
        .collect::<Result<Vec<_>>>()?;
    // A header is where an endpoint's own key goes: an echo of it is redacted like a secret.
    for (_, value) in &headers {
        crate::redact::register(value.to_str().unwrap_or_default());
    }
    let policy = RetryPolicy {
        max_attempts: args.max_attempts,
        initial_delay: seconds("initial-delay", args.initial_delay)?,
        max_delay: seconds("max-delay", args.max_delay)?,
        deadline: seconds("deadline", args.deadline)?,
    };
    let client = http::client(seconds("timeout", args.timeout)?)?;
    let max = args.max_attempts;
    let started = Instant::now();

    // The period of the code the attempt before sent: no later attempt sends it again.
    let last_sent = std::sync::Mutex::new(None::<u64>);
    let attempt = |n: u32| {
        let (client, generator, url, method, headers, last_sent) =
            (&client, &generator, &url, &method, &headers, &last_sent);
        async move {
            let before = *last_sent.lock().unwrap_or_else(|e| e.into_inner());
            let wait = wait_for_fresh_code(unix_now(), generator.period, args.min_validity, before);
            if !wait.is_zero() {
                tracing::info!(
                    "attempt {n}/{max}: waiting {:.1} s for a fresh code",
                    wait.as_secs_f64()
                );
                tokio::time::sleep(wait).await;
            }
            let at = unix_now() as u64;
            let code = generator.code(at);
            *last_sent.lock().unwrap_or_else(|e| e.into_inner()) = Some(at / generator.period);
            // An endpoint that echoes the request gives the code back; it is redacted as the
            // secret it is made from.
            crate::redact::register(&code);
            let mut request = client
                .request(method.clone(), url.clone())
                .bearer_auth(code);
            for (name, value) in headers {
                request = request.header(name, value);
            }
            if let Some(body) = &args.body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            let sent = Instant::now();
            let response = request.send().await.map_err(|e| transport(&e, sent))?;
            let status = response.status().as_u16();
            let retry_after = http::retry_after(response.headers(), SystemTime::now());
            let body = response.text().await.map_err(|e| transport(&e, sent))?;
            // Redacted before the cut, which could leave half a secret no rule recognises.
            let body = truncate(&crate::redact::text(&body), BODY_LIMIT);
            let elapsed = sent.elapsed();
            if http::status_verdict(status, retry_after).is_none() {
                tracing::info!(
                    "attempt {n}/{max}: HTTP {status} in {} ms",
                    elapsed.as_millis()
                );
                Ok(Answer {
                    status,
                    body,
                    elapsed,
                })
            } else {
                Err(Miss::Status {
                    status,
                    body,
                    retry_after,
                    elapsed,
                })
            }
        }
    };
    let attempt_no = std::sync::atomic::AtomicU32::new(0);
    let (result, attempts) = retry::run(
        &policy,
        |n| {
            attempt_no.store(n, std::sync::atomic::Ordering::SeqCst);
            attempt(n)
        },
        Miss::verdict,
        |miss, wait| {
            tracing::warn!(
                "attempt {}/{max}: {}; retrying in {:.1} s",
                attempt_no.load(std::sync::atomic::Ordering::SeqCst),
                miss.describe(),
                wait.as_secs_f64()
            );
        },
    )
    .await;

    let mut report = Report::new("trigger");
    report
        .output("attempts", attempts)
        .output("duration-ms", started.elapsed().as_millis());
    report
        .row("Endpoint", format!("{method} {shown}"))
        .row("Attempts", format!("{attempts} of at most {max}"));
    match result {
        Ok(answer) => {
            report
                .output("http-status", answer.status)
                .output("body", &answer.body);
            report
                .row("HTTP status", answer.status)
                .row("Last attempt", format!("{} ms", answer.elapsed.as_millis()))
                .row(
                    "Duration",
                    format!("{:.1} s", started.elapsed().as_secs_f64()),
                );
            report.detail = answer.body;
            Ok(report)
        }
        Err(miss) => {
            tracing::warn!("attempt {attempts}/{max}: {}; giving up", miss.describe());
            let cause = match &miss {
                Miss::Status { status, body, .. } => {
                    report.output("http-status", status).output("body", body);
                    report.row("HTTP status", status);
                    report.detail = body.clone();
                    let why = if miss.verdict() == Verdict::Fail {
                        " (not retried)"
                    } else {
                        ""
                    };
                    let start = crate::redact::remote_body(body, http::BODY_QUOTED);
                    format!("HTTP {status}{why}: {start}")
                }
                Miss::Transport { message, .. } => message.clone(),
            };
            let message = format!("{method} {shown} failed after {attempts} attempt(s): {cause}");
            report.output("status", "failure").output("error", &message);
            Err(Failure { report, message }.into())
        }
    }
}

fn transport(err: &reqwest::Error, sent: Instant) -> Miss {
    Miss::Transport {
        message: Transport::of(err).as_str().to_string(),
        elapsed: sent.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_code_waits_table() {
        for (now, period, min, last, want_ms) in [
            (0.0, 30, 2, None, 0),
            (27.5, 30, 2, None, 0),
            (28.0, 30, 2, None, 0),
            (28.5, 30, 2, None, 1510),
            (29.99, 30, 2, None, 20),
            (59.0, 30, 2, None, 1010),
            (1_700_000_009.0, 10, 2, None, 1010),
            (4.0, 10, 9, None, 0),
            (6.0, 10, 9, None, 4010),
            (1.0, 10, 0, None, 0),
            // A retry in the period of the code sent before waits for the next period.
            (5.0, 30, 2, Some(0), 25010),
            (29.0, 30, 2, Some(0), 1010),
            (1_700_000_001.5, 10, 2, Some(170_000_000), 8510),
            // A later period's code is sent at once, unless about to expire.
            (30.0, 30, 2, Some(0), 0),
            (45.0, 30, 2, Some(0), 0),
            (59.0, 30, 2, Some(0), 1010),
            (95.0, 30, 2, Some(1), 0),
        ] {
            let got = wait_for_fresh_code(now, period, min, last).as_millis();
            assert!(
                got.abs_diff(want_ms) <= 1,
                "{now} {period} {min} {last:?}: {got}"
            );
        }
    }

    #[test]
    fn headers_table() {
        for (text, ok) in [
            ("X-Backup-Reason: nightly", true),
            ("Accept: application/json, text/plain", true),
            ("x-empty:", true),
            ("Authorization: Bearer x", false),
            ("authorization: x", false),
            ("no colon", false),
            ("bad name: x", false),
            ("X-Line: a\u{7f}b", false),
        ] {
            assert_eq!(parse_header(text).is_ok(), ok, "{text}");
        }
        let (name, value) = parse_header(" X-A :  b c ").unwrap();
        assert_eq!((name.as_str(), value.to_str().unwrap()), ("x-a", "b c"));
    }

    #[test]
    fn truncation_table() {
        for (text, limit, want) in [
            ("short", 10, "short"),
            ("exactly10!", 10, "exactly10!"),
            ("0123456789abc", 10, "0123456789…"),
            ("ééééé", 3, "é…"),
            ("🐢🐢", 5, "🐢…"),
        ] {
            assert_eq!(truncate(text, limit), want, "{text}");
        }
    }

    #[test]
    fn urls_are_shown_without_secrets() {
        for (url, want) in [
            (
                "https://app.example.com/api/backup",
                "https://app.example.com/api/backup",
            ),
            (
                "https://user:pass@app.example.com:8443/api/backup?token=abc#x",
                "https://app.example.com:8443/api/backup",
            ),
            ("http://127.0.0.1:9/", "http://127.0.0.1:9/"),
        ] {
            assert_eq!(shown_url(&reqwest::Url::parse(url).unwrap()), want);
        }
    }
}
