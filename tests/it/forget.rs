//! Data-subject requests through the binary, on a local folder and on the S3 server, plain and
//! encrypted, over five retained backups in both formats (parts and chunks): `find` lists a
//! person's rows and nothing else; after `forget`, every restore, export, verify and drill of
//! every backup lacks them while every other cell is as it was; a predicate that is not one is
//! refused before anything is recorded.

use std::path::{Path, PathBuf};

use rusqlite::Connection;

use crate::common::assert_same_database;
use crate::common::bed::{Bed, output_line};
use crate::common::cmd::Run;

const KEY: &str = "5f0e3a3c1d2b4a69788001122334455667788990aabbccddeeff001122334455";
const KEY_ENV: &str = "D1R2_ENCRYPTION_KEY";

/// The person: user 7, the rows of `orders` pointing at it, and values found nowhere else.
const EMAIL: &str = "forget-me-7@example.org";
const SECRET_TEXT: &str = "Zebulon Quartermaine";
const WHERE: &str = "email = 'forget-me-7@example.org'";

const SCHEMA: &str = "
    CREATE TABLE users(id INTEGER PRIMARY KEY, email TEXT UNIQUE, name TEXT, score, pic BLOB, big INTEGER);
    CREATE TABLE orders(id INTEGER PRIMARY KEY AUTOINCREMENT, user_id INTEGER REFERENCES users(id), total REAL, note TEXT);
    CREATE TABLE notes(n INTEGER, body TEXT);
    CREATE INDEX orders_user ON orders(user_id);
    CREATE TRIGGER users_gone AFTER DELETE ON users BEGIN INSERT INTO notes VALUES (-1, 'deleted'); END;
";

/// A database whose `users` hold the person among others, with exact values worth comparing
/// (reals with odd bits, -0.0 in a column without affinity, which keeps it, big integers, BLOBs).
fn source(path: &Path) {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    for id in 1..=40i64 {
        let (email, name) = if id == 7 {
            (EMAIL.to_string(), SECRET_TEXT.to_string())
        } else {
            (format!("user{id}@example.org"), format!("name {id}"))
        };
        let score = if id % 5 == 0 { -0.0 } else { id as f64 / 3.0 };
        conn.execute(
            "INSERT INTO users VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            rusqlite::params![
                id,
                email,
                name,
                score,
                vec![id as u8, 0xff, 0],
                i64::MAX - id
            ],
        )
        .unwrap();
        for k in 0..3 {
            conn.execute(
                "INSERT INTO orders(user_id, total, note) VALUES (?1, ?2, ?3)",
                rusqlite::params![id, 0.1 * (k + id) as f64, format!("order {k} of {name}")],
            )
            .unwrap();
        }
    }
}

/// A change between two backups that leaves `users` as it was (so its chunks repeat).
fn change(path: &Path, round: usize) {
    let conn = Connection::open(path).unwrap();
    conn.execute(
        "INSERT INTO notes VALUES (?1, ?2)",
        rusqlite::params![round as i64, "round"],
    )
    .unwrap();
}

struct Setup {
    bed: Bed,
    key: Option<&'static str>,
    /// Each backup's id and a copy of the source as it was backed up.
    backups: Vec<(String, PathBuf)>,
}

impl Setup {
    async fn run(&self, args: &[&str]) -> Run {
        let mut cmd = self.bed.command(args);
        match self.key {
            Some(key) => cmd.env(KEY_ENV, key),
            None => cmd.env_remove(KEY_ENV),
        };
        cmd.run_async().await
    }

    /// `restore` of backup `id` from `from` into the file `to`, with `extra` arguments.
    async fn restore(&self, from: &str, id: &str, to: &Path, extra: &[&str]) -> Run {
        let mut args = vec!["restore", "--from", from, "--backup", id, "--to"];
        args.push(to.to_str().unwrap());
        args.extend(extra);
        self.run(&args).await
    }
}

/// Five backups, parts and chunks in turn, of a source that changes between them.
async fn five_backups(bed: Bed, key: Option<&'static str>) -> Setup {
    let db = bed.scratch("source.db");
    source(&db);
    let mut setup = Setup {
        bed,
        key,
        backups: Vec::new(),
    };
    for round in 0..5 {
        change(&db, round);
        let dest = setup.bed.dest();
        let mut args = vec!["backup", "--source", db.to_str().unwrap(), "--dest", &dest];
        if round % 2 == 1 {
            args.extend(["--chunk-size", "4096"]);
        } else {
            args.push("--full");
        }
        if key.is_some() {
            args.push("--encrypt");
        }
        let run = setup.run(&args).await;
        run.success();
        let id = output_line(&run.stdout, "Backup");
        let copy = setup.bed.scratch(&format!("source-{round}.db"));
        std::fs::copy(&db, &copy).unwrap();
        setup.backups.push((id, copy));
    }
    setup
}

