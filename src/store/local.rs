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

use super::{ByteStream, ObjectMeta, Store, StoreError, Upload, check_key};

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
        if source.kind() == std::io::ErrorKind::NotFound && op == "reading" {
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
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io("inspecting", key, e)),
        }
    }

    async fn abort_stale_uploads(&self, older_than: DateTime<Utc>) -> Result<usize, StoreError> {
        let root = self.root.clone();
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut removed = 0;
            let mut dirs = vec![root];
            while let Some(dir) = dirs.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(store.io("listing", "", e)),
                };
                for entry in entries.flatten() {
                    let Ok(meta) = entry.metadata() else { continue };
                    if meta.is_dir() {
                        dirs.push(entry.path());
                        continue;
                    }
                    let stale = meta
                        .modified()
                        .map(DateTime::<Utc>::from)
                        .is_ok_and(|m| m < older_than);
                    if stale && entry.file_name().to_string_lossy().starts_with(TEMP_MARKER) {
                        std::fs::remove_file(entry.path()).map_err(|e| {
                            store.io("deleting", &entry.path().display().to_string(), e)
                        })?;
                        removed += 1;
                    }
                }
            }
            Ok(removed)
        })
        .await
        .map_err(|e| StoreError::Io {
            op: "cleaning",
            store: self.to_string(),
            key: String::new(),
            source: std::io::Error::other(e),
        })?
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let mut dirs = vec![root.clone()];
            while let Some(dir) = dirs.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(store.io("listing", &prefix, e)),
                };
                for entry in entries {
                    let entry = entry.map_err(|e| store.io("listing", &prefix, e))?;
                    let path = entry.path();
                    let meta = entry
                        .metadata()
                        .map_err(|e| store.io("listing", &prefix, e))?;
                    let Ok(rel) = path.strip_prefix(&root) else {
                        continue;
                    };
                    let key = rel.to_string_lossy().replace('\\', "/");
                    if meta.is_dir() {
                        if prefix.starts_with(&format!("{key}/"))
                            || key.starts_with(&prefix)
                            || prefix.is_empty()
                            || prefix.starts_with(&key)
                        {
                            dirs.push(path);
                        }
                    } else if key.starts_with(&prefix)
                        && !entry.file_name().to_string_lossy().starts_with(TEMP_MARKER)
                    {
                        out.push(ObjectMeta {
                            key,
                            size: meta.len(),
                            modified: meta
                                .modified()
                                .map(DateTime::<Utc>::from)
                                .unwrap_or_default(),
                        });
                    }
                }
            }
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
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
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.io("deleting", key, e)),
        }
        // Remove directories the deletion emptied, up to the root, as an object store would.
        let mut dir = path.parent().map(Path::to_path_buf);
        while let Some(d) = dir {
            if d == self.root || tokio::fs::remove_dir(&d).await.is_err() {
                break;
            }
            dir = d.parent().map(Path::to_path_buf);
        }
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
