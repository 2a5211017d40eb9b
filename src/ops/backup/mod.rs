//! The backup command, written against the `Source` and `Store` traits.
//!
//! Flow: plan the schema from the catalog; write the schema part; read every table in keyset
//! pages (several tables at once, within `concurrency`), rendering and compressing each page on a
//! blocking thread and streaming the bytes to every destination; write the post part; and only
//! then the manifest. On failure the parts already stored are deleted (best effort) and no
//! manifest is written, so no destination ever shows an incomplete backup.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use chrono::Utc;
use futures::future::{join_all, try_join_all};
use futures::stream::{FuturesOrdered, FuturesUnordered};
use futures::{StreamExt, TryStreamExt};

use crate::error::{Context, Error, Result};
use crate::format::chunk::{ChunkKeys, ChunkSql, Chunker};
use crate::format::codec::{Compression, Encoded, Member, PartEncoder, Stored};
use crate::format::crypto::Key;
use crate::format::crypto::PartKey;
use crate::format::dump::insert::InsertWriter;
use crate::format::dump::{part_sql, post_statements, schema_statements, sequence_sql};
use crate::format::manifest::{
    CHUNKED_FORMAT, EncryptionInfo, MANIFEST_NAME, Manifest, ObjectEntry, ObjectKind, PLAIN_FORMAT,
    SEALED_FORMAT, TableEntry, slug,
};
use crate::format::repo::{CLAIM_NAME, deletion_order};
use crate::model::{DataMode, Page, Row, Table, TableFilter};
use crate::ops::backup::chunks::Chunking;
use crate::ops::backup::in_order::InOrder;
use crate::ops::backup::read_ahead::ReadAhead;
use crate::ops::backup::rowid_windows::Windows;
use crate::source::{FirstPage, Source, catalog, row_key};
use crate::store::{Store, Upload};
pub use consistency::Consistency;
use consistency::{ConsistencyError, Decision};

mod budget;
pub(crate) mod chunks;
mod claim;
pub(crate) mod consistency;
mod in_order;
mod read_ahead;
pub(crate) mod rowid_windows;

pub(crate) use budget::PART_BYTES;
use budget::{
    ENCODERS, FIRST_PAGE_ROWS, MAX_BATCH_TABLES, MAX_FIRST_PAGE_ROWS, MEMBERS_WAITING, PAGES_ASKED,
    PAGES_HELD, READ_AHEAD, RENDER_SLICE,
};

#[derive(Debug, Clone)]
pub struct BackupOptions {
    pub filter: TableFilter,
    pub compression: Compression,
    /// Encrypts every part with this key when set.
    pub encryption: Option<Key>,
    /// Tables read at once (a table's readers count one each).
    pub concurrency: usize,
    /// Readers of one large rowid table at most (see [`Reader`]).
    pub table_readers: usize,
    pub label: Option<String>,
    /// Whether an encrypted backup's label stays readable without the key.
    pub public_label: bool,
    /// A table's data goes on in another part before a part stores more than this.
    pub part_bytes: u64,
    /// Pages are sized to about this many bytes of literals; `None` takes the source's own
    /// preference.
    pub page_bytes: Option<usize>,
    /// What a backup that saw writes is worth (see [`consistency`]).
    pub consistency: Consistency,
    /// Attempts in all under `Require` and `Prefer`, the first included.
    pub consistent_attempts: u32,
    /// Cuts every table's rows into chunks of about this many bytes of SQL, stored once in
    /// `chunks/` and shared with the store's other backups ([`crate::format::chunk`]); `None`
    /// writes a backup that shares nothing.
    pub chunk_bytes: Option<usize>,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            filter: TableFilter::default(),
            compression: Compression::Gzip,
            encryption: None,
            concurrency: 4,
            table_readers: 1,
            label: None,
            public_label: false,
            part_bytes: PART_BYTES,
            page_bytes: None,
            consistency: Consistency::Mark,
            consistent_attempts: consistency::ATTEMPTS,
            chunk_bytes: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct BackupOutcome {
    pub manifest: Manifest,
    /// SHA-256 of the manifest as stored (sealed, for an encrypted backup): one digest that pins
    /// the whole backup.
    pub manifest_sha256: String,
    pub duration: std::time::Duration,
    /// Backups made to get this one: more than one when `--consistent` discarded attempts that
    /// saw writes.
    pub attempts: u32,
}

const MAX_PAGE_ROWS: usize = 100_000;

/// What one batch of first pages brought back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct BatchWeight {
    /// First pages read, and how many of them came back full (their tables go on).
    pub pages: usize,
    pub full: usize,
    pub rows: usize,
    /// The pages' weight in all (see `page_weight`).
    pub weight: usize,
}

/// The next batch of first pages, `(tables, rows each)`, from the last batch of `size` tables read
/// at `limit` rows: when most pages came back full the row limit grows 4x (up to 4,096, and never
/// past what fits in `target` at the measured row weight), and as many tables as fit in `target`
/// bytes go in one batch, growing at most 4x a batch (up to 50), so one light batch cannot make
/// the next one huge.
pub(crate) fn next_batch(
    size: usize,
    limit: usize,
    last: BatchWeight,
    target: usize,
) -> (usize, usize) {
    let grown = (size * 4).min(MAX_BATCH_TABLES);
    if last.rows == 0 {
        return (grown, limit);
    }
    let row_weight = last.weight.div_ceil(last.rows).max(1);
    let limit = if last.full * 2 > last.pages {
        (limit * 4).min(MAX_FIRST_PAGE_ROWS)
    } else {
        limit
    };
    // Never more rows to a first page than fit in `target` on their own.
    let limit = limit.min(target / row_weight).max(1);
    let fit = target / (limit * row_weight);
    (fit.clamp(1, grown), limit)
}

/// The next page's row limit: as many rows as fit in `target` bytes at the last page's average
/// row size, growing at most [`PAGE_GROWTH`]x a page so one odd page cannot make the next one
/// huge.
pub(crate) fn next_page_rows(limit: usize, rows: usize, bytes: usize, target: usize) -> usize {
    if rows == 0 || bytes == 0 {
        return limit;
    }
    let fit = (target as u128 * rows as u128 / bytes as u128) as usize;
    fit.clamp(1, (limit * PAGE_GROWTH).min(MAX_PAGE_ROWS))
}

/// How much a table's row limit may grow from one page to the next: a first page of 256 rows
/// reaches 4 MiB pages of 100-byte rows in three steps.
const PAGE_GROWTH: usize = 8;

