//! Retention end to end on the local store: real backups whose manifests are given chosen
//! creation times, pruned by the binary; interrupted prunes and crashed backups cleaned up; the
//! audit trail written and listed.

use crate::common;
use crate::common::cmd::{D1r2, Run};

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

fn d1r2(args: &[&str]) -> Run {
    D1r2::new().args(args).env_remove("GITHUB_ACTIONS").run()
}

fn ok(args: &[&str]) -> String {
    let out = d1r2(args);
    assert!(out.status.success(), "{args:?}: {}", out.stderr);
    out.stdout.clone()
}

fn ids(store: &Path) -> Vec<String> {
    let list = ok(&["list", "--from", store.to_str().unwrap(), "--json"]);
    let items: serde_json::Value = serde_json::from_str(&list).unwrap();
    items
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

/// A store with one real full backup per timestamp (parts of its own, which tests age and
/// break), each manifest's `created` set to it; returns the store and the ids in the order of
/// `times`.
fn store_with_backups(dir: &Path, times: &[&str]) -> (PathBuf, Vec<String>) {
    let db = dir.join("app.db");
    common::create_db(
        &db,
        "CREATE TABLE t(a); INSERT INTO t VALUES (1), (2), (3);",
    );
    let store = dir.join("backups");
    let mut made = Vec::new();
    for time in times {
        let before = ids_or_empty(&store);
        ok(&[
            "backup",
            "--full",
            "--source",
            db.to_str().unwrap(),
            "--dest",
            store.to_str().unwrap(),
        ]);
        let id = ids(&store)
            .into_iter()
            .find(|i| !before.contains(i))
            .unwrap();
        let path = store.join(&id).join("manifest.json");
        let mut manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        manifest["created"] = serde_json::Value::String(time.to_string());
        std::fs::write(&path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
        made.push(id);
    }
    (store, made)
}

fn ids_or_empty(store: &Path) -> Vec<String> {
    if store.exists() {
        ids(store)
    } else {
        Vec::new()
    }
}

/// Sets the modification time of every file under `dir`.
fn age(dir: &Path, by: Duration) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            age(&path, by);
        } else {
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(SystemTime::now() - by)
                .unwrap();
        }
    }
}

const TIMES: [&str; 6] = [
    "2026-11-01T03:00:00Z",
    "2026-11-08T03:00:00Z",
    "2026-11-20T03:00:00Z",
    "2026-11-23T03:00:00Z",
    "2026-11-24T03:00:00Z",
    "2026-11-24T15:00:00Z",
];

#[test]
fn prune_keeps_what_the_policy_says_and_deletes_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (store, made) = store_with_backups(dir.path(), &TIMES);
    let s = store.to_str().unwrap();

    let plan = ok(&[
        "prune",
        "--from",
        s,
        "--keep-daily",
        "2",
        "--keep-weekly",
        "2",
        "--dry-run",
    ]);
    assert_eq!(ids(&store).len(), 6, "a dry run deleted something");
    assert!(plan.contains("remove"), "{plan}");
    assert!(plan.contains("daily 2026-11-24"), "{plan}");

    let out = ok(&[
        "prune",
        "--from",
        s,
        "--keep-daily",
        "2",
        "--keep-weekly",
        "2",
    ]);
    // Daily: 11-24 15:00 and 11-23. Weekly (ISO): week 48 (11-24 15:00), week 47 (11-20).
    let mut want = vec![made[2].clone(), made[3].clone(), made[5].clone()];
    want.sort();
    assert_eq!(ids(&store), want, "{out}");
    for removed in [&made[0], &made[1], &made[4]] {
        assert!(!store.join(removed).exists(), "parts of {removed} remain");
    }
    ok(&["verify", "--from", s]);
    let audit = ok(&["list", "--from", s, "--audit"]);
    assert!(audit.contains("prune"), "{audit}");
    assert!(
        audit.contains(&made[0]),
        "the audit names what was removed: {audit}"
    );
}

