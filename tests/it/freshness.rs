//! `d1r2 check`: the newest backup's age against `--max-age`, on the local folder and on the S3
//! server; a backup made old by moving it to an earlier id; the action's outputs and its one
//! `::error::`; `--max-age` refused in one line.

use chrono::Duration;

use crate::common::bed::{Bed, both, output_line, random_name};
use crate::common::cmd::{D1r2, Run};

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
    // A chunk changed under the manifest: fresh, but it does not verify.
    let chunks = bed.files().join("chunks");
    let folder = std::fs::read_dir(&chunks).unwrap().next().unwrap().unwrap();
    let part = std::fs::read_dir(folder.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
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
        format!("{}", 1 + u32::from(rand::random::<u16>())),
        format!("-{}h", 1 + u32::from(rand::random::<u8>())),
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
    let value = |name: &str| crate::common::output_in(&output, name);
    assert_eq!(value("newest-id"), old);
    assert_eq!(value("status"), "failure");
    let age: i64 = value("age-seconds").parse().unwrap();
    assert!(age >= hours * 3600 && age < (hours + 1) * 3600, "{age}");

    std::fs::remove_file(&output).unwrap();
    action(&format!("{}h", hours + 2))
        .run_async()
        .await
        .success();
    assert_eq!(crate::common::output_in(&output, "status"), "success");
    assert_eq!(crate::common::output_in(&output, "newest-id"), old);
}
