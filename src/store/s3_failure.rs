//! What a failed request to a bucket means, in one line: what failed, and what to do about it.
//!
//! The AWS SDK's errors print as a chain of wrappers and, through `Debug`, as the whole of their
//! insides (a kilobyte of `DispatchFailure(ConnectorError { .. })`). Here an error is read for
//! the few facts that matter (no answer, a timeout, a broken answer, or the service's status,
//! code and message) and said plainly, with the variable to set or the thing to check. The
//! reading of the SDK's types is in `store::s3`; the decisions are pure functions, with tables.

use std::time::Duration;

/// Attempts per request: the SDK's standard retry mode, which backs off with full jitter from
/// [`INITIAL_BACKOFF`], doubling, to at most [`MAX_BACKOFF`].
pub(crate) const MAX_ATTEMPTS: u32 = 6;
pub(crate) const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(20);

/// How long a connection may take to open before the attempt counts as failed: an endpoint
/// that cannot be reached then costs seconds an attempt, not a silent minute.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A retry whose wait may be this long or longer is announced on stderr.
pub(crate) const NOTICE: Duration = Duration::from_secs(4);

/// What went wrong, as far as a user needs to know.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Failure {
    /// No connection could be made (refused, unreachable, a name that does not resolve).
    Connect { cause: String },
    /// The request or its connection timed out.
    Timeout,
    /// The answer started and broke off.
    Broken { cause: String },
    /// The service answered with an error.
    Service {
        status: Option<u16>,
        code: Option<String>,
        message: Option<String>,
    },
    /// The credentials could not be loaded while the request was made.
    Credentials { cause: String },
    /// Anything else (a request the SDK could not build).
    Other { cause: String },
}

/// Which variables hold a bucket's keys, for messages that say which to fix.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Keys {
    pub id: &'static str,
    pub secret: &'static str,
    /// R2's keys come with an account, whose id makes the endpoint.
    pub r2: bool,
}

impl Keys {
    /// `r2://` reads `R2_*`, `s3://` the AWS chain's `AWS_*`.
    pub(crate) fn of(scheme: &str) -> Keys {
        if scheme == "r2://" {
            Keys {
                id: "R2_ACCESS_KEY_ID",
                secret: "R2_SECRET_ACCESS_KEY",
                r2: true,
            }
        } else {
            Keys {
                id: "AWS_ACCESS_KEY_ID",
                secret: "AWS_SECRET_ACCESS_KEY",
                r2: false,
            }
        }
    }

    /// What to set when no credentials were found.
    pub(crate) fn hint(&self) -> String {
        if self.r2 {
            format!(
                "set {} and {} (an R2 API token's S3 keys) and CLOUDFLARE_ACCOUNT_ID",
                self.id, self.secret
            )
        } else {
            format!(
                "set {} and {} (or AWS_PROFILE, or run where an AWS role provides them)",
                self.id, self.secret
            )
        }
    }
}

/// How much of the service's message is quoted: S3's are a sentence; a proxy's may echo the
/// request, and enough of it is kept to show what it was (redacted before it is cut).
const MESSAGE_QUOTED: usize = 1000;

/// Whose fault a failure is, which decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Blame {
    /// The bucket is not there.
    NoBucket,
    /// The keys or their permissions: the user's to fix (exit 2).
    Keys,
    /// The network or the service: running it again may help (exit 1).
    Failed,
}

/// The failure as one line, without the operation and key (the caller puts those first), and
/// whose it is. `endpoint` names where the store was reached, when it is not AWS's own.
pub(crate) fn describe(failure: &Failure, keys: Keys, endpoint: Option<&str>) -> (Blame, String) {
    let at = endpoint.map(|e| format!(" {e}")).unwrap_or_default();
    let again = format!("{MAX_ATTEMPTS} attempts; a network failure: check the network");
    match failure {
        Failure::Connect { cause } => (
            Blame::Failed,
            format!(
                "could not connect to the endpoint{at} ({cause}) in {again}{}, then run it again",
                if endpoint.is_some() {
                    " and the endpoint"
                } else {
                    ""
                }
            ),
        ),
        Failure::Timeout => (
            Blame::Failed,
            format!("no answer from the endpoint{at} in time, {again}, then run it again"),
        ),
        Failure::Broken { cause } => (
            Blame::Failed,
            format!("the answer broke off ({cause}) in {again}, then run it again"),
        ),
        Failure::Credentials { cause } => (
            Blame::Keys,
            format!("no credentials could be loaded ({cause}): {}", keys.hint()),
        ),
        Failure::Other { cause } => (Blame::Failed, cause.clone()),
        Failure::Service {
            status,
            code,
            message,
        } => service(*status, code.as_deref(), message.as_deref(), keys),
    }
}

