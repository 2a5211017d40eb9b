//! Naming a backup: its id is claimed before anything else is written, by a conditional create
//! of `<id>/claim.json` in every store, so two backups started in the same second (two jobs, two
//! databases sharing a prefix) can never write into one folder. On a store where the id is taken,
//! the claims this run made in the others are released and the next suffix is tried.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::future::join_all;

use crate::error::{Result, failed};
use crate::format::manifest::backup_id;
use crate::format::repo::{CLAIM_NAME, MAX_ID_SUFFIX, ensure_marker, id_with_suffix};
use crate::store::{Store, StoreError};

/// Writes the store marker where it is missing, then claims a free id in every store.
pub(crate) async fn claim_id(stores: &[Arc<dyn Store>], now: DateTime<Utc>) -> Result<String> {
    futures::future::try_join_all(stores.iter().map(|s| ensure_marker(s.as_ref(), now))).await?;
    let base = backup_id(now);
    let body = claim_json(now);
    for n in 0..=MAX_ID_SUFFIX {
        let id = id_with_suffix(&base, n);
        if try_claim(stores, &id, &body).await? {
            return Ok(id);
        }
        tracing::debug!("backup id {id} is taken, trying the next");
    }
    Err(failed(format!(
        "every backup id from {base} to {} is taken",
        id_with_suffix(&base, MAX_ID_SUFFIX)
    )))
}

/// The claim's content: when and by what it was made (nothing of the source).
fn claim_json(now: DateTime<Utc>) -> Bytes {
    let claim = serde_json::json!({
        "claimed": now,
        "tool": format!("d1r2 {}", env!("CARGO_PKG_VERSION")),
    });
    Bytes::from(serde_json::to_vec_pretty(&claim).expect("a claim always encodes"))
}

/// Claims `id` in every store at once: `true` when every store took the claim; `false`, with the
/// claims made released, when the id is taken in any.
async fn try_claim(stores: &[Arc<dyn Store>], id: &str, body: &Bytes) -> Result<bool> {
    let key = format!("{id}/{CLAIM_NAME}");
    let results = join_all(stores.iter().map(|s| s.put_new(&key, body.clone()))).await;
    let verdict = settle(&results);
    for i in &verdict.release {
        // A claim left behind (the delete failed too) is an abandoned folder holding only d1r2's
        // keys: prune removes it once it is a day old.
        let _ = stores[*i].delete(&key).await;
    }
    match verdict.outcome {
        Outcome::Won => Ok(true),
        Outcome::Taken => Ok(false),
        Outcome::Failed(i) => Err(results
            .into_iter()
            .nth(i)
            .and_then(Result::err)
            .expect("settle names a failed store")
            .into()),
    }
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Won,
    Taken,
    /// The store at this index failed otherwise: the backup fails with its error.
    Failed(usize),
}

#[derive(Debug, PartialEq)]
struct Verdict {
    outcome: Outcome,
    /// Stores whose claim this run made and must delete, the id not being its own.
    release: Vec<usize>,
}

/// What the claims' results, one a store, come to: won only when every store took it; a
/// failure other than a taken key ends the backup; either way only the stores that took the
/// claim are released.
fn settle(results: &[Result<(), StoreError>]) -> Verdict {
    let failed = results
        .iter()
        .position(|r| matches!(r, Err(e) if !matches!(e, StoreError::AlreadyExists { .. })));
    let taken = results.iter().any(|r| r.is_err());
    let outcome = match (failed, taken) {
        (Some(i), _) => Outcome::Failed(i),
        (None, true) => Outcome::Taken,
        (None, false) => Outcome::Won,
    };
    let release = match outcome {
        Outcome::Won => Vec::new(),
        _ => (0..results.len()).filter(|&i| results[i].is_ok()).collect(),
    };
    Verdict { outcome, release }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_settle_table() {
        let ok = || Ok(());
        let taken = || {
            Err(StoreError::AlreadyExists {
                store: "s".into(),
                key: "k".into(),
            })
        };
        let broken = || Err(StoreError::InvalidKey("k".into()));
        type Case = (Vec<Result<(), StoreError>>, Outcome, Vec<usize>);
        let cases: Vec<Case> = vec![
            (vec![ok()], Outcome::Won, vec![]),
            (vec![ok(), ok(), ok()], Outcome::Won, vec![]),
            (vec![taken()], Outcome::Taken, vec![]),
            (vec![ok(), taken()], Outcome::Taken, vec![0]),
            (vec![taken(), ok(), ok()], Outcome::Taken, vec![1, 2]),
            (vec![taken(), taken()], Outcome::Taken, vec![]),
            (vec![broken()], Outcome::Failed(0), vec![]),
            (vec![ok(), broken(), taken()], Outcome::Failed(1), vec![0]),
            (vec![taken(), ok(), broken()], Outcome::Failed(2), vec![1]),
        ];
        for (results, outcome, release) in cases {
            let v = settle(&results);
            assert_eq!((v.outcome, v.release), (outcome, release), "{results:?}");
        }
    }

    #[test]
    fn claims_say_nothing_of_the_source() {
        let now = Utc::now();
        let json: serde_json::Value = serde_json::from_slice(&claim_json(now)).unwrap();
        let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["claimed", "tool"]);
    }
}