/// What a page weighs, as pages are sized: its literals plus four bytes a cell, about what it
/// costs in memory and, within a few bytes a cell, what its JSON answer from D1 carries.
fn page_weight(page: &Page) -> usize {
    page.literal_bytes() + 4 * page.cells()
}

/// What a page was asked for: after which key, up to which rowid, at which row limit, and, for
/// a window, the rowid the window starts after; and where its rows go among the reader's.
#[derive(Debug, Clone)]
struct Request {
    after: Vec<String>,
    upto: Option<i64>,
    limit: usize,
    window: Option<i64>,
    order: Order,
}

/// Where a page's rows go among its reader's: `(window, step)`, window 0 the first page and its
/// rest, and a page's rest one step after it, before any later window.
type Order = (u64, u64);

type PageFuture<'a> = futures::future::BoxFuture<'a, Result<(Page, Request)>>;

/// The page `request` asks of `table`, as a future that owns what it needs, so later pages can be
/// in flight while this one is processed (first pages come from `first_pages`).
fn fetch<'a>(source: &'a dyn Source, table: &'a Table, request: Request) -> PageFuture<'a> {
    Box::pin(async move {
        let page = source
            .page(table, Some(&request.after), request.upto, request.limit)
            .await
            .with_context(|| format!("reading table {}", table.name))?;
        Ok((page, request))
    })
}

/// The row limit a window asked to hold `rows` rows is read at: a quarter more, so a window a
/// little denser than estimated still comes in one page.
fn window_limit(rows: usize) -> usize {
    rows + rows / 4
}

/// Runs a backup of `source` into every store in `stores`: once, or under `--consistent` until
/// an attempt saw no write (or the attempts run out), waiting with backoff between attempts.
pub async fn run(
    source: &dyn Source,
    stores: &[Arc<dyn Store>],
    options: &BackupOptions,
) -> Result<BackupOutcome> {
    let started = Instant::now();
    let (result, made) = attempts(source, stores, options).await;
    let (manifest, manifest_sha256) = match result {
        Ok(done) => done,
        Err(Attempt::Failed(e)) => return Err(e),
        Err(Attempt::SawWrites) => {
            return Err(ConsistencyError::Writes { attempts: made }.into());
        }
    };
    Ok(BackupOutcome {
        manifest,
        manifest_sha256,
        duration: started.elapsed(),
        attempts: made,
    })
}

/// The attempts a backup makes (one, or more under `--consistent`), and how many it made.
async fn attempts(
    source: &dyn Source,
    stores: &[Arc<dyn Store>],
    options: &BackupOptions,
) -> (std::result::Result<(Manifest, String), Attempt>, u32) {
    let attempts = match options.consistency {
        Consistency::Mark => 1,
        Consistency::Require | Consistency::Prefer => options.consistent_attempts.max(1),
    };
    crate::remote::retry::run(
        &consistency::policy(attempts),
        |attempt| async move {
            let decide = |consistent| {
                consistency::decide(options.consistency, consistent, attempt, attempts)
            };
            match once(source, stores, options, decide).await {
                Ok(Some(manifest)) => Ok(manifest),
                Ok(None) => Err(Attempt::SawWrites),
                Err(e) => Err(Attempt::Failed(e)),
            }
        },
        |e| match e {
            Attempt::SawWrites => crate::remote::retry::Verdict::Retry { after: None },
            Attempt::Failed(_) => crate::remote::retry::Verdict::Fail,
        },
        |_, wait| {
            tracing::info!(
                "the backup saw writes and was discarded; trying again in {:.1} s",
                wait.as_secs_f64()
            )
        },
    )
    .await
}

/// How one attempt ended short of a backup: it saw writes and was discarded (worth another), or
/// it failed.
enum Attempt {
    SawWrites,
    Failed(Error),
}

/// One backup: the bookmark before the first read, the catalog, every part, the bookmark after
/// the last read; then `decide` says, from whether the two bookmarks agree, whether the manifest
/// is written (the backup and its SHA-256) or the parts are discarded (`None`; an error when the
/// source gave no bookmark, which another attempt cannot change).
async fn once(
    source: &dyn Source,
    stores: &[Arc<dyn Store>],
    options: &BackupOptions,
    decide: impl Fn(Option<bool>) -> Decision,
) -> Result<Option<(Manifest, String)>> {
    // The bookmark comes before the catalog: a write between the two would otherwise go unseen.
    // The id is claimed once the catalog is read, so a refused backup (a table filter that
    // matches nothing) writes nothing.
    let bookmark = source.bookmark().await?;
    let schema = catalog::load(source, &options.filter).await?;
    // A chunked backup holds a lock in every store ([`crate::format::lock`]) from before it
    // reads which chunks they hold until its manifest is written, so no prune deletes a chunk
    // it names; taken once the catalog is read, so a refused backup writes nothing.
    let held = match options.chunk_bytes {
        Some(_) => Some(chunks::Held::acquire(stores).await?),
        None => None,
    };
    let result = write(source, stores, options, decide, bookmark, schema).await;
    if let Some(held) = held {
        held.release().await;
    }
    result
}

