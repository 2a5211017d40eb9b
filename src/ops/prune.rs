//! Removing what a retention policy does not keep, and what crashed backups left behind.
//!
//! Order matters for anyone reading the store at the same time, and for a prune that is itself
//! interrupted: a backup's manifest is deleted first, so from that moment no command sees the
//! backup; then its parts. Parts with no manifest are left alone for a day (a backup may be
//! writing them right now), then removed; unfinished uploads older than a day are aborted.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};

use crate::error::{Result, bad_input};
use crate::format::manifest::MANIFEST_NAME;
use crate::format::repo;
use crate::ops::retention::{self, Decision, KeepPolicy};
use crate::store::Store;

/// Objects under this prefix are the audit trail, never a backup.
pub(crate) const AUDIT_PREFIX: &str = "audit/";

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
        for o in &self.orphans {
            text.push_str(&format!(
                "{o:<22}  {:<20}  remove  incomplete (no manifest, older than a day)\n",
                "-"
            ));
        }
        text
    }
}

/// Applies `policy` to the backups in `store` at time `now`; with `dry_run`, only decides.
pub(crate) async fn prune(
    store: &dyn Store,
    policy: &KeepPolicy,
    dry_run: bool,
    now: DateTime<Utc>,
) -> Result<PruneOutcome> {
    let manifests = repo::manifests(store).await?;
    let backups: Vec<(String, DateTime<Utc>)> = manifests
        .iter()
        .map(|m| (m.id().to_string(), m.created()))
        .collect();
    let plan = retention::plan(&backups, policy).map_err(bad_input)?;

    // Folders holding objects but no manifest, by their newest object.
    let mut newest: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    for object in store.list("").await? {
        if object.key.starts_with(AUDIT_PREFIX) {
            continue;
        }
        if let Some((folder, _)) = object.key.split_once('/') {
            let e = newest.entry(folder.to_string()).or_insert(object.modified);
            *e = (*e).max(object.modified);
        }
    }
    let complete: std::collections::BTreeSet<&str> =
        backups.iter().map(|(id, _)| id.as_str()).collect();
    let orphans: Vec<String> = newest
        .into_iter()
        .filter(|(folder, modified)| {
            !complete.contains(folder.as_str()) && *modified < now - ORPHAN_AGE
        })
        .map(|(folder, _)| folder)
        .collect();

    let mut outcome = PruneOutcome {
        plan,
        orphans,
        aborted_uploads: 0,
        dry_run,
    };
    if dry_run {
        return Ok(outcome);
    }
    for decision in outcome.plan.iter().filter(|d| !d.keep) {
        store
            .delete(&format!("{}/{MANIFEST_NAME}", decision.id))
            .await?;
        delete_folder(store, &decision.id).await?;
        tracing::info!("removed backup {}", decision.id);
    }
    for folder in &outcome.orphans {
        delete_folder(store, folder).await?;
        tracing::info!("removed the parts of unfinished backup {folder}");
    }
    outcome.aborted_uploads = store.abort_stale_uploads(now - ORPHAN_AGE).await?;
    Ok(outcome)
}

async fn delete_folder(store: &dyn Store, folder: &str) -> Result<()> {
    for object in store.list(&format!("{folder}/")).await? {
        store.delete(&object.key).await?;
    }
    Ok(())
}
