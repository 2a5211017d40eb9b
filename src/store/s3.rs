//! R2, or any S3-compatible object store, as a store.
//!
//! Requests are the ones R2 accepts: the SDK's default checksum headers are turned off
//! (`WhenRequired`) and every body carries a SHA-256 we computed ourselves, so the service still
//! rejects a corrupted upload. That checksum header is signed, so it binds the body to the
//! request: the body itself goes as `UNSIGNED-PAYLOAD` (as boto3 sends it over HTTPS), not hashed
//! a second time for the signature. Streams go up as multipart uploads of fixed-size parts (R2
//! wants every part but the last the same size), one part in memory at a time; an upload that never
//! reaches its first full part is a single `PutObject`. A failed or dropped upload is aborted, so
//! no object appears under its key unless it was finished. A read whose body breaks is asked for
//! again from the next byte, of the same ETag ([`super::resume`]).

use std::fmt;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::primitives::ByteStream as SdkStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use base64::Engine;
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::resume::{Body, RESUME_POLICY, Reopen, Resume, parse_content_range, resuming};
use super::s3_failure::{
    Blame, CONNECT_TIMEOUT, Failure, INITIAL_BACKOFF, Keys, MAX_ATTEMPTS, MAX_BACKOFF,
};
use super::{ByteStream, ObjectMeta, OwnedKey, PART_SIZE, Store, StoreError, Upload, check_key};

// Attempts per request (`s3_failure::MAX_ATTEMPTS`): the SDK's standard retry mode, exponential
// backoff with jitter on throttling, 5xx and connection errors, and a response body that breaks
// before the SDK has read it whole (listings, metadata). Only a read's body, handed on as a
// stream, is the SDK's no more; [`super::resume`] reads it on.

/// Where and how to reach the bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct S3Config {
    pub bucket: String,
    /// Key prefix inside the bucket, without leading or trailing `/`.
    pub prefix: String,
    /// `None` leaves the endpoint to the AWS chain (`AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`).
    pub endpoint: Option<String>,
    /// `None` leaves the region to the AWS chain.
    pub region: Option<String>,
    /// Explicit keys (R2's); `None` uses the AWS credential chain.
    pub credentials: Option<(String, String)>,
    /// `r2://` or `s3://`, for messages.
    pub scheme: &'static str,
}

impl S3Config {
    /// The configuration of `r2://BUCKET/PREFIX`: the account's R2 endpoint (in a jurisdiction
    /// when `R2_JURISDICTION` is `eu` or `fedramp`; `R2_ENDPOINT_URL` overrides it), region `auto`,
    /// keys from `R2_ACCESS_KEY_ID`/`R2_SECRET_ACCESS_KEY`, else from `AWS_*` or an AWS profile.
    pub fn r2(
        bucket: &str,
        prefix: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let endpoint = match env("R2_ENDPOINT_URL") {
            Some(url) => url,
            None => {
                let account = env("CLOUDFLARE_ACCOUNT_ID").ok_or(
                    "r2:// needs CLOUDFLARE_ACCOUNT_ID (the account whose R2 endpoint to use)",
                )?;
                r2_endpoint(&account, env("R2_JURISDICTION").as_deref())?
            }
        };
        let credentials = match (env("R2_ACCESS_KEY_ID"), env("R2_SECRET_ACCESS_KEY")) {
            (Some(id), Some(secret)) => Some((id, secret)),
            (None, None) => None,
            _ => {
                return Err(
                    "set both R2_ACCESS_KEY_ID and R2_SECRET_ACCESS_KEY, or neither".to_string(),
                );
            }
        };
        Ok(S3Config {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            endpoint: Some(endpoint),
            region: Some("auto".to_string()),
            credentials,
            scheme: "r2://",
        })
    }

