//! The Cloudflare v4 API: one client, its JSON envelope, its errors and its retry rule.
//!
//! Every call goes through [`Api::call`], which retries 408, 429 (waiting as long as
//! `Retry-After` says), 5xx and dropped connections with the shared [`crate::remote::retry`] policy, and
//! fails at once on any other 4xx with Cloudflare's own error codes and messages in one line. The
//! token is sent as a bearer header and never appears in a message.

use crate::error::{Classify, Kind};
use std::time::{Duration, SystemTime};

use reqwest::Method;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::remote::http::{self, Transport};
use crate::remote::retry::{self, RetryPolicy, Verdict};

/// How hard API calls are retried: the shared policy, except that a `Retry-After` of up to five
/// minutes is waited out, since the API's rate limit is counted over five-minute windows.
pub(crate) const API_POLICY: RetryPolicy = RetryPolicy {
    max_attempts: 8,
    initial_delay: Duration::from_millis(500),
    max_delay: Duration::from_secs(300),
    deadline: Duration::from_secs(900),
};

/// Cloudflare's API, as wrangler calls it.
pub(crate) const DEFAULT_BASE_URL: &str = "https://api.cloudflare.com/client/v4";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0} is not set: create an API token in the Cloudflare dashboard and export it")]
    MissingToken(&'static str),
    #[error("{0} is not set: export the id of the account that owns the database")]
    MissingAccount(&'static str),
    #[error("{0} must be a whole number of attempts, 1 or more")]
    BadSetting(&'static str),
    #[error("Cloudflare API {what}: HTTP {status}: {detail}")]
    Status {
        what: String,
        status: u16,
        detail: String,
        retry_after: Option<Duration>,
    },
    #[error("Cloudflare API {what}: {message}")]
    Transport { what: String, message: String },
    #[error("Cloudflare API {what}: unexpected answer: {message}")]
    Decode { what: String, message: String },
}

impl ApiError {
    fn verdict(&self) -> Verdict {
        match self {
            ApiError::Status {
                status,
                retry_after,
                ..
            } => http::status_verdict(*status, *retry_after).unwrap_or(Verdict::Fail),
            ApiError::Transport { .. } => Verdict::Retry { after: None },
            _ => Verdict::Fail,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A request refused as bad input (a 4xx: wrong id, bad SQL, no permission) or a missing
/// setting, rather than a failure on the way.
impl Classify for ApiError {
    fn kind(&self) -> Kind {
        match self {
            ApiError::MissingToken(_) | ApiError::MissingAccount(_) | ApiError::BadSetting(_) => {
                Kind::BadInput
            }
            ApiError::Status { status, .. }
                if (400..500).contains(status) && !retry::is_transient_status(*status) =>
            {
                Kind::BadInput
            }
            ApiError::Status { .. } | ApiError::Transport { .. } | ApiError::Decode { .. } => {
                Kind::Failed
            }
        }
    }
}

/// The v4 envelope around every answer.
#[derive(Debug, Deserialize)]
pub struct Envelope<T> {
    #[serde(default)]
    pub success: bool,
    #[serde(default)]
    pub errors: Vec<Message>,
    pub result: Option<T>,
    #[serde(default)]
    pub result_info: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
pub struct Message {
    #[serde(default)]
    pub code: i64,
    #[serde(default)]
    pub message: String,
}

/// How much of each of an answer's error messages is quoted: D1's quote the failing SQL.
const MESSAGE_QUOTED: usize = 500;

/// Cloudflare's errors as one line: `code 7500: no such table: x; code 1000: ...`.
pub(crate) fn describe_errors(errors: &[Message]) -> String {
    if errors.is_empty() {
        return "no error detail".to_string();
    }
    errors
        .iter()
        .map(|e| {
            let message = crate::redact::remote_body(&e.message, MESSAGE_QUOTED);
            format!("code {}: {message}", e.code)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A client for one account.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
    account: String,
    policy: RetryPolicy,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("base", &self.base)
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

impl Api {
    /// A client from `CLOUDFLARE_API_TOKEN`, `CLOUDFLARE_ACCOUNT_ID` and
    /// `CLOUDFLARE_API_BASE_URL` (wrangler's names), read through `env`.
    pub fn from_env(env: &impl Fn(&str) -> Option<String>) -> Result<Self, ApiError> {
        let token =
            env("CLOUDFLARE_API_TOKEN").ok_or(ApiError::MissingToken("CLOUDFLARE_API_TOKEN"))?;
        let account = env("CLOUDFLARE_ACCOUNT_ID")
            .ok_or(ApiError::MissingAccount("CLOUDFLARE_ACCOUNT_ID"))?;
        let base = env("CLOUDFLARE_API_BASE_URL").unwrap_or_else(|| DEFAULT_BASE_URL.to_string());
        let mut policy = API_POLICY;
        if let Some(attempts) = env("D1R2_API_MAX_ATTEMPTS") {
            policy.max_attempts = attempts
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or(ApiError::BadSetting("D1R2_API_MAX_ATTEMPTS"))?;
        }
        Ok(Api::new(&base, &token, &account, policy))
    }

    pub fn new(base: &str, token: &str, account: &str, policy: RetryPolicy) -> Self {
        let http = http::client(http::TIMEOUT).expect("a client with static settings builds");
        Api {
            http,
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            account: account.to_string(),
            policy,
        }
    }

    /// The same client with another retry policy.
    pub fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// `path` under this account: `accounts/{id}/{path}`.
    pub fn account_path(&self, path: &str) -> String {
        format!("accounts/{}/{path}", self.account)
    }

    /// Calls `method path` (relative to the base URL) with an optional JSON body, retrying as
    /// the module describes, and returns the envelope of a successful answer.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        what: &str,
    ) -> Result<Envelope<T>, ApiError> {
        let url = format!("{}/{path}", self.base);
        let (result, _) = retry::run(
            &self.policy,
            |_| self.attempt::<T>(method.clone(), &url, body, what),
            ApiError::verdict,
            |err, wait| {
                tracing::warn!("{err}; retrying in {:.1} s", wait.as_secs_f64());
            },
        )
        .await;
        result
    }

    /// The answer's `result`, which a successful call must carry.
    pub async fn result<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        what: &str,
    ) -> Result<T, ApiError> {
        self.call(method, path, body, what)
            .await?
            .result
            .ok_or_else(|| ApiError::Decode {
                what: what.to_string(),
                message: "no result".to_string(),
            })
    }

    /// Sends a body to a URL the API handed out (an upload URL), with the same retry rule; the
    /// token is not sent there. Returns the response's `ETag`.
    pub async fn put_url(
        &self,
        url: &str,
        size: u64,
        body: impl Fn() -> reqwest::Body,
        what: &str,
    ) -> Result<Option<String>, ApiError> {
        let (result, _) = retry::run(
            &self.policy,
            |_| async {
                let response = self
                    .http
                    .put(url)
                    // Presigned URLs want a length, not a chunked body.
                    .header(reqwest::header::CONTENT_LENGTH, size)
                    .body(body())
                    .send()
                    .await
                    .map_err(|e| transport(what, &e))?;
                let status = response.status().as_u16();
                let etag = response
                    .headers()
                    .get("etag")
                    .and_then(|v| v.to_str().ok())
                    .map(|v| v.trim_matches('"').to_string());
                let retry_after = http::retry_after(response.headers(), SystemTime::now());
                let text = response.text().await.map_err(|e| transport(what, &e))?;
                if (200..300).contains(&status) {
                    Ok(etag)
                } else {
                    Err(ApiError::Status {
                        what: what.to_string(),
                        status,
                        detail: crate::redact::remote_body(&text, http::BODY_QUOTED),
                        retry_after,
                    })
                }
            },
            ApiError::verdict,
            |err, wait| tracing::warn!("{err}; retrying in {:.1} s", wait.as_secs_f64()),
        )
        .await;
        result
    }

    async fn attempt<T: DeserializeOwned>(
        &self,
        method: Method,
        url: &str,
        body: Option<&serde_json::Value>,
        what: &str,
    ) -> Result<Envelope<T>, ApiError> {
        let mut request = self.http.request(method, url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| transport(what, &e))?;
        let status = response.status().as_u16();
        let retry_after = http::retry_after(response.headers(), SystemTime::now());
        // A connection dropped mid-body is as transient as one refused.
        let bytes = response.bytes().await.map_err(|e| transport(what, &e))?;
        let envelope: Result<Envelope<T>, _> = serde_json::from_slice(&bytes);
        match envelope {
            Ok(envelope) if (200..300).contains(&status) && envelope.success => Ok(envelope),
            Ok(envelope) => Err(ApiError::Status {
                what: what.to_string(),
                status,
                detail: describe_errors(&envelope.errors),
                retry_after,
            }),
            Err(_) if !(200..300).contains(&status) => Err(ApiError::Status {
                what: what.to_string(),
                status,
                detail: crate::redact::remote_body(
                    &String::from_utf8_lossy(&bytes),
                    http::BODY_QUOTED,
                ),
                retry_after,
            }),
            Err(e) => Err(ApiError::Decode {
                what: what.to_string(),
                message: e.to_string(),
            }),
        }
    }
}

/// A request that did not get a whole answer. The URL is left out: it is ours and adds nothing.
fn transport(what: &str, err: &reqwest::Error) -> ApiError {
    let mut message = Transport::of(err).as_str().to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        message = format!("{message}: {s}");
        source = s.source();
    }
    ApiError::Transport {
        what: what.to_string(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_in_one_line() {
        let errors = vec![
            Message {
                code: 7500,
                message: "no such table:\n  x".into(),
            },
            Message {
                code: 10000,
                message: "Authentication error".into(),
            },
        ];
        assert_eq!(
            describe_errors(&errors),
            "code 7500: no such table: x; code 10000: Authentication error"
        );
        assert_eq!(describe_errors(&[]), "no error detail");
    }

    #[test]
    fn verdicts_table() {
        let status = |status: u16, after: Option<u64>| ApiError::Status {
            what: "x".into(),
            status,
            detail: String::new(),
            retry_after: after.map(Duration::from_secs),
        };
        let cases = [
            (
                status(429, Some(3)),
                Verdict::Retry {
                    after: Some(Duration::from_secs(3)),
                },
                false,
            ),
            (status(503, None), Verdict::Retry { after: None }, false),
            (status(408, None), Verdict::Retry { after: None }, false),
            (status(400, None), Verdict::Fail, true),
            (status(403, None), Verdict::Fail, true),
            (status(404, None), Verdict::Fail, true),
            (
                ApiError::Transport {
                    what: "x".into(),
                    message: "reset".into(),
                },
                Verdict::Retry { after: None },
                false,
            ),
            (
                ApiError::Decode {
                    what: "x".into(),
                    message: "eof".into(),
                },
                Verdict::Fail,
                false,
            ),
        ];
        for (err, verdict, bad) in cases {
            assert_eq!(err.verdict(), verdict, "{err}");
            assert_eq!(err.kind() == Kind::BadInput, bad, "{err}");
        }
    }

    #[test]
    fn the_token_stays_out_of_debug_output() {
        let api = Api::new("http://x/", "sekrit-token", "acc", RetryPolicy::default());
        assert!(!format!("{api:?}").contains("sekrit"));
        assert_eq!(api.account_path("d1/database"), "accounts/acc/d1/database");
    }

    #[test]
    fn every_error_has_its_kind() {
        use crate::error::{Classify, Kind::*};
        let status = |status| ApiError::Status {
            what: "querying".into(),
            status,
            detail: "x".into(),
            retry_after: None,
        };
        let cases = [
            (ApiError::MissingToken("CLOUDFLARE_API_TOKEN"), BadInput),
            (ApiError::MissingAccount("CLOUDFLARE_ACCOUNT_ID"), BadInput),
            (ApiError::BadSetting("D1R2_ATTEMPTS"), BadInput),
            (status(400), BadInput),
            (status(403), BadInput),
            (status(404), BadInput),
            (status(408), Failed),
            (status(429), Failed),
            (status(500), Failed),
            (status(503), Failed),
            (
                ApiError::Transport {
                    what: "x".into(),
                    message: "reset".into(),
                },
                Failed,
            ),
            (
                ApiError::Decode {
                    what: "x".into(),
                    message: "eof".into(),
                },
                Failed,
            ),
        ];
        for (err, kind) in cases {
            assert_eq!(err.kind(), kind, "{err}");
        }
    }
}
