//! Where backups are kept: the `Store` seam.
//!
//! A store is a flat namespace of keys under the destination's prefix, like an object store. Large
//! objects are written as streams ([`Upload`]) that become visible only when finished, so a crash
//! never leaves a truncated object under its final key. Shaped after `object_store`'s
//! `ObjectStore`/`MultipartUpload`, trimmed to what backups need.

pub mod local;
pub(crate) mod resume;
pub mod s3;
pub(crate) mod s3_failure;

use crate::error::{Classify, Kind};
use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;

/// The unit an upload is sent in: S3's and R2's 5 MiB multipart minimum (R2 wants every part but
/// the last this same size); 10,000 parts make room for a 50 GiB object. It is also the most an
/// upload holds in memory, and a stream that ends below it is one `PutObject`: the backup sizes
/// its parts under it, so it belongs to the seam rather than to one store.
pub const PART_SIZE: usize = 5 * 1024 * 1024;

/// Which keys a cleanup may touch: the caller knows what it owns, the store does not.
pub type OwnedKey = fn(&str) -> bool;

/// The bytes of an object, as they arrive.
pub type ByteStream = BoxStream<'static, Result<Bytes, StoreError>>;

#[derive(Debug, Clone, PartialEq)]
pub struct ObjectMeta {
    /// The key relative to the store's prefix.
    pub key: String,
    pub size: u64,
    pub modified: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{key} not found in {store}")]
    NotFound { store: String, key: String },
    #[error("{store} does not exist")]
    MissingRoot { store: String },
    #[error("{store} is a file, not a folder: give a folder for backups")]
    NotAFolder { store: String },
    #[error("invalid key {0:?}")]
    InvalidKey(String),
    /// A conditional create ([`Store::put_new`]) found the key taken.
    #[error("{key} already exists in {store}")]
    AlreadyExists { store: String, key: String },
    #[error("{op} {key} in {store}: {source}")]
    Io {
        op: &'static str,
        store: String,
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", place(op, key, store))]
    Remote {
        op: &'static str,
        store: String,
        key: String,
        message: String,
    },
    /// A bucket store found no credentials to sign its requests with (the caller names the
    /// store it was opening).
    #[error("no credentials found: {hint}")]
    NoCredentials { hint: String },
    /// The service refused the keys, or what they may do: the user's to fix.
    #[error("{}: {message}", place(op, key, store))]
    Refused {
        op: &'static str,
        store: String,
        key: String,
        message: String,
    },
    #[error("{store}: the bucket {bucket} does not exist; create it or correct its name")]
    NoBucket { store: String, bucket: String },
    /// The connection broke while the object's bytes were arriving. A store's stream says so for
    /// each break, and [`Store::get`] reads on from where it stopped; the error that reaches a
    /// caller is the last break, once reading again stopped helping.
    #[error(
        "reading {key} from {store} failed: the connection broke after {received} bytes, {attempts} attempts in all ({message}); a network failure, not a damaged backup: run it again"
    )]
    Interrupted {
        store: String,
        key: String,
        /// Bytes of the object that arrived before the last break.
        received: u64,
        attempts: u32,
        message: String,
    },
    /// The object was replaced while it was being read: its rest would belong to another object.
    #[error("{key} in {store} was replaced while it was being read; run it again")]
    Changed { store: String, key: String },
}

/// `reading KEY in STORE`, or `listing in STORE` when the request names no key.
fn place(op: &str, key: &str, store: &str) -> String {
    if key.is_empty() {
        format!("{op} in {store}")
    } else {
        format!("{op} {key} in {store}")
    }
}

impl StoreError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }

    /// Whether the connection broke mid-object, so that reading on may get the rest.
    pub fn is_interrupted(&self) -> bool {
        matches!(self, StoreError::Interrupted { .. })
    }
}

/// The user pointed at the wrong place or gave keys that do not work; a missing object or a failed request is a failure, and so
/// is a key found taken: the callers that expect it (an id claim, the store marker) handle it, and
/// anywhere else it means another writer got there first.
impl Classify for StoreError {
    fn kind(&self) -> Kind {
        match self {
            StoreError::MissingRoot { .. }
            | StoreError::NotAFolder { .. }
            | StoreError::NoCredentials { .. }
            | StoreError::Refused { .. }
            | StoreError::NoBucket { .. }
            | StoreError::InvalidKey(_) => Kind::BadInput,
            StoreError::NotFound { .. }
            | StoreError::AlreadyExists { .. }
            | StoreError::Io { .. }
            | StoreError::Remote { .. }
            | StoreError::Interrupted { .. }
            | StoreError::Changed { .. } => Kind::Failed,
        }
    }
}

/// A place backups are written to and read from. `Display` names it for messages, without
/// credentials.
#[async_trait]
pub trait Store: Send + Sync + fmt::Display {
    /// Writes a small object in one request, replacing any object under `key`.
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError>;

    /// Writes a small object only if nothing is under `key` ([`StoreError::AlreadyExists`]
    /// otherwise), atomically: of any number of writers racing for one key exactly one succeeds,
    /// and the object is complete once anyone can see it. Names are claimed with it.
    async fn put_new(&self, key: &str, data: Bytes) -> Result<(), StoreError>;

