//! Whether a backup is one moment of its database: D1's Time Travel bookmark before the first
//! read and after the last, through the binary against the fake D1 (whose bookmark moves with
//! every write, as D1's does), with an application writing between the backup's requests; into
//! the local folder and the S3 server. `--consistent` retries until a quiet attempt, or fails
//! keeping nothing; `--consistent=prefer` keeps the last attempt, marked.

use crate::common::bed::{Bed, both, output_line, random_name};
use crate::common::cmd::{D1r2, Run};
use crate::fakes::d1::{ACCOUNT, FakeD1, TOKEN};

/// The fake D1 serving a database of random rows in a few tables, and a store to back it up to.
struct World {
    d1: FakeD1,
    bed: Bed,
    name: String,
    id: String,
    table: String,
}

impl World {
    async fn start(bed: Bed) -> World {
        let d1 = FakeD1::start().await;
        let name = random_name(10);
        let table = random_name(8);
        let mut sql = String::new();
        for t in [table.clone(), random_name(8), random_name(8)] {
            sql.push_str(&format!(
                "CREATE TABLE {t}(id INTEGER PRIMARY KEY, v TEXT);"
            ));
            for _ in 0..1 + rand::random::<u8>() % 30 {
                sql.push_str(&format!(
                    "INSERT INTO {t}(v) VALUES ('{}');",
                    random_name(1 + rand::random::<u8>() as usize % 40)
                ));
            }
        }
        let id = d1.add_database(&name, &sql);
        World {
            d1,
            bed,
            name,
            id,
            table,
        }
    }

    /// The application's write: a new row, different each time.
    fn write(&self) -> String {
        format!(
            "INSERT INTO {}(v) VALUES ('{}');",
            self.table,
            random_name(16)
        )
    }

    fn command(&self, args: &[&str]) -> D1r2 {
        let mut cmd = self.bed.command(args);
        cmd.env("CLOUDFLARE_API_BASE_URL", &self.d1.url)
            .env("CLOUDFLARE_API_TOKEN", TOKEN)
            .env("CLOUDFLARE_ACCOUNT_ID", ACCOUNT);
        cmd
    }

    async fn backup(&self, extra: &[&str]) -> Run {
        let source = format!("d1://{}", self.name);
        let dest = self.bed.dest();
        let mut args = vec!["backup", "--source", &source, "--dest", &dest];
        args.extend(extra);
        self.command(&args).run_async().await
    }

    /// `list --json` of the store.
    async fn listed(&self) -> Vec<serde_json::Value> {
        let run = self
            .command(&["list", "--from", &self.bed.dest(), "--json"])
            .run_async()
            .await;
        run.success();
        serde_json::from_str::<serde_json::Value>(&run.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// The backup folders in the store holding any object, whatever their manifest (the S3
    /// server keeps a folder emptied of its objects as a directory, which S3 does not list).
    fn folders(&self) -> Vec<String> {
        fn holds_a_file(dir: &std::path::Path) -> bool {
            std::fs::read_dir(dir).unwrap().any(|e| {
                let path = e.unwrap().path();
                !path.is_dir() || holds_a_file(&path)
            })
        }
        let mut names: Vec<String> = std::fs::read_dir(self.bed.files())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir() && holds_a_file(p))
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("20"))
            .collect();
        names.sort();
        names
    }

    fn manifest(&self, id: &str) -> serde_json::Value {
        let path = self.bed.files().join(id).join("manifest.json");
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }
}

