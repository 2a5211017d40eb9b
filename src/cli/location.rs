//! The `SRC` and `DEST` strings of the command line, parsed once, and the sources and stores
//! they open.

use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{Result, bad_input};
use crate::remote::cloudflare;
use crate::source::Source;
use crate::source::d1::D1Source;
use crate::source::sqlite::SqliteSource;
use crate::store::Store;
use crate::store::local::LocalStore;
use crate::store::s3::{S3Config, S3Store};

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SourceLocation {
    Sqlite(PathBuf),
    D1(String),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StoreLocation {
    Local(PathBuf),
    R2 { bucket: String, prefix: String },
    S3 { bucket: String, prefix: String },
}

pub(crate) fn parse_source(text: &str) -> Result<SourceLocation> {
    if let Some(db) = text.strip_prefix("d1://") {
        if db.is_empty() || db.contains('/') {
            return Err(bad_input(format!(
                "{text}: expected d1://DATABASE (an id or a name)"
            )));
        }
        Ok(SourceLocation::D1(db.to_string()))
    } else if let Some(path) = text.strip_prefix("sqlite:") {
        Ok(SourceLocation::Sqlite(PathBuf::from(path)))
    } else if has_scheme(text) {
        Err(bad_input(format!(
            "{text}: unknown source; use d1://DATABASE, sqlite:PATH or a path"
        )))
    } else {
        Ok(SourceLocation::Sqlite(PathBuf::from(text)))
    }
}

/// Why a `DEST` string names no place d1r2 will write to. Every case is refused before anything
/// is created, so a typo never becomes a folder or a prefix of its own.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LocationError {
    #[error(
        "the destination is empty; use r2://BUCKET/PREFIX, s3://BUCKET/PREFIX, file:DIR or a path"
    )]
    Empty,
    #[error("{text}: expected {scheme}BUCKET/PREFIX")]
    NoBucket { text: String, scheme: &'static str },
    #[error(
        "{text}: a destination may not have empty, `.` or `..` segments; name the folder or \
         prefix itself (for example backups/app)"
    )]
    Segments { text: String },
    #[error(
        "{text}: a file URL names a folder on this machine, as file:///PATH (or file:DIR, or a \
         bare path); host {host:?} is not this machine"
    )]
    RemoteHost { text: String, host: String },
    #[error("{text}: not a valid file URL ({reason}); use file:///PATH, file:DIR or a bare path")]
    BadFileUrl { text: String, reason: String },
    #[error(
        "{text}: unknown destination; use r2://BUCKET/PREFIX, s3://BUCKET/PREFIX, file:DIR or a path"
    )]
    UnknownScheme { text: String },
}

impl crate::error::Classify for LocationError {
    fn kind(&self) -> crate::error::Kind {
        match self {
            LocationError::Empty
            | LocationError::NoBucket { .. }
            | LocationError::Segments { .. }
            | LocationError::RemoteHost { .. }
            | LocationError::BadFileUrl { .. }
            | LocationError::UnknownScheme { .. } => crate::error::Kind::BadInput,
        }
    }
}

pub(crate) fn parse_store(text: &str) -> Result<StoreLocation> {
    Ok(store_location(text)?)
}

/// `r2://` and `s3://` take a bucket and a prefix of plain segments; `file://` follows RFC 8089
/// (an empty host or `localhost`, then an absolute, percent-encoded path); `file:DIR` and a bare
/// path are paths as typed. A `..` segment is refused everywhere (what it names depends on
/// symbolic links and the working directory), and a `.` segment everywhere but at the start of
/// a relative path (`./backups`, the shell's "here").
fn store_location(text: &str) -> std::result::Result<StoreLocation, LocationError> {
    if text.trim().is_empty() {
        return Err(LocationError::Empty);
    }
    for (scheme, r2) in [("r2://", true), ("s3://", false)] {
        if let Some(rest) = text.strip_prefix(scheme) {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(LocationError::NoBucket {
                    text: text.to_string(),
                    scheme,
                });
            }
            let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
            if !prefix.is_empty() && !plain_segments(prefix.split('/')) {
                return Err(LocationError::Segments {
                    text: text.to_string(),
                });
            }
            let (bucket, prefix) = (bucket.to_string(), prefix.to_string());
            return Ok(if r2 {
                StoreLocation::R2 { bucket, prefix }
            } else {
                StoreLocation::S3 { bucket, prefix }
            });
        }
    }
    let path = if text.starts_with("file://") {
        file_url_path(text)?
    } else if let Some(path) = text.strip_prefix("file:") {
        PathBuf::from(path)
    } else if has_scheme(text) {
        return Err(LocationError::UnknownScheme {
            text: text.to_string(),
        });
    } else {
        PathBuf::from(text)
    };
    local_path(text, path)
}

