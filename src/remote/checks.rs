//! PR check runs: with `report-check: true` and a `GITHUB_TOKEN`, the action publishes what it
//! did as a completed check run on the commit under test, so the result sits on the pull request
//! next to the CI checks (a restore drill that fails shows as a failed check with its cause).
//!
//! A check run that cannot be published is a warning, never the step's failure: the command's own
//! outcome is what the step reports. A transient failure (a 5xx, 429 or 408, honouring
//! `Retry-After`, or a dropped connection) is retried a few times within half a minute; a
//! connection dropped after GitHub took the request can leave two runs of one name on the
//! commit, which GitHub shows as the later one.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::error::Result;
use crate::model::report::Report;
use crate::redact;
use crate::remote::http;
use crate::remote::retry::{self, RetryPolicy, Verdict};

/// A check run is worth a few quick retries, not a step held up for minutes.
const POLICY: RetryPolicy = RetryPolicy {
    max_attempts: 4,
    initial_delay: Duration::from_millis(500),
    max_delay: Duration::from_secs(10),
    deadline: Duration::from_secs(30),
};

/// Why one attempt to create a check run failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CheckRunError {
    #[error("{0}")]
    Transport(String),
    #[error("GitHub answered HTTP {status}: {message}")]
    Status {
        status: u16,
        message: String,
        after: Option<Duration>,
    },
    #[error("GitHub's answer is not a check run: {0}")]
    Decode(String),
}

/// A check run that could not be published: the step's own result stands, this is a warning.
impl crate::error::Classify for CheckRunError {
    fn kind(&self) -> crate::error::Kind {
        match self {
            CheckRunError::Transport(_)
            | CheckRunError::Status { .. }
            | CheckRunError::Decode(_) => crate::error::Kind::Failed,
        }
    }
}

/// A GitHub client that could not be built (a malformed `GITHUB_API_URL`): publishing failed.
impl crate::error::Classify for octocrab::Error {
    fn kind(&self) -> crate::error::Kind {
        crate::error::Kind::Failed
    }
}

impl CheckRunError {
    fn verdict(&self) -> Verdict {
        match self {
            CheckRunError::Transport(_) => Verdict::Retry { after: None },
            CheckRunError::Status { status, after, .. } => {
                http::status_verdict(*status, *after).unwrap_or(Verdict::Fail)
            }
            CheckRunError::Decode(_) => Verdict::Fail,
        }
    }
}

/// The action input that asks for a check run.
pub(crate) const INPUT: &str = "report-check";

/// Where a check run goes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CheckTarget {
    pub api: String,
    pub owner: String,
    pub repo: String,
    pub sha: String,
}

