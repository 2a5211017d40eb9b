//! A real S3 server in-process: `s3s` + `s3s-fs` (objects are files under a temporary
//! directory) over HTTP on 127.0.0.1, with SigV4 authentication and injectable `503 SlowDown`
//! answers. Every request is logged (`METHOD path?query`, then ` [unsigned]` when its body is
//! sent as `UNSIGNED-PAYLOAD` and ` [sha256]` when it carries `x-amz-checksum-sha256`) so tests
//! can see multipart uploads and their aborts happen, and how bodies are checked. `s3s-fs` has no
//! ListMultipartUploads; [`Uploads`] adds it from the files `s3s-fs` keeps per upload, so stale
//! uploads can be found and aborted as on S3 and R2. It also makes `If-None-Match: *` atomic, as
//! S3 and R2 do (`s3s-fs` checks, then writes), and lists planted keys that a file system cannot
//! hold but a bucket can ([`FakeS3::plant`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use s3s::{S3Request, S3Response, S3Result, dto};

pub const ACCESS_KEY: &str = "fake-access-key";
pub const SECRET_KEY: &str = "fake-secret-key-9d2b";

#[derive(Default)]
pub struct S3State {
    pub log: Mutex<Vec<String>>,
    pub requests: AtomicU64,
    pub faults: AtomicU64,
    fail: Mutex<(f64, u64, u64)>,
    latency: Mutex<std::time::Duration>,
    /// Keys listed as zero-byte objects beside the stored ones: `(bucket, key)`.
    planted: Mutex<Vec<(String, String)>>,
}

impl S3State {
    /// Fails the next `n` requests with 503 SlowDown.
    pub fn fail_next(&self, n: u64) {
        self.fail.lock().unwrap().2 = n;
    }

    fn should_fail(&self) -> bool {
        let mut f = self.fail.lock().unwrap();
        if f.2 > 0 {
            f.2 -= 1;
            return true;
        }
        if f.0 <= 0.0 {
            return false;
        }
        f.1 ^= f.1 << 13;
        f.1 ^= f.1 >> 7;
        f.1 ^= f.1 << 17;
        ((f.1 % 1_000_000) as f64 / 1_000_000.0) < f.0
    }
}

pub struct FakeS3 {
    /// The endpoint, as `AWS_ENDPOINT_URL_S3`.
    pub url: String,
    pub root: tempfile::TempDir,
    pub state: Arc<S3State>,
}

impl FakeS3 {
    /// Starts a server holding the given (empty) buckets.
    pub async fn start(buckets: &[&str]) -> FakeS3 {
        FakeS3::start_at(buckets, 0).await
    }