    /// The configuration of `s3://BUCKET/PREFIX`: everything from the AWS chain.
    pub fn s3(bucket: &str, prefix: &str) -> Self {
        S3Config {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            endpoint: None,
            region: None,
            credentials: None,
            scheme: "s3://",
        }
    }
}

/// R2's S3 endpoint for an account, optionally in a jurisdiction.
pub fn r2_endpoint(account: &str, jurisdiction: Option<&str>) -> Result<String, String> {
    if account.is_empty() || !account.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(format!(
            "CLOUDFLARE_ACCOUNT_ID {account:?} is not an account id (32 hex characters)"
        ));
    }
    match jurisdiction.map(str::trim).filter(|j| !j.is_empty()) {
        None | Some("default") => Ok(format!("https://{account}.r2.cloudflarestorage.com")),
        Some(j @ ("eu" | "fedramp")) => {
            Ok(format!("https://{account}.{j}.r2.cloudflarestorage.com"))
        }
        Some(other) => Err(format!(
            "R2_JURISDICTION {other:?}: expected eu, fedramp or default"
        )),
    }
}

#[derive(Clone)]
pub struct S3Store {
    client: Client,
    config: S3Config,
    /// The variables its keys come from, for messages.
    keys: Keys,
    /// `host:port` of a custom endpoint, for messages.
    endpoint: Option<String>,
}

impl fmt::Display for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&store_name(&self.config))
    }
}

/// `r2://BUCKET/PREFIX`, as messages name a store.
fn store_name(config: &S3Config) -> String {
    let mut name = format!("{}{}", config.scheme, config.bucket);
    if !config.prefix.is_empty() {
        name.push('/');
        name.push_str(&config.prefix);
    }
    name
}

/// An endpoint URL's `host:port`, without anything else it may carry.
fn endpoint_host(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_string(),
            _ => "the endpoint".to_string(),
        },
        Err(_) => "the endpoint".to_string(),
    }
}

/// Loads the credentials once before any request. A chain that finds none, or whose last
/// resort (an instance role's endpoint) fails, is bad input naming what to set, with what the
/// chain said when it said more than "none".
async fn check_credentials(shared: &aws_config::SdkConfig, keys: Keys) -> Result<(), StoreError> {
    use aws_credential_types::provider::ProvideCredentials;
    use aws_credential_types::provider::error::CredentialsError;
    let missing = |hint: String| StoreError::NoCredentials { hint };
    let provider = shared
        .credentials_provider()
        .ok_or_else(|| missing(keys.hint()))?;
    match provider.provide_credentials().await {
        Ok(_) => Ok(()),
        Err(CredentialsError::CredentialsNotLoaded(_)) => Err(missing(keys.hint())),
        Err(err) => Err(missing(format!(
            "{} (loading them failed: {})",
            keys.hint(),
            innermost(&err)
        ))),
    }
}

/// An error and its sources as one line, each said once: the SDK's wrappers repeat their
/// sources' words.
fn causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = String::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !text.is_empty() && !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
        next = e.source();
    }
    crate::redact::remote_body(&line, 300)
}

/// The last of an error's sources: the operating system's or the server's own words.
fn innermost(err: &(dyn std::error::Error + 'static)) -> String {
    let mut last = err;
    while let Some(next) = last.source() {
        last = next;
    }
    crate::redact::remote_body(&last.to_string(), 200)
}

/// What a failed request was, read from the SDK's error: its kind, the status, and the error
/// metadata (code, message), never its `Debug`.
fn failure_of<E>(err: &aws_sdk_s3::error::SdkError<E>) -> Failure
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    use aws_credential_types::provider::error::CredentialsError;
    use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
    let credentials = || {
        let mut next = std::error::Error::source(err);
        while let Some(e) = next {
            if e.downcast_ref::<CredentialsError>().is_some() {
                return true;
            }
            next = e.source();
        }
        false
    };
    match err {
        SdkError::TimeoutError(_) => Failure::Timeout,
        SdkError::DispatchFailure(d) if d.is_timeout() => Failure::Timeout,
        SdkError::DispatchFailure(_) if credentials() => Failure::Credentials {
            cause: innermost(err),
        },
        SdkError::DispatchFailure(d) if d.is_io() => Failure::Connect {
            cause: innermost(err),
        },
        SdkError::ResponseError(_) => Failure::Broken {
            cause: innermost(err),
        },
        SdkError::ServiceError(_) => Failure::Service {
            status: status_of(err),
            code: err.code().map(str::to_string),
            message: err.message().map(str::to_string),
        },
        _ => Failure::Other { cause: causes(err) },
    }
}

