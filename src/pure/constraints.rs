//! Name constraints of the internal CA (`ca.permitted`, `ca.excluded`): which DNS names
//! and IP addresses the certificates it signs may carry, as RFC 5280 (4.2.1.10) says and
//! as OpenSSL 3 and rustls (webpki) apply it when they verify a chain.
//!
//! A DNS rule is matched on whole labels and without regard to case:
//! - `example.internal` (no leading dot) covers `example.internal` itself and every name
//!   under it (`www.example.internal`, `a.b.example.internal`), never `evilexample.internal`;
//! - `.example.internal` (a leading dot) covers only the names under it, not
//!   `example.internal` itself.
//!
//! The rule is written into the CA certificates as given, and OpenSSL (`nc_dns`) and
//! webpki read those two spellings exactly this way.
//!
//! An IP rule is a range, `10.0.0.0/8` or `fd00::/8` (a bare address is one address);
//! an IPv4 address is never inside an IPv6 range, nor the reverse.
//!
//! Each kind of name is judged on its own: when `permitted` holds a rule of a kind, every
//! name of that kind must be inside one of them; a kind with no permitted rule is free.
//! A name inside any `excluded` rule is refused, even when it is also permitted.
//!
//! Wildcards: `*.example.internal` is inside a permitted rule when its text is (the two
//! verifiers agree: `example.internal` and `.example.internal` permit it,
//! `www.example.internal` does not). Against excluded rules it is refused when any name it
//! stands for is excluded (`www.example.internal`, or `.www.example.internal` as webpki
//! reads it), as webpki does; OpenSSL 3 would let that one through, so this is the
//! stricter of the two and a certificate allowed here verifies with both.
//!
//! The common name: OpenSSL also checks a leaf's common name against the DNS rules when
//! the leaf has no DNS name among its SANs and the common name looks like a DNS name
//! (two labels or more of letters, digits, `-` and `_`; an IPv4 address such as
//! `10.0.0.5` looks like one). `check_common_name` applies that rule; webpki never reads
//! the common name.

use crate::model::{excerpt, validate_dns_name, San};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An IP range: an address and how many of its leading bits are fixed. The address has
/// no bit set past the prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// The range `addr/prefix`; refused when the prefix is longer than the address or
    /// the address has bits set past it (`10.1.0.0/8`: did it mean `10.0.0.0/8`?).
    pub fn new(addr: IpAddr, prefix: u8) -> Result<IpNet, String> {
        let bits = max_prefix(addr);
        if prefix > bits {
            let family = if addr.is_ipv4() { "IPv4" } else { "IPv6" };
            return Err(format!(
                "the prefix /{prefix} is longer than {bits} bits; an {family} range ends in /0 to /{bits}"
            ));
        }
        let net = IpNet { addr, prefix };
        let base = net.network();
        if base != addr {
            return Err(format!(
                "{addr} has bits set past the /{prefix} prefix; write {base}/{prefix}"
            ));
        }
        Ok(net)
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is in the range (never across IPv4 and IPv6).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }

    /// The address with every bit past the prefix cleared.
    fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        }
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// One entry of `ca.permitted` or `ca.excluded`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum NameRule {
    /// A DNS name in lower case, with its leading dot when it has one (see the module).
    Dns(String),
    /// An IP range.
    Ip(IpNet),
}

impl FromStr for NameRule {
    type Err = String;

