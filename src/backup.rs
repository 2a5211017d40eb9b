//! The backup command, written against the `Source` and `Store` traits.
//!
//! Flow: plan the schema from the catalog; write the schema part; read every table in keyset
//! pages (several tables at once, within `concurrency`), rendering and compressing each page on a
//! blocking thread and streaming the bytes to every destination; write the post part; and only
//! then the manifest. On failure the parts already stored are deleted (best effort) and no
//! manifest is written, so no destination ever shows an incomplete backup.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use chrono::Utc;
use futures::{StreamExt, TryStreamExt, future::try_join_all};

use crate::codec::{Compression, PartEncoder, Stored};
use crate::crypto::Key;
use crate::dump::insert::InsertWriter;
use crate::dump::{post_sql, schema_sql, sequence_sql};
use crate::manifest::{
    EncryptionInfo, FORMAT_VERSION, MANIFEST_NAME, Manifest, ObjectEntry, ObjectKind, TableEntry,
    backup_id, slug,
};
use crate::source::{DataMode, Page, Source, Table, TableFilter, catalog, row_key};
use crate::store::{Store, Upload};

#[derive(Debug, Clone)]
pub struct BackupOptions {
    pub filter: TableFilter,
    pub compression: Compression,
    /// Encrypts every part with this key when set.
    pub encryption: Option<Key>,
    /// Tables read at once.
    pub concurrency: usize,
    pub label: Option<String>,
    /// A table's data is split into another part after this much SQL.
    pub part_sql_bytes: u64,
    /// Pages are sized to about this many bytes of literals; `None` takes the source's own
    /// preference.
    pub page_bytes: Option<usize>,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            filter: TableFilter::default(),
            compression: Compression::Gzip,
            encryption: None,
            concurrency: 4,
            label: None,
            part_sql_bytes: 128 * 1024 * 1024,
            page_bytes: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct BackupOutcome {
    pub manifest: Manifest,
    /// SHA-256 of the manifest as stored: one digest that pins the whole backup.
    pub manifest_sha256: String,
    pub duration: std::time::Duration,
}

/// Rows in the first page of a table, before its row size is known.
const FIRST_PAGE_ROWS: usize = 256;
const MAX_PAGE_ROWS: usize = 100_000;

/// The next page's row limit: as many rows as fit in `target` bytes at the last page's average
/// row size, growing at most 4x a page so one odd page cannot make the next one huge.
pub fn next_page_rows(limit: usize, rows: usize, bytes: usize, target: usize) -> usize {
    if rows == 0 || bytes == 0 {
        return limit;
    }
    let fit = (target as u128 * rows as u128 / bytes as u128) as usize;
    fit.clamp(1, (limit * 4).min(MAX_PAGE_ROWS))
}

/// What a page weighs, as pages are sized: its literals plus four bytes a cell, about what it
/// costs in memory and, within a few bytes a cell, what its JSON answer from D1 carries.
fn page_weight(page: &Page) -> usize {
    page.literal_bytes() + 4 * page.cells()
}

/// A page of `table`, as a future that owns what it needs, so the next page can be in flight
/// while this one is processed.
fn fetch<'a>(
    source: &'a dyn Source,
    table: &'a Table,
    after: Option<Vec<String>>,
    limit: usize,
) -> futures::future::BoxFuture<'a, anyhow::Result<Page>> {
    Box::pin(async move {
        source
            .page(table, after.as_deref(), limit)
            .await
            .with_context(|| format!("reading table {}", table.name))
    })
}

