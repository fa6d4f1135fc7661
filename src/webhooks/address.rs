//! Where tacho may send a webhook: never to a private, link-local, metadata or otherwise internal
//! address (a subscriber must not make tacho reach into its own network), unless an operator allows
//! its range (`TACHO_WEBHOOK_ALLOW`). Loopback is tacho's own host: allowed on the embedded default
//! (the development receiver), refused elsewhere unless allowed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An address range: network and prefix length.
pub type Range = (IpAddr, u8);

/// The loopback ranges.
pub const LOOPBACK: [Range; 2] = [(IpAddr::V4(Ipv4Addr::LOCALHOST), 8), (IpAddr::V6(Ipv6Addr::LOCALHOST), 128)];

/// Why tacho refuses to send to `ip` although ranges `allowed` are allowed, or `None` when it may.
pub fn refused_unless(ip: IpAddr, allowed: &[Range]) -> Option<&'static str> {
    let why = refused(ip)?;
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    (!allowed.iter().any(|(net, bits)| contains(*net, *bits, ip))).then_some(why)
}

/// Whether range `net`/`bits` holds `ip`.
pub fn contains(net: IpAddr, bits: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits.min(32))).unwrap_or(0);
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits.min(128))).unwrap_or(0);
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

/// Why tacho refuses to send to `ip` unless an operator allows it, or `None` when it may.
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
        Some("a loopback address (tacho's own host)")
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
        Some("a loopback address (tacho's own host)")
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
    } else if first & 0xffc0 == 0xfec0 {
        Some("a site-local address")
    } else if ip.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
        || ip.segments()[..3] == [0x64, 0xff9b, 1]
        || first == 0x2002
    {
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
    fn internal_addresses_are_refused_and_public_ones_taken() {
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
            "64:ff9b:1::a00:1",
            "fec0::1",
            "127.0.0.1",
            "::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(refused(bad.parse().unwrap()).is_some(), "{bad}");
        }
        for ok in ["93.184.215.14", "2606:4700::1111", "::ffff:93.184.215.14"] {
            assert_eq!(refused(ok.parse().unwrap()), None, "{ok}");
        }
    }

    #[test]
    fn an_allowed_range_is_taken_and_nothing_beside_it() {
        let allowed = [("10.20.0.0".parse().unwrap(), 16), LOOPBACK[0], LOOPBACK[1]];
        for ok in ["10.20.1.2", "127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1", "::ffff:10.20.9.9"] {
            assert_eq!(refused_unless(ok.parse().unwrap(), &allowed), None, "{ok}");
        }
        for bad in ["10.21.0.1", "169.254.169.254", "::ffff:10.21.0.1", "fd00::1"] {
            assert!(refused_unless(bad.parse().unwrap(), &allowed).is_some(), "{bad}");
        }
        assert!(refused_unless("127.0.0.1".parse().unwrap(), &[]).is_some());
        assert_eq!(refused_unless("10.0.0.1".parse().unwrap(), &[("0.0.0.0".parse().unwrap(), 0)]), None);
    }
}
