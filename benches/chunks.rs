//! Chunked backups: what a chunked backup uploads, against a `--full` one, as a narrow database
//! stays the same, grows by 1% and has 1,000 rows updated at random places.
//!
//! Run with `cargo bench --bench chunks` (or `scripts/bench-chunks`). Environment:
//! - `D1R2_BENCH_MB`: the narrow database's size in MB (10^6 bytes); default `100`.
//! - `D1R2_BENCH_CHUNK_SIZES`: `--chunk-size` values in bytes, comma separated; default
//!   `1048576,262144,65536`.
//! - `D1R2_BENCH_STORES`: `folder` (a local folder), `s3` (the in-process S3 server), comma
//!   separated; default `folder,s3`.
//!
//! For every store: a full backup and its restore; then for every chunk size, in a store of its
//! own, a first chunked backup and its restore, a second of the unchanged database, one after 1%
//! more rows are appended, and one after 1,000 rows are updated at random places. Uploaded bytes
//! and objects are the files that appeared in the store (under `chunks/` and the backup's folder)
//! between before and after a backup; on S3, PUTs are the PUT requests the server answered
//! (objects, multipart parts, claims, locks and audit records). Wall time and peak RSS (VmHWM)
//! are measured as in `benches/backup.rs`. The base database is generated once under
//! `target/bench-data/` and copied for each chunk size, so every sequence starts from it.

#[allow(dead_code, reason = "the benchmark uses the S3 fake only")]
#[path = "../tests/it/fakes/mod.rs"]
mod fakes;
mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use fakes::s3::FakeS3;
use rusqlite::{Connection, params};
use support::*;

const BUCKET: &str = "bench";
/// Rows updated at random places between two backups.
const UPDATED_ROWS: usize = 1_000;