/// Says, once a request, that a failed request is being tried again and how long that may take
/// (see [`super::s3_failure::announce`]), at most once every few seconds for the whole process,
/// so that many requests failing together make one line, not a screenful.
#[derive(Debug)]
struct Announce {
    store: String,
    endpoint: Option<String>,
}

/// When the last announcement was made.
static ANNOUNCED: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);

impl aws_sdk_s3::config::Intercept for Announce {
    fn name(&self) -> &'static str {
        "d1r2 retry announcements"
    }

    fn read_after_attempt(
        &self,
        context: &aws_sdk_s3::config::interceptors::FinalizerInterceptorContextRef<'_>,
        _components: &aws_sdk_s3::config::RuntimeComponents,
        cfg: &mut aws_sdk_s3::config::ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        let Some(Err(err)) = context.output_or_error() else {
            return Ok(());
        };
        let attempt = cfg
            .load::<aws_smithy_runtime_api::client::retries::RequestAttempts>()
            .map_or(0, |a| a.attempts());
        let status = context.response().map(|r| r.status().as_u16());
        let network = err.is_timeout_error() || err.is_connector_error();
        let what = if let Some(c) = err.as_connector_error() {
            if c.is_timeout() {
                "no answer in time".to_string()
            } else {
                let at = self.endpoint.as_deref().unwrap_or("the endpoint");
                format!("could not connect to {at} ({})", innermost(c))
            }
        } else if err.is_timeout_error() {
            "no answer in time".to_string()
        } else if err.is_response_error() {
            "the answer broke off".to_string()
        } else {
            match status {
                Some(s) if s == 429 || s >= 500 => format!("the service answered HTTP {s}"),
                _ => return Ok(()),
            }
        };
        if !super::s3_failure::announce(attempt, network) {
            return Ok(());
        }
        let mut last = ANNOUNCED.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(10)) {
            return Ok(());
        }
        *last = Some(std::time::Instant::now());
        tracing::warn!(
            "{}",
            super::s3_failure::announcement(&self.store, &what, attempt)
        );
        Ok(())
    }
}

