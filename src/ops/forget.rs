//! Recording an erasure (a data subject's request to be forgotten): the predicate checked
//! against the newest backup's schema, the record claimed by a conditional create, then the
//! rows it names counted across the retained backups for the report and the audit trail.
//! From then on every restore, verify, export and drill removes them (`ops::erasures`).

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::error::{Result, bad_input};
use crate::format::crypto::Key;
use crate::format::erasure::{self, Erasure, Request};
use crate::format::load::load_schema;
use crate::format::manifest::Manifest;
use crate::ops::backup::chunks::Held;
use crate::ops::find::{FindRequest, Searched, check_request, search};
use crate::ops::rewrite::rewrite;
use crate::store::Store;

/// What `forget` did.
#[derive(Debug)]
pub(crate) struct ForgetOutcome {
    pub erasure: Erasure,
    /// The rows the predicate names in the retained backups, and in how many backups; `None`
    /// when they could not be counted (the erasure is recorded all the same).
    pub counted: Option<(u64, u64)>,
    /// With `rewrite`: the rows removed from the stored backups, and how many backups changed.
    pub rewritten: Option<(u64, u64)>,
}

/// Records `request` in `store` as an erasure by `actor` at `now`, checked against the newest of
/// `backups` (oldest first), then counts its rows in all of them.
pub(crate) async fn forget(
    store: Arc<dyn Store>,
    backups: &[Manifest],
    key: Option<&Key>,
    (request, rewrite): (Request, bool),
    (actor, now): (Option<String>, DateTime<Utc>),
) -> Result<ForgetOutcome> {
    let Some(newest) = backups.last() else {
        return Err(bad_input(format!(
            "{store} holds no backup to check --where against; forget needs one"
        )));
    };
    let find = FindRequest {
        table: request.table.clone(),
        predicate: request.predicate.clone(),
        related: request.related,
    };
    let mut schema = load_schema(store.clone(), newest, key).await?;
    let table = check_request(&mut schema, &find)?;
    let erasure = Erasure {
        id: erasure::new_id(now),
        created: now,
        actor,
        request: Request { table, ..request },
    };
    erasure::record(store.as_ref(), &erasure, key).await?;
    let counted = match count(store.clone(), backups, key, &find).await {
        Ok(counted) => Some(counted),
        Err(e) => {
            tracing::warn!(
                "erasure {} is recorded; its rows could not be counted: {e}",
                erasure.id
            );
            None
        }
    };
    let rewritten = match rewrite {
        true => Some(rewrite_all(store, backups, key, &find).await?),
        false => None,
    };
    Ok(ForgetOutcome {
        erasure,
        counted,
        rewritten,
    })
}

/// Rewrites every backup of `backups` that holds rows `find` names, under a backup lock (no
/// prune collects a chunk the rewrite stored before a manifest names it); the rows removed and
/// the backups changed.
async fn rewrite_all(
    store: Arc<dyn Store>,
    backups: &[Manifest],
    key: Option<&Key>,
    find: &FindRequest,
) -> Result<(u64, u64)> {
    let held = Held::acquire(std::slice::from_ref(&store)).await?;
    let mut done = (0, 0);
    let mut result = Ok(());
    for manifest in backups {
        match rewrite(store.clone(), manifest, key, find).await {
            Ok(Some(rewritten)) => {
                tracing::info!(
                    "backup {}: {} rows removed from {} objects",
                    manifest.id,
                    rewritten.rows,
                    rewritten.objects
                );
                done = (done.0 + rewritten.rows, done.1 + 1);
            }
            Ok(None) => {}
            Err(e) => {
                result = Err(e.context(format!("rewriting backup {}", manifest.id)));
                break;
            }
        }
    }
    held.release().await;
    result.map(|()| done)
}

/// The rows `find` names in `backups`, and in how many of them.
async fn count(
    store: Arc<dyn Store>,
    backups: &[Manifest],
    key: Option<&Key>,
    find: &FindRequest,
) -> Result<(u64, u64)> {
    let mut searched = Searched::default();
    for manifest in backups {
        search(
            store.clone(),
            manifest,
            key,
            find,
            &mut searched,
            &mut |_, _, _| Ok(()),
        )
        .await?;
    }
    Ok((searched.rows, searched.backups_with_rows))
}
