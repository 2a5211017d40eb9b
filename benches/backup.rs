//! Throughput and memory benchmark: `d1r2 backup`, `verify` and `restore` against
//! `sqlite3 DB .dump | gzip` on the same generated databases.
//!
//! Run with `cargo bench --bench backup` (or `scripts/bench`). Environment:
//! - `D1R2_BENCH_MB`: database sizes in MB (10^6 bytes), comma separated; default `100`.
//! - `D1R2_BENCH_SHAPES`: `narrow`, `wide` or both, comma separated; default `narrow,wide`.
//!
//! Databases are generated once under `target/bench-data/` and reused by later runs.
//!
//! Measuring: every operation runs as a child process. Wall time is spawn to exit. Peak RSS is
//! the `VmHWM` line of `/proc/<pid>/status`, polled every 10 ms for the child and all of its
//! descendants until the child exits; the figure reported is the largest high-water mark of any
//! single process (for the `sqlite3 | gzip` pipeline that is usually `sqlite3`; every process is
//! listed below the table). The growth in the last <10 ms before a process exits can be missed.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};

const MB: u64 = 1_000_000;
const MIB: f64 = 1024.0 * 1024.0;

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
        .map(|s| match s.as_str() {
            "narrow" => Shape::Narrow,
            "wide" => Shape::Wide,
            other => panic!("D1R2_BENCH_SHAPES: unknown shape {other:?}"),
        })
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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// One table of small event rows.
    Narrow,
    /// One table of rows carrying a 1-4 KiB random BLOB.
    Wide,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Narrow => "narrow",
            Shape::Wide => "wide",
        }
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

/// A finished child: its wall time and the high-water mark of every process seen in its tree.
struct Run {
    wall: Duration,
    /// pid -> (command name, VmHWM bytes).
    peaks: BTreeMap<u32, (String, u64)>,
}

