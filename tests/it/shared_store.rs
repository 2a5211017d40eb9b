//! A destination prefix is shared ground: the app's own files, another database's store nested in
//! it, folder markers a console made, a stray `manifest.json`, another backup started in the
//! same second. Each test runs through the binary against the local folder and the in-process S3
//! server, with random prefixes, names and contents, and checks that d1r2 reads, deletes and
//! takes `latest` from nothing but its own.

use crate::common::cmd::{D1r2, Run};
use crate::common::create_db;
use crate::fakes::s3::FakeS3;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

const BUCKET: &str = "shared";

/// Where a test's store lives: a local folder, or a bucket of the fake S3 server (whose objects
/// are files under a folder too, so both are seeded, aged and compared as files).
struct Bed {
    dir: tempfile::TempDir,
    server: Option<FakeS3>,
}

impl Bed {
    async fn local() -> Bed {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("root")).unwrap();
        Bed { dir, server: None }
    }

    async fn s3() -> Bed {
        Bed {
            dir: tempfile::tempdir().unwrap(),
            server: Some(FakeS3::start(&[BUCKET]).await),
        }
    }

    /// The folder that holds every key of the store's root as a file.
    fn files(&self) -> PathBuf {
        match &self.server {
            Some(server) => server.root.path().join(BUCKET),
            None => self.dir.path().join("root"),
        }
    }

    /// `--dest`/`--from` for `prefix` under the root.
    fn dest(&self, prefix: &str) -> String {
        match &self.server {
            Some(_) => format!("s3://{BUCKET}/{prefix}"),
            None => self.files().join(prefix).to_str().unwrap().to_string(),
        }
    }

    fn scratch(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self, args: &[&str]) -> D1r2 {
        let mut cmd = D1r2::new();
        cmd.args(args).env_remove("GITHUB_ACTIONS");
        if let Some(server) = &self.server {
            cmd.envs(server.env());
        }
        cmd
    }

    async fn run(&self, args: &[&str]) -> Run {
        self.command(args).run_async().await
    }

    async fn ok(&self, args: &[&str]) -> Run {
        let run = self.run(args).await;
        run.success();
        run
    }

    /// A key that a bucket can hold but a file system cannot (a folder marker, an empty segment):
    /// listed by the S3 server; on a local folder, the folder marker is an empty directory.
    fn plant(&self, key: &str) {
        match &self.server {
            Some(server) => server.plant(BUCKET, key),
            None => {
                if let Some(folder) = key.strip_suffix('/').filter(|k| !k.contains("//")) {
                    std::fs::create_dir_all(self.files().join(folder)).unwrap();
                }
            }
        }
    }

    /// Every request the S3 server saw (none for a local folder).
    fn log(&self) -> Vec<String> {
        self.server.as_ref().map(FakeS3::log).unwrap_or_default()
    }

    /// `times` backups of `db` into `prefix`, each of which must succeed.
    async fn backups(&self, db: &Path, prefix: &str, times: usize) {
        for _ in 0..times {
            self.ok(&[
                "backup",
                "--source",
                db.to_str().unwrap(),
                "--dest",
                &self.dest(prefix),
            ])
            .await;
        }
    }

    async fn ids(&self, prefix: &str) -> Vec<String> {
        let out = self
            .ok(&["list", "--from", &self.dest(prefix), "--json"])
            .await;
        let items: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        items
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_string())
            .collect()
    }
}

/// Runs a test body against the local folder and against the S3 server.
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread")]
            async fn local() {
                super::$name(super::Bed::local().await).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn s3() {
                super::$name(super::Bed::s3().await).await;
            }
        }
    };
}

fn random_name(len: usize) -> String {
    (0..len)
        .map(|_| (b'a' + rand::random::<u8>() % 26) as char)
        .collect()
}

fn random_bytes() -> Vec<u8> {
    let len = 1 + rand::random::<u16>() as usize % 3000;
    (0..len).map(|_| rand::random::<u8>()).collect()
}

