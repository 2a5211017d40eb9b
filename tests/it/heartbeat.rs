//! `--heartbeat-url`: pings to a fake heartbeat service around real commands on the local
//! folder and the S3 server: start then success, start then fail, retried answers, a service
//! that is down (a warning, never the command's failure), URLs refused before anything is done,
//! and the URL never printed.

use crate::common::bed::{Bed, both, output_line, random_name};
use crate::common::cmd::{D1r2, Run};
use crate::fakes::heartbeat::{FakeHeartbeat, Ping};

/// A heartbeat URL on `fake` with a fresh secret path.
fn url(fake: &FakeHeartbeat) -> (String, String) {
    let token = random_name(20);
    (format!("{}/ping/{token}", fake.url), token)
}

#[track_caller]
fn never_printed(run: &Run, secret: &str) {
    assert!(
        !run.stdout.contains(secret) && !run.stderr.contains(secret),
        "the heartbeat URL was printed\n{run}"
    );
}

fn targets(pings: &[Ping]) -> Vec<String> {
    pings
        .iter()
        .map(|p| format!("{} {}", p.method, p.target))
        .collect()
}

async fn pings_start_then_success(bed: Bed) {
    let fake = FakeHeartbeat::start().await;
    let (url, token) = url(&fake);
    let id = bed.backup().await;
    let run = bed
        .command(&["verify", "--from", &bed.dest(), "--heartbeat-url", &url])
        .run_async()
        .await;
    run.success();
    never_printed(&run, &token);
    let pings = fake.pings();
    assert_eq!(
        targets(&pings),
        [
            format!("POST /ping/{token}/start"),
            format!("POST /ping/{token}")
        ]
    );
    assert_eq!(pings[0].body, "d1r2 verify: start\n");
    let rows = output_line(&run.stdout, "Rows");
    assert!(
        pings[1].body.starts_with(&format!(
            "d1r2 verify: success\nbackup-id: {id}\nrows: {rows}\n"
        )),
        "{:?}",
        pings[1].body
    );
}
both!(pings_start_then_success);

async fn a_failure_pings_fail(bed: Bed) {
    let fake = FakeHeartbeat::start().await;
    let (url, token) = url(&fake);
    let id = bed.backup().await;
    let part = bed.files().join(&id).join("schema.sql.gz");
    std::fs::write(&part, random_name(40)).unwrap();
    let run = bed
        .command(&["verify", "--from", &bed.dest()])
        .env("D1R2_HEARTBEAT_URL", &url)
        .run_async()
        .await;
    run.fails_with(1);
    never_printed(&run, &token);
    let pings = fake.pings();
    assert_eq!(
        targets(&pings),
        [
            format!("POST /ping/{token}/start"),
            format!("POST /ping/{token}/fail")
        ]
    );
    assert_eq!(pings[1].body, "d1r2 verify: fail\nexit: 1\n");
}
both!(a_failure_pings_fail);

