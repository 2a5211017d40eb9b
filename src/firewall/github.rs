//! GitHub's published IP ranges: `GET /meta` (there is no `/meta/actions/...`), read with
//! octocrab at `GITHUB_API_URL` (GitHub Enterprise Server sets it), with `GITHUB_TOKEN` when
//! present for the higher rate limit. Retried with the shared policy.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::retry::{self, RetryPolicy, Verdict};

/// The `/meta` sections that hold address ranges.
pub const SECTIONS: [&str; 11] = [
    "hooks",
    "web",
    "api",
    "git",
    "packages",
    "pages",
    "importer",
    "actions",
    "actions_macos",
    "dependabot",
    "copilot",
];

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("unknown --sections {name:?}; one of {all}", name = .0, all = SECTIONS.join(", "))]
    UnknownSection(String),
    #[error("GitHub's /meta has no {0:?} section (this GitHub may not publish it)")]
    MissingSection(String),
    #[error("GitHub's /meta section {section} holds {value}, not a list of ranges")]
    NotAList { section: String, value: String },
    #[error("reading GitHub's /meta: {0}")]
    Api(String),
}

impl MetaError {
    pub fn is_bad_input(&self) -> bool {
        matches!(self, MetaError::UnknownSection(_))
    }
}

/// Checks section names before any request.
pub fn check_sections(sections: &[String]) -> Result<(), MetaError> {
    for s in sections {
        if !SECTIONS.contains(&s.as_str()) {
            return Err(MetaError::UnknownSection(s.clone()));
        }
    }
    Ok(())
}

/// The raw entries of `sections` in a `/meta` document, each with the section it came from.
pub fn entries(meta: &Value, sections: &[String]) -> Result<Vec<(String, String)>, MetaError> {
    let mut out = Vec::new();
    for section in sections {
        let value = meta
            .get(section)
            .ok_or_else(|| MetaError::MissingSection(section.clone()))?;
        let items = value.as_array().ok_or_else(|| MetaError::NotAList {
            section: section.clone(),
            value: value.to_string().chars().take(60).collect(),
        })?;
        for item in items {
            let text = item
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| item.to_string());
            out.push((section.clone(), text));
        }
    }
    Ok(out)
}

/// Fetches `/meta`.
pub async fn fetch(
    env: &BTreeMap<String, String>,
    policy: &RetryPolicy,
) -> Result<Value, MetaError> {
    let base = env
        .get("GITHUB_API_URL")
        .filter(|u| !u.is_empty())
        .cloned()
        .unwrap_or_else(|| "https://api.github.com".to_string());
    let mut builder = octocrab::Octocrab::builder()
        .base_uri(base.as_str())
        .map_err(|e| MetaError::Api(format!("GITHUB_API_URL {base:?}: {e}")))?;
    if let Some(token) = env.get("GITHUB_TOKEN").filter(|t| !t.is_empty()) {
        builder = builder.personal_token(token.clone());
    }
    let client = builder.build().map_err(|e| MetaError::Api(e.to_string()))?;
    let (result, _) = retry::run(
        policy,
        |_| client.get::<Value, _, ()>("/meta", None),
        |e: &octocrab::Error| match e {
            octocrab::Error::GitHub { source, .. } => {
                let status = source.status_code.as_u16();
                if retry::is_transient_status(status) {
                    Verdict::Retry { after: None }
                } else {
                    Verdict::Fail
                }
            }
            _ => Verdict::Retry { after: None },
        },
        |e, wait| {
            tracing::warn!(
                "reading GitHub's /meta: {e}; retrying in {:.1} s",
                wait.as_secs_f64()
            )
        },
    )
    .await;
    result.map_err(|e| match e {
        octocrab::Error::GitHub { source, .. } => MetaError::Api(format!(
            "HTTP {}: {}",
            source.status_code.as_u16(),
            source.message
        )),
        other => MetaError::Api(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_and_entries() {
        let meta: Value = serde_json::json!({
            "verifiable_password_authentication": false,
            "hooks": ["192.30.252.0/22", "2a0a:a440::/29"],
            "actions": ["4.148.0.0/16"],
            "domains": {"actions": ["github.com"]},
        });
        let pick = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            entries(&meta, &pick(&["hooks", "actions"])).unwrap(),
            [
                ("hooks".to_string(), "192.30.252.0/22".to_string()),
                ("hooks".to_string(), "2a0a:a440::/29".to_string()),
                ("actions".to_string(), "4.148.0.0/16".to_string()),
            ]
        );
        assert!(matches!(
            entries(&meta, &pick(&["copilot"])),
            Err(MetaError::MissingSection(_))
        ));
        assert!(check_sections(&pick(&["actions", "copilot"])).is_ok());
        let err = check_sections(&pick(&["domains"])).unwrap_err();
        assert!(err.is_bad_input());
        let meta = serde_json::json!({"web": "oops"});
        assert!(matches!(
            entries(&meta, &pick(&["web"])),
            Err(MetaError::NotAList { .. })
        ));
    }
}