#[test]
fn nothing_is_deleted_without_a_policy() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = store_with_backups(dir.path(), &TIMES[..2]);
    let s = store.to_str().unwrap();
    let mut refused = vec![
        vec!["prune", "--from", s],
        vec!["prune", "--from", s, "--keep-within", "soon"],
    ];
    // A zero turns its rule off (an action input of 0 means "off"): zeros alone are no policy.
    let rules = ["last", "hourly", "daily", "weekly", "monthly", "yearly"];
    let flags: Vec<String> = rules.iter().map(|r| format!("--keep-{r}")).collect();
    for flag in &flags {
        refused.push(vec!["prune", "--from", s, flag, "0"]);
    }
    let mut all_zero = vec!["prune", "--from", s];
    for flag in &flags {
        all_zero.extend([flag.as_str(), "0"]);
    }
    refused.push(all_zero);
    for args in refused {
        let out = d1r2(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(out.stderr.trim().lines().count(), 1);
        assert_eq!(ids(&store).len(), 2, "{args:?} deleted a backup");
    }
    // Beside a rule that keeps, a zero changes nothing.
    ok(&[
        "prune",
        "--from",
        s,
        "--keep-daily",
        "0",
        "--keep-last",
        "2",
    ]);
    assert_eq!(ids(&store).len(), 2);
}

#[test]
fn interrupted_prunes_and_crashed_backups_are_cleaned_after_a_day() {
    let dir = tempfile::tempdir().unwrap();
    let (store, made) = store_with_backups(dir.path(), &TIMES[..3]);
    let s = store.to_str().unwrap();
    // An interrupted prune: manifest gone, parts left, a day old.
    std::fs::remove_file(store.join(&made[0]).join("manifest.json")).unwrap();
    age(&store.join(&made[0]), Duration::from_secs(2 * 86_400));
    // A backup still being written: no manifest, parts fresh.
    std::fs::remove_file(store.join(&made[1]).join("manifest.json")).unwrap();
    // A crashed upload's temporary file, two days old.
    let temp = store
        .join(&made[2])
        .join("data/.d1r2-tmp-00000000deadbeef-0003-t.0.sql.gz");
    std::fs::write(&temp, b"half").unwrap();
    age(&store.join(&made[2]), Duration::from_secs(2 * 86_400));

    let out = ok(&["prune", "--from", s, "--keep-last", "5"]);
    assert!(!store.join(&made[0]).exists(), "{out}");
    assert!(
        store.join(&made[1]).exists(),
        "a young unfinished backup was removed"
    );
    assert!(!temp.exists(), "the stale temporary upload was left");
    assert_eq!(ids(&store), vec![made[2].clone()]);
    assert!(out.contains("Unfinished backups cleaned"), "{out}");
}

