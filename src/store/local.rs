//! A local directory as a store: the embedded default, and what tests and laptops use.
//!
//! Writes go to a hidden temporary file beside the target and are renamed into place after an
//! fsync, so a key either holds a complete object or nothing. Temporary files are invisible to
//! `list`.

use std::fmt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use super::{ByteStream, ObjectMeta, OwnedKey, Store, StoreError, Upload, check_key};

/// Marks in-progress writes; such files are never listed.
pub const TEMP_MARKER: &str = ".d1r2-tmp-";

#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// A store to write to, rooted at `root`. A missing folder is made by the first object
    /// written into it (like `mkdir -p` before a first backup), not here: a backup refused for
    /// bad input leaves no empty folder behind.
    pub fn create(root: &Path) -> Result<Self, StoreError> {
        if root.exists() && !root.is_dir() {
            return Err(StoreError::NotAFolder {
                store: root.display().to_string(),
            });
        }
        Ok(LocalStore {
            root: root.to_path_buf(),
        })
    }

    /// A store rooted at an existing directory (for reading: a typo must not look like an empty
    /// store).
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        if root.exists() && !root.is_dir() {
            return Err(StoreError::NotAFolder {
                store: root.display().to_string(),
            });
        }
        if !root.is_dir() {
            return Err(StoreError::MissingRoot {
                store: root.display().to_string(),
            });
        }
        Ok(LocalStore {
            root: root.to_path_buf(),
        })
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    fn io(&self, op: &'static str, key: &str, source: std::io::Error) -> StoreError {
        if is_missing(&source) && op == "reading" {
            StoreError::NotFound {
                store: self.to_string(),
                key: key.to_string(),
            }
        } else {
            StoreError::Io {
                op,
                store: self.to_string(),
                key: key.to_string(),
                source,
            }
        }
    }

    fn temp_path(&self, path: &Path) -> PathBuf {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let nonce: u64 = rand::random();
        path.with_file_name(format!("{TEMP_MARKER}{nonce:016x}-{name}"))
    }

    /// [`Store::put_new`]: the complete content is written and synced to a temporary file, then
    /// hard-linked to its key, which fails if the key exists (atomic on every local filesystem and
    /// on NFS); the temporary name goes either way. A filesystem without hard links (FAT, some
    /// network mounts) gets an exclusive create (`O_EXCL`) written in place instead: still one
    /// winner, though its content may be seen before it is complete.
    fn create_new(&self, key: &str, path: &Path, data: &[u8]) -> Result<(), StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| self.io("creating directory for", key, e))?;
        }
        let temp = self.temp_path(path);
        if let Err(e) = write_synced(&temp, data) {
            let _ = std::fs::remove_file(&temp);
            return Err(self.io("writing", key, e));
        }
        let linked = std::fs::hard_link(&temp, path);
        let _ = std::fs::remove_file(&temp);
        let result = match linked {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => write_in_place(path, data),
            other => other,
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(StoreError::AlreadyExists {
                    store: self.to_string(),
                    key: key.to_string(),
                })
            }
            Err(e) => Err(self.io("writing", key, e)),
        }
    }

    /// The key of a file or folder at `path` under the root, its names joined by `/` as written
    /// (a `\` in a name stays in the key, which no valid key holds, rather than becoming a `/`).
    fn key_of(&self, path: &Path) -> Option<String> {
        let rel = path.strip_prefix(&self.root).ok()?;
        let names: Option<Vec<_>> = rel
            .components()
            .map(|c| match c {
                std::path::Component::Normal(name) => Some(name.to_string_lossy()),
                _ => None,
            })
            .collect();
        Some(names?.join("/"))
    }

    /// The entries of `dir`, or `None` for a folder that is gone or that this process may not read:
    /// such a folder below the root is someone else's (or was removed meanwhile) and is skipped,
    /// so one stray folder cannot stop a listing; the root itself must be readable.
    fn entries(
        &self,
        dir: &Path,
        op: &'static str,
    ) -> Result<Option<std::fs::ReadDir>, StoreError> {
        match std::fs::read_dir(dir) {
            Ok(entries) => Ok(Some(entries)),
            Err(e) if dir != self.root && is_skippable(&e) => {
                tracing::debug!("skipping {}: {e}", dir.display());
                Ok(None)
            }
            Err(e) => Err(self.io(op, "", e)),
        }
    }

    fn list_blocking(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let mut out = Vec::new();
        let mut dirs = vec![self.root.clone()];
        while let Some(dir) = dirs.pop() {
            let Some(entries) = self.entries(&dir, "listing")? else {
                continue;
            };
            for entry in entries {
                let entry = entry.map_err(|e| self.io("listing", prefix, e))?;
                let path = entry.path();
                let meta = match entry.metadata() {
                    Ok(meta) => meta,
                    Err(e) if is_skippable(&e) => continue,
                    Err(e) => return Err(self.io("listing", prefix, e)),
                };
                let Some(key) = self.key_of(&path) else {
                    continue;
                };
                if meta.is_dir() {
                    if prefix.starts_with(&format!("{key}/")) || key.starts_with(prefix) {
                        dirs.push(path);
                    }
                } else if key.starts_with(prefix)
                    && !entry.file_name().to_string_lossy().starts_with(TEMP_MARKER)
                {
                    out.push(ObjectMeta {
                        key,
                        size: meta.len(),
                        modified: modified(&meta),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// [`Store::abort_stale_uploads`]: removes the temporary files of owned keys and the empty
    /// owned folders older than `older_than`, then the folders that left empty.
    fn clean_stale(&self, older_than: DateTime<Utc>, owned: OwnedKey) -> Result<usize, StoreError> {
        let mut removed = 0;
        let mut dirs = vec![self.root.clone()];
        while let Some(dir) = dirs.pop() {
            let Some(entries) = self.entries(&dir, "cleaning")? else {
                continue;
            };
            let mut empty = true;
            for entry in entries.flatten() {
                empty = false;
                let Ok(meta) = entry.metadata() else { continue };
                let path = entry.path();
                if meta.is_dir() {
                    dirs.push(path);
                    continue;
                }
                let Some(key) = self.key_of(&path).and_then(|k| upload_key(&k)) else {
                    continue;
                };
                if modified(&meta) >= older_than {
                    continue;
                }
                if !owned(&key) {
                    tracing::debug!("leaving {}: not a temporary file of d1r2's", path.display());
                    continue;
                }
                std::fs::remove_file(&path).map_err(|e| self.io("deleting", &key, e))?;
                self.remove_empty_parents(&path);
                removed += 1;
            }
            let old = std::fs::metadata(&dir).is_ok_and(|m| modified(&m) < older_than);
            let folder = self.key_of(&dir).map(|k| format!("{k}/"));
            if empty && old && dir != self.root && folder.is_some_and(|f| owned(&f)) {
                let _ = std::fs::remove_dir(&dir);
                self.remove_empty_parents(&dir);
            }
        }
        Ok(removed)
    }

    /// Removes the folders above `path` that are empty, up to the root, as an object store has no
    /// folders left behind by deletions.
    fn remove_empty_parents(&self, path: &Path) {
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == self.root || std::fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
    }
}

/// Writes `data` to a file at `path`, replacing any, and syncs it.
fn write_synced(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(path)?;
    file.write_all(data)?;
    file.sync_all()
}

/// Creates `path` exclusively (`O_EXCL`) and writes `data` to it; a file this made and could not
/// complete is removed, so the name stays free (a file it did not make is never touched).
fn write_in_place(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    let written = file.write_all(data).and_then(|()| file.sync_all());
    if written.is_err() {
        let _ = std::fs::remove_file(path);
    }
    written
}

/// An error that means the entry is not there for this process to read: gone since it was seen,
/// or not ours to read.
fn is_skippable(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
    )
}

/// An error that means no object is under the key: no such file, or a file where a folder of
/// the key's path would be (someone else's object, which holds no key of ours below it).
fn is_missing(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
    )
}

fn modified(meta: &std::fs::Metadata) -> DateTime<Utc> {
    meta.modified()
        .map(DateTime::<Utc>::from)
        .unwrap_or_default()
}

/// The key a temporary file (`<folder>/.d1r2-tmp-<16 hex>-<name>`) was to be written under, or
/// `None` when `temp_key` is not one.
fn upload_key(temp_key: &str) -> Option<String> {
    let (folder, name) = match temp_key.rsplit_once('/') {
        Some((folder, name)) => (Some(folder), name),
        None => (None, temp_key),
    };
    let rest = name.strip_prefix(TEMP_MARKER)?;
    let (nonce, target) = rest.split_at_checked(16)?;
    let target = target.strip_prefix('-')?;
    if !nonce.bytes().all(|b| b.is_ascii_hexdigit()) || target.is_empty() {
        return None;
    }
    Some(match folder {
        Some(folder) => format!("{folder}/{target}"),
        None => target.to_string(),
    })
}

impl fmt::Display for LocalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.root.display())
    }
}