/// Runs a backup of `source` into every store in `stores`.
pub async fn run(
    source: &dyn Source,
    stores: &[Arc<dyn Store>],
    options: &BackupOptions,
) -> anyhow::Result<BackupOutcome> {
    let started = Instant::now();
    let schema = catalog::load(source, &options.filter).await?;
    let mut info = source.info();
    info.bookmark = source.bookmark().await?;
    let id = unique_id(stores).await?;
    tracing::info!(
        "backup {id}: {} tables from {}",
        schema.tables.len(),
        info.name.as_deref().unwrap_or(&info.kind)
    );
    for (name, reason) in &schema.skipped {
        tracing::debug!("skipping {name}: {reason}");
    }
    let target = Target {
        stores: stores.to_vec(),
        id: id.clone(),
        compression: options.compression,
        encryption: options.encryption.clone(),
    };
    let result = write_backup(source, &schema, &target, options).await;
    let (objects, tables, schema_entries) = match result {
        Ok(parts) => parts,
        Err(err) => {
            target.discard().await;
            return Err(err);
        }
    };
    let manifest = Manifest {
        format: FORMAT_VERSION,
        tool: format!("d1r2 {}", env!("CARGO_PKG_VERSION")),
        id: id.clone(),
        created: Utc::now(),
        label: options.label.clone(),
        source: info,
        compression: options.compression,
        encryption: options.encryption.as_ref().map(|key| EncryptionInfo {
            algorithm: crate::crypto::ALGORITHM.to_string(),
            key_fingerprint: key.fingerprint(),
        }),
        tables,
        schema: schema_entries,
        objects,
    };
    let json = serde_json::to_vec_pretty(&manifest).context("encoding the manifest")?;
    let manifest_sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&json));
    let key = format!("{id}/{MANIFEST_NAME}");
    let written = try_join_all(
        stores
            .iter()
            .map(|s| s.put(&key, Bytes::from(json.clone()))),
    )
    .await;
    if let Err(err) = written {
        target.discard().await;
        return Err(err).context("writing the manifest");
    }
    Ok(BackupOutcome {
        manifest,
        manifest_sha256,
        duration: started.elapsed(),
    })
}

type Written = (
    Vec<ObjectEntry>,
    Vec<TableEntry>,
    Vec<crate::manifest::SchemaEntry>,
);

async fn write_backup(
    source: &dyn Source,
    schema: &crate::source::Schema,
    target: &Target,
    options: &BackupOptions,
) -> anyhow::Result<Written> {
    let mut objects = Vec::new();
    let (sql, mut entries) = schema_sql(schema);
    objects.push(
        target
            .write_whole(
                &format!("schema.{}", target.compression.extension()),
                ObjectKind::Schema,
                sql,
            )
            .await?,
    );
    let results: Vec<(TableEntry, Vec<ObjectEntry>)> =
        futures::stream::iter(schema.tables.iter().enumerate())
            .map(|(i, table)| backup_table(source, table, i, target, options))
            .buffered(options.concurrency.max(1))
            .try_collect()
            .await?;
    let mut tables = Vec::new();
    for (entry, parts) in results {
        tables.push(entry);
        objects.extend(parts);
    }
    let (sql, post_entries) = post_sql(schema);
    entries.extend(post_entries);
    objects.push(
        target
            .write_whole(
                &format!("post.{}", target.compression.extension()),
                ObjectKind::Post,
                sql,
            )
            .await?,
    );
    Ok((objects, tables, entries))
}