/// A database of a random number of rows; returns its path.
fn database(bed: &Bed, name: &str) -> PathBuf {
    let path = bed.scratch(name);
    let rows = 1 + rand::random::<u8>() % 50;
    let values: Vec<String> = (0..rows)
        .map(|i| format!("({i}, '{}')", random_name(12)))
        .collect();
    create_db(
        &path,
        &format!(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES {};",
            values.join(",")
        ),
    );
    path
}

/// Writes `bytes` under `key` as a file of the store's root: an object someone else put there.
fn put_file(bed: &Bed, key: &str, bytes: &[u8]) {
    let path = bed.files().join(key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Every file under `dir` with its bytes, by path relative to `dir`.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                out.insert(path.strip_prefix(dir).unwrap().to_path_buf(), bytes);
            }
        }
    }
    out
}

/// Sets every file and folder under `dir` `by` into the past: S3's `LastModified` is the file's
/// modification time on the fake server.
fn age(dir: &Path, by: Duration) {
    let then = SystemTime::now() - by;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            age(&path, by);
        }
        let file = std::fs::File::open(&path).unwrap();
        file.set_times(std::fs::FileTimes::new().set_modified(then))
            .unwrap();
    }
}

const TWO_DAYS: Duration = Duration::from_secs(2 * 86_400);

/// The id a backup started at `at` gets first.
fn base_id(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y%m%dT%H%M%SZ").to_string()
}

/// The bases of the ids of backups started from now for the next `seconds` seconds.
fn coming_bases(seconds: i64) -> Vec<String> {
    let now = chrono::Utc::now();
    (0..seconds)
        .map(|s| base_id(now + chrono::TimeDelta::seconds(s)))
        .collect()
}

