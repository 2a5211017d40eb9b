//! GitHub's published IP ranges: `GET /meta` (there is no `/meta/actions/...`), read with
//! octocrab at `GITHUB_API_URL` (GitHub Enterprise Server sets it), with `GITHUB_TOKEN` when
//! present for the higher rate limit. Retried with the shared policy; a rate limit is waited out
//! for as long as GitHub asks, within the deadline, and said so in the log.

use crate::error::{Classify, Kind};
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use crate::remote::http::{self, RateLimit};
use crate::remote::retry::{self, RetryPolicy, Verdict};

/// The `/meta` sections that hold address ranges.
pub(crate) const SECTIONS: [&str; 11] = [
    "hooks",
    "web",
    "api",
    "git",
    "packages",
    "pages",
    "importer",
    "actions",
    "actions_macos",
    "dependabot",
    "copilot",
];

#[derive(Debug, thiserror::Error)]
pub(crate) enum MetaError {
    #[error("unknown --sections {name:?}; one of {all}", name = .0, all = SECTIONS.join(", "))]
    UnknownSection(String),
    #[error("GitHub's /meta has no {0:?} section (this GitHub may not publish it)")]
    MissingSection(String),
    #[error("GitHub's /meta section {section} holds {value}, not a list of ranges")]
    NotAList { section: String, value: String },
    #[error("reading GitHub's /meta: {0}")]
    Api(String),
    #[error(
        "GitHub's /meta is rate limited (HTTP {status}, {signal}) after {attempts} attempt(s): the next request is allowed in {wait} s, {}; {advice}",
        if *beyond { format!("beyond the {deadline} s d1r2 waits") } else { "and the attempts ran out".to_string() }
    )]
    RateLimited {
        status: u16,
        signal: &'static str,
        wait: u64,
        attempts: u32,
        beyond: bool,
        deadline: u64,
        advice: &'static str,
    },
}

impl Classify for MetaError {
    fn kind(&self) -> Kind {
        match self {
            MetaError::UnknownSection(_) => Kind::BadInput,
            MetaError::MissingSection(_)
            | MetaError::NotAList { .. }
            | MetaError::Api(_)
            | MetaError::RateLimited { .. } => Kind::Failed,
        }
    }
}

/// Checks section names before any request.
pub(crate) fn check_sections(sections: &[String]) -> Result<(), MetaError> {
    for s in sections {
        if !SECTIONS.contains(&s.as_str()) {
            return Err(MetaError::UnknownSection(s.clone()));
        }
    }
    Ok(())
}

/// The raw entries of `sections` in a `/meta` document, each with the section it came from.
pub(crate) fn entries(
    meta: &Value,
    sections: &[String],
) -> Result<Vec<(String, String)>, MetaError> {
    let mut out = Vec::new();
    for section in sections {
        let value = meta
            .get(section)
            .ok_or_else(|| MetaError::MissingSection(section.clone()))?;
        let items = value.as_array().ok_or_else(|| MetaError::NotAList {
            section: section.clone(),
            value: value.to_string().chars().take(60).collect(),
        })?;
        for item in items {
            let text = item
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| item.to_string());
            out.push((section.clone(), text));
        }
    }
    Ok(out)
}

/// How hard `/meta` is tried: the shared policy, except that a rate limit is waited out for as
/// long as the whole deadline, since GitHub says when it lifts (an unauthenticated client gets 60
/// requests an hour, shared with everything else on the runner's address).
pub(crate) const META_POLICY: RetryPolicy = RetryPolicy {
    max_attempts: 6,
    initial_delay: Duration::from_millis(500),
    max_delay: Duration::from_secs(900),
    deadline: Duration::from_secs(900),
};

/// One failed attempt at `/meta`.
#[derive(Debug)]
enum Failed {
    Status {
        status: u16,
        message: String,
        limit: Option<RateLimit>,
    },
    Transport(String),
    Decode(String),
}

impl Failed {
    fn verdict(&self) -> Verdict {
        match self {
            Failed::Status {
                limit: Some(limit), ..
            } => Verdict::Retry {
                after: Some(limit.wait),
            },
            Failed::Status { status, .. } => {
                http::status_verdict(*status, None).unwrap_or(Verdict::Fail)
            }
            Failed::Transport(_) => Verdict::Retry { after: None },
            _ => Verdict::Fail,
        }
    }
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failed::Status {
                status, message, ..
            } => write!(f, "HTTP {status}: {message}"),
            Failed::Transport(e) => f.write_str(e),
            Failed::Decode(e) => write!(f, "not a JSON document: {e}"),
        }
    }
}

/// Fetches `/meta`, waiting out a rate limit within `policy`'s deadline.
pub(crate) async fn fetch(
    env: &BTreeMap<String, String>,
    policy: &RetryPolicy,
) -> Result<Value, MetaError> {
    let base = env
        .get("GITHUB_API_URL")
        .filter(|u| !u.is_empty())
        .cloned()
        .unwrap_or_else(|| "https://api.github.com".to_string());
    let mut builder = http::octocrab()
        .base_uri(base.as_str())
        .map_err(|e| MetaError::Api(format!("GITHUB_API_URL {base:?}: {e}")))?;
    let token = env.get("GITHUB_TOKEN").filter(|t| !t.is_empty());
    if let Some(token) = token {
        builder = builder.personal_token(token.clone());
    }
    let client = builder.build().map_err(|e| MetaError::Api(e.to_string()))?;
    let started = Instant::now();
    let (result, attempts) = retry::run(
        policy,
        |_| attempt(&client),
        Failed::verdict,
        |e, wait| match e {
            Failed::Status {
                status,
                limit: Some(limit),
                ..
            } => tracing::warn!(
                "GitHub's /meta is rate limited (HTTP {status}, {}); waiting {:.1} s for it to lift, within the {} s d1r2 waits",
                limit.signal,
                wait.as_secs_f64(),
                policy.deadline.as_secs()
            ),
            other => tracing::warn!(
                "reading GitHub's /meta: {other}; retrying in {:.1} s",
                wait.as_secs_f64()
            ),
        },
    )
    .await;
    result.map_err(|e| match e {
        Failed::Status {
            status,
            limit: Some(limit),
            ..
        } => MetaError::RateLimited {
            status,
            signal: limit.signal,
            wait: limit.wait.as_secs(),
            attempts,
            beyond: started.elapsed() + limit.wait >= policy.deadline,
            deadline: policy.deadline.as_secs(),
            advice: if token.is_some() {
                "run it later"
            } else {
                "set GITHUB_TOKEN for a higher limit, or run it later"
            },
        },
        other => MetaError::Api(other.to_string()),
    })
}

