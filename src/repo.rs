//! Backups as a store holds them: finding, naming and reading manifests.
//!
//! A backup exists exactly when `<id>/manifest.json` does. Everything that looks for backups
//! (list, restore, verify, export, prune) goes through here, so none of them can mistake a
//! crashed backup's parts for a backup.

use crate::manifest::{FORMAT_VERSION, MANIFEST_NAME, Manifest};
use crate::store::{Store, StoreError, read_all};

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("no backups in {store}")]
    NoBackups { store: String },
    #[error("no backup {id} in {store} (see `d1r2 list --from {store}`)")]
    UnknownBackup { id: String, store: String },
    #[error("backup {id} in {store} is incomplete: it has no manifest, so it was never finished")]
    Incomplete { id: String, store: String },
    #[error("the manifest of backup {id} is unreadable: {reason}")]
    BadManifest { id: String, reason: String },
    #[error(
        "backup {id} has format {format}, newer than this d1r2 reads (up to {FORMAT_VERSION}): upgrade d1r2 to read it"
    )]
    NewerFormat { id: String, format: u32 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RepoError {
    /// Whether the user named something that is not there (exit code 2).
    pub fn is_bad_input(&self) -> bool {
        match self {
            RepoError::NoBackups { .. }
            | RepoError::UnknownBackup { .. }
            | RepoError::Incomplete { .. } => true,
            RepoError::Store(e) => e.is_bad_input(),
            RepoError::BadManifest { .. } | RepoError::NewerFormat { .. } => false,
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
pub async fn manifest(store: &dyn Store, id: &str) -> Result<Manifest, RepoError> {
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
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|e| RepoError::BadManifest {
            id: id.to_string(),
            reason: e.to_string(),
        })?;
    if manifest.format > FORMAT_VERSION {
        return Err(RepoError::NewerFormat {
            id: id.to_string(),
            format: manifest.format,
        });
    }
    Ok(manifest)
}

/// Every complete backup's manifest, oldest first.
pub async fn manifests(store: &dyn Store) -> Result<Vec<Manifest>, RepoError> {
    let mut out = Vec::new();
    for id in backup_ids(store).await? {
        out.push(manifest(store, &id).await?);
    }
    Ok(out)
}

/// Resolves `latest` or an id to a manifest.
pub async fn resolve(store: &dyn Store, selector: &str) -> Result<Manifest, RepoError> {
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