/// `db` as it should come back once the person is forgotten (with the related orders): the rows
/// deleted, and nothing else changed (no trigger of the backup's fires).
fn forgotten(db: &Path, to: &Path) -> PathBuf {
    std::fs::copy(db, to).unwrap();
    let conn = Connection::open(to).unwrap();
    conn.execute_batch(&format!(
        "DROP TRIGGER users_gone;
         DELETE FROM orders WHERE user_id IN (SELECT id FROM users WHERE {WHERE});
         DELETE FROM users WHERE {WHERE};
         CREATE TRIGGER users_gone AFTER DELETE ON users BEGIN INSERT INTO notes VALUES (-1, 'deleted'); END;"
    ))
    .unwrap();
    to.to_path_buf()
}

fn lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

async fn finds_the_person_in_every_backup(setup: &Setup) {
    let from = setup.bed.dest();
    let run = setup
        .run(&[
            "find", "--from", &from, "--table", "users", "--where", WHERE,
        ])
        .await;
    run.success();
    let found = lines(&run.stdout);
    let ids: Vec<&str> = found
        .iter()
        .map(|l| l["backup"].as_str().unwrap())
        .collect();
    let want: Vec<&str> = setup.backups.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, want, "one row per backup, nothing else\n{run}");
    for line in &found {
        assert_eq!(line["table"], "users");
        let row = &line["row"];
        assert_eq!(row["id"], 7);
        assert_eq!(row["email"], EMAIL);
        assert_eq!(row["name"], SECRET_TEXT);
        assert_eq!(row["big"], serde_json::json!(i64::MAX - 7));
        assert_eq!(row["pic"]["blob"], "07ff00");
        assert_eq!(
            row["score"]["bits"],
            format!("{:016x}", (7.0f64 / 3.0).to_bits())
        );
        assert!(line["created"].as_str().unwrap().starts_with("20"));
    }
    assert!(
        run.stderr
            .contains("Chunks answered from an earlier backup"),
        "the chunked backups' unchanged chunks are searched once\n{run}"
    );
    let related = setup
        .run(&[
            "find",
            "--from",
            &from,
            "--table",
            "users",
            "--where",
            WHERE,
            "--related",
        ])
        .await;
    related.success();
    let found = lines(&related.stdout);
    assert_eq!(
        found.len(),
        5 * 4,
        "the user and 3 orders in each backup\n{related}"
    );
    for line in found.iter().filter(|l| l["table"] == "orders") {
        assert_eq!(line["row"]["user_id"], 7, "{line}");
    }
    let one = setup
        .run(&[
            "find",
            "--from",
            &from,
            "--table",
            "users",
            "--where",
            "id = 8",
            "--backup",
            &setup.backups[2].0,
        ])
        .await;
    one.success();
    let found = lines(&one.stdout);
    assert_eq!(found.len(), 1, "{one}");
    assert_eq!(
        found[0]["backup"].as_str(),
        Some(setup.backups[2].0.as_str())
    );
    assert_eq!(
        found[0]["row"]["score"]["bits"],
        format!("{:016x}", (8.0f64 / 3.0).to_bits())
    );
    let negative_zero = setup
        .run(&[
            "find",
            "--from",
            &from,
            "--table",
            "users",
            "--where",
            "id = 10",
            "--backup",
            &setup.backups[0].0,
        ])
        .await;
    assert_eq!(
        lines(&negative_zero.stdout)[0]["row"]["score"]["bits"],
        "8000000000000000"
    );
}

/// Everything d1r2 stores under the erasure records' prefix.
fn erasure_records(setup: &Setup) -> Vec<Vec<u8>> {
    let dir = setup.bed.files().join("erasures");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    entries
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect()
}

