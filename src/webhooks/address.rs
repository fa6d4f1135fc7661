//! Where tacho may send a webhook: never to a private, link-local, metadata or otherwise internal
//! address (a subscriber must not make tacho reach into its own network). Loopback is the
//! development receiver and is allowed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why tacho refuses to send to `ip`, or `None` when it may.
pub fn refused(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => refused_v4(v4),
            None => refused_v6(v6),
        },
    }
}

/// The address `url` names literally, if it names one instead of a host name.
pub fn literal(url: &url::Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(ip) => Some(ip.into()),
        url::Host::Ipv6(ip) => Some(ip.into()),
        url::Host::Domain(_) => None,
    }
}

fn refused_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        None
    } else if ip.is_private() {
        Some("a private address")
    } else if ip.is_link_local() {
        Some("a link-local address (cloud metadata services live there)")
    } else if a == 100 && (64..128).contains(&b) {
        Some("a shared (carrier-grade NAT) address")
    } else if ip.is_unspecified() || a == 0 {
        Some("an unspecified address")
    } else if ip.is_multicast() || ip.is_broadcast() || a >= 240 {
        Some("a multicast, broadcast or reserved address")
    } else if ip.is_documentation() || (a == 198 && (18..20).contains(&b)) || (a == 192 && b == 0) {
        Some("a reserved address")
    } else {
        None
    }
}

fn refused_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        None
    } else if ip.is_unspecified() {
        Some("an unspecified address")
    } else if first & 0xfe00 == 0xfc00 {
        Some("a private (unique local) address")
    } else if first & 0xffc0 == 0xfe80 {
        Some("a link-local address")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else if first == 0x2001 && ip.segments()[1] == 0x0db8 {
        Some("a reserved address")
    } else if ip.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || first == 0x2002 {
        Some("a NAT64 or 6to4 address (it can reach a private IPv4 address)")
    } else if ip.segments()[..6] == [0, 0, 0, 0, 0, 0] {
        Some("an IPv4-compatible address")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_refused_and_public_and_loopback_ones_taken() {
        for bad in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "ff02::1",
            "64:ff9b::a9fe:a9fe",
            "2002:0a00:0001::1",
        ] {
            assert!(refused(bad.parse().unwrap()).is_some(), "{bad}");
        }
        for ok in ["127.0.0.1", "::1", "93.184.215.14", "2606:4700::1111", "::ffff:93.184.215.14"] {
            assert_eq!(refused(ok.parse().unwrap()), None, "{ok}");
        }
    }
}