/// A local folder's path, checked: not empty, no `..`, no `.` but a leading one.
fn local_path(text: &str, path: PathBuf) -> std::result::Result<StoreLocation, LocationError> {
    if path.as_os_str().is_empty() {
        return Err(LocationError::Empty);
    }
    let raw = path.to_string_lossy();
    let after_here = raw.strip_prefix("./").unwrap_or(&raw);
    if raw != "." && after_here.split('/').any(|s| s == "." || s == "..") {
        return Err(LocationError::Segments {
            text: text.to_string(),
        });
    }
    Ok(StoreLocation::Local(path))
}

/// The path of an RFC 8089 `file://` URL on this machine.
fn file_url_path(text: &str) -> std::result::Result<PathBuf, LocationError> {
    let after = &text["file://".len()..];
    let Some(slash) = after.find('/') else {
        return Err(LocationError::Empty);
    };
    // A URL parser drops `..` and `.` (also percent-encoded) quietly; they are refused as
    // written instead.
    let segments = after[slash + 1..].trim_end_matches('/');
    let dotted = |s: &str| {
        matches!(
            s.to_ascii_lowercase().replace("%2e", ".").as_str(),
            "." | ".."
        )
    };
    if !segments.is_empty() && segments.split('/').any(|s| s.is_empty() || dotted(s)) {
        return Err(LocationError::Segments {
            text: text.to_string(),
        });
    }
    let url = url::Url::parse(text).map_err(|e| LocationError::BadFileUrl {
        text: text.to_string(),
        reason: e.to_string(),
    })?;
    match url.host_str() {
        None | Some("") | Some("localhost") => {}
        Some(host) => {
            return Err(LocationError::RemoteHost {
                text: text.to_string(),
                host: host.to_string(),
            });
        }
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(LocationError::BadFileUrl {
            text: text.to_string(),
            reason: "it has a query or a fragment".to_string(),
        });
    }
    url.to_file_path().map_err(|()| LocationError::BadFileUrl {
        text: text.to_string(),
        reason: "no absolute path".to_string(),
    })
}

/// Whether every segment names something: none empty, none `.` or `..` (a trailing `/` is
/// allowed by the callers before they ask).
fn plain_segments<'a>(mut segments: impl Iterator<Item = &'a str>) -> bool {
    segments.all(|s| !s.is_empty() && s != "." && s != "..")
}

fn has_scheme(text: &str) -> bool {
    text.split_once("://").is_some_and(|(scheme, _)| {
        !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric())
    })
}

/// Opens a source for reading.
pub(crate) async fn open_source(location: &SourceLocation) -> Result<Box<dyn Source>> {
    match location {
        SourceLocation::Sqlite(path) => Ok(Box::new(SqliteSource::open(path)?)),
        SourceLocation::D1(database) => {
            let api = cloudflare::Api::from_env(&env_var)?;
            Ok(Box::new(D1Source::connect(api, database).await?))
        }
    }
}

