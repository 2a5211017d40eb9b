//! Encrypted backups end to end: nothing readable at rest (no name, no value, in no object and no
//! key), a lossless restore with the key, a clear refusal without it or with another one, every
//! tampering refused before anything is written (through a local folder and through S3), older
//! backups still restored, and parts and manifests that `scripts/decrypt_part.py` decrypts and
//! checks without d1r2.

use crate::common;
use crate::fakes;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::cmd::{D1r2, Run};
use common::*;
use d1r2::format::codec::decoder;
use d1r2::format::crypto::{ALGORITHM, KEY_ENV, Key};
use d1r2::format::manifest::{MANIFEST_NAME, Manifest};

const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
/// The same 32 bytes in unpadded base64: both spellings name one key.
const KEY_B64: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
const OTHER_KEY: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";
/// A value in the fixture that must not appear in any stored byte.
const PLAINTEXT: &[u8] = b"semicolon -- not a comment";

fn d1r2(args: &[&str], key: Option<&str>) -> Run {
    let mut cmd = D1r2::new();
    cmd.args(args).env_remove(KEY_ENV);
    if let Some(key) = key {
        cmd.env(KEY_ENV, key);
    }
    cmd.run()
}

/// What the decrypt script printed on stderr.
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Backs `db` up into `dest` with encryption, a full backup (format 3, parts of its own);
/// returns the manifest, opened with the key.
fn encrypted_backup(db: &Path, dest: &Path, compression: &str) -> Manifest {
    let out = d1r2(
        &[
            "backup",
            "--full",
            "--encrypt",
            "--compression",
            compression,
            "--source",
            path(db),
            "--dest",
            path(dest),
        ],
        Some(KEY),
    );
    out.success();
    let id = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("Backup").map(|id| id.trim().to_string()))
        .expect("the backup id is reported");
    opened(&dest.join(&id))
}

/// The manifest of the backup in `folder`, opened with the key.
fn opened(folder: &Path) -> Manifest {
    let id = folder.file_name().unwrap().to_str().unwrap();
    let bytes = std::fs::read(folder.join(MANIFEST_NAME)).unwrap();
    d1r2::format::envelope::parse(id, &bytes)
        .unwrap()
        .open(Some(&Key::parse(KEY).unwrap()))
        .unwrap()
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn copy_dir(from: &Path, to: &Path) {
    for file in files(from) {
        let target = to.join(file.strip_prefix(from).unwrap());
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(&file, &target).unwrap();
    }
}

fn has_python_cryptography() -> bool {
    let has = Command::new("python3")
        .args(["-c", "import cryptography"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has {
        eprintln!(
            "skipped: python3 with the `cryptography` package is not available (pip install cryptography)"
        );
    }
    has
}

fn decrypt_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/decrypt_part.py")
}

#[test]
fn encrypted_backup_restores_only_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = d.join("app.db");
    create_db(&db, include_str!("../fixtures/edge.sql"));
    let dest = d.join("backups");
    let manifest = encrypted_backup(&db, &dest, "none");

    let info = manifest
        .encryption
        .as_ref()
        .expect("manifest records encryption");
    assert_eq!(info.algorithm, ALGORITHM);
    assert_eq!(info.key_fingerprint, Key::parse(KEY).unwrap().fingerprint());
    for object in &manifest.objects {
        let stored = std::fs::read(dest.join(manifest.key(object))).unwrap();
        assert!(stored.starts_with(b"D1R2ENC\0"), "{}", object.key);
        assert!(
            !stored.windows(PLAINTEXT.len()).any(|w| w == PLAINTEXT),
            "{} holds plaintext",
            object.key
        );
    }
    let manifest_text =
        std::fs::read_to_string(dest.join(&manifest.id).join(MANIFEST_NAME)).unwrap();
    assert!(!manifest_text.contains(KEY));

    let restored = d.join("restored.db");
    let from = ["--from", path(&dest)];
    let restore = |key: Option<&str>| {
        d1r2(
            &[&["restore"][..], &from, &["--to", path(&restored)]].concat(),
            key,
        )
    };

    let out = restore(None);
    out.fails_with(2);
    assert!(
        out.stderr.contains(&format!(
            "backup {} is encrypted; set {KEY_ENV}",
            manifest.id
        )),
        "{}",
        out.stderr
    );
    assert!(!restored.exists());

    let out = restore(Some(OTHER_KEY));
    let err = out.stderr;
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&info.key_fingerprint), "{err}");
    assert!(
        err.contains(&Key::parse(OTHER_KEY).unwrap().fingerprint()),
        "{err}"
    );
    assert!(!err.contains(OTHER_KEY) && !err.contains(KEY), "{err}");
    assert!(!restored.exists());

    for command in ["verify", "export"] {
        let out_file = d.join("dump.sql");
        let args = [&[command][..], &from, &["--out", path(&out_file)]].concat();
        let args = if command == "verify" {
            &args[..3]
        } else {
            &args[..]
        };
        let out = d1r2(args, None);
        assert_eq!(out.status.code(), Some(2), "{command}: {}", out.stderr);
        assert!(out.stderr.contains("is encrypted"), "{}", out.stderr);
        let out = d1r2(args, Some(KEY_B64));
        assert!(out.status.success(), "{command}: {}", out.stderr);
    }

    let out = restore(Some(KEY));
    out.success();
    assert_same_database(&db, &restored);
}

