//! Range aggregation and the addresses a change loses, against references: Python's
//! `ipaddress.collapse_addresses` on generated inputs, and properties (exactly the same
//! addresses, disjoint, nothing left to merge).

use super::cidr::{aggregate, parse};
use super::coverage::lost;
use ipnet::IpNet;
use proptest::prelude::*;
use proptest::strategy::ValueTree;

/// An IPv4 range in a small space, so overlaps and neighbours are common.
fn v4() -> impl Strategy<Value = IpNet> {
    (0u32..4096, 20u8..=32).prop_map(|(offset, prefix)| {
        let addr = std::net::Ipv4Addr::from(0x0a00_0000 + offset * 16);
        IpNet::new(addr.into(), prefix).unwrap().trunc()
    })
}

fn v6() -> impl Strategy<Value = IpNet> {
    (0u128..4096, 112u8..=128).prop_map(|(offset, prefix)| {
        let addr = std::net::Ipv6Addr::from((0x2001_0db8_u128 << 96) | (offset * 16));
        IpNet::new(addr.into(), prefix).unwrap().trunc()
    })
}

/// Inclusive address intervals of `nets`, merged.
fn union(nets: &[IpNet]) -> Vec<(bool, u128, u128)> {
    let mut spans: Vec<(bool, u128, u128)> = nets
        .iter()
        .map(|n| match n {
            IpNet::V4(n) => (
                false,
                u32::from(n.network()) as u128,
                u32::from(n.broadcast()) as u128,
            ),
            IpNet::V6(n) => (true, u128::from(n.network()), u128::from(n.broadcast())),
        })
        .collect();
    spans.sort();
    let mut merged: Vec<(bool, u128, u128)> = Vec::new();
    for (v6, start, end) in spans {
        match merged.last_mut() {
            Some(last) if last.0 == v6 && start <= last.2.saturating_add(1) => {
                last.2 = last.2.max(end)
            }
            _ => merged.push((v6, start, end)),
        }
    }
    merged
}

proptest! {
    #[test]
    fn aggregation_covers_exactly_the_same_addresses(
        nets in prop::collection::vec(prop_oneof![v4(), v6()], 0..60)
    ) {
        let out = aggregate(&nets);
        prop_assert_eq!(union(&out), union(&nets));
        for (i, a) in out.iter().enumerate() {
            for b in &out[i + 1..] {
                prop_assert!(!a.contains(b) && !b.contains(a), "{} and {} overlap", a, b);
                // Minimal: no two ranges are the halves of one larger range.
                if a.prefix_len() == b.prefix_len() && a.prefix_len() > 0 {
                    prop_assert_ne!(a.supernet(), b.supernet(), "{} and {} should merge", a, b);
                }
            }
        }
    }
}

#[test]
fn aggregation_equals_pythons_collapse_addresses() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = prop::collection::vec(prop_oneof![v4(), v6()], 0..40);
    let mut cases = Vec::new();
    for _ in 0..300 {
        cases.push(strategy.new_tree(&mut runner).unwrap().current());
    }
    let input: Vec<Vec<String>> = cases
        .iter()
        .map(|c| c.iter().map(|n| n.to_string()).collect())
        .collect();
    let script = r#"
import ipaddress, json, sys
out = []
for case in json.load(sys.stdin):
    nets = [ipaddress.ip_network(n) for n in case]
    v4 = [n for n in nets if n.version == 4]
    v6 = [n for n in nets if n.version == 6]
    out.append([str(n) for n in ipaddress.collapse_addresses(v4)] + [str(n) for n in ipaddress.collapse_addresses(v6)])
json.dump(out, sys.stdout)
"#;
    let python: Vec<Vec<String>> = python_reference(script, &input);
    for (case, want) in cases.iter().zip(python) {
        let got: Vec<String> = aggregate(case).iter().map(|n| n.to_string()).collect();
        let want: Vec<String> = want.iter().map(|n| parse(n).unwrap().to_string()).collect();
        assert_eq!(got, want, "input {case:?}");
    }
}

/// IPv6 ranges from /40 to /128 in a small space, so that /64 widening and overlaps are common.
fn v6_wide() -> impl Strategy<Value = IpNet> {
    (0u128..64, 40u8..=128).prop_map(|(offset, prefix)| {
        let addr = std::net::Ipv6Addr::from((0x2001_0db8_u128 << 96) | (offset << 72));
        IpNet::new(addr.into(), prefix).unwrap().trunc()
    })
}

#[test]
fn lost_coverage_equals_pythons_count() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let side = prop::collection::vec(prop_oneof![v4(), v6_wide()], 0..30);
    let mut cases = Vec::new();
    for _ in 0..300 {
        let current = side.new_tree(&mut runner).unwrap().current();
        let wanted = side.new_tree(&mut runner).unwrap().current();
        cases.push((current, wanted));
    }
    let input: Vec<(Vec<String>, Vec<String>)> = cases
        .iter()
        .map(|(c, w)| {
            (
                c.iter().map(|n| n.to_string()).collect(),
                w.iter().map(|n| n.to_string()).collect(),
            )
        })
        .collect();
    // Counted another way: collapse each side, widen IPv6 to /64 units, and add up the nested
    // pairs (two CIDR ranges are either disjoint or one holds the other).
    let script = r#"
import ipaddress, json, sys
def units(nets, version):
    out = []
    for n in nets:
        if n.version != version:
            continue
        if version == 6 and n.prefixlen > 64:
            n = n.supernet(new_prefix=64)
        out.append(n)
    return list(ipaddress.collapse_addresses(out))
def size(n):
    return n.num_addresses if n.version == 4 else n.num_addresses >> 64
out = []
for current, wanted in json.load(sys.stdin):
    current = [ipaddress.ip_network(n) for n in current]
    wanted = [ipaddress.ip_network(n) for n in wanted]
    row = []
    for version in (4, 6):
        c, w = units(current, version), units(wanted, version)
        allowed = sum(size(n) for n in c)
        kept = sum(min(size(a), size(b)) for a in c for b in w if a.overlaps(b))
        row.append([str(allowed - kept), str(allowed)])
    out.append(row)
json.dump(out, sys.stdout)
"#;
    let python: Vec<[[String; 2]; 2]> = python_reference(script, &input);
    let mut losing = 0;
    for ((current, wanted), want) in cases.iter().zip(python) {
        let got = lost(current, wanted);
        let got = [
            [got.v4.lost.to_string(), got.v4.allowed.to_string()],
            [got.v6.lost.to_string(), got.v6.allowed.to_string()],
        ];
        assert_eq!(got, want, "{current:?} -> {wanted:?}");
        losing += usize::from(want[0][0] != "0" || want[1][0] != "0");
    }
    // The generated cases exercise partial losses, not only all or nothing.
    assert!(losing > 100, "{losing}");
}

/// What a Python `script` (reading `input` as JSON on stdin, writing JSON on stdout) answers: the
/// reference the pure code is checked against.
fn python_reference<T: serde::de::DeserializeOwned>(
    script: &str,
    input: &impl serde::Serialize,
) -> T {
    use std::io::Write;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 is needed for this reference check");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(input).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
