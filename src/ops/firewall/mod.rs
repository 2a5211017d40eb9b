//! `d1r2 firewall`: keep a Cloudflare IP list equal to GitHub's published ranges.
//!
//! GitHub's `/meta` sections → validated ranges, none of them one an allowlist should never hold
//! → aggregated and fitted to what a list item may hold → a diff against the list and the
//! addresses it would stop allowing → every lockout guard's verdict → one replace-all bulk
//! operation, polled until it completes. A dry run stops after the verdicts, whatever they are.
//! A WAF custom rule can then match `ip.src in $NAME`.

pub(crate) mod bogons;
pub(crate) mod cidr;
pub(crate) mod coverage;
pub(crate) mod github;
pub(crate) mod guards;
pub(crate) mod lists;
#[cfg(test)]
mod python_reference;
pub(crate) mod rules;

use std::collections::BTreeMap;

use crate::error::{Result, bad_input, failed};
use crate::model::report::{Failure, Report};
use crate::remote::cloudflare::Api;
use coverage::Family;
use guards::{Guards, Plan, Refusal, Verdict};

/// The flags of `d1r2 firewall`; each field is the flag of its name, documented (defaults and
/// bounds) where the command line parses it, in `cli/args.rs`.
#[derive(Debug, Clone)]
pub(crate) struct FirewallOptions {
    pub list: String,
    pub sections: Vec<String>,
    pub no_ipv6: bool,
    pub dry_run: bool,
    pub force: bool,
    pub min_entries: usize,
    pub max_removal_ratio: f64,
    pub max_items: usize,
    pub comment: String,
    pub rule: Option<String>,
    pub zone: Option<String>,
    pub rule_action: String,
}