#[async_trait]
impl Store for LocalStore {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        let mut upload = self.put_stream(key).await?;
        upload.write(data).await?;
        upload.finish(None).await
    }

    async fn put_new(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        let path = self.path(key)?;
        let store = self.clone();
        let key = key.to_string();
        tokio::task::spawn_blocking(move || store.create_new(&key, &path, &data))
            .await
            .map_err(|e| StoreError::Io {
                op: "writing",
                store: self.to_string(),
                key: String::new(),
                source: std::io::Error::other(e),
            })?
    }

    async fn put_stream(&self, key: &str) -> Result<Box<dyn Upload>, StoreError> {
        let path = self.path(key)?;
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| self.io("creating directory for", key, e))?;
        }
        let temp = self.temp_path(&path);
        let file = tokio::fs::File::create(&temp)
            .await
            .map_err(|e| self.io("writing", key, e))?;
        Ok(Box::new(LocalUpload {
            store: self.clone(),
            key: key.to_string(),
            temp: Some(temp),
            path,
            file: Some(file),
        }))
    }

    async fn get(&self, key: &str) -> Result<ByteStream, StoreError> {
        let path = self.path(key)?;
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| self.io("reading", key, e))?;
        let store = self.clone();
        let key = key.to_string();
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024)
            .map(move |r| r.map_err(|e| store.io("reading", &key, e)));
        Ok(stream.boxed())
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        let path = self.path(key)?;
        match tokio::fs::metadata(&path).await {
            Ok(meta) if meta.is_file() => Ok(Some(ObjectMeta {
                key: key.to_string(),
                size: meta.len(),
                modified: meta
                    .modified()
                    .map(DateTime::<Utc>::from)
                    .unwrap_or_default(),
            })),
            Ok(_) => Ok(None),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(self.io("inspecting", key, e)),
        }
    }

    async fn abort_stale_uploads(
        &self,
        older_than: DateTime<Utc>,
        owned: OwnedKey,
    ) -> Result<usize, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.clean_stale(older_than, owned))
            .await
            .map_err(|e| StoreError::Io {
                op: "cleaning",
                store: self.to_string(),
                key: String::new(),
                source: std::io::Error::other(e),
            })?
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let store = self.clone();
        let prefix = prefix.to_string();
        tokio::task::spawn_blocking(move || store.list_blocking(&prefix))
            .await
            .map_err(|e| StoreError::Remote {
                op: "listing",
                store: self.to_string(),
                key: String::new(),
                message: e.to_string(),
            })?
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if is_missing(&e) => {}
            Err(e) => return Err(self.io("deleting", key, e)),
        }
        // Remove directories the deletion emptied, up to the root, as an object store would.
        self.remove_empty_parents(&path);
        Ok(())
    }
}

