//! Vocabulary shared by every layer: key types, usages, layouts, subject names.
//! Plain data with parsing and display; nothing here touches files or the clock.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyType {
    EcdsaP256,
    EcdsaP384,
    Ed25519,
    Rsa2048,
    Rsa3072,
    Rsa4096,
}

impl KeyType {
    pub const ALL: [KeyType; 6] = [
        KeyType::EcdsaP256,
        KeyType::EcdsaP384,
        KeyType::Ed25519,
        KeyType::Rsa2048,
        KeyType::Rsa3072,
        KeyType::Rsa4096,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::EcdsaP384 => "ecdsa-p384",
            KeyType::Ed25519 => "ed25519",
            KeyType::Rsa2048 => "rsa-2048",
            KeyType::Rsa3072 => "rsa-3072",
            KeyType::Rsa4096 => "rsa-4096",
        }
    }

    pub fn is_rsa(self) -> bool {
        matches!(self, KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096)
    }
}

impl FromStr for KeyType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        KeyType::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let weak = matches!(s, "rsa-1024" | "rsa-512" | "dsa" | "ecdsa-p192");
                format!(
                    "`{}` is not a key type{}; use one of {}",
                    excerpt(s),
                    if weak {
                        " certkeeper issues (too weak)"
                    } else {
                        ""
                    },
                    one_of(KeyType::ALL.iter().map(|k| k.as_str()))
                )
            })
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a leaf certificate may be used for (its extended key usage).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Usage {
    Server,
    Client,
    ServerClient,
}

impl Usage {
    pub const ALL: [Usage; 3] = [Usage::Server, Usage::Client, Usage::ServerClient];

    pub fn as_str(self) -> &'static str {
        match self {
            Usage::Server => "server",
            Usage::Client => "client",
            Usage::ServerClient => "server+client",
        }
    }
    pub fn server(self) -> bool {
        matches!(self, Usage::Server | Usage::ServerClient)
    }
    pub fn client(self) -> bool {
        matches!(self, Usage::Client | Usage::ServerClient)
    }
    pub fn from_flags(server: bool, client: bool) -> Option<Usage> {
        match (server, client) {
            (true, true) => Some(Usage::ServerClient),
            (true, false) => Some(Usage::Server),
            (false, true) => Some(Usage::Client),
            (false, false) => None,
        }
    }
}

impl FromStr for Usage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Usage::ALL
            .into_iter()
            .find(|u| u.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "`{}` is not a usage; use one of {}",
                    excerpt(s),
                    one_of(Usage::ALL.iter().map(|u| u.as_str()))
                )
            })
    }
}

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a certificate's key and chain are laid out on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layout {
    /// `cert` = leaf + intermediates, `key`.
    Nginx,
    /// `cert` = leaf, `chain` = intermediates, `key`.
    Apache,
    /// `cert` = key + leaf + intermediates in one file.
    Combined,
    /// `cert`, `chain`, `fullchain` and `key`, each its own file.
    Separate,
    /// `p12` = key + leaf + intermediates in one PKCS#12 file, encrypted with the
    /// password in `password_file`.
    Pkcs12,
}

impl Layout {
    pub const ALL: [Layout; 5] = [
        Layout::Nginx,
        Layout::Apache,
        Layout::Combined,
        Layout::Separate,
        Layout::Pkcs12,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Layout::Nginx => "nginx",
            Layout::Apache => "apache",
            Layout::Combined => "combined",
            Layout::Separate => "separate",
            Layout::Pkcs12 => "pkcs12",
        }
    }

    /// The `files:` fields this layout needs, in the order they are written.
    pub fn needs(self) -> &'static [&'static str] {
        match self {
            Layout::Nginx => &["cert", "key"],
            Layout::Apache => &["cert", "chain", "key"],
            Layout::Combined => &["cert"],
            Layout::Separate => &["cert", "chain", "fullchain", "key"],
            Layout::Pkcs12 => &["p12"],
        }
    }
}

impl FromStr for Layout {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Layout::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "`{}` is not a layout; use one of {}",
                    excerpt(s),
                    one_of(Layout::ALL.iter().map(|l| l.as_str()))
                )
            })
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A subject alternative name: a DNS name (lower case) or an IP address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum San {
    Dns(String),
    Ip(IpAddr),
}

impl San {
    pub fn parse(text: &str) -> Result<San, String> {
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(San::Ip(ip));
        }
        validate_dns_name(text).map(San::Dns)
    }
}

