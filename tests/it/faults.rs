//! Backups read and written through a connection that breaks: the binary against the in-process
//! S3 server behind the fault-injecting proxy (`fakes::faults`). A read that a broken connection
//! interrupts goes on and ends exact; a read that keeps failing is a network failure, never a
//! corrupt backup; a part that really is corrupt is still reported as one; an upload whose
//! connection drops is sent again, or the backup fails with nothing of it left visible.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;

use crate::common::assert_same_database;
use crate::common::cmd::{D1r2, Run};
use crate::fakes::faults::{At, Event, Fault, FaultProxy, Rule};
use crate::fakes::s3::FakeS3;

const BUCKET: &str = "bkt";

/// A seeded generator (splitmix64), its seed printed so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("D1R2_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(rand::random);
        eprintln!("D1R2_TEST_SEED={seed}");
        Rng(seed)
    }

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

    /// Somewhere inside a body: not at its very start or end.
    fn inside(&mut self) -> At {
        At::Fraction(0.05 + self.below(900) as f64 / 1000.0)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    fn text(&mut self, n: usize) -> String {
        const CHARS: &[char] = &[
            'a', 'Z', '0', ' ', '\'', '"', '\n', '\r', '\t', ';', '\\', 'é', 'ß', '中', '🦀',
            '\u{0}',
        ];
        (0..n)
            .map(|_| CHARS[self.below(CHARS.len() as u64) as usize])
            .collect()
    }

    fn name(&mut self, stem: &str) -> String {
        format!("{stem}{:x}", self.next() >> 40)
    }
}

