//! Pure: parsing, aggregating and diffing address ranges.

use std::collections::BTreeSet;

use ipnet::IpNet;

/// Widest IPv4 prefix a Cloudflare IP list item may have. No published range is wider (see
/// [`super::bogons`]), but neighbours can aggregate into one that is, and it is split again.
pub(crate) const V4_MIN_PREFIX: u8 = 8;
/// Widest IPv6 prefix a Cloudflare IP list item may have; wider aggregates are split.
pub(crate) const V6_MIN_PREFIX: u8 = 12;
/// Cloudflare matches IPv6 list items at /64 granularity: a longer prefix is widened to its /64.
pub(crate) const V6_MAX_PREFIX: u8 = 64;

/// One entry: `192.0.2.0/24`, `192.0.2.1` (a /32), `2001:db8::/48` or `2001:db8::1` (a /128).
/// Host bits are cleared (`192.0.2.1/24` is `192.0.2.0/24`), as Python's
/// `ip_network(strict=False)` does.
pub(crate) fn parse(entry: &str) -> Result<IpNet, String> {
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
pub(crate) fn aggregate(nets: &[IpNet]) -> Vec<IpNet> {
    let mut out = IpNet::aggregate(&nets.to_vec());
    out.sort();
    out
}

/// The ranges as Cloudflare IP list items: IPv6 ranges longer than /64 widened to their /64
/// (the granularity Cloudflare matches), the result aggregated, and aggregates wider than a list
/// item allows split. Returns the items and how many ranges were widened.
pub(crate) fn fit_for_lists(nets: &[IpNet]) -> (Vec<IpNet>, usize) {
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
pub(crate) struct Diff {
    pub added: Vec<IpNet>,
    pub removed: Vec<IpNet>,
    pub total: usize,
}

pub(crate) fn diff(current: &[IpNet], wanted: &[IpNet]) -> Diff {
    let current: BTreeSet<IpNet> = current.iter().copied().collect();
    let wanted: BTreeSet<IpNet> = wanted.iter().copied().collect();
    Diff {
        added: wanted.difference(&current).copied().collect(),
        removed: current.difference(&wanted).copied().collect(),
        total: wanted.len(),
    }
}

impl Diff {
    pub(crate) fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }

    /// `+ range` and `- range` lines, at most `limit` of them, then how many more.
    pub(crate) fn lines(&self, limit: usize) -> String {
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
        // Neighbours that aggregate wider than a list item allows are split again.
        let (fitted, widened) = fit_for_lists(&nets(&[
            "6.0.0.0/8",
            "7.0.0.0/9",
            "7.128.0.0/9",
            "2001:db8::1",
            "2001:db8::2",
            "2001:db8:0:1::/64",
            "2c00::/12",
            "2c10::/13",
            "2c18::/13",
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
    fn diffs_table() {
        let current = nets(&["10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24", "10.0.3.0/24"]);
        let d = diff(
            &current,
            &nets(&["10.0.0.0/24", "10.0.9.0/24", "10.0.1.0/24"]),
        );
        assert_eq!(strings(&d.added), ["10.0.9.0/24"]);
        assert_eq!(strings(&d.removed), ["10.0.2.0/24", "10.0.3.0/24"]);
        assert_eq!(d.total, 3);
        assert!(!d.is_empty());
        assert_eq!(d.lines(2), "+ 10.0.9.0/24\n- 10.0.2.0/24\n… and 1 more\n");
        assert!(diff(&current, &current).is_empty());
    }
}