impl fmt::Display for San {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            San::Dns(d) => f.write_str(d),
            San::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Checks a DNS name (RFC 1123 labels, an optional leading `*.`), returns it in lower case.
pub fn validate_dns_name(text: &str) -> Result<String, String> {
    let lower = text.to_ascii_lowercase();
    let bad = |why: &str| {
        Err(format!(
            "`{}` is not a valid DNS name or IP address: {why}",
            excerpt(text)
        ))
    };
    if lower.is_empty() {
        return bad("it is empty");
    }
    if lower.len() > 253 {
        return bad("longer than 253 characters");
    }
    let body = lower.strip_prefix("*.").unwrap_or(&lower);
    if body.split('.').count() < 1 || body.is_empty() {
        return bad("a wildcard needs a domain after `*.`");
    }
    for label in body.split('.') {
        if label.is_empty() {
            return bad("empty label (two dots in a row, or a leading/trailing dot)");
        }
        if label.len() > 63 {
            return bad("a label is longer than 63 characters");
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return bad(&format!(
                "`{c}` is not allowed (letters, digits, `-` and `.` only)"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("a label starts or ends with `-`");
        }
    }
    if body.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return bad("it looks like an IP address but is not one");
    }
    Ok(lower)
}

/// The most characters of a value an error message quotes.
pub const EXCERPT_CHARS: usize = 60;

/// `text`, or when it is longer than `EXCERPT_CHARS` its beginning and `…`: an error
/// message quotes a bad value, never a megabyte of it.
pub fn excerpt(text: &str) -> Cow<'_, str> {
    if text.chars().nth(EXCERPT_CHARS).is_none() {
        return Cow::Borrowed(text);
    }
    let cut = text
        .char_indices()
        .nth(EXCERPT_CHARS - 1)
        .map_or(text.len(), |(i, _)| i);
    Cow::Owned(format!("{}…", &text[..cut]))
}

pub(crate) fn one_of<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_short() {
        assert_eq!(excerpt("www"), "www");
        let sixty = "é".repeat(EXCERPT_CHARS);
        assert_eq!(excerpt(&sixty), sixty.as_str());
        let long = "é".repeat(1_000_000);
        let e = excerpt(&long);
        assert_eq!(e.chars().count(), EXCERPT_CHARS);
        assert!(e.ends_with("é…"), "{e}");
        let err = San::parse(&"a".repeat(1_000_000)).unwrap_err();
        assert!(err.len() < 200, "{err}");
    }

    #[test]
    fn sans_parse() {
        assert_eq!(
            San::parse("10.0.0.5"),
            Ok(San::Ip("10.0.0.5".parse().unwrap()))
        );
        assert_eq!(San::parse("::1"), Ok(San::Ip("::1".parse().unwrap())));
        assert_eq!(
            San::parse("WWW.Example.internal"),
            Ok(San::Dns("www.example.internal".into()))
        );
        assert_eq!(
            San::parse("*.example.internal"),
            Ok(San::Dns("*.example.internal".into()))
        );
        for bad in [
            "",
            "a..b",
            "-a.b",
            "a_b.c",
            "10.0.0.300",
            "*.",
            "a b",
            "x.*.y",
        ] {
            assert!(San::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn weak_keys_are_named_as_such() {
        let err = "rsa-1024".parse::<KeyType>().unwrap_err();
        assert!(err.contains("too weak"), "{err}");
        for k in KeyType::ALL {
            assert_eq!(k.as_str().parse::<KeyType>(), Ok(k));
        }
    }
}

/// Which issuer signs a certificate: `issuer:` in the configuration, resolved.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IssuerRef {
    /// The built-in CA (`internal`, the default).
    Internal,
    /// An ACME CA declared under `issuers:`, by its name.
    Acme(String),
}

impl IssuerRef {
    /// The built-in CA's name in the configuration, the ledger and `status`.
    pub const INTERNAL: &'static str = "internal";

    /// The issuer a name refers to (declared or not: the configuration checks that).
    pub fn named(name: &str) -> IssuerRef {
        if name == Self::INTERNAL {
            IssuerRef::Internal
        } else {
            IssuerRef::Acme(name.to_string())
        }
    }
}

impl fmt::Display for IssuerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IssuerRef::Internal => f.write_str(Self::INTERNAL),
            IssuerRef::Acme(name) => f.write_str(name),
        }
    }
}