#[test]
fn backup_with_prune_prunes_after_success_only() {
    let dir = tempfile::tempdir().unwrap();
    let (store, made) = store_with_backups(dir.path(), &TIMES[..3]);
    let s = store.to_str().unwrap();
    let db = dir.path().join("app.db");
    let out = ok(&[
        "backup",
        "--source",
        db.to_str().unwrap(),
        "--dest",
        s,
        "--prune",
        "--keep-last",
        "2",
    ]);
    let now = ids(&store);
    assert_eq!(now.len(), 2, "{out}");
    assert!(now.contains(&made[2]));
    assert!(out.contains("Removed"), "{out}");

    let failed = d1r2(&[
        "backup",
        "--source",
        "missing.db",
        "--dest",
        s,
        "--prune",
        "--keep-last",
        "1",
    ]);
    assert_eq!(failed.status.code(), Some(2));
    assert_eq!(ids(&store).len(), 2, "a failed backup pruned");
    for args in [
        vec![
            "backup",
            "--source",
            db.to_str().unwrap(),
            "--dest",
            s,
            "--prune",
        ],
        vec![
            "backup",
            "--source",
            db.to_str().unwrap(),
            "--dest",
            s,
            "--keep-last",
            "1",
        ],
    ] {
        let out = d1r2(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    assert_eq!(ids(&store).len(), 2);
}

#[test]
fn the_audit_trail_records_who_did_what() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::create_db(
        &d.join("app.db"),
        "CREATE TABLE t(a); INSERT INTO t VALUES (1);",
    );
    let store = d.join("backups");
    let s = store.to_str().unwrap();
    let output = d.join("output");
    let action = |inputs: &[(&str, &str)]| {
        D1r2::new()
            .env("GITHUB_ACTIONS", "true")
            .env("GITHUB_OUTPUT", &output)
            .env("GITHUB_ACTOR", "octocat")
            .env("GITHUB_SERVER_URL", "https://github.com")
            .env("GITHUB_REPOSITORY", "acme/app")
            .env("GITHUB_RUN_ID", "4242")
            .envs(inputs.iter().copied())
            .run()
    };
    let db = d.join("app.db");
    assert!(
        action(&[
            ("INPUT_COMMAND", "backup"),
            ("INPUT_SOURCE", db.to_str().unwrap()),
            ("INPUT_DEST", s),
            ("INPUT_FULL", "true")
        ])
        .status
        .success()
    );
    assert!(
        action(&[("INPUT_COMMAND", "verify"), ("INPUT_FROM", s)])
            .status
            .success()
    );
    let restored = d.join("r.db");
    assert!(
        action(&[
            ("INPUT_COMMAND", "restore"),
            ("INPUT_FROM", s),
            ("INPUT_TO", restored.to_str().unwrap())
        ])
        .status
        .success()
    );
    // A refusal (exit 2) did nothing and is not recorded; a failure is.
    let refused = action(&[
        ("INPUT_COMMAND", "restore"),
        ("INPUT_FROM", s),
        ("INPUT_TO", restored.to_str().unwrap()),
    ]);
    assert_eq!(refused.status.code(), Some(2));
    let part = std::fs::read_dir(store.join(&ids(&store)[0]).join("data"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&part).unwrap();
    bytes.push(0);
    std::fs::write(&part, &bytes).unwrap();
    let failed = action(&[("INPUT_COMMAND", "verify"), ("INPUT_FROM", s)]);
    assert_eq!(failed.status.code(), Some(1));
    assert!(
        action(&[
            ("INPUT_COMMAND", "prune"),
            ("INPUT_FROM", s),
            ("INPUT_KEEP-LAST", "3")
        ])
        .status
        .success()
    );

    let json = ok(&["list", "--from", s, "--audit", "--json"]);
    let records: serde_json::Value = serde_json::from_str(&json).unwrap();
    let records = records.as_array().unwrap();
    let ops: Vec<(&str, &str)> = records
        .iter()
        .map(|r| {
            (
                r["operation"].as_str().unwrap(),
                r["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ops,
        [
            ("backup", "success"),
            ("verify", "success"),
            ("restore", "success"),
            ("verify", "failure"),
            ("prune", "success")
        ]
    );
    assert_eq!(records[0]["actor"], "octocat");
    assert_eq!(
        records[0]["run_url"],
        "https://github.com/acme/app/actions/runs/4242"
    );
    assert_eq!(records[0]["rows"], 1);
    assert!(
        records[3]["error"]
            .as_str()
            .unwrap()
            .contains("failed verification"),
        "{}",
        records[3]
    );
    // The audit trail is not a backup.
    assert_eq!(ids(&store).len(), 1);
    let outputs = std::fs::read_to_string(&output).unwrap();
    assert!(outputs.contains("kept<<"), "{outputs}");
}

/// Only folders named by backup ids are backups, finished or not: a dry run names no other
/// folder as an unfinished backup (an app's folder, a folder holding its own `manifest.json`),
/// however old, and names an id folder holding only a claim once a day old.
#[test]
fn only_backup_folders_are_ever_unfinished_backups() {
    let dir = tempfile::tempdir().unwrap();
    let (store, made) = store_with_backups(dir.path(), &TIMES[..2]);
    let s = store.to_str().unwrap();
    let name = format!("app{:08x}", rand::random::<u32>());
    for key in [
        format!("{name}/a.bin"),
        format!("{name}-site/manifest.json"),
        format!("{}/notes.txt", made[0]),
    ] {
        let path = store.join(&key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, rand::random::<u64>().to_le_bytes()).unwrap();
    }
    let dead = "20200101T000000Z-7";
    std::fs::create_dir_all(store.join(dead)).unwrap();
    std::fs::write(store.join(dead).join("claim.json"), b"{}").unwrap();
    age(&store, Duration::from_secs(3 * 86_400));
    let plan = ok(&["prune", "--from", s, "--keep-last", "5", "--dry-run"]);
    assert!(!plan.contains(&name), "{plan}");
    assert!(plan.contains(dead), "{plan}");
    assert_eq!(plan.matches("incomplete").count(), 1, "{plan}");
    ok(&["prune", "--from", s, "--keep-last", "5"]);
    assert!(!store.join(dead).exists());
    assert!(store.join(&made[0]).join("notes.txt").exists());
    assert!(store.join(&name).join("a.bin").exists());
    assert_eq!(ids(&store), made);
}
