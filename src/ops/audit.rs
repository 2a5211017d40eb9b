//! The audit trail: every backup, restore, verify, prune, find and forget appends a small JSON record under
//! `PREFIX/audit/` of the store it worked on, so "who restored what, when" has an answer that
//! lives with the backups. One object per record (object stores cannot append), named so they
//! list in time order.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::format::repo::AUDIT_PREFIX;
use crate::model::report::Report;
use crate::store::{Store, StoreError, read_all};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub time: DateTime<Utc>,
    pub operation: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    /// `success` or `failure`.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// find and forget: how many backups held the rows asked about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backups: Option<u64>,
    /// forget: the erasure record made (never its predicate, which names the person).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erasure_id: Option<String>,
    /// prune: the backups removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
    /// The GitHub actor, in Actions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The workflow run, in Actions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_url: Option<String>,
    pub tool: String,
}

/// The record of a finished command: its outputs (a failed command's too, when it has them) and
/// who ran it, from the runner's environment.
pub(crate) fn record(
    operation: &str,
    outcome: Result<&Report, &str>,
    env: &BTreeMap<String, String>,
    time: DateTime<Utc>,
) -> Record {
    let (report, error) = match outcome {
        Ok(report) => (Some(report), None),
        // Stored in the bucket, where anyone who can list the backups reads it.
        Err(error) => (None, Some(crate::redact::text(error))),
    };
    let output = |name: &str| report.and_then(|r| r.outputs.get(name)).cloned();
    let number = |name: &str| output(name).and_then(|v| v.parse().ok());
    let run_url = match (
        env.get("GITHUB_SERVER_URL"),
        env.get("GITHUB_REPOSITORY"),
        env.get("GITHUB_RUN_ID"),
    ) {
        (Some(server), Some(repo), Some(run)) => {
            Some(format!("{server}/{repo}/actions/runs/{run}"))
        }
        _ => None,
    };
    Record {
        time,
        operation: operation.to_string(),
        backup_id: output("backup-id"),
        outcome: if error.is_some() {
            "failure"
        } else {
            "success"
        }
        .to_string(),
        error,
        bytes: number("bytes"),
        rows: number("rows").filter(|_| !report.is_some_and(|r| r.sealed)),
        backups: number("backups"),
        erasure_id: output("erasure-id"),
        removed: output("removed-ids")
            .map(|ids| ids.lines().map(str::to_string).collect())
            .unwrap_or_default(),
        actor: env.get("GITHUB_ACTOR").cloned(),
        run_url,
        tool: format!("d1r2 {}", env!("CARGO_PKG_VERSION")),
    }
}

/// The key a record is stored under: time first, so listing is chronological.
pub(crate) fn key(record: &Record, nonce: u32) -> String {
    format!(
        "{AUDIT_PREFIX}{}-{}-{nonce:08x}.json",
        record.time.format("%Y%m%dT%H%M%S%.3fZ"),
        record.operation
    )
}

pub(crate) async fn append(store: &dyn Store, record: &Record) -> Result<(), StoreError> {
    let json = serde_json::to_vec_pretty(record).expect("a record always encodes");
    store
        .put(&key(record, rand::random()), bytes::Bytes::from(json))
        .await
}

/// Every record in `store`, oldest first; unreadable ones are skipped with a warning.
pub(crate) async fn read(store: &dyn Store) -> Result<Vec<Record>, StoreError> {
    let mut records = Vec::new();
    for object in store.list(AUDIT_PREFIX).await? {
        let bytes = read_all(store, &object.key).await?;
        match serde_json::from_slice::<Record>(&bytes) {
            Ok(r) => records.push(r),
            Err(e) => tracing::warn!("skipping audit record {}: {e}", object.key),
        }
    }
    records.sort_by_key(|r| r.time);
    Ok(records)
}

/// The records as a table for `list --audit`.
pub(crate) fn table(records: &[Record]) -> String {
    let mut text = format!(
        "{:<20}  {:<8}  {:<20}  {:<8}  {:>10}  {:<16}  DETAIL\n",
        "TIME (UTC)", "OP", "BACKUP", "OUTCOME", "ROWS", "WHO"
    );
    for r in records {
        let detail = match (&r.error, r.removed.is_empty(), &r.erasure_id, r.backups) {
            (Some(e), ..) => e.clone(),
            (None, false, ..) => format!("removed {}", r.removed.join(", ")),
            (None, true, Some(id), backups) => format!(
                "erasure {id}{}",
                backups.map_or(String::new(), |n| format!(", rows in {n} backups"))
            ),
            (None, true, None, Some(n)) => format!("rows in {n} backups"),
            _ => r.run_url.clone().unwrap_or_default(),
        };
        text.push_str(&format!(
            "{:<20}  {:<8}  {:<20}  {:<8}  {:>10}  {:<16}  {}\n",
            r.time.format("%Y-%m-%d %H:%M:%S"),
            r.operation,
            r.backup_id.as_deref().unwrap_or("-"),
            r.outcome,
            r.rows.map_or("-".to_string(), crate::model::report::count),
            r.actor.as_deref().unwrap_or("-"),
            detail
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_from_reports_and_the_runner() {
        let time = DateTime::parse_from_rfc3339("2026-11-25T04:00:00Z")
            .unwrap()
            .to_utc();
        let mut report = Report::new("backup");
        report
            .output("backup-id", "20261125T040000Z")
            .output("rows", 12)
            .output("bytes", 3456);
        let env: BTreeMap<String, String> = [
            ("GITHUB_ACTOR", "octocat"),
            ("GITHUB_SERVER_URL", "https://github.com"),
            ("GITHUB_REPOSITORY", "acme/app"),
            ("GITHUB_RUN_ID", "99"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let r = record("backup", Ok(&report), &env, time);
        assert_eq!(r.backup_id.as_deref(), Some("20261125T040000Z"));
        assert_eq!((r.rows, r.bytes), (Some(12), Some(3456)));
        assert_eq!(r.outcome, "success");
        assert_eq!(r.actor.as_deref(), Some("octocat"));
        assert_eq!(
            r.run_url.as_deref(),
            Some("https://github.com/acme/app/actions/runs/99")
        );
        assert_eq!(
            key(&r, 0xab),
            "audit/20261125T040000.000Z-backup-000000ab.json"
        );
        assert!(crate::format::repo::is_audit_key(&key(&r, rand::random())));

        let failed = record("restore", Err("no backups in x"), &BTreeMap::new(), time);
        assert_eq!(failed.outcome, "failure");
        assert_eq!(failed.error.as_deref(), Some("no backups in x"));
        assert_eq!(
            (failed.actor.clone(), failed.run_url.clone(), failed.rows),
            (None, None, None)
        );
        assert!(table(&[r, failed]).contains("no backups in x"));

        report.sealed = true;
        let sealed = record("backup", Ok(&report), &env, time);
        assert_eq!((sealed.rows, sealed.bytes), (None, Some(3456)));
    }
}