/// The rest of [`once`], from the catalog read: the id claimed, every part or chunk, the
/// bookmark after the last read, and the manifest or the parts discarded.
async fn write(
    source: &dyn Source,
    stores: &[Arc<dyn Store>],
    options: &BackupOptions,
    decide: impl Fn(Option<bool>) -> Decision,
    bookmark: Option<String>,
    schema: crate::model::Schema,
) -> Result<Option<(Manifest, String)>> {
    // A chunked backup learns which chunks each store holds before it writes anything.
    let chunking = match options.chunk_bytes {
        Some(target) => Some(
            Chunking::new(
                stores,
                options.compression,
                options.encryption.clone(),
                target,
            )
            .await
            .context("reading the latest backups' chunks")?,
        ),
        None => None,
    };
    let id = claim::claim_id(stores, Utc::now()).await?;
    let mut info = source.info();
    info.bookmark = bookmark;
    tracing::info!(
        "backup {id}: {} from {}",
        crate::model::report::counted(schema.tables.len() as u64, "table", "tables"),
        info.name.as_deref().unwrap_or(&info.kind)
    );
    for (name, reason) in &schema.skipped {
        tracing::debug!("skipping {name}: {reason}");
    }
    let target = Target {
        chunking,
        stores: stores.to_vec(),
        id: id.clone(),
        compression: options.compression,
        encryption: options.encryption.clone(),
        data_parts: std::sync::atomic::AtomicUsize::new(0),
        written: std::sync::Mutex::new(Vec::new()),
        encoders: Arc::new(tokio::sync::Semaphore::new(
            std::thread::available_parallelism().map_or(2, |n| n.get()),
        )),
    };
    let read = async {
        let parts = write_backup(source, &schema, &target, options).await?;
        let end = source.bookmark().await?;
        Ok::<_, Error>((parts, end))
    };
    let ((objects, tables, schema_entries), end_bookmark) = match read.await {
        Ok(read) => read,
        Err(err) => {
            target.discard().await;
            return Err(err);
        }
    };
    info.end_bookmark = end_bookmark;
    let consistent = info.consistent();
    if decide(consistent) == Decision::Discard {
        target.discard().await;
        if consistent.is_none() {
            return Err(ConsistencyError::NoBookmark.into());
        }
        tracing::info!("backup {id} saw writes: {}", moved(&info));
        return Ok(None);
    }
    let manifest = Manifest {
        format: match (&options.chunk_bytes, &options.encryption) {
            (Some(_), _) => CHUNKED_FORMAT,
            (None, Some(_)) => SEALED_FORMAT,
            (None, None) => PLAIN_FORMAT,
        },
        tool: format!("d1r2 {}", env!("CARGO_PKG_VERSION")),
        id: id.clone(),
        created: Utc::now(),
        label: options.label.clone(),
        public_label: options.public_label && options.encryption.is_some(),
        source: info,
        compression: options.compression,
        encryption: options.encryption.as_ref().map(|key| EncryptionInfo {
            algorithm: crate::format::crypto::ALGORITHM.to_string(),
            key_fingerprint: key.fingerprint(),
            manifest: Some(crate::format::crypto::SEALING.to_string()),
        }),
        tables,
        schema: schema_entries,
        objects,
    };
    let json = crate::format::envelope::to_json(&manifest, options.encryption.as_ref())
        .context("encoding the manifest")?;
    let manifest_sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&json));
    let key = format!("{id}/{MANIFEST_NAME}");
    target.wrote(MANIFEST_NAME);
    let json = Bytes::from(json);
    let written = try_join_all(stores.iter().map(|s| s.put(&key, json.clone()))).await;
    if let Err(err) = written {
        target.discard().await;
        return Err(err).context("writing the manifest");
    }
    Ok(Some((manifest, manifest_sha256)))
}

/// How the bookmark moved, for a log line.
fn moved(info: &crate::model::SourceInfo) -> String {
    format!(
        "the Time Travel bookmark moved from {} to {}",
        info.bookmark.as_deref().unwrap_or("-"),
        info.end_bookmark.as_deref().unwrap_or("-")
    )
}

type Written = (
    Vec<ObjectEntry>,
    Vec<TableEntry>,
    Vec<crate::format::manifest::SchemaEntry>,
);

async fn write_backup(
    source: &dyn Source,
    schema: &crate::model::Schema,
    target: &Target,
    options: &BackupOptions,
) -> Result<Written> {
    // The schema and post parts depend on the catalog alone: they are written while the tables
    // are read, so neither costs the backup a round trip to the stores of its own.
    let schema_part = schema_statements(schema)?;
    let post_part = post_statements(schema)?;
    let entries = schema_part.iter().chain(&post_part);
    let entries = entries.map(|s| s.entry.clone()).collect();
    let (schema_part, post_part) = (
        part_sql(ObjectKind::Schema, &schema_part),
        part_sql(ObjectKind::Post, &post_part),
    );
    let extension = target.compression.extension();
    let (schema_key, post_key) = (format!("schema.{extension}"), format!("post.{extension}"));
    let (schema_object, results, post_object) = futures::try_join!(
        target.write_whole(&schema_key, ObjectKind::Schema, schema_part),
        read_tables(source, schema, target, options),
        target.write_whole(&post_key, ObjectKind::Post, post_part),
    )?;
    let mut objects = Vec::with_capacity(results.iter().map(|r| r.2.len()).sum::<usize>() + 2);
    objects.push(schema_object);
    // A table read by several readers is one entry: its rows summed, its parts in reader order.
    let mut tables: Vec<TableEntry> = Vec::new();
    let mut last = None;
    for (index, entry, parts) in results {
        match tables.last_mut() {
            Some(same) if last == Some(index) => same.rows += entry.rows,
            _ => tables.push(entry),
        }
        last = Some(index);
        objects.extend(parts);
    }
    for table in &tables {
        tracing::info!(
            "table {}: {}",
            table.name,
            crate::model::report::counted(table.rows, "row", "rows")
        );
    }
    objects.push(post_object);
    Ok((objects, tables, entries))
}

/// Every table's rows, as (table index, entry, parts) in catalog order, a table read by several
/// readers once a reader.
async fn read_tables(
    source: &dyn Source,
    schema: &crate::model::Schema,
    target: &Target,
    options: &BackupOptions,
) -> Result<Vec<(usize, TableEntry, Vec<ObjectEntry>)>> {
    // First pages come a batch of tables per request, the batch sized from the one before; each
    // table then goes on by itself, `concurrency` tables at a time, in catalog order.
    let page_bytes = options.page_bytes.unwrap_or_else(|| source.page_bytes());
    let batching = Batching {
        next: 0,
        size: options.concurrency.max(1),
        limit: FIRST_PAGE_ROWS,
    };
    let all = &schema.tables;
    let concurrency = options.concurrency.max(1);
    tracing::debug!(
        "holding at most {} pages at once, each sized to {page_bytes} bytes of literals",
        budget::pages(concurrency)
    );
    let readers = futures::stream::try_unfold(batching, move |state| {
        first_pages(
            source,
            all,
            state,
            page_bytes,
            (concurrency, options.table_readers),
        )
    })
    .try_flatten();
    // More than a batch read ahead: the next batch of first pages is asked for as soon as the one
    // before arrives, and comes while the tables before it are written.
    ReadAhead::new(Box::pin(readers), READ_AHEAD)
        .map_ok(|(i, reader)| backup_table(source, &all[i], i, target, options, reader))
        .try_buffered(concurrency)
        .try_collect()
        .await
}

/// Where the batches of first pages stand: the next table, and the next batch's size and rows.
#[derive(Debug, Clone, Copy)]
struct Batching {
    next: usize,
    size: usize,
    limit: usize,
}

/// Where one reader of a table starts: its first page and the row limit that was read at, or
/// its windows alone (with the row limit to read them at), or nowhere (no rows to read).
enum Start {
    First(Page, usize),
    After(usize),
    Nothing,
}

