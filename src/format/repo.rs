//! Backups as a store holds them: finding, naming and reading manifests (as stored: an encrypted
//! backup's is opened with the key by the caller, see [`crate::format::envelope`]).
//!
//! A store's prefix is shared ground: it may hold an app's files, other databases' stores in
//! nested prefixes, folder markers a console made. So what d1r2 owns is named, never inferred:
//! a folder is a backup's only when its name is a backup id ([`is_backup_id`]), and inside it only
//! the keys d1r2 writes ([`is_backup_key`]) are its; besides those, only the store marker
//! ([`STORE_MARKER`]) and the audit records. Everything that looks for backups (list, restore,
//! verify, export, prune) goes through here, so none of them can mistake another's file for a
//! backup, or a crashed backup's parts for one. A backup exists exactly when
//! `<id>/manifest.json` does.

use bytes::Bytes;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Classify, Kind};
use crate::format::chunk::{chunk_address, is_chunk_key};
use crate::format::envelope::{EnvelopeError, Stored};
use crate::format::erasure::is_erasure_key;
use crate::format::lock::lock_kind;
use crate::format::manifest::MANIFEST_NAME;
use crate::store::{ObjectMeta, Store, StoreError, read_all};

/// The object that says "this prefix is a d1r2 store" (restic's `config`): written by every
/// backup, checked by prune before it deletes anything.
pub const STORE_MARKER: &str = "d1r2-store.json";

/// The marker's format version; a marker of a later one is a store this d1r2 does not know.
pub const STORE_VERSION: u32 = 1;

/// The id claim, the first object of a backup and its last to go: whoever created it owns the id.
pub const CLAIM_NAME: &str = "claim.json";

/// Where the audit records are kept, beside the backups and never one.
pub const AUDIT_PREFIX: &str = "audit/";

/// The largest `-N` suffix an id takes: a thousand backups started in one second.
pub const MAX_ID_SUFFIX: u32 = 999;

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("no backups in {store}")]
    NoBackups { store: String },
    #[error("no backup {id} in {store} (see `d1r2 list --from {store}`)")]
    UnknownBackup { id: String, store: String },
    #[error(
        "no backup in {store} started at or before {at} (see `d1r2 list --from {store}`; ids are UTC start times)"
    )]
    NoneAtOrBefore { at: String, store: String },
    #[error("backup {id} in {store} is incomplete: it has no manifest, so it was never finished")]
    Incomplete { id: String, store: String },
    #[error(
        "{store} has no {STORE_MARKER}, so it is not known to be a d1r2 store and nothing is deleted there; a backup into it writes the marker"
    )]
    NotAStore { store: String },
    #[error("{store}/{STORE_MARKER} is not a d1r2 store marker this version reads ({reason})")]
    BadMarker { store: String, reason: String },
    #[error(transparent)]
    Manifest(#[from] EnvelopeError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The user named a backup or a store that is not there; a manifest that does not parse or open
/// is a failure.
impl Classify for RepoError {
    fn kind(&self) -> Kind {
        match self {
            RepoError::NoBackups { .. }
            | RepoError::UnknownBackup { .. }
            | RepoError::NoneAtOrBefore { .. }
            | RepoError::Incomplete { .. }
            | RepoError::NotAStore { .. }
            | RepoError::BadMarker { .. } => Kind::BadInput,
            RepoError::Store(e) => e.kind(),
            RepoError::Manifest(_) => Kind::Failed,
        }
    }
}

/// A backup id read back: its UTC second and its suffix (0 for none). `None` when `s` is not one:
/// `YYYYMMDDTHHMMSSZ` naming a real time, then optionally `-N` with N in 1..=999, no leading zero.
pub fn parse_backup_id(s: &str) -> Option<(NaiveDateTime, u32)> {
    let (base, suffix) = match s.split_once('-') {
        Some((base, n)) => (base, Some(n)),
        None => (s, None),
    };
    let shape = base.len() == 16
        && base.bytes().enumerate().all(|(i, b)| match i {
            8 => b == b'T',
            15 => b == b'Z',
            _ => b.is_ascii_digit(),
        });
    if !shape {
        return None;
    }
    let time = NaiveDateTime::parse_from_str(base, "%Y%m%dT%H%M%SZ").ok()?;
    let n = match suffix {
        None => 0,
        Some(n) => {
            let ok = !n.is_empty() && n.len() <= 3 && n.bytes().all(|b| b.is_ascii_digit());
            if !ok || n.starts_with('0') {
                return None;
            }
            n.parse().ok()?
        }
    };
    Some((time, n))
}

/// The time `--at` names: RFC 3339 (`2026-11-24T22:15:00Z`, any offset) or a date alone
/// (`2026-11-24`), which means its start, 00:00 UTC. `None` for anything else.
pub fn parse_at(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Some(time.with_timezone(&Utc));
    }
    let date = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    Some(date.and_hms_opt(0, 0, 0)?.and_utc())
}