async fn backup_table(
    source: &dyn Source,
    table: &Table,
    index: usize,
    target: &Target,
    options: &BackupOptions,
) -> anyhow::Result<(TableEntry, Vec<ObjectEntry>)> {
    let mut objects = Vec::new();
    let mut rows_total = 0u64;
    let note = match &table.data {
        DataMode::Skip(reason) => {
            tracing::warn!("table {}: rows not backed up: {reason}", table.name);
            Some(reason.clone())
        }
        DataMode::Rebuild => Some("full-text index rebuilt from its content table".to_string()),
        DataMode::Rows => None,
    };
    let mut part: Option<OpenPart> = None;
    let mut writer = InsertWriter::new(&table.name, &table.columns, table.key.clone());
    if table.data == DataMode::Rows {
        let page_bytes = options.page_bytes.unwrap_or_else(|| source.page_bytes());
        let mut limit = FIRST_PAGE_ROWS;
        let mut fetching = Some(fetch(source, table, None, limit));
        while let Some(fetch_page) = fetching.take() {
            let page = fetch_page.await?;
            let n = page.len();
            if n == 0 {
                break;
            }
            let bytes = page_weight(&page);
            if n == limit {
                // Read ahead: the next page travels while this one is rendered and stored.
                let after = row_key(table, page.row(n - 1));
                limit = next_page_rows(limit, n, bytes, page_bytes);
                fetching = Some(fetch(source, table, Some(after), limit));
            }
            let open = target
                .reuse_or_open(part.take(), table, index, objects.len())
                .await?;
            let store_page = async {
                let (mut open, returned) = tokio::task::spawn_blocking(move || {
                    let mut open = open;
                    let mut sql = String::with_capacity(page.literal_bytes() + 2 * page.cells());
                    let mut cells = Vec::with_capacity(page.width());
                    for row in page.rows() {
                        row.cells_into(&mut cells);
                        writer.push_row(&cells, &mut sql)?;
                    }
                    writer.flush(&mut sql);
                    open.encoder.write(sql.as_bytes())?;
                    open.rows += n as u64;
                    anyhow::Ok((open, writer))
                })
                .await??;
                let chunk = open.encoder.take();
                crate::progress::add(n as u64, chunk.len() as u64);
                target.send(&mut open, chunk).await?;
                anyhow::Ok((open, returned))
            };
            let (open, returned) = match fetching.take() {
                Some(next) => {
                    let (stored, next) = futures::future::join(store_page, next).await;
                    fetching = Some(Box::pin(futures::future::ready(next)));
                    stored?
                }
                None => store_page.await?,
            };
            writer = returned;
            rows_total += n as u64;
            if open.encoder.sql_bytes() >= options.part_sql_bytes {
                objects.push(target.close_part(open, None).await?);
            } else {
                part = Some(open);
            }
        }
    }
    if let Some(seq) = sequence_sql(table) {
        let open = target
            .reuse_or_open(part.take(), table, index, objects.len())
            .await?;
        objects.push(target.close_part(open, Some(seq)).await?);
    } else if let Some(open) = part.take() {
        objects.push(target.close_part(open, None).await?);
    }
    tracing::info!("table {}: {rows_total} rows", table.name);
    Ok((
        TableEntry {
            name: table.name.clone(),
            rows: rows_total,
            note,
        },
        objects,
    ))
}

/// Where a backup's objects go: the same bytes to every store.
struct Target {
    stores: Vec<Arc<dyn Store>>,
    id: String,
    compression: Compression,
    encryption: Option<Key>,
}

struct OpenPart {
    key: String,
    table: String,
    uploads: Vec<Box<dyn Upload>>,
    encoder: PartEncoder,
    rows: u64,
}

impl Target {
    async fn open_part(
        &self,
        table: &Table,
        index: usize,
        part: usize,
    ) -> anyhow::Result<OpenPart> {
        let key = format!(
            "data/{index:04}-{}.{part}.{}",
            slug(&table.name),
            self.compression.extension()
        );
        let full = format!("{}/{key}", self.id);
        let uploads = try_join_all(self.stores.iter().map(|s| s.put_stream(&full))).await?;
        Ok(OpenPart {
            key,
            table: table.name.clone(),
            uploads,
            encoder: PartEncoder::new(self.compression, self.encryption.as_ref())?,
            rows: 0,
        })
    }

    /// The part still open for a table, or a new one.
    async fn reuse_or_open(
        &self,
        open: Option<OpenPart>,
        table: &Table,
        index: usize,
        part: usize,
    ) -> anyhow::Result<OpenPart> {
        match open {
            Some(open) => Ok(open),
            None => self.open_part(table, index, part).await,
        }
    }