/// One reader of a table. A table is read by one reader, or, when its first page shows many
/// pages to come, it is keyed by its rowid and `--table-readers` allows, by several over
/// consecutive rowid ranges at once, each writing its own parts. A reader of a rowid range reads
/// it in windows ([`Windows`]), asking for the next before the rows of the one before arrive;
/// a reader without one pages by key, a round trip at a time.
struct Reader {
    /// Which of the table's readers (0 for the first): its parts are named by it.
    number: usize,
    start: Start,
    /// The last rowid this reader reads; `None` for the last reader, which also reads rows added
    /// past the table's largest rowid during the backup.
    upto: Option<i64>,
    /// The rowid windows the reader reads its range in, after its start.
    windows: Option<Windows>,
}

/// The most pages a reader of a split table is given, as estimated from its first page.
const PAGES_PER_READER: usize = 2;

/// How many readers the rest of a rowid table gets, from its first page (`rows` rows over
/// rowids `first..=last`, `weight` bytes) and its largest rowid `max`: one for every
/// [`PAGES_PER_READER`] pages of `page_bytes` it is estimated to hold after the first page, at
/// most `readers`, at least one.
pub(crate) fn readers_for(
    rows: usize,
    weight: usize,
    (first, last, max): (i64, i64, i64),
    page_bytes: usize,
    readers: usize,
) -> usize {
    let span = (last as i128 - first as i128 + 1).max(1);
    let rest = (max as i128 - last as i128).max(0);
    if rows == 0 {
        return 1;
    }
    let bytes = rest * weight as i128 / span;
    let pages = bytes / page_bytes.max(1) as i128;
    (pages / PAGES_PER_READER as i128).clamp(1, readers.max(1) as i128) as usize
}

/// The rowid ranges of `readers` readers splitting `last + 1 ..= max` evenly: each reader's last
/// rowid, `None` for the last reader.
pub(crate) fn split_rowids(last: i64, max: i64, readers: usize) -> Vec<Option<i64>> {
    let span = max as i128 - last as i128;
    (1..=readers)
        .map(|k| (k < readers).then(|| (last as i128 + span * k as i128 / readers as i128) as i64))
        .collect()
}

/// The next batch: up to `state.size` tables with rows (and the tables without rows between
/// them) with their first pages, and the state for the batch after.
async fn first_pages(
    source: &dyn Source,
    tables: &[Table],
    mut state: Batching,
    page_bytes: usize,
    (concurrency, table_readers): (usize, usize),
) -> Result<Option<(BatchItems, Batching)>> {
    if state.next >= tables.len() {
        return Ok(None);
    }
    let mut batch = Vec::new();
    let mut reading: Vec<&Table> = Vec::new();
    while state.next < tables.len() && reading.len() < state.size {
        let table = &tables[state.next];
        if table.data == DataMode::Rows {
            reading.push(table);
        }
        batch.push(state.next);
        state.next += 1;
    }
    let firsts = source
        .first_pages(&reading, state.limit)
        .await
        .with_context(|| match reading.as_slice() {
            [one] => format!("reading table {}", one.name),
            many => format!("reading the first rows of {} tables", many.len()),
        })?;
    let last = BatchWeight {
        pages: firsts.len(),
        full: firsts
            .iter()
            .filter(|f| f.page.goes_on(state.limit))
            .count(),
        rows: firsts.iter().map(|f| f.page.len()).sum(),
        weight: firsts.iter().map(|f| page_weight(&f.page)).sum(),
    };
    let limit = state.limit;
    (state.size, state.limit) = next_batch(state.size, state.limit, last, page_bytes);
    let mut firsts = firsts.into_iter();
    let firsts: Vec<(usize, Option<FirstPage>)> = batch
        .into_iter()
        .map(|i| {
            (
                i,
                (tables[i].data == DataMode::Rows)
                    .then(|| firsts.next())
                    .flatten(),
            )
        })
        .collect();
    // Full first pages of tables keyed by their rowid come with their largest rowid, which tells
    // how much is left, whether to split it among readers, and where the windows the rest is
    // read in end.
    let most = concurrency.min(table_readers);
    let mut items: Vec<Result<(usize, Reader)>> = Vec::new();
    for (i, first) in firsts {
        let Some(FirstPage {
            page,
            largest_rowid: max,
        }) = first
        else {
            let reader = Reader {
                number: 0,
                start: Start::Nothing,
                upto: None,
                windows: None,
            };
            items.push(Ok((i, reader)));
            continue;
        };
        let span = rowid_span(&tables[i], &page, limit);
        let split = span.zip(max).map(|((first, last), max)| {
            let weight = page_weight(&page);
            let keys = (first, last, max);
            let readers = readers_for(page.len(), weight, keys, page_bytes, most);
            let next = next_page_rows(limit, page.len(), weight, page_bytes);
            let density = Windows::density(page.len(), first, last);
            (last, max, split_rowids(last, max, readers), next, density)
        });
        let Some((last, max, bounds, next, density)) = split else {
            let reader = Reader {
                number: 0,
                start: Start::First(page, limit),
                upto: None,
                windows: None,
            };
            items.push(Ok((i, reader)));
            continue;
        };
        let (mut first, mut after) = (Some(page), last);
        for (number, upto) in bounds.into_iter().enumerate() {
            let start = match first.take() {
                Some(page) => Start::First(page, limit),
                None => Start::After(next),
            };
            let end = upto.unwrap_or(max);
            let reader = Reader {
                number,
                start,
                upto,
                windows: Some(Windows::new(after, end, upto.is_none(), density)),
            };
            items.push(Ok((i, reader)));
            after = upto.unwrap_or(after);
        }
    }
    Ok(Some((futures::stream::iter(items), state)))
}

type BatchItems = futures::stream::Iter<std::vec::IntoIter<Result<(usize, Reader)>>>;

/// The first and last rowid of `page`, the first page of `table`, when it came back full and
/// the table is keyed by its rowid: a table that may be worth reading by several readers.
fn rowid_span(table: &Table, page: &Page, limit: usize) -> Option<(i64, i64)> {
    if !page.goes_on(limit) || table.rowid_key().is_none() {
        return None;
    }
    Some((
        row_rowid(table, page.row(0))?,
        row_rowid(table, page.last()?)?,
    ))
}

/// The rowid of `row` of `table`, keyed by its rowid.
fn row_rowid(table: &Table, row: Row<'_>) -> Option<i64> {
    row_key(table, row).first()?.parse().ok()
}