/// The newest of `ids` that started at or before `at` (an id is its backup's UTC start second).
pub fn newest_at(ids: &[String], at: DateTime<Utc>) -> Option<&str> {
    ids.iter()
        .filter_map(|id| Some((parse_backup_id(id)?, id)))
        .filter(|((time, _), _)| time.and_utc() <= at)
        .max_by_key(|(key, _)| *key)
        .map(|(_, id)| id.as_str())
}

/// Whether a folder name is a backup id, so the folder may be a backup's.
pub fn is_backup_id(s: &str) -> bool {
    parse_backup_id(s).is_some()
}

/// The id `n` of the second `base` (an id from [`crate::format::manifest::backup_id`]): `base`
/// itself, then `base-1`, `base-2`, ...
pub fn id_with_suffix(base: &str, n: u32) -> String {
    if n == 0 {
        base.to_string()
    } else {
        format!("{base}-{n}")
    }
}

/// Whether `rel`, a key inside a backup's folder, is one d1r2 writes there: the claim, the
/// manifest, the schema and post parts, and data parts (`data/` and one name starting with a
/// digit, of file-name-safe characters). Anything else in the folder (a folder marker, a nested
/// folder, an editor's backup file) is someone else's.
pub fn is_backup_key(rel: &str) -> bool {
    match rel {
        CLAIM_NAME | MANIFEST_NAME => return true,
        _ => {}
    }
    if let Some(ext) = rel
        .strip_prefix("schema.")
        .or_else(|| rel.strip_prefix("post."))
    {
        return is_part_extension(ext);
    }
    let Some(name) = rel.strip_prefix("data/") else {
        return false;
    };
    let Some(stem) = name
        .strip_suffix(".sql.gz")
        .or_else(|| name.strip_suffix(".sql"))
    else {
        return false;
    };
    stem.len() <= 128
        && stem.starts_with(|c: char| c.is_ascii_digit())
        && stem
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn is_part_extension(ext: &str) -> bool {
    matches!(ext, "sql.gz" | "sql")
}

/// A key of a backup folder split into the backup's id and the key inside it, when the folder's
/// name is an id and the key is one d1r2 writes there.
pub fn backup_key(key: &str) -> Option<(&str, &str)> {
    let (id, rel) = key.split_once('/')?;
    (is_backup_id(id) && is_backup_key(rel)).then_some((id, rel))
}

/// Whether `key` is an audit record as `ops::audit` names them: `audit/` and one `.json` name.
pub fn is_audit_key(key: &str) -> bool {
    key.strip_prefix(AUDIT_PREFIX).is_some_and(|name| {
        name.len() > ".json".len()
            && name.ends_with(".json")
            && !name.starts_with('.')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    })
}

/// Whether d1r2 wrote `key` (relative to the store's prefix): the marker, an audit record, an
/// erasure record ([`is_erasure_key`]), a key of a backup folder, a chunk ([`is_chunk_key`]) or
/// a lock ([`lock_kind`]). Nothing else is ever deleted, aborted or read as a backup.
pub fn is_owned_key(key: &str) -> bool {
    key == STORE_MARKER
        || is_audit_key(key)
        || is_erasure_key(key)
        || backup_key(key).is_some()
        || is_chunk_key(key)
        || lock_kind(key).is_some()
}

/// Whether `key` names a folder of a backup as a store with folders holds it: `<id>/` or
/// `<id>/data/`. Only such folders, found empty, are removed by a cleanup.
pub fn is_owned_folder(key: &str) -> bool {
    let Some(folder) = key.strip_suffix('/') else {
        return false;
    };
    let id = folder.strip_suffix("/data").unwrap_or(folder);
    is_backup_id(id)
}

/// What a cleanup may touch: the keys d1r2 owns ([`is_owned_key`]) and its empty folders
/// ([`is_owned_folder`]); the shape `Store::abort_stale_uploads` asks for.
pub fn is_owned_upload(key: &str) -> bool {
    is_owned_key(key) || is_owned_folder(key)
}

/// The order a backup's keys are deleted in: its manifest first (from then on no command sees a
/// backup), then the others as given, its claim last (until it goes, no other backup takes the
/// id). Each key once.
pub fn deletion_order<'a>(keys: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut manifest = false;
    let mut claim = false;
    let mut out: Vec<String> = Vec::new();
    for key in keys {
        match key {
            MANIFEST_NAME => manifest = true,
            CLAIM_NAME => claim = true,
            other if !out.iter().any(|k| k == other) => out.push(other.to_string()),
            _ => {}
        }
    }
    if manifest {
        out.insert(0, MANIFEST_NAME.to_string());
    }
    if claim {
        out.push(CLAIM_NAME.to_string());
    }
    out
}