impl S3Store {
    /// A client for the bucket, once its credentials are found: a store without any is refused
    /// here, before any request, naming the variables to set.
    pub async fn connect(config: S3Config) -> Result<Self, StoreError> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(region) = &config.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(endpoint) = &config.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        if let Some((id, secret)) = &config.credentials {
            loader = loader.credentials_provider(Credentials::new(id, secret, None, None, "d1r2"));
        } else if config.scheme == "r2://" {
            // R2's keys are an API token's: in the environment or a profile, never from an AWS
            // instance or container role, whose endpoints would only be waited for.
            loader = loader.credentials_provider(
                aws_config::meta::credentials::CredentialsProviderChain::first_try(
                    "environment",
                    aws_config::environment::EnvironmentVariableCredentialsProvider::new(),
                )
                .or_else(
                    "profile",
                    aws_config::profile::ProfileFileCredentialsProvider::builder().build(),
                ),
            );
        }
        let shared = loader.load().await;
        let keys = Keys::of(config.scheme);
        let name = store_name(&config);
        check_credentials(&shared, keys).await?;
        // For messages: the endpoint given, else the SDK's S3-only variable (which it reads
        // into the S3 client's configuration, not the shared one).
        let endpoint = shared
            .endpoint_url()
            .map(str::to_string)
            .or_else(|| std::env::var("AWS_ENDPOINT_URL_S3").ok())
            .map(|url| endpoint_host(&url));
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(MAX_ATTEMPTS)
                    .with_initial_backoff(INITIAL_BACKOFF)
                    .with_max_backoff(MAX_BACKOFF),
            )
            .timeout_config(
                aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .build(),
            )
            .interceptor(Announce {
                store: name,
                endpoint: endpoint.clone(),
            });
        if shared.endpoint_url().is_some() {
            // Custom endpoints (R2, MinIO, test servers) are reached by path, not by a bucket
            // subdomain that may not resolve.
            builder = builder.force_path_style(true);
        }
        if shared.region().is_none() {
            builder = builder.region(Region::new("us-east-1"));
        }
        Ok(S3Store {
            client: Client::from_conf(builder.build()),
            config,
            keys,
            endpoint,
        })
    }

    fn full_key(&self, key: &str) -> Result<String, StoreError> {
        check_key(key)?;
        Ok(if self.config.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.config.prefix)
        })
    }

    fn remote(&self, op: &'static str, key: &str, err: impl fmt::Display) -> StoreError {
        StoreError::Remote {
            op,
            store: self.to_string(),
            key: key.to_string(),
            message: err.to_string(),
        }
    }

    /// A failed request, said in one line: a missing bucket and refused keys are the user's to
    /// fix (exit 2), anything else a failure (exit 1).
    fn sdk_error<E>(
        &self,
        op: &'static str,
        key: &str,
        err: aws_sdk_s3::error::SdkError<E>,
    ) -> StoreError
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
    {
        let failure = failure_of(&err);
        let (blame, message) =
            super::s3_failure::describe(&failure, self.keys, self.endpoint.as_deref());
        let (store, key) = (self.to_string(), key.to_string());
        match blame {
            Blame::NoBucket => StoreError::NoBucket {
                store,
                bucket: self.config.bucket.clone(),
            },
            Blame::Keys => StoreError::Refused {
                op,
                store,
                key,
                message,
            },
            Blame::Failed => StoreError::Remote {
                op,
                store,
                key,
                message,
            },
        }
    }

    /// One `GetObject` of `key` (stored as `full`) from `from.offset` on, of version
    /// `from.version` when given. Its body's errors are breaks ([`StoreError::Interrupted`]):
    /// whatever fails once the answer has started is the connection.
    async fn open(&self, key: &str, full: &str, from: Resume) -> Result<Body, StoreError> {
        let mut request = self
            .client
            .get_object()
            .bucket(&self.config.bucket)
            .key(full);
        if from.offset > 0 {
            request = request.range(format!("bytes={}-", from.offset));
        }
        if let Some(version) = from.version {
            request = request.if_match(version);
        }
        let out = request.send().await.map_err(|e| self.get_error(key, e))?;
        let (start, size) = match out.content_range() {
            Some(range) => parse_content_range(range).ok_or_else(|| {
                self.remote(
                    "reading",
                    key,
                    format!("unreadable Content-Range {range:?}"),
                )
            })?,
            None => (0, out.content_length().and_then(|n| u64::try_from(n).ok())),
        };
        let version = out.e_tag().map(str::to_string);
        let (store, key) = (self.to_string(), key.to_string());
        let stream = futures::stream::unfold(Some(out.body), |body| async move {
            let mut body = body?;
            match body.try_next().await {
                Ok(Some(chunk)) => Some((Ok(chunk), Some(body))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        })
        .map(move |r| {
            r.map_err(|e| StoreError::Interrupted {
                store: store.clone(),
                key: key.clone(),
                received: 0,
                attempts: 1,
                message: causes(&e),
            })
        });
        Ok(Body {
            stream: stream.boxed(),
            version,
            start,
            size,
        })
    }

    /// A failed `GetObject`: a missing key, an object replaced since the version asked for
    /// (`412`), or the request's own failure once the SDK's retries are spent.
    fn get_error(
        &self,
        key: &str,
        err: aws_sdk_s3::error::SdkError<aws_sdk_s3::operation::get_object::GetObjectError>,
    ) -> StoreError {
        if err.as_service_error().is_some_and(|s| s.is_no_such_key()) {
            return StoreError::NotFound {
                store: self.to_string(),
                key: key.to_string(),
            };
        }
        if err.raw_response().map(|r| r.status().as_u16()) == Some(412) {
            return StoreError::Changed {
                store: self.to_string(),
                key: key.to_string(),
            };
        }
        self.sdk_error("reading", key, err)
    }

    /// One `PutObject` of `data`, checked by the service against `sha256` when given, or against
    /// the digest of `data` computed here.
    async fn put_bytes(
        &self,
        key: &str,
        full: &str,
        data: Bytes,
        sha256: Option<[u8; 32]>,
    ) -> Result<(), StoreError> {
        self.put_request(full, data, sha256, false)
            .await
            .map_err(|e| self.sdk_error("writing", key, e))?;
        Ok(())
    }

    /// The `PutObject` of [`S3Store::put_bytes`]; `new_only` adds `If-None-Match: *`.
    async fn put_request(
        &self,
        full: &str,
        data: Bytes,
        sha256: Option<[u8; 32]>,
        new_only: bool,
    ) -> Result<
        aws_sdk_s3::operation::put_object::PutObjectOutput,
        aws_sdk_s3::error::SdkError<aws_sdk_s3::operation::put_object::PutObjectError>,
    > {
        let sha256 = sha256.unwrap_or_else(|| Sha256::digest(&data).into());
        let request = self
            .client
            .put_object()
            .bucket(&self.config.bucket)
            .key(full)
            .checksum_sha256(checksum_header(sha256))
            .set_if_none_match(new_only.then(|| "*".to_string()))
            .body(SdkStream::from(data));
        request.customize().disable_payload_signing().send().await
    }
}

/// Times a conditional create is sent again after a 409 (about 3 s of pauses in all).
const CONFLICT_RETRIES: u32 = 5;

/// What a failed conditional create's status says.
#[derive(Debug, PartialEq)]
enum Conditional {
    /// 412 Precondition Failed: the key exists.
    Taken,
    /// 409 Conditional Request Conflict: another conditional write to the key was in progress.
    Conflict,
    Other,
}

fn conditional_outcome(status: Option<u16>) -> Conditional {
    match status {
        Some(412) => Conditional::Taken,
        Some(409) => Conditional::Conflict,
        _ => Conditional::Other,
    }
}

fn status_of<E>(err: &aws_sdk_s3::error::SdkError<E>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

/// A SHA-256 as `x-amz-checksum-sha256` carries it.
fn checksum_header(sha256: [u8; 32]) -> String {
    base64::engine::general_purpose::STANDARD.encode(sha256)
}

fn timestamp(t: Option<&aws_sdk_s3::primitives::DateTime>) -> DateTime<Utc> {
    t.and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
        .unwrap_or_default()
}

#[async_trait]
impl Store for S3Store {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        let full = self.full_key(key)?;
        self.put_bytes(key, &full, data, None).await
    }

    /// `PutObject` with `If-None-Match: *`, which S3 and R2 answer 412 when the key exists. Two
    /// such requests racing may get 409 `ConditionalRequestConflict`, which says nothing about who
    /// won: the request is sent again (the SDK does not retry a 409), a few times, after a pause.
    async fn put_new(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        let full = self.full_key(key)?;
        let sha256: [u8; 32] = Sha256::digest(&data).into();
        let mut attempt = 0;
        loop {
            let err = match self
                .put_request(&full, data.clone(), Some(sha256), true)
                .await
            {
                Ok(_) => return Ok(()),
                Err(err) => err,
            };
            match conditional_outcome(status_of(&err)) {
                Conditional::Taken => {
                    return Err(StoreError::AlreadyExists {
                        store: self.to_string(),
                        key: key.to_string(),
                    });
                }
                Conditional::Conflict if attempt < CONFLICT_RETRIES => {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
                }
                Conditional::Conflict | Conditional::Other => {
                    return Err(self.sdk_error("creating", key, err));
                }
            }
        }
    }

    async fn put_stream(&self, key: &str) -> Result<Box<dyn Upload>, StoreError> {
        let full = self.full_key(key)?;
        Ok(Box::new(S3Upload {
            store: self.clone(),
            key: key.to_string(),
            full,
            buffer: BytesMut::new(),
            multipart: None,
        }))
    }

    /// The object's first answer, then the rest asked for again wherever its connection breaks
    /// (see [`super::resume`]): a `Range` from the first byte still wanted, `If-Match` its ETag.
    async fn get(&self, key: &str) -> Result<ByteStream, StoreError> {
        let full = self.full_key(key)?;
        let start = Resume {
            offset: 0,
            version: None,
        };
        let first = self.open(key, &full, start).await?;
        let (store, name) = (self.clone(), key.to_string());
        let reopen: Reopen = Box::new(move |from| {
            let (store, key, full) = (store.clone(), name.clone(), full.clone());
            Box::pin(async move { store.open(&key, &full, from).await })
        });
        Ok(resuming(
            first,
            reopen,
            RESUME_POLICY,
            self.to_string(),
            key.to_string(),
        ))
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        let full = self.full_key(key)?;
        match self
            .client
            .head_object()
            .bucket(&self.config.bucket)
            .key(&full)
            .send()
            .await
        {
            Ok(out) => Ok(Some(ObjectMeta {
                key: key.to_string(),
                size: out.content_length().unwrap_or(0).max(0) as u64,
                modified: timestamp(out.last_modified()),
            })),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(self.sdk_error("reading metadata of", key, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let base = if self.config.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.config.prefix)
        };
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.config.bucket)
            .prefix(format!("{base}{prefix}"))
            .into_paginator()
            .send();
        let mut objects = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.sdk_error("listing", prefix, e))?;
            for object in page.contents() {
                let Some(key) = object.key().and_then(|k| k.strip_prefix(&base)) else {
                    continue;
                };
                objects.push(ObjectMeta {
                    key: key.to_string(),
                    size: object.size().unwrap_or(0).max(0) as u64,
                    modified: timestamp(object.last_modified()),
                });
            }
        }
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    async fn abort_stale_uploads(
        &self,
        older_than: DateTime<Utc>,
        owned: OwnedKey,
    ) -> Result<usize, StoreError> {
        let base = if self.config.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.config.prefix)
        };
        let mut aborted = 0;
        let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.config.bucket)
                .prefix(&base)
                .set_key_marker(key_marker.clone())
                .set_upload_id_marker(id_marker.clone())
                .send()
                .await
                .map_err(|e| self.sdk_error("listing unfinished uploads", "", e))?;
            for upload in page.uploads() {
                let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) else {
                    continue;
                };
                if timestamp(upload.initiated()) >= older_than {
                    continue;
                }
                if !key.strip_prefix(&base).is_some_and(owned) {
                    tracing::debug!("leaving the upload of {key:?}: not a key d1r2 writes");
                    continue;
                }
                self.client
                    .abort_multipart_upload()
                    .bucket(&self.config.bucket)
                    .key(key)
                    .upload_id(id)
                    .send()
                    .await
                    .map_err(|e| self.sdk_error("aborting upload of", key, e))?;
                aborted += 1;
            }
            if !page.is_truncated().unwrap_or(false) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_string);
            id_marker = page.next_upload_id_marker().map(str::to_string);
        }
        Ok(aborted)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let full = self.full_key(key)?;
        self.client
            .delete_object()
            .bucket(&self.config.bucket)
            .key(&full)
            .send()
            .await
            .map_err(|e| self.sdk_error("deleting", key, e))?;
        Ok(())
    }
}