fn main() {
    let mb: u64 = env_list("D1R2_BENCH_MB", "100")
        .first()
        .and_then(|s| s.parse().ok())
        .expect("D1R2_BENCH_MB: one size in MB");
    let chunk_sizes: Vec<u64> = env_list("D1R2_BENCH_CHUNK_SIZES", "1048576,262144,65536")
        .iter()
        .map(|s| s.parse().expect("D1R2_BENCH_CHUNK_SIZES: sizes in bytes"))
        .collect();
    let stores = env_list("D1R2_BENCH_STORES", "folder,s3");

    let bin = PathBuf::from(env!("CARGO_BIN_EXE_d1r2"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let data = target.join("bench-data");
    fs::create_dir_all(&data).expect("create target/bench-data");
    let base = ensure_db(&data, Shape::Narrow, mb);
    let db_bytes = fs::metadata(&base).expect("stat db").len();
    let rows = count_rows(&base);

    println!("d1r2 chunked backup benchmark: binary {}", bin.display());
    println!("machine: {} cores, {}", cores(), cpu_model());
    println!(
        "database: narrow, {db_bytes} bytes, {rows} rows; {UPDATED_ROWS} rows updated; \
         1% = {} rows appended",
        rows / 100
    );
    println!();

    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let work = tempfile::tempdir_in(&data).expect("work dir");
    let mut lines = Vec::new();
    for store in &stores {
        let s3 = match store.as_str() {
            "folder" => None,
            "s3" => Some(runtime.block_on(FakeS3::start(&[BUCKET]))),
            other => panic!("D1R2_BENCH_STORES: unknown store {other:?}: folder or s3"),
        };
        let bench = Bench {
            bin: &bin,
            work: work.path(),
            s3: s3.as_ref(),
            rows,
        };
        lines.extend(bench.store(store, &base, &chunk_sizes));
    }

    println!();
    println!(
        "| store | backup | step | wall s | peak RSS MiB | bytes uploaded | objects | PUTs | % bytes | % objects |"
    );
    println!("|---|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for l in &lines {
        println!("{l}");
    }
}

struct Bench<'a> {
    bin: &'a Path,
    work: &'a Path,
    s3: Option<&'a FakeS3>,
    rows: u64,
}

/// What one backup added to its store.
#[derive(Clone, Copy)]
struct Uploaded {
    bytes: u64,
    objects: u64,
    /// PUT requests, on S3 only.
    puts: Option<u64>,
}

impl Bench<'_> {
    fn store(&self, name: &str, base: &Path, chunk_sizes: &[u64]) -> Vec<String> {
        let mut lines = Vec::new();
        let mut line = |backup: &str,
                        step: &str,
                        run: &Run,
                        up: Option<Uploaded>,
                        of: Option<Uploaded>| {
            let pct = |a: u64, b: u64| format!("{:.1}", 100.0 * a as f64 / b as f64);
            let (bytes, objects, puts) = up.map_or(("-".into(), "-".into(), "-".into()), |u| {
                (
                    u.bytes.to_string(),
                    u.objects.to_string(),
                    u.puts.map_or("-".into(), |p| p.to_string()),
                )
            });
            let (pb, po) = match (up, of) {
                (Some(u), Some(f)) => (pct(u.bytes, f.bytes), pct(u.objects, f.objects)),
                _ => ("-".into(), "-".into()),
            };
            eprintln!(
                "[{name}] {backup} {step}: {:.2} s, {:.1} MiB, {bytes} bytes, {objects} objects, {pb}%",
                run.wall.as_secs_f64(),
                run.peak_rss() as f64 / MIB
            );
            lines.push(format!(
                "| {name} | {backup} | {step} | {:.2} | {:.1} | {bytes} | {objects} | {puts} | {pb} | {po} |",
                run.wall.as_secs_f64(),
                run.peak_rss() as f64 / MIB,
            ));
        };

        warm(base);
        let (root, dest) = self.dest(name, "full");
        let (run, up, id) = self.backup(&root, &dest, base, &["--full".to_string()]);
        line("full", "backup", &run, Some(up), None);
        let run = self.restore(&dest, &id);
        line("full", "restore", &run, None, None);

        for &size in chunk_sizes {
            let label = format!("chunked {size}");
            let db = self.work.join(format!("{name}-{size}.db"));
            fs::copy(base, &db).expect("copy database");
            warm(&db);
            let (root, dest) = self.dest(name, &format!("chunked-{size}"));
            let args = ["--chunk-size".to_string(), size.to_string()];

            let (run, first, id) = self.backup(&root, &dest, &db, &args);
            line(&label, "first backup", &run, Some(first), Some(first));
            let run = self.restore(&dest, &id);
            line(&label, "restore", &run, None, None);

            let (run, up, _) = self.backup(&root, &dest, &db, &args);
            line(&label, "unchanged", &run, Some(up), Some(first));

            append_rows(&db, self.rows / 100);
            let (run, up, _) = self.backup(&root, &dest, &db, &args);
            line(&label, "+1% rows appended", &run, Some(up), Some(first));

            update_rows(&db, UPDATED_ROWS);
            let (run, up, _) = self.backup(&root, &dest, &db, &args);
            line(&label, "1,000 rows updated", &run, Some(up), Some(first));
            let _ = fs::remove_file(&db);
        }
        lines
    }

    /// The folder a store's objects land in, and the `--dest` naming it.
    fn dest(&self, store: &str, prefix: &str) -> (PathBuf, String) {
        match self.s3 {
            Some(s3) => (
                s3.root.path().join(BUCKET).join(prefix),
                format!("s3://{BUCKET}/{prefix}"),
            ),
            None => {
                let root = self.work.join(store).join(prefix);
                let dest = root.display().to_string();
                (root, dest)
            }
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(self.bin);
        command.args(args).env_remove("GITHUB_ACTIONS");
        if let Some(s3) = self.s3 {
            command.envs(s3.env());
        }
        command
    }

    /// Backs `db` up to `dest`: the run, what it uploaded and the backup's id.
    fn backup(
        &self,
        root: &Path,
        dest: &str,
        db: &Path,
        extra: &[String],
    ) -> (Run, Uploaded, String) {
        let before = files(root);
        let puts_before = self.puts();
        let mut args = vec![
            "backup",
            "--source",
            db.to_str().expect("utf-8 path"),
            "--dest",
            dest,
        ];
        args.extend(extra.iter().map(String::as_str));
        let run = measure(&mut self.command(&args));
        let after = files(root);
        let (up, id) = uploaded(&before, &after);
        let puts = self.puts().zip(puts_before).map(|(a, b)| a - b);
        (run, Uploaded { puts, ..up }, id)
    }

    /// Restores backup `id` of `dest` into a new file and checks its row count.
    fn restore(&self, dest: &str, id: &str) -> Run {
        let out = self.work.join("restored.db");
        let _ = fs::remove_file(&out);
        let args = [
            "restore",
            "--from",
            dest,
            "--backup",
            id,
            "--to",
            out.to_str().expect("utf-8 path"),
        ];
        let run = measure(&mut self.command(&args));
        assert_eq!(count_rows(&out), self.rows, "restored row count differs");
        let _ = fs::remove_file(&out);
        run
    }

    fn puts(&self) -> Option<u64> {
        self.s3
            .map(|s3| s3.log().iter().filter(|l| l.starts_with("PUT ")).count() as u64)
    }
}

/// Every file under `root`, by path relative to it, with its size.
fn files(root: &Path) -> BTreeMap<PathBuf, u64> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let meta = e.metadata().expect("stat");
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                let rel = e
                    .path()
                    .strip_prefix(root)
                    .expect("under root")
                    .to_path_buf();
                out.insert(rel, meta.len());
            }
        }
    }
    out
}

