//! Field helpers: one value of the configuration turned into its type, or an error at
//! its field (paths, durations, key types, modes, users and groups).

use super::raw::*;
use super::*;

impl Ctx<'_> {
    pub(super) fn abs_path(
        &mut self,
        field: &str,
        cert: Option<&str>,
        text: &str,
    ) -> Option<PathBuf> {
        let p = Path::new(text);
        if text.is_empty() {
            self.err(field, cert, "is empty; give an absolute path");
            None
        } else if text.len() > MAX_PATH_LEN {
            self.err(
                field,
                cert,
                format!(
                    "`{}` is {} bytes long; Linux opens no path longer than {MAX_PATH_LEN}",
                    excerpt(text),
                    text.len()
                ),
            );
            None
        } else if !p.is_absolute() {
            self.err(
                field,
                cert,
                format!("`{}` is a relative path; write it in full from `/` (relative paths would depend on where certkeeper was started)", excerpt(text)),
            );
            None
        } else {
            Some(p.to_path_buf())
        }
    }

    pub(super) fn duration(
        &mut self,
        field: &str,
        cert: Option<&str>,
        text: &str,
    ) -> Option<Duration> {
        parse_duration(text)
            .map_err(|e| self.err(field, cert, e))
            .ok()
    }

    /// Whether a lifetime fits in a certificate (see `MAX_LIFETIME`); reports it if not.
    pub(super) fn fits(&mut self, field: &str, cert: Option<&str>, d: Duration) -> bool {
        if d > MAX_LIFETIME {
            self.err(
                field,
                cert,
                format!(
                    "{} is longer than certkeeper accepts ({}): the end of a certificate must fit in its date field",
                    format_duration(d),
                    format_duration(MAX_LIFETIME)
                ),
            );
            return false;
        }
        true
    }

    pub(super) fn key_type(
        &mut self,
        field: &str,
        cert: Option<&str>,
        text: &str,
    ) -> Option<KeyType> {
        text.parse()
            .map_err(|e: String| self.err(field, cert, e))
            .ok()
    }

    pub(super) fn mode(
        &mut self,
        field: &str,
        cert: Option<&str>,
        raw: &RawMode,
        secret: bool,
    ) -> Option<u32> {
        let text = match raw {
            RawMode::Text(t) => t.clone(),
            RawMode::Number(n) => {
                self.err(
                    field,
                    cert,
                    format!("write the mode as a quoted octal string, e.g. \"0{n}\" (YAML reads an unquoted {n} as a decimal number)"),
                );
                return None;
            }
        };
        let digits = text.strip_prefix("0o").unwrap_or(&text);
        let mode = match u32::from_str_radix(digits, 8) {
            Ok(m) if m <= 0o777 && !digits.is_empty() => m,
            _ => {
                self.err(
                    field,
                    cert,
                    format!(
                        "`{}` is not a file mode; write an octal mode such as \"0640\"",
                        excerpt(&text)
                    ),
                );
                return None;
            }
        };
        if secret && mode & 0o007 != 0 {
            self.err(
                field,
                cert,
                format!("`{}` lets every user on the host read or change the private key; use \"0600\" or \"0640\"", excerpt(&text)),
            );
            return None;
        }
        if mode & 0o400 == 0 {
            self.err(
                field,
                cert,
                format!(
                    "`{}` does not let the owner read the file; use e.g. \"0600\"",
                    excerpt(&text)
                ),
            );
            return None;
        }
        Some(mode)
    }

    pub(super) fn principal(
        &mut self,
        field: &str,
        cert: Option<&str>,
        name: &str,
        group: bool,
    ) -> Option<Principal> {
        let id = if let Ok(n) = name.parse::<u32>() {
            Some(n)
        } else if group {
            nix::unistd::Group::from_name(name)
                .ok()
                .flatten()
                .map(|g| g.gid.as_raw())
        } else {
            nix::unistd::User::from_name(name)
                .ok()
                .flatten()
                .map(|u| u.uid.as_raw())
        };
        match id {
            Some(id) => Some(Principal {
                name: name.to_string(),
                id,
            }),
            None => {
                let what = if group { "group" } else { "user" };
                self.err(
                    field,
                    cert,
                    format!("there is no {what} `{}` on this host; create it or name an existing {what}", excerpt(name)),
                );
                None
            }
        }
    }

    pub(super) fn principal_quiet(&mut self, name: &str, group: bool) -> Option<Principal> {
        let before = self.errors.len();
        let p = self.principal("", None, name, group);
        self.errors.truncate(before);
        p
    }
}

pub(super) fn quiet_mode(raw: &RawMode, secret: bool) -> Option<u32> {
    let mut cx = Ctx::new(Path::new(""), "");
    cx.mode("", None, raw, secret)
}

pub(super) fn describe_layout(layout: Layout) -> &'static str {
    match layout {
        Layout::Nginx => "`cert` (leaf + intermediates) and `key`",
        Layout::Apache => "`cert` (leaf), `chain` (intermediates) and `key`",
        Layout::Combined => "one `cert` file holding key, leaf and intermediates",
        Layout::Separate => "`cert`, `chain`, `fullchain` and `key`",
        Layout::Pkcs12 => "one `p12` file holding key, leaf and intermediates",
    }
}

/// A certificate's setting and where it came from: its own entry, `defaults:`, or the
/// built-in default. `field` is where an error about it belongs: the certificate's own
/// field, or `defaults.NAME` (where a bad default is reported once, so `own` is false
/// and the certificate does not report it again).
pub(super) struct Inherited<T> {
    pub value: T,
    pub own: bool,
    pub field: String,
}