async fn bad_predicates_record_nothing(setup: &Setup) {
    let from = setup.bed.dest();
    for (table, predicate) in [
        ("users", "nope = 1"),
        ("users", "1) UNION SELECT (1"),
        ("users", "id = 1; DROP TABLE users"),
        ("users", "id = 1 -- x"),
        ("users", "id IN (SELECT user_id FROM orders)"),
        ("users", "email ="),
        ("nosuch", "id = 1"),
    ] {
        let run = setup
            .run(&[
                "forget", "--from", &from, "--table", table, "--where", predicate, "--reason", "r",
            ])
            .await;
        run.fails_with(2);
        assert_eq!(run.stderr.trim().lines().count(), 1, "one line\n{run}");
        assert!(!run.stderr.contains("DROP"), "{run}");
    }
    assert!(erasure_records(setup).is_empty(), "nothing recorded");
}

/// Every cell of the restored `got` equals `want`'s, by storage class and bits.
fn same(got: &Path, want: &Path) {
    assert_same_database(got, want);
}

async fn forgets_in_every_read(setup: &Setup) {
    let from = setup.bed.dest();
    let run = setup
        .run(&[
            "forget",
            "--from",
            &from,
            "--table",
            "users",
            "--where",
            WHERE,
            "--related",
            "--reason",
            "erasure request 1",
        ])
        .await;
    run.success();
    assert_eq!(output_line(&run.stdout, "Rows it names"), "20", "{run}");
    assert_eq!(
        output_line(&run.stdout, "Backups holding them"),
        "5",
        "{run}"
    );
    let records = erasure_records(setup);
    assert_eq!(records.len(), 1);
    if setup.key.is_some() {
        let raw = String::from_utf8_lossy(&records[0]);
        for private in [EMAIL, "users", "erasure request", "forget-me"] {
            assert!(
                !raw.contains(private),
                "{private} in a sealed record: {raw}"
            );
        }
    }
    for (round, (id, db)) in setup.backups.iter().enumerate() {
        let want = forgotten(db, &setup.bed.scratch(&format!("want-{round}.db")));
        let restored = setup.bed.scratch(&format!("restored-{round}.db"));
        let run = setup.restore(&from, id, &restored, &[]).await;
        run.success();
        assert!(run.stdout.contains("4 removed"), "{run}");
        same(&restored, &want);
        let out = setup.bed.scratch(&format!("export-{round}.sql"));
        let exported = setup
            .run(&[
                "export",
                "--from",
                &from,
                "--backup",
                id,
                "--out",
                out.to_str().unwrap(),
            ])
            .await;
        exported.success();
        assert_eq!(
            output_line(&exported.stdout, "Rows left out"),
            "4",
            "{exported}"
        );
        let sql = std::fs::read_to_string(&out).unwrap();
        assert!(
            !sql.contains(EMAIL) && !sql.contains(SECRET_TEXT),
            "the export leaves the rows out"
        );
        let loaded = setup.bed.scratch(&format!("exported-{round}.db"));
        Connection::open(&loaded)
            .unwrap()
            .execute_batch(&std::fs::read_to_string(&out).unwrap())
            .unwrap();
        same(&loaded, &want);
        let verified = setup
            .run(&["verify", "--from", &from, "--backup", id])
            .await;
        verified.success();
        assert!(verified.stdout.contains("4 removed"), "{verified}");
    }
    let latest = &setup.backups[4].0;
    let partial = setup.bed.scratch("orders-only.db");
    let run = setup
        .restore(&from, latest, &partial, &["--tables", "orders"])
        .await;
    run.fails_with(2);
    assert!(!partial.exists(), "nothing restored\n{run}");
    let run = setup
        .restore(&from, latest, &partial, &["--tables", "users,orders"])
        .await;
    run.success();
    assert!(run.stdout.contains("4 removed"), "{run}");
    let migrations = setup.bed.scratch("migrations");
    std::fs::create_dir_all(&migrations).unwrap();
    // Only a database without user 7 takes this migration (its id is the primary key).
    std::fs::write(
        migrations.join("0001_reuse.sql"),
        "INSERT INTO users(id, email) VALUES (7, 'someone new');",
    )
    .unwrap();
    let drill = setup
        .run(&[
            "drill",
            "--from",
            &from,
            "--migrations",
            migrations.to_str().unwrap(),
        ])
        .await;
    drill.success();
    assert!(drill.stdout.contains("4 removed"), "{drill}");
}

async fn person_requests(bed: Bed, key: Option<&'static str>) {
    let setup = five_backups(bed, key).await;
    finds_the_person_in_every_backup(&setup).await;
    bad_predicates_record_nothing(&setup).await;
    forgets_in_every_read(&setup).await;
}

async fn plain(bed: Bed) {
    person_requests(bed, None).await;
}

async fn encrypted(bed: Bed) {
    person_requests(bed, Some(KEY)).await;
}

