//! Restoring a backup into D1, through D1's import API.
//!
//! D1 enforces foreign keys and refuses `BEGIN`/`COMMIT`, so a dump applied statement by
//! statement could stop half-way with the database half-replaced. The import API (the path
//! `wrangler d1 execute --remote --file` takes) applies one file as one unit instead: the selected
//! statements are written to a temporary file (streamed, with its MD5 computed on the way), headed
//! by `PRAGMA defer_foreign_keys` and, with `--force`, the `DROP`s of what the restore replaces,
//! so replacing and loading succeed or fail together.

use std::io::Write;

use md5::{Digest, Md5};

use crate::error::{Result, bad_input};
use crate::format::crypto::Key;
use crate::format::load::{Applier, Execute, Selection, check_key, stream_sql};
use crate::format::manifest::Manifest;
use crate::model::value::quote_ident;
use crate::ops::erasures::plan;
use crate::ops::restore::RestoreOutcome;
use crate::ops::scratch::{Purpose, Scratch, sweep};
use crate::source::d1::D1Source;
use crate::source::d1::import::ImportResult;
use crate::store::Store;

/// The import file being written.
struct ImportFile {
    out: std::io::BufWriter<std::fs::File>,
    md5: Md5,
    bytes: u64,
}

impl ImportFile {
    fn write(&mut self, sql: &str) -> std::io::Result<()> {
        for piece in [sql.as_bytes(), b"\n"] {
            self.out.write_all(piece)?;
            self.md5.update(piece);
            self.bytes += piece.len() as u64;
        }
        Ok(())
    }
}

impl Execute for ImportFile {
    fn execute(&mut self, sql: &str) -> Result<()> {
        Ok(self.write(sql)?)
    }
}

/// The statements that clear the way for the restore: every view and table of the target for a
/// whole restore, the selected tables for a partial one. Indexes and triggers go with their
/// tables.
pub(crate) fn replacement_sql(existing: &[(String, String)], selection: &Selection) -> Vec<String> {
    let mut drops = Vec::new();
    for kind in ["view", "table"] {
        for (k, name) in existing {
            let replaced = selection.tables.is_empty() || selection.tables.contains(name);
            if k == kind && replaced {
                drops.push(format!(
                    "DROP {} IF EXISTS {};",
                    kind.to_uppercase(),
                    quote_ident(name)
                ));
            }
        }
    }
    drops
}

/// Restores `manifest` (the selected tables) into the D1 database `target`. Without `force`, a
/// target already holding any of what would be restored is refused.
pub(crate) async fn restore_to_d1(
    store: std::sync::Arc<dyn Store>,
    manifest: &Manifest,
    selection: &Selection,
    key: Option<&Key>,
    target: &D1Source,
    force: bool,
) -> Result<(RestoreOutcome, ImportResult)> {
    check_key(manifest, key)?;
    selection.check(manifest)?;
    let planned = plan(store.clone(), manifest, key).await?;
    let existing = target.user_objects().await?;
    let drops = replacement_sql(&existing, selection);
    if !drops.is_empty() && !force {
        let names: Vec<&str> = existing.iter().map(|(_, n)| n.as_str()).take(5).collect();
        return Err(bad_input(format!(
            "d1://{} already holds {} ({}{}); pass --force to replace it",
            target.name(),
            if selection.tables.is_empty() {
                "tables"
            } else {
                "tables being restored"
            },
            names.join(", "),
            if existing.len() > 5 { ", ..." } else { "" }
        )));
    }
    let dir = std::env::temp_dir();
    sweep(&dir);
    let temp = Scratch::create(&dir, "import.sql", Purpose::Import)?;
    let mut file = ImportFile {
        out: std::io::BufWriter::new(std::fs::File::create(temp.path())?),
        md5: Md5::new(),
        bytes: 0,
    };
    file.write("PRAGMA defer_foreign_keys=TRUE;")?;
    for drop in &drops {
        file.write(drop)?;
    }
    let applier = Applier::new(file, manifest, selection, planned.erasing.clone());
    let applier = stream_sql(store, manifest, selection.objects(manifest), key, applier).await?;
    let (mut file, erased) = applier.finish()?;
    file.out.flush()?;
    file.out.get_ref().sync_all()?;
    let etag = hex::encode(file.md5.finalize());
    tracing::info!(
        "importing {} bytes of SQL into d1://{}",
        file.bytes,
        target.name()
    );
    let imported = target.import(temp.path(), file.bytes, &etag).await?;
    let tables: Vec<_> = manifest
        .tables
        .iter()
        .filter(|t| selection.tables.is_empty() || selection.tables.contains(&t.name))
        .collect();
    Ok((
        RestoreOutcome {
            tables: tables.len(),
            rows: tables.iter().map(|t| t.rows).sum(),
            erasures: planned.outcomes(&erased),
        },
        imported,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replacements_table() {
        let existing = vec![
            ("table".to_string(), "users".to_string()),
            ("view".to_string(), "active".to_string()),
            ("table".to_string(), "a\"b".to_string()),
        ];
        let all = Selection::default();
        assert_eq!(
            replacement_sql(&existing, &all),
            [
                "DROP VIEW IF EXISTS \"active\";",
                "DROP TABLE IF EXISTS \"users\";",
                "DROP TABLE IF EXISTS \"a\"\"b\";"
            ]
        );
        let some = Selection {
            tables: vec!["users".into(), "missing".into()],
        };
        assert_eq!(
            replacement_sql(&existing, &some),
            ["DROP TABLE IF EXISTS \"users\";"]
        );
        assert!(replacement_sql(&[], &all).is_empty());
    }
}