/// The foreign objects around real backups: the app's files, a folder whose name sorts after
/// every id holding a `manifest.json`, a nested store of another database, files of others
/// inside backup folders and in an id-named folder without a backup, folder markers and a key
/// with an empty segment. `list`, `latest` and `prune` see only the backups; prune leaves every
/// foreign byte where it was, and never asks the store for a foreign key.
async fn prune_and_list_leave_what_is_not_a_backup_alone(bed: Bed) {
    let prefix = format!("{}/{}", random_name(6), random_name(4));
    let dest = bed.dest(&prefix);
    let db = database(&bed, "app.db");
    // Full backups and chunked ones, whose chunks share the prefix with the foreign keys.
    for chunked in [false, true, true] {
        let mut args = vec!["backup", "--source", db.to_str().unwrap(), "--dest", &dest];
        if !chunked {
            args.push("--full");
        }
        bed.ok(&args).await;
    }
    let ids = bed.ids(&prefix).await;
    assert_eq!(ids.len(), 3, "{ids:?}");
    let (oldest, newest) = (&ids[0], &ids[2]);

    let nested = format!("{prefix}/{}", random_name(7));
    let other = database(&bed, "other.db");
    bed.backups(&other, &nested, 2).await;
    let nested_ids = bed.ids(&nested).await;

    let app = random_name(5);
    let last = format!("z{}", random_name(5));
    let empty_id = base_id(chrono::Utc::now() - chrono::TimeDelta::days(40));
    let foreign = [
        format!("{prefix}/{app}/{}.{}", random_name(8), random_name(3)),
        format!("{prefix}/{app}/{}/{}", random_name(4), random_name(9)),
        format!("{prefix}/{last}/manifest.json"),
        format!("{prefix}/{last}/claim.json"),
        format!("{prefix}/{oldest}/{}.txt", random_name(6)),
        format!("{prefix}/{oldest}/data/{}.bin", random_name(6)),
        format!("{prefix}/{oldest}/data/0000.sql.gz.{}", random_name(3)),
        format!("{prefix}/{empty_id}/{}.jpg", random_name(6)),
        format!("{prefix}/{}", random_name(10)),
        format!("{prefix}/chunks/{}", random_name(8)),
        format!("{prefix}/chunks/ab/{}.sql.gz", random_name(12)),
        format!(
            "{prefix}/chunks/{}.sql.gz",
            hex::encode(rand::random::<[u8; 32]>())
        ),
        format!(
            "{prefix}/chunks/zz/{}.sql.gz",
            hex::encode(rand::random::<[u8; 32]>())
        ),
        format!(
            "{prefix}/chunks/ab/ab{}.sql.gz.bak",
            &hex::encode(rand::random::<[u8; 32]>())[2..]
        ),
        format!(
            "{prefix}/{}\\manifest.json",
            base_id(chrono::Utc::now() + chrono::TimeDelta::days(1))
        ),
    ];
    for key in &foreign {
        put_file(&bed, key, &random_bytes());
    }
    // A foreign manifest that would parse, newer than any backup.
    put_file(
        &bed,
        &format!("{prefix}/{last}/manifest.json"),
        std::fs::read(bed.files().join(format!("{prefix}/{newest}/manifest.json")))
            .unwrap()
            .as_slice(),
    );
    let markers = [
        format!("{prefix}/{oldest}/data/"),
        format!("{prefix}/{newest}/data/"),
        format!("{prefix}/{app}/"),
        format!("{prefix}/{}//manifest.json", random_name(3)),
        format!("{prefix}/{oldest}//manifest.json"),
    ];
    for key in &markers {
        bed.plant(key);
    }
    age(&bed.files(), TWO_DAYS);
    let foreign_before: BTreeMap<PathBuf, Vec<u8>> = snapshot(&bed.files())
        .into_iter()
        .filter(|(path, _)| {
            foreign
                .iter()
                .any(|k| path == Path::new(k) || path.starts_with(format!("{nested}/")))
        })
        .collect();
    assert!(foreign_before.len() > foreign.len(), "{foreign_before:?}");

    assert_eq!(bed.ids(&prefix).await, ids, "list took in a foreign folder");
    let verified = bed.ok(&["verify", "--from", &dest]).await;
    assert!(verified.stdout.contains(newest.as_str()), "{verified}");
    let restored = bed.scratch("latest.db");
    bed.ok(&[
        "restore",
        "--from",
        &dest,
        "--to",
        restored.to_str().unwrap(),
    ])
    .await;
    crate::common::assert_same_database(&db, &restored);

    let pruned = bed
        .ok(&["prune", "--from", &dest, "--keep-last", "1"])
        .await;
    assert_eq!(
        bed.ids(&prefix).await,
        std::slice::from_ref(newest),
        "{pruned}"
    );
    let after = snapshot(&bed.files());
    for (path, bytes) in &foreign_before {
        assert!(
            after.get(path) == Some(bytes),
            "prune changed or removed {}\n{pruned}",
            path.display()
        );
    }
    assert_eq!(bed.ids(&nested).await, nested_ids);
    bed.ok(&["verify", "--from", &bed.dest(&nested)]).await;
    for removed in &ids[..2] {
        let left: Vec<&PathBuf> = after
            .keys()
            .filter(|p| p.starts_with(format!("{prefix}/{removed}")))
            .filter(|p| !foreign_before.contains_key(*p))
            .collect();
        assert!(left.is_empty(), "{removed}: {left:?}");
    }
    let stray: Vec<String> = bed
        .log()
        .into_iter()
        .filter(|l| {
            foreign.iter().chain(&markers).any(|k| {
                let key = k.trim_end_matches('/');
                l.split(['?', ' ']).nth(1) == Some(format!("/{BUCKET}/{key}").as_str())
            }) || l.contains(&format!("/{last}/"))
                || l.contains(&format!("/{app}"))
        })
        .collect();
    assert!(stray.is_empty(), "foreign keys were asked for: {stray:?}");
}
both!(prune_and_list_leave_what_is_not_a_backup_alone);