async fn backup_table(
    source: &dyn Source,
    table: &Table,
    index: usize,
    target: &Target,
    options: &BackupOptions,
    reader: Reader,
) -> Result<(usize, TableEntry, Vec<ObjectEntry>)> {
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
    let page_bytes = options.page_bytes.unwrap_or_else(|| source.page_bytes());
    let part_name = |n: usize| match reader.number {
        0 => n.to_string(),
        r => format!("r{r}-{n}"),
    };
    let mut pages = Pages {
        source,
        table,
        page_bytes,
        limit: 0,
        sample: None,
        windows: reader.windows,
        inflight: FuturesUnordered::new(),
        order: InOrder::default(),
        ready: VecDeque::new(),
        rests: BTreeMap::new(),
        windows_asked: 0,
    };
    match reader.start {
        Start::First(page, limit) => {
            pages.limit = limit;
            let first = Request {
                after: Vec::new(),
                upto: reader.upto,
                limit,
                window: None,
                order: (0, 0),
            };
            pages.arrived(page, first);
        }
        Start::After(limit) => pages.limit = limit,
        Start::Nothing => {}
    }
    // The table's `sqlite_sequence` value follows all of its rows: it goes with the last reader.
    let seq = reader.upto.is_none().then(|| sequence_sql(table)).flatten();
    if let Some(chunking) = &target.chunking {
        let writer = InsertWriter::new(&table.name, &table.columns, table.key.clone());
        let chunker = Chunker::new(chunking.keys.clone(), chunking.sizes, writer);
        let objects = chunk_table(target, chunking, table, &mut pages, chunker, seq).await?;
        let rows = objects.iter().map(|o| o.rows).sum();
        let entry = TableEntry {
            name: table.name.clone(),
            rows,
            note,
        };
        return Ok((index, entry, objects));
    }
    let mut part: Option<OpenPart> = None;
    let writer = InsertWriter::new(&table.name, &table.columns, table.key.clone());
    let mut encoding: FuturesOrdered<EncodeFuture> = FuturesOrdered::new();
    // Pages being encoded: each is encoded in two halves, the second one marked.
    let mut encoding_pages = 0;
    let mut encoded: VecDeque<(Encoded, u64)> = VecDeque::new();
    let mut sending: Option<futures::future::BoxFuture<Result<Sent>>> = None;
    let mut parts_opened = 0;
    loop {
        pages.ask_ahead(encoding_pages);
        // Compressed halves wait to be sent one page at most: a slow destination holds back
        // compression, and through the pages held, the asking.
        while encoding_pages < ENCODERS
            && encoded.len() < MEMBERS_WAITING
            && let Some(page) = pages.ready.pop_front()
        {
            let page = Arc::new(page);
            let (len, half) = (page.len(), page.len().div_ceil(2));
            for rows in [0..half, half..len].into_iter().filter(|r| !r.is_empty()) {
                let last = rows.end == len;
                encoding.push_back(encode_rows(target, &writer, page.clone(), rows, last));
            }
            encoding_pages += 1;
        }
        if sending.is_none()
            && let Some((member, rows)) = encoded.pop_front()
        {
            // A member that would take its part past `part_bytes` starts the next part, and the
            // full one is finished on the way, beside the reading and compressing.
            let grown = |open: &mut OpenPart| {
                let before = open.encoder.encoded_bytes();
                before > 0 && before + member.encoded_len() as u64 > options.part_bytes
            };
            let full = part.take_if(grown);
            let open = part.take();
            let name = part_name(parts_opened);
            parts_opened += usize::from(open.is_none());
            sending = Some(Box::pin(async move {
                let closed = match full {
                    Some(full) => Some(target.close_part(full, None).await?),
                    None => None,
                };
                let open = target.reuse_or_open(open, table, index, name).await?;
                let (open, rows) = send_member(target, open, member, rows).await?;
                Ok(Sent { open, rows, closed })
            }));
        }
        tokio::select! {
            arrived = pages.inflight.next(), if !pages.inflight.is_empty() => {
                let (page, request) = arrived.expect("a page is in flight")?;
                pages.arrived(page, request);
            }
            member = encoding.next(), if !encoding.is_empty() => {
                let (member, rows, page_done) = member.expect("a page is being encoded")?;
                encoding_pages -= usize::from(page_done);
                encoded.push_back((member, rows));
            }
            sent = async { sending.as_mut().expect("a member is being sent").await }, if sending.is_some() => {
                sending = None;
                let Sent { open, rows, closed } = sent?;
                rows_total += rows;
                objects.extend(closed);
                part = Some(open);
            }
            else => break,
        }
    }
    if let Some(seq) = seq {
        let open = target
            .reuse_or_open(part.take(), table, index, part_name(parts_opened))
            .await?;
        objects.push(target.close_part(open, Some(seq)).await?);
    } else if let Some(open) = part.take() {
        objects.push(target.close_part(open, None).await?);
    }
    Ok((
        index,
        TableEntry {
            name: table.name.clone(),
            rows: rows_total,
            note,
        },
        objects,
    ))
}

/// One reader's rows of a table cut into chunks ([`Chunker`]) and stored: pages are asked for
/// ahead as for parts, and cut one at a time in order (where a chunk ends depends on the rows
/// before it), on a blocking thread; a chunk every store holds already is only hashed. Chunks
/// are stored while the next page is cut, up to [`CHUNKS_STORING`] bytes of their SQL, so the
/// round trips to the stores overlap the reading as a part's upload does.
async fn chunk_table(
    target: &Target,
    chunking: &Chunking,
    table: &Table,
    pages: &mut Pages<'_>,
    chunker: Chunker,
    tail: Option<String>,
) -> Result<Vec<ObjectEntry>> {
    let mut chunker = Some(chunker);
    let mut objects = Vec::new();
    let mut cutting: Option<CutStep> = None;
    let mut storing = FuturesOrdered::new();
    let mut storing_bytes = 0usize;
    let store = |c: ChunkSql, address: String| {
        let stored = chunking.store(&target.stores, &table.name, c.sql, address, c.rows);
        Box::pin(stored) as futures::future::BoxFuture<'_, Result<ObjectEntry>>
    };
    loop {
        pages.ask_ahead(usize::from(cutting.is_some()));
        if cutting.is_none()
            && storing_bytes < CHUNKS_STORING
            && let Some(page) = pages.ready.pop_front()
        {
            let chunker = chunker.take().expect("the chunker is back between pages");
            cutting = Some(Box::pin(cut_page(chunking.keys.clone(), chunker, page)));
        }
        tokio::select! {
            arrived = pages.inflight.next(), if !pages.inflight.is_empty() => {
                let (page, request) = arrived.expect("a page is in flight")?;
                pages.arrived(page, request);
            }
            done = async { cutting.as_mut().expect("a page is being cut").await }, if cutting.is_some() => {
                cutting = None;
                let (back, cut) = done?;
                chunker = Some(back);
                for (c, address) in cut {
                    storing_bytes += c.sql.len();
                    storing.push_back(store(c, address));
                }
            }
            stored = storing.next(), if !storing.is_empty() => {
                let entry = stored.expect("a chunk is being stored")?;
                storing_bytes -= entry.sql_bytes as usize;
                crate::model::progress::add(0, entry.bytes);
                objects.push(entry);
            }
            else => break,
        }
    }
    let chunker = chunker.expect("the chunker is back after the last page");
    let keys = chunking.keys.clone();
    let last = tokio::task::spawn_blocking(move || {
        chunker.finish(tail.as_deref()).map(|c| {
            let address = keys.address(c.sql.as_bytes());
            (c, address)
        })
    })
    .await?;
    if let Some((c, address)) = last {
        let entry = store(c, address).await?;
        crate::model::progress::add(0, entry.bytes);
        objects.push(entry);
    }
    Ok(objects)
}

