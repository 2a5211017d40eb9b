//! One set of `Store` tests, run against every implementation: the local folder and R2/S3
//! (through a real S3 server in-process), with and without a key prefix.
//!
//! Each check is a `pub async fn` taking the store under test, empty, and leaves it empty;
//! [`conformance`] runs them all, so a new `Store` is one `conformance(&store).await` line in
//! its test.

use crate::fakes;

use bytes::Bytes;
use d1r2::store::local::LocalStore;
use d1r2::store::s3::{S3Config, S3Store};
use d1r2::store::{PART_SIZE, Store, StoreError, read_all};
use d1r2::{Classify, Kind};
use fakes::s3::{ACCESS_KEY, FakeS3, SECRET_KEY};
use futures::TryStreamExt;
use sha2::{Digest, Sha256};

async fn s3_store(server: &FakeS3, bucket: &str, prefix: &str) -> S3Store {
    S3Store::connect(S3Config {
        bucket: bucket.to_string(),
        prefix: prefix.to_string(),
        endpoint: Some(server.url.clone()),
        region: Some("auto".to_string()),
        credentials: Some((ACCESS_KEY.to_string(), SECRET_KEY.to_string())),
        scheme: "s3://",
    })
    .await
    .expect("the fake's keys")
}

fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect::<Vec<u8>>()
        .into()
}

async fn keys(store: &dyn Store, prefix: &str) -> Vec<String> {
    store
        .list(prefix)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect()
}

pub async fn put_get_head_delete(store: &dyn Store) {
    store
        .put("a/one.txt", Bytes::from_static(b"hello"))
        .await
        .unwrap();
    assert_eq!(read_all(store, "a/one.txt").await.unwrap(), &b"hello"[..]);
    let meta = store.head("a/one.txt").await.unwrap().expect("exists");
    assert_eq!((meta.key.as_str(), meta.size), ("a/one.txt", 5));
    store
        .put("a/one.txt", Bytes::from_static(b"replaced"))
        .await
        .unwrap();
    assert_eq!(
        read_all(store, "a/one.txt").await.unwrap(),
        &b"replaced"[..]
    );
    store.put("a/empty", Bytes::new()).await.unwrap();
    assert_eq!(read_all(store, "a/empty").await.unwrap().len(), 0);
    store.delete("a/one.txt").await.unwrap();
    assert!(store.head("a/one.txt").await.unwrap().is_none());
    store.delete("a/one.txt").await.unwrap();
    store.delete("never/was").await.unwrap();
    store.delete("a/empty").await.unwrap();
}

pub async fn missing_objects_are_not_found(store: &dyn Store) {
    assert!(store.head("nope/x").await.unwrap().is_none());
    match store.get("nope/x").await {
        Err(e) => assert!(e.is_not_found(), "{e}"),
        Ok(_) => panic!("a missing object was read"),
    }
}

pub async fn lists_are_sorted_and_prefixed(store: &dyn Store) {
    for key in ["b/2", "a/1", "b/1", "ab/1", "b/sub/3"] {
        store.put(key, Bytes::from(key.to_string())).await.unwrap();
    }
    assert_eq!(
        keys(store, "").await,
        ["a/1", "ab/1", "b/1", "b/2", "b/sub/3"]
    );
    assert_eq!(keys(store, "b/").await, ["b/1", "b/2", "b/sub/3"]);
    assert_eq!(keys(store, "a").await, ["a/1", "ab/1"]);
    assert!(keys(store, "zzz").await.is_empty());
    for key in ["b/2", "a/1", "b/1", "ab/1", "b/sub/3"] {
        store.delete(key).await.unwrap();
    }
    assert!(keys(store, "").await.is_empty());
}

pub async fn invalid_keys_are_refused(store: &dyn Store) {
    for key in ["", "/abs", "../up", "a//b", "a/./b"] {
        let err = store.put(key, Bytes::new()).await.unwrap_err();
        assert!(matches!(err, StoreError::InvalidKey(_)), "{key}: {err}");
    }
}