/// A prefix without the store marker is not known to be a store: prune refuses (exit 2, one
/// line naming the marker) and deletes nothing, at a bucket root holding a store nested in it
/// as in a store whose marker is gone.
async fn prune_refuses_a_prefix_without_the_marker(bed: Bed) {
    let parent = random_name(6);
    let prefix = format!("{parent}/{}", random_name(5));
    let db = database(&bed, "app.db");
    bed.backups(&db, &prefix, 2).await;
    put_file(
        &bed,
        &format!("{parent}/{}/x", random_name(4)),
        &random_bytes(),
    );
    age(&bed.files(), TWO_DAYS);
    let before = snapshot(&bed.files());
    for from in [bed.dest(&parent), bed.dest(&prefix)] {
        if from == bed.dest(&prefix) {
            std::fs::remove_file(bed.files().join(&prefix).join("d1r2-store.json")).unwrap();
        }
        for dry in [false, true] {
            let mut args = vec!["prune", "--from", &from, "--keep-last", "1"];
            if dry {
                args.push("--dry-run");
            }
            let run = bed.run(&args).await;
            run.fails_with(2);
            assert_eq!(run.stderr.trim().lines().count(), 1, "{run}");
            assert!(run.stderr.contains("d1r2-store.json"), "{run}");
        }
    }
    let mut after = snapshot(&bed.files());
    after.insert(
        PathBuf::from(format!("{prefix}/d1r2-store.json")),
        before[&PathBuf::from(format!("{prefix}/d1r2-store.json"))].clone(),
    );
    assert!(before == after, "a refused prune changed the store");
    // The next backup writes the marker again, and prune goes ahead.
    bed.ok(&[
        "backup",
        "--source",
        db.to_str().unwrap(),
        "--dest",
        &bed.dest(&prefix),
        "--prune",
        "--keep-last",
        "1",
    ])
    .await;
    assert_eq!(bed.ids(&prefix).await.len(), 1);
}
both!(prune_refuses_a_prefix_without_the_marker);

/// An id already claimed (by a backup of another database started in the same second) is never
/// written into: the backup takes the next free suffix, and the claims it met stay as they were.
async fn a_claimed_id_is_never_written_into(bed: Bed) {
    let prefix = random_name(8);
    let db = database(&bed, "app.db");
    let mut claims = BTreeMap::new();
    for base in coming_bases(8) {
        for id in [base.clone(), format!("{base}-1")] {
            let key = format!("{prefix}/{id}/claim.json");
            let bytes = random_bytes();
            put_file(&bed, &key, &bytes);
            claims.insert(PathBuf::from(key), bytes);
        }
    }
    bed.backups(&db, &prefix, 1).await;
    let ids = bed.ids(&prefix).await;
    assert_eq!(ids.len(), 1);
    assert!(ids[0].ends_with("-2"), "{ids:?}");
    let after = snapshot(&bed.files());
    for (path, bytes) in &claims {
        assert!(after.get(path) == Some(bytes), "{} changed", path.display());
    }
    let restored = bed.scratch("r.db");
    bed.ok(&[
        "restore",
        "--from",
        &bed.dest(&prefix),
        "--to",
        restored.to_str().unwrap(),
    ])
    .await;
    crate::common::assert_same_database(&db, &restored);
}
both!(a_claimed_id_is_never_written_into);

