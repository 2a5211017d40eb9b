//! `d1r2 firewall` end to end: a fake GitHub `/meta` and a fake Cloudflare Lists API (with its
//! asynchronous bulk operations); every guard, the dry run, retries and one-line errors.

mod fakes;

use std::process::Output;

use fakes::d1::{ACCOUNT, TOKEN};
use fakes::github::FakeGitHub;
use fakes::lists::FakeLists;
use serde_json::json;

struct World {
    github: FakeGitHub,
    lists: FakeLists,
    dir: tempfile::TempDir,
}

impl World {
    async fn start(meta: serde_json::Value) -> World {
        let github = FakeGitHub::start().await;
        github.set_meta(meta);
        World {
            github,
            lists: FakeLists::start().await,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    async fn run(&self, args: &[&str]) -> Output {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_d1r2"));
        command
            .arg("firewall")
            .args(args)
            .env_remove("GITHUB_ACTIONS")
            .env("GITHUB_API_URL", &self.github.url)
            .env("CLOUDFLARE_API_BASE_URL", &self.lists.url)
            .env("CLOUDFLARE_API_TOKEN", TOKEN)
            .env("CLOUDFLARE_ACCOUNT_ID", ACCOUNT);
        command.output().await.unwrap()
    }

    /// In action mode; returns the outputs written.
    async fn action(&self, inputs: &[(&str, &str)]) -> (Output, String) {
        let output = self.dir.path().join("output");
        let _ = std::fs::remove_file(&output);
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_d1r2"));
        command
            .env("GITHUB_ACTIONS", "true")
            .env("GITHUB_OUTPUT", &output)
            .env("INPUT_COMMAND", "firewall")
            .env("GITHUB_API_URL", &self.github.url)
            .env("CLOUDFLARE_API_BASE_URL", &self.lists.url)
            .env("CLOUDFLARE_API_TOKEN", TOKEN)
            .env("CLOUDFLARE_ACCOUNT_ID", ACCOUNT);
        for (k, v) in inputs {
            command.env(k, v);
        }
        let out = command.output().await.unwrap();
        let written = std::fs::read_to_string(&output).unwrap_or_default();
        (out, written)
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Overlapping, contained and adjacent ranges, IPv4 and IPv6, as GitHub publishes them.
fn meta() -> serde_json::Value {
    json!({
        "verifiable_password_authentication": false,
        "hooks": ["192.30.252.0/22", "185.199.108.0/22", "2a0a:a440::/29"],
        "actions": [
            "4.148.0.0/16", "4.149.0.0/16", "4.148.10.0/24", "13.64.0.0/16",
            "20.1.2.3/32", "20.1.2.2/32",
            "2a01:111:f403:c900::/64", "2a01:111:f403:c901::/64", "2603:1030:0:3::3ff/128"
        ],
        "domains": {"actions": ["github.com"]}
    })
}

fn output_value(outputs: &str, name: &str) -> String {
    let mut lines = outputs.lines();
    while let Some(line) = lines.next() {
        if let Some((n, delimiter)) = line.split_once("<<")
            && n == name
        {
            let mut value = Vec::new();
            for l in lines.by_ref() {
                if l == delimiter {
                    break;
                }
                value.push(l);
            }
            return value.join("\n");
        }
    }
    panic!("no output {name} in {outputs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_is_created_filled_and_kept_in_step() {
    let w = World::start(meta()).await;
    let (out, outputs) = w.action(&[("INPUT_LIST", "github_actions")]).await;
    assert!(out.status.success(), "{}", text(&out));
    let list = w
        .lists
        .list("github_actions")
        .expect("the list was created");
    assert_eq!(list.kind, "ip");
    assert_eq!(
        list.items,
        [
            "4.148.0.0/15",
            "13.64.0.0/16",
            "20.1.2.2/31",
            "2603:1030:0:3::/64",
            "2a01:111:f403:c900::/63"
        ]
    );
    assert_eq!(output_value(&outputs, "firewall-added"), "5");
    assert_eq!(output_value(&outputs, "firewall-removed"), "0");
    assert_eq!(output_value(&outputs, "firewall-total"), "5");
    assert!(output_value(&outputs, "firewall-diff").contains("+ 4.148.0.0/15"));

    let (out, outputs) = w.action(&[("INPUT_LIST", "github_actions")]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(output_value(&outputs, "firewall-added"), "0");
    assert_eq!(output_value(&outputs, "firewall-removed"), "0");
    assert_eq!(w.lists.writes(), 1, "an unchanged list was written again");

    w.github.set_meta(json!({"actions": ["4.148.0.0/15", "13.64.0.0/16", "20.1.2.2/31", "52.0.0.0/24"], "hooks": []}));
    let out = w.run(&["--list", "github_actions", "--no-ipv6"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let list = w.lists.list("github_actions").unwrap();
    assert_eq!(
        list.items,
        ["4.148.0.0/15", "13.64.0.0/16", "20.1.2.2/31", "52.0.0.0/24"]
    );
    assert!(!text(&out).contains(TOKEN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sections_and_ipv6_are_chosen() {
    let w = World::start(meta()).await;
    let out = w
        .run(&[
            "--list",
            "hooks",
            "--sections",
            "hooks,actions",
            "--no-ipv6",
        ])
        .await;
    assert!(out.status.success(), "{}", text(&out));
    let items = w.lists.list("hooks").unwrap().items;
    assert!(items.contains(&"192.30.252.0/22".to_string()));
    assert!(items.iter().all(|i| !i.contains(':')), "{items:?}");
    let out = w
        .run(&["--list", "x", "--sections", "actions,domains"])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("domains"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guards_refuse_lockouts_and_force_overrides_them() {
    let w = World::start(json!({"actions": ["4.148.0.0/16", "13.64.0.0/16"]})).await;
    let old = [
        "10.0.0.0/24",
        "10.0.1.0/24",
        "10.0.2.0/24",
        "10.0.3.0/24",
        "4.148.0.0/16",
    ];
    w.lists.add_list("allow", "ip", &old);

    let refused = w.run(&["--list", "allow"]).await;
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        text(&refused).contains("--max-removal-ratio"),
        "{}",
        text(&refused)
    );
    assert_eq!(w.lists.writes(), 0);

    let few = w
        .run(&[
            "--list",
            "allow",
            "--min-entries",
            "5",
            "--max-removal-ratio",
            "1",
        ])
        .await;
    assert_eq!(few.status.code(), Some(1));
    assert!(text(&few).contains("--min-entries"), "{}", text(&few));

    w.github.set_meta(json!({"actions": []}));
    let empty = w.run(&["--list", "allow"]).await;
    assert_eq!(empty.status.code(), Some(1));
    assert!(text(&empty).contains("empty"), "{}", text(&empty));
    assert_eq!(w.lists.list("allow").unwrap().items, old);
    assert_eq!(w.lists.writes(), 0);

    w.github
        .set_meta(json!({"actions": ["4.148.0.0/16", "13.64.0.0/16", "20.0.0.0/16"]}));
    let over = w
        .run(&["--list", "allow", "--max-items", "2", "--force"])
        .await;
    assert_eq!(over.status.code(), Some(2), "{}", text(&over));
    assert!(text(&over).contains("item limit"), "{}", text(&over));
    assert_eq!(w.lists.writes(), 0);

    let dry = w.run(&["--list", "allow", "--dry-run", "--force"]).await;
    assert!(dry.status.success(), "{}", text(&dry));
    assert!(text(&dry).contains("+ 13.64.0.0/16"), "{}", text(&dry));
    assert!(text(&dry).contains("- 10.0.0.0/24"), "{}", text(&dry));
    assert_eq!(w.lists.writes(), 0, "a dry run changed the list");

    let forced = w.run(&["--list", "allow", "--force"]).await;
    assert!(forced.status.success(), "{}", text(&forced));
    assert_eq!(
        w.lists.list("allow").unwrap().items,
        ["4.148.0.0/16", "13.64.0.0/16", "20.0.0.0/16"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_and_others_are_one_line() {
    let w = World::start(meta()).await;
    w.github.fail_meta(2);
    w.lists.fail_next(&[429, 500]);
    let out = w.run(&["--list", "retried"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(w.lists.list("retried").unwrap().items.len(), 5);

    w.lists.fail_next(&[403]);
    let out = w.run(&["--list", "retried"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("code 10000"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    w.github
        .set_meta(json!({"actions": ["4.148.0.0/16", "not-a-range"]}));
    let out = w.run(&["--list", "retried"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("not-a-range"), "{}", text(&out));

    w.github.set_meta(meta());
    w.lists.add_list("words", "hostname", &[]);
    let out = w.run(&["--list", "words"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("kind hostname"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_custom_rule_is_created_then_updated_in_place() {
    let w = World::start(meta()).await;
    let expression = "(http.request.uri.path eq \"/api/backup\" and not ip.src in $github_actions)";
    let dry = w
        .run(&[
            "--list",
            "github_actions",
            "--rule",
            expression,
            "--zone",
            "z1",
            "--dry-run",
        ])
        .await;
    assert!(dry.status.success(), "{}", text(&dry));
    assert!(text(&dry).contains("would be created"), "{}", text(&dry));
    assert!(w.lists.rules("z1").is_empty());

    let out = w
        .run(&[
            "--list",
            "github_actions",
            "--rule",
            expression,
            "--zone",
            "z1",
        ])
        .await;
    assert!(out.status.success(), "{}", text(&out));
    let rules = w.lists.rules("z1");
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0]["expression"], expression);
    assert_eq!(rules[0]["action"], "block");
    assert_eq!(rules[0]["description"], "d1r2 allowlist github_actions");

    let out = w
        .run(&[
            "--list",
            "github_actions",
            "--rule",
            expression,
            "--zone",
            "z1",
            "--rule-action",
            "managed_challenge",
        ])
        .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("updated"), "{}", text(&out));
    let rules = w.lists.rules("z1");
    assert_eq!(
        rules.len(),
        1,
        "a second rule was added instead of updating"
    );
    assert_eq!(rules[0]["action"], "managed_challenge");

    let out = w
        .run(&[
            "--list",
            "github_actions",
            "--rule",
            "ip.src in $other",
            "--zone",
            "z1",
        ])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = w
        .run(&["--list", "github_actions", "--rule", expression])
        .await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "--rule without --zone: {}",
        text(&out)
    );
}