/// The SQL of a reader's chunks being stored, at most, before it cuts another page: about
/// eight chunks of the default size in flight to the stores.
const CHUNKS_STORING: usize = 8 << 20;

/// A page being cut: the chunker back, and the chunks the page ended with their addresses.
type CutStep = futures::future::BoxFuture<'static, Result<(Chunker, Vec<(ChunkSql, String)>)>>;

/// Cuts a page's rows into the chunks they end, hashing each into its address, on a blocking
/// thread; gives back the chunker, holding the rows of the chunk still open.
async fn cut_page(
    keys: ChunkKeys,
    mut chunker: Chunker,
    page: Page,
) -> Result<(Chunker, Vec<(ChunkSql, String)>)> {
    let rows = page.len() as u64;
    let cut = tokio::task::spawn_blocking(move || {
        let mut done = Vec::new();
        let mut cells = Vec::with_capacity(page.width());
        for r in 0..page.len() {
            page.row(r).cells_into(&mut cells);
            if let Some(c) = chunker.push_row(&cells)? {
                let address = keys.address(c.sql.as_bytes());
                done.push((c, address));
            }
        }
        Ok::<_, Error>((chunker, done))
    })
    .await??;
    crate::model::progress::add(rows, 0);
    Ok(cut)
}

/// A member sent: the part it went to (still open), its rows, and the part finished before it
/// when it started a new one.
struct Sent {
    open: OpenPart,
    rows: u64,
    closed: Option<ObjectEntry>,
}

type EncodeFuture = futures::future::BoxFuture<'static, Result<(Encoded, u64, bool)>>;

/// Renders the rows `rows` of `page` into INSERTs and compresses them into a member of their own
/// on a blocking thread, so pages, and the halves of one page, compress at once; gives back the
/// member, its rows, and `last` (whether this was the page's last piece).
fn encode_rows(
    target: &Target,
    writer: &InsertWriter,
    page: Arc<Page>,
    rows: std::ops::Range<usize>,
    last: bool,
) -> EncodeFuture {
    let (compression, encoders) = (target.compression, target.encoders.clone());
    let mut writer = writer.clone();
    Box::pin(async move {
        let _core = encoders
            .acquire_owned()
            .await
            .expect("the encoders' semaphore is never closed");
        tokio::task::spawn_blocking(move || {
            let count = rows.len() as u64;
            let mut member = Member::new(compression);
            // SQL goes to the encoder in slices, so a page is never held twice.
            let mut sql = String::with_capacity(2 * RENDER_SLICE);
            let mut cells = Vec::with_capacity(page.width());
            for row in rows.map(|r| page.row(r)) {
                row.cells_into(&mut cells);
                writer.push_row(&cells, &mut sql)?;
                if sql.len() >= RENDER_SLICE {
                    member.write(sql.as_bytes())?;
                    sql.clear();
                }
            }
            writer.flush(&mut sql);
            member.write(sql.as_bytes())?;
            Ok::<_, Error>((member.finish()?, count, last))
        })
        .await?
    })
}

/// Appends a page's member to the open part (encrypting it when asked) and sends the bytes to
/// every destination; gives back the part and the rows sent.
async fn send_member(
    target: &Target,
    mut open: OpenPart,
    member: Encoded,
    rows: u64,
) -> Result<(OpenPart, u64)> {
    open.encoder.append(member)?;
    open.rows += rows;
    let chunk = open.encoder.take();
    crate::model::progress::add(rows, chunk.len() as u64);
    target.send(&mut open, chunk).await?;
    Ok((open, rows))
}

/// One reader's pages: asked for, in flight and arrived, and how the next ones are sized.
struct Pages<'a> {
    source: &'a dyn Source,
    table: &'a Table,
    page_bytes: usize,
    /// The row limit the next page is asked at.
    limit: usize,
    /// The rows and weight of the last page that arrived, which later pages are sized from.
    sample: Option<(usize, usize)>,
    /// The rowid windows the reader reads its range in, when it has one.
    windows: Option<Windows>,
    /// The pages asked for and not arrived, as they arrive.
    inflight: FuturesUnordered<PageFuture<'a>>,
    /// Where the pages in flight go, and those that arrived before a page ahead of them.
    order: InOrder<Order, Page>,
    /// Pages to be stored, in order.
    ready: VecDeque<Page>,
    /// The rest of a page's range, to be asked for once there is room (their places in `order`
    /// already kept), earliest first.
    rests: BTreeMap<Order, Request>,
    /// Windows asked for so far.
    windows_asked: u64,
}

impl<'a> Pages<'a> {
    /// Asks for the rests of pages, earliest first, and then the next windows, while fewer than
    /// [`PAGES_ASKED`] are asked for and fewer than [`PAGES_HELD`] pages are held, counting the
    /// `encoding` ones (see [`budget`]). The row limit grows from window to window as it would
    /// from page to page, so the windows asked together while the first pages are small do not
    /// all stay small.
    fn ask_ahead(&mut self, encoding: usize) {
        while self.has_room(encoding) {
            if let Some((_, rest)) = self.rests.pop_first() {
                self.inflight.push(fetch(self.source, self.table, rest));
                continue;
            }
            let Some((after, upto)) = self.windows.as_mut().and_then(|w| w.next(self.limit)) else {
                break;
            };
            self.windows_asked += 1;
            let request = Request {
                after: vec![after.to_string()],
                upto,
                limit: window_limit(self.limit),
                window: Some(after),
                order: (self.windows_asked, 0),
            };
            self.ask(request);
            if let Some((rows, bytes)) = self.sample {
                self.limit = next_page_rows(self.limit, rows, bytes, self.page_bytes);
            }
        }
    }