struct Multipart {
    upload_id: String,
    parts: Vec<CompletedPart>,
}

struct S3Upload {
    store: S3Store,
    key: String,
    full: String,
    buffer: BytesMut,
    multipart: Option<Multipart>,
}

impl S3Upload {
    async fn send_part(&mut self, data: Bytes) -> Result<(), StoreError> {
        if self.multipart.is_none() {
            let out = self
                .store
                .client
                .create_multipart_upload()
                .bucket(&self.store.config.bucket)
                .key(&self.full)
                .checksum_algorithm(ChecksumAlgorithm::Sha256)
                .send()
                .await
                .map_err(|e| self.store.sdk_error("starting upload of", &self.key, e))?;
            let upload_id = out.upload_id().ok_or_else(|| {
                self.store
                    .remote("starting upload of", &self.key, "no upload id")
            })?;
            self.multipart = Some(Multipart {
                upload_id: upload_id.to_string(),
                parts: Vec::new(),
            });
        }
        let multipart = self.multipart.as_mut().expect("started above");
        let number = multipart.parts.len() as i32 + 1;
        let checksum = checksum_header(Sha256::digest(&data).into());
        let out = self
            .store
            .client
            .upload_part()
            .bucket(&self.store.config.bucket)
            .key(&self.full)
            .upload_id(&multipart.upload_id)
            .part_number(number)
            .checksum_sha256(&checksum)
            .body(SdkStream::from(data))
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| self.store.sdk_error("uploading a part of", &self.key, e))?;
        multipart.parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag().map(str::to_string))
                .checksum_sha256(checksum)
                .build(),
        );
        Ok(())
    }

    /// Fills the part buffer up to exactly `PART_SIZE` and ships it: the buffer is allocated once
    /// at its final size, never grown by doubling past it, so a part costs 5 MiB, not twice that.
    async fn write_inner(&mut self, mut data: Bytes) -> Result<(), StoreError> {
        while !data.is_empty() {
            if self.buffer.capacity() == 0 {
                self.buffer.reserve(PART_SIZE);
            }
            let take = (PART_SIZE - self.buffer.len()).min(data.len());
            self.buffer.extend_from_slice(&data.split_to(take));
            if self.buffer.len() == PART_SIZE {
                let part = std::mem::take(&mut self.buffer).freeze();
                self.send_part(part).await?;
            }
        }
        Ok(())
    }

    /// Sends what is left: the whole object in one `PutObject` checked against `sha256` when no
    /// part has gone yet, or the last part (each part is checked against its own digest).
    async fn finish_inner(&mut self, sha256: Option<[u8; 32]>) -> Result<(), StoreError> {
        let rest = std::mem::take(&mut self.buffer).freeze();
        if self.multipart.is_none() {
            return self
                .store
                .put_bytes(&self.key, &self.full, rest, sha256)
                .await;
        }
        if !rest.is_empty() {
            self.send_part(rest).await?;
        }
        let multipart = self.multipart.as_ref().expect("multipart");
        self.store
            .client
            .complete_multipart_upload()
            .bucket(&self.store.config.bucket)
            .key(&self.full)
            .upload_id(&multipart.upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(multipart.parts.clone()))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.store.sdk_error("completing upload of", &self.key, e))?;
        self.multipart = None;
        Ok(())
    }

    async fn abort_inner(&mut self) -> Result<(), StoreError> {
        self.buffer.clear();
        if let Some(multipart) = self.multipart.take() {
            self.store
                .client
                .abort_multipart_upload()
                .bucket(&self.store.config.bucket)
                .key(&self.full)
                .upload_id(&multipart.upload_id)
                .send()
                .await
                .map_err(|e| self.store.sdk_error("aborting upload of", &self.key, e))?;
        }
        Ok(())
    }
}

