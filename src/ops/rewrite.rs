//! `forget --rewrite`: each retained backup holding an erasure's rows is rewritten without them,
//! keeping its id, time and so its place in the retention policy.
//!
//! Only the objects holding the rows change. Each is read statement by statement into a scratch
//! copy of its table: a row's INSERT and the appends that complete a long row make a group, and a
//! group the erasure's condition matches none of is written again byte for byte; otherwise the
//! rows left are rendered afresh ([`InsertWriter`]). A part becomes a new part under a new key; a
//! chunk a new chunk under its new address (shared, like any chunk, by the backups that name it).
//! Then the manifest is replaced, in one write, naming the new objects, and the parts it no longer
//! names are deleted; the chunks no backup names any more are prune's to collect.
//!
//! A crash before the manifest is replaced leaves the backup as it was, with new parts nothing
//! names beside it; after, the old parts. The next rewrite of any erasure deletes such parts once
//! an hour old, and prune's removal of the backup deletes them with it. Either way the backup reads as whole, and the erasure applies on every read.
//! The rewrite holds a backup lock ([`crate::format::lock`]), so no prune collects a new chunk
//! before the new manifest names it.

use std::sync::Arc;

use bytes::Bytes;

use crate::error::Result;
use crate::format::chunk::{ChunkKeys, chunk_key};
use crate::format::codec::PartEncoder;
use crate::format::crypto::Key;
use crate::format::load::stream_sql;
use crate::format::manifest::{MANIFEST_NAME, Manifest, ObjectEntry};
use crate::ops::erase::{Eraser, Filtered, conditions};
use crate::ops::find::{Backup, FindRequest, schema_scratch};
use crate::store::{Store, StoreError};

/// SQL a gzip member holds, as a backup writes them.
const MEMBER: usize = 256 * 1024;

/// How old a part its backup's manifest does not name must be before a rewrite deletes it: a
/// rewrite running now writes its new parts well within this.
const STRAY_AGE: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// What the rewrite of one backup changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Rewritten {
    pub rows: u64,
    pub objects: usize,
}

/// Rewrites `manifest`'s backup without the rows `request` names; `None` when it holds none
/// (or its schema cannot hold them).
pub(crate) async fn rewrite(
    store: Arc<dyn Store>,
    manifest: &Manifest,
    key: Option<&Key>,
    request: &FindRequest,
) -> Result<Option<Rewritten>> {
    let backup = Backup {
        store: store.clone(),
        manifest,
        key,
    };
    sweep_strays(store.as_ref(), manifest, chrono::Utc::now()).await?;
    let (_scratch, conn) = schema_scratch(&backup).await?;
    let (conn, conditions) = conditions(&backup, std::slice::from_ref(request), conn).await?;
    let mut eraser = Eraser::new(conn, manifest, conditions)?;
    let mut changed: Vec<(usize, ObjectEntry, u64)> = Vec::new();
    for (index, object) in manifest.objects.iter().enumerate() {
        if !eraser.erases(object) {
            continue;
        }
        eraser = stream_sql(store.clone(), manifest, vec![object.clone()], key, eraser).await?;
        let filtered = eraser.take();
        if filtered.removed > 0 {
            let entry = store_object(store.as_ref(), manifest, key, object, &filtered).await?;
            changed.push((index, entry, filtered.removed));
        }
    }
    if changed.is_empty() {
        return Ok(None);
    }
    let replaced = replace_manifest(store.as_ref(), manifest, key, &changed).await?;
    for old in replaced {
        if let Err(e) = store.delete(&old).await {
            tracing::warn!("the replaced part {old} is left for prune: {e}");
        }
    }
    Ok(Some(Rewritten {
        rows: changed.iter().map(|(_, _, n)| n).sum(),
        objects: changed.len(),
    }))
}

