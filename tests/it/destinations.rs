//! Destinations that name no proper place are refused with exit 2 before anything is made, on
//! the local folder and on the S3 server alike; a refused backup makes no folder; `file://` URLs
//! follow RFC 8089.

use std::path::Path;

use crate::common;
use crate::common::cmd::{D1r2, Run};
use crate::fakes::s3::FakeS3;

/// A name no test has used before, so no case passes for the sake of one fixed spelling.
fn name() -> String {
    format!("n{:08x}", rand::random::<u32>())
}

fn database(dir: &Path) -> String {
    let db = dir.join(format!("{}.db", name()));
    common::create_db(
        &db,
        "CREATE TABLE t(a); INSERT INTO t VALUES (1), (x'00ff'), (-0.0);",
    );
    db.display().to_string()
}

/// Every file and folder under `dir`, relative to it.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            out.push(path.strip_prefix(dir).unwrap().display().to_string());
            if path.is_dir() {
                dirs.push(path);
            }
        }
    }
    out.sort();
    out
}

#[track_caller]
fn refused(out: &Run) {
    out.fails_with(2);
    let errors = out.stderr.lines().filter(|l| l.starts_with("error:"));
    assert_eq!(errors.count(), 1, "{out}");
}

/// Malformed destinations, made from fresh names each run.
fn malformed(bucket: &str) -> Vec<String> {
    let (a, b) = (name(), name());
    vec![
        String::new(),
        " ".to_string(),
        "file:".to_string(),
        "file://".to_string(),
        format!("file://{a}/{b}"),
        format!("file://{a}.example/tmp/{b}"),
        format!("file:///tmp/{a}/../{b}"),
        format!("file:///tmp/{a}/%2e%2E/{b}"),
        format!("file:///tmp/{a}/./{b}"),
        format!("file:{a}/../{b}"),
        format!("{a}/../{b}"),
        format!("../{a}"),
        format!("{a}/./{b}"),
        format!("{a}/.."),
        format!("s3://{bucket}/{a}/../{b}"),
        format!("s3://{bucket}/../{a}"),
        format!("s3://{bucket}/{a}/./{b}"),
        format!("s3://{bucket}/{a}//{b}"),
        format!("r2://{bucket}/{a}/.."),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_destinations_are_refused_before_anything_is_made() {
    let bucket = name();
    let server = FakeS3::start(&[&bucket]).await;
    let env = server.env();
    let bucket_root = server.root.path().join(&bucket);
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().unwrap();
        let db = database(dir.path());
        // The working folder: a destination read as a relative path would land here.
        let cwd = tempfile::tempdir().unwrap();
        for dest in malformed(&bucket) {
            let run = |args: &[&str]| {
                D1r2::new()
                    .args(args)
                    .current_dir(cwd.path())
                    .env_remove("GITHUB_ACTIONS")
                    .envs(env.iter().map(|(k, v)| (k, v)))
                    .env("CLOUDFLARE_ACCOUNT_ID", "0123456789abcdef0123456789abcdef")
                    .env("R2_ENDPOINT_URL", &env[0].1)
                    .run()
            };
            refused(&run(&["backup", "--source", &db, "--dest", &dest]));
            for command in ["list", "verify", "prune"] {
                let mut args = vec![command, "--from", &dest];
                if command == "prune" {
                    args.extend(["--keep-last", "1"]);
                }
                refused(&run(&args));
            }
            assert_eq!(
                tree(cwd.path()),
                Vec::<String>::new(),
                "{dest:?} made files"
            );
            assert_eq!(
                tree(&bucket_root),
                Vec::<String>::new(),
                "{dest:?} wrote objects"
            );
        }
    })
    .await
    .unwrap();
}

#[test]
fn a_refused_backup_makes_no_folder() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(dir.path());
    let dest = dir.path().join(name()).join(name());
    let dest = dest.to_str().unwrap();
    let cases: [&[&str]; 3] = [
        &["--tables", "no_such_table"],
        &["--encrypt"],
        &["--exclude-columns", "no_such_table.a"],
    ];
    for extra in cases {
        let out = D1r2::new()
            .args(["backup", "--source", &db, "--dest", dest])
            .args(extra)
            .env_remove("D1R2_ENCRYPTION_KEY")
            .env_remove("GITHUB_ACTIONS")
            .run();
        refused(&out);
        assert!(!Path::new(dest).exists(), "{extra:?} made {dest}");
        assert!(
            !Path::new(dest).parent().unwrap().exists(),
            "{extra:?} made the folder above {dest}"
        );
    }
}

#[test]
fn a_file_where_a_folder_is_expected_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(dir.path());
    let file = dir.path().join(name());
    let content = name().repeat(10);
    std::fs::write(&file, &content).unwrap();
    let f = file.to_str().unwrap();
    for args in [
        vec!["backup", "--source", &db, "--dest", f],
        vec!["list", "--from", f],
        vec!["verify", "--from", f],
    ] {
        let out = D1r2::new().args(&args).env_remove("GITHUB_ACTIONS").run();
        refused(&out);
        assert!(out.stderr.contains(f), "{out}");
        assert!(out.stderr.contains("is a file, not a folder"), "{out}");
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), content);
}

#[test]
fn file_urls_name_local_folders_as_rfc_8089_says() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(dir.path());
    let spaced = format!("{} {}", name(), name());
    let encoded = spaced.replace(' ', "%20");
    let root = dir.path().canonicalize().unwrap();
    let root = root.to_str().unwrap();
    for (url, folder) in [
        (
            format!("file://{root}/{encoded}"),
            root.to_string() + "/" + &spaced,
        ),
        (format!("file://localhost{root}/{}", name()), String::new()),
    ] {
        let folder = if folder.is_empty() {
            url.strip_prefix("file://localhost").unwrap().to_string()
        } else {
            folder
        };
        D1r2::new()
            .args(["backup", "--source", &db, "--dest", &url])
            .env_remove("GITHUB_ACTIONS")
            .run()
            .success();
        let listed = D1r2::new()
            .args(["list", "--from", &folder, "--json"])
            .env_remove("GITHUB_ACTIONS")
            .run();
        listed.success();
        let items: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
        assert_eq!(items.as_array().unwrap().len(), 1, "{url}: {listed}");
    }
}
