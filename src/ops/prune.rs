//! Removing what a retention policy does not keep, and what crashed backups left behind.
//!
//! The prefix is shared ground: prune runs only where the store marker says a backup wrote, and
//! deletes only keys d1r2 writes in folders named by backup ids (see [`repo`]); another
//! program's files, a nested store, a folder marker are never touched. Order matters for anyone
//! reading the store at the same time, and for a prune that is itself interrupted: a backup's
//! manifest is deleted first, so from that moment no command sees the backup; then its parts;
//! its claim last. Backup folders with no manifest are left alone for a day (a backup may be
//! writing them right now), then emptied; unfinished uploads of d1r2's keys, its temporary files
//! and its empty folders older than a day go too.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, TimeDelta, Utc};

use crate::error::{Result, bad_input};
use crate::format::chunk::{CHUNKS_PREFIX, chunk_address};
use crate::format::lock::{self, LockKind};
use crate::format::manifest::MANIFEST_NAME;
use crate::format::repo;
use crate::ops::retention::{self, Decision, KeepPolicy};
use crate::store::{ObjectMeta, Store};

/// How long parts without a manifest are left alone.
pub(crate) const ORPHAN_AGE: TimeDelta = TimeDelta::days(1);

#[derive(Debug, Clone, Default)]
pub(crate) struct PruneOutcome {
    /// Every backup, newest first, with the decision.
    pub plan: Vec<Decision>,
    /// Backup folders without a manifest older than a day (removed unless a dry run).
    pub orphans: Vec<String>,
    /// Unfinished uploads aborted.
    pub aborted_uploads: usize,
    pub dry_run: bool,
    /// What became of the chunks no backup kept names.
    pub chunks: Chunks,
}

/// The chunks no remaining backup names: collected, left because a backup was running, or (a
/// dry run) what collecting them would free.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) enum Chunks {
    /// The store holds no chunk.
    #[default]
    None,
    Freed {
        chunks: usize,
        bytes: u64,
    },
    WouldFree {
        chunks: usize,
        bytes: u64,
    },
    /// A backup holds a live lock: it may name chunks no manifest names yet.
    Left {
        lock: String,
    },
}

impl PruneOutcome {
    pub(crate) fn kept(&self) -> impl Iterator<Item = &Decision> {
        self.plan.iter().filter(|d| d.keep)
    }

    pub(crate) fn removed(&self) -> impl Iterator<Item = &Decision> {
        self.plan.iter().filter(|d| !d.keep)
    }

    /// The plan as a table: ID, CREATED, ACTION, REASONS.
    pub(crate) fn table(&self) -> String {
        let mut text = format!(
            "{:<22}  {:<20}  {:<6}  REASONS\n",
            "ID", "CREATED (UTC)", "ACTION"
        );
        for d in &self.plan {
            text.push_str(&format!(
                "{:<22}  {:<20}  {:<6}  {}\n",
                d.id,
                d.created.format("%Y-%m-%d %H:%M:%S"),
                if d.keep { "keep" } else { "remove" },
                d.reasons.join(", ")
            ));
        }
        match &self.chunks {
            Chunks::None => {}
            Chunks::Freed { chunks, bytes } => text.push_str(&format!(
                "chunks no backup names: {chunks} removed ({bytes} bytes freed)\n"
            )),
            Chunks::WouldFree { chunks, bytes } => text.push_str(&format!(
                "chunks no kept backup names: {chunks} would be removed ({bytes} bytes freed)\n"
            )),
            Chunks::Left { lock } => text.push_str(&format!(
                "chunks not collected this time: a backup is running ({lock})\n"
            )),
        }
        for o in &self.orphans {
            text.push_str(&format!(
                "{o:<22}  {:<20}  remove  incomplete (no manifest, older than a day)\n",
                "-"
            ));
        }
        text
    }
}

