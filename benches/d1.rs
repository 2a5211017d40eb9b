//! D1 to R2 benchmark, with no network: the same generated databases served by the fake
//! Cloudflare D1 API (a real SQLite database behind it, `D1R2_BENCH_LATENCY_MS` added to every
//! answer) and stored into the in-process S3 server. It runs d1r2's backup, restore and verify,
//! and for comparison the straightforward approach (`SELECT * ... LIMIT 1000 OFFSET n` through
//! `/query`, rows as JSON objects rendered to INSERTs, the whole dump in memory, gzip, one PUT),
//! on the same data in the same run.
//!
//! Run with `cargo bench --bench d1` (or `scripts/bench-d1`). Environment:
//! - `D1R2_BENCH_MB`: database sizes in MB, comma separated; default `28` (300,000 narrow rows).
//! - `D1R2_BENCH_SHAPES`: any of `narrow`, `wide`, `tables` (many 1,000-row tables), comma separated; default `narrow`.
//! - `D1R2_BENCH_LATENCY_MS`: added to every D1 answer; default `20`.
//! - `D1R2_BENCH_S3_LATENCY_MS`: added to every S3 answer, as R2 is a round trip away too;
//!   default `0`.
//! - `D1R2_BENCH_NAIVE_MAX_MB`: largest database the straightforward approach is run on (its
//!   rows read grow with the square of the row count); default `100`.
//! - `D1R2_BENCH_RUNS`: how many times each operation runs; the table gives the run of median
//!   wall time (default `3`). d1r2's backup and the straightforward approach run by turns, and
//!   their time ratio is the median of the pairs' ratios, so the machine's drift weighs on both.
//! - `D1R2_BENCH_PERF`: a directory; every run is then recorded there by `perf record -g`.
//! - `D1R2_BENCH_OPS`: the operations to run, any of `backup`, `readers` (the backup with
//!   `--table-readers 2`), `restore`, `verify`, `import`, `naive`, `chunked` (a first chunked
//!   backup and its restore, each by turns with a `--full` one), comma separated; default all but `chunked`; `backup`, `readers`
//!   and what reads their backups are `--full` backups
//!   (`restore`, `verify` and `import` read what `backup` stored).
//!
//! Every operation runs as a child process (the straightforward approach is this benchmark
//! re-run in a child mode), so wall time and peak RSS (VmHWM, polled every 10 ms) are its own;
//! requests and rows read are counted by the fake as D1 would bill them.

#[allow(
    dead_code,
    reason = "the benchmark uses the D1 and S3 fakes, not all of them"
)]
#[path = "../tests/it/fakes/mod.rs"]
mod fakes;
mod support;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fakes::d1::{ACCOUNT, FakeD1, TOKEN};
use fakes::s3::FakeS3;
use support::*;

const NAIVE_MODE: &str = "D1R2_BENCH_NAIVE";
const OPS: [&str; 7] = [
    "backup", "readers", "restore", "verify", "import", "naive", "chunked",
];
const BUCKET: &str = "bench";