#[async_trait]
impl Upload for S3Upload {
    async fn write(&mut self, data: Bytes) -> Result<(), StoreError> {
        let result = self.write_inner(data).await;
        if result.is_err() {
            let _ = self.abort_inner().await;
        }
        result
    }

    async fn finish(mut self: Box<Self>, sha256: Option<[u8; 32]>) -> Result<(), StoreError> {
        let result = self.finish_inner(sha256).await;
        if result.is_err() {
            let _ = self.abort_inner().await;
        }
        result
    }

    async fn abort(mut self: Box<Self>) -> Result<(), StoreError> {
        self.abort_inner().await
    }
}

impl Drop for S3Upload {
    /// An upload dropped mid-way (a failed backup) must not leave its parts billed in the bucket:
    /// abort it in the background when a runtime is there to do it.
    fn drop(&mut self) {
        if let Some(multipart) = self.multipart.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let request = self
                .store
                .client
                .abort_multipart_upload()
                .bucket(&self.store.config.bucket)
                .key(&self.full)
                .upload_id(multipart.upload_id);
            runtime.spawn(async move {
                let _ = request.send().await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditional_statuses_table() {
        for (status, want) in [
            (Some(412), Conditional::Taken),
            (Some(409), Conditional::Conflict),
            (Some(200), Conditional::Other),
            (Some(403), Conditional::Other),
            (Some(503), Conditional::Other),
            (None, Conditional::Other),
        ] {
            assert_eq!(conditional_outcome(status), want, "{status:?}");
        }
    }

    #[test]
    fn r2_endpoints_table() {
        let account = "0123456789abcdef0123456789abcdef";
        for (jurisdiction, want) in [
            (
                None,
                Ok(format!("https://{account}.r2.cloudflarestorage.com")),
            ),
            (
                Some(""),
                Ok(format!("https://{account}.r2.cloudflarestorage.com")),
            ),
            (
                Some("eu"),
                Ok(format!("https://{account}.eu.r2.cloudflarestorage.com")),
            ),
            (
                Some("fedramp"),
                Ok(format!(
                    "https://{account}.fedramp.r2.cloudflarestorage.com"
                )),
            ),
            (Some("mars"), Err(())),
        ] {
            assert_eq!(
                r2_endpoint(account, jurisdiction).map_err(|_| ()),
                want,
                "{jurisdiction:?}"
            );
        }
        assert!(r2_endpoint("evil.example.com/x", None).is_err());
        assert!(r2_endpoint("", None).is_err());
    }

    #[test]
    fn r2_config_from_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let c = S3Config::r2(
            "b",
            "p/q",
            env(&[
                ("CLOUDFLARE_ACCOUNT_ID", "abc123"),
                ("R2_ACCESS_KEY_ID", "id"),
                ("R2_SECRET_ACCESS_KEY", "secret"),
            ]),
        )
        .unwrap();
        assert_eq!(
            c.endpoint.as_deref(),
            Some("https://abc123.r2.cloudflarestorage.com")
        );
        assert_eq!(c.region.as_deref(), Some("auto"));
        assert_eq!(c.credentials, Some(("id".into(), "secret".into())));
        let c = S3Config::r2("b", "", env(&[("R2_ENDPOINT_URL", "http://127.0.0.1:9")])).unwrap();
        assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:9"));
        assert_eq!(c.credentials, None);
        assert!(S3Config::r2("b", "", env(&[])).is_err());
        assert!(
            S3Config::r2(
                "b",
                "",
                env(&[("CLOUDFLARE_ACCOUNT_ID", "a"), ("R2_ACCESS_KEY_ID", "id")])
            )
            .is_err()
        );
    }
}
