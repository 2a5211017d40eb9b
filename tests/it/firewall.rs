//! `d1r2 firewall` end to end: a fake GitHub `/meta` and a fake Cloudflare Lists API (with its
//! asynchronous bulk operations); every guard, the dry run, retries and one-line errors.

use crate::common::cmd::{D1r2, Run};
use crate::common::output_value;
use crate::fakes;

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

    async fn run(&self, args: &[&str]) -> Run {
        D1r2::new()
            .arg("firewall")
            .args(args)
            .env_remove("GITHUB_ACTIONS")
            .env("GITHUB_API_URL", &self.github.url)
            .env("CLOUDFLARE_API_BASE_URL", &self.lists.url)
            .env("CLOUDFLARE_API_TOKEN", TOKEN)
            .env("CLOUDFLARE_ACCOUNT_ID", ACCOUNT)
            .run_async()
            .await
    }

    /// In action mode; returns the outputs written.
    async fn action(&self, inputs: &[(&str, &str)]) -> (Run, String) {
        let output = self.dir.path().join("output");
        let _ = std::fs::remove_file(&output);
        let _ = std::fs::remove_file(self.dir.path().join("summary"));
        let out = D1r2::new()
            .env("GITHUB_ACTIONS", "true")
            .env("GITHUB_OUTPUT", &output)
            .env("GITHUB_STEP_SUMMARY", self.dir.path().join("summary"))
            .env("INPUT_COMMAND", "firewall")
            .env("GITHUB_API_URL", &self.github.url)
            .env("CLOUDFLARE_API_BASE_URL", &self.lists.url)
            .env("CLOUDFLARE_API_TOKEN", TOKEN)
            .env("CLOUDFLARE_ACCOUNT_ID", ACCOUNT)
            .envs(inputs.iter().copied())
            .run_async()
            .await;
        let written = std::fs::read_to_string(&output).unwrap_or_default();
        (out, written)
    }

    /// The step summary the last action-mode run wrote.
    fn summary(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("summary")).unwrap_or_default()
    }
}