pub async fn streams_appear_only_when_finished(store: &dyn Store) {
    let data = pattern(3 * PART_SIZE / 2 + 12_345, 7);
    let mut upload = store.put_stream("big/part.gz").await.unwrap();
    for chunk in data.chunks(1024 * 1024 + 17) {
        upload.write(Bytes::copy_from_slice(chunk)).await.unwrap();
        assert!(store.head("big/part.gz").await.unwrap().is_none());
    }
    assert!(
        keys(store, "big/").await.is_empty(),
        "an unfinished upload is listed"
    );
    upload
        .finish(Some(Sha256::digest(&data).into()))
        .await
        .unwrap();
    let meta = store.head("big/part.gz").await.unwrap().unwrap();
    assert_eq!(meta.size, data.len() as u64);
    let chunks: Vec<Bytes> = store
        .get("big/part.gz")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert!(chunks.concat() == data, "the object read back differs");
    store.delete("big/part.gz").await.unwrap();

    let mut small = store.put_stream("small/x").await.unwrap();
    small.write(Bytes::from_static(b"ab")).await.unwrap();
    small.write(Bytes::from_static(b"cd")).await.unwrap();
    small
        .finish(Some(Sha256::digest(b"abcd").into()))
        .await
        .unwrap();
    assert_eq!(read_all(store, "small/x").await.unwrap(), &b"abcd"[..]);
    store.delete("small/x").await.unwrap();

    let empty = store.put_stream("small/empty").await.unwrap();
    empty.finish(None).await.unwrap();
    assert_eq!(read_all(store, "small/empty").await.unwrap().len(), 0);
    store.delete("small/empty").await.unwrap();
}

pub async fn aborted_and_dropped_uploads_leave_nothing(store: &dyn Store) {
    let mut upload = store.put_stream("gone/a").await.unwrap();
    upload.write(pattern(PART_SIZE + 1, 1)).await.unwrap();
    upload.abort().await.unwrap();
    let mut upload = store.put_stream("gone/b").await.unwrap();
    upload.write(pattern(PART_SIZE + 1, 2)).await.unwrap();
    drop(upload);
    let mut upload = store.put_stream("gone/c").await.unwrap();
    upload.write(Bytes::from_static(b"tiny")).await.unwrap();
    drop(upload);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        keys(store, "").await.is_empty(),
        "{:?}",
        keys(store, "").await
    );
}

/// An upload left unfinished by a process that died: never finished, never aborted. Only the
/// uploads of keys the caller owns are touched: another program's stays.
pub async fn stale_uploads_are_found_and_aborted(store: &dyn Store) {
    let owned = |key: &str| key.starts_with("stale/");
    let now = chrono::Utc::now();
    for key in ["stale/part", "theirs/part"] {
        let mut upload = store.put_stream(key).await.unwrap();
        upload.write(pattern(PART_SIZE + 10, 3)).await.unwrap();
        std::mem::forget(upload);
    }
    assert_eq!(
        store
            .abort_stale_uploads(now - chrono::TimeDelta::days(1), owned)
            .await
            .unwrap(),
        0,
        "a young upload was aborted"
    );
    let cutoff = chrono::Utc::now() + chrono::TimeDelta::minutes(1);
    assert_eq!(store.abort_stale_uploads(cutoff, owned).await.unwrap(), 1);
    assert_eq!(store.abort_stale_uploads(cutoff, owned).await.unwrap(), 0);
    assert_eq!(
        store.abort_stale_uploads(cutoff, |_| true).await.unwrap(),
        1,
        "an upload of a key the caller does not own was aborted"
    );
    assert!(keys(store, "").await.is_empty());
}