    /// `example.internal`, `.example.internal`, `10.0.0.0/8`, `fd00::/8`, `10.0.0.5`.
    fn from_str(text: &str) -> Result<NameRule, String> {
        let bad = |why: String| format!("`{}`: {why}", excerpt(text));
        if text.is_empty() {
            return Err(
                "is empty; give a DNS name (.example.internal) or an IP range (10.0.0.0/8)".into(),
            );
        }
        if let Some((addr, prefix)) = text.split_once('/') {
            let addr: IpAddr = addr.parse().map_err(|_| {
                bad(format!(
                    "`{}` is not an IP address; an IP range is written 10.0.0.0/8 or fd00::/8",
                    excerpt(addr)
                ))
            })?;
            let prefix: u8 = match prefix.parse() {
                Ok(p) if !prefix.starts_with('+') => p,
                _ => {
                    return Err(bad(format!(
                        "`{}` is not a prefix length (a number from 0 to {})",
                        excerpt(prefix),
                        max_prefix(addr)
                    )))
                }
            };
            return IpNet::new(addr, prefix).map(NameRule::Ip).map_err(bad);
        }
        if let Ok(addr) = text.parse::<IpAddr>() {
            return Ok(NameRule::Ip(IpNet {
                addr,
                prefix: max_prefix(addr),
            }));
        }
        let (dot, name) = match text.strip_prefix('.') {
            Some(rest) => (".", rest),
            None => ("", text),
        };
        if name.contains('*') {
            return Err(bad(
                "a rule has no wildcard: `example.internal` covers the name and every name under it, `.example.internal` only the names under it".into(),
            ));
        }
        match validate_dns_name(name) {
            Ok(lower) => Ok(NameRule::Dns(format!("{dot}{lower}"))),
            Err(e) => {
                // validate_dns_name says why after the quoted name.
                let why = e.rsplit_once(": ").map_or(e.as_str(), |(_, why)| why);
                Err(bad(format!(
                    "not a DNS name (example.internal, .example.internal) nor an IP range (10.0.0.0/8): {why}"
                )))
            }
        }
    }
}

impl fmt::Display for NameRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameRule::Dns(d) => f.write_str(d),
            NameRule::Ip(net) => write!(f, "{net}"),
        }
    }
}

/// Which names the internal CA may certify; empty lists constrain nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NameConstraints {
    /// When it holds a rule of a kind (DNS, IP), every name of that kind must be inside
    /// one of them.
    pub permitted: Vec<NameRule>,
    /// No name may be inside any of these, permitted or not.
    pub excluded: Vec<NameRule>,
}

impl NameConstraints {
    pub fn is_empty(&self) -> bool {
        self.permitted.is_empty() && self.excluded.is_empty()
    }

    /// Whether one SAN is within the constraints; the error names it and the rules it
    /// falls outside of (or the excluded rule it is inside).
    pub fn allows(&self, san: &San) -> Result<(), String> {
        match san {
            San::Dns(name) => self.allows_dns(&name.to_ascii_lowercase(), san),
            San::Ip(ip) => {
                let within = |r: &NameRule| matches!(r, NameRule::Ip(net) if net.contains(*ip));
                self.judge(san, within, within, |r| matches!(r, NameRule::Ip(_)))
            }
        }
    }

    /// Every SAN of a certificate within the constraints: the first one that is not is
    /// named.
    pub fn check_sans(&self, sans: &[San]) -> Result<(), String> {
        sans.iter().try_for_each(|s| self.allows(s))
    }

    /// The common name as OpenSSL checks it: when `sans` holds no DNS name and the common
    /// name looks like one, it must be within the DNS rules.
    pub fn check_common_name(&self, common_name: &str, sans: &[San]) -> Result<(), String> {
        if sans.iter().any(|s| matches!(s, San::Dns(_))) || !looks_like_dns_name(common_name) {
            return Ok(());
        }
        self.allows_dns(&common_name.to_ascii_lowercase(), &common_name)
            .map_err(|e| format!("the common name {e}"))
    }

    /// The extension for the CA certificates (critical: rcgen marks it so), or `None`
    /// when nothing is constrained.
    pub fn to_rcgen(&self) -> Option<rcgen::NameConstraints> {
        if self.is_empty() {
            return None;
        }
        let subtrees = |rules: &[NameRule]| {
            rules
                .iter()
                .map(|r| match r {
                    NameRule::Dns(d) => rcgen::GeneralSubtree::DnsName(d.clone()),
                    NameRule::Ip(net) => rcgen::GeneralSubtree::IpAddress(
                        rcgen::CidrSubnet::from_addr_prefix(net.addr, net.prefix),
                    ),
                })
                .collect()
        };
        Some(rcgen::NameConstraints {
            permitted_subtrees: subtrees(&self.permitted),
            excluded_subtrees: subtrees(&self.excluded),
        })
    }

    fn allows_dns(&self, name: &str, shown: &dyn fmt::Display) -> Result<(), String> {
        self.judge(
            shown,
            |r| matches!(r, NameRule::Dns(rule) if dns_within(name, rule)),
            |r| {
                matches!(r, NameRule::Dns(rule) if dns_within(name, rule) || wildcard_reaches(name, rule))
            },
            |r| matches!(r, NameRule::Dns(_)),
        )
    }