/// The service's refusal: its code says what, the status when it has no code.
fn service(
    status: Option<u16>,
    code: Option<&str>,
    message: Option<&str>,
    keys: Keys,
) -> (Blame, String) {
    let said = match (code, status) {
        (Some(code), Some(status)) => format!("{code}, HTTP {status}"),
        (Some(code), None) => code.to_string(),
        (None, Some(status)) => format!("HTTP {status}"),
        (None, None) => "no status".to_string(),
    };
    let detail = message
        .map(|m| crate::redact::remote_body(m, MESSAGE_QUOTED))
        .filter(|m| !m.is_empty())
        .map(|m| format!(": {m}"))
        .unwrap_or_default();
    match (code, status) {
        (Some("NoSuchBucket"), _) => (Blame::NoBucket, String::new()),
        (Some("InvalidAccessKeyId" | "NotSignedUp"), _) => (
            Blame::Keys,
            format!(
                "the service does not know the access key id ({said}): check {}",
                keys.id
            ),
        ),
        (Some("SignatureDoesNotMatch"), _) => (
            Blame::Keys,
            format!(
                "the secret key does not match the access key id ({said}): check {}",
                keys.secret
            ),
        ),
        (Some("AccessDenied" | "Unauthorized" | "InvalidToken" | "ExpiredToken"), _)
        | (_, Some(401 | 403)) => (
            Blame::Keys,
            format!(
                "access denied ({said}{detail}): check that {} belongs to keys with read and \
                 write access to this bucket",
                keys.id
            ),
        ),
        (_, Some(500..=599 | 429)) | (Some("SlowDown" | "RequestTimeout"), _) => (
            Blame::Failed,
            format!("the service failed ({said}{detail}) {MAX_ATTEMPTS} times; run it again later"),
        ),
        _ => (Blame::Failed, format!("refused ({said}{detail})")),
    }
}

/// The ceiling of the wait after failed attempt number `attempt` (1-based): the standard
/// mode's `INITIAL_BACKOFF * 2^(attempt-1)`, at most [`MAX_BACKOFF`].
pub(crate) fn wait_ceiling(attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(30));
    INITIAL_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
}

/// Whether a failed attempt that will be retried is announced: once a request, at its first
/// failure when the network failed (the user waits through connection timeouts), otherwise at
/// the first attempt whose wait may reach [`NOTICE`].
pub(crate) fn announce(attempt: u32, network: bool) -> bool {
    if attempt == 0 || attempt >= MAX_ATTEMPTS {
        return false;
    }
    if network {
        return attempt == 1;
    }
    wait_ceiling(attempt) >= NOTICE && (attempt == 1 || wait_ceiling(attempt - 1) < NOTICE)
}