#[test]
fn bad_or_missing_keys_are_refused_without_echoing_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = d.join("app.db");
    create_db(&db, "CREATE TABLE t(x); INSERT INTO t VALUES(1);");
    let dest = d.join("b");
    let args = [
        "backup",
        "--encrypt",
        "--source",
        path(&db),
        "--dest",
        path(&dest),
    ];
    let out = d1r2(&args, None);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stderr.contains(KEY_ENV), "{}", out.stderr);
    let short = "0123456789abcdef0123456789abcdef";
    let out = d1r2(&args, Some(short));
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stderr.contains(KEY_ENV), "{}", out.stderr);
    assert!(!out.stderr.contains(short), "{}", out.stderr);
    assert!(!dest.exists() || std::fs::read_dir(&dest).unwrap().next().is_none());
}

#[test]
fn python_script_decrypts_parts_and_checks_manifests_like_d1r2() {
    if !has_python_cryptography() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = d.join("app.db");
    create_db(&db, include_str!("../fixtures/edge.sql"));
    let dest = d.join("backups");
    let manifest = encrypted_backup(&db, &dest, "gzip");
    let key = Key::parse(KEY).unwrap();
    let python = |args: &[&Path]| {
        Command::new("python3")
            .arg(decrypt_script())
            .args(args)
            .env(KEY_ENV, KEY_B64)
            .output()
            .unwrap()
    };
    let manifest_path = dest.join(&manifest.id).join(MANIFEST_NAME);
    let out = python(&[Path::new("--manifest"), &manifest_path]);
    assert!(out.status.success(), "{}", stderr(&out));
    let from_python: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(from_python, serde_json::to_value(&manifest).unwrap());
    for object in &manifest.objects {
        let part = dest.join(manifest.key(object));
        let mut expected = Vec::new();
        decoder(
            std::fs::File::open(&part).unwrap(),
            manifest.compression,
            Some(&manifest.part_key(&key, object)),
        )
        .read_to_end(&mut expected)
        .unwrap();
        let out = python(&[&part]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(out.stdout, expected, "{}", object.key);
        assert!(!expected.is_empty());
    }

    // A format 2 part, bound to nothing, still decrypts.
    let old = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/format2/encrypted/20261203T062311Z/data/0000-authors.0.sql.gz");
    let out = python(&[&old]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("INSERT INTO \"authors\""));

    // What d1r2 refuses, the script refuses: an altered manifest, a part moved to another key.
    let parts: Vec<_> = manifest
        .objects
        .iter()
        .filter(|o| o.key.starts_with("data/"))
        .map(|o| dest.join(manifest.key(o)))
        .collect();
    std::fs::copy(&parts[0], &parts[1]).unwrap();
    let out = python(&[&parts[1]]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("SHA-256"), "{}", stderr(&out));
    let mut stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    stored["bytes"] = serde_json::json!(1);
    std::fs::write(&manifest_path, serde_json::to_vec(&stored).unwrap()).unwrap();
    let out = python(&[Path::new("--manifest"), &manifest_path]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("altered"), "{}", stderr(&out));
}

/// Every name and value in this database carries the marker, so any of it readable at rest is
/// found by one search.
const MARKED: &str = "
    CREATE TABLE zqxmarkpatients(id INTEGER PRIMARY KEY AUTOINCREMENT, zqxmarkname TEXT, zqxmarknote BLOB);
    INSERT INTO zqxmarkpatients(zqxmarkname, zqxmarknote) VALUES ('zqxmarkalice', 'zqxmarksecret'), ('zqxmarkbob', NULL);
    CREATE TABLE zqxmarkvisits(zqxmarkwhen TEXT PRIMARY KEY, zqxmarkwho INTEGER) WITHOUT ROWID;
    INSERT INTO zqxmarkvisits VALUES ('zqxmark2026', 1);
    CREATE INDEX zqxmarkby_name ON zqxmarkpatients(zqxmarkname);
    CREATE VIEW zqxmarknames AS SELECT zqxmarkname FROM zqxmarkpatients;
    CREATE TRIGGER zqxmarktouch AFTER UPDATE ON zqxmarkpatients BEGIN SELECT 1; END;
    CREATE VIRTUAL TABLE zqxmarksearch USING fts5(zqxmarkbody);
    INSERT INTO zqxmarksearch VALUES ('zqxmarkindexed words');
";
/// Long enough that ciphertext or its base64 does not hold it by chance, as three letters can.
const MARKER: &[u8] = b"zqxmark";

/// What `bytes` reveals: the bytes themselves, and what they gunzip to when they do.
fn readable(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![bytes.to_vec()];
    let mut unzipped = Vec::new();
    if flate2::read::MultiGzDecoder::new(bytes)
        .read_to_end(&mut unzipped)
        .is_ok()
    {
        out.push(unzipped);
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

#[test]
fn an_encrypted_backup_names_nothing_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = d.join("zqxmarkclinic.db");
    create_db(&db, MARKED);
    let dest = d.join("backups");
    let out = d1r2(
        &[
            "backup",
            "--encrypt",
            "--label",
            "zqxmarklabel",
            "--source",
            path(&db),
            "--dest",
            path(&dest),
        ],
        Some(KEY),
    );
    out.success();
    let stored = files(&dest);
    assert!(stored.len() >= 5, "{stored:?}");
    for file in &stored {
        let key = file.strip_prefix(&dest).unwrap().to_string_lossy();
        assert!(
            !contains(key.as_bytes(), MARKER),
            "the key {key} names the data"
        );
        for view in readable(&std::fs::read(file).unwrap()) {
            assert!(!contains(&view, MARKER), "{key} reveals the data");
        }
    }
    // Without the key, list shows the backup and nothing of what it holds.
    let out = d1r2(&["list", "--from", path(&dest), "--json"], None);
    out.success();
    assert!(!contains(out.stdout.as_bytes(), MARKER), "{}", out.stdout);
    let listed: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(listed[0]["encrypted"], true);
    assert!(listed[0]["tables"].is_null() && listed[0]["rows"].is_null());
    assert!(listed[0]["bytes"].as_u64().unwrap() > 0);
    // With it, everything.
    let out = d1r2(&["list", "--from", path(&dest), "--json"], Some(KEY));
    let listed: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(listed[0]["tables"], 3, "{listed}");
    assert_eq!(listed[0]["rows"], 4, "{listed}");
    assert_eq!(listed[0]["label"], "zqxmarklabel");

    let restored = d.join("restored.db");
    let out = d1r2(
        &["restore", "--from", path(&dest), "--to", path(&restored)],
        Some(KEY),
    );
    out.success();
    assert_same_database(&db, &restored);
}

#[test]
fn list_and_prune_need_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = d.join("app.db");
    create_db(&db, "CREATE TABLE t(x); INSERT INTO t VALUES(1);");
    let dest = d.join("backups");
    let backup = |extra: &[&str]| {
        let args = [
            &[
                "backup",
                "--encrypt",
                "--source",
                path(&db),
                "--dest",
                path(&dest),
            ][..],
            extra,
        ]
        .concat();
        let out = d1r2(&args, Some(KEY));
        out.success();
    };
    backup(&["--label", "sealed note"]);
    backup(&["--label", "shown note", "--public-label"]);
    let out = d1r2(&["list", "--from", path(&dest)], None);
    let text = &out.stdout;
    out.success();
    assert!(
        text.contains("shown note") && !text.contains("sealed note"),
        "{text}"
    );
    assert_eq!(
        text.lines().filter(|l| l.contains(" yes ")).count(),
        2,
        "{text}"
    );
    let out = d1r2(&["prune", "--from", path(&dest), "--keep-last", "1"], None);
    out.success();
    let out = d1r2(&["list", "--from", path(&dest), "--json"], Some(KEY));
    let listed: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["label"], "shown note");
    assert_eq!(listed[0]["rows"], 1);
}

