//! Pure: parsing, aggregating and diffing address ranges, and the lockout guards.

use std::collections::BTreeSet;

use ipnet::IpNet;

/// Widest IPv4 prefix a Cloudflare IP list item may have; wider ranges are split.
pub const V4_MIN_PREFIX: u8 = 8;
/// Widest IPv6 prefix a Cloudflare IP list item may have; wider ranges are split.
pub const V6_MIN_PREFIX: u8 = 12;
/// Cloudflare matches IPv6 list items at /64 granularity: a longer prefix is widened to its /64.
pub const V6_MAX_PREFIX: u8 = 64;

/// One entry: `192.0.2.0/24`, `192.0.2.1` (a /32), `2001:db8::/48` or `2001:db8::1` (a /128).
/// Host bits are cleared (`192.0.2.1/24` is `192.0.2.0/24`), as Python's
/// `ip_network(strict=False)` does.
pub fn parse(entry: &str) -> Result<IpNet, String> {
    let text = entry.trim();
    let net = if text.contains('/') {
        text.parse::<IpNet>().ok()
    } else {
        text.parse::<std::net::IpAddr>().ok().map(IpNet::from)
    };
    net.map(|n| n.trunc())
        .ok_or_else(|| format!("{entry:?} is not an IP address or CIDR range"))
}

/// The smallest set of CIDR ranges covering exactly the addresses of `nets`: duplicates and
/// ranges inside others dropped, adjacent ranges merged. Sorted, IPv4 first.
pub fn aggregate(nets: &[IpNet]) -> Vec<IpNet> {
    let mut out = IpNet::aggregate(&nets.to_vec());
    out.sort();
    out
}

/// The ranges as Cloudflare IP list items: IPv6 ranges longer than /64 widened to their /64
/// (the granularity Cloudflare matches), ranges wider than a list item allows split, the result
/// aggregated. Returns the items and how many ranges were widened.
pub fn fit_for_lists(nets: &[IpNet]) -> (Vec<IpNet>, usize) {
    let mut widened = 0;
    let fitted: Vec<IpNet> = nets
        .iter()
        .map(|n| match n {
            IpNet::V6(v6) if v6.prefix_len() > V6_MAX_PREFIX => {
                widened += 1;
                IpNet::new(n.addr(), V6_MAX_PREFIX)
                    .expect("/64 is a valid prefix")
                    .trunc()
            }
            other => *other,
        })
        .collect();
    let mut out = Vec::new();
    for net in aggregate(&fitted) {
        let min = match net {
            IpNet::V4(_) => V4_MIN_PREFIX,
            IpNet::V6(_) => V6_MIN_PREFIX,
        };
        if net.prefix_len() < min {
            out.extend(net.subnets(min).expect("a longer prefix is valid"));
        } else {
            out.push(net);
        }
    }
    (out, widened)
}

/// What replacing `current` by `wanted` changes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Diff {
    pub added: Vec<IpNet>,
    pub removed: Vec<IpNet>,
    pub total: usize,
}

pub fn diff(current: &[IpNet], wanted: &[IpNet]) -> Diff {
    let current: BTreeSet<IpNet> = current.iter().copied().collect();
    let wanted: BTreeSet<IpNet> = wanted.iter().copied().collect();
    Diff {
        added: wanted.difference(&current).copied().collect(),
        removed: current.difference(&wanted).copied().collect(),
        total: wanted.len(),
    }
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }

    /// `+ range` and `- range` lines, at most `limit` of them, then how many more.
    pub fn lines(&self, limit: usize) -> String {
        let all: Vec<String> = self
            .added
            .iter()
            .map(|n| format!("+ {n}"))
            .chain(self.removed.iter().map(|n| format!("- {n}")))
            .collect();
        let mut text: String = all.iter().take(limit).map(|l| format!("{l}\n")).collect();
        if all.len() > limit {
            text.push_str(&format!("… and {} more\n", all.len() - limit));
        }
        text
    }
}

/// The limits a change must respect.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Guards {
    pub min_entries: usize,
    pub max_removal_ratio: f64,
    pub max_items: usize,
    pub force: bool,
}

/// Why a change is refused. `--force` overrides the first three; the item limit is Cloudflare's
/// and cannot be overridden.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "refusing to empty the list: GitHub's ranges came back empty (use --force to apply anyway)"
    )]
    Empty,
    #[error(
        "refusing to apply {got} ranges, fewer than --min-entries {min} (use --force to apply anyway)"
    )]
    TooFew { got: usize, min: usize },
    #[error(
        "refusing to remove {removed} of the list's {current} items ({:.0}%, above --max-removal-ratio {ratio}); use --force to apply anyway",
        100.0 * *removed as f64 / *current as f64
    )]
    TooManyRemoved {
        removed: usize,
        current: usize,
        ratio: f64,
    },
    #[error(
        "{wanted} ranges exceed the list item limit of {max} (--max-items); select fewer --sections or drop IPv6 with --no-ipv6"
    )]
    OverLimit { wanted: usize, max: usize },
}

