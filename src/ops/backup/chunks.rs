//! A chunked backup's chunks: which ones each store holds already, learnt from the manifests of
//! its latest backups (never a request per chunk), and storing the others, each by a conditional
//! create under its address, so a chunk another backup wrote meanwhile is simply there.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::future::try_join_all;

use crate::error::{Error, Result, failed};
use crate::format::chunk::{ChunkKeys, ChunkSizes, chunk_key};
use crate::format::codec::{Compression, PartEncoder};
use crate::format::crypto::{Key, PartKey};
use crate::format::lock::{self, LockKind};
use crate::format::manifest::{CHUNKED_FORMAT, ObjectEntry, ObjectKind};
use crate::format::repo;
use crate::store::{Store, StoreError};

/// How many of a store's latest backups a backup reads to learn its chunks: the newest one
/// holds nearly all a new backup of the same database shares; two more cover a backup of
/// another database into the same prefix in between.
const MANIFESTS_READ: usize = 3;

/// What a chunked backup cuts and stores its tables' rows with.
pub(crate) struct Chunking {
    pub(crate) keys: ChunkKeys,
    pub(crate) sizes: ChunkSizes,
    compression: Compression,
    encryption: Option<Key>,
    /// Per store, the chunks it holds (address → stored bytes), as far as this run knows.
    known: Vec<Mutex<HashMap<String, u64>>>,
    /// Chunks compressing at once, one a core: a page cut into small chunks would otherwise
    /// start a blocking thread for each, and every such thread keeps a compressor of its own.
    compressing: tokio::sync::Semaphore,
    /// Chunks being created in the stores at once: each request holds its body and the client's
    /// state, and at 64 KiB a page is dozens of chunks.
    uploading: tokio::sync::Semaphore,
}

/// How many chunks a backup creates in the stores at once, at most.
const UPLOADS: usize = 8;

