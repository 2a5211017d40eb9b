//! Exporting a backup as one plain SQL file that `sqlite3` and `wrangler d1 execute --file`
//! accept: the parts decoded and concatenated in order. Written to a temporary file and renamed,
//! and only after every part's digest checked out.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use crate::crypto::Key;
use crate::load::{SqlSink, check_key, stream_sql};
use crate::manifest::{Manifest, ObjectEntry};
use crate::store::Store;

struct FileSink(std::io::BufWriter<tempfile::NamedTempFile>);

impl SqlSink for FileSink {
    fn feed(&mut self, _object: &ObjectEntry, bytes: Option<&[u8]>) -> anyhow::Result<()> {
        if let Some(bytes) = bytes {
            self.0.write_all(bytes)?;
        }
        Ok(())
    }
}

/// Writes the whole backup to `out`; returns the number of SQL bytes written.
pub async fn export(
    store: Arc<dyn Store>,
    manifest: &Manifest,
    key: Option<&Key>,
    out: &Path,
) -> anyhow::Result<u64> {
    check_key(manifest, key)?;
    let dir = out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let temp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    let mut sink = FileSink(std::io::BufWriter::new(temp));
    writeln!(
        sink.0,
        "-- d1r2 backup {} of {} {}, created {}",
        manifest.id,
        manifest.source.kind,
        manifest.source.name.as_deref().unwrap_or(""),
        manifest.created.to_rfc3339()
    )?;
    let sink = stream_sql(store, manifest, manifest.objects.clone(), key, sink).await?;
    let file = sink.0.into_inner().map_err(|e| e.into_error())?;
    file.as_file().sync_all()?;
    let bytes = file.as_file().metadata()?.len();
    file.persist(out)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(bytes)
}
