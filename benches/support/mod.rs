//! What the benchmarks share: generated databases, and running a child process while polling
//! its memory high-water mark.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};

pub const MB: u64 = 1_000_000;
pub const MIB: f64 = 1024.0 * 1024.0;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One table of small event rows.
    Narrow,
    /// One table of rows carrying a 1-4 KiB random BLOB.
    Wide,
    /// Many tables of 1,000 event rows each: what per-table overhead costs.
    Tables,
}

impl Shape {
    /// The shape named in a benchmark's environment variable.
    pub fn parse(name: &str) -> Shape {
        match name {
            "narrow" => Shape::Narrow,
            "wide" => Shape::Wide,
            "tables" => Shape::Tables,
            other => panic!("unknown shape {other:?}: narrow, wide or tables"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Shape::Narrow => "narrow",
            Shape::Wide => "wide",
            Shape::Tables => "tables",
        }
    }
}

/// A finished child: its wall time and the high-water mark of every process seen in its tree.
pub struct Run {
    pub wall: Duration,
    /// pid -> (command name, VmHWM bytes).
    pub peaks: BTreeMap<u32, (String, u64)>,
    /// CPU time (user + system) of the child itself, from its last sample before it exited.
    pub cpu: Duration,
}

impl Run {
    pub fn peak_rss(&self) -> u64 {
        self.peaks.values().map(|(_, b)| *b).max().unwrap_or(0)
    }
    pub fn describe(&self) -> String {
        self.peaks
            .values()
            .map(|(name, b)| format!("{name} {:.1} MiB", *b as f64 / MIB))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Runs `cmd` to completion, polling the memory high-water mark of it and its descendants.
pub fn measure(cmd: &mut Command) -> Run {
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
    let mut cpu = Duration::ZERO;
    let status = loop {
        sample_tree(child.id(), &mut peaks);
        if let Some(t) = cpu_time(child.id()) {
            cpu = t;
        }
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let wall = started.elapsed();
    let err = drain.join().unwrap_or_default();
    assert!(status.success(), "{cmd:?} failed: {status}\n{err}");
    Run { wall, peaks, cpu }
}

pub fn sample_tree(pid: u32, peaks: &mut BTreeMap<u32, (String, u64)>) {
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

/// User + system CPU time of a process, from `/proc/<pid>/stat` (clock ticks of 1/100 s).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

pub fn vm_hwm(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The database for `shape` at about `mb` MB, generated on first use.
pub fn ensure_db(data: &Path, shape: Shape, mb: u64) -> PathBuf {
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

pub fn generate(path: &Path, shape: Shape, target_bytes: u64) -> rusqlite::Result<()> {
    let mut conn = Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-65536;",
    )?;
    let page_size = conn.query_row("PRAGMA page_size", [], |r| r.get::<_, i64>(0))? as u64;
    let mut rng = Rng(0x5EED_D1E2 ^ target_bytes);
    let tx = conn.transaction()?;
    match shape {
        Shape::Narrow => {
            create_events(&tx, "events")?;
            let mut id = 0;
            loop {
                insert_events(&tx, "events", &mut rng, &mut id, 10_000)?;
                if page_count(&tx)? * page_size >= target_bytes {
                    break;
                }
            }
        }
        Shape::Tables => {
            for n in 1.. {
                let name = format!("events_{n:04}");
                create_events(&tx, &name)?;
                insert_events(&tx, &name, &mut rng, &mut 0, 1_000)?;
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

fn create_events(conn: &Connection, name: &str) -> rusqlite::Result<()> {
    conn.execute_batch(&format!(
        "CREATE TABLE {name}(id INTEGER PRIMARY KEY, ts INTEGER, kind TEXT, \
         user_id INTEGER, amount REAL, note TEXT)"
    ))
}

/// `count` event rows into `table`, ids continuing from `id`.
pub fn insert_events(
    conn: &Connection,
    table: &str,
    rng: &mut Rng,
    id: &mut i64,
    count: usize,
) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(&format!(
        "INSERT INTO {table}(id, ts, kind, user_id, amount, note) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
    ))?;
    let mut ts: i64 = 1_700_000_000_000 + *id * 2_500;
    let mut note = String::new();
    for _ in 0..count {
        *id += 1;
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
        stmt.execute(params![*id, ts, kind, user, amount, note_val])?;
    }
    Ok(())
}

pub fn page_count(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row("PRAGMA page_count", [], |r| r.get::<_, i64>(0))
        .map(|n| n as u64)
}

pub const KINDS: &[&str] = &[
    "click", "view", "purchase", "refund", "signup", "login", "logout", "search", "share",
    "comment",
];
pub const MIMES: &[&str] = &[
    "image/png",
    "image/jpeg",
    "application/pdf",
    "application/octet-stream",
];
pub const WORDS: &[&str] = &[
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
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// 3-15 random words mixed with random hex tokens: compressible, but not trivially.
    pub fn note(&mut self, out: &mut String) {
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

pub fn count_rows(db: &Path) -> u64 {
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

pub fn warm(path: &Path) {
    let mut f = fs::File::open(path).expect("open db");
    std::io::copy(&mut f, &mut std::io::sink()).expect("read db");
}

pub fn dir_size(path: &Path) -> u64 {
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

pub fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

pub fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

pub fn cpu_model() -> String {
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
