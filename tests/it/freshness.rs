//! `d1r2 check`: the newest backup's age against `--max-age`, on the local folder and on the S3
//! server; a backup made old by moving it to an earlier id; the action's outputs and its one
//! `::error::`; `--max-age` refused in one line.

use std::path::{Path, PathBuf};

use chrono::{Duration, Utc};

use crate::common;
use crate::common::cmd::{D1r2, Run};
use crate::fakes::s3::FakeS3;

const BUCKET: &str = "backups";

/// A store to check: a local folder or a prefix of the S3 server, whose keys are files under
/// [`Bed::files`] either way.
pub struct Bed {
    dir: tempfile::TempDir,
    server: Option<FakeS3>,
    prefix: String,
}

impl Bed {
    pub async fn local() -> Bed {
        Bed {
            dir: tempfile::tempdir().unwrap(),
            server: None,
            prefix: random_name(8),
        }
    }

    pub async fn s3() -> Bed {
        Bed {
            dir: tempfile::tempdir().unwrap(),
            server: Some(FakeS3::start(&[BUCKET]).await),
            prefix: random_name(8),
        }
    }

    /// The folder that holds the store's keys as files.
    fn files(&self) -> PathBuf {
        match &self.server {
            Some(server) => server.root.path().join(BUCKET).join(&self.prefix),
            None => self.dir.path().join(&self.prefix),
        }
    }

    /// `--dest`/`--from`.
    pub fn dest(&self) -> String {
        match &self.server {
            Some(_) => format!("s3://{BUCKET}/{}", self.prefix),
            None => self.files().to_str().unwrap().to_string(),
        }
    }

