//! Pure: the ranges no allowlist of GitHub's runners should ever hold.
//!
//! An allowlist guards an endpoint; a range that is not a public network's (a private range, a
//! documentation prefix, a tunnel's relay space) or one so wide it lets half the internet in can
//! only come from a `/meta` answer that is not GitHub's (a proxy's error page parsed as ranges,
//! a misconfigured `GITHUB_API_URL`). Such an entry fails the run whatever `--force` says.
//!
//! IPv4-mapped IPv6 ranges (`::ffff:a.b.c.d/n`) are taken as the IPv4 range they map, and judged
//! as that range: Cloudflare sees an IPv4 client's address as IPv4, so only the IPv4 form can
//! match it, and widening the mapped form to its /64 would allow `::/64`.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// The widest IPv4 range accepted as published.
pub(crate) const V4_WIDEST: u8 = 8;
/// The widest IPv6 range accepted as published.
pub(crate) const V6_WIDEST: u8 = 16;

/// IPv4 ranges of the IANA special-purpose registry (RFC 6890 and successors) and the reserved
/// space: none is a public network's address.
const V4_SPECIAL: [(&str, &str); 15] = [
    ("0.0.0.0/8", "unspecified (\"this network\")"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared address space (carrier-grade NAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation (TEST-NET-1)"),
    ("192.88.99.0/24", "6to4 relay anycast (deprecated)"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation (TEST-NET-2)"),
    ("203.0.113.0/24", "documentation (TEST-NET-3)"),
    ("224.0.0.0/4", "multicast"),
    (
        "240.0.0.0/4",
        "reserved (and the limited broadcast address)",
    ),
];

/// IPv6 ranges outside the global unicast space (named for a clearer message), and the
/// special-purpose ranges inside it: tunnels whose addresses stand for someone else's IPv4
/// address (Teredo, 6to4), documentation, benchmarking and ORCHID identifiers.
const V6_SPECIAL: [(&str, &str); 13] = [
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("64:ff9b::/96", "NAT64 translation"),
    ("64:ff9b:1::/48", "NAT64 translation (local use)"),
    ("100::/64", "discard-only"),
    ("fc00::/7", "unique local (private)"),
    ("fe80::/10", "link-local"),
    ("ff00::/8", "multicast"),
    (
        "2001::/23",
        "IETF protocol assignments (Teredo, benchmarking, ORCHID)",
    ),
    ("2001:db8::/32", "documentation"),
    ("2002::/16", "6to4 (deprecated)"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "SRv6 segment identifiers"),
];

/// Why a published range cannot be allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unfit {
    /// Wider than [`V4_WIDEST`] or [`V6_WIDEST`].
    TooWide { widest: u8 },
    /// Overlaps a special-purpose range: what kind, and the range.
    Special { kind: &'static str, range: IpNet },
    /// IPv6 outside 2000::/3, the only space IANA allocates for global unicast.
    NotGlobalUnicast,
}

impl std::fmt::Display for Unfit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unfit::TooWide { widest } => write!(f, "wider than /{widest}"),
            Unfit::Special { kind, range } => write!(f, "{kind} ({range})"),
            Unfit::NotGlobalUnicast => f.write_str("outside the global unicast space 2000::/3"),
        }
    }
}

/// The range to allow for a published `net` (an IPv4-mapped range as its IPv4 range), or why
/// no allowlist should hold it. A range is refused when it overlaps a special-purpose range
/// either way: inside one, or holding one.
pub(crate) fn judge(net: IpNet) -> Result<IpNet, Unfit> {
    match net {
        IpNet::V4(v4) => judge_v4(v4).map(IpNet::V4),
        IpNet::V6(v6) => match mapped_v4(v6) {
            Some(v4) => judge_v4(v4).map(IpNet::V4),
            None => judge_v6(v6).map(IpNet::V6),
        },
    }
}

/// The IPv4 range an IPv4-mapped IPv6 range (`::ffff:0:0/96` and longer) stands for.
fn mapped_v4(net: Ipv6Net) -> Option<Ipv4Net> {
    let v4: Ipv4Addr = net.network().to_ipv4_mapped()?;
    (net.prefix_len() >= 96)
        .then(|| Ipv4Net::new(v4, net.prefix_len() - 96).expect("at most 32 bits"))
}

fn judge_v4(net: Ipv4Net) -> Result<Ipv4Net, Unfit> {
    if net.prefix_len() < V4_WIDEST {
        return Err(Unfit::TooWide { widest: V4_WIDEST });
    }
    special(IpNet::V4(net), &V4_SPECIAL)?;
    Ok(net)
}