/// Applies `policy` to the backups in `store` at time `now`; with `dry_run`, only decides. A
/// store without the marker is refused before anything is read.
pub(crate) async fn prune(
    store: &dyn Store,
    policy: &KeepPolicy,
    dry_run: bool,
    now: DateTime<Utc>,
) -> Result<PruneOutcome> {
    repo::check_marker(store).await?;
    let manifests = repo::manifests(store).await?;
    let backups: Vec<(String, DateTime<Utc>)> = manifests
        .iter()
        .map(|m| (m.id().to_string(), m.created()))
        .collect();
    let plan = retention::plan(&backups, policy).map_err(bad_input)?;
    let folders = backup_folders(&store.list("").await?);
    let complete: BTreeSet<&str> = backups.iter().map(|(id, _)| id.as_str()).collect();
    let orphans = orphans(&folders, &complete, now - ORPHAN_AGE);

    let mut outcome = PruneOutcome {
        plan,
        orphans,
        aborted_uploads: 0,
        dry_run,
        chunks: Chunks::None,
    };
    if dry_run {
        let kept: BTreeSet<&str> = outcome.kept().map(|d| d.id.as_str()).collect();
        let named = manifests
            .iter()
            .filter(|m| kept.contains(m.id()))
            .flat_map(|m| m.chunk_addresses())
            .collect();
        let garbage = garbage(&store.list(CHUNKS_PREFIX).await?, &named);
        if !garbage.is_empty() || !named.is_empty() {
            outcome.chunks = Chunks::WouldFree {
                chunks: garbage.len(),
                bytes: garbage.iter().map(|o| o.size).sum(),
            };
        }
        return Ok(outcome);
    }
    for decision in outcome.plan.iter().filter(|d| !d.keep) {
        delete_backup(store, &decision.id, &folders).await?;
        tracing::info!("removed backup {}", decision.id);
    }
    for id in &outcome.orphans {
        delete_backup(store, id, &folders).await?;
        tracing::info!("removed the parts of unfinished backup {id}");
    }
    outcome.aborted_uploads = store
        .abort_stale_uploads(now - ORPHAN_AGE, repo::is_owned_upload)
        .await?;
    outcome.chunks = collect_chunks(store).await?;
    Ok(outcome)
}

/// Deletes the chunks no backup names, under a prune lock, unless a backup holds a live lock
/// ([`crate::format::lock`]); stale locks are removed. The manifests are read after the lock is
/// taken, so a backup that finished meanwhile keeps its chunks.
async fn collect_chunks(store: &dyn Store) -> Result<Chunks> {
    if store.list(CHUNKS_PREFIX).await?.is_empty() {
        return Ok(Chunks::None);
    }
    let mine = lock::create(store, LockKind::Prune).await?;
    let result = collect_locked(store, &mine).await;
    if let Err(e) = store.delete(&mine).await {
        tracing::warn!("leaving prune's lock {mine} to go stale: {e}");
    }
    result
}

async fn collect_locked(store: &dyn Store, mine: &str) -> Result<Chunks> {
    let (live, stale) = lock::locks(store, LockKind::Backup, None, Utc::now()).await?;
    let (_, stale_prunes) = lock::locks(store, LockKind::Prune, Some(mine), Utc::now()).await?;
    for old in stale.iter().chain(&stale_prunes) {
        store.delete(&old.key).await?;
        tracing::info!("removed the stale lock {}", old.key);
    }
    if let Some(running) = live.first() {
        tracing::info!(
            "not collecting chunks: a backup is running ({})",
            running.key
        );
        return Ok(Chunks::Left {
            lock: running.key.clone(),
        });
    }
    let named: BTreeSet<String> = repo::manifests(store)
        .await?
        .iter()
        .flat_map(|m| m.chunk_addresses())
        .collect();
    let garbage = garbage(&store.list(CHUNKS_PREFIX).await?, &named);
    let mut bytes = 0;
    for chunk in &garbage {
        store.delete(&chunk.key).await?;
        bytes += chunk.size;
    }
    tracing::info!("removed {} chunks no backup names", garbage.len());
    Ok(Chunks::Freed {
        chunks: garbage.len(),
        bytes,
    })
}

/// The chunks among `listed` whose address no backup names: only keys that are chunks as d1r2
/// names them, so a foreign object under `chunks/` is never one.
fn garbage(listed: &[ObjectMeta], named: &BTreeSet<String>) -> Vec<ObjectMeta> {
    listed
        .iter()
        .filter(|o| chunk_address(&o.key).is_some_and(|a| !named.contains(a)))
        .cloned()
        .collect()
}