    /// Excluded first (the message names the one rule), then permitted among the rules
    /// of the name's kind.
    fn judge(
        &self,
        shown: &dyn fmt::Display,
        permits: impl Fn(&NameRule) -> bool,
        excludes: impl Fn(&NameRule) -> bool,
        same_kind: impl Fn(&NameRule) -> bool,
    ) -> Result<(), String> {
        let shown = shown.to_string();
        if let Some(rule) = self.excluded.iter().find(|r| excludes(r)) {
            return Err(format!(
                "`{}` is inside ca.excluded ({rule})",
                excerpt(&shown)
            ));
        }
        let mut of_kind = self.permitted.iter().filter(|r| same_kind(r)).peekable();
        if of_kind.peek().is_some() && !of_kind.any(permits) {
            let all: Vec<String> = self.permitted.iter().map(|r| r.to_string()).collect();
            return Err(format!(
                "`{}` is outside ca.permitted ({})",
                excerpt(&shown),
                all.join(", ")
            ));
        }
        Ok(())
    }
}

/// Whether a DNS name (lower case; a wildcard taken as text) is inside a DNS rule, as
/// OpenSSL's `nc_dns` and webpki compare: `.x` covers names ending in `.x`; `x` covers
/// `x` and names ending in `.x`.
fn dns_within(name: &str, rule: &str) -> bool {
    if rule.starts_with('.') {
        name.len() > rule.len() && name.ends_with(rule)
    } else {
        name == rule
            || (name.len() > rule.len()
                && name.ends_with(rule)
                && name.as_bytes()[name.len() - rule.len() - 1] == b'.')
    }
}

/// Whether a wildcard name (`*.W`) stands for a name an excluded rule covers, as webpki
/// expands it against excluded rules: the rule, without its leading dot, is one label
/// followed by `.W`.
fn wildcard_reaches(name: &str, rule: &str) -> bool {
    let Some(suffix) = name.strip_prefix('*') else {
        return false;
    };
    let bare = rule.strip_prefix('.').unwrap_or(rule);
    bare.find('.')
        .is_some_and(|i| i > 0 && &bare[i..] == suffix)
}

