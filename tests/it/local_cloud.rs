//! The local cloud (examples/local_cloud), started in-process on free ports: the environment it
//! prints points the d1r2 binary at its fakes, and every command it suggests works there (a
//! backup of its D1 database to its S3, the listing, a firewall dry run through its Cloudflare
//! API and GitHub, a triggered backup at its app endpoint).

use crate::cloud::{LocalCloud, Options};
use crate::common::cmd::D1r2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_printed_environment_and_commands_work_against_it() {
    let cloud = LocalCloud::start(&Options {
        port_base: 0,
        databases: Vec::new(),
        bucket: "backups".to_string(),
    })
    .await;
    let printed = cloud.exports();
    let mut env = Vec::new();
    let mut commands = Vec::new();
    for line in printed.lines() {
        if let Some(export) = line.strip_prefix("export ") {
            let (name, value) = export.split_once('=').expect("NAME='value'");
            env.push((name.to_string(), value.trim_matches('\'').to_string()));
        } else if let Some(command) = line.strip_prefix("# d1r2 ") {
            commands.push(command.split(' ').map(str::to_string).collect::<Vec<_>>());
        }
    }
    for name in [
        "CLOUDFLARE_API_BASE_URL",
        "CLOUDFLARE_API_TOKEN",
        "CLOUDFLARE_ACCOUNT_ID",
        "AWS_ENDPOINT_URL_S3",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "GITHUB_API_URL",
        "TOTP_SECRET",
    ] {
        assert!(env.iter().any(|(n, _)| n == name), "{name}: {printed}");
    }
    let names: Vec<&str> = commands.iter().map(|c| c[0].as_str()).collect();
    assert_eq!(
        names,
        ["backup", "list", "firewall", "trigger"],
        "{printed}"
    );
    let mut outputs = Vec::new();
    for command in &commands {
        let out = D1r2::new()
            .args(command)
            .env_remove("GITHUB_ACTIONS")
            .envs(env.iter().map(|(n, v)| (n.as_str(), v.as_str())))
            .run_async()
            .await;
        out.success();
        outputs.push(out.stdout.clone());
    }
    // The backup is in the S3 fake's folder, its manifest last, and listed.
    let (database, id) = (&cloud.databases[0].0, outputs[0].lines().next().unwrap());
    let id = id.trim_start_matches("Backup").trim();
    let manifest = cloud
        .s3
        .root
        .path()
        .join(format!("{}/{database}/{id}/manifest.json", cloud.bucket));
    assert!(manifest.is_file(), "{}: {}", manifest.display(), outputs[0]);
    assert!(outputs[1].contains(id), "{}", outputs[1]);
    assert!(outputs[2].contains("dry run"), "{}", outputs[2]);
    assert!(outputs[3].contains("\"accepted\":true"), "{}", outputs[3]);
    assert!(cloud.app_url.ends_with("/api/backup"));

    // Its outage control: S3 answers the next requests with 503 SlowDown, which a listing's
    // retries outlast.
    let control = cloud
        .cloudflare_url
        .replace("/client/v4", "/local-cloud/s3/outage");
    let client = reqwest::Client::new();
    let refused = client.post(&control).send().await.unwrap();
    assert_eq!(refused.status(), 400);
    let answer = client
        .post(format!("{control}?requests=2"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let out = D1r2::new()
        .args(&commands[1])
        .env_remove("GITHUB_ACTIONS")
        .envs(env.iter().map(|(n, v)| (n.as_str(), v.as_str())))
        .run_async()
        .await;
    out.success();
    assert!(out.stdout.contains(id), "{}", out.stdout);
    let faults = cloud
        .s3
        .state
        .faults
        .load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(faults, 2, "{:?}", cloud.s3.log());
}