pub fn check(current: usize, diff: &Diff, guards: &Guards) -> Result<(), Refusal> {
    if diff.total > guards.max_items {
        return Err(Refusal::OverLimit {
            wanted: diff.total,
            max: guards.max_items,
        });
    }
    if guards.force {
        return Ok(());
    }
    if diff.total == 0 {
        return Err(Refusal::Empty);
    }
    if diff.total < guards.min_entries {
        return Err(Refusal::TooFew {
            got: diff.total,
            min: guards.min_entries,
        });
    }
    if current > 0 && diff.removed.len() as f64 / current as f64 > guards.max_removal_ratio {
        return Err(Refusal::TooManyRemoved {
            removed: diff.removed.len(),
            current,
            ratio: guards.max_removal_ratio,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(items: &[&str]) -> Vec<IpNet> {
        items.iter().map(|s| parse(s).unwrap()).collect()
    }

    fn strings(nets: &[IpNet]) -> Vec<String> {
        nets.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn parsing_table() {
        for (text, want) in [
            ("192.0.2.0/24", Some("192.0.2.0/24")),
            (" 192.0.2.7 ", Some("192.0.2.7/32")),
            ("192.0.2.7/24", Some("192.0.2.0/24")),
            ("2001:db8::/32", Some("2001:db8::/32")),
            ("2001:db8::1", Some("2001:db8::1/128")),
            ("0.0.0.0/0", Some("0.0.0.0/0")),
            ("192.0.2.0/33", None),
            ("300.0.0.1", None),
            ("github.com", None),
            ("", None),
            ("10.0.0.0/", None),
        ] {
            assert_eq!(
                parse(text).ok().map(|n| n.to_string()),
                want.map(str::to_string),
                "{text}"
            );
        }
        assert!(parse("not-an-ip").unwrap_err().contains("not-an-ip"));
    }

    #[test]
    fn aggregation_table() {
        for (input, want) in [
            (vec!["10.0.0.0/24", "10.0.1.0/24"], vec!["10.0.0.0/23"]),
            (vec!["10.0.0.0/24", "10.0.0.0/24"], vec!["10.0.0.0/24"]),
            (vec!["10.0.0.0/16", "10.0.3.0/24"], vec!["10.0.0.0/16"]),
            (
                vec!["10.0.1.0/24", "10.0.2.0/24"],
                vec!["10.0.1.0/24", "10.0.2.0/24"],
            ),
            (
                vec!["10.0.0.0/25", "10.0.0.128/25", "10.0.1.0/24", "10.0.2.0/23"],
                vec!["10.0.0.0/22"],
            ),
            (
                vec!["2001:db8::/33", "2001:db8:8000::/33", "192.0.2.1"],
                vec!["192.0.2.1/32", "2001:db8::/32"],
            ),
            (vec![], vec![]),
        ] {
            assert_eq!(strings(&aggregate(&nets(&input))), want, "{input:?}");
        }
    }

    #[test]
    fn fitting_for_cloudflare_lists() {
        let (fitted, widened) = fit_for_lists(&nets(&[
            "6.0.0.0/7",
            "2001:db8::1",
            "2001:db8::2",
            "2001:db8:0:1::/64",
            "2c00::/11",
        ]));
        assert_eq!(widened, 2);
        assert_eq!(
            strings(&fitted),
            [
                "6.0.0.0/8",
                "7.0.0.0/8",
                "2001:db8::/63",
                "2c00::/12",
                "2c10::/12",
            ]
        );
    }

    #[test]
    fn diffs_and_guards_table() {
        let current = nets(&["10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24", "10.0.3.0/24"]);
        let guards = Guards {
            min_entries: 2,
            max_removal_ratio: 0.5,
            max_items: 10,
            force: false,
        };
        let d = diff(
            &current,
            &nets(&["10.0.0.0/24", "10.0.9.0/24", "10.0.1.0/24"]),
        );
        assert_eq!(strings(&d.added), ["10.0.9.0/24"]);
        assert_eq!(strings(&d.removed), ["10.0.2.0/24", "10.0.3.0/24"]);
        assert_eq!(d.total, 3);
        assert_eq!(check(4, &d, &guards), Ok(()));
        assert_eq!(d.lines(2), "+ 10.0.9.0/24\n- 10.0.2.0/24\n… and 1 more\n");

        let cases: Vec<(Vec<&str>, Guards, Option<&str>)> = vec![
            (vec![], guards, Some("Empty")),
            (vec!["10.0.0.0/24"], guards, Some("TooFew")),
            (
                vec!["10.0.0.0/24", "10.0.9.0/24"],
                guards,
                Some("TooManyRemoved"),
            ),
            (
                vec!["10.0.0.0/24", "10.0.9.0/24"],
                Guards {
                    force: true,
                    ..guards
                },
                None,
            ),
            (
                vec![],
                Guards {
                    force: true,
                    ..guards
                },
                None,
            ),
            (
                vec!["10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24"],
                Guards {
                    max_items: 2,
                    force: true,
                    ..guards
                },
                Some("OverLimit"),
            ),
        ];
        for (wanted, g, refusal) in cases {
            let got = check(4, &diff(&current, &nets(&wanted)), &g)
                .err()
                .map(|r| format!("{r:?}"));
            assert_eq!(
                got.as_deref().map(|s| s.split([' ', '{']).next().unwrap()),
                refusal,
                "{wanted:?} {g:?}"
            );
        }
        // A list that starts empty can be filled.
        assert_eq!(check(0, &diff(&[], &current), &guards), Ok(()));
    }
}
