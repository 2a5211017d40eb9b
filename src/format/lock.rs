//! Lock objects, so prune never deletes a chunk a running backup is about to name (restic's
//! scheme, sound on stores whose listings show every finished write: S3, R2, a local folder).
//!
//! A chunked backup creates `locks/backup-<token>.json` before it reads the manifests it
//! reuses chunks from, refreshes it while it runs and deletes it once its manifest is written
//! (or it failed); while a live prune lock is there it waits. A prune deletes the manifests its
//! policy drops, creates `locks/prune-<token>.json`, then lists the locks: with a live backup
//! lock it leaves the chunks for another time, else it reads the remaining manifests afresh and
//! deletes the chunks none names, then its lock. Whichever of the two created its lock first,
//! the other's listing shows it. A lock not written for [`STALE_AFTER`] is a crashed run's and
//! ignored (prune removes it).

use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};

use crate::store::{ObjectMeta, Store, StoreError};

/// Where the locks are kept, beside the backups.
pub const LOCKS_PREFIX: &str = "locks/";

/// A lock not rewritten for this long belongs to a run that is gone.
pub const STALE_AFTER: TimeDelta = TimeDelta::minutes(30);

/// How often a running backup rewrites its lock: well within [`STALE_AFTER`].
pub const REFRESH_EVERY: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// Who holds a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    Backup,
    Prune,
}

impl LockKind {
    fn as_str(self) -> &'static str {
        match self {
            LockKind::Backup => "backup",
            LockKind::Prune => "prune",
        }
    }
}

/// The key of a lock of `kind` with `token` (16 hex characters).
pub fn lock_key(kind: LockKind, token: u64) -> String {
    format!("{LOCKS_PREFIX}{}-{token:016x}.json", kind.as_str())
}

/// The kind of the lock at `key`, when `key` is a lock as [`lock_key`] names them.
pub fn lock_kind(key: &str) -> Option<LockKind> {
    let name = key.strip_prefix(LOCKS_PREFIX)?.strip_suffix(".json")?;
    let (kind, token) = name.split_once('-')?;
    let token_ok = token.len() == 16
        && token
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !token_ok {
        return None;
    }
    match kind {
        "backup" => Some(LockKind::Backup),
        "prune" => Some(LockKind::Prune),
        _ => None,
    }
}

/// Whether a lock last written at `modified` still holds at `now`.
pub fn is_live(modified: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    now - modified < STALE_AFTER
}

fn body(kind: LockKind, now: DateTime<Utc>) -> Bytes {
    let lock = serde_json::json!({
        "lock": kind.as_str(),
        "written": now,
        "tool": format!("d1r2 {}", env!("CARGO_PKG_VERSION")),
    });
    Bytes::from(serde_json::to_vec_pretty(&lock).expect("a lock always encodes"))
}

/// Creates a lock of `kind` (a conditional create: a fresh token each time) and gives its key.
pub async fn create(store: &dyn Store, kind: LockKind) -> Result<String, StoreError> {
    let key = lock_key(kind, rand::random());
    store.put_new(&key, body(kind, Utc::now())).await?;
    Ok(key)
}

/// Rewrites a running backup's lock, so it stays live.
pub async fn refresh(store: &dyn Store, key: &str) -> Result<(), StoreError> {
    store.put(key, body(LockKind::Backup, Utc::now())).await
}

/// The locks of `kind` in `store`: (live, stale) as of `now`, `except` left out.
pub async fn locks(
    store: &dyn Store,
    kind: LockKind,
    except: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(Vec<ObjectMeta>, Vec<ObjectMeta>), StoreError> {
    let listed = store.list(LOCKS_PREFIX).await?;
    Ok(listed
        .into_iter()
        .filter(|o| lock_kind(&o.key) == Some(kind) && Some(o.key.as_str()) != except)
        .partition(|o| is_live(o.modified, now)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_table() {
        for (kind, token) in [(LockKind::Backup, 0), (LockKind::Prune, u64::MAX)] {
            assert_eq!(lock_kind(&lock_key(kind, token)), Some(kind));
        }
        for key in [
            "locks/backup-0123456789abcdef.json",
            "locks/prune-0123456789abcdef.json",
        ] {
            assert!(lock_kind(key).is_some(), "{key}");
        }
        for key in [
            "locks/backup-0123456789ABCDEF.json",
            "locks/backup-0123456789abcde.json",
            "locks/other-0123456789abcdef.json",
            "locks/backup-0123456789abcdef.json.tmp",
            "locks/x/backup-0123456789abcdef.json",
            "backup-0123456789abcdef.json",
            "locks/",
        ] {
            assert_eq!(lock_kind(key), None, "{key}");
        }
    }

    #[test]
    fn liveness_table() {
        let now = Utc::now();
        for (age, live) in [
            (TimeDelta::zero(), true),
            (TimeDelta::minutes(29), true),
            (TimeDelta::minutes(30), false),
            (TimeDelta::days(2), false),
            (TimeDelta::minutes(-5), true),
        ] {
            assert_eq!(is_live(now - age, now), live, "{age}");
        }
    }
}