#[tokio::test(flavor = "multi_thread")]
async fn failed_pings_are_retried_and_never_fail_the_command() {
    let bed = Bed::local().await;
    let fake = FakeHeartbeat::start().await;
    let (url, token) = url(&fake);
    bed.backup().await;
    let from = bed.dest();
    let list = ["list", "--from", from.as_str(), "--heartbeat-url", &url];

    // Two answers a retry gets past.
    fake.answer(&[503, 500]);
    let run = bed.command(&list).run_async().await;
    run.success();
    let start = format!("POST /ping/{token}/start");
    let done = format!("POST /ping/{token}");
    assert_eq!(
        targets(&fake.pings()),
        [&start, &start, &start, &done].map(String::as_str)
    );

    // A service that keeps failing: a warning, and the command's own result.
    fake.answer(&[503, 502, 500]);
    let run = bed.command(&list).run_async().await;
    run.success();
    never_printed(&run, &token);
    assert!(
        run.stderr
            .contains("heartbeat (start) not delivered after 3 attempts (HTTP 500)"),
        "{run}"
    );
    assert_eq!(
        targets(&fake.pings()[4..]),
        [&start, &start, &start, &done].map(String::as_str)
    );

    // A status no retry can change (a check deleted on the service) is tried once.
    fake.answer(&[404]);
    let run = bed.command(&list).run_async().await;
    run.success();
    assert!(run.stderr.contains("after 1 attempts (HTTP 404)"), "{run}");
    assert_eq!(
        targets(&fake.pings()[8..]),
        [&start, &done].map(String::as_str)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_that_is_down_is_a_warning() {
    let bed = Bed::local().await;
    bed.backup().await;
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let token = random_name(20);
    let run = bed
        .command(&[
            "check",
            "--from",
            &bed.dest(),
            "--max-age",
            "1h",
            "--heartbeat-url",
            &format!("http://127.0.0.1:{port}/{token}"),
        ])
        .run_async()
        .await;
    run.success();
    never_printed(&run, &token);
    for signal in ["start", "success"] {
        assert!(
            run.stderr.contains(&format!(
                "heartbeat ({signal}) not delivered after 3 attempts (could not connect)"
            )),
            "{run}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn urls_that_cannot_be_pinged_are_refused_before_anything_is_done() {
    let fake = FakeHeartbeat::start().await;
    let bed = Bed::local().await;
    let db = bed.scratch("app.db");
    crate::common::create_db(&db, "CREATE TABLE t(a); INSERT INTO t VALUES (1);");
    let host = fake.url.trim_start_matches("http://");
    for (url, why) in [
        (format!("ftp://{host}/{}", random_name(20)), "not ftp:"),
        (format!("file:///{}", random_name(20)), "not file:"),
        (
            format!("http://{}:{}@{host}/x", random_name(6), random_name(20)),
            "user name or password",
        ),
        (
            format!("http://{}@{host}/x", random_name(20)),
            "user name or password",
        ),
        (format!("{host}/{}", random_name(20)), "is not a URL"),
    ] {
        let run = D1r2::new()
            .args([
                "backup",
                "--source",
                db.to_str().unwrap(),
                "--dest",
                &bed.dest(),
            ])
            .args(["--heartbeat-url", &url])
            .env_remove("GITHUB_ACTIONS")
            .run_async()
            .await;
        run.fails_with(2);
        let errors: Vec<&str> = run
            .stderr
            .lines()
            .filter(|l| l.starts_with("error:"))
            .collect();
        assert_eq!(errors.len(), 1, "{run}");
        assert!(errors[0].contains(why), "{run}");
        for part in url.split(['/', '@', ':']).filter(|p| p.len() >= 20) {
            never_printed(&run, part);
        }
        assert!(
            !bed.files().exists(),
            "a refused backup wrote {}",
            bed.dest()
        );
    }
    assert!(fake.pings().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_action_masks_the_url_and_pings() {
    let fake = FakeHeartbeat::start().await;
    let (url, token) = url(&fake);
    let bed = Bed::local().await;
    let db = bed.scratch("app.db");
    crate::common::create_db(&db, "CREATE TABLE t(a); INSERT INTO t VALUES (1), (2);");
    let run = D1r2::new()
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_OUTPUT", bed.scratch("output"))
        .env("GITHUB_STEP_SUMMARY", bed.scratch("summary"))
        .env("INPUT_COMMAND", "backup")
        .env("INPUT_SOURCE", &db)
        .env("INPUT_DEST", bed.dest())
        .env("INPUT_HEARTBEAT-URL", &url)
        .run_async()
        .await;
    run.success();
    assert!(
        run.stdout.starts_with(&format!("::add-mask::{url}\n")),
        "{run}"
    );
    let printed = run.stdout.replacen(&format!("::add-mask::{url}\n"), "", 1);
    assert!(
        !printed.contains(&token) && !run.stderr.contains(&token),
        "{run}"
    );
    let summary = std::fs::read_to_string(bed.scratch("summary")).unwrap();
    assert!(!summary.contains(&token));
    let pings = fake.pings();
    assert_eq!(pings.len(), 2, "{pings:?}");
    assert!(pings[1].body.contains("rows: 2\n"), "{pings:?}");
}

/// A workflow that sets `D1R2_HEARTBEAT_URL` from a secret the repository does not have passes
/// an empty value: no heartbeat, and nothing refused.
#[tokio::test(flavor = "multi_thread")]
async fn an_empty_variable_asks_for_no_heartbeat() {
    let bed = Bed::local().await;
    bed.backup().await;
    for empty in ["", " "] {
        let run = bed
            .command(&["list", "--from", &bed.dest()])
            .env("D1R2_HEARTBEAT_URL", empty)
            .run_async()
            .await;
        run.success();
        assert!(!run.stderr.contains("heartbeat"), "{run}");
    }
}