async fn attempt(client: &octocrab::Octocrab) -> Result<Value, Failed> {
    let response = client
        ._get("/meta")
        .await
        .map_err(|e| Failed::Transport(e.to_string()))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = client
        .body_to_string(response)
        .await
        .map_err(|e| Failed::Transport(e.to_string()))?;
    if (200..300).contains(&status) {
        return serde_json::from_str(&body).map_err(|e| Failed::Decode(e.to_string()));
    }
    let message = http::github_message(&body);
    Err(Failed::Status {
        status,
        limit: http::github_rate_limit(
            status,
            |name| http::header_text(&headers, name),
            &message,
            SystemTime::now(),
        ),
        message,
    })
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    #[test]
    fn sections_and_entries() {
        let meta: Value = serde_json::json!({
            "verifiable_password_authentication": false,
            "hooks": ["192.30.252.0/22", "2a0a:a440::/29"],
            "actions": ["4.148.0.0/16"],
            "domains": {"actions": ["github.com"]},
        });
        let pick = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            entries(&meta, &pick(&["hooks", "actions"])).unwrap(),
            [
                ("hooks".to_string(), "192.30.252.0/22".to_string()),
                ("hooks".to_string(), "2a0a:a440::/29".to_string()),
                ("actions".to_string(), "4.148.0.0/16".to_string()),
            ]
        );
        assert!(matches!(
            entries(&meta, &pick(&["copilot"])),
            Err(MetaError::MissingSection(_))
        ));
        assert!(check_sections(&pick(&["actions", "copilot"])).is_ok());
        let err = check_sections(&pick(&["domains"])).unwrap_err();
        assert_eq!(err.kind(), Kind::BadInput);
        let meta = serde_json::json!({"web": "oops"});
        assert!(matches!(
            entries(&meta, &pick(&["web"])),
            Err(MetaError::NotAList { .. })
        ));
    }

    /// (status, headers, message, wait in seconds, or no rate limit)
    type Case = (
        u16,
        &'static [(&'static str, &'static str)],
        &'static str,
        Option<u64>,
    );

    #[test]
    fn rate_limits_as_github_documents_them() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let headers = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let cases: &[Case] = &[
            (403, &[("retry-after", "7")], "", Some(7)),
            (
                429,
                &[
                    ("retry-after", "1"),
                    ("x-ratelimit-remaining", "0"),
                    ("x-ratelimit-reset", "1700003600"),
                ],
                "",
                Some(1),
            ),
            (
                403,
                &[
                    ("x-ratelimit-remaining", "0"),
                    ("x-ratelimit-reset", "1700000030"),
                ],
                "API rate limit exceeded for 192.0.2.1.",
                Some(31),
            ),
            // A reset already past: one second, for the clocks.
            (
                403,
                &[
                    ("x-ratelimit-remaining", "0"),
                    ("x-ratelimit-reset", "1699999000"),
                ],
                "",
                Some(1),
            ),
            // Requests remain: not the primary limit.
            (
                403,
                &[
                    ("x-ratelimit-remaining", "12"),
                    ("x-ratelimit-reset", "1700000030"),
                ],
                "Forbidden",
                None,
            ),
            (
                403,
                &[],
                "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
                Some(60),
            ),
            (403, &[], "Resource not accessible by integration", None),
            (404, &[("retry-after", "7")], "Not Found", None),
            (
                500,
                &[
                    ("x-ratelimit-remaining", "0"),
                    ("x-ratelimit-reset", "1700000030"),
                ],
                "",
                None,
            ),
        ];
        for (status, pairs, message, want) in cases {
            let got = http::github_rate_limit(*status, headers(pairs), message, now)
                .map(|l| l.wait.as_secs());
            assert_eq!(got, *want, "{status} {pairs:?} {message}");
        }
    }

    #[test]
    fn every_error_has_its_kind() {
        use crate::error::{Classify, Kind::*};
        let s = String::from;
        let cases = [
            (MetaError::UnknownSection(s("nope")), BadInput),
            (MetaError::MissingSection(s("hooks")), Failed),
            (
                MetaError::NotAList {
                    section: s("hooks"),
                    value: s("1"),
                },
                Failed,
            ),
            (MetaError::Api(s("x")), Failed),
            (
                MetaError::RateLimited {
                    status: 403,
                    signal: "x-ratelimit-remaining: 0",
                    wait: 60,
                    attempts: 3,
                    beyond: true,
                    deadline: 30,
                    advice: "set GITHUB_TOKEN",
                },
                Failed,
            ),
        ];
        for (err, kind) in cases {
            assert_eq!(err.kind(), kind, "{err}");
        }
    }
}