/// The files that appeared under `chunks/` and in the new backup's folder, and that backup's id
/// (the one new top-level folder other than `chunks`, `audit` and `locks`).
fn uploaded(before: &BTreeMap<PathBuf, u64>, after: &BTreeMap<PathBuf, u64>) -> (Uploaded, String) {
    let new: Vec<(&PathBuf, u64)> = after
        .iter()
        .filter(|(p, _)| !before.contains_key(*p))
        .map(|(p, b)| (p, *b))
        .collect();
    let top = |p: &Path| {
        p.components()
            .next()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
    };
    let ids: std::collections::BTreeSet<String> = new
        .iter()
        .filter(|(p, _)| p.components().count() > 1)
        .filter_map(|(p, _)| top(p))
        .filter(|t| !["chunks", "audit", "locks"].contains(&t.as_str()))
        .collect();
    assert_eq!(
        ids.len(),
        1,
        "expected one new backup folder, found {ids:?}"
    );
    let id = ids.into_iter().next().expect("one id");
    let counted: Vec<u64> = new
        .iter()
        .filter(|(p, _)| top(p).is_some_and(|t| t == "chunks" || t == id))
        .map(|(_, b)| *b)
        .collect();
    (
        Uploaded {
            bytes: counted.iter().sum(),
            objects: counted.len() as u64,
            puts: None,
        },
        id,
    )
}

/// Appends `count` event rows after the largest id.
fn append_rows(db: &Path, count: u64) {
    let mut conn = Connection::open(db).expect("open db");
    let mut id: i64 = conn
        .query_row("SELECT max(id) FROM events", [], |r| r.get(0))
        .expect("max id");
    let mut rng = Rng(0x00A9_9E4D ^ id as u64);
    let tx = conn.transaction().expect("begin");
    insert_events(&tx, "events", &mut rng, &mut id, count as usize).expect("append rows");
    tx.commit().expect("commit");
}

/// Gives `count` rows at random ids a new note and amount.
fn update_rows(db: &Path, count: usize) {
    let mut conn = Connection::open(db).expect("open db");
    let max: i64 = conn
        .query_row("SELECT max(id) FROM events", [], |r| r.get(0))
        .expect("max id");
    // The same rows for every chunk size.
    let mut rng = Rng(0x000D_A7E5);
    let tx = conn.transaction().expect("begin");
    {
        let mut stmt = tx
            .prepare("UPDATE events SET note = ?1, amount = ?2 WHERE id = ?3")
            .expect("prepare update");
        let mut note = String::new();
        let mut done = 0;
        while done < count {
            rng.note(&mut note);
            let amount = rng.below(1_000_000) as f64 / 100.0;
            let id = 1 + rng.below(max as u64) as i64;
            done += stmt.execute(params![note, amount, id]).expect("update row");
        }
    }
    tx.commit().expect("commit");
}