/// A database of random content big enough for its largest table to take more than one part
/// (incompressible BLOBs past 5 MiB), beside a table of every storage class and a small one.
fn random_database(path: &Path, rng: &mut Rng) {
    let mut conn = Connection::open(path).unwrap();
    let (blobs, mixed, small) = (rng.name("blobs_"), rng.name("mixed "), rng.name("small_"));
    conn.execute_batch(&format!(
        "CREATE TABLE \"{blobs}\"(id INTEGER PRIMARY KEY, data BLOB);
         CREATE TABLE \"{mixed}\"(k INTEGER PRIMARY KEY, i, r, t, b);
         CREATE TABLE \"{small}\"(name TEXT PRIMARY KEY, v) WITHOUT ROWID;
         CREATE INDEX \"{mixed} by i\" ON \"{mixed}\"(i);"
    ))
    .unwrap();
    let tx = conn.transaction().unwrap();
    let target = (11 << 19) + rng.below(1 << 20) as usize;
    let mut total = 0;
    while total < target {
        let len = 2048 + rng.below(6144) as usize;
        let blob = rng.bytes(len);
        total += blob.len();
        tx.execute(
            &format!("INSERT INTO \"{blobs}\"(data) VALUES (?1)"),
            [blob],
        )
        .unwrap();
    }
    for _ in 0..300 + rng.below(300) {
        let real = f64::from_bits(rng.next());
        let real = if real.is_finite() {
            real
        } else {
            rng.next() as f64
        };
        let i = rng.next() as i64;
        let len = rng.below(40) as usize;
        let text = rng.text(len);
        let blob = match rng.below(3) {
            0 => rusqlite::types::Value::Null,
            1 => {
                let len = rng.below(64) as usize;
                rusqlite::types::Value::Blob(rng.bytes(len))
            }
            _ => rusqlite::types::Value::Integer(rng.next() as i64),
        };
        tx.execute(
            &format!("INSERT INTO \"{mixed}\"(i, r, t, b) VALUES (?1, ?2, ?3, ?4)"),
            rusqlite::params![i, real, text, blob],
        )
        .unwrap();
    }
    for n in 0..20 + rng.below(30) {
        tx.execute(
            &format!("INSERT INTO \"{small}\" VALUES (?1, ?2)"),
            rusqlite::params![format!("{n}-{}", rng.text(5)), rng.next() as i64],
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

/// A store on the fake S3 server, a random database backed up into it (not through the proxy),
/// and the proxy in front of the server.
struct World {
    server: FakeS3,
    proxy: FaultProxy,
    prefix: String,
    dir: tempfile::TempDir,
    db: PathBuf,
    rng: Rng,
}

impl World {
    async fn start() -> World {
        let server = FakeS3::start(&[BUCKET]).await;
        let proxy = FaultProxy::start(&server.url).await;
        let mut rng = Rng::new();
        let prefix = format!("{}/{}", rng.name("team"), rng.name("db"));
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        random_database(&db, &mut rng);
        World {
            server,
            proxy,
            prefix,
            dir,
            db,
            rng,
        }
    }

    fn dest(&self) -> String {
        format!("s3://{BUCKET}/{}", self.prefix)
    }

    /// The store's folder in the server's root.
    fn root(&self) -> PathBuf {
        self.server.root.path().join(BUCKET).join(&self.prefix)
    }

    /// Runs d1r2 with `args`, through the proxy or straight to the server.
    async fn run(&self, args: &[&str], through_proxy: bool) -> Run {
        let mut cmd = D1r2::new();
        cmd.args(args)
            .envs(self.server.env())
            .env_remove("D1R2_ENCRYPTION_KEY");
        if through_proxy {
            cmd.env("AWS_ENDPOINT_URL_S3", &self.proxy.url);
        }
        tokio::task::spawn_blocking(move || cmd.run())
            .await
            .unwrap()
    }

    /// A full backup: these tests break its parts' reads and writes.
    async fn backup(&self, through_proxy: bool) -> Run {
        let db = self.db.to_str().unwrap().to_string();
        self.run(
            &["backup", "--full", "--source", &db, "--dest", &self.dest()],
            through_proxy,
        )
        .await
    }

    /// Every object under the store's prefix, as keys relative to it.
    fn keys(&self) -> Vec<String> {
        fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, base, out);
                } else {
                    let key = path.strip_prefix(base).unwrap().to_string_lossy();
                    out.push(key.into_owned());
                }
            }
        }
        let mut keys = Vec::new();
        walk(&self.root(), &self.root(), &mut keys);
        keys.sort();
        keys
    }

    /// The keys of the backup's parts, as the manifest names them in the store.
    fn parts(&self) -> Vec<String> {
        let manifest = self
            .keys()
            .into_iter()
            .find(|k| k.ends_with("/manifest.json"))
            .expect("a backup");
        let id = manifest.split('/').next().unwrap().to_string();
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.root().join(&manifest)).unwrap()).unwrap();
        json["objects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| format!("{id}/{}", o["key"].as_str().unwrap()))
            .collect()
    }

    /// The audit records the store holds, as JSON.
    fn audit(&self) -> Vec<serde_json::Value> {
        self.keys()
            .iter()
            .filter(|k| k.starts_with("audit/"))
            .map(|k| serde_json::from_slice(&std::fs::read(self.root().join(k)).unwrap()).unwrap())
            .collect()
    }

    /// Faults every read meets along the way: parts' bodies dropped and cut short mid-way
    /// (resumed reads included), a 503, the manifest's body dropped, the listing answered 503
    /// then dropped, and a slow answer.
    /// Returns where in the proxy's log the reads that meet them start.
    fn break_reads(&mut self) -> usize {
        let p = &self.proxy;
        p.heal();
        p.inject(
            Rule::new(Fault::DropResponse(self.rng.inside()))
                .method("GET")
                .target("/data/")
                .times(2),
        );
        p.inject(
            Rule::new(Fault::CutResponse(self.rng.inside()))
                .method("GET")
                .target("/data/")
                .times(1),
        );
        p.inject(
            Rule::new(Fault::Status(503))
                .method("GET")
                .target("/data/")
                .times(1),
        );
        p.inject(
            Rule::new(Fault::DropResponse(self.rng.inside()))
                .method("GET")
                .target("/data/")
                .times(1),
        );
        p.inject(
            Rule::new(Fault::DropResponse(self.rng.inside()))
                .method("GET")
                .target("manifest.json")
                .times(1),
        );
        p.inject(
            Rule::new(Fault::Status(503))
                .method("GET")
                .target("list-type=2")
                .times(1),
        );
        p.inject(
            Rule::new(Fault::CutResponse(self.rng.inside()))
                .method("GET")
                .target("list-type=2")
                .times(1),
        );
        p.inject(
            Rule::new(Fault::Delay(Duration::from_millis(200)))
                .method("GET")
                .target("/schema.")
                .times(1),
        );
        p.log().len()
    }
}

fn struck(events: &[Event], fault: fn(&Fault) -> bool, target: &str) -> usize {
    events
        .iter()
        .filter(|e| e.fault.as_ref().is_some_and(fault) && e.target.contains(target))
        .count()
}