    /// Takes in a page that arrived for `request`, in whatever order pages arrive: sizes later
    /// pages from it, teaches the windows its density, keeps the rest of its range to be asked
    /// for first (once there is room) when it did not hold all of it, and queues its rows to be
    /// stored once no page ahead of it is still in flight.
    fn arrived(&mut self, page: Page, request: Request) {
        let n = page.len();
        let last = page.last().map(|row| row_key(self.table, row));
        if let (Some(w), Some(after)) = (self.windows.as_mut(), request.window) {
            let last_rowid = page.last().and_then(|row| row_rowid(self.table, row));
            let covered = match (page.goes_on(request.limit), request.upto, last_rowid) {
                (false, Some(upto), _) => upto.saturating_sub(after),
                (_, _, Some(last)) => last.saturating_sub(after),
                _ => 0,
            };
            w.learn(n, covered);
        }
        if n > 0 {
            let sample = (n, page_weight(&page));
            self.sample = Some(sample);
            self.limit = next_page_rows(self.limit, sample.0, sample.1, self.page_bytes);
        }
        // A first page whose table goes on in windows leaves the rest to them; any other page
        // that goes on is followed by the rest of its range, before any later window's rows.
        let windowed_first =
            self.windows.is_some() && request.window.is_none() && request.after.is_empty();
        if page.goes_on(request.limit)
            && !windowed_first
            && let Some(after) = last
        {
            let rest = Request {
                after,
                upto: request.upto,
                limit: self.limit,
                window: None,
                order: (request.order.0, request.order.1 + 1),
            };
            self.order.asked(rest.order);
            self.rests.insert(rest.order, rest);
        }
        self.order
            .arrived(request.order, (n > 0).then_some(page), &mut self.ready);
    }

    fn ask(&mut self, request: Request) {
        self.order.asked(request.order);
        self.inflight.push(fetch(self.source, self.table, request));
    }

    /// Whether another page may be asked for. Pages held behind a rest still to be asked for
    /// are fewer than [`PAGES_HELD`] (they were asked for beside the page it follows), so room
    /// always comes once the pages ahead of it are compressed; should nothing else be on its way,
    /// the next is asked for all the same, so a reader never stops with rows left.
    fn has_room(&self, encoding: usize) -> bool {
        let asked = self.inflight.len();
        let room = asked < PAGES_ASKED
            && asked + self.order.held() + self.ready.len() + encoding < PAGES_HELD;
        room || (asked == 0 && self.ready.is_empty() && encoding == 0)
    }
}

/// Where a backup's objects go: the same bytes to every store.
struct Target {
    stores: Vec<Arc<dyn Store>>,
    /// How a chunked backup cuts and stores its tables' rows; `None` for parts of its own.
    chunking: Option<Chunking>,
    id: String,
    compression: Compression,
    /// Pages compressing at once across all readers, one a core: more would only contend for
    /// the cores and hold more pages.
    encoders: Arc<tokio::sync::Semaphore>,
    encryption: Option<Key>,
    /// Data parts opened so far: an encrypted backup's data parts are named by this count alone,
    /// so their keys tell neither a table's name nor which parts belong to one table.
    data_parts: std::sync::atomic::AtomicUsize,
    /// The keys (in the backup's folder) this run has started to write, in order: all a failed
    /// run may delete.
    written: std::sync::Mutex<Vec<String>>,
}

struct OpenPart {
    key: String,
    table: String,
    uploads: Vec<Box<dyn Upload>>,
    encoder: PartEncoder,
    rows: u64,
}

impl Target {
    async fn open_part(&self, table: &Table, index: usize, part: String) -> Result<OpenPart> {
        let extension = self.compression.extension();
        let key = match self.encryption {
            Some(_) => {
                let n = self
                    .data_parts
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                format!("data/{n:04}.{extension}")
            }
            None => format!("data/{index:04}-{}.{part}.{extension}", slug(&table.name)),
        };
        let full = format!("{}/{key}", self.id);
        self.wrote(&key);
        let uploads = try_join_all(self.stores.iter().map(|s| s.put_stream(&full))).await?;
        let part_key = self.part_key(&key);
        Ok(OpenPart {
            key,
            table: table.name.clone(),
            uploads,
            encoder: PartEncoder::new(self.compression, part_key.as_ref())?,
            rows: 0,
        })
    }

    /// What the part stored under `key` is encrypted under, bound to its place.
    fn part_key(&self, key: &str) -> Option<PartKey> {
        self.encryption
            .as_ref()
            .map(|k| PartKey::bound(k, &self.id, key))
    }

    /// The part still open for a table, or a new one.
    async fn reuse_or_open(
        &self,
        open: Option<OpenPart>,
        table: &Table,
        index: usize,
        part: String,
    ) -> Result<OpenPart> {
        match open {
            Some(open) => Ok(open),
            None => self.open_part(table, index, part).await,
        }
    }

    async fn send(&self, part: &mut OpenPart, chunk: Bytes) -> Result<()> {
        if !chunk.is_empty() {
            try_join_all(part.uploads.iter_mut().map(|u| u.write(chunk.clone()))).await?;
        }
        Ok(())
    }

    async fn close_part(&self, mut part: OpenPart, tail: Option<String>) -> Result<ObjectEntry> {
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
        let sha256 = Some(stored.sha256);
        try_join_all(uploads.into_iter().map(|u| u.finish(sha256))).await?;
        Ok(entry(
            part.key,
            ObjectKind::Data,
            Some(part.table),
            part.rows,
            stored,
        ))
    }

    async fn write_whole(&self, key: &str, kind: ObjectKind, sql: String) -> Result<ObjectEntry> {
        let compression = self.compression;
        let part_key = self.part_key(key);
        let (bytes, stored) = tokio::task::spawn_blocking(move || {
            let mut encoder = PartEncoder::new(compression, part_key.as_ref())?;
            encoder.write(sql.as_bytes())?;
            let first = encoder.take();
            let (last, stored) = encoder.finish()?;
            Ok::<_, Error>(([first, last].concat(), stored))
        })
        .await??;
        let full = format!("{}/{key}", self.id);
        self.wrote(key);
        let bytes = Bytes::from(bytes);
        try_join_all(self.stores.iter().map(|s| s.put(&full, bytes.clone()))).await?;
        Ok(entry(key.to_string(), kind, None, 0, stored))
    }

