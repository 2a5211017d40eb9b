//! Pure: how much of what a list allows a change would stop allowing.
//!
//! The lockout guard weighs addresses, not items: replacing `4.148.0.0/16` by a wider aggregate
//! that holds it removes an item and loses nothing. Each family is measured in the unit
//! Cloudflare matches: IPv4 in addresses, IPv6 in /64 networks (a longer IPv6 range counts as
//! its /64).

use ipnet::IpNet;

/// An address family, for messages and output names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    V4,
    V6,
}

impl Family {
    pub(crate) const ALL: [Family; 2] = [Family::V4, Family::V6];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    /// What one counted unit is, in the plural.
    pub(crate) fn units(self) -> &'static str {
        match self {
            Family::V4 => "addresses",
            Family::V6 => "/64 networks",
        }
    }
}

/// Of what a list allows today in one family, how much a change stops allowing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Loss {
    /// Units the list allows today.
    pub allowed: u128,
    /// Units of those the new list would not allow.
    pub lost: u128,
}

impl Loss {
    /// The lost share of what is allowed today, 0 to 1; 0 when nothing is allowed.
    pub(crate) fn share(&self) -> f64 {
        if self.allowed == 0 {
            0.0
        } else {
            self.lost as f64 / self.allowed as f64
        }
    }
}

/// The loss of each family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Losses {
    pub v4: Loss,
    pub v6: Loss,
}

impl Losses {
    pub(crate) fn of(&self, family: Family) -> Loss {
        match family {
            Family::V4 => self.v4,
            Family::V6 => self.v6,
        }
    }
}

/// What replacing the ranges `current` by `wanted` stops allowing, per family.
pub(crate) fn lost(current: &[IpNet], wanted: &[IpNet]) -> Losses {
    let measure = |family| {
        let now = spans(current, family);
        let then = spans(wanted, family);
        let allowed = size(&now);
        Loss {
            allowed,
            lost: allowed - overlap(&now, &then),
        }
    };
    Losses {
        v4: measure(Family::V4),
        v6: measure(Family::V6),
    }
}

/// The ranges of one family as sorted, disjoint, inclusive spans of units.
fn spans(nets: &[IpNet], family: Family) -> Vec<(u128, u128)> {
    let mut spans: Vec<(u128, u128)> = nets
        .iter()
        .filter_map(|net| match (net, family) {
            (IpNet::V4(n), Family::V4) => Some((
                u128::from(u32::from(n.network())),
                u128::from(u32::from(n.broadcast())),
            )),
            (IpNet::V6(n), Family::V6) => Some((
                u128::from(n.network()) >> 64,
                u128::from(n.broadcast()) >> 64,
            )),
            _ => None,
        })
        .collect();
    spans.sort_unstable();
    let mut merged: Vec<(u128, u128)> = Vec::with_capacity(spans.len());
    for (start, end) in spans {
        match merged.last_mut() {
            Some(last) if start <= last.1.saturating_add(1) => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

fn size(spans: &[(u128, u128)]) -> u128 {
    spans.iter().map(|(start, end)| end - start + 1).sum()
}

/// Units in both sets of disjoint sorted spans, in one pass over each.
fn overlap(a: &[(u128, u128)], b: &[(u128, u128)]) -> u128 {
    let (mut i, mut j, mut both) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        let start = a[i].0.max(b[j].0);
        let end = a[i].1.min(b[j].1);
        if start <= end {
            both += end - start + 1;
        }
        if a[i].1 < b[j].1 { i += 1 } else { j += 1 }
    }
    both
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(items: &[&str]) -> Vec<IpNet> {
        items
            .iter()
            .map(|s| crate::ops::firewall::cidr::parse(s).unwrap())
            .collect()
    }

    /// (current, wanted, IPv4 (lost, allowed), IPv6 (lost, allowed))
    type Case<'a> = (&'a [&'a str], &'a [&'a str], (u128, u128), (u128, u128));

    #[test]
    fn loss_table() {
        let cases: &[Case] = &[
            // A stale range and a documentation range go; a wider aggregate keeps the /16.
            (
                &["4.148.0.0/16", "192.0.2.0/24", "198.51.100.7"],
                &["4.148.0.0/15", "13.64.0.0/16"],
                (257, 65_793),
                (0, 0),
            ),
            // Unchanged.
            (&["10.0.0.0/24"], &["10.0.0.0/24"], (0, 256), (0, 0)),
            // A split range loses nothing.
            (
                &["10.0.0.0/23"],
                &["10.0.0.0/24", "10.0.1.0/24"],
                (0, 512),
                (0, 0),
            ),
            // Shrunk to a tenth-ish: 9 of 10 /24s go.
            (
                &[
                    "10.0.0.0/24",
                    "10.0.1.0/24",
                    "10.0.2.0/24",
                    "10.0.3.0/24",
                    "10.0.4.0/24",
                    "10.0.5.0/24",
                    "10.0.6.0/24",
                    "10.0.7.0/24",
                    "10.0.8.0/24",
                    "10.0.9.0/24",
                ],
                &["10.0.0.0/24"],
                (2304, 2560),
                (0, 0),
            ),
            // Overlapping and duplicate items are counted once.
            (
                &["10.0.0.0/16", "10.0.1.0/24", "10.0.0.0/16"],
                &[],
                (65_536, 65_536),
                (0, 0),
            ),
            // Everything new, nothing lost.
            (&[], &["10.0.0.0/8"], (0, 0), (0, 0)),
            // IPv6 in /64s: a /48 is 65,536 of them, a /128 counts as its /64.
            (
                &["2001:db8::/48", "2001:db9::1"],
                &["2001:db8::/49"],
                (0, 0),
                (32_769, 65_537),
            ),
            (
                &["2001:db8::/64"],
                &["2001:db8::5", "2001:db8::/128"],
                (0, 0),
                (0, 1),
            ),
            // The whole space: no overflow.
            (
                &["0.0.0.0/0", "::/0"],
                &[],
                (1 << 32, 1 << 32),
                (1 << 64, 1 << 64),
            ),
            (
                &["0.0.0.0/0", "::/0"],
                &["0.0.0.0/0", "::/0"],
                (0, 1 << 32),
                (0, 1 << 64),
            ),
        ];
        for (current, wanted, v4, v6) in cases {
            let got = lost(&nets(current), &nets(wanted));
            assert_eq!(
                (got.v4.lost, got.v4.allowed),
                *v4,
                "IPv4 {current:?} -> {wanted:?}"
            );
            assert_eq!(
                (got.v6.lost, got.v6.allowed),
                *v6,
                "IPv6 {current:?} -> {wanted:?}"
            );
        }
    }

    #[test]
    fn shares() {
        assert_eq!(Loss::default().share(), 0.0);
        let loss = Loss {
            allowed: 65_793,
            lost: 257,
        };
        assert!((loss.share() - 0.003_906).abs() < 1e-6);
        assert_eq!(
            Loss {
                allowed: 4,
                lost: 4
            }
            .share(),
            1.0
        );
    }
}