    /// [`FakeS3::start`] on loopback port `port` (0: a free one).
    pub async fn start_at(buckets: &[&str], port: u16) -> FakeS3 {
        let root = tempfile::tempdir().unwrap();
        for b in buckets {
            std::fs::create_dir_all(root.path().join(b)).unwrap();
        }
        let fs = s3s_fs::FileSystem::new(root.path()).unwrap();
        let state = Arc::new(S3State::default());
        let mut builder = S3ServiceBuilder::new(Uploads {
            fs,
            root: root.path().to_path_buf(),
            creating: tokio::sync::Mutex::new(()),
            state: state.clone(),
        });
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("listening on 127.0.0.1:{port}: {e}"));
        let addr = listener.local_addr().unwrap();
        let served = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                // As a real S3 endpoint does: without it, a small response waits out the
                // client's delayed ACK (40 ms a request on Linux).
                let _ = stream.set_nodelay(true);
                let service = service.clone();
                let state = served.clone();
                tokio::spawn(async move {
                    let handler = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let service = service.clone();
                        let state = state.clone();
                        async move {
                            state.requests.fetch_add(1, Ordering::SeqCst);
                            let latency = *state.latency.lock().unwrap();
                            if !latency.is_zero() {
                                tokio::time::sleep(latency).await;
                            }
                            let header =
                                |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
                            let mut line = format!(
                                "{} {}",
                                req.method(),
                                req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("")
                            );
                            if header("x-amz-content-sha256") == Some("UNSIGNED-PAYLOAD") {
                                line.push_str(" [unsigned]");
                            }
                            if header("x-amz-checksum-sha256").is_some() {
                                line.push_str(" [sha256]");
                            }
                            state.log.lock().unwrap().push(line);
                            if state.should_fail() {
                                state.faults.fetch_add(1, Ordering::SeqCst);
                                let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
                                return Ok(hyper::Response::builder()
                                    .status(503)
                                    .header("content-type", "application/xml")
                                    .body(s3s::Body::from(body.to_string()))
                                    .unwrap());
                            }
                            hyper::service::Service::call(&service, req).await
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), handler)
                        .await;
                });
            }
        });
        FakeS3 {
            url: format!("http://{addr}"),
            root,
            state,
        }
    }

    /// Fails this fraction of requests with 503 SlowDown, reproducibly for a seed.
    pub fn fail_randomly(&self, rate: f64, seed: u64) {
        let mut f = self.state.fail.lock().unwrap();
        f.0 = rate;
        f.1 = seed.max(1);
    }

    /// Adds `latency` before every answer, as a store across a network does.
    #[allow(dead_code, reason = "the benchmark sets it, no test does")]
    pub fn set_latency(&self, latency: std::time::Duration) {
        *self.state.latency.lock().unwrap() = latency;
    }

    /// Lists `key` in `bucket` as a zero-byte object from now on, as S3 and R2 list keys that
    /// `s3s-fs` cannot store as a file: a folder marker (`a/b/`, which `s3s-fs` makes a directory
    /// and never lists) or a key with an empty segment (`a//b`, which it stores as `a/b`).
    pub fn plant(&self, bucket: &str, key: &str) {
        self.state
            .planted
            .lock()
            .unwrap()
            .push((bucket.to_string(), key.to_string()));
    }

    /// Fails the next `n` requests.
    pub fn fail_next(&self, n: u64) {
        self.state.fail_next(n);
    }

    pub fn log(&self) -> Vec<String> {
        self.state.log.lock().unwrap().clone()
    }

    /// The environment that points the AWS SDK (and so `s3://`) at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL_S3", self.url.clone()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
        ]
    }
}

/// The body, once it is read whole and matches its `x-amz-checksum-sha256`, as S3 and R2 check
/// it before storing anything: `s3s-fs` writes an object before it compares the checksum (and
/// compares none for a part), which would leave a refused object in place.
async fn checked(
    body: Option<dto::StreamingBlob>,
    sha256: Option<&str>,
) -> S3Result<Option<dto::StreamingBlob>> {
    use base64::Engine;
    use futures::TryStreamExt;
    use sha2::Digest;
    let (body, expected) = match (body, sha256) {
        (Some(body), Some(expected)) => (body, expected),
        (body, _) => return Ok(body),
    };
    let chunks: Vec<bytes::Bytes> = body
        .try_collect()
        .await
        .map_err(|e| s3s::s3_error!(IncompleteBody, "{e}"))?;
    let data = bytes::Bytes::from(chunks.concat());
    let actual = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&data));
    if actual != expected {
        return Err(s3s::s3_error!(BadDigest, "checksum_sha256 mismatch"));
    }
    Ok(Some(dto::StreamingBlob::from(s3s::Body::from(data))))
}

/// `s3s-fs` plus ListMultipartUploads, and bodies checked before they are stored ([`checked`]).
/// Every other operation d1r2 uses is passed through.
struct Uploads {
    fs: s3s_fs::FileSystem,
    root: std::path::PathBuf,
    /// Held through a conditional create, so checking for the key and writing it are one step.
    creating: tokio::sync::Mutex<()>,
    state: Arc<S3State>,
}

#[async_trait::async_trait]
impl s3s::S3 for Uploads {
    async fn put_object(
        &self,
        mut req: S3Request<dto::PutObjectInput>,
    ) -> S3Result<S3Response<dto::PutObjectOutput>> {
        let input = &mut req.input;
        input.body = checked(input.body.take(), input.checksum_sha256.as_deref()).await?;
        let _creating = match input.if_none_match {
            Some(_) => Some(self.creating.lock().await),
            None => None,
        };
        self.fs.put_object(req).await
    }

    /// `s3s-fs`'s, with `If-Match` honoured as S3 does (`s3s-fs` ignores it): an object whose
    /// ETag is not the one asked for is `412 PreconditionFailed`.
    async fn get_object(
        &self,
        req: S3Request<dto::GetObjectInput>,
    ) -> S3Result<S3Response<dto::GetObjectOutput>> {
        let wanted = match &req.input.if_match {
            Some(dto::ETagCondition::ETag(tag)) => Some(tag.value().to_string()),
            _ => None,
        };
        let response = self.fs.get_object(req).await?;
        let actual = response
            .output
            .e_tag
            .as_ref()
            .map(|t| t.value().to_string());
        if wanted.is_some() && wanted != actual {
            return Err(s3s::s3_error!(
                PreconditionFailed,
                "At least one of the pre-conditions you specified did not hold"
            ));
        }
        Ok(response)
    }