/// The faults [`World::break_reads`] set all struck: otherwise a test of them proves nothing.
fn assert_reads_were_broken(proxy: &FaultProxy, since: usize, what: &str) {
    let events: Vec<Event> = proxy.log()[since..]
        .iter()
        .filter(|e| e.struck)
        .cloned()
        .collect();
    let drops = |f: &Fault| matches!(f, Fault::DropResponse(_));
    let cuts = |f: &Fault| matches!(f, Fault::CutResponse(_));
    let unavailable = |f: &Fault| matches!(f, Fault::Status(503));
    for (n, count) in [
        (3, struck(&events, drops, "/data/")),
        (1, struck(&events, cuts, "/data/")),
        (1, struck(&events, unavailable, "/data/")),
        (1, struck(&events, drops, "manifest.json")),
        (1, struck(&events, unavailable, "list-type=2")),
        (1, struck(&events, cuts, "list-type=2")),
    ] {
        assert_eq!(count, n, "{what}: faults struck: {events:#?}");
    }
}

fn one_line(run: &Run) -> &str {
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "not one line:\n{run}");
    lines[0]
}

/// A multi-part backup restored, verified and exported through drops, cuts, 503s and delays on
/// every kind of read comes back cell for cell, and each fault was met.
#[tokio::test(flavor = "multi_thread")]
async fn restore_verify_and_export_read_through_broken_connections() {
    let mut w = World::start().await;
    w.backup(false).await.success();
    let blob_parts = w
        .parts()
        .iter()
        .filter(|k| k.contains("/data/") && k.contains("blobs_"))
        .count();
    assert!(blob_parts >= 2, "one part only: {:?}", w.parts());

    let since = w.break_reads();
    let target = w.dir.path().join("restored.db");
    let to = target.to_str().unwrap().to_string();
    w.run(&["restore", "--from", &w.dest(), "--to", &to], true)
        .await
        .success();
    assert_reads_were_broken(&w.proxy, since, "restore");
    assert_same_database(&w.db, &target);

    let since = w.break_reads();
    w.run(&["verify", "--from", &w.dest()], true)
        .await
        .success();
    let log = w.proxy.log();
    assert_reads_were_broken(&w.proxy, since, "verify");
    // Interrupted parts were read on from where they broke, of the version read before.
    let resumed = log[since..]
        .iter()
        .filter(|e| e.method == "GET" && e.target.contains("/data/"))
        .filter(|e| {
            let from = e.range.as_deref().and_then(|r| r.strip_prefix("bytes="));
            from.is_some_and(|f| f.trim_end_matches('-').parse::<u64>().is_ok_and(|n| n > 0))
                && e.if_match.is_some()
        })
        .count();
    assert!(resumed >= 3, "{:#?}", &log[since..]);

    let since = w.break_reads();
    let sql = w.dir.path().join("dump.sql");
    let out = sql.to_str().unwrap().to_string();
    w.run(&["export", "--from", &w.dest(), "--out", &out], true)
        .await
        .success();
    assert_reads_were_broken(&w.proxy, since, "export");
    // Loaded by the SQLite the tests link (the stock shell of some distributions parses a few
    // subnormal reals one bit off, which is no concern of the transport).
    let loaded = w.dir.path().join("loaded.db");
    Connection::open(&loaded)
        .unwrap()
        .execute_batch(&std::fs::read_to_string(&sql).unwrap())
        .unwrap();
    assert_same_database(&w.db, &loaded);
}

/// A part whose every answer breaks off part-way: restore, verify and export fail with exit 1 and
/// one line that says it was a network failure and names the part, never that the backup is
/// corrupt, and the audit records say the same; the restore's target is never written.
#[tokio::test(flavor = "multi_thread")]
async fn a_read_that_keeps_breaking_is_a_network_failure_not_a_corrupt_backup() {
    let mut w = World::start().await;
    w.backup(false).await.success();
    let parts = w.parts();
    let part = parts[w.rng.below(parts.len() as u64) as usize].clone();
    let fault = match w.rng.below(2) {
        0 => Fault::DropResponse(At::Fraction(0.5)),
        _ => Fault::CutResponse(At::Fraction(0.5)),
    };
    w.proxy
        .inject(Rule::new(fault).method("GET").target(&format!("/{part}")));
    let target = w.dir.path().join("restored.db");
    let to = target.to_str().unwrap().to_string();
    let sql = w.dir.path().join("dump.sql");
    let out = sql.to_str().unwrap().to_string();
    let from = w.dest();
    for args in [
        vec!["restore", "--from", &from, "--to", &to],
        vec!["verify", "--from", &from],
        vec!["export", "--from", &from, "--out", &out],
    ] {
        let run = w.run(&args, true).await;
        run.fails_with(1);
        let line = one_line(&run);
        assert!(
            line.contains("network failure") && line.contains(&part),
            "{}: {line}",
            args[0]
        );
        assert!(!line.contains("corrupt"), "{}: {line}", args[0]);
        assert!(!target.exists() && !sql.exists(), "{}: wrote", args[0]);
    }
    let failures: Vec<_> = w
        .audit()
        .into_iter()
        .filter(|r| r["outcome"] == "failure")
        .collect();
    // Restore and verify are audited; export is not.
    assert_eq!(failures.len(), 2, "{failures:#?}");
    for record in failures {
        let error = record["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("network failure") && !error.contains("corrupt"),
            "{record}"
        );
    }
    assert!(
        w.proxy.struck().len() >= 3,
        "the fault never struck: {:#?}",
        w.proxy.log()
    );
}

