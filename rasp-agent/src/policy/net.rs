//! Network conditions: CIDR blocks as (network, mask) integers, port ranges and HTTP status
//! ranges, checked with a couple of integer operations per event.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cidr {
    V4 { net: u32, mask: u32 },
    V6 { net: u128, mask: u128 },
}

impl Cidr {
    /// "10.0.0.0/8", "fd00:ec2::254/128", or a bare address (one host). Host bits set is an
    /// error that names the network address: a typo there usually means the block is wrong.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let ip: IpAddr = addr.trim().parse().map_err(|_| {
            format!("{addr:?} is not an IPv4 or IPv6 address; write a block like \"10.0.0.0/8\" or \"fd00::/8\"")
        })?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix: u32 = match prefix {
            None => max,
            Some(p) => match p.trim().parse::<u32>() {
                Ok(n) if n <= max => n,
                _ => {
                    return Err(format!(
                        "prefix length {p:?} is out of range for {}: use 0 to {max}",
                        if max == 32 { "IPv4" } else { "IPv6" }
                    ))
                }
            },
        };
        match ip {
            IpAddr::V4(a) => {
                let mask = if prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - prefix)
                };
                let bits = u32::from(a);
                if bits & !mask != 0 {
                    return Err(format!(
                        "{text:?} has host bits set; write the network address \"{}/{prefix}\"",
                        Ipv4Addr::from(bits & mask)
                    ));
                }
                Ok(Cidr::V4 { net: bits, mask })
            }
            IpAddr::V6(a) => {
                let mask = if prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - prefix)
                };
                let bits = u128::from(a);
                if bits & !mask != 0 {
                    return Err(format!(
                        "{text:?} has host bits set; write the network address \"{}/{prefix}\"",
                        Ipv6Addr::from(bits & mask)
                    ));
                }
                Ok(Cidr::V6 { net: bits, mask })
            }
        }
    }

    /// The network address and prefix length ("10.0.0.0/8" → (10.0.0.0, 8)).
    pub fn network(&self) -> (IpAddr, u8) {
        match *self {
            Cidr::V4 { net, mask } => (IpAddr::V4(Ipv4Addr::from(net)), mask.count_ones() as u8),
            Cidr::V6 { net, mask } => (IpAddr::V6(Ipv6Addr::from(net)), mask.count_ones() as u8),
        }
    }

    /// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, what a dual-stack socket connects to)
    /// are checked as the IPv4 address they carry: otherwise a v4 rule is one `::ffff:` away
    /// from being evaded.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self, ip) {
            (Cidr::V4 { net, mask }, IpAddr::V4(a)) => u32::from(a) & mask == *net,
            (Cidr::V6 { net, mask }, IpAddr::V6(a)) => u128::from(a) & mask == *net,
            _ => false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    /// "22", "8000-9000".
    pub fn parse(text: &str) -> Result<PortRange, String> {
        let one = |s: &str| -> Result<u16, String> {
            match s.trim().parse::<u32>() {
                Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
                Ok(_) => Err(format!(
                    "port {} is out of range: ports are 1 to 65535",
                    s.trim()
                )),
                Err(_) => Err(format!(
                    "{s:?} is not a port; write a number like 443 or a range like \"8000-9000\""
                )),
            }
        };
        match text.split_once('-') {
            None => {
                let p = one(text)?;
                Ok(PortRange { lo: p, hi: p })
            }
            Some((a, b)) => {
                let (lo, hi) = (one(a)?, one(b)?);
                if lo > hi {
                    return Err(format!(
                        "port range \"{lo}-{hi}\" is empty; write it low to high: \"{hi}-{lo}\""
                    ));
                }
                Ok(PortRange { lo, hi })
            }
        }
    }

    pub fn contains(&self, port: u16) -> bool {
        self.lo <= port && port <= self.hi
    }
}

/// HTTP statuses: `404` or `"400-499"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusRange {
    pub lo: u16,
    pub hi: u16,
}

