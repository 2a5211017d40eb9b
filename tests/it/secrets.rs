//! No secret ever appears in what d1r2 prints or writes: every command runs with known secret
//! values in its environment, and stdout, stderr, the action's output files, the manifest, the
//! export and the restored database are searched for them.

use crate::common;
use crate::common::cmd::D1r2;

use std::path::Path;

const SECRETS: [(&str, &str); 7] = [
    ("CLOUDFLARE_API_TOKEN", "cf-token-SECRET-aaaaaaaaaaaaaaaa"),
    ("R2_ACCESS_KEY_ID", "r2-key-id-SECRET-bbbbbbbb"),
    ("R2_SECRET_ACCESS_KEY", "r2-secret-SECRET-cccccccccccc"),
    ("AWS_SECRET_ACCESS_KEY", "aws-secret-SECRET-dddddddddd"),
    ("TOTP_SECRET", "JBSWY3DPEHPK3PXPSECRETEEEEEEEEEE"),
    ("GITHUB_TOKEN", "ghp_SECRETffffffffffffffffffffffff"),
    (
        "D1R2_ENCRYPTION_KEY",
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
    ),
];

/// A heartbeat URL (its path is the secret) on a port nothing listens on: given to a few runs
/// only, each ping to it being tried three times.
const HEARTBEAT: &str = "http://127.0.0.1:9/hb-SECRET-gggggggggggggggg";

/// Runs `command` with `options` (a value of `true` is a switch) as CLI flags or as action
/// inputs.
fn run(dir: &Path, command: &str, options: &[(&str, &str)], action: bool) -> String {
    let mut cmd = D1r2::new();
    cmd.current_dir(dir).envs(SECRETS);
    if action {
        cmd.env("GITHUB_ACTIONS", "true")
            .env("GITHUB_OUTPUT", dir.join("gh-output"))
            .env("GITHUB_STEP_SUMMARY", dir.join("gh-summary"))
            .env("INPUT_COMMAND", command);
        for (name, value) in options {
            cmd.env(format!("INPUT_{}", name.to_uppercase()), value);
        }
    } else {
        cmd.arg(command);
        for (name, value) in options {
            cmd.arg(format!("--{name}"));
            if *value != "true" {
                cmd.arg(value);
            }
        }
    }
    let out = cmd.run();
    format!("{}{}", out.stdout, out.stderr)
}

fn files_text(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

#[test]
fn no_command_prints_or_writes_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::create_db(&d.join("app.db"), include_str!("../fixtures/edge.sql"));
    let mut printed = String::new();
    for action in [false, true] {
        let b = if action { "b-action" } else { "b-cli" };
        let (sql, db) = if action {
            ("a.sql", "a.db")
        } else {
            ("c.sql", "c.db")
        };
        let runs: Vec<(&str, Vec<(&str, &str)>)> = vec![
            (
                "backup",
                vec![
                    ("source", "app.db"),
                    ("dest", b),
                    ("encrypt", "true"),
                    ("compression", "none"),
                ],
            ),
            ("list", vec![("from", b), ("heartbeat-url", HEARTBEAT)]),
            ("verify", vec![("from", b)]),
            (
                "check",
                vec![("from", b), ("max-age", "1h"), ("heartbeat-url", HEARTBEAT)],
            ),
            ("export", vec![("from", b), ("out", sql)]),
            ("restore", vec![("from", b), ("to", db)]),
            ("restore", vec![("from", b), ("to", "app.db")]),
            (
                "verify",
                vec![("from", "nowhere"), ("heartbeat-url", HEARTBEAT)],
            ),
            ("prune", vec![("from", b), ("keep-last", "5")]),
            ("list", vec![("from", b), ("audit", "true")]),
            ("totp", vec![("digits", "8")]),
            (
                "trigger",
                vec![
                    ("url", "http://127.0.0.1:9/backup"),
                    ("max-attempts", "2"),
                    ("initial-delay", "0.01"),
                ],
            ),
            (
                "backup",
                vec![("source", "d1://some-db"), ("dest", "s3://bucket/x")],
            ),
        ];
        for (command, options) in runs {
            let text = run(d, command, &options, action);
            if action {
                assert!(
                    text.starts_with("::add-mask::"),
                    "secrets are masked first: {text}"
                );
                printed.push_str(
                    text.lines()
                        .filter(|l| !l.starts_with("::add-mask::"))
                        .collect::<Vec<_>>()
                        .join("\n")
                        .as_str(),
                );
            } else {
                printed.push_str(&text);
            }
        }
    }
    for made in ["c.db", "a.db", "c.sql", "a.sql", "gh-output", "gh-summary"] {
        assert!(d.join(made).exists(), "{made} was not produced: {printed}");
    }
    assert!(
        std::fs::read_to_string(d.join("gh-output"))
            .unwrap()
            .contains("backup-id<<")
    );
    let heartbeat = ("heartbeat-url", HEARTBEAT.rsplit('/').next().unwrap());
    for (name, value) in SECRETS.into_iter().chain([heartbeat]) {
        assert!(!printed.contains(value), "{name} was printed:\n{printed}");
        for (file, bytes) in files_text(d) {
            let found = bytes.windows(value.len()).any(|w| w == value.as_bytes());
            assert!(!found, "{name} was written to {file}");
        }
    }
}
