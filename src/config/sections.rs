//! Resolution section by section: `ca`, `defaults`, `servers`, `issuers`, `hooks`,
//! `certificates` (with their files and `verify`) and `trust`.

use super::fields::{describe_layout, inherit, quiet_mode};
use super::raw::*;
use super::*;

impl Ctx<'_> {
    /// Resolves a `hooks:` section; `timeout` is the default when it sets none.
    pub(super) fn resolve_hooks(
        &mut self,
        path: &str,
        cert: Option<&str>,
        raw: &RawHooks,
        timeout: Duration,
    ) -> Option<Hooks> {
        let before = self.errors.len();
        let commands = |cx: &mut Ctx<'_>, field: &str, raw: &Option<RawCommands>| {
            let list = match raw {
                None => Vec::new(),
                Some(RawCommands::One(c)) => vec![c.clone()],
                Some(RawCommands::Many(cs)) => cs.clone(),
            };
            for (i, c) in list.iter().enumerate() {
                if c.is_empty() || c[0].is_empty() {
                    let at = match raw {
                        Some(RawCommands::Many(_)) => format!("{path}.{field}[{i}]"),
                        _ => format!("{path}.{field}"),
                    };
                    cx.err(
                        &at,
                        cert,
                        "is an empty command; give the program and its arguments as a list, e.g. [systemctl, reload, postfix]",
                    );
                }
            }
            list
        };
        let renewed = commands(self, "renewed", &raw.renewed);
        let failed = commands(self, "failed", &raw.failed);
        let expiring = commands(self, "expiring", &raw.expiring);
        let timeout = match &raw.timeout {
            Some(t) => self.duration(&format!("{path}.timeout"), cert, &t.0),
            None => Some(timeout),
        };
        if self.errors.len() > before {
            return None;
        }
        Some(Hooks {
            renewed,
            failed,
            expiring,
            timeout: timeout?,
        })
    }

    pub(super) fn resolve_ca(&mut self, raw: RawCa) -> Option<CaSpec> {
        let organization = raw.organization.unwrap_or_else(|| "certkeeper".into());
        let common_name = raw
            .common_name
            .unwrap_or_else(|| format!("{organization} Internal CA"));
        let key = self.key_type("ca.key", None, raw.key.as_deref().unwrap_or("ecdsa-p256"));
        if key == Some(KeyType::Ed25519) && raw.allow_ed25519 != Some(true) {
            self.err(
                "ca.key",
                None,
                "an Ed25519 CA cannot be imported by NSS (Firefox, and Chromium on Linux): every site it signs breaks in those browsers; use ecdsa-p256 or ecdsa-p384, or set `ca.allow_ed25519: true` when no browser will ever trust this CA",
            );
            return None;
        }
        let root = self.duration(
            "ca.root_lifetime",
            None,
            raw.root_lifetime
                .as_ref()
                .map(|t| t.0.as_str())
                .unwrap_or("10y"),
        );
        let inter = self.duration(
            "ca.intermediate_lifetime",
            None,
            raw.intermediate_lifetime
                .as_ref()
                .map(|t| t.0.as_str())
                .unwrap_or("3y"),
        );
        // `Some(None)`: not set; `None`: set, and wrong (reported).
        let passphrase_file = match raw.key_passphrase_file.as_deref() {
            Some(p) => self.abs_path("ca.key_passphrase_file", None, p).map(Some),
            None => Some(None),
        };
        let root = root.filter(|d| self.fits("ca.root_lifetime", None, *d));
        let inter = inter.filter(|d| self.fits("ca.intermediate_lifetime", None, *d));
        let permitted = self.name_rules("ca.permitted", raw.permitted.as_deref());
        let excluded = self.name_rules("ca.excluded", raw.excluded.as_deref());
        if let (Some(r), Some(i)) = (root, inter) {
            if i > r {
                self.err(
                    "ca.intermediate_lifetime",
                    None,
                    format!(
                        "{} is longer than ca.root_lifetime ({}); an intermediate cannot outlive its root",
                        format_duration(i),
                        format_duration(r)
                    ),
                );
                return None;
            }
        }
        let rotate_before = match &raw.rotate_before {
            None => Some(RenewBefore::Share(333)),
            Some(t) => match RenewBefore::parse(&t.0) {
                Ok(RenewBefore::Share(p)) if p == 0 || p >= 1000 => {
                    self.err(
                        "ca.rotate_before",
                        None,
                        "must be a share between 0% and 100% (exclusive), or a duration"
                            .to_string(),
                    );
                    None
                }
                Ok(r) => Some(r),
                Err(e) => {
                    self.err("ca.rotate_before", None, e);
                    None
                }
            },
        };
        let root_overlap = match &raw.root_overlap {
            None => root.map(crate::policy::ca::default_root_overlap),
            Some(t) => self.duration("ca.root_overlap", None, &t.0),
        };
        if let (Some(r), Some(o)) = (root, root_overlap) {
            if o >= r / 2 {
                self.err(
                    "ca.root_overlap",
                    None,
                    format!(
                        "{} is too long for a root that lives {}; it must be less than half of ca.root_lifetime",
                        format_duration(o),
                        format_duration(r)
                    ),
                );
                return None;
            }
        }
        Some(CaSpec {
            organization,
            common_name,
            key: key?,
            root_lifetime: root?,
            intermediate_lifetime: inter?,
            rotate_before: rotate_before?,
            root_overlap: root_overlap?,
            constraints: NameConstraints {
                permitted: permitted?,
                excluded: excluded?,
            },
            key_passphrase_file: passphrase_file?,
        })
    }

    /// `ca.permitted` or `ca.excluded`: each rule parsed, a bad or repeated one reported
    /// at its index.
    fn name_rules(&mut self, field: &str, raw: Option<&[String]>) -> Option<Vec<NameRule>> {
        let before = self.errors.len();
        let mut out: Vec<(usize, NameRule)> = Vec::new();
        for (i, text) in raw.unwrap_or_default().iter().enumerate() {
            match text.parse::<NameRule>() {
                Ok(rule) => match out.iter().find(|(_, r)| *r == rule) {
                    Some((j, _)) => self.err(
                        &format!("{field}[{i}]"),
                        None,
                        format!("`{}` is already listed as {field}[{j}]", excerpt(text)),
                    ),
                    None => out.push((i, rule)),
                },
                Err(e) => self.err(&format!("{field}[{i}]"), None, e),
            }
        }
        (self.errors.len() == before).then(|| out.into_iter().map(|(_, r)| r).collect())
    }

    pub(super) fn check_defaults(&mut self, d: &RawDefaults) {
        // Resolve once so that bad defaults are reported at `defaults.*`, not per certificate.
        if let Some(k) = &d.key {
            self.key_type("defaults.key", None, k);
        }
        if let Some(u) = &d.usage {
            u.parse::<Usage>()
                .map_err(|e| self.err("defaults.usage", None, e))
                .ok();
        }
        for (f, v) in [("lifetime", &d.lifetime), ("warn_before", &d.warn_before)] {
            if let Some(v) = v {
                let field = format!("defaults.{f}");
                if let Some(d) = self.duration(&field, None, &v.0) {
                    if f == "lifetime" {
                        self.fits(&field, None, d);
                    }
                }
            }
        }
        if let Some(r) = &d.renew_before {
            RenewBefore::parse(&r.0)
                .map_err(|e| self.err("defaults.renew_before", None, e))
                .ok();
        }
        for (f, m, secret) in [
            ("key_mode", &d.key_mode, true),
            ("cert_mode", &d.cert_mode, false),
        ] {
            if let Some(m) = m {
                self.mode(&format!("defaults.{f}"), None, m, secret);
            }
        }
        if let Some(o) = &d.owner {
            self.principal("defaults.owner", None, o, false);
        }
        if let Some(g) = &d.group {
            self.principal("defaults.group", None, g, true);
        }
    }

    pub(super) fn resolve_servers(&mut self, raw: RawServers) -> BTreeMap<String, ServerSpec> {
        let mut out = BTreeMap::new();
        for (name, s) in raw {
            let path = format!("servers.{name}");
            let kind = match s.kind.as_str() {
                "nginx" => ServerKind::Nginx,
                "apache" => ServerKind::Apache,
                "systemd" => ServerKind::Systemd,
                "command" => ServerKind::Command,
                other => {
                    self.err(
                        &format!("{path}.type"),
                        None,
                        format!("`{}` is not a server type; use `nginx`, `apache`, `systemd` or `command`", excerpt(other)),
                    );
                    continue;
                }
            };
            let mut ok = true;
            let mut path_of =
                |cx: &mut Ctx<'_>, field: &str, v: &Option<String>| -> Option<PathBuf> {
                    let p = v
                        .as_ref()
                        .and_then(|t| cx.abs_path(&format!("{path}.{field}"), None, t));
                    if v.is_some() && p.is_none() {
                        ok = false;
                    }
                    p
                };
            let pid_file = path_of(self, "pid_file", &s.pid_file);
            let binary = path_of(self, "binary", &s.binary);
            let config = path_of(self, "config", &s.config);
            for (field, cmd) in [("test", &s.test), ("reload", &s.reload)] {
                if matches!(cmd, Some(c) if c.is_empty()) {
                    self.err(
                        &format!("{path}.{field}"),
                        None,
                        "is an empty command; give the program and its arguments as a list",
                    );
                    ok = false;
                }
            }
            match kind {
                ServerKind::Nginx | ServerKind::Apache
                    if pid_file.is_none() && s.reload.is_none() && s.pid_file.is_none() =>
                {
                    self.err(
                        &path,
                        None,
                        format!("a `{}` server needs `pid_file:` (where its master process id is) to be reloaded", s.kind),
                    );
                    ok = false;
                }
                ServerKind::Systemd if s.unit.is_none() && s.reload.is_none() => {
                    self.err(
                        &path,
                        None,
                        "a `systemd` server needs `unit:` (e.g. unit: haproxy.service)",
                    );
                    ok = false;
                }
                ServerKind::Command if s.reload.is_none() => {
                    self.err(
                        &path,
                        None,
                        "a `command` server needs `reload:` (the command that reloads it)",
                    );
                    ok = false;
                }
                _ => {}
            }
            let timeout = match &s.timeout {
                Some(t) => match parse_duration(&t.0) {
                    Ok(d) if d.is_zero() => {
                        self.err(&format!("{path}.timeout"), None, "must be longer than 0s");
                        None
                    }
                    Ok(d) => Some(d),
                    Err(e) => {
                        self.err(&format!("{path}.timeout"), None, e);
                        None
                    }
                },
                None => Some(DEFAULT_COMMAND_TIMEOUT),
            };
            ok &= timeout.is_some();
            if matches!(kind, ServerKind::Systemd | ServerKind::Command)
                && (s.binary.is_some() || s.config.is_some())
            {
                self.err(&path, None, "`binary:` and `config:` apply only to nginx and apache servers; use `test:` and `reload:`");
                ok = false;
            }
            if ok {
                out.insert(
                    name.clone(),
                    ServerSpec {
                        name,
                        kind,
                        pid_file,
                        binary,
                        config,
                        unit: s.unit,
                        test: s.test,
                        reload: s.reload,
                        timeout: timeout.unwrap_or(DEFAULT_COMMAND_TIMEOUT),
                    },
                );
            }
        }
        out
    }

    pub(super) fn resolve_issuers(&mut self, raw: RawIssuers) -> BTreeMap<String, AcmeSpec> {
        let mut out = BTreeMap::new();
        for (name, i) in raw {
            let path = format!("issuers.{name}.acme");
            if name == IssuerRef::INTERNAL {
                self.err(
                    &format!("issuers.{name}"),
                    None,
                    "`internal` is the built-in CA's name; choose another",
                );
                continue;
            }
            // The name becomes a directory under state_dir/acme/.
            if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
                self.err(
                    &format!("issuers.{name}"),
                    None,
                    "is not a usable issuer name (it names a directory under state_dir/acme): use letters, digits, `.`, `_` and `-`",
                );
                continue;
            }
            let a = i.acme;
            let mut ok = true;
            if !a.directory.starts_with("https://") && !a.directory.starts_with("http://") {
                self.err(&format!("{path}.directory"), None, format!("`{}` is not a URL; give the ACME directory URL, e.g. https://ca.example.internal/acme/acme/directory", excerpt(&a.directory)));
                ok = false;
            }
            let ca_bundle = a
                .ca_bundle
                .as_ref()
                .and_then(|p| self.abs_path(&format!("{path}.ca_bundle"), None, p));
            ok &= a.ca_bundle.is_none() || ca_bundle.is_some();
            let eab = match &a.eab {
                Some(e) => match self.abs_path(
                    &format!("{path}.eab.hmac_key_file"),
                    None,
                    &e.hmac_key_file,
                ) {
                    Some(p) => Some((e.kid.clone(), p)),
                    None => {
                        ok = false;
                        None
                    }
                },
                None => None,
            };
            let (mut webroot, mut standalone) = (None, None);
            if let Some(h) = &a.challenge.http01 {
                webroot = h.webroot.as_ref().and_then(|p| {
                    self.abs_path(&format!("{path}.challenge.http01.webroot"), None, p)
                });
                standalone = match &h.standalone {
                    Some(s) => match s.parse::<SocketAddr>() {
                        Ok(a) => Some(a),
                        Err(_) => {
                            self.err(
                                &format!("{path}.challenge.http01.standalone"),
                                None,
                                format!(
                                    "`{}` is not an address:port, e.g. \"0.0.0.0:80\"",
                                    excerpt(s)
                                ),
                            );
                            ok = false;
                            None
                        }
                    },
                    None => None,
                };
                if h.webroot.is_some() == h.standalone.is_some() {
                    self.err(
                        &format!("{path}.challenge.http01"),
                        None,
                        "give exactly one of `webroot:` or `standalone:`",
                    );
                    ok = false;
                }
                ok &= h.webroot.is_none() || webroot.is_some();
            }
            let dns01 = match &a.challenge.dns01 {
                Some(d) => {
                    let spec = self.dns01(&format!("{path}.challenge.dns01"), d);
                    ok &= spec.is_some();
                    spec
                }
                None => None,
            };
            if a.challenge.http01.is_none() && a.challenge.dns01.is_none() {
                self.err(
                    &format!("{path}.challenge"),
                    None,
                    "give `http01:` or `dns01:` (or both: http-01 then answers plain names and DNS-01 wildcards)",
                );
                ok = false;
            }
            let profile = match &a.profile {
                Some(p) => {
                    let checked = self.profile_name(&format!("{path}.profile"), None, p);
                    ok &= checked.is_some();
                    checked
                }
                None => None,
            };
            if !ok {
                self.broken_issuers.insert(name.clone());
            }
            if ok {
                out.insert(
                    name.clone(),
                    AcmeSpec {
                        name,
                        directory: a.directory,
                        ca_bundle,
                        contact: a.contact.unwrap_or_default(),
                        eab,
                        webroot,
                        standalone,
                        dns01,
                        profile,
                    },
                );
            }
        }
        out
    }

    pub(super) fn resolve_cert(
        &mut self,
        i: usize,
        item: CertInput,
        defaults: &RawDefaults,
        servers: &BTreeMap<String, ServerSpec>,
        issuers: &BTreeMap<String, AcmeSpec>,
        ca: Option<&CaSpec>,
    ) -> Option<Entry> {
        let hook_timeout = self.hook_timeout;
        let path = format!("certificates[{i}]");
        let unnamed = || format!("#{}", i + 1);
        let (raw, label) = match item {
            CertInput::Raw(raw) => {
                let label = raw.name.clone().unwrap_or_else(unnamed);
                (*raw, label)
            }
            CertInput::Value(value) => {
                let label = value
                    .get("name")
                    .and_then(|n| n.as_str())
                    .map(str::to_string)
                    .unwrap_or_else(unnamed);
                let raw: RawCertificate = self.section(&path, value, Some(&label))?;
                (raw, label)
            }
        };
        let cert = Some(label.as_str());
        let f = |field: &str| format!("{path}.{field}");
        let before = self.errors.len();

        let name = self.cert_name(&raw.name, &path, cert);

        if let Some(n) = &name {
            self.cert_index.push((n.clone(), i));
        }

        if let Some(watch) = &raw.watch {
            let managed_fields = [
                ("sans", raw.sans.is_some()),
                ("files", raw.files.is_some()),
                ("common_name", raw.common_name.is_some()),
                ("key", raw.key.is_some()),
                ("lifetime", raw.lifetime.is_some()),
                ("verify", raw.verify.is_some()),
                ("hooks", raw.hooks.is_some()),
                ("fallback", raw.fallback.is_some()),
                ("profile", raw.profile.is_some()),
            ];
            for (field, set) in managed_fields {
                if set {
                    self.err(&f(field), cert, format!("a watch-only certificate (`watch:`) is never issued or written, so `{field}` does not apply; remove it, or remove `watch:` to manage the certificate"));
                }
            }
            let path_ = self.abs_path(&f("watch"), cert, watch);
            let warn = raw
                .warn_before
                .as_ref()
                .or(defaults.warn_before.as_ref())
                .map(|t| t.0.as_str())
                .unwrap_or("21d")
                .to_string();
            let warn_before = self.duration(&f("warn_before"), cert, &warn);
            if self.errors.len() > before {
                return None;
            }
            return Some(Entry::Watched(WatchSpec {
                name: name?,
                path: path_?,
                warn_before: warn_before?,
            }));
        }

        let (sans, common_name) = self.cert_names(&raw, &path, cert);

        // A bad default is reported once at `defaults.*`; here only the certificate's own
        // values are reported (`own`), a default is taken quietly.
        let key_text = inherit(
            &raw.key,
            &defaults.key,
            || "ecdsa-p256".into(),
            f("key"),
            "key",
        );
        let key = if key_text.own {
            self.key_type(&key_text.field, cert, &key_text.value)
        } else {
            key_text.value.parse().ok()
        };
        let usage_text = inherit(
            &raw.usage,
            &defaults.usage,
            || "server".into(),
            f("usage"),
            "usage",
        );
        let usage = match usage_text.value.parse::<Usage>() {
            Ok(u) => Some(u),
            Err(e) => {
                if usage_text.own {
                    self.err(&usage_text.field, cert, e);
                }
                None
            }
        };
        let (lifetime, renew_before) = self.cert_timing(&raw, defaults, &path, cert, ca);
        let (owner, group, key_mode, cert_mode) = self.cert_access(&raw, defaults, &path, cert);
        let issuer = inherit(
            &raw.issuer,
            &defaults.issuer,
            || IssuerRef::INTERNAL.into(),
            f("issuer"),
            "issuer",
        );
        let (issuer, issuer_field) = (issuer.value, issuer.field);
        if let Some(ca) = ca.filter(|_| issuer == IssuerRef::INTERNAL) {
            let own_cn = raw.common_name.is_some();
            let cn = common_name.as_deref();
            self.check_constraints(&path, cert, &sans, cn, own_cn, &ca.constraints);
        }
        if issuer != IssuerRef::INTERNAL
            && !issuers.contains_key(&issuer)
            && !self.broken_issuers.contains(&issuer)
        {
            self.err(
                &issuer_field,
                cert,
                format!(
                    "unknown issuer `{}`; use `internal` or one declared under `issuers:`",
                    excerpt(&issuer)
                ),
            );
        }
        let mut fallback = Vec::new();
        for (j, name) in raw.fallback.iter().flatten().enumerate() {
            let field = format!("{}[{j}]", f("fallback"));
            if name == &issuer {
                self.err(
                    &field,
                    cert,
                    format!(
                        "`{}` is this certificate's issuer already; a fallback is another issuer",
                        excerpt(name)
                    ),
                );
            } else if name != IssuerRef::INTERNAL
                && !issuers.contains_key(name)
                && !self.broken_issuers.contains(name)
            {
                self.err(
                    &field,
                    cert,
                    format!(
                        "unknown issuer `{}`; use `internal` or one declared under `issuers:`",
                        excerpt(name)
                    ),
                );
            } else {
                fallback.push(IssuerRef::named(name));
            }
        }
        let fallback_before = match (&raw.fallback_before, renew_before) {
            (Some(t), _) => match RenewBefore::parse(&t.0) {
                Ok(r) => Some(r),
                Err(e) => {
                    self.err(&f("fallback_before"), cert, e);
                    None
                }
            },
            (None, Some(RenewBefore::Share(p))) => Some(RenewBefore::Share(p / 2)),
            (None, Some(RenewBefore::Fixed(d))) => Some(RenewBefore::Fixed(d / 2)),
            (None, None) => None,
        };
        let profile = match &raw.profile {
            Some(p) if issuer == IssuerRef::INTERNAL => {
                self.err(
                    &f("profile"),
                    cert,
                    format!("`{}` is an ACME profile, and this certificate comes from the internal CA, which has none; remove it or set `issuer:` to an ACME issuer", excerpt(p)),
                );
                None
            }
            Some(p) => self.profile_name(&f("profile"), cert, p),
            None => None,
        };
        let reload = inherit(
            &raw.reload,
            &defaults.reload,
            Vec::new,
            f("reload"),
            "reload",
        );
        let (reload, reload_field) = (reload.value, reload.field);
        self.check_reloads(&reload_field, cert, &reload, servers);

        let files = match &raw.files {
            None => {
                self.err(&path, cert, "has no `files:`; say where to install it, e.g. files: { layout: nginx, cert: /etc/nginx/tls/www.crt, key: /etc/nginx/tls/www.key }");
                None
            }
            Some(files) => self.resolve_files(&f("files"), cert, files),
        };
        let verify = match raw.verify.clone() {
            None => Some(Vec::new()),
            Some(v) => self.resolve_verifies(&f("verify"), cert, v, &sans),
        };
        let hooks = match &raw.hooks {
            None => Some(Hooks {
                timeout: hook_timeout,
                ..Hooks::default()
            }),
            Some(h) => self.resolve_hooks(&f("hooks"), cert, h, hook_timeout),
        };
        if self.errors.len() > before {
            return None;
        }
        Some(Entry::Managed(Box::new(CertSpec {
            name: name?,
            common_name: common_name?,
            sans,
            usage: usage?,
            key: key?,
            lifetime: lifetime?,
            renew_before: renew_before?,
            owner: owner.map(Box::new),
            group: group.map(Box::new),
            key_mode: key_mode?,
            cert_mode: cert_mode?,
            issuer: IssuerRef::named(&issuer),
            files: files?,
            reload: shared(&mut self.shared_reload, reload),
            verify: verify?,
            follow_symlinks: raw
                .follow_symlinks
                .or(defaults.follow_symlinks)
                .unwrap_or(false),
            hooks: shared(&mut self.shared_hooks, hooks?),
            fallback,
            fallback_before: fallback_before?,
            profile,
        })))
    }

    /// A certificate's `name`: present, usable as a directory name, not too long.
    fn cert_name(
        &mut self,
        raw: &Option<String>,
        path: &str,
        cert: Option<&str>,
    ) -> Option<String> {
        let f = |field: &str| format!("{path}.{field}");
        match raw {
            None => {
                self.err(
                    path,
                    cert,
                    "has no `name:`; give every certificate a unique name such as `www`",
                );
                None
            }
            Some(n)
                if n.is_empty()
                    || n == "."
                    || n == ".."
                    || !n.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c)
                    }) =>
            {
                self.err(&f("name"), cert, format!("`{}` is not a valid name; use lower-case letters, digits, `.`, `_` and `-` (not `.` or `..` alone: names become directory names)", excerpt(n)));
                None
            }
            Some(n) if n.len() > MAX_NAME_LEN => {
                self.err(&f("name"), cert, format!("`{}` is {} characters long; a name has at most {MAX_NAME_LEN} (names become directory and file names)", excerpt(n), n.len()));
                None
            }
            Some(n) => Some(n.clone()),
        }
    }

    /// A certificate's `sans` (parsed, no duplicates) and its common name (given, or the
    /// first DNS name).
    fn cert_names(
        &mut self,
        raw: &RawCertificate,
        path: &str,
        cert: Option<&str>,
    ) -> (Vec<San>, Option<String>) {
        let f = |field: &str| format!("{path}.{field}");
        let sans: Vec<San> = match &raw.sans {
            None => {
                self.err(path, cert, "has no `sans:`; list the DNS names and IP addresses it is for, e.g. sans: [www.example.internal]");
                Vec::new()
            }
            Some(list) if list.is_empty() => {
                self.err(
                    &f("sans"),
                    cert,
                    "is empty; list at least one DNS name or IP address",
                );
                Vec::new()
            }
            Some(list) => {
                let mut out: Vec<San> = Vec::new();
                for (j, s) in list.iter().enumerate() {
                    match San::parse(s) {
                        Ok(san) if out.contains(&san) => self.err(
                            &format!("{path}.sans[{j}]"),
                            cert,
                            format!("`{}` is listed twice", excerpt(s)),
                        ),
                        Ok(san) => out.push(san),
                        Err(e) => self.err(&format!("{path}.sans[{j}]"), cert, e),
                    }
                }
                // Kept for every certificate the daemon manages: no spare capacity.
                out.shrink_to_fit();
                out
            }
        };
        let common_name = match &raw.common_name {
            Some(cn) if cn.is_empty() || cn.len() > 64 => {
                self.err(&f("common_name"), cert, "must be 1 to 64 characters");
                None
            }
            Some(cn) => Some(cn.clone()),
            None => sans
                .iter()
                .find(|s| matches!(s, San::Dns(_)))
                .or(sans.first())
                .map(|s| s.to_string()),
        };
        (sans, common_name)
    }

    /// A certificate's `lifetime` and `renew_before` (own, else `defaults.*`, else
    /// built-in), checked against each other and the CA's intermediate.
    fn cert_timing(
        &mut self,
        raw: &RawCertificate,
        defaults: &RawDefaults,
        path: &str,
        cert: Option<&str>,
        ca: Option<&CaSpec>,
    ) -> (Option<Duration>, Option<RenewBefore>) {
        let f = |field: &str| format!("{path}.{field}");
        let text = |t: &Option<Text>| t.as_ref().map(|t| t.0.clone());
        let life_text = inherit(
            &text(&raw.lifetime),
            &text(&defaults.lifetime),
            || "90d".into(),
            f("lifetime"),
            "lifetime",
        );
        let lifetime_field = life_text.field.clone();
        let lifetime = if life_text.own {
            self.duration(&lifetime_field, cert, &life_text.value)
                .filter(|l| self.fits(&lifetime_field, cert, *l))
        } else {
            // A default that is too long is reported once, at `defaults.lifetime`.
            parse_duration(&life_text.value)
                .ok()
                .filter(|l| *l <= MAX_LIFETIME)
        };
        if let Some(l) = lifetime {
            if l < MIN_LIFETIME {
                self.err(
                    &lifetime_field,
                    cert,
                    format!(
                        "{} is too short; a certificate must live at least {}",
                        format_duration(l),
                        format_duration(MIN_LIFETIME)
                    ),
                );
            }
            if let Some(ca) = ca {
                if l > ca.intermediate_lifetime {
                    self.err(&lifetime_field, cert, format!("{} is longer than ca.intermediate_lifetime ({}); a certificate cannot outlive the CA that signs it", format_duration(l), format_duration(ca.intermediate_lifetime)));
                }
            }
        }
        let rb_text = inherit(
            &text(&raw.renew_before),
            &text(&defaults.renew_before),
            || "33%".into(),
            f("renew_before"),
            "renew_before",
        );
        // Problems of the combination (renew_before against the lifetime) belong where
        // renew_before was written, own or default.
        let rb_field = if rb_text.own || defaults.renew_before.is_some() {
            rb_text.field.clone()
        } else {
            "defaults.renew_before".into()
        };
        let renew_before = match RenewBefore::parse(&rb_text.value) {
            Ok(r) => Some(r),
            Err(e) => {
                if rb_text.own {
                    self.err(&rb_field, cert, e);
                }
                None
            }
        };
        if let (Some(l), Some(RenewBefore::Fixed(d))) = (lifetime, renew_before) {
            if d >= l {
                self.err(
                    &rb_field,
                    cert,
                    format!("renew_before ({}) is not shorter than the lifetime ({}): the certificate would be due the moment it is issued; shorten renew_before or use a share such as 33%", format_duration(d), format_duration(l)),
                );
            }
        }
        (lifetime, renew_before)
    }

    /// A certificate's owner, group and file modes (a default is taken quietly: a bad
    /// one is reported once, at `defaults.*`).
    #[allow(clippy::type_complexity)]
    fn cert_access(
        &mut self,
        raw: &RawCertificate,
        defaults: &RawDefaults,
        path: &str,
        cert: Option<&str>,
    ) -> (
        Option<Principal>,
        Option<Principal>,
        Option<u32>,
        Option<u32>,
    ) {
        let f = |field: &str| format!("{path}.{field}");
        let owner = match (&raw.owner, &defaults.owner) {
            (Some(o), _) => self.principal(&f("owner"), cert, o, false),
            (None, Some(o)) => self.principal_quiet(o, false),
            _ => None,
        };
        let group = match (&raw.group, &defaults.group) {
            (Some(g), _) => self.principal(&f("group"), cert, g, true),
            (None, Some(g)) => self.principal_quiet(g, true),
            _ => None,
        };
        let key_mode = match (&raw.key_mode, &defaults.key_mode) {
            (Some(m), _) => self.mode(&f("key_mode"), cert, m, true),
            (None, Some(m)) => quiet_mode(m, true),
            _ => Some(0o600),
        };
        let cert_mode = match (&raw.cert_mode, &defaults.cert_mode) {
            (Some(m), _) => self.mode(&f("cert_mode"), cert, m, false),
            (None, Some(m)) => quiet_mode(m, false),
            _ => Some(0o644),
        };
        (owner, group, key_mode, cert_mode)
    }

    pub(super) fn resolve_files(
        &mut self,
        path: &str,
        cert: Option<&str>,
        files: &RawFiles,
    ) -> Option<Files> {
        let f = |field: &str| format!("{path}.{field}");
        let Some(layout_text) = &files.layout else {
            self.err(
                &f("layout"),
                cert,
                format!(
                    "is missing; choose one of {}",
                    one_of(Layout::ALL.iter().map(|l| l.as_str()))
                ),
            );
            return None;
        };
        let layout: Layout = match layout_text.parse() {
            Ok(l) => l,
            Err(e) => {
                self.err(&f("layout"), cert, e);
                return None;
            }
        };
        let given = [
            ("cert", &files.cert),
            ("chain", &files.chain),
            ("fullchain", &files.fullchain),
            ("key", &files.key),
            ("p12", &files.p12),
        ];
        let mut ok = true;
        let mut resolved: HashMap<&str, PathBuf> = HashMap::new();
        for (field, value) in given {
            let needed = layout.needs().contains(&field);
            match (value, needed) {
                (None, true) => {
                    self.err(
                        &f(field),
                        cert,
                        format!(
                            "is missing: layout `{layout}` writes {}; add `{field}:`",
                            describe_layout(layout)
                        ),
                    );
                    ok = false;
                }
                (Some(_), false) => {
                    self.err(&f(field), cert, format!("layout `{layout}` does not write a `{field}` file (it writes {}); remove it or choose another layout", describe_layout(layout)));
                    ok = false;
                }
                (Some(v), true) => match self.abs_path(&f(field), cert, v) {
                    Some(p) => {
                        if p.as_os_str().to_string_lossy().ends_with('/') {
                            self.err(
                                &f(field),
                                cert,
                                format!(
                                    "`{}` names a directory; name the file, e.g. {}www.crt",
                                    excerpt(v),
                                    excerpt(v)
                                ),
                            );
                            ok = false;
                        } else {
                            resolved.insert(field, p);
                        }
                    }
                    None => ok = false,
                },
                (None, false) => {}
            }
        }
        // The password is read, never written: not one of the layout's files.
        let password_file = match (&files.password_file, layout) {
            (None, Layout::Pkcs12) => {
                self.err(
                    &f("password_file"),
                    cert,
                    "is missing: layout `pkcs12` encrypts the .p12 file with the password in this file; add `password_file:` naming a file of mode 0600 that holds it (one line)",
                );
                ok = false;
                None
            }
            (Some(_), other) if other != Layout::Pkcs12 => {
                self.err(
                    &f("password_file"),
                    cert,
                    format!("layout `{other}` writes no encrypted file; remove it, or choose layout `pkcs12`"),
                );
                ok = false;
                None
            }
            // Its contents are read when the file is written or checked (`check` says
            // when it cannot be used), not here: a config stays valid while a password
            // is being replaced.
            (Some(v), _) => {
                let p = self.abs_path(&f("password_file"), cert, v);
                ok &= p.is_some();
                p
            }
            (None, _) => None,
        };
        if let (Some(pw), Some(p12)) = (&password_file, resolved.get("p12")) {
            if pw == p12 {
                self.err(
                    &f("password_file"),
                    cert,
                    "is the `p12` file itself; keep the password in a file of its own",
                );
                ok = false;
            }
        }
        if !ok {
            return None;
        }
        // Every field the layout needs was checked above: each `?` holds.
        let mut take = |field: &str| resolved.remove(field);
        Some(match layout {
            Layout::Nginx => Files::Nginx {
                cert: take("cert")?,
                key: take("key")?,
            },
            Layout::Apache => Files::Apache {
                cert: take("cert")?,
                chain: take("chain")?,
                key: take("key")?,
            },
            Layout::Combined => Files::Combined {
                cert: take("cert")?,
            },
            Layout::Separate => Files::Separate {
                cert: take("cert")?,
                chain: take("chain")?,
                fullchain: take("fullchain")?,
                key: take("key")?,
            },
            Layout::Pkcs12 => Files::Pkcs12 {
                p12: take("p12")?,
                password_file: password_file?,
            },
        })
    }

    /// `verify:` as one target or a list of them; each labelled for metrics and status.
    fn resolve_verifies(
        &mut self,
        path: &str,
        cert: Option<&str>,
        value: serde_yaml::Value,
        sans: &[San],
    ) -> Option<Vec<VerifySpec>> {
        let items: Vec<(String, serde_yaml::Value)> = match value {
            serde_yaml::Value::Sequence(list) => list
                .into_iter()
                .enumerate()
                .map(|(i, v)| (format!("{path}[{i}]"), v))
                .collect(),
            v @ serde_yaml::Value::Mapping(_) => vec![(path.to_string(), v)],
            _ => {
                self.err(
                    path,
                    cert,
                    "is a target ({ connect: HOST:PORT, server_name: NAME }) or a list of them",
                );
                return None;
            }
        };
        let before = self.errors.len();
        let mut out: Vec<VerifySpec> = Vec::new();
        for (p, v) in items {
            let Some(raw) = self.section::<RawVerify>(&p, v, cert) else {
                continue;
            };
            let Some(spec) = self.resolve_verify(&p, cert, &raw, sans) else {
                continue;
            };
            if out
                .iter()
                .any(|o| o.connect == spec.connect && o.server_name == spec.server_name)
            {
                self.err(
                    &p,
                    cert,
                    format!(
                        "checks {} (SNI {}) a second time; remove one of the two",
                        spec.connect, spec.server_name
                    ),
                );
                continue;
            }
            out.push(spec);
        }
        if self.errors.len() > before {
            return None;
        }
        let shared: Vec<String> = out.iter().map(|v| v.connect.clone()).collect();
        for v in &mut out {
            if shared.iter().filter(|c| **c == v.connect).count() > 1 {
                v.label = format!("{} {}", v.connect, v.server_name);
            }
        }
        Some(out)
    }

    pub(super) fn resolve_verify(
        &mut self,
        path: &str,
        cert: Option<&str>,
        v: &RawVerify,
        sans: &[San],
    ) -> Option<VerifySpec> {
        let mut ok = true;
        let connect_ok = v.connect.parse::<SocketAddr>().is_ok()
            || v.connect.rsplit_once(':').is_some_and(|(host, port)| {
                port.parse::<u16>().is_ok() && validate_dns_name(host).is_ok()
            });
        if !connect_ok {
            self.err(
                &format!("{path}.connect"),
                cert,
                format!(
                    "`{}` is not host:port, e.g. 127.0.0.1:443",
                    excerpt(&v.connect)
                ),
            );
            ok = false;
        }
        let server_name = match &v.server_name {
            Some(n) => match validate_dns_name(n) {
                Ok(n) => Some(n),
                Err(e) => {
                    self.err(&format!("{path}.server_name"), cert, e);
                    None
                }
            },
            None => sans.iter().find_map(|s| match s {
                San::Dns(d) if !d.starts_with('*') => Some(d.clone()),
                _ => None,
            }),
        };
        if server_name.is_none() && v.server_name.is_none() {
            self.err(
                &format!("{path}.server_name"),
                cert,
                "is needed when the certificate has no plain DNS name to send as SNI",
            );
            ok = false;
        }
        let timeout = match &v.timeout {
            Some(t) => self.duration(&format!("{path}.timeout"), cert, &t.0),
            None => Some(Duration::from_secs(10)),
        };
        let every = match v.every.as_ref().map(|t| t.0.trim()) {
            None => Some(Some(Duration::from_secs(3600))),
            Some("0") => Some(None),
            Some(t) => match self.duration(&format!("{path}.every"), cert, t) {
                Some(d) if d < Duration::from_secs(1) => Some(None),
                Some(d) => Some(Some(d)),
                None => None,
            },
        };
        let roots = match &v.roots {
            None => Some(None),
            Some(r) => self.abs_path(&format!("{path}.roots"), cert, r).map(Some),
        };
        if !ok {
            return None;
        }
        Some(VerifySpec {
            label: v.connect.clone(),
            connect: v.connect.clone(),
            server_name: server_name?,
            timeout: timeout?,
            every: every?,
            roots: roots?,
            client_cert: v.client_cert.clone(),
        })
    }

    pub(super) fn resolve_trust(
        &mut self,
        raw: Vec<RawTrust>,
        servers: &BTreeMap<String, ServerSpec>,
    ) -> Vec<TrustSpec> {
        let mut out = Vec::new();
        for (i, t) in raw.into_iter().enumerate() {
            let path = format!("trust[{i}]");
            let before = self.errors.len();
            let p = self.abs_path(&format!("{path}.path"), None, &t.path);
            let contents = match t.contents.as_deref().unwrap_or("roots") {
                "roots" => Some(TrustContents::Roots),
                "chain" => Some(TrustContents::Chain),
                "crl" => Some(TrustContents::Crl),
                other => {
                    self.err(
                        &format!("{path}.contents"),
                        None,
                        format!(
                            "`{}` is not trust contents; use `roots`, `chain` or `crl`",
                            excerpt(other)
                        ),
                    );
                    None
                }
            };
            let reload = t.reload.unwrap_or_default();
            self.check_reloads(&format!("{path}.reload"), None, &reload, servers);
            if matches!(&t.run, Some(r) if r.is_empty()) {
                self.err(
                    &format!("{path}.run"),
                    None,
                    "is an empty command; give the program and its arguments as a list",
                );
            }
            let owner = t
                .owner
                .as_ref()
                .and_then(|o| self.principal(&format!("{path}.owner"), None, o, false));
            let group = t
                .group
                .as_ref()
                .and_then(|g| self.principal(&format!("{path}.group"), None, g, true));
            if self.errors.len() > before {
                continue;
            }
            if let (Some(path), Some(contents)) = (p, contents) {
                out.push(TrustSpec {
                    path,
                    contents,
                    reload,
                    run: t.run,
                    owner,
                    group,
                    follow_symlinks: t.follow_symlinks.unwrap_or(false),
                });
            }
        }
        out
    }
}

/// `value` as the copy in `slot` when it is the same (the certificate before said it
/// too), else as the new copy there.
fn shared<T, V>(slot: &mut Option<std::sync::Arc<T>>, value: V) -> std::sync::Arc<T>
where
    T: PartialEq + ?Sized,
    V: std::borrow::Borrow<T> + Into<std::sync::Arc<T>>,
{
    match slot {
        Some(s) if **s == *value.borrow() => s.clone(),
        _ => slot.insert(value.into()).clone(),
    }
}
