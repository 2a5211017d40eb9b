//! Exporting a backup as one plain SQL file that `sqlite3` and `wrangler d1 execute --file`
//! accept: the parts decoded and concatenated in order. Written to a scratch file beside the
//! output (`ops::scratch`: locked while written, swept by the next run if this one is killed)
//! and renamed, and only after every part's digest checked out. The rows recorded erasures name
//! are left out of it (`ops::erase`).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use crate::error::{Context, Result};
use crate::format::crypto::Key;
use crate::format::load::{Erasing, SqlSink, Statements, check_key, stream_sql};
use crate::format::manifest::{Manifest, ObjectEntry};
use crate::ops::erase::{Eraser, conditions};
use crate::ops::erasures::{ErasureOutcome, Planned, plan};
use crate::ops::find::{Backup, FindRequest, schema_scratch};
use crate::ops::scratch::{Purpose, Scratch, base_of, check_folder, folder_of, sweep};
use crate::store::Store;

/// The export file, written as the parts decode: byte for byte what they hold, once
/// [`Statements`] beside it has seen that every statement is one d1r2 writes, where the manifest
/// says (an export is run by the `sqlite3` shell, which would also run a `.shell` line a
/// written-over part slipped between statements). The objects of a table a recorded erasure
/// reaches go through an [`Eraser`] instead, so the file holds none of the rows it names.
struct FileSink {
    file: std::io::BufWriter<std::fs::File>,
    statements: Statements,
    eraser: Option<Eraser>,
    /// The rows the eraser left out.
    erased: u64,
}

impl SqlSink for FileSink {
    fn feed(&mut self, object: &ObjectEntry, bytes: Option<&[u8]>) -> Result<()> {
        if let Some(eraser) = self.eraser.as_mut().filter(|e| e.erases(object)) {
            eraser.feed(object, bytes)?;
            if bytes.is_none() {
                let filtered = eraser.take();
                self.file.write_all(filtered.sql.as_bytes())?;
                self.erased += filtered.removed;
            }
            return Ok(());
        }
        let Some(bytes) = bytes else {
            return Ok(self.statements.end(object)?);
        };
        self.statements.push(object, bytes, |_, _, _| Ok(()))?;
        self.file.write_all(bytes)?;
        Ok(())
    }
}

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct ExportOutcome {
    /// SQL bytes written.
    pub bytes: u64,
    /// The recorded erasures applied (their rows counted together, in `erased_rows`).
    pub erasures: Vec<ErasureOutcome>,
    pub erased_rows: u64,
}

/// An [`Eraser`] for the erasures `planned` applies to `manifest`'s backup, on a scratch copy of
/// its schema (the [`Scratch`] holds the file), or `None` when none applies.
async fn eraser(
    store: Arc<dyn Store>,
    manifest: &Manifest,
    key: Option<&Key>,
    planned: &Planned,
) -> Result<Option<(Scratch, Eraser)>> {
    if planned.applied.is_empty() {
        return Ok(None);
    }
    let requests: Vec<FindRequest> = planned
        .applied
        .iter()
        .map(|e| FindRequest {
            table: e.request.table.clone(),
            predicate: e.request.predicate.clone(),
            related: e.request.related,
        })
        .collect();
    let backup = Backup {
        store,
        manifest,
        key,
    };
    let (scratch, conn) = schema_scratch(&backup).await?;
    let (conn, conditions) = conditions(&backup, &requests, conn).await?;
    Ok(Some((scratch, Eraser::new(conn, manifest, conditions)?)))
}

/// A manifest's text as one line of a SQL comment: a line end in it would start a line of its
/// own, which the `sqlite3` shell reads as SQL or as one of its commands.
fn one_line(text: &str) -> String {
    text.replace(|c: char| c.is_control(), " ")
}

/// Writes the whole backup to `out`, without the rows the recorded erasures name.
pub async fn export(
    store: Arc<dyn Store>,
    manifest: &Manifest,
    key: Option<&Key>,
    out: &Path,
) -> Result<ExportOutcome> {
    check_key(manifest, key)?;
    let planned = plan(store.clone(), manifest, key).await?;
    let erasing = eraser(store.clone(), manifest, key, &planned).await?;
    let (_erasing_scratch, eraser) = erasing.unzip();
    check_folder(out)?;
    let dir = folder_of(out);
    sweep(dir);
    let temp = Scratch::create(dir, &base_of(out), Purpose::Export)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    let mut sink = FileSink {
        file: std::io::BufWriter::new(std::fs::File::create(temp.path())?),
        statements: Statements::new(manifest),
        eraser,
        erased: 0,
    };
    writeln!(
        sink.file,
        "-- d1r2 backup {} of {} {}, created {}",
        one_line(&manifest.id),
        one_line(&manifest.source.kind),
        one_line(manifest.source.name.as_deref().unwrap_or("")),
        manifest.created.to_rfc3339()
    )?;
    let sink = stream_sql(store, manifest, manifest.objects.clone(), key, sink).await?;
    sink.statements.finish()?;
    let file = sink.file.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    let bytes = file.metadata()?.len();
    drop(file);
    let mut temp = temp;
    temp.rename_to(out)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(ExportOutcome {
        bytes,
        erasures: planned.outcomes(&Erasing::default()),
        erased_rows: sink.erased,
    })
}