async fn writes_during_a_backup_mark_it(bed: Bed) {
    let w = World::start(bed).await;
    // Quiet: the bookmark does not move, and the backup says so.
    let quiet = w.backup(&[]).await;
    quiet.success();
    assert!(
        output_line(&quiet.stdout, "Consistent").starts_with("yes"),
        "{quiet}"
    );
    let quiet_id = output_line(&quiet.stdout, "Backup");
    let m = w.manifest(&quiet_id);
    assert_eq!(m["source"]["bookmark"], m["source"]["end_bookmark"], "{m}");

    // The application writes once, between the backup's requests.
    let before = w.d1.bookmark(&w.id);
    w.d1.write_during_queries(&w.id, &w.write(), 2, Some(1));
    let fuzzy = w.backup(&[]).await;
    fuzzy.success();
    assert_eq!(w.d1.stop_writing(), 1);
    let line = output_line(&fuzzy.stdout, "Consistent");
    assert!(
        line.starts_with("no: writes landed while it read"),
        "{line}"
    );
    assert!(
        line.contains(&format!(
            "wrangler d1 time-travel restore {} --bookmark={before}",
            w.name
        )),
        "{line}"
    );
    let fuzzy_id = output_line(&fuzzy.stdout, "Backup");
    let m = w.manifest(&fuzzy_id);
    assert_eq!(m["source"]["bookmark"], before.as_str(), "{m}");
    assert_eq!(m["source"]["end_bookmark"], w.d1.bookmark(&w.id).as_str());
    assert_ne!(m["source"]["bookmark"], m["source"]["end_bookmark"]);

    // A backup of a SQLite file is one moment by construction.
    let sqlite_id = w.bed.backup().await;

    let listed = w.listed().await;
    let consistent: Vec<(&str, &serde_json::Value)> = listed
        .iter()
        .map(|b| (b["id"].as_str().unwrap(), &b["consistent"]))
        .collect();
    assert_eq!(
        consistent,
        [
            (quiet_id.as_str(), &serde_json::json!(true)),
            (fuzzy_id.as_str(), &serde_json::json!(false)),
            (sqlite_id.as_str(), &serde_json::json!(true)),
        ]
    );
    let table = w
        .command(&["list", "--from", &w.bed.dest()])
        .run_async()
        .await;
    table.success();
    let header = table.stdout.lines().next().unwrap();
    let at = header.find("CONSISTENT").expect("a CONSISTENT column");
    let column = |id: &str| {
        let line = table.stdout.lines().find(|l| l.starts_with(id)).unwrap();
        line[at..].split_whitespace().next().unwrap().to_string()
    };
    assert_eq!(
        [column(&quiet_id), column(&fuzzy_id), column(&sqlite_id)],
        ["yes", "no", "yes"]
    );

    // A backup that saw writes restores into D1 all the same.
    let target = random_name(10);
    w.d1.add_database(&target, "");
    let restored = w
        .command(&[
            "restore",
            "--from",
            &w.bed.dest(),
            "--backup",
            &fuzzy_id,
            "--to",
            &format!("d1://{target}"),
        ])
        .run_async()
        .await;
    restored.success();
}
both!(writes_during_a_backup_mark_it);

async fn consistent_retries_until_the_writer_stops(bed: Bed) {
    let w = World::start(bed).await;
    // One write, as the backup reads its catalog (its first request after the bookmark).
    w.d1.write_during_queries(&w.id, &w.write(), 1, Some(1));
    let run = w
        .backup(&["--consistent", "--consistent-attempts", "3"])
        .await;
    run.success();
    assert_eq!(w.d1.stop_writing(), 1);
    assert_eq!(
        output_line(&run.stdout, "Attempts"),
        "2 (1 saw writes and was discarded)"
    );
    assert!(output_line(&run.stdout, "Consistent").starts_with("yes"));
    let id = output_line(&run.stdout, "Backup");
    // The discarded attempt left nothing: one backup folder, the kept one.
    assert_eq!(w.folders(), std::slice::from_ref(&id));
    let m = w.manifest(&id);
    assert_eq!(m["source"]["bookmark"], w.d1.bookmark(&w.id).as_str());
    assert_eq!(m["source"]["bookmark"], m["source"]["end_bookmark"]);
}
both!(consistent_retries_until_the_writer_stops);

