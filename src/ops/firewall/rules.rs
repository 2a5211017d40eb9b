//! The WAF custom rule that uses the list, in the zone's `http_request_firewall_custom` phase
//! entry point ruleset (the Rulesets API; the legacy Firewall Rules API is deprecated). The rule
//! is found by its description, so later runs update it rather than add another.

use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use crate::remote::cloudflare::{Api, ApiError};

const PHASE: &str = "http_request_firewall_custom";

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RuleSpec {
    pub zone: String,
    pub description: String,
    pub expression: String,
    pub action: String,
}

/// What happened to the rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum RuleChange {
    Created,
    Updated,
    Unchanged,
}

#[derive(Debug, Deserialize)]
struct Ruleset {
    id: String,
    #[serde(default)]
    rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
struct Rule {
    id: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    expression: String,
    #[serde(default)]
    action: String,
    #[serde(default = "enabled")]
    enabled: bool,
}

fn enabled() -> bool {
    true
}

/// The rule's description: how it is found again.
pub(crate) fn description(list: &str) -> String {
    format!("d1r2 allowlist {list}")
}

/// What `ensure` would do to reach `spec`, given the entry point ruleset's rules (`None` when
/// the zone has no entry point yet).
fn plan(ruleset: Option<&Ruleset>, spec: &RuleSpec) -> (RuleChange, Option<String>) {
    match ruleset.and_then(|r| r.rules.iter().find(|x| x.description == spec.description)) {
        None => (RuleChange::Created, None),
        Some(rule)
            if rule.expression == spec.expression && rule.action == spec.action && rule.enabled =>
        {
            (RuleChange::Unchanged, Some(rule.id.clone()))
        }
        Some(rule) => (RuleChange::Updated, Some(rule.id.clone())),
    }
}

/// Makes the zone's rule match `spec`; with `dry_run`, only says what it would do.
pub(crate) async fn ensure(
    api: &Api,
    spec: &RuleSpec,
    dry_run: bool,
) -> Result<RuleChange, ApiError> {
    let entrypoint = format!("zones/{}/rulesets/phases/{PHASE}/entrypoint", spec.zone);
    let ruleset = match api
        .result::<Ruleset>(
            Method::GET,
            &entrypoint,
            None,
            "reading the zone's custom rules",
        )
        .await
    {
        Ok(r) => Some(r),
        Err(e) if e.status() == Some(404) => None,
        Err(e) => return Err(e),
    };
    let (change, rule_id) = plan(ruleset.as_ref(), spec);
    if dry_run || change == RuleChange::Unchanged {
        return Ok(change);
    }
    let rule = json!({
        "description": spec.description,
        "expression": spec.expression,
        "action": spec.action,
        "enabled": true,
    });
    match (ruleset, rule_id) {
        (None, _) => {
            api.call::<serde_json::Value>(
                Method::PUT,
                &entrypoint,
                Some(&json!({"rules": [rule]})),
                "creating the zone's custom rules",
            )
            .await?;
        }
        (Some(r), None) => {
            api.call::<serde_json::Value>(
                Method::POST,
                &format!("zones/{}/rulesets/{}/rules", spec.zone, r.id),
                Some(&rule),
                "adding the custom rule",
            )
            .await?;
        }
        (Some(r), Some(id)) => {
            api.call::<serde_json::Value>(
                Method::PATCH,
                &format!("zones/{}/rulesets/{}/rules/{id}", spec.zone, r.id),
                Some(&rule),
                "updating the custom rule",
            )
            .await?;
        }
    }
    Ok(change)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_table() {
        let spec = RuleSpec {
            zone: "z".into(),
            description: description("gh"),
            expression: "not ip.src in $gh".into(),
            action: "block".into(),
        };
        let rule = |expression: &str, action: &str, enabled: bool| Rule {
            id: "r1".into(),
            description: description("gh"),
            expression: expression.into(),
            action: action.into(),
            enabled,
        };
        let set = |rules: Vec<Rule>| Ruleset {
            id: "s".into(),
            rules,
        };
        let other = Rule {
            id: "r0".into(),
            description: "someone else's".into(),
            expression: "true".into(),
            action: "log".into(),
            enabled: true,
        };
        for (ruleset, want) in [
            (None, (RuleChange::Created, None)),
            (Some(set(vec![other])), (RuleChange::Created, None)),
            (
                Some(set(vec![rule("not ip.src in $gh", "block", true)])),
                (RuleChange::Unchanged, Some("r1".to_string())),
            ),
            (
                Some(set(vec![rule("old", "block", true)])),
                (RuleChange::Updated, Some("r1".to_string())),
            ),
            (
                Some(set(vec![rule("not ip.src in $gh", "block", false)])),
                (RuleChange::Updated, Some("r1".to_string())),
            ),
        ] {
            assert_eq!(plan(ruleset.as_ref(), &spec), want);
        }
    }
}
