//! The recorded erasures as one read of one backup applies them: read from the store, opened
//! with the key, and planned against the backup's own schema, so a restore, verify, export or
//! drill of any backup, older or newer than the erasure, removes the rows it names.

use std::sync::Arc;

use rusqlite::Connection;

use crate::error::Result;
use crate::format::crypto::Key;
use crate::format::erasure::{self, Erasure};
use crate::format::load::{Erasing, load_schema};
use crate::format::manifest::Manifest;
use crate::format::predicate::{self, ForeignKey, Step};
use crate::store::Store;

/// The erasures for one backup: those that apply, planned, and those that do not, with why.
#[derive(Debug, Default)]
pub(crate) struct Planned {
    pub applied: Vec<Erasure>,
    pub erasing: Erasing,
    /// Erasures this backup's schema cannot take (its table absent, or a column the predicate
    /// names): each with the reason, which names no value.
    pub skipped: Vec<(Erasure, String)>,
}

/// What a recorded erasure did to one backup's read.
#[derive(Debug, Clone, PartialEq)]
pub struct ErasureOutcome {
    pub id: String,
    /// The rows it removed; `None` when they are not counted one erasure at a time (an export,
    /// a restore into D1) or it does not apply.
    pub rows: Option<u64>,
    /// Why it does not apply to this backup's schema, when it does not.
    pub not_applied: Option<String>,
}

impl Planned {
    /// What each applied erasure removed, after the load.
    pub(crate) fn outcomes(&self, erasing: &Erasing) -> Vec<ErasureOutcome> {
        self.applied
            .iter()
            .zip(
                erasing
                    .removed
                    .iter()
                    .copied()
                    .chain(std::iter::repeat(None)),
            )
            .map(|(e, rows)| ErasureOutcome {
                id: e.id.clone(),
                rows,
                not_applied: None,
            })
            .chain(self.skipped.iter().map(|(e, why)| ErasureOutcome {
                id: e.id.clone(),
                rows: None,
                not_applied: Some(why.clone()),
            }))
            .collect()
    }
}

/// Reads the store's erasure records and plans each on `manifest`'s schema. A store without
/// records costs one listing; one with records also reads the backup's schema part.
pub(crate) async fn plan(
    store: Arc<dyn Store>,
    manifest: &Manifest,
    key: Option<&Key>,
) -> Result<Planned> {
    let recorded = erasure::all(store.as_ref(), key).await?;
    if recorded.is_empty() {
        return Ok(Planned::default());
    }
    let mut schema = load_schema(store, manifest, key).await?;
    let fks = predicate::foreign_keys(&schema)?;
    let mut planned = Planned::default();
    let mut steps = Vec::new();
    for erasure in recorded {
        match plan_one(&mut schema, &erasure, &fks)? {
            Ok(one) => {
                steps.push(one);
                planned.applied.push(erasure);
            }
            Err(why) => {
                // An encrypted backup's table and column names are as private as its rows.
                let why = if manifest.is_sealed() {
                    "its table or a column it names is not in this backup's schema".to_string()
                } else {
                    why
                };
                tracing::warn!(
                    "erasure {} does not apply to backup {}: {why}",
                    erasure.id,
                    manifest.id
                );
                planned.skipped.push((erasure, why));
            }
        }
    }
    planned.erasing = Erasing::new(steps, manifest.is_sealed());
    Ok(planned)
}

/// One erasure's statements on `schema`, each prepared there under the confinement its
/// predicate was recorded under; or why it does not apply to this schema (its table absent, or
/// its predicate naming what the table lacks). A statement that does not prepare beyond that is
/// an error: an erasure is never skipped but for the schema.
fn plan_one(
    schema: &mut Connection,
    erasure: &Erasure,
    fks: &[ForeignKey],
) -> Result<std::result::Result<Vec<Step>, String>> {
    let request = &erasure.request;
    let Some(table) = predicate::table_named(schema, &request.table)? else {
        return Ok(Err("the backup has no such table".to_string()));
    };
    if let Err(e) = predicate::validate(schema, &table, &request.predicate) {
        return Ok(Err(e.to_string()));
    }
    let steps = predicate::plan(&table, &request.predicate, request.related, fks);
    let tables = steps.iter().map(|s| s.table.clone()).collect();
    predicate::confine(schema, tables, true, None)?;
    let prepared: rusqlite::Result<()> = steps
        .iter()
        .try_for_each(|s| schema.prepare(&s.sql).map(drop));
    predicate::release(schema)?;
    prepared.map_err(|e| {
        crate::error::failed(format!(
            "erasure {} cannot be applied ({}); nothing was written",
            erasure.id,
            match &e {
                rusqlite::Error::SqliteFailure(code, _)
                | rusqlite::Error::SqlInputError { error: code, .. } => {
                    crate::redact::sqlite_code(code)
                }
                other => crate::redact::sqlite(other),
            }
        ))
    })?;
    Ok(Ok(steps))
}