/// Opens a store; `create` makes a missing local directory (for writing), otherwise a missing
/// one is bad input (for reading).
pub(crate) async fn open_store(location: &StoreLocation, create: bool) -> Result<Arc<dyn Store>> {
    match location {
        StoreLocation::Local(path) if create => Ok(Arc::new(LocalStore::create(path)?)),
        StoreLocation::Local(path) => Ok(Arc::new(LocalStore::open(path)?)),
        StoreLocation::R2 { bucket, prefix } => {
            let config = S3Config::r2(bucket, prefix, env_var).map_err(bad_input)?;
            Ok(Arc::new(S3Store::connect(config).await?))
        }
        StoreLocation::S3 { bucket, prefix } => Ok(Arc::new(
            S3Store::connect(S3Config::s3(bucket, prefix)).await?,
        )),
    }
}

/// A set, non-empty environment variable.
pub(crate) fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_table() {
        for (text, want) in [
            ("d1://my-db", Some(SourceLocation::D1("my-db".into()))),
            (
                "sqlite:data/app.db",
                Some(SourceLocation::Sqlite("data/app.db".into())),
            ),
            ("app.db", Some(SourceLocation::Sqlite("app.db".into()))),
            (
                "./dir/x.sqlite",
                Some(SourceLocation::Sqlite("./dir/x.sqlite".into())),
            ),
            ("d1://", None),
            ("http://x", None),
        ] {
            assert_eq!(parse_source(text).ok(), want, "{text}");
        }
    }

    #[test]
    fn every_error_has_its_kind() {
        use crate::error::{Classify, Kind::BadInput};
        let text = || "x".to_string();
        for err in [
            LocationError::Empty,
            LocationError::NoBucket {
                text: text(),
                scheme: "s3://",
            },
            LocationError::Segments { text: text() },
            LocationError::RemoteHost {
                text: text(),
                host: text(),
            },
            LocationError::BadFileUrl {
                text: text(),
                reason: text(),
            },
            LocationError::UnknownScheme { text: text() },
        ] {
            assert_eq!(err.kind(), BadInput, "{err}");
        }
    }

    #[test]
    fn stores_table() {
        let s3 = |b: &str, p: &str| StoreLocation::S3 {
            bucket: b.into(),
            prefix: p.into(),
        };
        let r2 = |b: &str, p: &str| StoreLocation::R2 {
            bucket: b.into(),
            prefix: p.into(),
        };
        for (text, want) in [
            (
                "r2://bucket/backups/prod",
                Some(r2("bucket", "backups/prod")),
            ),
            ("r2://bucket", Some(r2("bucket", ""))),
            ("s3://b/p/", Some(s3("b", "p"))),
            ("file:/tmp/x", Some(StoreLocation::Local("/tmp/x".into()))),
            ("backups", Some(StoreLocation::Local("backups".into()))),
            ("./backups", Some(StoreLocation::Local("./backups".into()))),
            (".", Some(StoreLocation::Local(".".into()))),
            ("/srv/b/", Some(StoreLocation::Local("/srv/b/".into()))),
            ("file:dir/sub", Some(StoreLocation::Local("dir/sub".into()))),
            ("file:///srv/b", Some(StoreLocation::Local("/srv/b".into()))),
            (
                "file:///srv/b/",
                Some(StoreLocation::Local("/srv/b/".into())),
            ),
            (
                "file://localhost/srv/b",
                Some(StoreLocation::Local("/srv/b".into())),
            ),
            (
                "file:///my%20backups",
                Some(StoreLocation::Local("/my backups".into())),
            ),
            ("r2:///x", None),
            ("gs://b", None),
            ("", None),
            ("  ", None),
            ("file:", None),
            ("file://", None),
            ("file://x/y", None),
            ("file://host.example/srv", None),
            ("file:///srv/../etc", None),
            ("file:///srv/%2E%2e/etc", None),
            ("file:///srv/./b", None),
            ("file:///srv//b", None),
            ("file:///srv/b?x=1", None),
            ("file:a/../b", None),
            ("s3://b/../x", None),
            ("s3://b/p/./x", None),
            ("s3://b/p//x", None),
            ("s3://b//p", None),
            ("r2://b/..", None),
            ("a/../b", None),
            ("../b", None),
            ("a/./b", None),
            ("a/..", None),
        ] {
            assert_eq!(parse_store(text).ok(), want, "{text}");
        }
    }
}