crate::common::bed::both!(plain);
crate::common::bed::both!(encrypted);

/// The action's `find` and `forget`: the same inputs as the flags, rows to a file and never to
/// the log, the erasure's id and counts as outputs, and nothing of the person in the log.
#[tokio::test(flavor = "multi_thread")]
async fn the_action_finds_and_forgets() {
    let setup = five_backups(Bed::local().await, None).await;
    let output = setup.bed.scratch("output");
    let summary = setup.bed.scratch("summary");
    let action = |command: &str| {
        let mut cmd = crate::common::cmd::D1r2::new();
        cmd.env("GITHUB_ACTIONS", "true")
            .env("GITHUB_OUTPUT", &output)
            .env("GITHUB_STEP_SUMMARY", &summary)
            .env("INPUT_COMMAND", command)
            .env("INPUT_FROM", setup.bed.dest())
            .env("INPUT_TABLE", "users")
            .env("INPUT_WHERE", WHERE)
            .env("INPUT_RELATED", "true")
            .env("INPUT_BACKUP", "all");
        cmd
    };
    let run = action("find").run_async().await;
    run.fails_with(2);
    assert!(run.stdout.contains("set out"), "{run}");
    let rows = setup.bed.scratch("rows.jsonl");
    let run = action("find").env("INPUT_OUT", &rows).run_async().await;
    run.success();
    assert_eq!(crate::common::output_in(&output, "rows"), "20");
    assert_eq!(crate::common::output_in(&output, "backups"), "5");
    assert_eq!(lines(&std::fs::read_to_string(&rows).unwrap()).len(), 20);
    assert!(
        !run.stdout.contains(EMAIL) && !run.stdout.contains(SECRET_TEXT),
        "{run}"
    );
    std::fs::remove_file(&output).unwrap();
    let run = action("forget")
        .env("INPUT_REASON", "ticket 9")
        .env("GITHUB_ACTOR", "octocat")
        .run_async()
        .await;
    run.success();
    let id = crate::common::output_in(&output, "erasure-id");
    assert_eq!(crate::common::output_in(&output, "rows"), "20");
    assert!(!run.stdout.contains(EMAIL), "{run}");
    let audit = setup
        .run(&["list", "--from", &setup.bed.dest(), "--audit"])
        .await;
    let line = audit.stdout.lines().find(|l| l.contains("forget")).unwrap();
    assert!(line.contains("octocat") && line.contains(&id), "{audit}");
    for file in walk(&setup.bed.files().join("audit")) {
        let text = std::fs::read_to_string(file).unwrap();
        assert!(
            !text.contains(EMAIL) && !text.contains("forget-me") && !text.contains("ticket"),
            "{text}"
        );
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// What a stored object reveals: its bytes, what they gunzip to, and with the key what they
/// decrypt to (a part, a chunk, a sealed manifest or erasure record), gunzipped when they do.
fn revealed(rel: &str, bytes: &[u8], key: Option<&str>) -> Vec<Vec<u8>> {
    use d1r2::format::crypto::{DecryptReader, Key, PartKey};
    use std::io::Read;
    let gunzip = |bytes: &[u8]| {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes)
            .read_to_end(&mut out)
            .ok()
            .map(|_| out)
    };
    let mut out = vec![bytes.to_vec()];
    out.extend(gunzip(bytes));
    let Some(key) = key.map(|k| Key::parse(k).unwrap()) else {
        return out;
    };
    let decrypt = |part: PartKey| {
        let mut plain = Vec::new();
        DecryptReader::new(bytes, &part)
            .read_to_end(&mut plain)
            .ok()
            .map(|_| plain)
    };
    let (first, rest) = rel.split_once('/').unwrap_or((rel, ""));
    let opened = match (first, rest) {
        ("chunks", name) => {
            let address = name.split('/').nth(1).unwrap().split('.').next().unwrap();
            decrypt(PartKey::chunk(&key, address))
        }
        ("erasures", _) => d1r2::format::erasure::decode(rel, bytes, Some(&key))
            .ok()
            .map(|e| format!("{e:?}").into_bytes()),
        (id, "manifest.json") => d1r2::format::envelope::parse(id, bytes)
            .ok()
            .and_then(|m| m.open(Some(&key)).ok())
            .map(|m| serde_json::to_vec(&m).unwrap()),
        (id, rel) => decrypt(PartKey::bound(&key, id, rel)),
    };
    if let Some(plain) = opened {
        out.extend(gunzip(&plain));
        out.push(plain);
    }
    out
}

/// The stored objects (as files) that reveal `needle` in any way [`revealed`] reads them.
fn holding(setup: &Setup, needle: &str) -> Vec<String> {
    let root = setup.bed.files();
    walk(&root)
        .into_iter()
        .filter_map(|path| {
            let rel = path
                .strip_prefix(&root)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            let bytes = std::fs::read(&path).unwrap();
            revealed(&rel, &bytes, setup.key)
                .iter()
                .any(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
                .then_some(rel)
        })
        .collect()
}

/// The retention plan's lines (id, time, keep or remove, why).
async fn retention(setup: &Setup) -> Vec<String> {
    let from = setup.bed.dest();
    let run = setup
        .run(&["prune", "--from", &from, "--keep-last", "3", "--dry-run"])
        .await;
    run.success();
    run.stdout
        .lines()
        .filter(|l| l.starts_with("20"))
        .map(str::to_string)
        .collect()
}

/// `forget --rewrite`: every backup keeps its id, time and place in the retention policy, reads
/// back as before less the person's rows, and once prune collected the old chunks no stored
/// object holds their values (raw, gunzipped or decrypted).
async fn rewrite(bed: Bed, key: Option<&'static str>) {
    let setup = five_backups(bed, key).await;
    let from = setup.bed.dest();
    let plan = retention(&setup).await;
    for needle in [EMAIL, SECRET_TEXT] {
        assert!(
            !holding(&setup, needle).is_empty(),
            "{needle} is found before"
        );
    }
    let run = setup
        .run(&[
            "forget",
            "--from",
            &from,
            "--table",
            "users",
            "--where",
            "id = 7",
            "--related",
            "--reason",
            "request 3",
            "--rewrite",
        ])
        .await;
    run.success();
    assert_eq!(
        output_line(&run.stdout, "Rewritten"),
        "20 rows removed from 5 backups",
        "{run}"
    );
    let pruned = setup
        .run(&["prune", "--from", &from, "--keep-last", "10"])
        .await;
    pruned.success();
    assert!(
        pruned.stdout.contains("chunks no backup names: "),
        "{pruned}"
    );
    for needle in [EMAIL, SECRET_TEXT] {
        assert_eq!(holding(&setup, needle), Vec::<String>::new(), "{needle}");
    }
    assert_eq!(retention(&setup).await, plan);
    for (round, (id, db)) in setup.backups.iter().enumerate() {
        let want = forgotten(db, &setup.bed.scratch(&format!("want-{round}.db")));
        let restored = setup.bed.scratch(&format!("restored-{round}.db"));
        let run = setup.restore(&from, id, &restored, &[]).await;
        run.success();
        same(&restored, &want);
        setup
            .run(&["verify", "--from", &from, "--backup", id])
            .await
            .success();
    }
}

async fn rewrite_plain(bed: Bed) {
    rewrite(bed, None).await;
}

async fn rewrite_encrypted(bed: Bed) {
    rewrite(bed, Some(KEY)).await;
}

crate::common::bed::both!(rewrite_plain);
crate::common::bed::both!(rewrite_encrypted);

/// Parts a backup's manifest does not name (what a rewrite that crashed left, before or after
/// replacing the manifest) are deleted by the next rewrite once an hour old; a younger one may be
/// a running rewrite's, and someone else's file is never d1r2's to delete.
#[tokio::test(flavor = "multi_thread")]
async fn a_rewrite_removes_what_a_crashed_one_left() {
    let setup = five_backups(Bed::local().await, None).await;
    let folder = setup.bed.files().join(&setup.backups[0].0).join("data");
    let part = std::fs::read_dir(&folder)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let stray = |name: &str, age: std::time::Duration| {
        let path = folder.join(name);
        std::fs::copy(&part, &path).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(std::time::SystemTime::now() - age)
            .unwrap();
        path
    };
    let hour = std::time::Duration::from_secs(3600);
    let old = stray("0000-users.0-e00000000.sql.gz", 2 * hour);
    let young = stray("0000-users.0-e11111111.sql.gz", hour / 60);
    let foreign = stray("notes.txt", 2 * hour);
    let from = setup.bed.dest();
    setup
        .run(&[
            "forget",
            "--from",
            &from,
            "--table",
            "users",
            "--where",
            "id = 7",
            "--reason",
            "r",
            "--rewrite",
        ])
        .await
        .success();
    assert!(
        !old.exists(),
        "an hour-old part no manifest names is deleted"
    );
    assert!(young.exists() && foreign.exists());
}