fn main() {
    if let Ok(args) = std::env::var(NAIVE_MODE) {
        naive::run(&args);
        return;
    }
    let sizes: Vec<u64> = env_list("D1R2_BENCH_MB", "28")
        .iter()
        .map(|s| s.parse().expect("D1R2_BENCH_MB: sizes in MB"))
        .collect();
    let shapes: Vec<Shape> = env_list("D1R2_BENCH_SHAPES", "narrow")
        .iter()
        .map(|s| Shape::parse(s))
        .collect();
    let millis = |name: &str, default: &str| {
        Duration::from_millis(env_list(name, default)[0].parse().expect(name))
    };
    let latency = Latency {
        d1: millis("D1R2_BENCH_LATENCY_MS", "20"),
        s3: millis("D1R2_BENCH_S3_LATENCY_MS", "0"),
    };
    let naive_max: u64 = env_list("D1R2_BENCH_NAIVE_MAX_MB", "100")[0]
        .parse()
        .expect("D1R2_BENCH_NAIVE_MAX_MB");
    let runs: usize = env_list("D1R2_BENCH_RUNS", "3")[0]
        .parse()
        .expect("D1R2_BENCH_RUNS: a count");
    let ops = env_list(
        "D1R2_BENCH_OPS",
        "backup,readers,restore,verify,import,naive",
    );
    for op in &ops {
        assert!(
            OPS.contains(&op.as_str()),
            "D1R2_BENCH_OPS: {op} is none of {OPS:?}"
        );
    }
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_d1r2"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let data = target.join("bench-data");
    fs::create_dir_all(&data).expect("create target/bench-data");
    println!(
        "d1r2 D1 -> R2 benchmark: {} ms per D1 request, {} ms per S3 request",
        latency.d1.as_millis(),
        latency.s3.as_millis()
    );
    println!("machine: {} cores, {}", cores(), cpu_model());
    println!();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut lines = Vec::new();
    for &shape in &shapes {
        for &mb in &sizes {
            let db = ensure_db(&data, shape, mb);
            lines.extend(
                runtime.block_on(bench_one(
                    &bin,
                    shape,
                    mb,
                    &db,
                    latency,
                    // The straightforward approach only up to its largest size.
                    &ops.iter()
                        .filter(|op| mb <= naive_max || op.as_str() != "naive")
                        .cloned()
                        .collect::<Vec<_>>(),
                    runs,
                )),
            );
        }
    }
    println!();
    println!("Each figure is from the run of median wall time of {runs}.");
    println!();
    println!(
        "| shape | DB MB | rows | op | wall s | CPU s | D1 busy s | rows/s | MB/s | API requests | rows read | rows read / rows | peak RSS MiB | bytes stored |"
    );
    println!("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for l in &lines {
        println!("{l}");
    }
}

/// What every answer of the fakes waits before it is sent.
#[derive(Clone, Copy)]
struct Latency {
    d1: Duration,
    s3: Duration,
}

struct Figures {
    wall: Duration,
    cpu: Duration,
    rss: u64,
    requests: u64,
    rows_read: u64,
    /// Time the fake D1 spent answering (SQLite and JSON), which a real D1 spends on its side.
    busy: Duration,
    stored: u64,
}