/// Sorts ids by time, then by suffix (`-2` before `-10`, which text order gets wrong).
pub fn sort_ids(ids: &mut [String]) {
    ids.sort_by_key(|id| parse_backup_id(id));
}

/// The marker's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreMarker {
    pub store: String,
    pub version: u32,
    pub created: DateTime<Utc>,
}

/// The marker a backup writes, as stored.
pub fn marker_json(created: DateTime<Utc>) -> Bytes {
    let marker = StoreMarker {
        store: "d1r2".to_string(),
        version: STORE_VERSION,
        created,
    };
    Bytes::from(serde_json::to_vec_pretty(&marker).expect("a marker always encodes"))
}

/// Why a stored marker is not one this version reads, or `None` when it is.
pub fn marker_problem(bytes: &[u8]) -> Option<String> {
    match serde_json::from_slice::<StoreMarker>(bytes) {
        Err(e) => Some(format!("not the marker's JSON: {e}")),
        Ok(m) if m.store != "d1r2" => Some(format!("it names store {:?}", m.store)),
        Ok(m) if m.version > STORE_VERSION => Some(format!(
            "version {} is newer than this d1r2's {STORE_VERSION}",
            m.version
        )),
        Ok(_) => None,
    }
}

/// Writes the marker unless one is there (a conditional create: two first backups racing both
/// succeed, and an existing marker is never rewritten).
pub async fn ensure_marker(store: &dyn Store, now: DateTime<Utc>) -> Result<(), StoreError> {
    match store.put_new(STORE_MARKER, marker_json(now)).await {
        Ok(()) => Ok(()),
        Err(StoreError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Refuses a store without a readable marker: before prune deletes anything, the prefix must be
/// one a backup wrote into, not a bucket root or an app's folder given by mistake.
pub async fn check_marker(store: &dyn Store) -> Result<(), RepoError> {
    let bytes = match read_all(store, STORE_MARKER).await {
        Ok(bytes) => bytes,
        Err(e) if e.is_not_found() => {
            return Err(RepoError::NotAStore {
                store: store.to_string(),
            });
        }
        Err(e) => return Err(e.into()),
    };
    match marker_problem(&bytes) {
        None => Ok(()),
        Some(reason) => Err(RepoError::BadMarker {
            store: store.to_string(),
            reason,
        }),
    }
}

/// The ids of every complete backup, oldest first. Folders that are not backup ids are skipped,
/// each said once in a debug line.
pub async fn backup_ids(store: &dyn Store) -> Result<Vec<String>, RepoError> {
    let objects = store.list("").await?;
    let mut ids: Vec<String> = objects
        .iter()
        .filter_map(|o| match backup_key(&o.key) {
            Some((id, MANIFEST_NAME)) => Some(id.to_string()),
            _ => None,
        })
        .collect();
    log_skipped(objects.iter().map(|o| o.key.as_str()));
    sort_ids(&mut ids);
    Ok(ids)
}

/// Says in debug lines which keys are not d1r2's and were left alone, a folder once.
pub fn log_skipped<'a>(keys: impl Iterator<Item = &'a str>) {
    let mut last: Option<&str> = None;
    for key in keys.filter(|k| !is_owned_key(k)) {
        let folder = match key.split_once('/') {
            Some((folder, _)) if is_backup_id(folder) => key,
            Some((folder, _)) => folder,
            None => key,
        };
        if last != Some(folder) {
            tracing::debug!("skipping {folder:?}: not a key d1r2 writes");
            last = Some(folder);
        }
    }
}

/// Reads and parses one backup's manifest.
pub async fn manifest(store: &dyn Store, id: &str) -> Result<Stored, RepoError> {
    let key = format!("{id}/{MANIFEST_NAME}");
    let bytes = match read_all(store, &key).await {
        Ok(bytes) => bytes,
        Err(e) if e.is_not_found() => {
            let any = store
                .list(&format!("{id}/"))
                .await?
                .iter()
                .any(|o| backup_key(&o.key).is_some());
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

/// The bytes each of `backups` alone holds in a store listed as `listing` (restic's "raw data
/// added"): the objects in its folder, and the chunks no other of `backups` names. What
/// removing it and collecting its chunks would free.
pub fn own_bytes(backups: &[Stored], listing: &[ObjectMeta]) -> Vec<u64> {
    use std::collections::HashMap;
    let named: Vec<Vec<String>> = backups.iter().map(Stored::chunk_addresses).collect();
    let mut namers: HashMap<&str, usize> = HashMap::new();
    for address in named.iter().flatten() {
        *namers.entry(address).or_default() += 1;
    }
    let mut chunks: HashMap<&str, u64> = HashMap::new();
    let mut folders: HashMap<&str, u64> = HashMap::new();
    for object in listing {
        match held(&object.key) {
            Some(Held::Chunk(address)) => *chunks.entry(address).or_default() += object.size,
            Some(Held::Backup(id)) => *folders.entry(id).or_default() += object.size,
            None => {}
        }
    }
    backups
        .iter()
        .zip(&named)
        .map(|(backup, addresses)| {
            let alone = addresses
                .iter()
                .filter(|a| namers.get(a.as_str()) == Some(&1))
                .filter_map(|a| chunks.get(a.as_str()))
                .sum::<u64>();
            folders.get(backup.id()).copied().unwrap_or_default() + alone
        })
        .collect()
}

/// The bytes the backups of a store listed as `listing` hold there: their folders and the chunks,
/// each chunk once however many backups name it; nothing that is not d1r2's.
pub fn stored_bytes(listing: &[ObjectMeta]) -> u64 {
    listing
        .iter()
        .filter(|o| held(&o.key).is_some())
        .map(|o| o.size)
        .sum()
}

/// What a key of a listing holds for the backups: a chunk (its address), or an object in a
/// backup's folder (its id).
enum Held<'a> {
    Chunk(&'a str),
    Backup(&'a str),
}

fn held(key: &str) -> Option<Held<'_>> {
    if let Some(address) = chunk_address(key) {
        Some(Held::Chunk(address))
    } else {
        backup_key(key).map(|(id, _)| Held::Backup(id))
    }
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
        if !is_backup_id(selector) {
            return Err(RepoError::UnknownBackup {
                id: selector.to_string(),
                store: store.to_string(),
            });
        }
        manifest(store, selector).await
    }
}

/// The manifest of the newest backup started at or before `at`.
pub async fn resolve_at(store: &dyn Store, at: DateTime<Utc>) -> Result<Stored, RepoError> {
    let ids = backup_ids(store).await?;
    match newest_at(&ids, at) {
        Some(id) => manifest(store, id).await,
        None => Err(RepoError::NoneAtOrBefore {
            at: at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            store: store.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_times_table() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        for (text, want) in [
            ("2026-11-24T22:15:00Z", Some(t("2026-11-24T22:15:00Z"))),
            ("2026-11-24T23:15:00+01:00", Some(t("2026-11-24T22:15:00Z"))),
            (
                " 2026-11-24T22:15:00.5Z ",
                Some(t("2026-11-24T22:15:00.5Z")),
            ),
            ("2026-11-24", Some(t("2026-11-24T00:00:00Z"))),
            ("2026-11-24T22:15:00", None),
            ("2026-02-30", None),
            ("yesterday", None),
            ("20261124T221500Z", None),
            ("", None),
        ] {
            assert_eq!(parse_at(text), want, "{text:?}");
        }
    }

    #[test]
    fn newest_at_table() {
        let ids: Vec<String> = [
            "20261122T010000Z",
            "20261124T221500Z",
            "20261124T221500Z-1",
            "20261125T080000Z",
        ]
        .map(String::from)
        .to_vec();
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        for (at, want) in [
            ("2026-11-21T00:00:00Z", None),
            ("2026-11-22T01:00:00Z", Some("20261122T010000Z")),
            ("2026-11-24T22:14:59Z", Some("20261122T010000Z")),
            ("2026-11-24T22:15:00Z", Some("20261124T221500Z-1")),
            ("2026-11-25T07:59:59.9Z", Some("20261124T221500Z-1")),
            ("2030-01-01T00:00:00Z", Some("20261125T080000Z")),
        ] {
            assert_eq!(newest_at(&ids, t(at)), want, "{at}");
        }
        assert_eq!(newest_at(&[], t("2030-01-01T00:00:00Z")), None);
    }

    #[test]
    fn backup_ids_table() {
        for (id, want) in [
            ("20261124T221500Z", Some(0)),
            ("20261124T221500Z-1", Some(1)),
            ("20261124T221500Z-999", Some(999)),
            ("19700101T000000Z", Some(0)),
            ("20240229T235959Z", Some(0)),
            ("20261124T221500Z-0", None),
            ("20261124T221500Z-01", None),
            ("20261124T221500Z-1000", None),
            ("20261124T221500Z-", None),
            ("20261124T221500Z-x", None),
            ("20261124T221500Z-1-2", None),
            ("20261124T221500", None),
            ("20261124t221500Z", None),
            ("20261124T221500Z/", None),
            ("20261324T221500Z", None),
            ("20230229T000000Z", None),
            ("20261124T246000Z", None),
            ("2026112T4221500Z", None),
            ("+2026124T221500Z", None),
            ("zzz", None),
            ("audit", None),
            ("", None),
            ("２0261124T221500Z", None),
        ] {
            assert_eq!(parse_backup_id(id).map(|(_, n)| n), want, "{id:?}");
            assert_eq!(is_backup_id(id), want.is_some(), "{id:?}");
        }
        let id = crate::format::manifest::backup_id(Utc::now());
        assert!(is_backup_id(&id), "{id}");
        assert!(is_backup_id(&id_with_suffix(&id, MAX_ID_SUFFIX)));
        assert!(!is_backup_id(&id_with_suffix(&id, MAX_ID_SUFFIX + 1)));
        assert_eq!(id_with_suffix(&id, 0), id);
    }

    #[test]
    fn backup_keys_table() {
        for (rel, want) in [
            ("claim.json", true),
            ("manifest.json", true),
            ("schema.sql.gz", true),
            ("schema.sql", true),
            ("post.sql.gz", true),
            ("post.sql", true),
            ("data/0000-users.0.sql.gz", true),
            ("data/0001-docs.r1-0.sql.gz", true),
            ("data/0000.sql.gz", true),
            ("data/0003.sql", true),
            ("data/0000-odd_t--x.12.sql", true),
            ("data/", false),
            ("data", false),
            ("data/x.sql.gz", false),
            ("data/.d1r2-tmp-00-0000.sql.gz", false),
            ("data/0000.sql.gz/", false),
            ("data/sub/0000.sql.gz", false),
            ("data//0000.sql.gz", false),
            ("data/0000.txt", false),
            ("data/0000 x.sql", false),
            ("data/0000\\..sql", false),
            ("manifest.json.bak", false),
            ("/manifest.json", false),
            ("Manifest.json", false),
            ("schema.sql.gz.tmp", false),
            ("schema.gz", false),
            ("post.", false),
            ("photo.jpg", false),
            ("x/manifest.json", false),
            ("", false),
        ] {
            assert_eq!(is_backup_key(rel), want, "{rel:?}");
            if want {
                crate::store::check_key(&format!("20261124T221500Z/{rel}")).unwrap();
            }
        }
        let long = format!("data/0{}.sql", "a".repeat(127));
        assert!(is_backup_key(&long));
        assert!(!is_backup_key(&format!("data/0{}.sql", "a".repeat(128))));
    }

    #[test]
    fn owned_keys_table() {
        for (key, want) in [
            ("d1r2-store.json", true),
            ("audit/20261125T040000.000Z-backup-000000ab.json", true),
            ("20261124T221500Z/manifest.json", true),
            ("20261124T221500Z-3/data/0000.sql.gz", true),
            ("20261124T221500Z/data/", false),
            ("20261124T221500Z/", false),
            ("20261124T221500Z//manifest.json", false),
            ("20261124T221500Z/nested/manifest.json", false),
            ("/20261124T221500Z/manifest.json", false),
            ("zzz/manifest.json", false),
            ("staging/20261124T221500Z/manifest.json", false),
            ("manifest.json", false),
            ("audit/", false),
            ("audit/.json", false),
            ("audit/x/y.json", false),
            ("audit/notes.txt", false),
            ("d1r2-store.json/", false),
            ("photos/cat.jpg", false),
            (&format!("chunks/ab/ab{}.sql.gz", "0".repeat(62)), true),
            (&format!("chunks/ab/ab{}.sql", "0".repeat(62)), true),
            (&format!("chunks/ab/ac{}.sql.gz", "0".repeat(62)), false),
            (&format!("chunks/ab/ab{}.sql.gz.tmp", "0".repeat(62)), false),
            ("chunks/ab/notes.txt", false),
            ("locks/backup-0123456789abcdef.json", true),
            ("locks/notes.json", false),
            ("chunks/", false),
            ("erasures/20261124T221500.123Z-0123456789abcdef.json", true),
            ("erasures/notes.json", false),
        ] {
            assert_eq!(is_owned_key(key), want, "{key:?}");
        }
    }

    #[test]
    fn owned_folders_table() {
        for (key, want) in [
            ("20261124T221500Z/", true),
            ("20261124T221500Z-7/data/", true),
            ("20261124T221500Z/data", false),
            ("20261124T221500Z", false),
            ("20261124T221500Z/photos/", false),
            ("20261124T221500Z/data/x/", false),
            ("photos/", false),
            ("audit/", false),
            ("/", false),
            ("", false),
        ] {
            assert_eq!(is_owned_folder(key), want, "{key:?}");
            assert_eq!(is_owned_upload(key), want, "{key:?}");
        }
        assert!(is_owned_upload("20261124T221500Z/data/0000.sql.gz"));
        assert!(!is_owned_upload("photos/cat.jpg"));
    }

    #[test]
    fn deletion_order_table() {
        for (keys, want) in [
            (vec![], vec![]),
            (
                vec!["claim.json", "data/0000.sql", "manifest.json", "schema.sql"],
                vec!["manifest.json", "data/0000.sql", "schema.sql", "claim.json"],
            ),
            (vec!["schema.sql", "schema.sql"], vec!["schema.sql"]),
            (vec!["claim.json"], vec!["claim.json"]),
            (
                vec!["post.sql", "manifest.json"],
                vec!["manifest.json", "post.sql"],
            ),
        ] {
            assert_eq!(deletion_order(keys.iter().copied()), want, "{keys:?}");
        }
    }

    #[test]
    fn ids_sort_by_time_then_suffix() {
        let mut ids: Vec<String> = [
            "20261124T221500Z-10",
            "20261124T221501Z",
            "20261124T221500Z-2",
            "20251231T235959Z",
            "20261124T221500Z",
        ]
        .map(String::from)
        .to_vec();
        sort_ids(&mut ids);
        assert_eq!(
            ids,
            [
                "20251231T235959Z",
                "20261124T221500Z",
                "20261124T221500Z-2",
                "20261124T221500Z-10",
                "20261124T221501Z"
            ]
        );
    }

    #[test]
    fn markers_table() {
        let now = Utc::now();
        assert_eq!(marker_problem(&marker_json(now)), None);
        for (text, ok) in [
            (
                r#"{"store":"d1r2","version":1,"created":"2026-11-24T22:15:00Z"}"#,
                true,
            ),
            (
                r#"{"store":"d1r2","version":2,"created":"2026-11-24T22:15:00Z"}"#,
                false,
            ),
            (
                r#"{"store":"restic","version":1,"created":"2026-11-24T22:15:00Z"}"#,
                false,
            ),
            (r#"{"store":"d1r2"}"#, false),
            ("", false),
            ("<html>", false),
        ] {
            assert_eq!(marker_problem(text.as_bytes()).is_none(), ok, "{text}");
        }
    }

    #[test]
    fn every_error_has_its_kind() {
        use crate::error::{Classify, Kind::*};
        let s = String::from;
        let cases = [
            (RepoError::NoBackups { store: s("dir") }, BadInput),
            (
                RepoError::NoneAtOrBefore {
                    at: s("2026-11-24T00:00:00Z"),
                    store: s("dir"),
                },
                BadInput,
            ),
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
            (RepoError::NotAStore { store: s("dir") }, BadInput),
            (
                RepoError::BadMarker {
                    store: s("dir"),
                    reason: s("x"),
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