/// The line that announces the retries after failed attempt `attempt`: what failed and how long
/// the rest may wait at most.
pub(crate) fn announcement(store: &str, what: &str, attempt: u32) -> String {
    let left = MAX_ATTEMPTS.saturating_sub(attempt);
    let waits: Duration = (attempt..MAX_ATTEMPTS).map(wait_ceiling).sum();
    format!(
        "{store}: {what}; trying again: {left} more attempt{}, waiting up to {} s in all",
        if left == 1 { "" } else { "s" },
        waits.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(status: Option<u16>, code: Option<&str>, message: Option<&str>) -> Failure {
        Failure::Service {
            status,
            code: code.map(str::to_string),
            message: message.map(str::to_string),
        }
    }

    #[test]
    fn failures_table() {
        let r2 = Keys::of("r2://");
        let s3 = Keys::of("s3://");
        let refused = Failure::Connect {
            cause: "Connection refused (os error 111)".into(),
        };
        for (failure, keys, endpoint, blame, needles) in [
            (
                refused.clone(),
                r2,
                Some("127.0.0.1:9"),
                Blame::Failed,
                &[
                    "could not connect",
                    "127.0.0.1:9",
                    "Connection refused",
                    "6 attempts",
                ][..],
            ),
            (
                refused,
                s3,
                None,
                Blame::Failed,
                &["could not connect to the endpoint (", "run it again"][..],
            ),
            (
                Failure::Timeout,
                s3,
                None,
                Blame::Failed,
                &["no answer"][..],
            ),
            (
                Failure::Broken {
                    cause: "reset".into(),
                },
                s3,
                None,
                Blame::Failed,
                &["broke off (reset)"][..],
            ),
            (
                Failure::Credentials {
                    cause: "no providers".into(),
                },
                s3,
                None,
                Blame::Keys,
                &["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"][..],
            ),
            (
                service(Some(403), Some("InvalidAccessKeyId"), Some("x")),
                r2,
                None,
                Blame::Keys,
                &["does not know the access key id", "check R2_ACCESS_KEY_ID"][..],
            ),
            (
                service(Some(403), Some("NotSignedUp"), None),
                s3,
                None,
                Blame::Keys,
                &["check AWS_ACCESS_KEY_ID"][..],
            ),
            (
                service(Some(403), Some("SignatureDoesNotMatch"), None),
                r2,
                None,
                Blame::Keys,
                &["secret key does not match", "check R2_SECRET_ACCESS_KEY"][..],
            ),
            (
                service(Some(403), Some("AccessDenied"), Some("Access Denied")),
                r2,
                None,
                Blame::Keys,
                &[
                    "access denied (AccessDenied, HTTP 403: Access Denied)",
                    "R2_ACCESS_KEY_ID",
                ][..],
            ),
            (
                service(Some(403), None, None),
                s3,
                None,
                Blame::Keys,
                &["access denied (HTTP 403)"][..],
            ),
            (
                service(Some(404), Some("NoSuchBucket"), None),
                s3,
                None,
                Blame::NoBucket,
                &[][..],
            ),
            (
                service(
                    Some(503),
                    Some("SlowDown"),
                    Some("Please reduce\nyour rate."),
                ),
                s3,
                None,
                Blame::Failed,
                &[
                    "failed (SlowDown, HTTP 503: Please reduce your rate.) 6 times",
                    "later",
                ][..],
            ),
            (
                service(Some(500), None, None),
                s3,
                None,
                Blame::Failed,
                &["failed (HTTP 500)"][..],
            ),
            (
                service(Some(400), Some("InvalidArgument"), Some("bad")),
                s3,
                None,
                Blame::Failed,
                &["refused (InvalidArgument, HTTP 400: bad)"][..],
            ),
        ] {
            let (got, text) = describe(&failure, keys, endpoint);
            assert_eq!(got, blame, "{failure:?}: {text}");
            for needle in needles {
                assert!(text.contains(needle), "{failure:?}: {text} lacks {needle}");
            }
            assert!(!text.contains('\n'), "{text}");
        }
    }

    #[test]
    fn missing_keys_name_the_scheme_s_variables() {
        let r2 = Keys::of("r2://").hint();
        for var in [
            "R2_ACCESS_KEY_ID",
            "R2_SECRET_ACCESS_KEY",
            "CLOUDFLARE_ACCOUNT_ID",
        ] {
            assert!(r2.contains(var), "{r2}");
        }
        let s3 = Keys::of("s3://").hint();
        assert!(s3.contains("AWS_ACCESS_KEY_ID") && s3.contains("AWS_SECRET_ACCESS_KEY"));
        assert!(!s3.contains("R2_"), "{s3}");
    }

    #[test]
    fn waits_table() {
        for (attempt, secs) in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 16), (6, 20), (40, 20)] {
            assert_eq!(
                wait_ceiling(attempt),
                Duration::from_secs(secs),
                "{attempt}"
            );
        }
    }

    #[test]
    fn announcements_table() {
        for (attempt, network, want) in [
            (0, true, false),
            (1, true, true),
            (2, true, false),
            (1, false, false),
            (2, false, false),
            (3, false, true),
            (4, false, false),
            (5, false, false),
            (MAX_ATTEMPTS, true, false),
            (MAX_ATTEMPTS, false, false),
        ] {
            assert_eq!(announce(attempt, network), want, "{attempt} {network}");
        }
        assert_eq!(
            announcement("r2://b", "could not connect", 1),
            "r2://b: could not connect; trying again: 5 more attempts, waiting up to 31 s in all"
        );
        assert_eq!(
            announcement("s3://b", "HTTP 503", 5),
            "s3://b: HTTP 503; trying again: 1 more attempt, waiting up to 16 s in all"
        );
    }
}