    pub fn scratch(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn command(&self, args: &[&str]) -> D1r2 {
        let mut cmd = D1r2::new();
        cmd.args(args).env_remove("GITHUB_ACTIONS");
        if let Some(server) = &self.server {
            cmd.envs(server.env());
        }
        cmd
    }

    pub async fn run(&self, args: &[&str]) -> Run {
        self.command(args).run_async().await
    }

    /// A database of a few random rows, backed up; returns the backup's id.
    pub async fn backup(&self) -> String {
        let db = self.scratch(&format!("{}.db", random_name(6)));
        let rows: Vec<String> = (0..1 + rand::random::<u8>() % 20)
            .map(|_| format!("({}, '{}')", rand::random::<i64>(), random_name(12)))
            .collect();
        common::create_db(
            &db,
            &format!(
                "CREATE TABLE t(a INTEGER, b TEXT); INSERT INTO t VALUES {};",
                rows.join(", ")
            ),
        );
        let run = self
            .run(&[
                "backup",
                "--source",
                db.to_str().unwrap(),
                "--dest",
                &self.dest(),
            ])
            .await;
        run.success();
        output_line(&run.stdout, "Backup")
    }

    /// Moves backup `id` to the id of the second `age` ago, its manifest's id with it: a backup
    /// as a job that stopped that long ago left it.
    pub fn make_old(&self, id: &str, age: Duration) -> String {
        let old = (Utc::now() - age).format("%Y%m%dT%H%M%SZ").to_string();
        let files = self.files();
        std::fs::rename(files.join(id), files.join(&old)).unwrap();
        let path = files.join(&old).join("manifest.json");
        let mut manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        manifest["id"] = serde_json::Value::String(old.clone());
        std::fs::write(&path, serde_json::to_vec(&manifest).unwrap()).unwrap();
        old
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

pub fn random_name(len: usize) -> String {
    (0..len)
        .map(|_| (b'a' + rand::random::<u8>() % 26) as char)
        .collect()
}

/// The value of the summary row `label` in a command's printed report.
pub fn output_line(stdout: &str, label: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(label).filter(|rest| rest.starts_with("  ")))
        .unwrap_or_else(|| panic!("no {label} row in {stdout}"))
        .trim()
        .to_string()
}

/// The one `error:` line of a failed run.
#[track_caller]
fn error_line(run: &Run) -> String {
    let errors: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{run}");
    errors[0].to_string()
}

async fn fresh_passes_and_stale_fails(bed: Bed) {
    let from = bed.dest();
    let id = bed.backup().await;
    let run = bed
        .run(&["check", "--from", &from, "--max-age", "1h"])
        .await;
    run.success();
    assert_eq!(output_line(&run.stdout, "Newest backup"), id);

    // The job stopped a few days ago: its backup is older than a day, younger than a week.
    let days = 2 + rand::random::<u8>() as i64 % 4;
    let old = bed.make_old(&id, Duration::days(days) + Duration::minutes(5));
    let run = bed
        .run(&["check", "--from", &from, "--max-age", "26h"])
        .await;
    run.fails_with(1);
    let line = error_line(&run);
    assert!(line.contains(&old), "{line}");
    assert!(line.contains(&format!("{days}days")), "{line}");
    assert!(line.contains("older than --max-age 1day 2h"), "{line}");
    bed.run(&["check", "--from", &from, "--max-age", "7d"])
        .await
        .success();

    // A new backup makes the store fresh again, and the check names it.
    let newer = bed.backup().await;
    let run = bed
        .run(&["check", "--from", &from, "--max-age", "90m"])
        .await;
    run.success();
    assert_eq!(output_line(&run.stdout, "Newest backup"), newer);
}
both!(fresh_passes_and_stale_fails);

async fn verify_checks_the_newest_backup(bed: Bed) {
    let from = bed.dest();
    let id = bed.backup().await;
    let run = bed
        .run(&["check", "--from", &from, "--max-age", "2d", "--verify"])
        .await;
    run.success();
    assert!(
        output_line(&run.stdout, "Result").starts_with("ok"),
        "{run}"
    );
    // A part changed under the manifest: fresh, but it does not verify.
    let data = bed.files().join(&id).join("data");
    let part = std::fs::read_dir(&data).unwrap().next().unwrap().unwrap();
    let mut bytes = std::fs::read(part.path()).unwrap();
    let at = rand::random::<u32>() as usize % bytes.len();
    bytes[at] ^= 1 + rand::random::<u8>() % 255;
    std::fs::write(part.path(), bytes).unwrap();
    bed.run(&["check", "--from", &from, "--max-age", "2d"])
        .await
        .success();
    let run = bed
        .run(&["check", "--from", &from, "--max-age", "2d", "--verify"])
        .await;
    run.fails_with(1);
    let line = error_line(&run);
    assert!(line.contains(&id) && line.contains("is fresh"), "{line}");
}
both!(verify_checks_the_newest_backup);

async fn a_store_without_backups_fails(bed: Bed) {
    let from = bed.dest();
    // A store that holds only the marker (its one backup removed by hand).
    let id = bed.backup().await;
    std::fs::remove_dir_all(bed.files().join(&id)).unwrap();
    let run = bed
        .run(&["check", "--from", &from, "--max-age", "1d"])
        .await;
    run.fails_with(1);
    assert!(error_line(&run).contains("no backup in"), "{run}");
}
both!(a_store_without_backups_fails);

#[test]
fn unreadable_max_ages_are_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let from = dir.path().join(random_name(6));
    for age in [
        random_name(5),
        format!("{}", 1 + rand::random::<u16>()),
        format!("-{}h", 1 + rand::random::<u8>()),
        "0m".to_string(),
        format!("{}q", rand::random::<u8>()),
    ] {
        let run = D1r2::new()
            .args(["check", "--from", from.to_str().unwrap()])
            .arg(format!("--max-age={age}"))
            .env_remove("GITHUB_ACTIONS")
            .run();
        run.fails_with(2);
        let line = error_line(&run);
        assert!(line.contains("--max-age"), "{line}");
        assert!(run.stdout.is_empty(), "{run}");
    }
    assert!(!from.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_action_reports_a_stale_store_once() {
    let bed = Bed::local().await;
    let id = bed.backup().await;
    let hours = 30 + rand::random::<u8>() as i64 % 40;
    let old = bed.make_old(&id, Duration::hours(hours));
    let output = bed.scratch("output");
    let summary = bed.scratch("summary");
    let action = |max_age: &str| {
        let mut cmd = D1r2::new();
        cmd.env("GITHUB_ACTIONS", "true")
            .env("GITHUB_OUTPUT", &output)
            .env("GITHUB_STEP_SUMMARY", &summary)
            .env("INPUT_COMMAND", "check")
            .env("INPUT_FROM", bed.dest())
            .env("INPUT_MAX-AGE", max_age);
        cmd
    };
    let run = action("26h").run_async().await;
    run.fails_with(1);
    let errors: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("::error::"))
        .collect();
    assert_eq!(errors.len(), 1, "{run}");
    assert!(errors[0].contains(&old), "{run}");
    let value = |name: &str| value_of(&output, name);
    assert_eq!(value("newest-id"), old);
    assert_eq!(value("status"), "failure");
    let age: i64 = value("age-seconds").parse().unwrap();
    assert!(age >= hours * 3600 && age < (hours + 1) * 3600, "{age}");

    std::fs::remove_file(&output).unwrap();
    action(&format!("{}h", hours + 2))
        .run_async()
        .await
        .success();
    assert_eq!(value_of(&output, "status"), "success");
    assert_eq!(value_of(&output, "newest-id"), old);
}

fn value_of(output: &Path, name: &str) -> String {
    let written = std::fs::read_to_string(output).unwrap();
    let mut lines = written.lines();
    while let Some(line) = lines.next() {
        if line.starts_with(&format!("{name}<<")) {
            return lines.next().unwrap().to_string();
        }
    }
    panic!("no output {name} in {written}")
}