/// A part whose stored bytes were changed (a whole body) is corrupt: restore and verify through a
/// connection that also breaks say so, naming the part, with exit 1, whether a bit flipped or the
/// part was replaced by SQL that fails to apply.
#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_part_is_still_reported_as_corrupt() {
    let mut w = World::start().await;
    w.backup(false).await.success();
    let parts = w.parts();
    let part = parts[w.rng.below(parts.len() as u64) as usize].clone();
    let file = w.root().join(&part);
    let mut bytes = std::fs::read(&file).unwrap();
    let at = w.rng.below(bytes.len() as u64) as usize;
    bytes[at] ^= 1 << w.rng.below(8);
    std::fs::write(&file, &bytes).unwrap();
    let name = part.split_once('/').unwrap().1.to_string();
    let target = w.dir.path().join("restored.db");
    let to = target.to_str().unwrap().to_string();
    let from = w.dest();
    for args in [
        vec!["restore", "--from", &from, "--to", &to],
        vec!["verify", "--from", &from],
    ] {
        w.break_reads();
        let run = w.run(&args, true).await;
        run.fails_with(1);
        let line = one_line(&run);
        assert!(
            line.contains("corrupt") && line.contains(&name),
            "{}: {line}",
            args[0]
        );
        assert!(!line.contains("network"), "{}: {line}", args[0]);
        assert!(!target.exists(), "{}: wrote", args[0]);
    }

    // The part replaced whole by well-formed SQL that SQLite refuses, more of it than the reader
    // hands ahead: the restore fails on its first statement while the part is still being read,
    // and the part's digest, not SQLite's complaint, is the error.
    let table = w.rng.name("nosuch_");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for row in 0..100_000 {
        let sql = format!("INSERT INTO \"{table}\" VALUES({row});\n");
        std::io::Write::write_all(&mut gz, sql.as_bytes()).unwrap();
    }
    std::fs::write(&file, gz.finish().unwrap()).unwrap();
    w.break_reads();
    let run = w
        .run(&["restore", "--from", &from, "--to", &to], true)
        .await;
    run.fails_with(1);
    let line = one_line(&run);
    assert!(line.contains("corrupt") && line.contains(&name), "{line}");
    assert!(
        !line.contains(&table) && !line.contains("network"),
        "{line}"
    );
    assert!(!target.exists());
}

/// Uploads whose connection drops mid-body are sent again: the backup succeeds, holds exactly
/// what its manifest names (and its id claim), and restores cell for cell. When the manifest's upload never gets
/// through, the backup fails with exit 1 and nothing of it stays visible: no manifest, no part.
#[tokio::test(flavor = "multi_thread")]
async fn uploads_through_dropped_connections_succeed_or_leave_nothing() {
    let mut w = World::start().await;
    let drops = [w.rng.inside(), w.rng.inside(), w.rng.inside()];
    for (at, target) in drops.into_iter().zip(["/data/", "/data/", "manifest.json"]) {
        w.proxy.inject(
            Rule::new(Fault::DropRequest(at))
                .method("PUT")
                .target(target)
                .times(1),
        );
    }
    w.backup(true).await.success();
    let dropped = w
        .proxy
        .struck()
        .iter()
        .filter(|e| matches!(e.fault, Some(Fault::DropRequest(_))))
        .count();
    assert_eq!(dropped, 3, "{:#?}", w.proxy.log());
    let mut expected = w.parts();
    let id = expected[0].split('/').next().unwrap().to_string();
    // A backup's keys: its parts, its manifest, and the claim that named it.
    expected.push(format!("{id}/manifest.json"));
    expected.push(format!("{id}/claim.json"));
    expected.sort();
    let stored: Vec<String> = w
        .keys()
        .into_iter()
        .filter(|k| !k.starts_with("audit/") && k.starts_with(&id))
        .collect();
    assert_eq!(stored, expected);
    let target = w.dir.path().join("restored.db");
    let to = target.to_str().unwrap().to_string();
    w.run(&["restore", "--from", &w.dest(), "--to", &to], false)
        .await
        .success();
    assert_same_database(&w.db, &target);

    // A second backup whose manifest never gets through.
    let before: Vec<String> = w.keys();
    std::thread::sleep(Duration::from_millis(1100));
    w.proxy.heal();
    let at = w.rng.inside();
    w.proxy.inject(
        Rule::new(Fault::DropRequest(at))
            .method("PUT")
            .target("manifest.json"),
    );
    let run = w.backup(true).await;
    run.fails_with(1);
    let after: Vec<String> = w
        .keys()
        .into_iter()
        .filter(|k| !k.starts_with("audit/"))
        .collect();
    let kept: Vec<String> = before
        .into_iter()
        .filter(|k| !k.starts_with("audit/"))
        .collect();
    assert_eq!(after, kept, "the failed backup left objects:\n{run}");
}