    /// Notes a key before it is written: whether or not the write gets there, a failed run
    /// deletes it.
    fn wrote(&self, key: &str) {
        self.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(key.to_string());
    }

    /// Deletes what this run wrote, and nothing else in its folder, in [`discard_order`]; in a
    /// store where a delete fails the rest are left (prune removes them once a day old), so no
    /// listed backup ever loses a part.
    async fn discard(&self) {
        let written = self
            .written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let keys = discard_order(&written);
        let id = &self.id;
        join_all(self.stores.iter().map(|store| {
            let keys = &keys;
            async move {
                for key in keys {
                    if let Err(e) = store.delete(&format!("{id}/{key}")).await {
                        tracing::warn!("leaving backup {id} in {store} to prune: {e}");
                        return;
                    }
                }
            }
        }))
        .await;
    }
}

/// The order a failed backup's keys are deleted in: as [`deletion_order`] says (manifest first,
/// claim last), the parts newest first; the claim always, as the run made it.
fn discard_order(written: &[String]) -> Vec<String> {
    let keys = written.iter().rev().map(String::as_str);
    deletion_order(keys.chain([CLAIM_NAME]))
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
        sha256: hex::encode(stored.sha256),
        sql_bytes: stored.sql_bytes,
        chunk: None,
    }
}

#[cfg(test)]
mod tests {
    use super::{
        BatchWeight, discard_order, next_batch, next_page_rows, readers_for, split_rowids,
    };

    #[test]
    fn discard_order_table() {
        let v = |keys: &[&str]| keys.iter().map(|k| k.to_string()).collect::<Vec<_>>();
        for (written, want) in [
            (v(&[]), v(&["claim.json"])),
            (
                v(&["schema.sql.gz", "data/0000-t.0.sql.gz", "post.sql.gz"]),
                v(&[
                    "post.sql.gz",
                    "data/0000-t.0.sql.gz",
                    "schema.sql.gz",
                    "claim.json",
                ]),
            ),
            (
                v(&["schema.sql", "post.sql", "manifest.json"]),
                v(&["manifest.json", "post.sql", "schema.sql", "claim.json"]),
            ),
            (
                v(&["data/0000.sql.gz", "data/0000.sql.gz", "manifest.json"]),
                v(&["manifest.json", "data/0000.sql.gz", "claim.json"]),
            ),
        ] {
            assert_eq!(discard_order(&written), want, "{written:?}");
        }
    }

    #[test]
    fn batch_table() {
        const MIB4: usize = 4 << 20;
        let w = |pages, full, rows, weight| BatchWeight {
            pages,
            full,
            rows,
            weight,
        };
        for (size, limit, last, target, want) in [
            // Full pages of light rows: more rows a table, and more tables (4x at most).
            (4, 256, w(4, 4, 1024, 1024 * 130), MIB4, (16, 1024)),
            // Tables that ended within their first page: the limit stays, the batch fills.
            (16, 1024, w(16, 0, 16_000, 16_000 * 130), MIB4, (31, 1024)),
            // Tiny tables: capped at 50 tables and 4,096 rows.
            (50, 4096, w(50, 50, 204_800, 204_800 * 10), MIB4, (50, 4096)),
            // Empty tables weigh nothing: the batch grows, the limit stays.
            (4, 256, w(4, 0, 0, 0), MIB4, (16, 256)),
            // Heavy rows: fewer rows than before, one table a batch.
            (4, 256, w(4, 4, 1024, 1024 * 8000), MIB4, (1, 524)),
            // Rows heavier than the target: one row, one table.
            (4, 256, w(4, 1, 4, 4 * 5_000_000), MIB4, (1, 1)),
            // Mostly short pages keep the limit even when a few were full.
            (8, 256, w(8, 3, 1000, 1000 * 100), MIB4, (32, 256)),
        ] {
            assert_eq!(
                next_batch(size, limit, last, target),
                want,
                "{size} {limit} {last:?}"
            );
        }
    }

    #[test]
    fn page_rows_table() {
        for (limit, rows, bytes, target, want) in [
            (256, 256, 256 * 100, 1_000_000, 2048),
            (2048, 2048, 2048 * 100, 1_000_000, 10_000),
            (1024, 1024, 1024 * 100, 100_000_000, 8192),
            (256, 256, 256 * 1_000_000, 1_000_000, 1),
            (100_000, 100_000, 100_000, 1 << 30, 100_000),
            (10, 0, 0, 100, 10),
        ] {
            assert_eq!(next_page_rows(limit, rows, bytes, target), want);
        }
    }

    #[test]
    fn readers_table() {
        const MB: usize = 1 << 20;
        for (rows, weight, keys, page_bytes, readers, want) in [
            // 1,000 rows of 1 KiB over rowids 1..=1000, 999,000 more rowids: ~950 pages.
            (1000, 1000 * 1024, (1, 1000, 1_000_000), 4 * MB, 4, 4),
            // Three pages left: one reader more.
            (1000, MB, (1, 1000, 4000), MB, 4, 1),
            (1000, MB, (1, 1000, 5000), MB, 4, 2),
            // Nothing past the first page, or a largest rowid that went down meanwhile.
            (1000, MB, (1, 1000, 1000), MB, 4, 1),
            (1000, MB, (1, 1000, 10), MB, 4, 1),
            // Sparse rowids: 10 rows over 1..=1,000,000, then as sparse up to 10^7.
            (10, 10 * MB, (1, 1_000_000, 10_000_000), MB, 8, 8),
            // Extremes of i64 neither overflow nor divide by zero.
            (1, 100, (i64::MIN, i64::MIN, i64::MAX), 1, 3, 3),
            (0, 0, (1, 1, 100), MB, 4, 1),
            (5, 5 * MB, (7, 7, 100), 0, 4, 4),
        ] {
            assert_eq!(
                readers_for(rows, weight, keys, page_bytes, readers),
                want,
                "{rows} {weight} {keys:?}"
            );
        }
    }

    #[test]
    fn split_rowids_table() {
        for (last, max, readers, want) in [
            (0, 100, 1, vec![None]),
            (0, 100, 4, vec![Some(25), Some(50), Some(75), None]),
            (1000, 1003, 2, vec![Some(1001), None]),
            (10, 10, 3, vec![Some(10), Some(10), None]),
            (i64::MIN, i64::MAX, 2, vec![Some(-1), None]),
        ] {
            assert_eq!(
                split_rowids(last, max, readers),
                want,
                "{last} {max} {readers}"
            );
        }
    }
}
