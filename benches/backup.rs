//! Throughput and memory benchmark: `d1r2 backup`, `verify` and `restore` against
//! `sqlite3 DB .dump | gzip` on the same generated databases.
//!
//! Run with `cargo bench --bench backup` (or `scripts/bench`). Environment:
//! - `D1R2_BENCH_MB`: database sizes in MB (10^6 bytes), comma separated; default `100`.
//! - `D1R2_BENCH_SHAPES`: any of `narrow`, `wide`, `tables` (many 1,000-row tables), comma separated; default `narrow,wide`.
//!
//! Databases are generated once under `target/bench-data/` and reused by later runs.
//!
//! Measuring: every operation runs as a child process. Wall time is spawn to exit. Peak RSS is
//! the `VmHWM` line of `/proc/<pid>/status`, polled every 10 ms for the child and all of its
//! descendants until the child exits; the figure reported is the largest high-water mark of any
//! single process (for the `sqlite3 | gzip` pipeline that is usually `sqlite3`; every process is
//! listed below the table). The growth in the last <10 ms before a process exits can be missed.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::*;

fn main() {
    // `cargo bench` passes `--bench` (and maybe a filter); nothing to parse.
    let sizes: Vec<u64> = env_list("D1R2_BENCH_MB", "100")
        .iter()
        .map(|s| {
            s.parse()
                .unwrap_or_else(|_| panic!("D1R2_BENCH_MB: bad size {s:?}"))
        })
        .collect();
    let shapes: Vec<Shape> = env_list("D1R2_BENCH_SHAPES", "narrow,wide")
        .iter()
        .map(|s| Shape::parse(s))
        .collect();

    let bin = PathBuf::from(env!("CARGO_BIN_EXE_d1r2"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let data = target.join("bench-data");
    fs::create_dir_all(&data).expect("create target/bench-data");

    println!("d1r2 benchmark: binary {}", bin.display());
    println!("machine: {} cores, {}", cores(), cpu_model());
    println!(
        "peak RSS: VmHWM of /proc/<pid>/status polled every 10 ms (largest single process of the tree)"
    );
    println!();

    let mut rows_out = Vec::new();
    let mut notes = Vec::new();
    for &shape in &shapes {
        for &mb in &sizes {
            let db = ensure_db(&data, shape, mb);
            rows_out.extend(bench_one(&bin, &data, shape, mb, &db, &mut notes));
        }
    }

    println!();
    println!(
        "| shape | DB MB | rows | tool / op | wall s | rows/s | MB/s | peak RSS MiB | bytes out |"
    );
    println!("|---|---:|---:|---|---:|---:|---:|---:|---:|");
    for r in &rows_out {
        println!(
            "| {} | {:.0} | {} | {} | {:.2} | {} | {:.1} | {:.1} | {} |",
            r.shape,
            r.db_bytes as f64 / MB as f64,
            r.rows,
            r.op.replace('|', "\\|"),
            r.wall.as_secs_f64(),
            r.rows_per_s(),
            r.mb_per_s(),
            r.peak_rss as f64 / MIB,
            r.bytes_out
                .map_or_else(|| "-".to_string(), |b| b.to_string()),
        );
    }
    println!();
    for n in &notes {
        println!("{n}");
    }
}

struct Measured {
    shape: &'static str,
    db_bytes: u64,
    rows: u64,
    op: String,
    wall: Duration,
    peak_rss: u64,
    bytes_out: Option<u64>,
}

impl Measured {
    fn rows_per_s(&self) -> u64 {
        (self.rows as f64 / self.wall.as_secs_f64()) as u64
    }
    fn mb_per_s(&self) -> f64 {
        self.db_bytes as f64 / MB as f64 / self.wall.as_secs_f64()
    }
}

fn bench_one(
    bin: &Path,
    data: &Path,
    shape: Shape,
    mb: u64,
    db: &Path,
    notes: &mut Vec<String>,
) -> Vec<Measured> {
    let db_bytes = fs::metadata(db).expect("stat db").len();
    let rows = count_rows(db);
    let label = format!("{}-{mb}", shape.name());
    let out = data.join("out").join(&label);
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&out).expect("create output dir");
    let dest = out.join("d1r2");
    let restored = out.join("restored.db");
    let dump = out.join("dump.sql.gz");

    // Warm the page cache so neither tool pays for the first read of the file.
    warm(db);
    eprintln!("[{label}] {db_bytes} bytes, {rows} rows");

    let mut results = Vec::new();
    let mut record = |op: &str, run: Run, bytes_out: Option<u64>, notes: &mut Vec<String>| {
        eprintln!(
            "[{label}] {op}: {:.2} s, peak RSS {:.1} MiB",
            run.wall.as_secs_f64(),
            run.peak_rss() as f64 / MIB
        );
        notes.push(format!(
            "{label} {op}: peak RSS by process: {}",
            run.describe()
        ));
        results.push(Measured {
            shape: shape.name(),
            db_bytes,
            rows,
            op: op.to_string(),
            wall: run.wall,
            peak_rss: run.peak_rss(),
            bytes_out,
        });
    };

    let backup = measure(
        Command::new(bin)
            .arg("backup")
            .arg("--full")
            .arg("--source")
            .arg(db)
            .arg("--dest")
            .arg(&dest),
    );
    let backup_wall = backup.wall;
    record("d1r2 backup", backup, Some(dir_size(&dest)), notes);

    let pipeline = format!(
        "sqlite3 {} .dump | gzip > {}",
        shell_quote(db),
        shell_quote(&dump)
    );
    let sqlite = measure(Command::new("sh").arg("-c").arg(&pipeline));
    let sqlite_wall = sqlite.wall;
    record(
        "sqlite3 .dump | gzip",
        sqlite,
        Some(fs::metadata(&dump).expect("stat dump").len()),
        notes,
    );

    let verify = measure(Command::new(bin).arg("verify").arg("--from").arg(&dest));
    record("d1r2 verify", verify, None, notes);

    let restore = measure(
        Command::new(bin)
            .arg("restore")
            .arg("--from")
            .arg(&dest)
            .arg("--to")
            .arg(&restored),
    );
    record(
        "d1r2 restore",
        restore,
        Some(fs::metadata(&restored).expect("stat restored db").len()),
        notes,
    );
    let restored_rows = count_rows(&restored);
    assert_eq!(restored_rows, rows, "restored row count differs");

    notes.push(format!(
        "{label}: d1r2 backup / sqlite3 .dump|gzip wall time = {:.2}",
        backup_wall.as_secs_f64() / sqlite_wall.as_secs_f64()
    ));
    let _ = fs::remove_dir_all(&out);
    results
}
