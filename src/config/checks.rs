//! Cross-field checks, once every section is resolved: reloads name declared servers,
//! the internal CA's certificates stay within its name constraints, nothing is written
//! into certkeeper's own state or onto the configuration, and no two entries claim one
//! name or one file.

use super::*;

impl Ctx<'_> {
    pub(super) fn check_reloads(
        &mut self,
        field: &str,
        cert: Option<&str>,
        reload: &[String],
        servers: &BTreeMap<String, ServerSpec>,
    ) -> bool {
        let mut ok = true;
        for (i, s) in reload.iter().enumerate() {
            if !servers.contains_key(s) {
                let known = if servers.is_empty() {
                    "no servers are declared; add it under `servers:`".to_string()
                } else {
                    format!(
                        "declared servers: {}",
                        one_of(servers.keys().map(String::as_str))
                    )
                };
                self.err(
                    &format!("{field}[{i}]"),
                    cert,
                    format!("reloads unknown server `{}`; {known}", excerpt(s)),
                );
                ok = false;
            }
        }
        ok
    }

    /// A certificate of the internal CA names only what `ca.permitted` and `ca.excluded`
    /// allow: each SAN, and the common name where OpenSSL reads it as a DNS name (when
    /// `sans` has no DNS name). Verifiers refuse anything else under a constrained CA.
    pub(super) fn check_constraints(
        &mut self,
        path: &str,
        cert: Option<&str>,
        sans: &[San],
        common_name: Option<&str>,
        own_cn: bool,
        constraints: &NameConstraints,
    ) {
        if constraints.is_empty() {
            return;
        }
        for san in sans {
            if let Err(e) = constraints.allows(san) {
                self.err(
                    &format!("{path}.sans"),
                    cert,
                    format!("{e}; the internal CA signs only names within ca.permitted and outside ca.excluded"),
                );
            }
        }
        let Some(cn) = common_name else { return };
        if let Err(e) = constraints.check_common_name(cn, sans) {
            let why = "with no DNS name in sans, OpenSSL checks a common name that looks like a DNS name (an IPv4 address does) against the CA's DNS constraints";
            if own_cn {
                self.err(
                    &format!("{path}.common_name"),
                    cert,
                    format!("{e}: {why}; choose another common name, or add a DNS name within ca.permitted to sans"),
                );
            } else {
                self.err(
                    &format!("{path}.sans"),
                    cert,
                    format!("{e} (the common name defaults to the first SAN): {why}; set common_name (e.g. common_name: \"db server\"), or add a DNS name within ca.permitted to sans"),
                );
            }
        }
    }

    /// No two certificates share a name, and no two outputs (certificate files, watched
    /// files, trust targets) share a file. Nothing certkeeper writes for a certificate or
    /// a trust target may land in its own state (the CA, the archive, the ledger, the
    /// lock; checked when `state_dir` is known) or on the configuration file, whatever
    /// the spelling (`..`, a symlinked directory); nor through a linked directory unless
    /// `follow_symlinks` says so. Each path is located on disk once, and each directory
    /// once however many certificates share it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn check_outputs(
        &mut self,
        state_dir: Option<&Path>,
        certs: &[CertSpec],
        managed_at: &[usize],
        watched: &[WatchSpec],
        watched_at: &[usize],
        trust: &[TrustSpec],
    ) {
        let index = std::mem::take(&mut self.cert_index);
        let mut first: HashMap<&str, usize> = HashMap::new();
        for (name, i) in &index {
            if let Some(j) = first.get(name.as_str()) {
                let line = self
                    .loc()
                    .line(&format!("certificates[{j}]"))
                    .map(|l| format!(" (line {l})"))
                    .unwrap_or_default();
                self.err(
                    &format!("certificates[{i}].name"),
                    Some(name),
                    format!("the name `{name}` is already used by certificates[{j}]{line}; names must be unique"),
                );
            } else {
                first.insert(name, *i);
            }
        }
        let mut resolver = crate::fsutil::Resolver::default();
        let own = state_dir.map(|d| (d, resolver.resolve(d), resolver.resolve(&self.file)));
        // Directories looked at once each: thousands of certificates share a few.
        let mut links: HashMap<&std::ffi::OsStr, Option<PathBuf>> = HashMap::new();
        /// Whose an output is; named in words only in a message.
        #[derive(Clone, Copy)]
        enum Owner<'a> {
            Cert(&'a CertSpec, usize, &'static str),
            Watched(&'a WatchSpec, usize),
            Trust(usize),
        }
        impl<'a> Owner<'a> {
            fn who(self) -> String {
                match self {
                    Owner::Cert(c, _, field) => format!("certificate `{}` (files.{field})", c.name),
                    Owner::Watched(w, _) => format!("watched certificate `{}`", w.name),
                    Owner::Trust(i) => format!("trust[{i}]"),
                }
            }
            fn field(self) -> String {
                match self {
                    Owner::Cert(_, i, field) => format!("certificates[{i}].files.{field}"),
                    Owner::Watched(_, i) => format!("certificates[{i}].watch"),
                    Owner::Trust(i) => format!("trust[{i}].path"),
                }
            }
            fn cert(self) -> Option<&'a str> {
                match self {
                    Owner::Cert(c, ..) => Some(c.name.as_str()),
                    Owner::Watched(w, _) => Some(w.name.as_str()),
                    Owner::Trust(_) => None,
                }
            }
        }
        struct Output<'a> {
            path: &'a Path,
            owner: Owner<'a>,
            /// Written by certkeeper (not a watched file), and whether links are followed.
            written: Option<bool>,
        }
        let cert_outputs = certs.iter().zip(managed_at).flat_map(|(c, i)| {
            c.files.paths().into_iter().map(move |(field, p)| Output {
                path: p,
                owner: Owner::Cert(c, *i, field),
                written: Some(c.follow_symlinks),
            })
        });
        let watched_outputs = watched.iter().zip(watched_at).map(|(w, i)| Output {
            path: &w.path,
            owner: Owner::Watched(w, *i),
            written: None,
        });
        let trust_outputs = trust.iter().enumerate().map(|(i, t)| Output {
            path: &t.path,
            owner: Owner::Trust(i),
            written: Some(t.follow_symlinks),
        });
        let count =
            certs.iter().map(|c| c.files.count()).sum::<usize>() + watched.len() + trust.len();
        let mut outputs: Vec<Output> = Vec::with_capacity(count);
        outputs.extend(cert_outputs.chain(watched_outputs).chain(trust_outputs));
        // A watched file is only read, through any link.
        let wanted: Vec<(&Path, bool)> = outputs
            .iter()
            .map(|o| (o.path, o.written.unwrap_or(true)))
            .collect();
        let located = resolver.locate_all(&wanted, crate::install::is_store_link);
        // By device and inode for files that exist (hard links, `..`, symlinked
        // directories: one file has one), by the path the file system resolves for those
        // that do not (by its bytes: located paths are spelled one way, built from
        // components): the first output of each.
        #[derive(PartialEq, Eq, Hash)]
        enum Claim<'a> {
            File(u64, u64),
            Missing(&'a std::ffi::OsStr),
        }
        let mut claimed: HashMap<Claim, usize> = HashMap::with_capacity(outputs.len());
        for (n, (o, at)) in outputs.iter().zip(&located).enumerate() {
            let path = o.path;
            let claim = match at.id {
                Some((dev, ino)) => Claim::File(dev, ino),
                None => Claim::Missing(at.real.as_os_str()),
            };
            let other = claimed.get(&claim).copied();
            if let Some(first) = other {
                let other_path = outputs[first].path;
                let spelling = if other_path == path {
                    String::new()
                } else {
                    format!(" (as {})", other_path.display())
                };
                self.err(
                    &o.owner.field(),
                    o.owner.cert(),
                    format!(
                        "{} is also written by {}{spelling}; two outputs cannot share one file",
                        path.display(),
                        outputs[first].owner.who()
                    ),
                );
            } else {
                claimed.insert(claim, n);
            }
            let (Some(follow), Some((state_dir, state, config))) = (o.written, &own) else {
                continue;
            };
            let real = &at.real;
            let shown = if real.as_ref() == path {
                String::new()
            } else {
                format!(" (that is {})", real.display())
            };
            if real.starts_with(state) {
                self.err(
                    &o.owner.field(),
                    o.owner.cert(),
                    format!(
                        "{}{shown} is inside state_dir {}, which holds the CA, the archive, the ledger and the lock; certkeeper never writes a certificate there: choose a path outside it",
                        path.display(),
                        state_dir.display()
                    ),
                );
            } else if real == config {
                self.err(
                    &o.owner.field(),
                    o.owner.cert(),
                    format!(
                        "{}{shown} is the configuration file {}; choose another path",
                        path.display(),
                        self.file.display()
                    ),
                );
            } else if !follow {
                let dir = path.parent().unwrap_or(Path::new("/"));
                if !links.contains_key(dir.as_os_str()) {
                    let link = match crate::fsutil::no_link_on_way(dir) {
                        Err(crate::fsutil::FsError::LinkInPath { link, .. }) => Some(link),
                        _ => None,
                    };
                    links.insert(dir.as_os_str(), link);
                }
                let link = &links[dir.as_os_str()];
                if let Some(link) = link {
                    self.err(
                        &o.owner.field(),
                        o.owner.cert(),
                        format!(
                            "{}: {} is a symbolic link; certkeeper writes nothing through a linked directory unless told to: write the real path ({}), or set follow_symlinks: true",
                            path.display(),
                            link.display(),
                            real.display()
                        ),
                    );
                }
            }
        }
    }

    /// `verify.client_cert` names a managed certificate for clients; `verify.roots` is
    /// a file that exists or that certkeeper writes (a trust target).
    pub(super) fn check_verify_refs(
        &mut self,
        certs: &[CertSpec],
        managed_at: &[usize],
        trust: &[TrustSpec],
    ) {
        for (c, i) in certs.iter().zip(managed_at) {
            let one = c.verify.len() == 1;
            for (t, v) in c.verify.iter().enumerate() {
                let base = if one {
                    format!("certificates[{i}].verify")
                } else {
                    format!("certificates[{i}].verify[{t}]")
                };
                if let Some(name) = &v.client_cert {
                    match certs.iter().find(|o| &o.name == name) {
                        None => self.err(
                            &format!("{base}.client_cert"),
                            Some(&c.name),
                            format!("no managed certificate is named `{name}`; name one with usage: client (or server+client) that certkeeper issues"),
                        ),
                        Some(o) if o.usage == crate::model::Usage::Server => self.err(
                            &format!("{base}.client_cert"),
                            Some(&c.name),
                            format!("`{name}` has usage: server, so servers refuse it as a client certificate; give it usage: client (or server+client)"),
                        ),
                        Some(_) => {}
                    }
                }
                if let Some(roots) = &v.roots {
                    if !roots.exists() && !trust.iter().any(|t| &t.path == roots) {
                        self.err(
                            &format!("{base}.roots"),
                            Some(&c.name),
                            format!("{} does not exist; name a PEM file with the roots this target's clients trust", roots.display()),
                        );
                    }
                }
            }
        }
    }

    /// Names an ACME CA can validate with the challenges configured: a wildcard needs
    /// DNS-01, an IP address http-01 (a TXT record cannot prove an address).
    pub(super) fn check_acme_names(
        &mut self,
        certs: &[CertSpec],
        managed_at: &[usize],
        issuers: &BTreeMap<String, crate::config::AcmeSpec>,
    ) {
        for (c, i) in certs.iter().zip(managed_at) {
            let crate::model::IssuerRef::Acme(issuer) = &c.issuer else {
                continue;
            };
            let Some(spec) = issuers.get(issuer) else {
                continue;
            };
            for (j, san) in c.sans.iter().enumerate() {
                let field = format!("certificates[{i}].sans[{j}]");
                match san {
                    crate::model::San::Dns(d) if d.starts_with("*.") && spec.dns01.is_none() => {
                        self.err(
                            &field,
                            Some(&c.name),
                            format!("`{d}` is a wildcard: an ACME CA validates wildcards only with the DNS-01 challenge, and the issuer `{issuer}` answers http-01 only; add `challenge: dns01:` to it, list the names, or issue it from the internal CA"),
                        );
                    }
                    crate::model::San::Ip(ip) if !spec.http01() => {
                        self.err(
                            &field,
                            Some(&c.name),
                            format!("`{ip}` is an IP address: an ACME CA validates addresses with http-01 (not DNS-01), and the issuer `{issuer}` answers DNS-01 only; add `challenge: http01:` to it"),
                        );
                    }
                    _ => {}
                }
            }
        }
    }
}
