//! PR check runs through a fake GitHub API: the action publishes what happened, success or
//! failure, on the pull request's head commit; a check run that cannot be published is a warning.

use crate::common;
use crate::common::cmd::{D1r2, Run};
use crate::fakes;

use std::path::Path;

use fakes::github::{FakeGitHub, TOKEN};

/// What the step printed, less the `::add-mask::` lines that register secrets with the runner.
fn shown(out: &Run) -> String {
    let kept: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| !l.starts_with("::add-mask::"))
        .collect();
    format!("{}\n{}", kept.join("\n"), out.stderr)
}

async fn action(dir: &Path, github: &FakeGitHub, token: &str, inputs: &[(&str, String)]) -> Run {
    let event = dir.join("event.json");
    std::fs::write(
        &event,
        r#"{"pull_request": {"number": 7, "head": {"sha": "0123abcd"}}}"#,
    )
    .unwrap();
    D1r2::new()
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_API_URL", &github.url)
        .env("GITHUB_REPOSITORY", "acme/app")
        .env("GITHUB_SHA", "merge-commit")
        .env("GITHUB_EVENT_PATH", &event)
        .env("GITHUB_TOKEN", token)
        .env("GITHUB_OUTPUT", dir.join("output"))
        .env("GITHUB_STEP_SUMMARY", dir.join("summary"))
        .env("INPUT_REPORT-CHECK", "true")
        .envs(inputs.iter().map(|(k, v)| (k, v)))
        .run_async()
        .await
}

/// The action backing up `d`/app.db into `d`/b, with a check run asked for.
async fn backup_step(d: &Path, github: &FakeGitHub, token: &str) -> Run {
    action(
        d,
        github,
        token,
        &[
            ("INPUT_COMMAND", "backup".into()),
            ("INPUT_SOURCE", d.join("app.db").display().to_string()),
            ("INPUT_DEST", d.join("b").display().to_string()),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_become_check_runs_on_the_pull_request_head() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::create_db(
        &d.join("app.db"),
        "CREATE TABLE t(a); INSERT INTO t VALUES (1), (2);",
    );
    let github = FakeGitHub::start().await;
    let ok = backup_step(d, &github, TOKEN).await;
    assert!(ok.status.success(), "{}", ok.stdout);
    let failed = action(
        d,
        &github,
        TOKEN,
        &[
            ("INPUT_COMMAND", "verify".into()),
            ("INPUT_FROM", d.join("nowhere").display().to_string()),
        ],
    )
    .await;
    assert_eq!(failed.status.code(), Some(2));

    let seen = github.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let (backup, verify) = (&seen[0], &seen[1]);
    assert_eq!(backup.path, "/repos/acme/app/check-runs");
    assert_eq!(backup.authorization, format!("Bearer {TOKEN}"));
    assert_eq!(backup.body["head_sha"], "0123abcd");
    assert_eq!(backup.body["name"], "d1r2 backup");
    assert_eq!(backup.body["status"], "completed");
    assert_eq!(backup.body["conclusion"], "success");
    assert_eq!(
        backup.body["output"]["title"],
        "d1r2 backup: success, 2 rows"
    );
    assert!(
        backup.body["output"]["summary"]
            .as_str()
            .unwrap()
            .contains("| Rows | 2 |")
    );
    assert_eq!(verify.body["conclusion"], "failure");
    assert!(
        verify.body["output"]["title"]
            .as_str()
            .unwrap()
            .contains("does not exist"),
        "{}",
        verify.body["output"]["title"]
    );
    for out in [&ok, &failed] {
        assert!(!shown(out).contains(TOKEN));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_run_that_cannot_be_published_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::create_db(&d.join("app.db"), "CREATE TABLE t(a);");
    let github = FakeGitHub::start().await;
    let out = backup_step(d, &github, "ghs_revoked_token_value").await;
    let stdout = &out.stdout;
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("::warning::could not publish the check run"),
        "{stdout}"
    );
    assert!(!shown(&out).contains("ghs_revoked_token_value"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_run_github_cannot_take_at_once_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::create_db(
        &d.join("app.db"),
        "CREATE TABLE t(a); INSERT INTO t VALUES (1);",
    );
    let github = FakeGitHub::start().await;
    github.fail_check_runs(2);
    let out = backup_step(d, &github, TOKEN).await;
    out.success();
    assert!(
        out.stdout.contains("published check run 4"),
        "{}",
        shown(&out)
    );
    assert!(!out.stdout.contains("::warning::"), "{}", shown(&out));
    let seen = github.seen();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen.iter().all(|s| s.body == seen[0].body));
}