impl Run {
    fn peak_rss(&self) -> u64 {
        self.peaks.values().map(|(_, b)| *b).max().unwrap_or(0)
    }
    fn describe(&self) -> String {
        self.peaks
            .values()
            .map(|(name, b)| format!("{name} {:.1} MiB", *b as f64 / MIB))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Runs `cmd` to completion, polling the memory high-water mark of it and its descendants.
fn measure(cmd: &mut Command) -> Run {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn");
    // Drain stderr on a thread so a chatty child cannot block on a full pipe.
    let mut stderr = child.stderr.take().expect("stderr");
    let drain = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let mut peaks: BTreeMap<u32, (String, u64)> = BTreeMap::new();
    let status = loop {
        sample_tree(child.id(), &mut peaks);
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let wall = started.elapsed();
    let err = drain.join().unwrap_or_default();
    assert!(status.success(), "{cmd:?} failed: {status}\n{err}");
    Run { wall, peaks }
}

fn sample_tree(pid: u32, peaks: &mut BTreeMap<u32, (String, u64)>) {
    let mut stack = vec![pid];
    while let Some(pid) = stack.pop() {
        if let Some(hwm) = vm_hwm(pid) {
            let name = fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|s| s.trim().to_string())
                .unwrap_or_default();
            // The name read last wins: right after fork it is still the parent's.
            let e = peaks.entry(pid).or_insert((String::new(), 0));
            e.0 = name;
            e.1 = e.1.max(hwm);
        }
        let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            if let Ok(children) = fs::read_to_string(task.path().join("children")) {
                stack.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
    }
}

fn vm_hwm(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The database for `shape` at about `mb` MB, generated on first use.
fn ensure_db(data: &Path, shape: Shape, mb: u64) -> PathBuf {
    let path = data.join(format!("{}-{mb}mb.db", shape.name()));
    if path.exists() {
        eprintln!("reusing {}", path.display());
        return path;
    }
    let tmp = data.join(format!("{}-{mb}mb.db.partial", shape.name()));
    let _ = fs::remove_file(&tmp);
    eprintln!("generating {} ...", path.display());
    let started = Instant::now();
    generate(&tmp, shape, mb * MB).expect("generate database");
    fs::rename(&tmp, &path).expect("rename generated database");
    eprintln!(
        "generated {} in {:.1} s",
        path.display(),
        started.elapsed().as_secs_f64()
    );
    path
}

fn generate(path: &Path, shape: Shape, target_bytes: u64) -> rusqlite::Result<()> {
    let mut conn = Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-65536;",
    )?;
    let page_size = conn.query_row("PRAGMA page_size", [], |r| r.get::<_, i64>(0))? as u64;
    let mut rng = Rng(0x5EED_D1E2 ^ target_bytes);
    let tx = conn.transaction()?;
    match shape {
        Shape::Narrow => {
            tx.execute_batch(
                "CREATE TABLE events(id INTEGER PRIMARY KEY, ts INTEGER, kind TEXT, \
                 user_id INTEGER, amount REAL, note TEXT)",
            )?;
            let mut stmt = tx.prepare(
                "INSERT INTO events(id, ts, kind, user_id, amount, note) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            let mut ts: i64 = 1_700_000_000_000;
            let mut id: i64 = 0;
            let mut note = String::new();
            loop {
                for _ in 0..10_000 {
                    id += 1;
                    ts += rng.below(5_000) as i64;
                    let kind = KINDS[rng.below(KINDS.len() as u64) as usize];
                    let user = 1 + rng.below(1_000_000) as i64;
                    // Cents, sometimes negative, sometimes NULL.
                    let amount = if rng.below(10) == 0 {
                        None
                    } else {
                        Some((rng.below(2_000_000) as f64 - 200_000.0) / 100.0)
                    };
                    rng.note(&mut note);
                    let note_val = if rng.below(8) == 0 {
                        None
                    } else {
                        Some(note.as_str())
                    };
                    stmt.execute(params![id, ts, kind, user, amount, note_val])?;
                }
                if page_count(&tx)? * page_size >= target_bytes {
                    break;
                }
            }
        }
        Shape::Wide => {
            tx.execute_batch(
                "CREATE TABLE files(id INTEGER PRIMARY KEY, name TEXT NOT NULL, mime TEXT, \
                 size INTEGER NOT NULL, data BLOB NOT NULL)",
            )?;
            let mut stmt = tx.prepare(
                "INSERT INTO files(id, name, mime, size, data) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut id: i64 = 0;
            let mut blob = Vec::new();
            loop {
                for _ in 0..1_000 {
                    id += 1;
                    let len = 1024 + rng.below(3 * 1024 + 1) as usize;
                    blob.clear();
                    while blob.len() < len {
                        blob.extend_from_slice(&rng.next().to_le_bytes());
                    }
                    blob.truncate(len);
                    let mime = MIMES[rng.below(MIMES.len() as u64) as usize];
                    let name = format!("upload/{:08x}/{id}.bin", rng.next() as u32);
                    stmt.execute(params![id, name, mime, len as i64, blob])?;
                }
                if page_count(&tx)? * page_size >= target_bytes {
                    break;
                }
            }
        }
    }
    tx.commit()
}

fn page_count(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row("PRAGMA page_count", [], |r| r.get::<_, i64>(0))
        .map(|n| n as u64)
}

const KINDS: &[&str] = &[
    "click", "view", "purchase", "refund", "signup", "login", "logout", "search", "share",
    "comment",
];
const MIMES: &[&str] = &[
    "image/png",
    "image/jpeg",
    "application/pdf",
    "application/octet-stream",
];
const WORDS: &[&str] = &[
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "yankee",
    "zulu",
    "order",
    "cart",
    "device",
    "session",
    "region",
    "retry",
    "timeout",
    "user's",
    "\"quoted\"",
    "émoji-ok",
    "日本",
    "null",
    "x'00'",
];

/// SplitMix64: small, seeded, good enough for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// 3-15 random words mixed with random hex tokens: compressible, but not trivially.
    fn note(&mut self, out: &mut String) {
        use std::fmt::Write;
        out.clear();
        let words = 3 + self.below(13);
        for i in 0..words {
            if i > 0 {
                out.push(' ');
            }
            if self.below(4) == 0 {
                let _ = write!(out, "{:x}", self.next() >> (self.below(48) + 8));
            } else {
                out.push_str(WORDS[self.below(WORDS.len() as u64) as usize]);
            }
        }
    }
}

fn count_rows(db: &Path) -> u64 {
    let conn = Connection::open(db).expect("open db");
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .and_then(|mut s| {
            s.query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()
        })
        .expect("list tables");
    tables
        .iter()
        .map(|t| {
            conn.query_row(
                &format!("SELECT count(*) FROM \"{}\"", t.replace('"', "\"\"")),
                [],
                |r| r.get::<_, i64>(0),
            )
            .expect("count rows") as u64
        })
        .sum()
}

fn warm(path: &Path) {
    let mut f = fs::File::open(path).expect("open db");
    std::io::copy(&mut f, &mut std::io::sink()).expect("read db");
}

fn dir_size(path: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in fs::read_dir(&p).expect("read dir").flatten() {
            let meta = e.metadata().expect("stat");
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                total += meta.len();
            }
        }
    }
    total
}

fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string())
}