async fn bench_one(
    bin: &Path,
    shape: Shape,
    mb: u64,
    db: &Path,
    latency: Latency,
    ops: &[String],
    runs: usize,
) -> Vec<String> {
    let wants = |op: &str| ops.iter().any(|o| o == op);
    let rows = count_rows(db);
    let db_bytes = fs::metadata(db).unwrap().len();
    let d1 = FakeD1::start().await;
    d1.add_database_from_file("bench", db);
    d1.set_latency(latency.d1);
    let s3 = FakeS3::start(&[BUCKET]).await;
    s3.set_latency(latency.s3);
    let label = format!("{}-{mb}", shape.name());
    eprintln!("[{label}] {db_bytes} bytes, {rows} rows");
    let work = tempfile::tempdir().unwrap();

    let env = {
        let mut env: Vec<(&str, String)> = s3.env();
        env.push(("CLOUDFLARE_API_BASE_URL", d1.url.clone()));
        env.push(("CLOUDFLARE_API_TOKEN", TOKEN.to_string()));
        env.push(("CLOUDFLARE_ACCOUNT_ID", ACCOUNT.to_string()));
        env
    };
    let run = |args: Vec<String>, env: Vec<(&'static str, String)>, exe: PathBuf| async move {
        tokio::task::spawn_blocking(move || {
            let mut command = command_for(exe, &args);
            command.env_remove("GITHUB_ACTIONS");
            for (k, v) in env {
                command.env(k, v);
            }
            measure(&mut command)
        })
        .await
        .unwrap()
    };
    let figures = |run: Run, d1: &FakeD1, stored: u64| Figures {
        wall: run.wall,
        cpu: run.cpu,
        rss: run.peak_rss(),
        requests: d1.count(|c| &c.requests),
        rows_read: d1.count(|c| &c.rows_read),
        busy: Duration::from_micros(d1.count(|c| &c.busy_us)),
        stored,
    };
    let strings = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let mut lines = Vec::new();
    let mut line = |op: &str, f: &Figures| {
        let secs = f.wall.as_secs_f64();
        eprintln!(
            "[{label}] {op}: {secs:.2} s, {} requests, {} rows read",
            f.requests, f.rows_read
        );
        lines.push(format!(
            "| {} | {} | {rows} | {op} | {secs:.2} | {:.2} | {:.2} | {} | {:.1} | {} | {} | {:.3} | {:.1} | {} |",
            shape.name(),
            db_bytes / MB,
            f.cpu.as_secs_f64(),
            f.busy.as_secs_f64(),
            (rows as f64 / secs) as u64,
            db_bytes as f64 / MB as f64 / secs,
            f.requests,
            f.rows_read,
            f.rows_read as f64 / rows as f64,
            f.rss as f64 / MIB,
            f.stored
        ));
    };

    let (d1, s3, run, figures) = (&d1, &s3, &run, &figures);
    let backup = |prefix: &'static str, extra: &'static [&'static str]| {
        let env = env.clone();
        move |k: usize| {
            // Every run to its own prefix, so bytes stored are one backup's.
            let prefix = if k == 0 {
                prefix.to_string()
            } else {
                format!("{prefix}-{k}")
            };
            let mut args = strings(&["backup", "--source", "d1://bench", "--dest"]);
            args.push(format!("s3://{BUCKET}/{prefix}"));
            args.extend(strings(extra));
            let env = env.clone();
            async move {
                d1.reset_counters();
                let done = run(args, env, bin.to_path_buf()).await;
                figures(
                    done,
                    d1,
                    dir_size(&s3.root.path().join(BUCKET).join(prefix)),
                )
            }
        }
    };
    let naive_env = {
        let args = serde_json::json!({
            "d1": d1.url, "s3": s3.url, "database": "bench",
        })
        .to_string();
        let mut naive_env = env.clone();
        naive_env.push((NAIVE_MODE, args));
        naive_env
    };
    let naive = |_: usize| {
        let naive_env = naive_env.clone();
        async move {
            d1.reset_counters();
            let done = run(Vec::new(), naive_env, std::env::current_exe().unwrap()).await;
            figures(
                done,
                d1,
                dir_size(&s3.root.path().join(BUCKET).join("naive")),
            )
        }
    };
    const NAIVE: &str = "straightforward (OFFSET, JSON, in memory, one PUT)";
    // Asked for both, d1r2's backup and the straightforward approach run by turns, and their
    // ratio is the median of the pairs' ratios.
    let (ours, theirs) = match (wants("backup"), wants("naive")) {
        (true, true) => {
            let (ours, theirs, ratio) = median_pair(
                runs,
                &label,
                ("d1r2 backup", backup("d1r2", &["--full"])),
                ("straightforward", naive),
            )
            .await;
            (Some(ours), Some((theirs, Some(ratio))))
        }
        (true, false) => (
            Some(median_of(runs, &label, "d1r2 backup", backup("d1r2", &["--full"])).await),
            None,
        ),
        (false, true) => (
            None,
            Some((
                median_of(runs, &label, "straightforward", naive).await,
                None,
            )),
        ),
        (false, false) => (None, None),
    };
    if let Some(ours) = &ours {
        line("d1r2 backup", ours);
    }
    // The same backup with two readers a large table (`--table-readers 2`), to its own prefix.
    if wants("readers") {
        let split = median_of(
            runs,
            &label,
            "d1r2 backup --table-readers 2",
            backup("d1r2-readers", &["--full", "--table-readers", "2"]),
        )
        .await;
        line("d1r2 backup --table-readers 2", &split);
    }

    let restore = |from: &'static str| {
        let (env, restored) = (env.clone(), work.path().join("restored.db"));
        move |_: usize| {
            let args = strings(&["restore", "--from", from, "--to"]);
            let (env, restored) = (env.clone(), restored.clone());
            async move {
                let _ = fs::remove_file(&restored);
                d1.reset_counters();
                let mut args = args;
                args.push(restored.to_str().unwrap().to_string());
                let done = run(args, env, bin.to_path_buf()).await;
                assert_eq!(count_rows(&restored), rows, "restored rows differ");
                figures(done, d1, fs::metadata(&restored).unwrap().len())
            }
        }
    };
    if wants("restore") {
        let name = "d1r2 restore (to a file)";
        let restored = median_of(runs, &label, name, restore("s3://bench/d1r2")).await;
        line(name, &restored);
    }
    // A first chunked backup, to a prefix of its own each run, and its restore, each by turns
    // with a full one, so the machine's drift weighs on both alike.
    if wants("chunked") {
        let (full, chunked, ratio) = median_pair(
            runs,
            &label,
            ("d1r2 backup --full", backup("d1r2-full", &["--full"])),
            ("d1r2 backup, chunked", backup("d1r2-chunked", &[])),
        )
        .await;
        line("d1r2 backup --full, by turns with chunked", &full);
        line(
            &format!("d1r2 backup, chunked (first): {ratio:.2}x the full one's time"),
            &chunked,
        );
        let (full, chunked, ratio) = median_pair(
            runs,
            &label,
            ("d1r2 restore of --full", restore("s3://bench/d1r2-full")),
            (
                "d1r2 restore of chunked",
                restore("s3://bench/d1r2-chunked"),
            ),
        )
        .await;
        line("d1r2 restore of the --full backup (to a file)", &full);
        line(
            &format!("d1r2 restore of the chunked backup: {ratio:.2}x the full one's time"),
            &chunked,
        );
    }

    if wants("verify") {
        let verify = median_of(runs, &label, "d1r2 verify", |_| {
            let env = env.clone();
            async move {
                d1.reset_counters();
                let args = strings(&["verify", "--from", "s3://bench/d1r2"]);
                figures(run(args, env, bin.to_path_buf()).await, d1, 0)
            }
        })
        .await;
        line("d1r2 verify", &verify);
    }

    if wants("import") {
        let import = median_of(runs, &label, "d1r2 restore (into D1, import API)", |k| {
            let env = env.clone();
            async move {
                let copy = d1.add_database(&format!("copy-{k}"), "");
                d1.reset_counters();
                let args = strings(&[
                    "restore",
                    "--from",
                    "s3://bench/d1r2",
                    "--to",
                    &format!("d1://{copy}"),
                ]);
                figures(run(args, env, bin.to_path_buf()).await, d1, 0)
            }
        })
        .await;
        line("d1r2 restore (into D1, import API)", &import);
    }

    if let Some((theirs, ratio)) = &theirs {
        line(NAIVE, theirs);
        if let (Some(ours), Some(ratio)) = (&ours, ratio) {
            lines.push(format!(
                "| {} | {} | {rows} | ratio straightforward / d1r2 | time {ratio:.1}x (medians {:.1}x) | | | | | requests {:.2}x | rows read {:.1}x | | RSS {:.1}x | |",
                shape.name(),
                db_bytes / MB,
                theirs.wall.as_secs_f64() / ours.wall.as_secs_f64(),
                theirs.requests as f64 / ours.requests as f64,
                theirs.rows_read as f64 / ours.rows_read as f64,
                theirs.rss as f64 / ours.rss as f64,
            ));
        }
    }
    let faults = s3.state.faults.load(Ordering::SeqCst);
    assert_eq!(faults, 0);
    let _ = std::io::stdout().flush();
    lines
}