/// Whether the step asked for a check run.
pub(crate) fn wanted(env: &BTreeMap<String, String>) -> bool {
    env.get("INPUT_REPORT-CHECK")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// The commit a check run belongs on: a pull request's head (`GITHUB_SHA` is the merge commit
/// there, which the pull request page does not show), otherwise `GITHUB_SHA`.
pub(crate) fn head_sha(event: Option<&str>, github_sha: Option<&str>) -> Option<String> {
    let from_event = event
        .and_then(|text| serde_json::from_str::<Value>(text).ok())
        .and_then(|e| {
            e["pull_request"]["head"]["sha"]
                .as_str()
                .map(str::to_string)
        });
    from_event.or_else(|| github_sha.map(str::to_string))
}

/// The repository and commit from the runner's environment.
pub(crate) fn target(env: &BTreeMap<String, String>) -> Result<CheckTarget, String> {
    let repository = env
        .get("GITHUB_REPOSITORY")
        .ok_or("GITHUB_REPOSITORY is not set")?;
    let (owner, repo) = repository
        .split_once('/')
        .ok_or_else(|| format!("GITHUB_REPOSITORY {repository:?} is not OWNER/REPO"))?;
    let event = env
        .get("GITHUB_EVENT_PATH")
        .and_then(|p| std::fs::read_to_string(p).ok());
    let sha = head_sha(event.as_deref(), env.get("GITHUB_SHA").map(String::as_str))
        .ok_or("neither the event nor GITHUB_SHA names a commit")?;
    Ok(CheckTarget {
        api: env
            .get("GITHUB_API_URL")
            .cloned()
            .unwrap_or_else(|| "https://api.github.com".to_string()),
        owner: owner.to_string(),
        repo: repo.to_string(),
        sha,
    })
}

/// The check run's title: the command, its status and the headline figures.
pub(crate) fn title(report: &Report) -> String {
    let status = report
        .outputs
        .get("status")
        .map_or("success", String::as_str);
    let mut title = format!("d1r2 {}: {status}", report.command);
    if let Some(error) = report.outputs.get("error") {
        title.push_str(&format!(": {error}"));
    } else if let Some(rows) = report.outputs.get("rows").and_then(|r| r.parse().ok()) {
        title.push_str(&format!(
            ", {}",
            crate::model::report::counted(rows, "row", "rows")
        ));
    }
    // Redacted before the cut, which could leave half a secret no rule recognises.
    redact::text(&title).chars().take(240).collect()
}

/// Publishes `report` as a completed check run (`POST /repos/{owner}/{repo}/check-runs`); returns
/// its id.
pub(crate) async fn publish(target: &CheckTarget, token: &str, report: &Report) -> Result<u64> {
    let client = http::octocrab()
        .base_uri(target.api.as_str())?
        .personal_token(token.to_string())
        .build()?;
    let failed = report.outputs.get("status").is_some_and(|s| s != "success");
    let body = json!({
        "name": format!("d1r2 {}", report.command),
        "head_sha": target.sha,
        "status": "completed",
        "conclusion": if failed { "failure" } else { "success" },
        "output": {
            "title": title(report),
            "summary": redact::text(&crate::model::report::summary_markdown(report)),
        },
    });
    let route = format!("/repos/{}/{}/check-runs", target.owner, target.repo);
    let (result, _) = retry::run(
        &POLICY,
        |_| attempt(&client, &route, &body),
        CheckRunError::verdict,
        |e, wait| {
            tracing::warn!(
                "creating the check run failed ({e}); retrying in {:.1} s",
                wait.as_secs_f64()
            )
        },
    )
    .await;
    Ok(result?)
}

async fn attempt(
    client: &octocrab::Octocrab,
    route: &str,
    body: &Value,
) -> Result<u64, CheckRunError> {
    let response = client
        ._post(route, Some(body))
        .await
        .map_err(|e| CheckRunError::Transport(e.to_string()))?;
    let status = response.status().as_u16();
    let after = http::retry_after(response.headers(), SystemTime::now());
    let text = client
        .body_to_string(response)
        .await
        .map_err(|e| CheckRunError::Transport(e.to_string()))?;
    if !(200..300).contains(&status) {
        let message = http::github_message(&text);
        return Err(CheckRunError::Status {
            status,
            message,
            after,
        });
    }
    serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v["id"].as_u64())
        .ok_or_else(|| CheckRunError::Decode(redact::remote_body(&text, 200)))
}

/// Publishes the check run when the step asked for one, warning (not failing) when it cannot.
pub(crate) fn publish_if_wanted(env: &BTreeMap<String, String>, report: &Report) {
    if !wanted(env) {
        return;
    }
    let Some(token) = env.get("GITHUB_TOKEN").filter(|t| !t.is_empty()) else {
        println!(
            "::warning::report-check needs GITHUB_TOKEN (with checks: write); no check run published"
        );
        return;
    };
    let outcome = target(env)
        .map_err(crate::error::failed)
        .and_then(|target| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(publish(&target, token, report))
        });
    match outcome {
        Ok(id) => println!("published check run {id}"),
        Err(e) => println!(
            "::warning::could not publish the check run: {}",
            redact::command_data(&redact::controls(&redact::text(&e.one_line())))
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_sha_table() {
        let pr = r#"{"pull_request": {"head": {"sha": "abc123"}}}"#;
        for (event, github_sha, want) in [
            (Some(pr), Some("merge"), Some("abc123")),
            (
                Some(r#"{"ref": "refs/heads/main"}"#),
                Some("def"),
                Some("def"),
            ),
            (Some("not json"), Some("def"), Some("def")),
            (None, Some("def"), Some("def")),
            (None, None, None),
        ] {
            assert_eq!(head_sha(event, github_sha).as_deref(), want, "{event:?}");
        }
    }

    #[test]
    fn titles_table() {
        let mut ok = Report::new("backup");
        ok.output("rows", 42);
        let mut failed = Report::new("drill");
        failed
            .output("status", "failure")
            .output("error", "migration 0003 fails");
        for (report, want) in [
            (ok, "d1r2 backup: success, 42 rows"),
            (failed, "d1r2 drill: failure: migration 0003 fails"),
            (Report::new("list"), "d1r2 list: success"),
        ] {
            assert_eq!(title(&report), want);
        }
    }

    #[test]
    fn targets_from_the_environment() {
        let env: BTreeMap<String, String> = [
            ("GITHUB_REPOSITORY", "acme/app"),
            ("GITHUB_SHA", "cafe"),
            ("GITHUB_API_URL", "http://127.0.0.1:1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            target(&env).unwrap(),
            CheckTarget {
                api: "http://127.0.0.1:1".into(),
                owner: "acme".into(),
                repo: "app".into(),
                sha: "cafe".into()
            }
        );
        let mut bad = env.clone();
        bad.insert("GITHUB_REPOSITORY".into(), "noslash".into());
        assert!(target(&bad).is_err());
        assert!(!wanted(&env));
    }
}