fn judge_v6(net: Ipv6Net) -> Result<Ipv6Net, Unfit> {
    if net.prefix_len() < V6_WIDEST {
        return Err(Unfit::TooWide { widest: V6_WIDEST });
    }
    special(IpNet::V6(net), &V6_SPECIAL)?;
    let global: Ipv6Net =
        Ipv6Net::new(Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0), 3).expect("a valid prefix");
    if !global.contains(&net) {
        return Err(Unfit::NotGlobalUnicast);
    }
    Ok(net)
}

fn special(net: IpNet, table: &[(&str, &'static str)]) -> Result<(), Unfit> {
    for (text, kind) in table {
        let range: IpNet = text.parse().expect("the table holds valid ranges");
        if range.contains(&net) || net.contains(&range) {
            return Err(Unfit::Special { kind, range });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> IpNet {
        crate::ops::firewall::cidr::parse(text).unwrap()
    }

    #[test]
    fn judgement_table() {
        // (published, Ok(allowed) or Err(the start of the reason))
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("4.148.0.0/16", Ok("4.148.0.0/16")),
            ("20.1.2.3", Ok("20.1.2.3/32")),
            ("13.0.0.0/8", Ok("13.0.0.0/8")),
            ("192.30.252.0/22", Ok("192.30.252.0/22")),
            ("2a0a:a440::/29", Ok("2a0a:a440::/29")),
            ("2603:1030:0:3::3ff", Ok("2603:1030:0:3::3ff/128")),
            ("2c0f::/16", Ok("2c0f::/16")),
            ("::ffff:4.148.0.0/112", Ok("4.148.0.0/16")),
            ("::ffff:20.1.2.3", Ok("20.1.2.3/32")),
            ("0.0.0.0/0", Err("wider than /8")),
            ("128.0.0.0/1", Err("wider than /8")),
            ("6.0.0.0/7", Err("wider than /8")),
            ("::/0", Err("wider than /16")),
            ("2000::/3", Err("wider than /16")),
            ("2a00::/15", Err("wider than /16")),
            ("::ffff:0:0/96", Err("wider than /8")),
            ("::ffff:10.1.0.0/112", Err("private")),
            ("0.0.0.0", Err("unspecified")),
            ("10.1.2.0/24", Err("private")),
            ("172.20.0.0/16", Err("private")),
            ("192.168.1.1", Err("private")),
            ("100.64.0.0/10", Err("shared address space")),
            ("100.127.255.0/24", Err("shared address space")),
            ("127.0.0.1", Err("loopback")),
            ("169.254.169.254", Err("link-local")),
            ("192.0.0.0/29", Err("IETF")),
            ("192.0.2.0/24", Err("documentation")),
            ("198.51.100.7", Err("documentation")),
            ("203.0.113.0/25", Err("documentation")),
            ("192.88.99.1", Err("6to4")),
            ("198.19.0.0/16", Err("benchmarking")),
            ("224.0.0.251", Err("multicast")),
            ("239.0.0.0/8", Err("multicast")),
            ("240.0.0.0/8", Err("reserved")),
            ("255.255.255.255", Err("reserved")),
            // Holding a special range is as bad as being inside one.
            ("192.0.0.0/8", Err("IETF")),
            ("100.0.0.0/8", Err("shared address space")),
            ("::", Err("unspecified")),
            ("::1", Err("loopback")),
            ("fe80::/64", Err("link-local")),
            ("fd00::/64", Err("unique local")),
            ("ff02::1", Err("multicast")),
            ("64:ff9b::/96", Err("NAT64")),
            ("2001:db8:1::/48", Err("documentation")),
            ("3fff:1::/32", Err("documentation")),
            ("2001::/32", Err("IETF")),
            ("2001:0:4136:e378::/64", Err("IETF")),
            ("2002:c000:204::/48", Err("6to4")),
            ("4000::/16", Err("outside the global unicast")),
            ("::a00:1/128", Err("outside the global unicast")),
        ];
        for (published, want) in cases {
            let got = judge(net(published))
                .map(|n| n.to_string())
                .map_err(|e| e.to_string());
            match (want, &got) {
                (Ok(w), Ok(g)) => assert_eq!(g, w, "{published}"),
                (Err(w), Err(g)) => assert!(g.starts_with(w), "{published}: {g}"),
                _ => panic!("{published}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn the_reason_names_the_special_range() {
        assert_eq!(
            judge(net("10.1.2.0/24")).unwrap_err().to_string(),
            "private (10.0.0.0/8)"
        );
    }
}
