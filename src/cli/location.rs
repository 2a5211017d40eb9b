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

pub(crate) fn parse_store(text: &str) -> Result<StoreLocation> {
    for (scheme, r2) in [("r2://", true), ("s3://", false)] {
        if let Some(rest) = text.strip_prefix(scheme) {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad_input(format!("{text}: expected {scheme}BUCKET/PREFIX")));
            }
            let bucket = bucket.to_string();
            let prefix = prefix.trim_matches('/').to_string();
            return Ok(if r2 {
                StoreLocation::R2 { bucket, prefix }
            } else {
                StoreLocation::S3 { bucket, prefix }
            });
        }
    }
    if let Some(path) = text.strip_prefix("file:") {
        Ok(StoreLocation::Local(PathBuf::from(path)))
    } else if has_scheme(text) {
        Err(bad_input(format!(
            "{text}: unknown destination; use r2://BUCKET/PREFIX, s3://BUCKET/PREFIX, file:DIR or a path"
        )))
    } else {
        Ok(StoreLocation::Local(PathBuf::from(text)))
    }
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
            Ok(Arc::new(S3Store::connect(config).await))
        }
        StoreLocation::S3 { bucket, prefix } => Ok(Arc::new(
            S3Store::connect(S3Config::s3(bucket, prefix)).await,
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
            ("r2:///x", None),
            ("gs://b", None),
        ] {
            assert_eq!(parse_store(text).ok(), want, "{text}");
        }
    }
}