/// Runs two operations by turns, `runs` times each, so a drift of the machine's speed (here a
/// fifth from one hour to the next) weighs on both alike; gives each one's run of median wall
/// time and the median of the pairs' ratios (the second's wall time over the first's).
async fn median_pair<A, AF, B, BF>(
    runs: usize,
    label: &str,
    (op_a, mut a): (&str, A),
    (op_b, mut b): (&str, B),
) -> (Figures, Figures, f64)
where
    A: FnMut(usize) -> AF,
    AF: std::future::Future<Output = Figures>,
    B: FnMut(usize) -> BF,
    BF: std::future::Future<Output = Figures>,
{
    let (mut firsts, mut seconds, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for k in 0..runs.max(1) {
        let first = a(k).await;
        let second = b(k).await;
        ratios.push(second.wall.as_secs_f64() / first.wall.as_secs_f64());
        firsts.push(first);
        seconds.push(second);
    }
    ratios.sort_by(f64::total_cmp);
    let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.1}")).collect();
    eprintln!("[{label}] {op_b} / {op_a}: pairs {}", shown.join(", "));
    (
        median_run(label, op_a, firsts),
        median_run(label, op_b, seconds),
        ratios[ratios.len() / 2],
    )
}

/// Runs an operation `runs` times and keeps the run of median wall time: on a shared machine one
/// run can be a quarter slower than the next, and the median is what a user can expect. Every
/// run's wall time goes to stderr, to show the spread.
async fn median_of<F, Fut>(runs: usize, label: &str, op: &str, mut once: F) -> Figures
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Figures>,
{
    let mut all = Vec::new();
    for k in 0..runs.max(1) {
        all.push(once(k).await);
    }
    median_run(label, op, all)
}

