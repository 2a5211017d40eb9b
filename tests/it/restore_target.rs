//! A restore target is someone's database: a live WAL database an app holds open, with its own
//! mode and owner. A restore builds the new database aside and checks it before the target is
//! touched, then writes it through SQLite; a backup that turns out corrupt, a target held in a
//! write transaction or a missing folder leaves the target as it was. Scratch files a killed
//! run left are removed by the next run; a live run's stay. Each case runs against the local
//! folder and the S3 server, with random names and values.

use crate::common;
use crate::fakes;

use std::fs::File;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::cmd::{D1r2, Run};
use common::*;
use fakes::s3::FakeS3;
use rusqlite::Connection;

/// Where backups go for one run of a case: the `--from` text, the folder its objects are files
/// in (the local folder itself, or the S3 server's files), and the environment that reaches it.
struct Place {
    from: String,
    objects: PathBuf,
    env: Vec<(&'static str, String)>,
    /// The folder for databases and exports.
    work: tempfile::TempDir,
    /// What lives as long as the place: the S3 server, the folder of the local store.
    _holds: (Option<FakeS3>, tempfile::TempDir),
}

impl Place {
    async fn local() -> Place {
        let dir = tempfile::tempdir().unwrap();
        let objects = dir.path().join(word("store"));
        std::fs::create_dir(&objects).unwrap();
        Place {
            from: objects.display().to_string(),
            objects,
            env: Vec::new(),
            work: tempfile::tempdir().unwrap(),
            _holds: (None, dir),
        }
    }

    async fn s3() -> Place {
        let bucket = word("bucket").replace('_', "-");
        let server = FakeS3::start(&[&bucket]).await;
        let prefix = word("p");
        Place {
            from: format!("s3://{bucket}/{prefix}"),
            objects: server.root.path().join(&bucket).join(&prefix),
            env: server.env(),
            work: tempfile::tempdir().unwrap(),
            _holds: (Some(server), tempfile::tempdir().unwrap()),
        }
    }

    /// The two places every case runs in.
    async fn both() -> [Place; 2] {
        [Place::local().await, Place::s3().await]
    }

    /// The requests the S3 server has answered (none for the local folder).
    fn requests(&self) -> usize {
        self._holds
            .0
            .as_ref()
            .map_or(0, |server| server.log().len())
    }