/// One way to tamper with backup `a` (the other backup, made with the same key, is `b`), in the
/// folder that holds both.
type Tamper = fn(&Path, &Manifest, &Manifest);

fn data_parts(m: &Manifest) -> Vec<String> {
    m.objects
        .iter()
        .filter(|o| o.key.starts_with("data/"))
        .map(|o| m.key(o))
        .collect()
}

fn edit_manifest(root: &Path, m: &Manifest, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = root.join(&m.id).join(MANIFEST_NAME);
    let mut value: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut value);
    std::fs::write(&path, serde_json::to_vec_pretty(&value).unwrap()).unwrap();
}

fn tamperings() -> Vec<(&'static str, Tamper)> {
    vec![
        ("an object dropped", |root, a, _| {
            std::fs::remove_file(root.join(&data_parts(a)[1])).unwrap();
        }),
        ("two objects swapped", |root, a, _| {
            let parts = data_parts(a);
            let (x, y) = (root.join(&parts[0]), root.join(&parts[1]));
            let first = std::fs::read(&x).unwrap();
            std::fs::copy(&y, &x).unwrap();
            std::fs::write(&y, first).unwrap();
        }),
        (
            "a part of another backup with the same key",
            |root, a, b| {
                std::fs::copy(root.join(&data_parts(b)[0]), root.join(&data_parts(a)[0])).unwrap();
            },
        ),
        ("row counts written into the public part", |root, a, _| {
            edit_manifest(root, a, |m| {
                m["tables"] = serde_json::json!([{"name": "users", "rows": 1}]);
            });
        }),
        ("the public size edited", |root, a, _| {
            edit_manifest(root, a, |m| m["bytes"] = serde_json::json!(1));
        }),
        ("a byte of the sealed section changed", |root, a, _| {
            edit_manifest(root, a, |m| {
                let sealed = m["sealed"].as_str().unwrap();
                let flipped = if sealed.starts_with('A') { "B" } else { "A" };
                m["sealed"] = format!("{flipped}{}", &sealed[1..]).into();
            });
        }),
        ("the encryption block removed", |root, a, _| {
            edit_manifest(root, a, |m| {
                m.as_object_mut().unwrap().remove("encryption");
            });
        }),
        ("the encryption block changed to plain", |root, a, _| {
            edit_manifest(root, a, |m| m["encryption"] = serde_json::Value::Null);
        }),
        (
            "the manifest rewritten as a plain format 2 one",
            |root, a, _| {
                let mut plain = a.clone();
                plain.format = 2;
                plain.encryption = None;
                std::fs::write(
                    root.join(&a.id).join(MANIFEST_NAME),
                    serde_json::to_vec_pretty(&plain).unwrap(),
                )
                .unwrap();
            },
        ),
        (
            "the manifest of another backup under this id",
            |root, a, b| {
                std::fs::copy(
                    root.join(&b.id).join(MANIFEST_NAME),
                    root.join(&a.id).join(MANIFEST_NAME),
                )
                .unwrap();
            },
        ),
        ("another backup's manifest given this id", |root, a, b| {
            std::fs::copy(
                root.join(&b.id).join(MANIFEST_NAME),
                root.join(&a.id).join(MANIFEST_NAME),
            )
            .unwrap();
            edit_manifest(root, a, |m| m["id"] = a.id.clone().into());
        }),
    ]
}