struct LocalUpload {
    store: LocalStore,
    key: String,
    temp: Option<PathBuf>,
    path: PathBuf,
    file: Option<tokio::fs::File>,
}

#[async_trait]
impl Upload for LocalUpload {
    async fn write(&mut self, data: Bytes) -> Result<(), StoreError> {
        let file = self
            .file
            .as_mut()
            .expect("an upload is written only before it ends");
        file.write_all(&data)
            .await
            .map_err(|e| self.store.io("writing", &self.key, e))
    }

    /// A local file is not checked as it is written, so the digest is not needed.
    async fn finish(mut self: Box<Self>, _sha256: Option<[u8; 32]>) -> Result<(), StoreError> {
        let mut file = self.file.take().expect("an upload ends once");
        let temp = self.temp.take().expect("an upload ends once");
        let result = async {
            file.flush().await?;
            file.sync_all().await?;
            drop(file);
            tokio::fs::rename(&temp, &self.path).await
        }
        .await;
        if let Err(e) = result {
            let _ = std::fs::remove_file(&temp);
            return Err(self.store.io("writing", &self.key, e));
        }
        Ok(())
    }

    async fn abort(mut self: Box<Self>) -> Result<(), StoreError> {
        self.file.take();
        if let Some(temp) = self.temp.take() {
            let _ = tokio::fs::remove_file(temp).await;
        }
        Ok(())
    }
}

impl Drop for LocalUpload {
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take() {
            let _ = std::fs::remove_file(temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::upload_key;

    #[test]
    fn temporary_names_table() {
        for (temp, want) in [
            (
                "20261124T221500Z/data/.d1r2-tmp-00000000deadbeef-0000.sql.gz",
                Some("20261124T221500Z/data/0000.sql.gz"),
            ),
            (
                ".d1r2-tmp-0123456789abcdef-d1r2-store.json",
                Some("d1r2-store.json"),
            ),
            ("a/.d1r2-tmp-0123456789abcdef-", None),
            ("a/.d1r2-tmp-0123456789abcdeX-x", None),
            ("a/.d1r2-tmp-0123-x", None),
            ("a/d1r2-tmp-0123456789abcdef-x", None),
            ("a/x.sql.gz", None),
        ] {
            assert_eq!(upload_key(temp).as_deref(), want, "{temp}");
        }
    }
}