    /// The data parts the S3 server has been asked for (none for the local folder).
    fn data_requests(&self) -> usize {
        self._holds.0.as_ref().map_or(0, |server| {
            server
                .log()
                .iter()
                .filter(|l| l.starts_with("GET") && l.contains("/data/"))
                .count()
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    async fn run(&self, args: &[&str]) -> Run {
        D1r2::new()
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .run_async()
            .await
    }

    /// Backs `db` up into this place, a full backup: the tests corrupt its parts.
    async fn backup(&self, db: &Path) {
        self.run(&["backup", "--full", "--source", s(db), "--dest", &self.from])
            .await
            .success();
    }

    async fn restore(&self, to: &Path, extra: &[&str]) -> Run {
        let mut args = vec!["restore", "--from", &self.from, "--to", s(to)];
        args.extend_from_slice(extra);
        self.run(&args).await
    }
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A fresh lowercase name starting with `stem`.
fn word(stem: &str) -> String {
    format!("{stem}_{:08x}", rand::random::<u32>())
}

/// A random value of each storage class in turn (reals by random bits, NaN left out: SQLite
/// stores it as NULL).
fn value(i: u64) -> rusqlite::types::Value {
    use rusqlite::types::Value;
    let r: u64 = rand::random();
    let bytes = |n: u64| {
        (0..n % 40)
            .map(|_| rand::random::<u8>())
            .collect::<Vec<u8>>()
    };
    match i % 5 {
        0 => Value::Integer(r as i64),
        1 => {
            let f = f64::from_bits(r);
            Value::Real(if f.is_nan() { -0.0 } else { f })
        }
        2 => Value::Text(
            bytes(r)
                .into_iter()
                .map(|b| char::from(b' ' + b % 90))
                .collect(),
        ),
        3 => Value::Blob(bytes(r)),
        _ => Value::Null,
    }
}

/// Creates `table` (three untyped columns) in `conn` and commits `rows` random rows to it.
fn fill(conn: &Connection, table: &str, rows: u64) {
    conn.execute_batch(&format!("CREATE TABLE IF NOT EXISTS \"{table}\"(a, b, c)"))
        .unwrap();
    for i in 0..rows {
        conn.execute(
            &format!("INSERT INTO \"{table}\" VALUES (?1, ?2, ?3)"),
            rusqlite::params![value(i), value(i + 1), value(i + 2)],
        )
        .unwrap();
    }
}

/// A source database of random tables and rows, backed up into `place`; returns its path.
async fn backed_up(place: &Place) -> PathBuf {
    let db = place.path(&format!("{}.db", word("src")));
    let conn = Connection::open(&db).unwrap();
    for _ in 0..2 {
        fill(&conn, &word("t"), 200 + rand::random::<u64>() % 300);
    }
    drop(conn);
    place.backup(&db).await;
    db
}

/// A WAL database held open by `app`, as an app holds its database: some rows checkpointed
/// into the file, more committed only to the WAL.
fn live_wal_target(path: &Path) -> Connection {
    let app = Connection::open(path).unwrap();
    let page_size = [1024, 2048, 8192, 16384][rand::random::<u32>() as usize % 4];
    app.execute_batch(&format!("PRAGMA page_size={page_size}"))
        .unwrap();
    let mode: String = app
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    fill(&app, &word("mine"), 20);
    app.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA wal_autocheckpoint=0;")
        .unwrap();
    fill(&app, &word("mine"), 50 + rand::random::<u64>() % 100);
    assert!(wal(path).metadata().unwrap().len() > 0, "rows in the WAL");
    app
}

fn wal(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push("-wal");
    PathBuf::from(p)
}

/// Every table's cells as `conn` reads them.
fn contents(conn: &Connection) -> Vec<(String, Vec<Vec<Exact>>)> {
    user_tables(conn)
        .into_iter()
        .map(|t| {
            let cells = table_cells(conn, &t);
            (t, cells)
        })
        .collect()
}

fn integrity(conn: &Connection) -> String {
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

/// The largest data part of the backups in `objects`.
fn a_data_part(objects: &Path) -> PathBuf {
    let mut found: Vec<PathBuf> = Vec::new();
    let mut dirs = vec![objects.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.parent().is_some_and(|p| p.ends_with("data"))
                && path.to_string_lossy().ends_with(".sql.gz")
            {
                found.push(path);
            }
        }
    }
    found
        .into_iter()
        .max_by_key(|p| p.metadata().unwrap().len())
        .expect("a data part")
}

/// Flips a few bytes in the second half of `part`, past its first statements.
fn corrupt(part: &Path) {
    let mut bytes = std::fs::read(part).unwrap();
    let len = bytes.len();
    for k in 0..4 {
        let at = len / 2 + (rand::random::<u64>() as usize) % (len / 2 - 1);
        bytes[at] ^= 1 << k;
    }
    std::fs::write(part, bytes).unwrap();
}

/// The scratch files in `dir`.
fn scratch_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".d1r2-"))
        .collect();
    names.sort();
    names
}

fn one_error_line(run: &Run) -> String {
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(lines.len(), 1, "{run}");
    lines[0].to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_backup_leaves_a_live_wal_target_whole() {
    for place in Place::both().await {
        backed_up(&place).await;
        corrupt(&a_data_part(&place.objects));
        let target = place.path(&format!("{}.db", word("app")));
        let app = live_wal_target(&target);
        let before = contents(&app);
        let wal_before = std::fs::read(wal(&target)).unwrap();

        let run = place.restore(&target, &["--force"]).await;
        run.fails_with(1);
        one_error_line(&run);

        assert_eq!(
            contents(&app),
            before,
            "{}: the app's connection",
            place.from
        );
        assert_eq!(integrity(&app), "ok");
        let wal_after = std::fs::read(wal(&target)).unwrap_or_default();
        assert!(
            wal_after == wal_before,
            "{}: the WAL is untouched ({} bytes, was {})",
            place.from,
            wal_after.len(),
            wal_before.len()
        );
        let fresh = Connection::open(&target).unwrap();
        assert_eq!(contents(&fresh), before, "{}: a new connection", place.from);
        assert_eq!(integrity(&fresh), "ok");
        assert_eq!(scratch_files(place.work.path()), Vec::<String>::new());
    }
}

/// A backup whose parts load but do not add up to what its manifest recorded (a plain manifest
/// written over: one table's row count changed) is refused by the check a restore runs before
/// it writes, and the target stays as it was.
#[tokio::test(flavor = "multi_thread")]
async fn a_backup_that_does_not_check_out_leaves_the_target_whole() {
    for place in Place::both().await {
        backed_up(&place).await;
        let manifest = a_data_part(&place.objects)
            .parent()
            .and_then(Path::parent)
            .unwrap()
            .join("manifest.json");
        let mut json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
        let table = json["tables"][0]["name"].as_str().unwrap().to_string();
        let rows = json["tables"][0]["rows"].as_u64().unwrap();
        json["tables"][0]["rows"] = (rows + 1 + rand::random::<u64>() % 9).into();
        std::fs::write(&manifest, serde_json::to_vec(&json).unwrap()).unwrap();
        let target = place.path(&format!("{}.db", word("app")));
        let app = live_wal_target(&target);
        let before = contents(&app);

        let run = place.restore(&target, &["--force"]).await;
        run.fails_with(1);
        let line = one_error_line(&run);
        assert!(
            line.contains(&table) && line.contains("was not changed"),
            "{run}"
        );

        assert_eq!(contents(&app), before, "{}", place.from);
        let fresh = Connection::open(&target).unwrap();
        assert_eq!(contents(&fresh), before, "{}", place.from);
        assert_eq!(integrity(&fresh), "ok");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_good_restore_onto_a_live_wal_target_keeps_its_file_mode_and_owner() {
    for place in Place::both().await {
        let src = backed_up(&place).await;
        let target = place.path(&format!("{}.db", word("app")));
        let app = live_wal_target(&target);
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        let as_root = nix_uid() == 0;
        let owner = 4000 + rand::random::<u32>() % 1000;
        if as_root {
            std::os::unix::fs::chown(&target, Some(owner), Some(owner)).unwrap();
        }
        let inode = target.metadata().unwrap().ino();

        place.restore(&target, &["--force"]).await.success();

        let meta = target.metadata().unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o600, "{}: mode", place.from);
        assert_eq!(meta.ino(), inode, "{}: the same file", place.from);
        if as_root {
            assert_eq!((meta.uid(), meta.gid()), (owner, owner), "{}", place.from);
        }
        let source = Connection::open(&src).unwrap();
        assert_eq!(
            contents(&app),
            contents(&source),
            "{}: the app sees it",
            place.from
        );
        drop(app);
        assert_same_database(&src, &target);
        let fresh = Connection::open(&target).unwrap();
        assert_eq!(integrity(&fresh), "ok");
        let mode: String = fresh
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal", "{}: still a WAL database", place.from);
        assert_eq!(scratch_files(place.work.path()), Vec::<String>::new());
    }
}

/// The mode a new file gets here (0666 less the umask), from one made and removed.
fn new_file_mode(dir: &Path) -> u32 {
    use std::os::unix::fs::OpenOptionsExt;
    let probe = dir.join(word("mode"));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o666)
        .open(&probe)
        .unwrap();
    let mode = file.metadata().unwrap().mode() & 0o7777;
    std::fs::remove_file(&probe).unwrap();
    mode
}

/// The effective user id, from the owner of a file this process just made.
fn nix_uid() -> u32 {
    let f = tempfile::NamedTempFile::new().unwrap();
    f.as_file().metadata().unwrap().uid()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restore_of_some_tables_keeps_what_the_wal_holds_of_the_others() {
    for place in Place::both().await {
        let src = backed_up(&place).await;
        let source = Connection::open(&src).unwrap();
        let chosen = user_tables(&source)[0].clone();
        let target = place.path(&format!("{}.db", word("app")));
        let app = live_wal_target(&target);
        fill(&app, &chosen, 7);
        let kept: Vec<_> = contents(&app)
            .into_iter()
            .filter(|(t, _)| *t != chosen)
            .collect();

        place
            .restore(&target, &["--force", "--tables", &chosen])
            .await
            .success();

        let fresh = Connection::open(&target).unwrap();
        let mut expected = kept.clone();
        expected.push((chosen.clone(), table_cells(&source, &chosen)));
        expected.sort();
        assert_eq!(contents(&fresh), expected, "{}", place.from);
        assert_eq!(integrity(&fresh), "ok");
        drop(app);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_held_in_a_write_transaction_is_refused_and_untouched() {
    for place in Place::both().await {
        backed_up(&place).await;
        for wal_mode in [true, false] {
            let target = place.path(&format!("{}.db", word("app")));
            let app = if wal_mode {
                live_wal_target(&target)
            } else {
                let app = Connection::open(&target).unwrap();
                fill(&app, &word("mine"), 30);
                app
            };
            let before = contents(&app);
            let table = word("pending");
            app.execute_batch("BEGIN IMMEDIATE").unwrap();
            fill(&app, &table, 3);

            let asked = place.data_requests();
            let run = place.restore(&target, &["--force"]).await;
            run.fails_with(1);
            let line = one_error_line(&run);
            assert!(
                line.contains("in use") && line.contains(s(&target)),
                "{run}"
            );
            assert_eq!(
                place.data_requests(),
                asked,
                "refused before a part is read"
            );

            app.execute_batch("COMMIT").unwrap();
            let fresh = Connection::open(&target).unwrap();
            let mut expected = before.clone();
            expected.push((table.clone(), table_cells(&app, &table)));
            expected.sort();
            assert_eq!(contents(&fresh), expected, "{} wal {wal_mode}", place.from);
            assert_eq!(integrity(&fresh), "ok");
            assert_eq!(scratch_files(place.work.path()), Vec::<String>::new());
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn scratch_files_a_killed_run_left_are_removed_by_the_next_run() {
    for place in Place::both().await {
        backed_up(&place).await;
        let dir = place.work.path();
        let target = place.path(&format!("{}.db", word("r")));
        let out = place.path(&format!("{}.sql", word("e")));
        let left = |base: &Path, purpose: &str| {
            let name = format!(
                ".{}.d1r2-{purpose}-{:08x}",
                base.file_name().unwrap().to_string_lossy(),
                rand::random::<u32>()
            );
            let junk: Vec<u8> = (0..1000 + rand::random::<u16>() % 4000)
                .map(|_| rand::random())
                .collect();
            std::fs::write(dir.join(&name), junk).unwrap();
            name
        };
        let dead = left(&target, "restore");
        std::fs::write(dir.join(format!("{dead}-journal")), b"j").unwrap();
        let live = left(&target, "restore");
        let held = File::open(dir.join(&live)).unwrap();
        held.lock().unwrap();
        let orphan = format!("{}-wal", left(&out, "export"));
        std::fs::rename(
            dir.join(orphan.strip_suffix("-wal").unwrap()),
            dir.join(&orphan),
        )
        .unwrap();

        place.restore(&target, &[]).await.success();
        assert_eq!(scratch_files(dir), vec![live.clone()], "{}", place.from);
        assert_eq!(
            target.metadata().unwrap().mode() & 0o7777,
            new_file_mode(dir),
            "a new target is made as any new file is"
        );

        let dead = left(&out, "export");
        place
            .run(&["export", "--from", &place.from, "--out", s(&out)])
            .await
            .success();
        assert_eq!(scratch_files(dir), vec![live.clone()], "{}", place.from);
        assert!(!dir.join(&dead).exists());
        drop(held);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_folder_is_bad_input_naming_the_path_given() {
    for place in Place::both().await {
        backed_up(&place).await;
        let missing = place.path(&word("gone")).join(word("x"));
        let target = missing.join("r.db");
        let out = missing.join("e.sql");
        let requests = place.requests();
        let runs = [
            place.restore(&target, &[]).await,
            place
                .run(&["export", "--from", &place.from, "--out", s(&out)])
                .await,
        ];
        for (run, path) in runs.iter().zip([&target, &out]) {
            run.fails_with(2);
            let line = one_error_line(run);
            assert!(line.contains(s(path)), "{run}");
            assert!(!line.contains(".d1r2-"), "{run}");
        }
        assert!(!missing.exists());
        assert_eq!(place.requests(), requests, "nothing asked of the store");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_that_is_not_a_database_is_refused_even_with_force() {
    for place in Place::both().await {
        backed_up(&place).await;
        let target = place.path(&format!("{}.db", word("notes")));
        let text: String = (0..2000)
            .map(|_| char::from(b'a' + rand::random::<u8>() % 26))
            .collect();
        std::fs::write(&target, &text).unwrap();
        let run = place.restore(&target, &["--force"]).await;
        run.fails_with(2);
        assert!(
            one_error_line(&run).contains("not a SQLite database"),
            "{run}"
        );
        assert_eq!(std::fs::read_to_string(&target).unwrap(), text);
    }
}

/// A restore of some tables reads the target's other tables first and writes the whole
/// database back last; a commit by another connection in between would be lost, so the restore
/// is refused and the commit kept. The S3 server answers slowly so the commit lands while the
/// parts download (a local folder answers too fast to step in).
#[tokio::test(flavor = "multi_thread")]
async fn a_commit_during_a_restore_of_some_tables_is_kept_and_the_restore_refused() {
    let place = Place::s3().await;
    let src = backed_up(&place).await;
    let chosen = user_tables(&Connection::open(&src).unwrap())[0].clone();
    let target = place.path(&format!("{}.db", word("app")));
    let app = live_wal_target(&target);
    place
        ._holds
        .0
        .as_ref()
        .unwrap()
        .set_latency(std::time::Duration::from_millis(400));
    let args = ["--force", "--tables", chosen.as_str()];
    let restore = place.restore(&target, &args);
    let (run, ()) = tokio::join!(restore, async {
        // The scratch file fills once the target's tables are read into it.
        scratch_appears(place.work.path(), 1).await;
        fill(&app, &word("late"), 5);
    });
    run.fails_with(1);
    assert!(one_error_line(&run).contains("was written to"), "{run}");
    let fresh = Connection::open(&target).unwrap();
    assert_eq!(contents(&fresh), contents(&app));
    assert_eq!(integrity(&fresh), "ok");
}

/// Waits (up to a minute) until a restore's scratch file of at least `bytes` is in `dir`.
async fn scratch_appears(dir: &Path, bytes: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        let there = std::fs::read_dir(dir).unwrap().any(|e| {
            let e = e.unwrap();
            e.file_name().to_string_lossy().contains(".d1r2-restore-")
                && e.metadata().is_ok_and(|m| m.len() >= bytes)
        });
        if there {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("no scratch file appeared in {}", dir.display());
}

/// A writer that takes the target after the restore began (while the parts download) holds
/// it when the restore comes to write: the restore waits a bounded time, then is refused, and
/// the writer's transaction commits over the target as it was.
#[tokio::test(flavor = "multi_thread")]
async fn a_writer_that_takes_the_target_during_the_download_is_waited_for_then_refused() {
    let place = Place::s3().await;
    backed_up(&place).await;
    let target = place.path(&format!("{}.db", word("app")));
    let app = live_wal_target(&target);
    let before = contents(&app);
    place
        ._holds
        .0
        .as_ref()
        .unwrap()
        .set_latency(std::time::Duration::from_millis(400));
    let table = word("pending");
    let (run, ()) = tokio::join!(place.restore(&target, &["--force"]), async {
        scratch_appears(place.work.path(), 0).await;
        app.execute_batch("BEGIN IMMEDIATE").unwrap();
        fill(&app, &table, 3);
    });
    run.fails_with(1);
    assert!(one_error_line(&run).contains("in use"), "{run}");
    app.execute_batch("COMMIT").unwrap();
    let mut expected = before;
    expected.push((table.clone(), table_cells(&app, &table)));
    expected.sort();
    let fresh = Connection::open(&target).unwrap();
    assert_eq!(contents(&fresh), expected);
    assert_eq!(integrity(&fresh), "ok");
}

/// Verify loads into a scratch file in the temporary folder (`TMPDIR`): one a killed verify left
/// there is removed by the next, one a running d1r2 holds stays, and its own goes with it.
#[tokio::test(flavor = "multi_thread")]
async fn verify_sweeps_the_temporary_folder_too() {
    for place in Place::both().await {
        backed_up(&place).await;
        let temp = tempfile::tempdir().unwrap();
        let name = |purpose: &str| {
            format!(
                ".{}.d1r2-{purpose}-{:08x}",
                word("b"),
                rand::random::<u32>()
            )
        };
        let dead = name("verify");
        let live = name("drill");
        for n in [&dead, &live] {
            std::fs::write(temp.path().join(n), word("junk")).unwrap();
        }
        let held = File::open(temp.path().join(&live)).unwrap();
        held.lock().unwrap();
        D1r2::new()
            .args(["verify", "--from", &place.from])
            .envs(place.env.iter().map(|(k, v)| (k, v)))
            .env("TMPDIR", temp.path())
            .run_async()
            .await
            .success();
        assert_eq!(
            scratch_files(temp.path()),
            vec![live.clone()],
            "{}",
            place.from
        );
        drop(held);
    }
}