/// A conditional create: refused on a taken key (whoever wrote it, and however), the first
/// content kept; of many racing for one key, exactly one wins and its content is what is stored.
pub async fn put_new_creates_only_once(store: &dyn Store) {
    let seed: u8 = rand::random();
    let first = pattern(1000 + seed as usize, seed);
    store
        .put_new("claims/one.json", first.clone())
        .await
        .unwrap();
    let err = store
        .put_new("claims/one.json", pattern(10, seed ^ 1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::AlreadyExists { .. }),
        "a second create was not refused: {err}"
    );
    assert_eq!(err.kind(), Kind::Failed);
    assert!(err.to_string().contains("claims/one.json"), "{err}");
    assert!(read_all(store, "claims/one.json").await.unwrap() == first);

    store
        .put("claims/put.json", Bytes::from_static(b"plain"))
        .await
        .unwrap();
    let err = store
        .put_new("claims/put.json", Bytes::from_static(b"new"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err}");
    assert_eq!(
        read_all(store, "claims/put.json").await.unwrap(),
        &b"plain"[..]
    );

    let racers = 16;
    let results = futures::future::join_all((0..racers).map(|i| {
        store.put_new(
            "claims/race.json",
            Bytes::from(format!("racer {i} of {seed}")),
        )
    }))
    .await;
    let winners: Vec<usize> = (0..racers).filter(|&i| results[i].is_ok()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    for (i, r) in results.iter().enumerate() {
        if let Err(e) = r {
            assert!(
                matches!(e, StoreError::AlreadyExists { .. }),
                "racer {i}: {e}"
            );
        }
    }
    assert_eq!(
        read_all(store, "claims/race.json").await.unwrap(),
        format!("racer {} of {seed}", winners[0]).as_bytes()
    );
    let err = store.put_new("a//b", Bytes::new()).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidKey(_)), "{err}");
    for key in ["claims/one.json", "claims/put.json", "claims/race.json"] {
        store.delete(key).await.unwrap();
    }
    assert!(keys(store, "").await.is_empty());
}

/// Every check, one after another, on one store.
pub async fn conformance(store: &dyn Store) {
    put_get_head_delete(store).await;
    missing_objects_are_not_found(store).await;
    lists_are_sorted_and_prefixed(store).await;
    invalid_keys_are_refused(store).await;
    streams_appear_only_when_finished(store).await;
    aborted_and_dropped_uploads_leave_nothing(store).await;
    stale_uploads_are_found_and_aborted(store).await;
    put_new_creates_only_once(store).await;
}

#[tokio::test]
async fn local_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    conformance(&LocalStore::create(&dir.path().join("root")).unwrap()).await;
    let nested = dir.path().join("deep/er");
    conformance(&LocalStore::create(&nested).unwrap()).await;
}

#[tokio::test]
async fn s3_store_conforms() {
    let server = FakeS3::start(&["backups"]).await;
    conformance(&s3_store(&server, "backups", "").await).await;
    conformance(&s3_store(&server, "backups", "team/prod").await).await;
    let log = server.log();
    assert!(
        log.iter()
            .any(|l| l.starts_with("POST") && l.contains("?uploads")),
        "no multipart upload was started: {log:?}"
    );
    assert!(
        log.iter()
            .any(|l| l.starts_with("DELETE") && l.contains("uploadId=")),
        "no multipart upload was aborted"
    );
    // Every body goes with our SHA-256 for the service to check, and is not hashed again for
    // the signature.
    let bodies: Vec<&String> = log.iter().filter(|l| l.starts_with("PUT ")).collect();
    assert!(
        bodies.iter().any(|l| l.contains("partNumber=")) && bodies.len() > 2,
        "{bodies:?}"
    );
    assert!(
        bodies.iter().all(|l| l.ends_with(" [unsigned] [sha256]")),
        "{bodies:?}"
    );
}

