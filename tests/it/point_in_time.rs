//! `--at TIME`: restore, verify, export and drill pick the newest backup started at or before a
//! time, on the local folder and the S3 server; times that do not read, times before every
//! backup, and `--at` beside an id are refused in one line.

use chrono::{Duration, SecondsFormat, Utc};

use crate::common::bed::{Bed, both, output_line, random_name};
use crate::common::cmd::Run;

/// Three backups started about three, two and one days ago; their ids, oldest first.
async fn three_days(bed: &Bed) -> Vec<String> {
    let mut ids = Vec::new();
    for days in [3, 2, 1] {
        let id = bed.backup().await;
        let minutes = rand::random::<u16>() as i64 % 600;
        ids.push(bed.make_old(&id, Duration::days(days) + Duration::minutes(minutes)));
    }
    ids
}

/// The time of backup `id` moved by `seconds`, as RFC 3339 with a random offset.
fn time_of(id: &str, seconds: i64) -> String {
    let time = chrono::NaiveDateTime::parse_from_str(id, "%Y%m%dT%H%M%SZ")
        .unwrap()
        .and_utc()
        + Duration::seconds(seconds);
    let offset =
        chrono::FixedOffset::east_opt(3600 * (rand::random::<u8>() as i32 % 24 - 12)).unwrap();
    time.with_timezone(&offset)
        .to_rfc3339_opts(SecondsFormat::Secs, false)
}

#[track_caller]
fn refused(run: &Run, part: &str) {
    run.fails_with(2);
    let errors: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{run}");
    assert!(errors[0].contains(part), "{run}");
}

async fn the_newest_at_or_before_is_picked(bed: Bed) {
    let ids = three_days(&bed).await;
    let from = bed.dest();
    let verify = |at: String| {
        let from = from.clone();
        let bed = &bed;
        async move { bed.run(&["verify", "--from", &from, "--at", &at]).await }
    };
    for (at, want) in [
        (time_of(&ids[0], 0), &ids[0]),
        (time_of(&ids[1], -1), &ids[0]),
        (
            time_of(&ids[1], 1 + rand::random::<u16>() as i64 % 3600),
            &ids[1],
        ),
        (time_of(&ids[2], 3600), &ids[2]),
        (Utc::now().to_rfc3339(), &ids[2]),
    ] {
        let run = verify(at.clone()).await;
        run.success();
        assert_eq!(&output_line(&run.stdout, "Backup"), want, "--at {at}");
    }
    // A date alone is its start, in UTC: the day after the middle backup's starts after it.
    let start = |id: &str| chrono::NaiveDateTime::parse_from_str(id, "%Y%m%dT%H%M%SZ").unwrap();
    let day = start(&ids[1]).date().succ_opt().unwrap();
    let midnight = day.and_hms_opt(0, 0, 0).unwrap();
    let want = ids.iter().rfind(|id| start(id) <= midnight).unwrap();
    let run = verify(day.to_string()).await;
    run.success();
    assert_eq!(&output_line(&run.stdout, "Backup"), want, "--at {day}");

    let restored = bed.scratch(&format!("{}.db", random_name(8)));
    let at = time_of(&ids[1], 60);
    let run = bed
        .run(&[
            "restore",
            "--from",
            &from,
            "--at",
            &at,
            "--to",
            restored.to_str().unwrap(),
        ])
        .await;
    run.success();
    assert_eq!(output_line(&run.stdout, "Backup"), ids[1]);
    let out = bed.scratch("dump.sql");
    let run = bed
        .run(&[
            "export",
            "--from",
            &from,
            "--at",
            &at,
            "--out",
            out.to_str().unwrap(),
        ])
        .await;
    run.success();
    assert_eq!(output_line(&run.stdout, "Backup"), ids[1]);

    // Before the first backup: nothing to pick.
    refused(&verify(time_of(&ids[0], -1)).await, "no backup in");
}
both!(the_newest_at_or_before_is_picked);

#[tokio::test(flavor = "multi_thread")]
async fn bad_times_and_two_selections_are_refused() {
    let bed = Bed::local().await;
    let ids = three_days(&bed).await;
    let from = bed.dest();
    for at in [
        random_name(8),
        "2026-11-24T22:15:00".to_string(),
        "2026-13-01".to_string(),
        ids[0].clone(),
    ] {
        refused(
            &bed.run(&["verify", "--from", &from, "--at", &at]).await,
            "--at",
        );
    }
    refused(
        &bed.run(&[
            "verify",
            "--from",
            &from,
            "--backup",
            &ids[2],
            "--at",
            &time_of(&ids[2], 0),
        ])
        .await,
        "give one",
    );
}

/// The action passes its `backup` input's default, `latest`, whatever the step says: `at` wins.
#[tokio::test(flavor = "multi_thread")]
async fn the_action_takes_at_over_the_default_backup() {
    let bed = Bed::local().await;
    let ids = three_days(&bed).await;
    let run = crate::common::cmd::D1r2::new()
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_OUTPUT", bed.scratch("output"))
        .env("GITHUB_STEP_SUMMARY", bed.scratch("summary"))
        .env("INPUT_COMMAND", "verify")
        .env("INPUT_FROM", bed.dest())
        .env("INPUT_BACKUP", "latest")
        .env("INPUT_AT", time_of(&ids[1], 5))
        .run_async()
        .await;
    run.success();
    let outputs = std::fs::read_to_string(bed.scratch("output")).unwrap();
    assert!(
        outputs.contains("backup-id<<") && outputs.contains(&format!("\n{}\n", ids[1])),
        "{outputs}"
    );
}