/// The run of median wall time of `all`, every run's wall time shown on stderr.
fn median_run(label: &str, op: &str, mut all: Vec<Figures>) -> Figures {
    let walls: Vec<String> = all
        .iter()
        .map(|f| format!("{:.2}", f.wall.as_secs_f64()))
        .collect();
    eprintln!("[{label}] {op}: runs {} s", walls.join(", "));
    all.sort_by_key(|f| f.wall);
    all.swap_remove(all.len() / 2)
}

/// The command that runs `exe` with `args`. With `D1R2_BENCH_PERF=DIR` it runs under
/// `perf record -g`, one `DIR/NN-OP.perf.data` a run, for `perf report`: where the CPU goes.
fn command_for(exe: PathBuf, args: &[String]) -> Command {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let Some(dir) = std::env::var_os("D1R2_BENCH_PERF") else {
        let mut command = Command::new(exe);
        command.args(args);
        return command;
    };
    let n = RUNS.fetch_add(1, Ordering::SeqCst);
    let op = args
        .first()
        .map(String::as_str)
        .unwrap_or("straightforward");
    let out = Path::new(&dir).join(format!("{n:02}-{op}.perf.data"));
    let mut command = Command::new("perf");
    command
        .args(["record", "-F", "2000", "-g", "-o"])
        .arg(out)
        .arg("--")
        .arg(exe)
        .args(args);
    command
}

/// The straightforward backup a hand-written workflow does, run as a child process.
mod naive {
    use std::io::Write;

    use aws_sdk_s3::config::{Credentials, Region};
    use serde_json::Value;

    use super::fakes::d1::{ACCOUNT, TOKEN};
    use super::fakes::s3::{ACCESS_KEY, SECRET_KEY};

    pub fn run(args: &str) {
        let args: Value = serde_json::from_str(args).unwrap();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(backup(
                args["d1"].as_str().unwrap(),
                args["s3"].as_str().unwrap(),
                args["database"].as_str().unwrap(),
            ));
    }

    async fn query(http: &reqwest::Client, url: &str, sql: &str) -> Vec<Value> {
        let answer: Value = http
            .post(url)
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({ "sql": sql }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        answer["result"][0]["results"].as_array().unwrap().clone()
    }

    fn literal(v: &Value) -> String {
        match v {
            Value::Null => "NULL".to_string(),
            Value::Number(n) => n.to_string(),
            Value::String(s) => format!("'{}'", s.replace('\'', "''")),
            Value::Array(bytes) => format!(
                "X'{}'",
                bytes
                    .iter()
                    .map(|b| format!("{:02x}", b.as_u64().unwrap()))
                    .collect::<String>()
            ),
            other => format!("'{other}'"),
        }
    }

    async fn backup(d1: &str, s3: &str, database: &str) {
        let http = reqwest::Client::new();
        let list: Value = http
            .get(format!(
                "{d1}/accounts/{ACCOUNT}/d1/database?name={database}"
            ))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = list["result"][0]["uuid"].as_str().unwrap().to_string();
        let url = format!("{d1}/accounts/{ACCOUNT}/d1/database/{id}/query");
        let tables = query(
            &http,
            &url,
            "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_cf_%'",
        )
        .await;
        let mut dump = String::from("PRAGMA defer_foreign_keys=TRUE;\n");
        for t in &tables {
            let name = t["name"].as_str().unwrap();
            dump.push_str(t["sql"].as_str().unwrap());
            dump.push_str(";\n");
            let mut offset = 0;
            loop {
                let rows = query(
                    &http,
                    &url,
                    &format!("SELECT * FROM \"{name}\" LIMIT 1000 OFFSET {offset}"),
                )
                .await;
                for row in &rows {
                    let object = row.as_object().unwrap();
                    let columns: Vec<String> = object.keys().map(|k| format!("\"{k}\"")).collect();
                    let values: Vec<String> = object.values().map(literal).collect();
                    dump.push_str(&format!(
                        "INSERT INTO \"{name}\" ({}) VALUES ({});\n",
                        columns.join(","),
                        values.join(",")
                    ));
                }
                if rows.len() < 1000 {
                    break;
                }
                offset += 1000;
            }
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(dump.as_bytes()).unwrap();
        let body = gz.finish().unwrap();
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .endpoint_url(s3)
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new(
                ACCESS_KEY, SECRET_KEY, None, None, "bench",
            ))
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(config)
            .put_object()
            .bucket(super::BUCKET)
            .key("naive/dump.sql.gz")
            .body(body.into())
            .send()
            .await
            .unwrap();
    }
}