/// Whether OpenSSL takes a common name for a DNS name (`cn2dnsid` in
/// crypto/x509/v3_ncons.c): letters, digits and `_` anywhere, `-` and `.` not first or
/// last, no `.` next to another `.` or a `-`, and at least one `.`.
pub fn looks_like_dns_name(cn: &str) -> bool {
    let b = cn.as_bytes();
    let mut dotted = false;
    for (i, &c) in b.iter().enumerate() {
        if c.is_ascii_alphanumeric() || c == b'_' {
            continue;
        }
        let inner = i > 0 && i + 1 < b.len();
        if inner && c == b'-' {
            continue;
        }
        if inner && c == b'.' && b[i + 1] != b'.' && b[i - 1] != b'-' && b[i + 1] != b'-' {
            dotted = true;
            continue;
        }
        return false;
    }
    dotted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str) -> NameRule {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn nc(permitted: &[&str], excluded: &[&str]) -> NameConstraints {
        NameConstraints {
            permitted: permitted.iter().map(|s| rule(s)).collect(),
            excluded: excluded.iter().map(|s| rule(s)).collect(),
        }
    }

    fn san(s: &str) -> San {
        San::parse(s).unwrap()
    }

    fn ok(c: &NameConstraints, s: &str) -> bool {
        c.allows(&san(s)).is_ok()
    }

    #[test]
    fn rules_parse() {
        assert_eq!(
            rule("Example.Internal"),
            NameRule::Dns("example.internal".into())
        );
        assert_eq!(
            rule(".example.internal"),
            NameRule::Dns(".example.internal".into())
        );
        assert_eq!(rule("10.0.0.0/8").to_string(), "10.0.0.0/8");
        assert_eq!(rule("10.0.0.5").to_string(), "10.0.0.5/32");
        assert_eq!(rule("fd00::/8").to_string(), "fd00::/8");
        assert_eq!(rule("::1").to_string(), "::1/128");
        assert_eq!(rule("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert_eq!(rule("::/0").to_string(), "::/0");
        assert_eq!(rule("10.0.0.5/32").to_string(), "10.0.0.5/32");
    }

    #[test]
    fn bad_rules_are_named_with_the_reason() {
        for (text, why) in [
            ("10.0.0.0/33", "longer than 32 bits"),
            ("fd00::/129", "longer than 128 bits"),
            ("10.1.0.0/8", "write 10.0.0.0/8"),
            ("fd00::1/8", "write fd00::/8"),
            ("10.0.0/8", "not an IP address"),
            ("10.0.0.0/", "not a prefix length"),
            ("10.0.0.0/x", "not a prefix length"),
            ("10.0.0.0/+8", "not a prefix length"),
            ("10.0.0.0/8/8", "not a prefix length"),
            ("*.example.internal", "no wildcard"),
            ("..example.internal", "empty label"),
            ("example.internal.", "empty label"),
            ("exa mple.internal", "not allowed"),
            (".", "empty"),
            ("10.0.0.300", "looks like an IP address"),
        ] {
            let e = text.parse::<NameRule>().unwrap_err();
            assert!(e.starts_with(&format!("`{text}`: ")), "{text}: {e}");
            assert!(e.contains(why), "{text}: {e}");
        }
        assert!("".parse::<NameRule>().unwrap_err().contains("empty"));
    }

    #[test]
    fn a_name_without_a_dot_covers_itself_and_what_is_under_it() {
        let c = nc(&["example.internal"], &[]);
        for inside in [
            "example.internal",
            "www.example.internal",
            "a.b.example.internal",
            "*.example.internal",
        ] {
            assert!(ok(&c, inside), "{inside}");
        }
        for outside in [
            "evilexample.internal",
            "example.internal.evil.com",
            "internal",
            "xample.internal",
        ] {
            assert!(!ok(&c, outside), "{outside}");
        }
    }

    #[test]
    fn a_leading_dot_covers_only_what_is_under_it() {
        let c = nc(&[".example.internal"], &[]);
        assert!(!ok(&c, "example.internal"));
        assert!(ok(&c, "www.example.internal"));
        assert!(ok(&c, "a.b.example.internal"));
        assert!(ok(&c, "*.example.internal"));
        assert!(!ok(&c, "evilexample.internal"));
        let e = c.allows(&san("www.other.com")).unwrap_err();
        assert_eq!(
            e,
            "`www.other.com` is outside ca.permitted (.example.internal)"
        );
    }

    #[test]
    fn case_does_not_matter() {
        let c = nc(&["Example.INTERNAL"], &["BAD.example.internal"]);
        assert!(ok(&c, "WWW.Example.Internal"));
        assert!(c.allows(&San::Dns("WWW.EXAMPLE.INTERNAL".into())).is_ok());
        assert!(c
            .allows(&San::Dns("x.Bad.Example.Internal".into()))
            .is_err());
    }

    #[test]
    fn a_wildcard_is_permitted_by_text_and_excluded_when_it_reaches_an_excluded_name() {
        let c = nc(&["www.example.internal"], &[]);
        assert!(!ok(&c, "*.example.internal"));
        assert!(ok(&c, "*.www.example.internal"));
        for excluded in [
            "www.example.internal",
            ".www.example.internal",
            "example.internal",
        ] {
            let c = nc(&[".example.internal"], &[excluded]);
            let e = c.allows(&san("*.example.internal")).unwrap_err();
            assert!(
                e.contains(&format!("inside ca.excluded ({excluded})")),
                "{e}"
            );
        }
        // One label only: `*.example.internal` never stands for a.b.example.internal.
        let c = nc(&[], &["a.b.example.internal"]);
        assert!(ok(&c, "*.example.internal"));
        assert!(!ok(&c, "*.b.example.internal"));
    }

    #[test]
    fn ip_ranges_hold_their_own_family_only() {
        let c = nc(&["10.0.0.0/8", "fd00::/8"], &[]);
        assert!(ok(&c, "10.0.0.1"));
        assert!(ok(&c, "10.255.255.255"));
        assert!(!ok(&c, "11.0.0.0"));
        assert!(!ok(&c, "9.255.255.255"));
        assert!(ok(&c, "fd12:3456::1"));
        assert!(!ok(&c, "fe00::1"));
        assert!(!ok(&c, "::ffff:10.0.0.1"), "an IPv6 address is not in 10/8");
        let v4 = nc(&["10.0.0.0/8"], &[]);
        assert!(!ok(&v4, "fd00::1"), "IP rules permit no IPv6 address");
        let one = nc(&["192.168.1.7"], &[]);
        assert!(ok(&one, "192.168.1.7"));
        assert!(!ok(&one, "192.168.1.8"));
        let all = nc(&["0.0.0.0/0"], &[]);
        assert!(ok(&all, "1.2.3.4"));
        let odd = nc(&["10.0.0.0/9"], &[]);
        assert!(ok(&odd, "10.127.0.1"));
        assert!(!ok(&odd, "10.128.0.1"));
    }

    #[test]
    fn each_kind_is_judged_by_its_own_rules() {
        let dns_only = nc(&[".example.internal"], &[]);
        assert!(ok(&dns_only, "203.0.113.9"));
        let ip_only = nc(&["10.0.0.0/8"], &[]);
        assert!(ok(&ip_only, "www.other.com"));
        // Excluding every address forbids IP SANs altogether.
        let no_ips = nc(&[".example.internal"], &["0.0.0.0/0", "::/0"]);
        assert!(!ok(&no_ips, "10.0.0.1"));
        assert!(!ok(&no_ips, "::1"));
    }

    #[test]
    fn excluded_wins_over_permitted() {
        let c = nc(
            &[".example.internal", "10.0.0.0/8"],
            &["secret.example.internal", "10.9.0.0/16"],
        );
        assert!(ok(&c, "www.example.internal"));
        let e = c.allows(&san("db.secret.example.internal")).unwrap_err();
        assert_eq!(
            e,
            "`db.secret.example.internal` is inside ca.excluded (secret.example.internal)"
        );
        assert!(ok(&c, "notsecret.example.internal"));
        assert!(ok(&c, "10.8.0.1"));
        assert_eq!(
            c.allows(&san("10.9.1.1")).unwrap_err(),
            "`10.9.1.1` is inside ca.excluded (10.9.0.0/16)"
        );
        assert_eq!(
            c.check_sans(&[san("www.example.internal"), san("www.other.com")])
                .unwrap_err(),
            "`www.other.com` is outside ca.permitted (.example.internal, 10.0.0.0/8)"
        );
        assert!(NameConstraints::default()
            .allows(&san("anything.com"))
            .is_ok());
    }

    #[test]
    fn the_common_name_counts_only_without_a_dns_san() {
        let c = nc(&[".example.internal", "10.0.0.0/8"], &[]);
        let ip = [san("10.0.0.5")];
        // An address in the common name looks like a DNS name to OpenSSL.
        let e = c.check_common_name("10.0.0.5", &ip).unwrap_err();
        assert_eq!(
            e,
            "the common name `10.0.0.5` is outside ca.permitted (.example.internal, 10.0.0.0/8)"
        );
        assert!(c.check_common_name("www.other.com", &ip).is_err());
        assert!(c.check_common_name("WWW.Example.Internal", &ip).is_ok());
        for not_dns in [
            "db server",
            "localhost",
            "a..b",
            "-a.b",
            "a.b-",
            "a-.b",
            "a.b.",
        ] {
            assert!(c.check_common_name(not_dns, &ip).is_ok(), "{not_dns}");
        }
        assert!(c
            .check_common_name("www.other.com", &[san("www.example.internal")])
            .is_ok());
        assert!(looks_like_dns_name("Example_host.x"));
        assert!(!looks_like_dns_name("*.example.internal"));
    }

    #[test]
    fn the_extension_carries_the_rules_as_written() {
        assert_eq!(NameConstraints::default().to_rcgen(), None);
        let r = nc(&[".example.internal", "10.0.0.0/8"], &["fd00::/8"])
            .to_rcgen()
            .unwrap();
        assert_eq!(
            r.permitted_subtrees,
            [
                rcgen::GeneralSubtree::DnsName(".example.internal".into()),
                rcgen::GeneralSubtree::IpAddress(rcgen::CidrSubnet::V4(
                    [10, 0, 0, 0],
                    [255, 0, 0, 0]
                )),
            ]
        );
        let mut v6 = [0u8; 16];
        v6[0] = 0xfd;
        let mut mask = [0u8; 16];
        mask[0] = 0xff;
        assert_eq!(
            r.excluded_subtrees,
            [rcgen::GeneralSubtree::IpAddress(rcgen::CidrSubnet::V6(
                v6, mask
            ))]
        );
    }
}