impl Chunking {
    /// Learns which chunks each store holds from its latest backups' manifests.
    pub(crate) async fn new(
        stores: &[Arc<dyn Store>],
        compression: Compression,
        encryption: Option<Key>,
        target: usize,
    ) -> Result<Self> {
        let known = try_join_all(
            stores
                .iter()
                .map(|s| known_chunks(s.as_ref(), compression, encryption.as_ref())),
        )
        .await?;
        Ok(Chunking {
            keys: ChunkKeys::new(encryption.as_ref()),
            sizes: ChunkSizes::around(target),
            compression,
            encryption,
            known: known.into_iter().map(Mutex::new).collect(),
            compressing: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            ),
            uploading: tokio::sync::Semaphore::new(UPLOADS),
        })
    }

    /// Stores the chunk `sql` (its address `address`, holding `rows` rows of `table`) in every
    /// store that does not hold it yet; gives back its manifest entry.
    pub(crate) async fn store(
        &self,
        stores: &[Arc<dyn Store>],
        table: &str,
        sql: String,
        address: String,
        rows: u64,
    ) -> Result<ObjectEntry> {
        let key = chunk_key(&address, self.compression);
        let sql_bytes = sql.len() as u64;
        let mut bytes = None;
        let mut missing = Vec::new();
        for (i, known) in self.known.iter().enumerate() {
            match lock(known).get(&address) {
                Some(b) => bytes = Some(*b),
                None => missing.push(i),
            }
        }
        if !missing.is_empty() {
            let (compression, part_key) = (
                self.compression,
                self.encryption
                    .as_ref()
                    .map(|k| PartKey::chunk(k, &address)),
            );
            let permit = self.compressing.acquire().await.expect("never closed");
            let stored = tokio::task::spawn_blocking(move || {
                let mut encoder = PartEncoder::new(compression, part_key.as_ref())?;
                encoder.write(sql.as_bytes())?;
                let first = encoder.take();
                let (last, _) = encoder.finish()?;
                Ok::<_, Error>(Bytes::from([first, last].concat()))
            })
            .await??;
            drop(permit);
            let len = stored.len() as u64;
            let _uploading = self.uploading.acquire().await.expect("never closed");
            try_join_all(missing.iter().map(|i| {
                let (store, stored, key) = (&stores[*i], stored.clone(), &key);
                async move {
                    match store.put_new(key, stored).await {
                        Ok(()) | Err(StoreError::AlreadyExists { .. }) => Ok(()),
                        Err(e) => Err(e),
                    }
                }
            }))
            .await?;
            for i in missing {
                lock(&self.known[i]).insert(address.clone(), len);
            }
            bytes = bytes.or(Some(len));
        }
        Ok(ObjectEntry {
            key,
            kind: ObjectKind::Data,
            table: Some(table.to_string()),
            rows,
            bytes: bytes.unwrap_or_default(),
            sha256: String::new(),
            sql_bytes,
            chunk: Some(address),
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The chunks `store`'s latest backups name that a backup compressed as `compression` and
/// encrypted with `key` (or plain) can name too: a chunk of another key, or compressed otherwise,
/// is another object. A manifest that cannot be read or opened teaches nothing and is skipped.
async fn known_chunks(
    store: &dyn Store,
    compression: Compression,
    key: Option<&Key>,
) -> Result<HashMap<String, u64>> {
    let mut known = HashMap::new();
    let ids = repo::backup_ids(store).await?;
    for id in ids.iter().rev().take(MANIFESTS_READ) {
        let stored = match repo::manifest(store, id).await {
            Ok(stored) => stored,
            Err(e) => {
                tracing::debug!("not reusing the chunks of backup {id}: {e}");
                continue;
            }
        };
        let fingerprint = stored.encryption().map(|e| e.key_fingerprint.clone());
        if fingerprint != key.map(Key::fingerprint) {
            continue;
        }
        let manifest = match stored.open(key) {
            Ok(m) if m.format >= CHUNKED_FORMAT && m.compression == compression => m,
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!("not reusing the chunks of backup {id}: {e}");
                continue;
            }
        };
        for object in manifest.objects {
            if let Some(address) = object.chunk {
                known.insert(address, object.bytes);
            }
        }
    }
    tracing::debug!("{store} holds {} chunks already", known.len());
    Ok(known)
}

/// How long a chunked backup waits for a prune collecting chunks to finish.
const PRUNE_WAIT: std::time::Duration = std::time::Duration::from_secs(10 * 60);

/// A chunked backup's locks, one in every store ([`crate::format::lock`]), rewritten while the
/// backup runs.
pub(crate) struct Held {
    stores: Vec<Arc<dyn Store>>,
    keys: Vec<String>,
    refresher: tokio::task::JoinHandle<()>,
}

impl Held {
    /// Creates the backup's lock in every store, then waits while any holds a live prune lock:
    /// from then on no prune deletes a chunk the backup finds named or stored.
    pub(crate) async fn acquire(stores: &[Arc<dyn Store>]) -> Result<Held> {
        let mut keys = Vec::new();
        for store in stores {
            match lock::create(store.as_ref(), LockKind::Backup).await {
                Ok(key) => keys.push(key),
                Err(e) => {
                    release(stores, &keys).await;
                    return Err(e.into());
                }
            }
        }
        let stores = stores.to_vec();
        let refresher = tokio::spawn({
            let (stores, keys) = (stores.clone(), keys.clone());
            async move {
                loop {
                    tokio::time::sleep(lock::REFRESH_EVERY).await;
                    for (store, key) in stores.iter().zip(&keys) {
                        if let Err(e) = lock::refresh(store.as_ref(), key).await {
                            tracing::warn!("could not refresh the backup's lock in {store}: {e}");
                        }
                    }
                }
            }
        });
        let held = Held {
            stores,
            keys,
            refresher,
        };
        if let Err(e) = held.wait_for_prunes().await {
            held.release().await;
            return Err(e);
        }
        Ok(held)
    }

    async fn wait_for_prunes(&self) -> Result<()> {
        let started = std::time::Instant::now();
        let mut pause = std::time::Duration::from_secs(1);
        for store in &self.stores {
            loop {
                let (live, _) =
                    lock::locks(store.as_ref(), LockKind::Prune, None, chrono::Utc::now()).await?;
                if live.is_empty() {
                    break;
                }
                if started.elapsed() > PRUNE_WAIT {
                    return Err(failed(format!(
                        "a prune has been collecting chunks in {store} for over {} minutes ({}); run the backup again once it is done",
                        PRUNE_WAIT.as_secs() / 60,
                        live[0].key
                    )));
                }
                tracing::info!("waiting for the prune collecting chunks in {store} to finish");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(15));
            }
        }
        Ok(())
    }

    /// Stops refreshing and deletes the locks (a lock left behind goes stale).
    pub(crate) async fn release(self) {
        self.refresher.abort();
        release(&self.stores, &self.keys).await;
    }
}

async fn release(stores: &[Arc<dyn Store>], keys: &[String]) {
    for (store, key) in stores.iter().zip(keys) {
        if let Err(e) = store.delete(key).await {
            tracing::warn!("leaving the backup's lock {key} in {store} to go stale: {e}");
        }
    }
}