    async fn head_object(
        &self,
        req: S3Request<dto::HeadObjectInput>,
    ) -> S3Result<S3Response<dto::HeadObjectOutput>> {
        self.fs.head_object(req).await
    }

    async fn head_bucket(
        &self,
        req: S3Request<dto::HeadBucketInput>,
    ) -> S3Result<S3Response<dto::HeadBucketOutput>> {
        self.fs.head_bucket(req).await
    }

    async fn delete_object(
        &self,
        req: S3Request<dto::DeleteObjectInput>,
    ) -> S3Result<S3Response<dto::DeleteObjectOutput>> {
        self.fs.delete_object(req).await
    }

    /// `s3s-fs`'s listing, with the planted keys under the prefix added in key order.
    async fn list_objects_v2(
        &self,
        req: S3Request<dto::ListObjectsV2Input>,
    ) -> S3Result<S3Response<dto::ListObjectsV2Output>> {
        let bucket = req.input.bucket.clone();
        let prefix = req.input.prefix.clone().unwrap_or_default();
        let mut out = self.fs.list_objects_v2(req).await?;
        let planted: Vec<dto::Object> = self
            .state
            .planted
            .lock()
            .unwrap()
            .iter()
            .filter(|(b, k)| *b == bucket && k.starts_with(&prefix))
            .map(|(_, k)| dto::Object {
                key: Some(k.clone()),
                size: Some(0),
                last_modified: Some(std::time::SystemTime::now().into()),
                ..Default::default()
            })
            .collect();
        if !planted.is_empty() {
            let contents = out.output.contents.get_or_insert_with(Vec::new);
            contents.extend(planted);
            contents.sort_by(|a, b| a.key.cmp(&b.key));
            out.output.key_count = Some(contents.len() as i32);
        }
        Ok(out)
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<dto::CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::CreateMultipartUploadOutput>> {
        self.fs.create_multipart_upload(req).await
    }

    async fn upload_part(
        &self,
        mut req: S3Request<dto::UploadPartInput>,
    ) -> S3Result<S3Response<dto::UploadPartOutput>> {
        let input = &mut req.input;
        input.body = checked(input.body.take(), input.checksum_sha256.as_deref()).await?;
        self.fs.upload_part(req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<dto::CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::CompleteMultipartUploadOutput>> {
        self.fs.complete_multipart_upload(req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<dto::AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::AbortMultipartUploadOutput>> {
        self.fs.abort_multipart_upload(req).await
    }

    /// The uploads in progress, from `s3s-fs`'s per-upload metadata files
    /// (`.bucket-B.object-K.upload-ID.metadata.json`, names base64url), initiated at the file's
    /// modification time. One page, no markers: enough for tests.
    async fn list_multipart_uploads(
        &self,
        req: s3s::S3Request<s3s::dto::ListMultipartUploadsInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::ListMultipartUploadsOutput>> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let input = req.input;
        let bucket_part = format!(".bucket-{}.object-", b64.encode(&input.bucket));
        let prefix = input.prefix.clone().unwrap_or_default();
        let mut uploads = Vec::new();
        for entry in std::fs::read_dir(&self.root).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name
                .strip_prefix(&bucket_part)
                .and_then(|r| r.strip_suffix(".metadata.json"))
            else {
                continue;
            };
            let Some((key, upload_id)) = rest.split_once(".upload-") else {
                continue;
            };
            let key = String::from_utf8(b64.decode(key).unwrap()).unwrap();
            if !key.starts_with(&prefix) {
                continue;
            }
            let modified = entry.metadata().unwrap().modified().unwrap();
            uploads.push(s3s::dto::MultipartUpload {
                key: Some(key),
                upload_id: Some(upload_id.to_string()),
                initiated: Some(modified.into()),
                ..Default::default()
            });
        }
        Ok(s3s::S3Response::new(s3s::dto::ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix,
            is_truncated: Some(false),
            uploads: Some(uploads),
            ..Default::default()
        }))
    }
}