async fn consistent_fails_when_the_writer_never_stops(bed: Bed) {
    let w = World::start(bed).await;
    w.d1.write_during_queries(&w.id, &w.write(), 1, None);
    let attempts = 2 + rand::random::<u32>() % 2;
    let run = w
        .backup(&[
            "--consistent",
            "--consistent-attempts",
            &attempts.to_string(),
        ])
        .await;
    run.fails_with(1);
    assert!(w.d1.stop_writing() >= attempts as u64);
    let errors: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{run}");
    assert!(
        errors[0].contains(&format!("all {attempts} attempts saw writes")),
        "{run}"
    );
    assert!(w.folders().is_empty(), "kept {:?}", w.folders());
    assert!(w.listed().await.is_empty());
}
both!(consistent_fails_when_the_writer_never_stops);

#[tokio::test(flavor = "multi_thread")]
async fn prefer_keeps_the_last_attempt_marked() {
    let w = World::start(Bed::local().await).await;
    w.d1.write_during_queries(&w.id, &w.write(), 1, None);
    let run = w
        .backup(&["--consistent=prefer", "--consistent-attempts", "2"])
        .await;
    run.success();
    w.d1.stop_writing();
    assert_eq!(
        output_line(&run.stdout, "Attempts"),
        "2 (1 saw writes and was discarded)"
    );
    assert!(output_line(&run.stdout, "Consistent").starts_with("no:"));
    let id = output_line(&run.stdout, "Backup");
    assert_eq!(w.folders(), [id]);
    assert_eq!(w.listed().await[0]["consistent"], false);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_action_reports_consistent() {
    let w = World::start(Bed::local().await).await;
    let output = w.bed.scratch("output");
    let run = |consistent: &str| {
        let mut cmd = w.command(&[]);
        cmd.env("GITHUB_ACTIONS", "true")
            .env("GITHUB_OUTPUT", &output)
            .env("GITHUB_STEP_SUMMARY", w.bed.scratch("summary"))
            .env("INPUT_COMMAND", "backup")
            .env("INPUT_SOURCE", format!("d1://{}", w.name))
            .env("INPUT_DEST", w.bed.dest())
            .env("INPUT_CONSISTENT", consistent)
            .env("INPUT_CONSISTENT-ATTEMPTS", "2");
        cmd
    };
    w.d1.write_during_queries(&w.id, &w.write(), 2, Some(1));
    run("false").run_async().await.success();
    assert_eq!(w.d1.stop_writing(), 1);
    let outputs = std::fs::read_to_string(&output).unwrap();
    assert_eq!(
        crate::common::output_value(&outputs, "consistent"),
        "false",
        "{outputs}"
    );

    std::fs::remove_file(&output).unwrap();
    w.d1.write_during_queries(&w.id, &w.write(), 2, Some(1));
    run("true").run_async().await.success();
    let outputs = std::fs::read_to_string(&output).unwrap();
    assert_eq!(
        crate::common::output_value(&outputs, "consistent"),
        "true",
        "{outputs}"
    );

    let refused = run("maybe").run_async().await;
    refused.fails_with(2);
}

/// A token without access to Time Travel: the backup is kept, of unknown consistency, unless
/// `--consistent` asks for one known to be quiet, which then fails keeping nothing.
#[tokio::test(flavor = "multi_thread")]
async fn without_a_bookmark_consistency_is_unknown() {
    let w = World::start(Bed::local().await).await;
    w.d1.deny_time_travel();
    let run = w.backup(&[]).await;
    run.success();
    assert!(
        output_line(&run.stdout, "Consistent").starts_with("unknown"),
        "{run}"
    );
    let id = output_line(&run.stdout, "Backup");
    assert_eq!(w.listed().await[0]["consistent"], serde_json::Value::Null);

    let run = w.backup(&["--consistent"]).await;
    run.fails_with(1);
    assert!(
        run.stderr
            .contains("cannot tell whether the backup saw writes"),
        "{run}"
    );
    assert_eq!(w.folders(), [id]);

    let run = w.backup(&["--consistent=prefer"]).await;
    run.success();
    assert_eq!(w.folders().len(), 2);
}