/// Two encrypted full backups of a database of several tables in `dest` (through `run`), then every
/// tampering of the first on a fresh copy of `root` (where `dest`'s objects live on disk):
/// restore, verify and export each refuse it (exit 1, naming the backup) and leave no file
/// behind where they would write.
fn assert_tampering_refused(dest: &str, root: &Path, run: impl Fn(&[&str], Option<&str>) -> Run) {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let db = w.join("app.db");
    create_db(&db, include_str!("../fixtures/edge.sql"));
    for _ in 0..2 {
        let out = run(
            &[
                "backup",
                "--full",
                "--encrypt",
                "--source",
                path(&db),
                "--dest",
                dest,
            ],
            Some(KEY),
        );
        out.success();
    }
    let mut ids: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| root.join(name).join(MANIFEST_NAME).exists())
        .collect();
    ids.sort();
    let (a, b) = (opened(&root.join(&ids[0])), opened(&root.join(&ids[1])));
    assert!(data_parts(&a).len() >= 2);
    let pristine = w.join("pristine");
    copy_dir(root, &pristine);
    let out_dir = w.join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let target = out_dir.join("target");
    let target = path(&target);
    for (name, tamper) in tamperings() {
        std::fs::remove_dir_all(root).unwrap();
        copy_dir(&pristine, root);
        tamper(root, &a, &b);
        for command in [
            vec!["restore", "--from", dest, "--backup", &a.id, "--to", target],
            vec!["verify", "--from", dest, "--backup", &a.id],
            vec!["export", "--from", dest, "--backup", &a.id, "--out", target],
        ] {
            let out = run(&command, Some(KEY));
            let err = &out.stderr;
            assert_eq!(out.status.code(), Some(1), "{name}, {}: {err}", command[0]);
            assert!(err.contains(&a.id), "{name}, {}: {err}", command[0]);
            let left: Vec<_> = std::fs::read_dir(&out_dir).unwrap().collect();
            assert!(
                left.is_empty(),
                "{name}, {}: {left:?} left behind",
                command[0]
            );
        }
    }
    // Untouched, the same backup restores: the refusals above were the tampering's.
    std::fs::remove_dir_all(root).unwrap();
    copy_dir(&pristine, root);
    let out = run(
        &["restore", "--from", dest, "--backup", &a.id, "--to", target],
        Some(KEY),
    );
    out.success();
    assert_same_database(&db, Path::new(target));
}

