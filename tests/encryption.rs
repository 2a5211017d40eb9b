//! Encrypted backups end to end: nothing readable at rest, a lossless restore with the key, a
//! clear refusal without it or with another one, and parts that `scripts/decrypt_part.py`
//! decrypts without d1r2.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Output};

use common::*;
use d1r2::codec::decoder;
use d1r2::crypto::{ALGORITHM, KEY_ENV, Key};
use d1r2::manifest::{MANIFEST_NAME, Manifest};

const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
/// The same 32 bytes in unpadded base64: both spellings name one key.
const KEY_B64: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
const OTHER_KEY: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";
/// A value in the fixture that must not appear in any stored byte.
const PLAINTEXT: &[u8] = b"semicolon -- not a comment";

fn d1r2(args: &[&str], key: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_d1r2"));
    cmd.args(args).env_remove(KEY_ENV);
    if let Some(key) = key {
        cmd.env(KEY_ENV, key);
    }
    cmd.output().expect("running d1r2")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Backs `db` up into `dest` with encryption; returns the manifest.
fn encrypted_backup(db: &Path, dest: &Path, compression: &str) -> Manifest {
    let out = d1r2(
        &[
            "backup",
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
    assert!(out.status.success(), "{}", stderr(&out));
    let id = std::fs::read_dir(dest)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join(MANIFEST_NAME).exists())
        .unwrap();
    serde_json::from_slice(&std::fs::read(id.join(MANIFEST_NAME)).unwrap()).unwrap()
}

#[test]
fn encrypted_backup_restores_only_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = d.join("app.db");
    create_db(&db, include_str!("fixtures/edge.sql"));
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
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "backup {} is encrypted; set {KEY_ENV}",
            manifest.id
        )),
        "{}",
        stderr(&out)
    );
    assert!(!restored.exists());

    let out = restore(Some(OTHER_KEY));
    let err = stderr(&out);
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
        assert_eq!(out.status.code(), Some(2), "{command}: {}", stderr(&out));
        assert!(stderr(&out).contains("is encrypted"), "{}", stderr(&out));
        let out = d1r2(args, Some(KEY_B64));
        assert!(out.status.success(), "{command}: {}", stderr(&out));
    }

    let out = restore(Some(KEY));
    assert!(out.status.success(), "{}", stderr(&out));
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
    assert!(stderr(&out).contains(KEY_ENV), "{}", stderr(&out));
    let short = "0123456789abcdef0123456789abcdef";
    let out = d1r2(&args, Some(short));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains(KEY_ENV), "{}", stderr(&out));
    assert!(!stderr(&out).contains(short), "{}", stderr(&out));
    assert!(!dest.exists() || std::fs::read_dir(&dest).unwrap().next().is_none());
}

#[test]
fn python_script_decrypts_a_part_like_d1r2() {
    let has_cryptography = Command::new("python3")
        .args(["-c", "import cryptography"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_cryptography {
        eprintln!(
            "skipped: python3 with the `cryptography` package is not available (pip install cryptography)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = d.join("app.db");
    create_db(&db, include_str!("fixtures/edge.sql"));
    let dest = d.join("backups");
    let manifest = encrypted_backup(&db, &dest, "gzip");
    let key = Key::parse(KEY).unwrap();
    for object in &manifest.objects {
        let part = dest.join(manifest.key(object));
        let mut expected = Vec::new();
        decoder(
            std::fs::File::open(&part).unwrap(),
            manifest.compression,
            Some(&key),
        )
        .read_to_end(&mut expected)
        .unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/decrypt_part.py");
        let out = Command::new("python3")
            .arg(script)
            .arg(&part)
            .env(KEY_ENV, KEY_B64)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, expected, "{}", object.key);
        assert!(!expected.is_empty());
    }
}