    async fn send(&self, part: &mut OpenPart, chunk: Bytes) -> anyhow::Result<()> {
        if !chunk.is_empty() {
            try_join_all(part.uploads.iter_mut().map(|u| u.write(chunk.clone()))).await?;
        }
        Ok(())
    }

    async fn close_part(
        &self,
        mut part: OpenPart,
        tail: Option<String>,
    ) -> anyhow::Result<ObjectEntry> {
        let (encoder, tail_result) = tokio::task::spawn_blocking(move || {
            let result = match tail {
                Some(sql) => part.encoder.write(sql.as_bytes()),
                None => Ok(()),
            };
            (part.encoder, result)
        })
        .await?;
        tail_result?;
        let (last, stored) = encoder.finish()?;
        let mut uploads = std::mem::take(&mut part.uploads);
        if !last.is_empty() {
            try_join_all(uploads.iter_mut().map(|u| u.write(last.clone()))).await?;
        }
        try_join_all(uploads.into_iter().map(|u| u.finish())).await?;
        Ok(entry(
            part.key,
            ObjectKind::Data,
            Some(part.table),
            part.rows,
            stored,
        ))
    }

    async fn write_whole(
        &self,
        key: &str,
        kind: ObjectKind,
        sql: String,
    ) -> anyhow::Result<ObjectEntry> {
        let compression = self.compression;
        let encryption = self.encryption.clone();
        let (bytes, stored) = tokio::task::spawn_blocking(move || {
            let mut encoder = PartEncoder::new(compression, encryption.as_ref())?;
            encoder.write(sql.as_bytes())?;
            let first = encoder.take();
            let (last, stored) = encoder.finish()?;
            anyhow::Ok(([first, last].concat(), stored))
        })
        .await??;
        let full = format!("{}/{key}", self.id);
        let bytes = Bytes::from(bytes);
        try_join_all(self.stores.iter().map(|s| s.put(&full, bytes.clone()))).await?;
        Ok(entry(key.to_string(), kind, None, 0, stored))
    }

    /// Deletes whatever this backup stored, so a failed run leaves no debris behind (prune also
    /// removes orphans later, should this fail too).
    async fn discard(&self) {
        for store in &self.stores {
            if let Ok(objects) = store.list(&format!("{}/", self.id)).await {
                for o in objects {
                    let _ = store.delete(&o.key).await;
                }
            }
        }
    }
}

fn entry(
    key: String,
    kind: ObjectKind,
    table: Option<String>,
    rows: u64,
    stored: Stored,
) -> ObjectEntry {
    ObjectEntry {
        key,
        kind,
        table,
        rows,
        bytes: stored.bytes,
        sha256: stored.sha256,
        sql_bytes: stored.sql_bytes,
    }
}

/// A new backup id no destination has used yet (two backups in one second get `-1`, `-2`, ...).
async fn unique_id(stores: &[Arc<dyn Store>]) -> anyhow::Result<String> {
    let base = backup_id(Utc::now());
    for n in 0..100 {
        let id = if n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        };
        let mut taken = false;
        for store in stores {
            if !store.list(&format!("{id}/")).await?.is_empty() {
                taken = true;
            }
        }
        if !taken {
            return Ok(id);
        }
    }
    anyhow::bail!("could not find a free backup id near {base}")
}

#[cfg(test)]
mod tests {
    use super::next_page_rows;

    #[test]
    fn page_rows_table() {
        for (limit, rows, bytes, target, want) in [
            (256, 256, 256 * 100, 1_000_000, 1024),
            (1024, 1024, 1024 * 100, 1_000_000, 4096),
            (4096, 4096, 4096 * 100, 1_000_000, 10_000),
            (256, 256, 256 * 1_000_000, 1_000_000, 1),
            (100_000, 100_000, 100_000, 1 << 30, 100_000),
            (10, 0, 0, 100, 10),
        ] {
            assert_eq!(next_page_rows(limit, rows, bytes, target), want);
        }
    }
}