/// A backup folder as listed: the keys d1r2 writes there (relative to the folder) and when the
/// newest of them was written.
#[derive(Debug, Clone, PartialEq)]
struct Folder {
    keys: Vec<String>,
    newest: DateTime<Utc>,
}

/// The backup folders among `objects`, by id, holding only the keys d1r2 writes: everything
/// else (other folders, nested stores, stray keys inside a backup's folder) is not there to
/// be deleted.
fn backup_folders(objects: &[ObjectMeta]) -> BTreeMap<String, Folder> {
    let mut folders: BTreeMap<String, Folder> = BTreeMap::new();
    for object in objects {
        let Some((id, rel)) = repo::backup_key(&object.key) else {
            continue;
        };
        let folder = folders.entry(id.to_string()).or_insert(Folder {
            keys: Vec::new(),
            newest: object.modified,
        });
        folder.keys.push(rel.to_string());
        folder.newest = folder.newest.max(object.modified);
    }
    folders
}

/// The folders without a manifest whose newest key is older than `cutoff`: a backup that never
/// finished (one still running writes a part every few seconds).
fn orphans(
    folders: &BTreeMap<String, Folder>,
    complete: &BTreeSet<&str>,
    cutoff: DateTime<Utc>,
) -> Vec<String> {
    folders
        .iter()
        .filter(|(id, f)| {
            !complete.contains(id.as_str())
                && !f.keys.iter().any(|k| k == MANIFEST_NAME)
                && f.newest < cutoff
        })
        .map(|(id, _)| id.clone())
        .collect()
}

/// Deletes the keys listed in a backup's folder, in [`repo::deletion_order`].
async fn delete_backup(
    store: &dyn Store,
    id: &str,
    folders: &BTreeMap<String, Folder>,
) -> Result<()> {
    let Some(folder) = folders.get(id) else {
        return Ok(());
    };
    for key in repo::deletion_order(folder.keys.iter().map(String::as_str)) {
        store.delete(&format!("{id}/{key}")).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(key: &str, hours_ago: i64, now: DateTime<Utc>) -> ObjectMeta {
        ObjectMeta {
            key: key.to_string(),
            size: 1,
            modified: now - TimeDelta::hours(hours_ago),
        }
    }

    #[test]
    fn folders_and_orphans_table() {
        let now = Utc::now();
        let objects: Vec<ObjectMeta> = [
            ("20261101T030000Z/claim.json", 100),
            ("20261101T030000Z/manifest.json", 100),
            ("20261101T030000Z/data/0000.sql.gz", 100),
            ("20261101T030000Z/data/", 100),
            ("20261101T030000Z/notes.txt", 100),
            ("20261102T030000Z/claim.json", 90),
            ("20261102T030000Z/schema.sql.gz", 48),
            ("20261103T030000Z/claim.json", 2),
            ("20261104T030000Z/schema.sql", 100),
            ("20261104T030000Z/data/0001.sql", 1),
            ("20261105T030000Z//manifest.json", 100),
            ("20261106T030000Z/staging/x.sql", 100),
            ("zzz/manifest.json", 100),
            ("photos/cat.jpg", 100),
            ("staging/20261107T030000Z/schema.sql", 100),
            ("audit/20261101T030000.000Z-backup-00000001.json", 100),
            ("d1r2-store.json", 100),
        ]
        .iter()
        .map(|(k, h)| object(k, *h, now))
        .collect();
        let folders = backup_folders(&objects);
        assert_eq!(
            folders.keys().collect::<Vec<_>>(),
            [
                "20261101T030000Z",
                "20261102T030000Z",
                "20261103T030000Z",
                "20261104T030000Z"
            ]
        );
        assert_eq!(
            folders["20261101T030000Z"].keys,
            ["claim.json", "manifest.json", "data/0000.sql.gz"]
        );
        let complete = BTreeSet::from(["20261101T030000Z"]);
        assert_eq!(
            orphans(&folders, &complete, now - ORPHAN_AGE),
            ["20261102T030000Z"]
        );
    }
}
