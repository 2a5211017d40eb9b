//! What a user reads when a bucket cannot be used: one `error:` line that says what failed, on
//! what, and what to do (the variable to set or to check), never the AWS SDK's insides or a
//! secret; missing keys refused before any request; a wait for retries announced.

use std::path::Path;

use crate::common::cmd::{D1r2, Run};
use crate::fakes::s3::{ACCESS_KEY, FakeS3, SECRET_KEY};

fn name() -> String {
    format!("n{:08x}", rand::random::<u32>())
}

fn account() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Every variable that could hand the binary keys or an endpoint, removed, and the AWS SDK's
/// files pointed at nothing: the run sees only what a test gives it.
fn bare(home: &Path) -> D1r2 {
    let mut cmd = D1r2::new();
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "R2_ACCESS_KEY_ID",
        "R2_SECRET_ACCESS_KEY",
        "R2_ENDPOINT_URL",
        "R2_JURISDICTION",
        "CLOUDFLARE_ACCOUNT_ID",
        "GITHUB_ACTIONS",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("HOME", home)
        .env("AWS_CONFIG_FILE", home.join("config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.join("credentials"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_REGION", "us-east-1");
    cmd
}

/// One `error:` line, with the exit code wanted, none of the SDK's `Debug` shapes, and none of
/// `secrets`; returns that line.
#[track_caller]
fn one_line(out: &Run, code: i32, secrets: &[&str]) -> String {
    out.fails_with(code);
    let errors: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{out}");
    for shape in [
        "DispatchFailure",
        "ConnectorError",
        "ServiceError",
        "SdkError",
        "Some(",
        " { ",
        "raw: Response",
    ] {
        assert!(!out.stderr.contains(shape), "{shape:?} in {out}");
    }
    for secret in secrets {
        assert!(!out.stderr.contains(secret), "a secret in {out}");
    }
    errors[0].to_string()
}

#[tokio::test]
async fn missing_keys_name_the_variables_before_any_request() {
    let bucket = name();
    let server = FakeS3::start(&[&bucket]).await;
    let home = tempfile::tempdir().unwrap();
    let dest = format!("{bucket}/{}", name());
    let r2 = bare(home.path())
        .args(["list", "--from", &format!("r2://{dest}")])
        .env("CLOUDFLARE_ACCOUNT_ID", account())
        .env("R2_ENDPOINT_URL", &server.url)
        .run_async()
        .await;
    let line = one_line(&r2, 2, &[]);
    for var in [
        "R2_ACCESS_KEY_ID",
        "R2_SECRET_ACCESS_KEY",
        "CLOUDFLARE_ACCOUNT_ID",
    ] {
        assert!(line.contains(var), "{line}");
    }
    let s3 = bare(home.path())
        .args(["list", "--from", &format!("s3://{dest}")])
        .env("AWS_ENDPOINT_URL_S3", &server.url)
        .run_async()
        .await;
    let line = one_line(&s3, 2, &[]);
    for var in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
        assert!(line.contains(var), "{line}");
    }
    assert!(!line.contains("R2_"), "{line}");
    assert_eq!(server.log(), Vec::<String>::new(), "a request was made");
}

#[tokio::test]
async fn wrong_keys_name_the_variable_to_check() {
    let bucket = name();
    let server = FakeS3::start(&[&bucket]).await;
    let home = tempfile::tempdir().unwrap();
    let wrong_secret = format!("{}{}", name(), name());
    let wrong_id = format!("AKIA{}", name().to_uppercase());
    let dest = format!("{bucket}/{}", name());
    for (scheme, id_var, secret_var) in [
        ("r2://", "R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY"),
        ("s3://", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
    ] {
        let run = |id: &str, secret: &str| {
            let mut cmd = bare(home.path());
            cmd.args(["list", "--from", &format!("{scheme}{dest}")])
                .env(id_var, id)
                .env(secret_var, secret)
                .env("CLOUDFLARE_ACCOUNT_ID", account())
                .env("R2_ENDPOINT_URL", &server.url)
                .env("AWS_ENDPOINT_URL_S3", &server.url);
            cmd
        };
        let out = run(ACCESS_KEY, &wrong_secret).run_async().await;
        let line = one_line(&out, 2, &[&wrong_secret]);
        assert!(line.contains("SignatureDoesNotMatch"), "{line}");
        assert!(line.contains(&format!("check {secret_var}")), "{line}");
        assert!(line.contains(&format!("{scheme}{dest}")), "{line}");
        let out = run(&wrong_id, SECRET_KEY).run_async().await;
        let line = one_line(&out, 2, &[SECRET_KEY, &wrong_id]);
        assert!(line.contains(&format!("check {id_var}")), "{line}");
    }
}

#[tokio::test]
async fn a_missing_bucket_is_named() {
    let server = FakeS3::start(&[&name()]).await;
    let env = server.env();
    let home = tempfile::tempdir().unwrap();
    let missing = name();
    let dest = format!("s3://{missing}/{}", name());
    // Reads only: the fake, unlike S3 and R2, makes a bucket on a write to it.
    for args in [
        vec!["list", "--from", &dest],
        vec!["verify", "--from", &dest],
    ] {
        let out = bare(home.path())
            .args(&args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .run_async()
            .await;
        let line = one_line(&out, 2, &[SECRET_KEY]);
        assert!(
            line.contains(&format!("the bucket {missing} does not exist")),
            "{line}"
        );
    }
}

#[tokio::test]
async fn an_unreachable_endpoint_is_said_once_while_waiting_and_once_at_the_end() {
    // A port nothing listens on: bound, then let go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let home = tempfile::tempdir().unwrap();
    let secret = format!("{}{}", name(), name());
    let out = bare(home.path())
        .args(["list", "--from", &format!("s3://{}/{}", name(), name())])
        .env("AWS_ENDPOINT_URL_S3", format!("http://127.0.0.1:{port}"))
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", &secret)
        .run_async()
        .await;
    let line = one_line(&out, 1, &[&secret]);
    let endpoint = format!("127.0.0.1:{port}");
    assert!(line.contains("could not connect"), "{line}");
    assert!(line.contains(&endpoint), "{line}");
    let waits: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("trying again"))
        .collect();
    assert_eq!(waits.len(), 1, "{out}");
    assert!(waits[0].contains(&endpoint), "{out}");
}