/// A digest handed to `finish` is what the service checks the object against: one that does not
/// match what was written is refused, and nothing appears under the key.
#[tokio::test]
async fn s3_an_upload_that_does_not_match_its_digest_is_refused() {
    let server = FakeS3::start(&["bkt"]).await;
    let store = s3_store(&server, "bkt", "p").await;
    let mut upload = store.put_stream("x.gz").await.unwrap();
    upload.write(Bytes::from_static(b"abcd")).await.unwrap();
    let mut wrong: [u8; 32] = Sha256::digest(b"abcd").into();
    wrong[31] ^= 1;
    let err = upload.finish(Some(wrong)).await.unwrap_err();
    assert!(err.to_string().contains("x.gz"), "{err}");
    assert!(store.head("x.gz").await.unwrap().is_none());
    assert!(keys(&store, "").await.is_empty());

    let mut upload = store.put_stream("x.gz").await.unwrap();
    upload.write(Bytes::from_static(b"abcd")).await.unwrap();
    upload
        .finish(Some(Sha256::digest(b"abcd").into()))
        .await
        .unwrap();
    assert_eq!(read_all(&store, "x.gz").await.unwrap(), &b"abcd"[..]);
}

#[tokio::test]
async fn s3_prefixes_do_not_see_each_other() {
    let server = FakeS3::start(&["bkt"]).await;
    let a = s3_store(&server, "bkt", "a").await;
    let ab = s3_store(&server, "bkt", "ab").await;
    a.put("k", Bytes::from_static(b"1")).await.unwrap();
    ab.put("k", Bytes::from_static(b"2")).await.unwrap();
    assert_eq!(keys(&a, "").await, ["k"]);
    assert_eq!(read_all(&ab, "k").await.unwrap(), &b"2"[..]);
    assert_eq!(a.to_string(), "s3://bkt/a");
}

#[tokio::test]
async fn s3_throttling_is_retried() {
    let server = FakeS3::start(&["bkt"]).await;
    let store = s3_store(&server, "bkt", "p").await;
    server.fail_next(3);
    store.put("x", Bytes::from_static(b"data")).await.unwrap();
    assert_eq!(read_all(&store, "x").await.unwrap(), &b"data"[..]);
    assert_eq!(
        server
            .state
            .faults
            .load(std::sync::atomic::Ordering::SeqCst),
        3
    );
}

#[tokio::test]
async fn s3_missing_bucket_is_a_missing_root() {
    let server = FakeS3::start(&["bkt"]).await;
    let store = s3_store(&server, "nobucket", "").await;
    let err = store.list("").await.unwrap_err();
    assert_eq!(err.kind(), Kind::BadInput, "{err}");
}

/// Keys a bucket holds that are not d1r2's to hold (a console's folder marker, a key with an
/// empty segment) never make a listing fail; S3 lists them as they are, for the caller to skip.
/// `s3s-fs` itself stores a folder marker as a directory, which it never lists, and folds an
/// empty segment away; the fake lists planted keys as S3 does.
#[tokio::test]
async fn s3_lists_keys_it_cannot_hold_without_failing() {
    let server = FakeS3::start(&["bkt"]).await;
    let store = s3_store(&server, "bkt", "p").await;
    store
        .put("20261124T221500Z/manifest.json", Bytes::from_static(b"{}"))
        .await
        .unwrap();
    let config = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .endpoint_url(&server.url)
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            ACCESS_KEY, SECRET_KEY, None, None, "test",
        ))
        .force_path_style(true)
        .build();
    let raw = aws_sdk_s3::Client::from_conf(config);
    for key in ["p/20261124T221500Z/data/", "p/x//manifest.json"] {
        raw.put_object()
            .bucket("bkt")
            .key(key)
            .body(aws_sdk_s3::primitives::ByteStream::from_static(b""))
            .send()
            .await
            .unwrap();
    }
    assert_eq!(
        keys(&store, "").await,
        ["20261124T221500Z/manifest.json", "x/manifest.json"],
        "s3s-fs changed how it stores folder markers and empty segments"
    );
    server.plant("bkt", "p/20261124T221500Z/data/");
    server.plant("bkt", "p//manifest.json");
    assert_eq!(
        keys(&store, "").await,
        [
            "/manifest.json",
            "20261124T221500Z/data/",
            "20261124T221500Z/manifest.json",
            "x/manifest.json"
        ]
    );
}