/// Backups started at once into one store, again and again: every one gets an id of its own and
/// stays whole, whichever second they start in.
async fn backups_racing_get_ids_of_their_own(bed: Bed) {
    let prefix = random_name(8);
    let dest = bed.dest(&prefix);
    let dbs: Vec<PathBuf> = (0..3)
        .map(|i| database(&bed, &format!("db{i}.db")))
        .collect();
    let rounds = 4;
    for _ in 0..rounds {
        let runs = dbs.iter().map(|db| {
            let mut cmd =
                bed.command(&["backup", "--source", db.to_str().unwrap(), "--dest", &dest]);
            async move { cmd.run_async().await }
        });
        for run in futures::future::join_all(runs).await {
            run.success();
        }
    }
    let ids = bed.ids(&prefix).await;
    assert_eq!(ids.len(), rounds * dbs.len(), "{ids:?}");
    let mut seen_suffix = false;
    for id in &ids {
        seen_suffix |= id.contains('-');
        bed.ok(&["verify", "--from", &dest, "--backup", id]).await;
    }
    if !seen_suffix {
        eprintln!("no two backups started in the same second this time");
    }
}
both!(backups_racing_get_ids_of_their_own);

/// With two destinations, an id taken in one of them is released in the other: each store keeps
/// only its own claims, and the backup lands under one id in both.
#[tokio::test(flavor = "multi_thread")]
async fn a_claim_taken_in_one_store_is_released_in_the_other() {
    let bed = Bed::s3().await;
    let local = bed.scratch("local");
    let prefix = random_name(8);
    let db = database(&bed, "app.db");
    let mut mine = Vec::new();
    for base in coming_bases(8) {
        // The base id is taken on S3, its first suffix locally.
        let s3_claim = random_bytes();
        put_file(&bed, &format!("{prefix}/{base}/claim.json"), &s3_claim);
        let local_claim = random_bytes();
        let path = local.join(format!("{base}-1/claim.json"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &local_claim).unwrap();
        mine.push((base, s3_claim, local_claim));
    }
    bed.ok(&[
        "backup",
        "--source",
        db.to_str().unwrap(),
        "--dest",
        local.to_str().unwrap(),
        "--dest",
        &bed.dest(&prefix),
    ])
    .await;
    let ids = bed.ids(&prefix).await;
    assert_eq!(ids.len(), 1);
    assert!(ids[0].ends_with("-2"), "{ids:?}");
    let base = ids[0].trim_end_matches("-2");
    let (_, s3_claim, local_claim) = mine.iter().find(|(b, _, _)| b == base).unwrap();
    assert!(
        !local.join(base).exists(),
        "the claim made locally for {base} was left"
    );
    assert!(
        !bed.files()
            .join(&prefix)
            .join(format!("{base}-1/claim.json"))
            .exists(),
        "the claim made on S3 for {base}-1 was left"
    );
    assert_eq!(
        &std::fs::read(bed.files().join(&prefix).join(base).join("claim.json")).unwrap(),
        s3_claim
    );
    assert_eq!(
        &std::fs::read(local.join(format!("{base}-1/claim.json"))).unwrap(),
        local_claim
    );
    let local_ids = bed
        .ok(&["list", "--from", local.to_str().unwrap(), "--json"])
        .await;
    assert!(local_ids.stdout.contains(&ids[0]), "{local_ids}");
}

/// A backup that fails midway deletes what it wrote and nothing else in its folder: an object
/// someone else put where the backup's data folder would go stops the backup, and stays, with
/// the other foreign objects of the folder, byte for byte.
async fn a_failed_backup_deletes_only_what_it_wrote(bed: Bed) {
    let prefix = random_name(8);
    let db = database(&bed, "app.db");
    let mut foreign = BTreeMap::new();
    for base in coming_bases(8) {
        put_file(
            &bed,
            &format!("{prefix}/{base}/claim.json"),
            &random_bytes(),
        );
        for key in [
            format!("{prefix}/{base}-1/data"),
            format!("{prefix}/{base}-1/{}.txt", random_name(5)),
            format!("{prefix}/{base}-1/schema.sql.gz.{}", random_name(3)),
        ] {
            let bytes = random_bytes();
            put_file(&bed, &key, &bytes);
            foreign.insert(PathBuf::from(key), bytes);
        }
    }
    // A full backup, whose parts go in the data folder the foreign object is in the way of.
    let run = bed
        .run(&[
            "backup",
            "--full",
            "--source",
            db.to_str().unwrap(),
            "--dest",
            &bed.dest(&prefix),
        ])
        .await;
    run.fails_with(1);
    let after = snapshot(&bed.files());
    for (path, bytes) in &foreign {
        assert!(
            after.get(path) == Some(bytes),
            "{} changed or went\n{run}",
            path.display()
        );
    }
    let written: Vec<&PathBuf> = after
        .keys()
        .filter(|p| {
            p.to_str()
                .unwrap()
                .strip_prefix(&format!("{prefix}/"))
                .is_some_and(|k| {
                    k.split_once('/').is_some_and(|(id, rel)| {
                        id.ends_with("-1")
                            && matches!(
                                rel,
                                "claim.json" | "schema.sql.gz" | "post.sql.gz" | "manifest.json"
                            )
                    })
                })
        })
        .collect();
    assert!(
        written.is_empty(),
        "the failed backup left {written:?}\n{run}"
    );
    assert!(bed.ids(&prefix).await.is_empty());
}
both!(a_failed_backup_deletes_only_what_it_wrote);

/// What a killed backup and a killed upload leave behind goes once a day old, and only that:
/// the claim and empty folders of a dead backup (local), d1r2's temporary files in backup
/// folders (local) and unfinished uploads of backup keys (S3), and the emptied folders of the
/// backups prune removes. Another program's temporary-looking files, empty folders and uploads
/// stay.
async fn prune_removes_its_own_leftovers_only(bed: Bed) {
    let prefix = random_name(8);
    let dest = bed.dest(&prefix);
    let db = database(&bed, "app.db");
    bed.backups(&db, &prefix, 2).await;
    let ids = bed.ids(&prefix).await;
    let dead = base_id(chrono::Utc::now() - chrono::TimeDelta::days(3));
    put_file(
        &bed,
        &format!("{prefix}/{dead}/claim.json"),
        &random_bytes(),
    );
    let app = random_name(6);
    let nonce = "0123456789abcdef";
    let (theirs, ours): (Vec<String>, Vec<String>) = (
        vec![
            format!("{prefix}/{app}/.d1r2-tmp-{nonce}-{}.jpg", random_name(4)),
            format!("{prefix}/{}/.d1r2-tmp-{nonce}-notes.txt", ids[1]),
        ],
        vec![format!(
            "{prefix}/{}/data/.d1r2-tmp-{nonce}-0009.sql.gz",
            ids[1]
        )],
    );
    let empty_theirs = [
        format!("{prefix}/{}", random_name(5)),
        format!("{prefix}/{}/{}", ids[1], random_name(5)),
    ];
    let s3 = match &bed.server {
        None => {
            std::fs::create_dir_all(bed.files().join(format!("{prefix}/{dead}/data"))).unwrap();
            for key in theirs.iter().chain(&ours) {
                put_file(&bed, key, &random_bytes());
            }
            for folder in &empty_theirs {
                std::fs::create_dir_all(bed.files().join(folder)).unwrap();
            }
            None
        }
        Some(server) => {
            let store = d1r2::store::s3::S3Store::connect(d1r2::store::s3::S3Config {
                bucket: BUCKET.to_string(),
                prefix: prefix.clone(),
                endpoint: Some(server.url.clone()),
                region: Some("auto".to_string()),
                credentials: Some((
                    crate::fakes::s3::ACCESS_KEY.to_string(),
                    crate::fakes::s3::SECRET_KEY.to_string(),
                )),
                scheme: "s3://",
            })
            .await
            .expect("the fake's keys");
            let keys = [
                format!("{dead}/data/0000.sql.gz"),
                format!("{app}/{}.bin", random_name(5)),
            ];
            for key in &keys {
                use d1r2::store::Store;
                let mut upload = store.put_stream(key).await.unwrap();
                let big = vec![7u8; d1r2::store::PART_SIZE + 1];
                upload.write(big.into()).await.unwrap();
                std::mem::forget(upload);
            }
            for entry in std::fs::read_dir(server.root.path()).unwrap() {
                let path = entry.unwrap().path();
                if path.to_string_lossy().contains(".upload-") {
                    let file = std::fs::File::open(&path).unwrap();
                    file.set_times(
                        std::fs::FileTimes::new().set_modified(SystemTime::now() - TWO_DAYS),
                    )
                    .unwrap();
                }
            }
            Some(keys)
        }
    };
    age(&bed.files(), TWO_DAYS);
    let before = snapshot(&bed.files());

    let pruned = bed
        .ok(&["prune", "--from", &dest, "--keep-last", "1"])
        .await;
    assert_eq!(bed.ids(&prefix).await, ids[1..], "{pruned}");
    let after = snapshot(&bed.files());
    let gone = |key: &String| !after.contains_key(Path::new(key));
    assert!(gone(&format!("{prefix}/{dead}/claim.json")), "{pruned}");
    match s3 {
        None => {
            assert!(!bed.files().join(&prefix).join(&dead).exists(), "{pruned}");
            assert!(
                !bed.files().join(&prefix).join(&ids[0]).exists(),
                "{pruned}"
            );
            for key in &ours {
                assert!(gone(key), "{key} was left\n{pruned}");
            }
            for key in &theirs {
                assert!(
                    after.get(Path::new(key)) == before.get(Path::new(key)),
                    "{key} went\n{pruned}"
                );
            }
            for folder in &empty_theirs {
                assert!(bed.files().join(folder).is_dir(), "{folder} went");
            }
        }
        Some([dead_upload, their_upload]) => {
            let aborts: Vec<String> = bed
                .log()
                .into_iter()
                .filter(|l| l.starts_with("DELETE") && l.contains("uploadId="))
                .collect();
            let aborted = |key: &str| {
                aborts
                    .iter()
                    .any(|l| l.contains(&format!("/{BUCKET}/{prefix}/{key}?")))
            };
            assert!(aborted(&dead_upload), "{aborts:?}\n{pruned}");
            assert!(!aborted(&their_upload), "{aborts:?}\n{pruned}");
        }
    }
}
both!(prune_removes_its_own_leftovers_only);

/// Ids order by time, then by suffix as a number: of two backups started in one second whose
/// ids are `-2` and `-10` (the suffixes between taken), `latest` is the one that claimed `-10`,
/// which text order would put first.
async fn latest_orders_suffixes_as_numbers(bed: Bed) {
    for attempt in 0..3 {
        let prefix = random_name(8);
        let dest = bed.dest(&prefix);
        for base in coming_bases(6) {
            for n in [0, 1, 3, 4, 5, 6, 7, 8, 9] {
                let id = if n == 0 {
                    base.clone()
                } else {
                    format!("{base}-{n}")
                };
                put_file(&bed, &format!("{prefix}/{id}/claim.json"), b"{}");
            }
        }
        let dbs = [
            database(&bed, &format!("a{attempt}.db")),
            database(&bed, &format!("b{attempt}.db")),
        ];
        let runs = dbs.iter().map(|db| {
            let mut cmd =
                bed.command(&["backup", "--source", db.to_str().unwrap(), "--dest", &dest]);
            async move { cmd.run_async().await }
        });
        for run in futures::future::join_all(runs).await {
            run.success();
        }
        let ids = bed.ids(&prefix).await;
        let same_second = ids[0].split('-').next() == ids[1].split('-').next();
        if !same_second {
            eprintln!("attempt {attempt}: the backups started in different seconds: {ids:?}");
            continue;
        }
        assert!(ids[0].ends_with("-2") && ids[1].ends_with("-10"), "{ids:?}");
        let verified = bed.ok(&["verify", "--from", &dest]).await;
        assert!(verified.stdout.contains(&ids[1]), "{verified}");
        return;
    }
    eprintln!("no two backups started in the same second: the order was not tried");
}
both!(latest_orders_suffixes_as_numbers);
