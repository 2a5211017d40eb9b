//! A real S3 server in-process: `s3s` + `s3s-fs` (objects are files under a temporary
//! directory) over HTTP on 127.0.0.1, with SigV4 authentication and injectable `503 SlowDown`
//! answers. Every request is logged (`METHOD path?query`) so tests can see multipart uploads and
//! their aborts happen.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

pub const ACCESS_KEY: &str = "fake-access-key";
pub const SECRET_KEY: &str = "fake-secret-key-9d2b";

#[derive(Default)]
pub struct S3State {
    pub log: Mutex<Vec<String>>,
    pub requests: AtomicU64,
    pub faults: AtomicU64,
    fail: Mutex<(f64, u64, u64)>,
}

impl S3State {
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
        let root = tempfile::tempdir().unwrap();
        for b in buckets {
            std::fs::create_dir_all(root.path().join(b)).unwrap();
        }
        let fs = s3s_fs::FileSystem::new(root.path()).unwrap();
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let state = Arc::new(S3State::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let service = service.clone();
                let state = served.clone();
                tokio::spawn(async move {
                    let handler = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let service = service.clone();
                        let state = state.clone();
                        async move {
                            state.requests.fetch_add(1, Ordering::SeqCst);
                            let line = format!(
                                "{} {}",
                                req.method(),
                                req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("")
                            );
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

    /// Fails the next `n` requests.
    pub fn fail_next(&self, n: u64) {
        self.state.fail.lock().unwrap().2 = n;
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
