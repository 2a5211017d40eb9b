//! Backups as a store holds them: finding, naming and reading manifests (as stored: an encrypted
//! backup's is opened with the key by the caller, see [`crate::format::envelope`]).
//!
//! A backup exists exactly when `<id>/manifest.json` does. Everything that looks for backups
//! (list, restore, verify, export, prune) goes through here, so none of them can mistake a
//! crashed backup's parts for a backup.

use crate::error::{Classify, Kind};
use crate::format::envelope::{EnvelopeError, Stored};
use crate::format::manifest::MANIFEST_NAME;
use crate::store::{Store, StoreError, read_all};

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("no backups in {store}")]
    NoBackups { store: String },
    #[error("no backup {id} in {store} (see `d1r2 list --from {store}`)")]
    UnknownBackup { id: String, store: String },
    #[error("backup {id} in {store} is incomplete: it has no manifest, so it was never finished")]
    Incomplete { id: String, store: String },
    #[error(transparent)]
    Manifest(#[from] EnvelopeError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The user named a backup that is not there; a manifest that does not parse or open is a
/// failure.
impl Classify for RepoError {
    fn kind(&self) -> Kind {
        match self {
            RepoError::NoBackups { .. }
            | RepoError::UnknownBackup { .. }
            | RepoError::Incomplete { .. } => Kind::BadInput,
            RepoError::Store(e) => e.kind(),
            RepoError::Manifest(_) => Kind::Failed,
        }
    }
}

/// The ids of every complete backup, oldest first.
pub async fn backup_ids(store: &dyn Store) -> Result<Vec<String>, RepoError> {
    let mut ids: Vec<String> = store
        .list("")
        .await?
        .into_iter()
        .filter_map(|o| {
            let (id, name) = o.key.split_once('/')?;
            (name == MANIFEST_NAME).then(|| id.to_string())
        })
        .collect();
    ids.sort();
    Ok(ids)
}

/// Reads and parses one backup's manifest.
pub async fn manifest(store: &dyn Store, id: &str) -> Result<Stored, RepoError> {
    let key = format!("{id}/{MANIFEST_NAME}");
    let bytes = match read_all(store, &key).await {
        Ok(bytes) => bytes,
        Err(e) if e.is_not_found() => {
            let any = !store.list(&format!("{id}/")).await?.is_empty();
            return Err(if any {
                RepoError::Incomplete {
                    id: id.to_string(),
                    store: store.to_string(),
                }
            } else {
                RepoError::UnknownBackup {
                    id: id.to_string(),
                    store: store.to_string(),
                }
            });
        }
        Err(e) => return Err(e.into()),
    };
    Ok(crate::format::envelope::parse(id, &bytes)?)
}

/// Every complete backup's manifest, oldest first.
pub async fn manifests(store: &dyn Store) -> Result<Vec<Stored>, RepoError> {
    let mut out = Vec::new();
    for id in backup_ids(store).await? {
        out.push(manifest(store, &id).await?);
    }
    Ok(out)
}

/// Resolves `latest` or an id to a manifest.
pub async fn resolve(store: &dyn Store, selector: &str) -> Result<Stored, RepoError> {
    if selector == "latest" {
        let ids = backup_ids(store).await?;
        let Some(id) = ids.last() else {
            return Err(RepoError::NoBackups {
                store: store.to_string(),
            });
        };
        manifest(store, id).await
    } else {
        crate::store::check_key(selector).map_err(|_| RepoError::UnknownBackup {
            id: selector.to_string(),
            store: store.to_string(),
        })?;
        manifest(store, selector).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_its_kind() {
        use crate::error::{Classify, Kind::*};
        let s = String::from;
        let cases = [
            (RepoError::NoBackups { store: s("dir") }, BadInput),
            (
                RepoError::UnknownBackup {
                    id: s("1"),
                    store: s("dir"),
                },
                BadInput,
            ),
            (
                RepoError::Incomplete {
                    id: s("1"),
                    store: s("dir"),
                },
                BadInput,
            ),
            (
                RepoError::Store(StoreError::MissingRoot { store: s("dir") }),
                BadInput,
            ),
            (
                RepoError::Store(StoreError::NotFound {
                    store: s("dir"),
                    key: s("k"),
                }),
                Failed,
            ),
            (
                RepoError::Manifest(EnvelopeError::Unreadable {
                    id: s("1"),
                    reason: s("x"),
                }),
                Failed,
            ),
        ];
        for (err, kind) in cases {
            assert_eq!(err.kind(), kind, "{err}");
        }
    }
}
