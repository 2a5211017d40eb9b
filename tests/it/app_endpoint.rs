//! The app side of `d1r2 trigger`: the example endpoint of examples/app, run in workerd by
//! `wrangler dev --local` (tests/workerd/app.ts serves the Worker example and the SvelteKit
//! route, each with its own D1 database as the replay store), called by the d1r2 binary and by
//! hand-made requests. One test, in steps, since the replay store carries each step's codes to
//! the next; it waits for at most one period change (30 s), to see a retry's code accepted after
//! the first attempt's was used up.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::cmd::{D1r2, Run};
use crate::common::workerd::{self, Workerd, toml_string};

/// RFC 6238's SHA-1 test key ("12345678901234567890"), base32: the app's TOTP_SECRET.
const SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
/// Another secret, which the app must refuse.
const WRONG_SECRET: &str = "JBSWY3DPEHPK3PXP";
const PERIOD: u64 = 30;

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/app")
}

/// The configuration of tests/workerd/app.ts: the example's `$lib` import resolved as SvelteKit
/// resolves it, and two databases.
fn config() -> String {
    assert!(
        example().join("node_modules/otpauth").exists(),
        "the example's dependencies are not installed: run `npm ci --omit=dev --prefix examples/app` (./scripts/test does)"
    );
    format!(
        "name = \"d1r2-app-tests\"\nmain = {main}\ncompatibility_date = \"2025-01-01\"\n\n\
         [alias]\n\"$lib/server/verify\" = {verify}\n\n\
         [vars]\nTOTP_SECRET = \"{SECRET}\"\n\n\
         [[d1_databases]]\nbinding = \"DB\"\ndatabase_name = \"app\"\n\
         database_id = \"00000001-0000-4000-8000-000000000001\"\n\n\
         [[d1_databases]]\nbinding = \"SVELTEKIT_DB\"\ndatabase_name = \"app-sveltekit\"\n\
         database_id = \"00000002-0000-4000-8000-000000000002\"\n",
        main = toml_string(&workerd::package().join("app.ts").to_string_lossy()),
        verify = toml_string(&example().join("src/lib/server/verify.ts").to_string_lossy()),
    )
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The period (counter) of unix time `at`.
fn counter(at: f64) -> u64 {
    at as u64 / PERIOD
}

/// The app's code of period `counter`, made with totp-rs rather than d1r2.
fn code(counter: u64) -> String {
    totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(6)
        .with_step_duration(PERIOD)
        .with_secret(b"12345678901234567890".to_vec())
        .build_noncompliant()
        .generate(counter * PERIOD)
        .to_string()
}

/// Sleeps until at least `secs` seconds are left in the current period, so the steps that
/// follow see one period.
async fn settle(secs: f64) {
    let left = PERIOD as f64 - now() % PERIOD as f64;
    if left < secs {
        tokio::time::sleep(Duration::from_secs_f64(left + 0.05)).await;
    }
}

/// A POST to `url` with `authorization` (when given): the status and the body.
async fn post(url: &str, authorization: Option<&str>) -> (u16, String) {
    let mut request = reqwest::Client::new().post(url);
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let answer = request.send().await.unwrap();
    (answer.status().as_u16(), answer.text().await.unwrap())
}

async fn trigger(url: &str, secret: &str, args: &[&str]) -> Run {
    D1r2::new()
        .args(["trigger", "--url", url, "--initial-delay", "0.01"])
        .args(args)
        .env_remove("GITHUB_ACTIONS")
        .env("TOTP_SECRET", secret)
        .run_async()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_endpoint_takes_each_code_once_and_d1r2_retries_with_a_new_one() {
    let app = tokio::task::spawn_blocking(|| Workerd::start_with(&config()))
        .await
        .unwrap();
    let setup = reqwest::Client::new()
        .post(format!("{}/setup", app.origin))
        .send()
        .await
        .unwrap();
    assert_eq!(setup.status(), 200, "{}", setup.text().await.unwrap());
    let worker = format!("{}/api/backup", app.origin);
    let sveltekit = format!("{}/sveltekit/api/backup", app.origin);

    // The backup fails once after the code was used up: the retry is accepted only because its
    // code is of the next period (d1r2 waits for it), not the same code sent again.
    settle(5.0).await;
    let first = counter(now());
    let out = trigger(&worker, SECRET, &["--header", "X-Test-Fail-Once: yes"]).await;
    out.success();
    assert!(
        out.stderr.contains("attempt 1/5: HTTP 503"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("for a fresh code"), "{}", out.stderr);
    assert!(
        out.stderr.contains("attempt 2/5: HTTP 202"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.contains("\"accepted\":true"), "{}", out.stdout);
    let used = counter(now());
    assert!(used > first, "the retry was not in a later period");

    // Within that period, its code is refused, sent by hand or by d1r2 again; so are codes two
    // periods away and codes of another secret, and anything not a bearer code.
    settle(10.0).await;
    assert_eq!(counter(now()), used, "the steps took a whole period");
    let bearer = |c: u64| format!("Bearer {}", code(c));
    assert_eq!(post(&worker, Some(&bearer(used))).await.0, 401);
    let again = trigger(&worker, SECRET, &[]).await;
    again.fails_with(1);
    assert!(
        again.stderr.contains("HTTP 401 (not retried)"),
        "{}",
        again.stderr
    );
    assert_eq!(post(&worker, Some(&bearer(used + 2))).await.0, 401);
    let wrong = trigger(&worker, WRONG_SECRET, &[]).await;
    wrong.fails_with(1);
    assert!(
        wrong.stderr.contains("HTTP 401 (not retried)"),
        "{}",
        wrong.stderr
    );
    for authorization in [
        None,
        Some("Bearer"),
        Some("Bearer 12345x"),
        Some("Basic abc"),
    ] {
        let (status, body) = post(&worker, authorization).await;
        assert_eq!(status, 401, "{authorization:?}: {body}");
    }
    let get = reqwest::get(&worker).await.unwrap();
    assert_eq!(get.status(), 405);

    // The SvelteKit route, with a database of its own: a code of the period before is accepted
    // (clock drift), d1r2's current one after it, and then not again.
    let (status, body) = post(&sveltekit, Some(&bearer(used - 1))).await;
    assert_eq!(status, 202, "{body}");
    assert!(body.contains("\"accepted\":true"), "{body}");
    trigger(&sveltekit, SECRET, &[]).await.success();
    trigger(&sveltekit, SECRET, &[]).await.fails_with(1);
    assert_eq!(post(&sveltekit, Some(&bearer(used - 1))).await.0, 401);
    trigger(&sveltekit, WRONG_SECRET, &[]).await.fails_with(1);
    assert_eq!(counter(now()), used, "the steps took a whole period");

    // The example reads TOTP_SECRET as d1r2 does: the same codes for every spelling and shape.
    for secret in [
        SECRET,
        "gezd gnbv gy3t qojq gezd gnbv gy3t qojq",
        "GEZDGNBVGY3TQOJQ-GEZDGNBVGY3TQOJQ====",
        "otpauth://totp/app:backup?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=app",
        "otpauth://totp/app?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&algorithm=SHA256&digits=8&period=60",
        "otpauth://totp/app?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&algorithm=SHA512&digits=7&period=10",
    ] {
        for at in [59u64, 1_111_111_109, 2_000_000_000] {
            let answer = reqwest::Client::new()
                .post(format!("{}/code", app.origin))
                .json(&serde_json::json!({"secret": secret, "at": at}))
                .send()
                .await
                .unwrap();
            let status = answer.status();
            let theirs = answer.text().await.unwrap();
            // workerd answers an exception with a long HTML page: its start names it.
            let start: String = theirs.chars().take(300).collect();
            assert_eq!(status, 200, "{secret}: the example failed: {start}");
            let ours = D1r2::new()
                .args(["totp", "--at", &at.to_string()])
                .env_remove("GITHUB_ACTIONS")
                .env("TOTP_SECRET", secret)
                .run_async()
                .await;
            ours.success();
            assert!(
                ours.stdout.lines().any(|l| l.trim() == theirs),
                "{secret} at {at}: the example made {theirs:?}, d1r2 {:?}",
                ours.stdout
            );
        }
    }
}

/// The example's wrangler is the one the tests run it with.
#[test]
fn the_example_pins_the_tested_wrangler() {
    let pin = |path: &Path| {
        let text = std::fs::read_to_string(path).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        json["devDependencies"]["wrangler"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        pin(&example().join("package.json")),
        pin(&workerd::package().join("package.json"))
    );
}