    /// Starts a streamed write; the object appears under `key` only when the upload finishes.
    async fn put_stream(&self, key: &str) -> Result<Box<dyn Upload>, StoreError>;

    /// Reads an object as a stream. A missing key is [`StoreError::NotFound`]. A store across a
    /// network reads on where a broken connection stopped (see `resume`), so the stream ends
    /// with every byte of the object or with an error, never early.
    async fn get(&self, key: &str) -> Result<ByteStream, StoreError>;

    /// The object's metadata, or `None` when it does not exist.
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError>;

    /// Every object whose key starts with `prefix`, in key order.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError>;

    /// Removes an object; removing a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;

    /// Discards unfinished uploads started before `older_than` (left by a crashed process), which
    /// `list` never shows but which still take space; returns how many. Only uploads of keys
    /// `owned` accepts are touched: the prefix may hold other programs' uploads in progress. A
    /// store with folders also removes the folders this emptied, and empty folders older than
    /// `older_than` that `owned` accepts as `folder/` (left by a process killed after making
    /// them).
    async fn abort_stale_uploads(
        &self,
        older_than: DateTime<Utc>,
        owned: OwnedKey,
    ) -> Result<usize, StoreError>;
}

/// A streamed write in progress. Dropping it without [`Upload::finish`] discards it.
#[async_trait]
pub trait Upload: Send {
    /// Appends bytes; the upload buffers them into parts as the store needs.
    async fn write(&mut self, data: Bytes) -> Result<(), StoreError>;
    /// Makes the object visible under its key. `sha256` is the SHA-256 of everything written,
    /// when the caller has it (a backup's codec hashes every byte it stores): a store whose
    /// service checks what arrives sends it instead of hashing the bytes again, and the object is
    /// then refused unless it arrived as the caller made it.
    async fn finish(self: Box<Self>, sha256: Option<[u8; 32]>) -> Result<(), StoreError>;
    /// Discards everything written so far.
    async fn abort(self: Box<Self>) -> Result<(), StoreError>;
}

/// Reads a whole (small) object into memory: manifests and audit records, never parts.
pub async fn read_all(store: &dyn Store, key: &str) -> Result<Bytes, StoreError> {
    use futures::TryStreamExt;
    let chunks: Vec<Bytes> = store.get(key).await?.try_collect().await?;
    Ok(chunks.concat().into())
}

/// Checks a key is relative and has no `.`/`..` segments, so no store can be led outside its
/// prefix.
pub fn check_key(key: &str) -> Result<(), StoreError> {
    let bad = key.is_empty()
        || key.starts_with('/')
        || key.contains('\\')
        || key
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..");
    if bad {
        Err(StoreError::InvalidKey(key.to_string()))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::StoreError;

    #[test]
    fn keys_table() {
        for (key, ok) in [
            ("a", true),
            ("20261124T221500Z/manifest.json", true),
            ("a/b/c.sql.gz", true),
            ("", false),
            ("/abs", false),
            ("a//b", false),
            ("../x", false),
            ("a/./b", false),
            ("a\\b", false),
            ("a/", false),
        ] {
            assert_eq!(super::check_key(key).is_ok(), ok, "{key}");
        }
    }

    #[test]
    fn places_table() {
        for (op, key, want) in [
            ("listing", "", "listing in s3://b"),
            ("reading", "k/m.json", "reading k/m.json in s3://b"),
        ] {
            assert_eq!(super::place(op, key, "s3://b"), want);
        }
    }

    #[test]
    fn every_error_has_its_kind() {
        use crate::error::{Classify, Kind::*};
        let s = String::from;
        let cases = [
            (StoreError::MissingRoot { store: s("dir") }, BadInput),
            (StoreError::NotAFolder { store: s("file") }, BadInput),
            (StoreError::InvalidKey(s("../x")), BadInput),
            (
                StoreError::NoCredentials {
                    hint: s("set them"),
                },
                BadInput,
            ),
            (
                StoreError::Refused {
                    op: "listing",
                    store: s("r2://b"),
                    key: s(""),
                    message: s("access denied"),
                },
                BadInput,
            ),
            (
                StoreError::NoBucket {
                    store: s("s3://b/p"),
                    bucket: s("b"),
                },
                BadInput,
            ),
            (
                StoreError::NotFound {
                    store: s("dir"),
                    key: s("k"),
                },
                Failed,
            ),
            (
                StoreError::AlreadyExists {
                    store: s("dir"),
                    key: s("k"),
                },
                Failed,
            ),
            (
                StoreError::Io {
                    op: "reading",
                    store: s("dir"),
                    key: s("k"),
                    source: std::io::Error::other("disk"),
                },
                Failed,
            ),
            (
                StoreError::Remote {
                    op: "reading",
                    store: s("bucket"),
                    key: s("k"),
                    message: s("500"),
                },
                Failed,
            ),
            (
                StoreError::Interrupted {
                    store: s("bucket"),
                    key: s("k"),
                    received: 7,
                    attempts: 3,
                    message: s("connection reset"),
                },
                Failed,
            ),
            (
                StoreError::Changed {
                    store: s("bucket"),
                    key: s("k"),
                },
                Failed,
            ),
        ];
        for (err, kind) in cases {
            assert_eq!(err.kind(), kind, "{err}");
        }
    }
}