fn text(out: &Run) -> String {
    format!("{}{}", out.stdout, out.stderr)
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
    // Every item carries the comment d1r2 sends, the default one here.
    assert_eq!(
        list.comments,
        vec![Some("GitHub ranges, kept by d1r2".to_string()); 5]
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
    let out = w
        .run(&[
            "--list",
            "github_actions",
            "--no-ipv6",
            "--comment",
            "may call /api/backup",
        ])
        .await;
    assert!(out.status.success(), "{}", text(&out));
    let list = w.lists.list("github_actions").unwrap();
    assert_eq!(
        list.items,
        ["4.148.0.0/15", "13.64.0.0/16", "20.1.2.2/31", "52.0.0.0/24"]
    );
    assert_eq!(
        list.comments,
        vec![Some("may call /api/backup".to_string()); 4]
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
    let old = ["4.148.0.0/16", "20.0.0.0/16", "40.0.0.0/16", "52.0.0.0/16"];
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
    assert!(text(&dry).contains("- 40.0.0.0/16"), "{}", text(&dry));
    assert!(
        text(&dry).contains("passes: removes 50 % of allowed IPv4 addresses, at most 50 %"),
        "{}",
        text(&dry)
    );
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
    let stderr = &out.stderr;
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

/// The outputs action.yml declares.
fn declared_outputs() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/action.yml");
    let yml: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    yml["outputs"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap().to_string())
        .collect()
}

fn output_names(outputs: &str) -> Vec<String> {
    crate::common::parse_outputs(outputs)
        .into_iter()
        .map(|(name, _)| name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_weighs_the_addresses_lost_not_the_items() {
    // One range GitHub still publishes (inside a wider aggregate), two stale entries.
    let w =
        World::start(json!({"actions": ["4.148.0.0/16", "4.149.0.0/16", "13.64.0.0/16"]})).await;
    w.lists.add_list(
        "allow",
        "ip",
        &["4.148.0.0/16", "192.0.2.0/24", "198.51.100.7"],
    );
    let (dry, outputs) = w
        .action(&[("INPUT_LIST", "allow"), ("INPUT_DRY-RUN", "true")])
        .await;
    assert!(dry.status.success(), "{}", text(&dry));
    assert_eq!(output_value(&outputs, "firewall-removed"), "3");
    assert_eq!(output_value(&outputs, "firewall-lost-ipv4"), "257");
    assert_eq!(output_value(&outputs, "firewall-lost-ipv4-share"), "0.0039");
    assert_eq!(output_value(&outputs, "firewall-lost-ipv6"), "0");
    assert_eq!(output_value(&outputs, "firewall-refusal"), "");
    for name in output_names(&outputs) {
        assert!(
            declared_outputs().contains(&name),
            "undeclared output {name}"
        );
    }
    let log = text(&dry);
    assert!(
        log.contains("257 of 65,793 allowed addresses (0.4 %)"),
        "{log}"
    );
    assert!(
        log.contains("passes: removes 0.4 % of allowed IPv4 addresses, at most 50 %"),
        "{log}"
    );
    assert!(w.summary().contains("257 of 65,793"), "{}", w.summary());
    assert_eq!(w.lists.writes(), 0);

    let out = w.run(&["--list", "allow"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        w.lists.list("allow").unwrap().items,
        ["4.148.0.0/15", "13.64.0.0/16"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shrink_to_a_tenth_is_refused_and_the_dry_run_shows_the_plan() {
    let ten: Vec<String> = (0..10).map(|i| format!("20.{i}.0.0/16")).collect();
    let ten: Vec<&str> = ten.iter().map(String::as_str).collect();
    let w = World::start(json!({"actions": ["20.0.0.0/16"]})).await;
    w.lists.add_list("allow", "ip", &ten);

    let (dry, outputs) = w
        .action(&[("INPUT_LIST", "allow"), ("INPUT_DRY-RUN", "true")])
        .await;
    assert!(
        dry.status.success(),
        "a refused plan failed the dry run: {}",
        text(&dry)
    );
    let log = text(&dry);
    assert!(
        log.contains("would refuse: removes 90 % of allowed IPv4 addresses, above 50 %"),
        "{log}"
    );
    assert!(log.contains("- 20.9.0.0/16"), "{log}");
    assert_eq!(output_value(&outputs, "status"), "success");
    assert_eq!(output_value(&outputs, "firewall-lost-ipv4"), "589824");
    assert_eq!(output_value(&outputs, "firewall-lost-ipv4-share"), "0.9000");
    assert!(
        output_value(&outputs, "firewall-refusal").starts_with("removes 90 % of allowed IPv4"),
        "{outputs}"
    );
    let summary = w.summary();
    assert!(
        summary.contains("would refuse: removes 90 % of allowed IPv4 addresses, above 50 %")
            && summary.contains("- 20.9.0.0/16"),
        "{summary}"
    );

    let (refused, outputs) = w.action(&[("INPUT_LIST", "allow")]).await;
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert_eq!(output_value(&outputs, "status"), "failure");
    assert_eq!(output_value(&outputs, "firewall-removed"), "9");
    assert!(
        w.summary().contains("refuses: removes 90 %"),
        "{}",
        w.summary()
    );
    let out = w.run(&["--list", "allow"]).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = &out.stderr;
    assert!(
        stderr.contains("removes 90 % of allowed IPv4 addresses, above 50 %")
            && stderr.contains("--max-removal-ratio"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert_eq!(w.lists.writes(), 0);

    // The IPv6 family is weighed on its own, in /64s.
    w.github
        .set_meta(json!({"actions": ["20.0.0.0/12", "2a01:111::/48"]}));
    w.lists
        .add_list("v6", "ip", &["20.0.0.0/12", "2a01:111::/47"]);
    let out = w.run(&["--list", "v6", "--dry-run"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(
            "passes: removes 50 % of allowed IPv6 /64 networks, at most 50 % (65,536 of 131,072)"
        ),
        "{}",
        text(&out)
    );
    let out = w.run(&["--list", "v6", "--max-removal-ratio", "0.4"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("IPv6 /64 networks, above 40 %"),
        "{}",
        text(&out)
    );

    w.github.set_meta(json!({"actions": ["20.0.0.0/16"]}));
    let forced = w.run(&["--list", "allow", "--force"]).await;
    assert!(forced.status.success(), "{}", text(&forced));
    assert_eq!(w.lists.list("allow").unwrap().items, ["20.0.0.0/16"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_no_allowlist_should_hold_are_refused_even_with_force() {
    let w = World::start(json!({})).await;
    w.lists.add_list("allow", "ip", &["4.148.0.0/16"]);
    for bogon in [
        "0.0.0.0/0",
        "::/0",
        "128.0.0.0/1",
        "10.0.0.0/8",
        "192.168.1.0/24",
        "127.0.0.1",
        "169.254.0.0/16",
        "224.0.0.0/4",
        "192.0.2.0/24",
        "100.64.0.0/10",
        "0.0.0.0",
        "fe80::/64",
        "fc00::/7",
        "ff02::1",
        "2001:db8::/32",
        "::1",
        "::ffff:10.0.0.0/104",
    ] {
        w.github
            .set_meta(json!({"actions": ["4.148.0.0/16", bogon]}));
        for extra in [&["--force"][..], &["--force", "--dry-run"][..], &[][..]] {
            let mut args = vec!["--list", "allow"];
            args.extend_from_slice(extra);
            let out = w.run(&args).await;
            let stderr = &out.stderr;
            assert_eq!(out.status.code(), Some(1), "{bogon} {extra:?}: {stderr}");
            assert!(stderr.contains(&format!("{bogon:?}")), "{bogon}: {stderr}");
            assert!(stderr.contains("no allowlist should hold it"), "{stderr}");
            assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        }
    }
    assert_eq!(w.lists.writes(), 0);
    assert_eq!(w.lists.list("allow").unwrap().items, ["4.148.0.0/16"]);

    // An IPv4-mapped range is the IPv4 range it maps, and stays under --no-ipv6.
    w.github
        .set_meta(json!({"actions": ["::ffff:4.148.0.0/112", "::ffff:13.64.0.7"]}));
    let out = w.run(&["--list", "allow", "--no-ipv6"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        w.lists.list("allow").unwrap().items,
        ["4.148.0.0/16", "13.64.0.7/32"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_are_waited_out_and_one_past_the_deadline_gives_up() {
    let w = World::start(meta()).await;
    let epoch = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    w.github.rate_limit_meta(vec![
        (429, vec![("retry-after", "1".to_string())]),
        (
            403,
            vec![
                ("x-ratelimit-remaining", "0".to_string()),
                ("x-ratelimit-reset", epoch().to_string()),
            ],
        ),
    ]);
    let out = w.run(&["--list", "limited"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(w.github.meta_requests(), 3);
    let stderr = &out.stderr;
    assert!(
        stderr.contains("GitHub's /meta is rate limited (HTTP 429, retry-after); waiting 1.0 s"),
        "{stderr}"
    );
    assert!(
        stderr.contains("rate limited (HTTP 403, x-ratelimit-remaining: 0); waiting"),
        "{stderr}"
    );
    assert_eq!(w.lists.list("limited").unwrap().items.len(), 5);

    w.github.rate_limit_meta(vec![(
        403,
        vec![
            ("x-ratelimit-remaining", "0".to_string()),
            ("x-ratelimit-reset", (epoch() + 3600).to_string()),
        ],
    )]);
    let out = w.run(&["--list", "limited"]).await;
    let stderr = &out.stderr;
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        w.github.meta_requests(),
        4,
        "a limit past the deadline was retried"
    );
    assert!(
        stderr.contains("rate limited (HTTP 403, x-ratelimit-remaining: 0) after 1 attempt(s)")
            && stderr.contains("beyond the 900 s d1r2 waits")
            && stderr.contains("set GITHUB_TOKEN"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_account_s_other_lists_count_against_max_items() {
    let w = World::start(json!({"actions": ["4.148.0.0/16", "13.64.0.0/16", "20.0.0.0/16"]})).await;
    w.lists.add_list("office", "ip", &["52.1.1.1", "52.1.1.2"]);
    w.lists.add_list("hosts", "hostname", &["example.com"]);
    w.lists
        .add_list("redirects", "redirect", &["a", "b", "c", "d", "e", "f"]);
    let over = w
        .run(&["--list", "allow", "--max-items", "5", "--force"])
        .await;
    let stderr = &over.stderr;
    assert_eq!(over.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("3 ranges and the 3 items of the account's other lists exceed the account's list item limit of 5"),
        "{stderr}"
    );
    assert!(
        w.lists.list("allow").is_none(),
        "a list was created before the refusal"
    );

    let (dry, outputs) = w
        .action(&[
            ("INPUT_LIST", "allow"),
            ("INPUT_MAX-ITEMS", "5"),
            ("INPUT_DRY-RUN", "true"),
        ])
        .await;
    assert!(dry.status.success(), "{}", text(&dry));
    assert!(
        text(&dry).contains(
            "would refuse: 3 items and the other lists' 3 make 6, above the account's limit of 5"
        ),
        "{}",
        text(&dry)
    );
    assert!(output_value(&outputs, "firewall-refusal").contains("limit of 5"));

    let out = w.run(&["--list", "allow", "--max-items", "6"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(w.lists.list("allow").unwrap().items.len(), 3);
}
