//! Exporting a backup as one plain SQL file that `sqlite3` and `wrangler d1 execute --file`
//! accept: the parts decoded and concatenated in order. Written to a scratch file beside the
//! output (`ops::scratch`: locked while written, swept by the next run if this one is killed)
//! and renamed, and only after every part's digest checked out.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use crate::error::{Context, Result};
use crate::format::crypto::Key;
use crate::format::load::{Erasing, SqlSink, Statements, check_key, stream_sql};
use crate::format::manifest::{Manifest, ObjectEntry, ObjectKind};
use crate::ops::erasures::{ErasureOutcome, plan};
use crate::ops::scratch::{Purpose, Scratch, base_of, check_folder, folder_of, sweep};
use crate::store::Store;

/// The export file, written as the parts decode: byte for byte what they hold, once
/// [`Statements`] beside it has seen that every statement is one d1r2 writes, where the manifest
/// says (an export is run by the `sqlite3` shell, which would also run a `.shell` line a
/// written-over part slipped between statements).
struct FileSink {
    file: std::io::BufWriter<std::fs::File>,
    statements: Statements,
    /// The recorded erasures' `DELETE`s, written once, before the post part: whoever runs the
    /// file removes the rows before any trigger exists to see it.
    erasing: Option<Erasing>,
}

impl FileSink {
    fn erase(&mut self) -> Result<()> {
        for steps in self.erasing.take().map(|e| e.steps).unwrap_or_default() {
            for step in steps {
                writeln!(self.file, "{};", step.sql)?;
            }
        }
        Ok(())
    }
}

impl SqlSink for FileSink {
    fn feed(&mut self, object: &ObjectEntry, bytes: Option<&[u8]>) -> Result<()> {
        let Some(bytes) = bytes else {
            return Ok(self.statements.end(object)?);
        };
        if object.kind == ObjectKind::Post {
            self.erase()?;
        }
        self.statements.push(object, bytes, |_, _, _| Ok(()))?;
        self.file.write_all(bytes)?;
        Ok(())
    }
}

/// A manifest's text as one line of a SQL comment: a line end in it would start a line of its
/// own, which the `sqlite3` shell reads as SQL or as one of its commands.
fn one_line(text: &str) -> String {
    text.replace(|c: char| c.is_control(), " ")
}

/// Writes the whole backup to `out`, with the recorded erasures' `DELETE`s before its post part;
/// returns the number of SQL bytes written and the erasures written.
pub async fn export(
    store: Arc<dyn Store>,
    manifest: &Manifest,
    key: Option<&Key>,
    out: &Path,
) -> Result<(u64, Vec<ErasureOutcome>)> {
    check_key(manifest, key)?;
    let planned = plan(store.clone(), manifest, key).await?;
    check_folder(out)?;
    let dir = folder_of(out);
    sweep(dir);
    let temp = Scratch::create(dir, &base_of(out), Purpose::Export)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    let mut sink = FileSink {
        file: std::io::BufWriter::new(std::fs::File::create(temp.path())?),
        statements: Statements::new(manifest),
        erasing: Some(planned.erasing.clone()),
    };
    writeln!(
        sink.file,
        "-- d1r2 backup {} of {} {}, created {}",
        one_line(&manifest.id),
        one_line(&manifest.source.kind),
        one_line(manifest.source.name.as_deref().unwrap_or("")),
        manifest.created.to_rfc3339()
    )?;
    let mut sink = stream_sql(store, manifest, manifest.objects.clone(), key, sink).await?;
    sink.erase()?;
    sink.statements.finish()?;
    let file = sink.file.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    let bytes = file.metadata()?.len();
    drop(file);
    let mut temp = temp;
    temp.rename_to(out)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok((bytes, planned.outcomes(&Erasing::default())))
}