/// The S3 store on `server`, reached through `proxy`.
async fn store_through(proxy: &FaultProxy, prefix: &str) -> d1r2::store::s3::S3Store {
    use crate::fakes::s3::{ACCESS_KEY, SECRET_KEY};
    d1r2::store::s3::S3Store::connect(d1r2::store::s3::S3Config {
        bucket: BUCKET.to_string(),
        prefix: prefix.to_string(),
        endpoint: Some(proxy.url.clone()),
        region: Some("auto".to_string()),
        credentials: Some((ACCESS_KEY.to_string(), SECRET_KEY.to_string())),
        scheme: "s3://",
    })
    .await
    .expect("the fake's keys")
}

/// A read cut short twice goes on each time from exactly the byte it stopped at, of the same
/// version, and reads the object whole.
#[tokio::test]
async fn an_s3_read_goes_on_from_the_byte_it_stopped_at() {
    use d1r2::store::Store;
    let server = FakeS3::start(&[BUCKET]).await;
    let proxy = FaultProxy::start(&server.url).await;
    let mut rng = Rng::new();
    let store = store_through(&proxy, &rng.name("p")).await;
    let len = 200_000 + rng.below(200_000) as usize;
    let data = rng.bytes(len);
    let key = rng.name("object-");
    store.put(&key, data.clone().into()).await.unwrap();
    let (a, b) = (1 + rng.below(100_000), 1 + rng.below(50_000));
    for cut in [a, b] {
        proxy.inject(
            Rule::new(Fault::CutResponse(At::Bytes(cut)))
                .method("GET")
                .times(1),
        );
    }
    let read = d1r2::store::read_all(&store, &key).await.unwrap();
    assert!(read == data, "{} bytes read of {}", read.len(), data.len());
    let gets: Vec<Event> = proxy
        .log()
        .into_iter()
        .filter(|e| e.method == "GET")
        .collect();
    let ranges: Vec<Option<String>> = gets.iter().map(|e| e.range.clone()).collect();
    assert_eq!(
        ranges,
        [
            None,
            Some(format!("bytes={a}-")),
            Some(format!("bytes={}-", a + b))
        ]
    );
    assert!(gets[0].if_match.is_none());
    assert!(gets[1].if_match.is_some() && gets[1].if_match == gets[2].if_match);
}

/// An object replaced while a read of it was broken off is not spliced onto what was read: the
/// read fails, saying the object was replaced.
#[tokio::test]
async fn an_s3_read_of_an_object_replaced_meanwhile_fails() {
    use d1r2::store::{Store, StoreError};
    use futures::StreamExt;
    let server = FakeS3::start(&[BUCKET]).await;
    let proxy = FaultProxy::start(&server.url).await;
    let mut rng = Rng::new();
    let store = store_through(&proxy, &rng.name("p")).await;
    let key = rng.name("object-");
    let len = 300_000 + rng.below(100_000) as usize;
    store.put(&key, rng.bytes(len).into()).await.unwrap();
    let cut = 100_000 + rng.below(100_000);
    proxy.inject(
        Rule::new(Fault::CutResponse(At::Bytes(cut)))
            .method("GET")
            .times(1),
    );
    let mut stream = store.get(&key).await.unwrap();
    let mut read = stream.next().await.unwrap().unwrap().len() as u64;
    assert!(read < cut, "{read}");
    store.put(&key, rng.bytes(len).into()).await.unwrap();
    let err = loop {
        match stream.next().await {
            Some(Ok(chunk)) => read += chunk.len() as u64,
            Some(Err(e)) => break e,
            None => panic!("read {read} bytes of an object replaced after {cut}"),
        }
    };
    assert!(matches!(err, StoreError::Changed { .. }), "{err}");
    assert_eq!(read, cut);
}
