//! A store for a test to run commands on: a local folder or a prefix of the in-process S3
//! server, whose keys are files either way, so a test can reach under the command's feet.

use std::path::PathBuf;

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
    pub fn files(&self) -> PathBuf {
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
macro_rules! both_stores {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread")]
            async fn local() {
                super::$name(crate::common::bed::Bed::local().await).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn s3() {
                super::$name(crate::common::bed::Bed::s3().await).await;
            }
        }
    };
}
pub(crate) use both_stores as both;

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