/// Deletes the data parts in `manifest`'s folder that it does not name and that were written
/// before `now` less [`STRAY_AGE`]: what a rewrite that stopped before or after replacing the
/// manifest left (its new parts, or the old ones).
async fn sweep_strays(
    store: &dyn Store,
    manifest: &Manifest,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<()> {
    let folder = format!("{}/", manifest.id);
    for object in store.list(&folder).await? {
        let Some((_, rel)) = crate::format::repo::backup_key(&object.key) else {
            continue;
        };
        let named = manifest
            .objects
            .iter()
            .any(|o| o.chunk.is_none() && o.key == rel);
        if rel.starts_with("data/") && !named && object.modified < now - STRAY_AGE {
            store.delete(&object.key).await?;
            tracing::info!("removed {}, a part its backup does not name", object.key);
        }
    }
    Ok(())
}

/// Stores the filtered SQL of `old` as a new object (a part under a new key, a chunk under its
/// new address) and returns its manifest entry.
async fn store_object(
    store: &dyn Store,
    manifest: &Manifest,
    key: Option<&Key>,
    old: &ObjectEntry,
    filtered: &Filtered,
) -> Result<ObjectEntry> {
    let mut entry = ObjectEntry {
        rows: old.rows.saturating_sub(filtered.removed),
        ..old.clone()
    };
    if old.chunk.is_some() {
        let address = ChunkKeys::new(key).address(filtered.sql.as_bytes());
        entry.key = chunk_key(&address, manifest.compression);
        entry.chunk = Some(address);
    } else {
        entry.key = rewritten_key(&old.key);
    }
    let part_key = key.map(|k| manifest.part_key(k, &entry));
    let mut encoder = PartEncoder::new(manifest.compression, part_key.as_ref())?;
    for member in filtered.sql.as_bytes().chunks(MEMBER) {
        encoder.write(member)?;
    }
    let mut bytes = encoder.take().to_vec();
    let (last, stored) = encoder.finish()?;
    bytes.extend_from_slice(&last);
    entry.bytes = stored.bytes;
    entry.sql_bytes = stored.sql_bytes;
    entry.sha256 = match old.chunk {
        Some(_) => String::new(),
        None => hex::encode(stored.sha256),
    };
    match store
        .put_new(&manifest.key(&entry), Bytes::from(bytes))
        .await
    {
        Err(StoreError::AlreadyExists { .. }) if entry.chunk.is_some() => {}
        other => other?,
    }
    Ok(entry)
}

/// A new key for a rewritten part of `old`'s: its name and a random suffix, so the old part and
/// the new one both exist until the manifest names the new one.
fn rewritten_key(old: &str) -> String {
    let (stem, ext) = match old.strip_suffix(".sql.gz") {
        Some(stem) => (stem, ".sql.gz"),
        None => (old.strip_suffix(".sql").unwrap_or(old), ".sql"),
    };
    // A part rewritten before loses its earlier suffix, so names do not grow.
    let stem = match stem.rsplit_once("-e") {
        Some((base, suffix))
            if suffix.len() == 8 && suffix.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            base
        }
        _ => stem,
    };
    format!("{stem}-e{:08x}{ext}", rand::random::<u32>())
}

/// Writes `manifest` with the `changed` objects in place (and its tables' row counts less what
/// was removed), in one write over the old; returns the keys of the parts it no longer names.
async fn replace_manifest(
    store: &dyn Store,
    manifest: &Manifest,
    key: Option<&Key>,
    changed: &[(usize, ObjectEntry, u64)],
) -> Result<Vec<String>> {
    let mut new = manifest.clone();
    let mut replaced = Vec::new();
    for (index, entry, removed) in changed {
        let old = std::mem::replace(&mut new.objects[*index], entry.clone());
        if old.chunk.is_none() {
            replaced.push(manifest.key(&old));
        }
        if let Some(table) = new
            .tables
            .iter_mut()
            .find(|t| Some(&t.name) == old.table.as_ref())
        {
            table.rows = table.rows.saturating_sub(*removed);
        }
    }
    let json = crate::format::envelope::to_json(&new, key)?;
    store
        .put(
            &format!("{}/{MANIFEST_NAME}", manifest.id),
            Bytes::from(json),
        )
        .await?;
    Ok(replaced)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewritten_keys_table() {
        for (old, base, ext) in [
            ("data/0000-users.0.sql.gz", "data/0000-users.0", ".sql.gz"),
            ("data/0003.sql", "data/0003", ".sql"),
            (
                "data/0001-docs.r1-0.sql.gz",
                "data/0001-docs.r1-0",
                ".sql.gz",
            ),
            (
                "data/0000-users.0-e0a1b2c3d.sql.gz",
                "data/0000-users.0",
                ".sql.gz",
            ),
            ("data/0002-events.0.sql.gz", "data/0002-events.0", ".sql.gz"),
        ] {
            let new = rewritten_key(old);
            assert_ne!(new, old);
            assert!(crate::format::repo::is_backup_key(&new), "{new}");
            let suffix = new
                .strip_prefix(&format!("{base}-e"))
                .and_then(|rest| rest.strip_suffix(ext))
                .unwrap_or_else(|| panic!("{old} became {new}"));
            assert!(
                suffix.len() == 8 && suffix.bytes().all(|b| b.is_ascii_hexdigit()),
                "{new}"
            );
        }
    }
}