#[test]
fn tampering_is_refused_before_anything_is_written_in_a_folder() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("backups");
    std::fs::create_dir(&dest).unwrap();
    assert_tampering_refused(path(&dest), &dest, d1r2);
}

#[tokio::test(flavor = "multi_thread")]
async fn tampering_is_refused_before_anything_is_written_in_s3() {
    let server = fakes::s3::FakeS3::start(&["backups"]).await;
    let root = server.root.path().join("backups");
    let env = server.env();
    let run = move |args: &[&str], key: Option<&str>| {
        let mut cmd = D1r2::new();
        cmd.args(args)
            .env_remove(KEY_ENV)
            .envs(env.iter().map(|(k, v)| (k, v)));
        if let Some(key) = key {
            cmd.env(KEY_ENV, key);
        }
        cmd.run()
    };
    tokio::task::spawn_blocking(move || {
        assert_tampering_refused("s3://backups", &root, run);
    })
    .await
    .unwrap();
}

#[test]
fn format_2_backups_still_restore() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let expected = d.join("expected.db");
    create_db(&expected, include_str!("../fixtures/format2.sql"));
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format2");
    for (kind, key) in [("plain", None), ("encrypted", Some(KEY))] {
        // A copy: restore and verify append audit records to the store.
        let store = d.join(kind);
        copy_dir(&fixtures.join(kind), &store);
        let restored = d.join(format!("{kind}.db"));
        let out = d1r2(
            &["restore", "--from", path(&store), "--to", path(&restored)],
            key,
        );
        assert!(out.status.success(), "{kind}: {}", out.stderr);
        assert_same_database(&expected, &restored);
        let out = d1r2(&["verify", "--from", path(&store)], key);
        assert!(out.status.success(), "{kind}: {}", out.stderr);
        let out = d1r2(&["list", "--from", path(&store), "--json"], None);
        let listed: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(listed[0]["rows"], 6, "{kind}: {listed}");
        assert_eq!(listed[0]["label"], format!("stored {kind}"));
    }
}

/// A bucket writer's own plain backup, made the newest beside encrypted ones: read with the key
/// set it is refused (nothing proves who wrote it), exit 1 naming it, nothing written; with the
/// key unset it reads, as the user asked.
#[test]
fn a_plain_backup_is_refused_while_a_key_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = d.join("app.db");
    create_db(&db, "CREATE TABLE t(x); INSERT INTO t VALUES('genuine');");
    let dest = d.join("backups");
    encrypted_backup(&db, &dest, "gzip");
    let planted = d.join("planted.db");
    create_db(
        &planted,
        "CREATE TABLE t(x); INSERT INTO t VALUES('planted');",
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = d1r2(
        &["backup", "--source", path(&planted), "--dest", path(&dest)],
        None,
    );
    out.success();
    let target = d.join("restored.db");
    let sql = d.join("dump.sql");
    for args in [
        vec!["restore", "--from", path(&dest), "--to", path(&target)],
        vec!["verify", "--from", path(&dest)],
        vec!["export", "--from", path(&dest), "--out", path(&sql)],
    ] {
        let out = d1r2(&args, Some(KEY));
        let err = out.stderr;
        assert_eq!(out.status.code(), Some(1), "{}: {err}", args[0]);
        assert!(err.contains("is not encrypted"), "{}: {err}", args[0]);
        assert!(!target.exists() && !sql.exists(), "{}: wrote", args[0]);
    }
    let out = d1r2(
        &["restore", "--from", path(&dest), "--to", path(&target)],
        None,
    );
    out.success();
    assert_same_database(&planted, &target);
}