/// The one rule for "own value, else `defaults.NAME`, else built-in".
pub(super) fn inherit<T: Clone>(
    own: &Option<T>,
    default: &Option<T>,
    builtin: impl FnOnce() -> T,
    own_field: String,
    name: &str,
) -> Inherited<T> {
    match (own, default) {
        (Some(v), _) => Inherited {
            value: v.clone(),
            own: true,
            field: own_field,
        },
        (None, Some(v)) => Inherited {
            value: v.clone(),
            own: false,
            field: format!("defaults.{name}"),
        },
        (None, None) => Inherited {
            value: builtin(),
            own: false,
            field: own_field,
        },
    }
}

impl Ctx<'_> {
    /// `challenge: dns01:` of an ACME issuer at `path`.
    pub(super) fn dns01(&mut self, path: &str, d: &RawDns01) -> Option<Dns01Spec> {
        let mut ok = true;
        let provider = match (&d.command, &d.rfc2136) {
            (Some(argv), None) => {
                if argv.is_empty() || argv[0].is_empty() {
                    self.err(
                        &format!("{path}.command"),
                        None,
                        "is empty; give the program and its arguments as a list",
                    );
                    ok = false;
                }
                Some(DnsProvider::Command(argv.clone()))
            }
            (None, Some(r)) => {
                let server = self.host_port(&format!("{path}.rfc2136.server"), &r.server);
                let secret = self.abs_path(
                    &format!("{path}.rfc2136.key_secret_file"),
                    None,
                    &r.key_secret_file,
                );
                let algorithm = r.key_algorithm.as_deref().unwrap_or("hmac-sha256");
                if !TSIG_ALGORITHMS.contains(&algorithm) {
                    self.err(
                        &format!("{path}.rfc2136.key_algorithm"),
                        None,
                        format!(
                            "`{}` is not a TSIG algorithm certkeeper signs with; use {}",
                            excerpt(algorithm),
                            TSIG_ALGORITHMS.join(", ")
                        ),
                    );
                    ok = false;
                }
                if r.key_name.trim_end_matches('.').is_empty() {
                    self.err(
                        &format!("{path}.rfc2136.key_name"),
                        None,
                        "is empty; give the TSIG key's name as the server knows it",
                    );
                    ok = false;
                }
                match (server, secret) {
                    (Some(server), Some(key_secret_file)) => Some(DnsProvider::Rfc2136 {
                        server,
                        key_name: r.key_name.clone(),
                        key_algorithm: algorithm.to_string(),
                        key_secret_file,
                    }),
                    _ => None,
                }
            }
            _ => {
                self.err(
                    path,
                    None,
                    "give exactly one provider: `command: [PROGRAM, ARGS...]` or `rfc2136: { server, key_name, key_secret_file }`",
                );
                None
            }
        };
        let mut resolvers = Vec::new();
        for (j, r) in d.resolvers.iter().flatten().enumerate() {
            match self.host_port(&format!("{path}.resolvers[{j}]"), r) {
                Some(r) => resolvers.push(r),
                None => ok = false,
            }
        }
        // parse_duration refuses zero.
        let mut positive = |field: &str, raw: &Option<Text>, default: Duration| match raw {
            Some(t) => self.duration(&format!("{path}.{field}"), None, &t.0),
            None => Some(default),
        };
        let timeout = positive("timeout", &d.timeout, DEFAULT_COMMAND_TIMEOUT);
        let propagation_timeout = positive(
            "propagation_timeout",
            &d.propagation_timeout,
            DEFAULT_PROPAGATION_TIMEOUT,
        );
        match (ok, provider, timeout, propagation_timeout) {
            (true, Some(provider), Some(timeout), Some(propagation_timeout)) => Some(Dns01Spec {
                provider,
                resolvers,
                timeout,
                propagation_timeout,
            }),
            _ => None,
        }
    }

    /// A DNS server's `HOST:PORT` (`HOST` alone means port 53), as given.
    fn host_port(&mut self, field: &str, text: &str) -> Option<String> {
        if text.parse::<std::net::IpAddr>().is_ok() {
            return Some(std::net::SocketAddr::new(text.parse().ok()?, 53).to_string());
        }
        let well_formed = text.parse::<std::net::SocketAddr>().is_ok()
            || text.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty()
                    && port.parse::<u16>().is_ok_and(|p| p > 0)
                    && host
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            });
        if !well_formed {
            self.err(
                field,
                None,
                format!(
                    "`{}` is not HOST:PORT, e.g. \"ns1.example.com:53\" or \"192.0.2.53:53\"",
                    excerpt(text)
                ),
            );
            return None;
        }
        Some(text.to_string())
    }

    /// An ACME profile name: the CA's directory lists the valid ones; here only its form.
    pub(super) fn profile_name(
        &mut self,
        field: &str,
        cert: Option<&str>,
        text: &str,
    ) -> Option<String> {
        if text.is_empty()
            || text.len() > 64
            || !text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            self.err(
                field,
                cert,
                format!(
                    "`{}` is not a profile name (letters, digits, `-`, `_`, `.`), e.g. `shortlived` or `tlsserver`",
                    excerpt(text)
                ),
            );
            return None;
        }
        Some(text.to_string())
    }
}

/// The TSIG algorithms certkeeper signs updates with.
pub const TSIG_ALGORITHMS: &[&str] = &["hmac-sha256", "hmac-sha384", "hmac-sha512"];