impl StatusRange {
    pub fn parse(text: &str) -> Result<StatusRange, String> {
        let one = |s: &str| -> Result<u16, String> {
            match s.trim().parse::<u32>() {
                Ok(n) if (100..=599).contains(&n) => Ok(n as u16),
                Ok(n) => Err(format!(
                    "status {n} is out of range: HTTP statuses are 100 to 599"
                )),
                Err(_) => Err(format!(
                    "{s:?} is not an HTTP status; write a number like 401 or a range like \"500-599\""
                )),
            }
        };
        match text.split_once('-') {
            None => {
                let s = one(text)?;
                Ok(StatusRange { lo: s, hi: s })
            }
            Some((a, b)) => {
                let (lo, hi) = (one(a)?, one(b)?);
                if lo > hi {
                    return Err(format!(
                        "status range \"{lo}-{hi}\" is empty; write it low to high: \"{hi}-{lo}\""
                    ));
                }
                Ok(StatusRange { lo, hi })
            }
        }
    }

    pub fn contains(&self, status: u16) -> bool {
        self.lo <= status && status <= self.hi
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_ranges() {
        let r = StatusRange::parse("400-499").unwrap();
        assert!(r.contains(401) && r.contains(400) && r.contains(499));
        assert!(!r.contains(500));
        assert_eq!(
            StatusRange::parse("401").unwrap(),
            StatusRange { lo: 401, hi: 401 }
        );
        assert!(StatusRange::parse("600")
            .unwrap_err()
            .contains("100 to 599"));
        assert!(StatusRange::parse("499-400")
            .unwrap_err()
            .contains("\"400-499\""));
        assert!(StatusRange::parse("ok")
            .unwrap_err()
            .contains("not an HTTP status"));
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v4_containment() {
        let c = Cidr::parse("169.254.169.254/32").unwrap();
        assert!(c.contains(ip("169.254.169.254")));
        assert!(!c.contains(ip("169.254.169.253")));
        assert!(c.contains(ip("::ffff:169.254.169.254")), "v4-mapped v6");
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains(ip("10.255.1.2")));
        assert!(!c.contains(ip("11.0.0.0")));
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains(ip("8.8.8.8")));
        assert!(
            !all.contains(ip("::1")),
            "a v4 block never matches a real v6 address"
        );
        assert_eq!(
            Cidr::parse("1.2.3.4").unwrap(),
            Cidr::parse("1.2.3.4/32").unwrap()
        );
    }

    #[test]
    fn v6_containment() {
        let c = Cidr::parse("fd00:ec2::254/128").unwrap();
        assert!(c.contains(ip("fd00:ec2::254")));
        assert!(!c.contains(ip("fd00:ec2::255")));
        let c = Cidr::parse("fe80::/10").unwrap();
        assert!(c.contains(ip("fe80::1")));
        assert!(c.contains(ip("febf::1")));
        assert!(!c.contains(ip("fec0::1")));
        assert!(!c.contains(ip("10.0.0.1")));
        assert!(Cidr::parse("::/0").unwrap().contains(ip("2001:db8::1")));
    }

    #[test]
    fn bad_cidrs_say_how_to_fix() {
        let e = Cidr::parse("10.0.0.1/8").unwrap_err();
        assert!(e.contains("\"10.0.0.0/8\""), "{e}");
        let e = Cidr::parse("fd00::1/64").unwrap_err();
        assert!(e.contains("\"fd00::/64\""), "{e}");
        assert!(Cidr::parse("10.0.0.0/33").unwrap_err().contains("0 to 32"));
        assert!(Cidr::parse("::/129").unwrap_err().contains("0 to 128"));
        assert!(Cidr::parse("10.0.0/8")
            .unwrap_err()
            .contains("not an IPv4 or IPv6"));
        assert!(Cidr::parse("10.0.0.0/x").is_err());
    }

    #[test]
    fn port_ranges() {
        let r = PortRange::parse("8000-9000").unwrap();
        assert!(r.contains(8000) && r.contains(9000) && r.contains(8500));
        assert!(!r.contains(7999) && !r.contains(9001));
        assert_eq!(
            PortRange::parse("22").unwrap(),
            PortRange { lo: 22, hi: 22 }
        );
        assert!(PortRange::parse("0").unwrap_err().contains("1 to 65535"));
        assert!(PortRange::parse("65536")
            .unwrap_err()
            .contains("1 to 65535"));
        assert!(PortRange::parse("9000-8000")
            .unwrap_err()
            .contains("\"8000-9000\""));
        assert!(PortRange::parse("http").unwrap_err().contains("not a port"));
    }
}