/// `d1r2 firewall`, with the process environment as `env`.
pub(crate) async fn run(args: &FirewallOptions, env: &BTreeMap<String, String>) -> Result<Report> {
    let sections: Vec<String> = args
        .sections
        .iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    github::check_sections(&sections).map_err(|e| bad_input(e.to_string()))?;
    if !(0.0..=1.0).contains(&args.max_removal_ratio) {
        return Err(bad_input("--max-removal-ratio must be between 0 and 1"));
    }
    let rule = match (&args.rule, &args.zone) {
        (Some(expression), Some(zone)) => {
            if !expression.contains(&format!("${}", args.list)) {
                return Err(bad_input(format!(
                    "--rule {expression:?} does not use the list: write `ip.src in ${}` in it",
                    args.list
                )));
            }
            Some(rules::RuleSpec {
                zone: zone.clone(),
                description: rules::description(&args.list),
                expression: expression.clone(),
                action: args.rule_action.clone(),
            })
        }
        _ => None,
    };
    let api = Api::from_env(&|name| env.get(name).filter(|v| !v.trim().is_empty()).cloned())?;
    let lists = lists::Lists::new(api.clone());

    let meta = github::fetch(env, &github::META_POLICY).await?;
    let raw = github::entries(&meta, &sections)?;
    let mut nets = Vec::with_capacity(raw.len());
    for (section, entry) in &raw {
        let net = cidr::parse(entry)
            .map_err(|why| failed(format!("GitHub's /meta section {section}: {why}")))?;
        let net = bogons::judge(net).map_err(|why| {
            failed(format!(
                "GitHub's /meta section {section} holds {entry:?}, {why}: no allowlist should hold it, so this answer is not GitHub's published ranges (check GITHUB_API_URL); nothing changed"
            ))
        })?;
        if !(args.no_ipv6 && matches!(net, ipnet::IpNet::V6(_))) {
            nets.push(net);
        }
    }
    let (wanted, widened) = cidr::fit_for_lists(&nets);

    let found = lists.find(&args.list).await?;
    let current_text = match &found.list {
        Some(list) => lists.items(list).await?,
        None => Vec::new(),
    };
    let current: Vec<ipnet::IpNet> = current_text
        .iter()
        .filter_map(|t| cidr::parse(t).ok())
        .collect();
    let diff = cidr::diff(&current, &wanted);
    let plan = Plan {
        total: diff.total,
        losses: coverage::lost(&current, &wanted),
        other_items: found.other_items,
    };
    let guards = Guards {
        min_entries: args.min_entries,
        max_removal_ratio: args.max_removal_ratio,
        max_items: args.max_items,
        force: args.force,
        ipv6: !args.no_ipv6,
    };
    let verdicts = guards::check(&plan, &guards);
    let blocking = verdicts.iter().find_map(Verdict::blocking).cloned();

    let mut report = Report::new("firewall");
    report
        .output("firewall-added", diff.added.len())
        .output("firewall-removed", diff.removed.len())
        .output("firewall-total", diff.total)
        .output("firewall-diff", diff.lines(usize::MAX).trim_end());
    for family in Family::ALL {
        let loss = plan.losses.of(family);
        let name = family.name().to_ascii_lowercase();
        report
            .output(&format!("firewall-lost-{name}"), loss.lost)
            .output(
                &format!("firewall-lost-{name}-share"),
                format!("{:.4}", loss.share()),
            );
    }
    report.output(
        "firewall-refusal",
        blocking.as_ref().map(Refusal::summary).unwrap_or_default(),
    );
    report
        .row("List", &args.list)
        .row("Sections", sections.join(", "))
        .row(
            "Ranges",
            format!(
                "{} from GitHub, {} after aggregation{}",
                raw.len(),
                diff.total,
                if args.no_ipv6 { " (IPv4 only)" } else { "" }
            ),
        )
        .row("Added", diff.added.len())
        .row("Removed", diff.removed.len())
        .row("Total", diff.total);
    if widened > 0 {
        report.row("IPv6 ranges widened to /64", widened);
    }
    for family in Family::ALL {
        let loss = plan.losses.of(family);
        report.row(
            &format!("{} lost", family.name()),
            format!(
                "{} of {} allowed {} ({})",
                guards::count(loss.lost),
                guards::count(loss.allowed),
                family.units(),
                guards::percent(loss.share())
            ),
        );
    }
    for verdict in &verdicts {
        report.row(
            &format!("Guard: {}", verdict.guard),
            verdict.text(args.dry_run),
        );
    }
    report.detail = diff.lines(200);

    if args.dry_run {
        report.row(
            "Mode",
            if blocking.is_some() {
                "dry run: nothing changed; the change would be refused"
            } else {
                "dry run: nothing changed"
            },
        );
        if let Some(spec) = &rule {
            let change = rules::ensure(&api, spec, true).await?;
            report.row("Custom rule", format!("would be {}", rule_word(change)));
        }
        return Ok(report);
    }
    if let Some(refusal) = blocking {
        report.output("status", "failure");
        let failure = Failure {
            report,
            message: refusal.to_string(),
        };
        return Err(match refusal {
            // The account's limit is a setting to change, not a lockout to confirm.
            Refusal::OverLimit { .. } => bad_input(refusal.to_string()).context(failure),
            _ => failure.into(),
        });
    }
    if diff.is_empty() && found.list.is_some() {
        report.row("Result", "already up to date");
        if let Some(spec) = &rule {
            let change = rules::ensure(&api, spec, false).await?;
            report.row("Custom rule", rule_word(change));
        }
        return Ok(report);
    }
    let list = match found.list {
        Some(list) => list,
        None => {
            lists
                .create(
                    &args.list,
                    &format!("GitHub {} ranges, kept by d1r2", sections.join(", ")),
                )
                .await?
        }
    };
    let items: Vec<String> = wanted.iter().map(|n| n.to_string()).collect();
    lists.replace(&list, &items, &args.comment).await?;
    report.row(
        "Result",
        format!("list {} now holds {} ranges", args.list, items.len()),
    );
    // After the list: Cloudflare refuses a rule that names a list that does not exist.
    if let Some(spec) = &rule {
        let change = rules::ensure(&api, spec, false).await?;
        report.row("Custom rule", rule_word(change));
    }
    Ok(report)
}

fn rule_word(change: rules::RuleChange) -> &'static str {
    match change {
        rules::RuleChange::Created => "created",
        rules::RuleChange::Updated => "updated",
        rules::RuleChange::Unchanged => "unchanged",
    }
}
