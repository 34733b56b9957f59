//! The configuration file: parse (serde), then resolve and check every field and every
//! cross-field rule, collecting all errors with file, line and field. Pure apart from
//! `load` (reads the file) and user/group name look-ups.

pub mod diff;
mod limits;
mod locate;
mod raw;
mod split;

use crate::duration::{format_duration, parse_duration, RenewBefore};
use crate::fsread::{self, ReadError, CONFIG_MAX};
use crate::model::{excerpt, one_of, validate_dns_name, IssuerRef, KeyType, Layout, San, Usage};
use locate::Locator;
use raw::*;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_PATH: &str = "/etc/certkeeper/config.yaml";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/certkeeper";
/// The longest certificate name: names become directory names, and file names with a
/// suffix (`NAME.crt`, `.NAME.crt.certkeeper-tmp-RANDOM`), within Linux's 255 bytes.
pub const MAX_NAME_LEN: usize = 200;
/// The longest path accepted (Linux's PATH_MAX, less the terminating zero).
pub const MAX_PATH_LEN: usize = 4095;
/// The longest message, field or word an error prints: a value the deserializer quotes
/// whole is cut here too.
const MAX_MESSAGE_CHARS: usize = 2000;
const MAX_WORD_CHARS: usize = 200;
/// The shortest lifetime a leaf may ask for: short enough for demos and tests.
pub const MIN_LIFETIME: Duration = Duration::from_secs(30);
/// The longest lifetime accepted: the end of a certificate must fit in its date field
/// (year 9999 at most); a thousand years is far past any use.
pub const MAX_LIFETIME: Duration = Duration::from_secs(1000 * 365 * 86_400);

#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    pub state_dir: PathBuf,
    pub ca: CaSpec,
    pub servers: BTreeMap<String, ServerSpec>,
    pub certificates: Vec<CertSpec>,
    pub watched: Vec<WatchSpec>,
    pub trust: Vec<TrustSpec>,
    pub issuers: BTreeMap<String, AcmeSpec>,
    pub metrics: Option<SocketAddr>,
    /// How many superseded pairs each certificate keeps in `state_dir/archive/NAME/`.
    pub archive_keep: usize,
    /// Commands run on events of every certificate (`hooks:` at the top level).
    pub hooks: Hooks,
}

/// The default `archive.keep`.
pub const DEFAULT_ARCHIVE_KEEP: usize = 5;
/// The default deadline of a server's config test or reload, and of a hook.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Commands to run when something happens to a certificate. Each is an argv list.
#[derive(Debug, Clone, PartialEq)]
pub struct Hooks {
    /// After a new pair was installed (and reloaded and verified).
    pub renewed: Vec<Vec<String>>,
    /// After each failed attempt.
    pub failed: Vec<Vec<String>>,
    /// Once when a certificate enters its last 10 % of validity without a renewal.
    pub expiring: Vec<Vec<String>>,
    /// How long one command may run before it is killed.
    pub timeout: Duration,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            renewed: Vec::new(),
            failed: Vec::new(),
            expiring: Vec::new(),
            timeout: DEFAULT_COMMAND_TIMEOUT,
        }
    }
}

impl Hooks {
    pub fn is_empty(&self) -> bool {
        self.renewed.is_empty() && self.failed.is_empty() && self.expiring.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CaSpec {
    pub organization: String,
    pub common_name: String,
    pub key: KeyType,
    pub root_lifetime: Duration,
    pub intermediate_lifetime: Duration,
}

/// A user or group, by the name the config gave and the id it resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub id: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CertSpec {
    pub name: String,
    pub common_name: String,
    pub sans: Vec<San>,
    pub usage: Usage,
    pub key: KeyType,
    pub lifetime: Duration,
    pub renew_before: RenewBefore,
    pub owner: Option<Principal>,
    pub group: Option<Principal>,
    pub key_mode: u32,
    pub cert_mode: u32,
    pub issuer: IssuerRef,
    pub files: Files,
    pub reload: Vec<String>,
    pub verify: Option<VerifySpec>,
    pub follow_symlinks: bool,
    /// This certificate's own hooks, run after the global ones.
    pub hooks: Hooks,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Files {
    pub layout: Layout,
    pub cert: PathBuf,
    pub chain: Option<PathBuf>,
    pub fullchain: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl Files {
    /// Every path this certificate writes, with its field name.
    pub fn paths(&self) -> Vec<(&'static str, &Path)> {
        let mut out = vec![("cert", self.cert.as_path())];
        for (field, p) in [
            ("chain", &self.chain),
            ("fullchain", &self.fullchain),
            ("key", &self.key),
        ] {
            if let Some(p) = p {
                out.push((field, p.as_path()));
            }
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct VerifySpec {
    pub connect: String,
    pub server_name: String,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WatchSpec {
    pub name: String,
    pub path: PathBuf,
    pub warn_before: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustContents {
    Roots,
    Chain,
    Crl,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrustSpec {
    pub path: PathBuf,
    pub contents: TrustContents,
    pub reload: Vec<String>,
    pub run: Option<Vec<String>>,
    pub owner: Option<Principal>,
    pub group: Option<Principal>,
    pub follow_symlinks: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    Nginx,
    Apache,
    Systemd,
    Command,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerSpec {
    pub name: String,
    pub kind: ServerKind,
    pub pid_file: Option<PathBuf>,
    pub binary: Option<PathBuf>,
    pub config: Option<PathBuf>,
    pub unit: Option<String>,
    pub test: Option<Vec<String>>,
    pub reload: Option<Vec<String>>,
    /// Deadline of the config test and of the reload command.
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AcmeSpec {
    pub name: String,
    pub directory: String,
    pub ca_bundle: Option<PathBuf>,
    pub contact: Vec<String>,
    pub eab: Option<(String, PathBuf)>,
    pub webroot: Option<PathBuf>,
    pub standalone: Option<SocketAddr>,
}

/// One problem in the configuration, with where it is and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    /// The YAML path of the field, e.g. `certificates[1].files.cert`.
    pub field: String,
    pub certificate: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": ")?;
        if let Some(cert) = &self.certificate {
            write!(f, "certificate `{}`, ", excerpt(cert))?;
        }
        if !self.field.is_empty() {
            write!(f, "field `{}`: ", bounded(&self.field))?;
        }
        f.write_str(&bounded(&self.message))
    }
}

/// `text` with every word longer than `MAX_WORD_CHARS` cut to an excerpt, and cut
/// itself after `MAX_MESSAGE_CHARS`: whatever a message quotes, it stays a message.
fn bounded(text: &str) -> std::borrow::Cow<'_, str> {
    let long_word = text
        .split_whitespace()
        .any(|w| w.chars().nth(MAX_WORD_CHARS).is_some());
    if !long_word && text.chars().nth(MAX_MESSAGE_CHARS).is_none() {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::new();
    let mut chars = 0;
    for (i, piece) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
            chars += 1;
        }
        let piece = if piece.chars().nth(MAX_WORD_CHARS).is_some() {
            excerpt(piece)
        } else {
            std::borrow::Cow::Borrowed(piece)
        };
        let n = piece.chars().count();
        if chars + n > MAX_MESSAGE_CHARS {
            out.extend(piece.chars().take(MAX_MESSAGE_CHARS.saturating_sub(chars)));
            out.push('…');
            break;
        }
        out.push_str(&piece);
        chars += n;
    }
    std::borrow::Cow::Owned(out)
}

/// Every problem found, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Why the configuration was not loaded: the file could not be read (nothing is wrong
/// *in* it), or what it says is wrong.
#[derive(Debug)]
pub enum LoadError {
    Unreadable(ReadError),
    Invalid(ConfigErrors),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Unreadable(e @ ReadError::PermissionDenied { .. }) => write!(
                f,
                "cannot read the configuration: {e}; run certkeeper as a user who may read the file (root, or with sudo), or pass another file with -c"
            ),
            LoadError::Unreadable(e) => write!(
                f,
                "cannot read the configuration: {e}; pass another file with -c or set CERTKEEPER_CONFIG"
            ),
            LoadError::Invalid(errs) => write!(f, "{errs}"),
        }
    }
}

impl std::error::Error for LoadError {}

/// The configuration file's text: a regular file of at most `CONFIG_MAX` bytes.
pub fn read(path: &Path) -> Result<String, ReadError> {
    let mut text = fsread::read_text(path, CONFIG_MAX)?;
    // The configuration holds no secrets (keys live in the files it names).
    Ok(std::mem::take(&mut *text))
}

/// Reads and checks the configuration file.
pub fn load(path: &Path) -> Result<Config, LoadError> {
    let text = read(path).map_err(LoadError::Unreadable)?;
    parse(&text, path).map_err(LoadError::Invalid)
}

/// Parses and checks configuration text; `file` is only used in messages.
pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigErrors> {
    if let Err(e) = limits::check(text) {
        return Err(ConfigErrors(vec![ConfigError {
            file: file.to_path_buf(),
            line: Some(e.line),
            field: String::new(),
            certificate: None,
            message: e.message,
        }]));
    }
    let mut cx = Ctx {
        file: file.to_path_buf(),
        text: text.to_string(),
        loc: std::cell::OnceCell::new(),
        errors: Vec::new(),
        cert_index: Vec::new(),
        hook_timeout: DEFAULT_COMMAND_TIMEOUT,
    };
    let config = cx.resolve(text);
    if cx.errors.is_empty() {
        Ok(config.expect("a config when there are no errors"))
    } else {
        // Lines are looked up only now: a valid file never pays for the second parse.
        for i in 0..cx.errors.len() {
            if cx.errors[i].line.is_none() {
                let field = cx.errors[i].field.clone();
                cx.errors[i].line = cx.loc().line(&field);
            }
        }
        cx.errors.sort_by_key(|e| e.line.unwrap_or(0));
        Err(ConfigErrors(cx.errors))
    }
}

struct Ctx {
    file: PathBuf,
    text: String,
    loc: std::cell::OnceCell<Locator>,
    errors: Vec<ConfigError>,
    /// Names of the certificates resolved so far, with their list index.
    cert_index: Vec<(String, usize)>,
    /// `hooks.timeout`: the default of every certificate's own hooks.
    hook_timeout: Duration,
}

const TOP_KEYS: &[&str] = &[
    "state_dir",
    "ca",
    "defaults",
    "servers",
    "certificates",
    "trust",
    "issuers",
    "metrics",
    "archive",
    "hooks",
];

impl Ctx {
    fn loc(&self) -> &Locator {
        self.loc.get_or_init(|| Locator::new(&self.text))
    }

    fn err(&mut self, field: &str, cert: Option<&str>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line: None,
            field: field.to_string(),
            certificate: cert.map(str::to_string),
            message: message.into(),
        });
    }

    /// Deserializes one section, reporting a structural error at its exact field.
    fn section<T: DeserializeOwned>(
        &mut self,
        path: &str,
        value: serde_yaml::Value,
        cert: Option<&str>,
    ) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(t) => Some(t),
            Err(e) => {
                let inner = e.path().to_string();
                let field = if inner == "." || inner.is_empty() {
                    path.to_string()
                } else if inner.starts_with('[') || path.is_empty() {
                    format!("{path}{inner}")
                } else {
                    format!("{path}.{inner}")
                };
                let mut message = e.into_inner().to_string();
                if message.starts_with("unknown field `") {
                    message = format!("{message}; remove it or fix its spelling");
                }
                self.err(&field, cert, message);
                None
            }
        }
    }

    fn resolve(&mut self, text: &str) -> Option<Config> {
        // Certificates are deserialized one by one when the list can be cut out of the
        // document: memory then stays flat with thousands of them.
        let split = split::split_certificates(text);
        let doc = split.as_ref().map_or(text, |s| s.rest.as_str());
        let value: serde_yaml::Value = match serde_yaml::from_str(doc) {
            Ok(v) => v,
            Err(e) => {
                self.errors.push(ConfigError {
                    file: self.file.clone(),
                    line: e.location().map(|l| l.line()),
                    field: String::new(),
                    certificate: None,
                    message: format!("not valid YAML: {e}"),
                });
                return None;
            }
        };
        let mut top = match value {
            serde_yaml::Value::Mapping(m) => m,
            serde_yaml::Value::Null => serde_yaml::Mapping::new(),
            _ => {
                self.err(
                    "",
                    None,
                    "the file must be a YAML mapping with keys such as `certificates:`",
                );
                return None;
            }
        };
        for key in top.keys() {
            let name = key.as_str().unwrap_or("?").to_string();
            if !TOP_KEYS.contains(&name.as_str()) {
                self.err(
                    &name,
                    None,
                    format!(
                        "unknown key `{}`; top-level keys are {}",
                        excerpt(&name),
                        one_of(TOP_KEYS.iter().copied())
                    ),
                );
            }
        }
        let mut take = |k: &str| top.remove(k).filter(|v| !v.is_null());

        let state_dir = match take("state_dir") {
            Some(v) => self
                .section::<String>("state_dir", v, None)
                .and_then(|s| self.abs_path("state_dir", None, &s)),
            None => Some(PathBuf::from(DEFAULT_STATE_DIR)),
        }
        // Resolved once: everything under it is then reached without following a link
        // (see `fsutil::Dir`), while the user may keep it behind a link of their own.
        .map(|dir| crate::fsutil::resolved(&dir));
        if let Some(dir) = &state_dir {
            if let Some(problem) = crate::fsutil::unsafe_dir(dir) {
                self.err(
                    "state_dir",
                    None,
                    format!(
                        "{} {problem}; it holds the CA keys, so only the user certkeeper runs as may write it (chmod go-w, or point state_dir elsewhere)",
                        dir.display()
                    ),
                );
            }
            if std::fs::metadata(dir).is_ok_and(|m| !m.is_dir()) {
                self.err(
                    "state_dir",
                    None,
                    format!(
                        "{} exists and is not a directory; point state_dir at a directory (certkeeper creates it when missing)",
                        dir.display()
                    ),
                );
            }
        }
        let ca = take("ca")
            .map(|v| self.section::<RawCa>("ca", v, None))
            .unwrap_or(Some(RawCa::default()))
            .and_then(|raw| self.resolve_ca(raw));
        let defaults = take("defaults")
            .map(|v| self.section::<RawDefaults>("defaults", v, None))
            .unwrap_or(Some(RawDefaults::default()));
        let servers = take("servers")
            .map(|v| self.section::<RawServers>("servers", v, None))
            .unwrap_or(Some(RawServers::new()))
            .map(|raw| self.resolve_servers(raw));
        let issuers = take("issuers")
            .map(|v| self.section::<RawIssuers>("issuers", v, None))
            .unwrap_or(Some(RawIssuers::new()))
            .map(|raw| self.resolve_issuers(raw));
        let metrics = take("metrics").and_then(|v| self.section::<RawMetrics>("metrics", v, None));
        let metrics = metrics.and_then(|m| match m.listen.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(
                    "metrics.listen",
                    None,
                    format!(
                        "`{}` is not an address:port, e.g. 127.0.0.1:9717",
                        excerpt(&m.listen)
                    ),
                );
                None
            }
        });
        let archive_keep = take("archive")
            .and_then(|v| self.section::<RawArchive>("archive", v, None))
            .and_then(|a| a.keep)
            .map_or(Some(DEFAULT_ARCHIVE_KEEP), |k| {
                if (0..=1000).contains(&k) {
                    Some(k as usize)
                } else {
                    self.err(
                        "archive.keep",
                        None,
                        format!("{k} is not a number of pairs from 0 to 1000 (default {DEFAULT_ARCHIVE_KEEP})"),
                    );
                    None
                }
            });
        let hooks = match take("hooks") {
            Some(v) => self
                .section::<RawHooks>("hooks", v, None)
                .and_then(|raw| self.resolve_hooks("hooks", None, &raw, DEFAULT_COMMAND_TIMEOUT)),
            None => Some(Hooks::default()),
        };
        let certs_value = take("certificates");
        // A configuration that manages and watches nothing must say so: an empty or
        // truncated file must never quietly stop certkeeper from managing everything.
        if split.is_none() && certs_value.is_none() {
            self.err(
                "certificates",
                None,
                "is missing or empty, so this configuration would manage nothing (an empty or truncated file?); list the certificates, or write `certificates: []` to say that nothing is managed yet",
            );
        }
        let trust_value = take("trust");

        let defaults = defaults.unwrap_or_default();
        self.check_defaults(&defaults);
        let servers = servers.unwrap_or_default();
        let issuers = issuers.unwrap_or_default();

        let mut certificates = Vec::new();
        let mut watched = Vec::new();
        // The list index of each resolved entry, for error paths.
        let mut managed_at = Vec::new();
        let mut watched_at = Vec::new();
        // Each certificate as text to parse (cut out of the file) or as a parsed value.
        let items: Vec<CertItem> = match (split, certs_value) {
            (Some(split), _) => split
                .items
                .into_iter()
                .map(|(t, l)| CertItem::Text(t, l))
                .collect(),
            (None, Some(serde_yaml::Value::Sequence(items))) => {
                items.into_iter().map(CertItem::Value).collect()
            }
            (None, Some(_)) => {
                self.err(
                    "certificates",
                    None,
                    "must be a list of certificates (`- name: ...`)",
                );
                Vec::new()
            }
            (None, None) => Vec::new(),
        };
        for (i, item) in items.into_iter().enumerate() {
            let item = match item {
                CertItem::Value(v) => v,
                CertItem::Text(chunk, line) => {
                    match serde_yaml::from_str::<serde_yaml::Value>(&chunk) {
                        Ok(v) => v,
                        Err(e) => {
                            self.errors.push(ConfigError {
                                file: self.file.clone(),
                                line: Some(line + e.location().map_or(1, |l| l.line()) - 1),
                                field: format!("certificates[{i}]"),
                                certificate: None,
                                message: format!("not valid YAML: {e}"),
                            });
                            continue;
                        }
                    }
                }
            };
            self.hook_timeout = hooks
                .as_ref()
                .map_or(DEFAULT_COMMAND_TIMEOUT, |h| h.timeout);
            match self.resolve_cert(i, item, &defaults, &servers, &issuers, ca.as_ref()) {
                Some(Entry::Managed(c)) => {
                    certificates.push(*c);
                    managed_at.push(i);
                }
                Some(Entry::Watched(w)) => {
                    watched.push(w);
                    watched_at.push(i);
                }
                None => {}
            }
        }
        let trust = trust_value
            .and_then(|v| self.section::<Vec<RawTrust>>("trust", v, None))
            .map(|raw| self.resolve_trust(raw, &servers))
            .unwrap_or_default();

        self.check_unique(&certificates, &managed_at, &watched, &watched_at, &trust);
        if let Some(state_dir) = &state_dir {
            self.check_own_paths(state_dir, &certificates, &managed_at, &trust);
        }
        certificates.shrink_to_fit();

        Some(Config {
            file: self.file.clone(),
            state_dir: state_dir?,
            ca: ca?,
            servers,
            certificates,
            watched,
            trust,
            issuers,
            metrics,
            archive_keep: archive_keep?,
            hooks: hooks?,
        })
    }

    /// Resolves a `hooks:` section; `timeout` is the default when it sets none.
    fn resolve_hooks(
        &mut self,
        path: &str,
        cert: Option<&str>,
        raw: &RawHooks,
        timeout: Duration,
    ) -> Option<Hooks> {
        let before = self.errors.len();
        let commands = |cx: &mut Ctx, field: &str, raw: &Option<RawCommands>| {
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

    fn abs_path(&mut self, field: &str, cert: Option<&str>, text: &str) -> Option<PathBuf> {
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

    fn duration(&mut self, field: &str, cert: Option<&str>, text: &str) -> Option<Duration> {
        parse_duration(text)
            .map_err(|e| self.err(field, cert, e))
            .ok()
    }

    /// Whether a lifetime fits in a certificate (see `MAX_LIFETIME`); reports it if not.
    fn fits(&mut self, field: &str, cert: Option<&str>, d: Duration) -> bool {
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

    fn key_type(&mut self, field: &str, cert: Option<&str>, text: &str) -> Option<KeyType> {
        text.parse()
            .map_err(|e: String| self.err(field, cert, e))
            .ok()
    }

    fn resolve_ca(&mut self, raw: RawCa) -> Option<CaSpec> {
        let organization = raw.organization.unwrap_or_else(|| "certkeeper".into());
        let common_name = raw
            .common_name
            .unwrap_or_else(|| format!("{organization} Internal CA"));
        let key = self.key_type("ca.key", None, raw.key.as_deref().unwrap_or("ecdsa-p256"));
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
        let root = root.filter(|d| self.fits("ca.root_lifetime", None, *d));
        let inter = inter.filter(|d| self.fits("ca.intermediate_lifetime", None, *d));
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
        Some(CaSpec {
            organization,
            common_name,
            key: key?,
            root_lifetime: root?,
            intermediate_lifetime: inter?,
        })
    }

    fn check_defaults(&mut self, d: &RawDefaults) {
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

    fn mode(
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

    fn principal(
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

    fn resolve_servers(&mut self, raw: RawServers) -> BTreeMap<String, ServerSpec> {
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
            let mut path_of = |cx: &mut Ctx, field: &str, v: &Option<String>| -> Option<PathBuf> {
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

    fn resolve_issuers(&mut self, raw: RawIssuers) -> BTreeMap<String, AcmeSpec> {
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
            let h = &a.challenge.http01;
            let webroot = h
                .webroot
                .as_ref()
                .and_then(|p| self.abs_path(&format!("{path}.challenge.http01.webroot"), None, p));
            let standalone = match &h.standalone {
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
                    },
                );
            }
        }
        out
    }

    fn check_reloads(
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

    fn resolve_cert(
        &mut self,
        i: usize,
        value: serde_yaml::Value,
        defaults: &RawDefaults,
        servers: &BTreeMap<String, ServerSpec>,
        issuers: &BTreeMap<String, AcmeSpec>,
        ca: Option<&CaSpec>,
    ) -> Option<Entry> {
        let hook_timeout = self.hook_timeout;
        let path = format!("certificates[{i}]");
        let label = value
            .get("name")
            .and_then(|n| n.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| format!("#{}", i + 1));
        let cert = Some(label.as_str());
        let raw: RawCertificate = self.section(&path, value, cert)?;
        let f = |field: &str| format!("{path}.{field}");
        let before = self.errors.len();

        let name = match &raw.name {
            None => {
                self.err(
                    &path,
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
        };

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

        let sans: Vec<San> = match &raw.sans {
            None => {
                self.err(&path, cert, "has no `sans:`; list the DNS names and IP addresses it is for, e.g. sans: [www.example.internal]");
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

        let pick = |own: &Option<String>, dflt: &Option<String>, builtin: &str| -> (String, bool) {
            match own {
                Some(v) => (v.clone(), true),
                None => (dflt.clone().unwrap_or_else(|| builtin.to_string()), false),
            }
        };
        let text = |t: &Option<Text>| t.as_ref().map(|t| t.0.clone());
        // A bad default is reported once at `defaults.*`; here only the certificate's own values.
        let (key_text, own_key) = pick(&raw.key, &defaults.key, "ecdsa-p256");
        let key = if own_key {
            self.key_type(&f("key"), cert, &key_text)
        } else {
            key_text.parse().ok()
        };
        let (usage_text, own_usage) = pick(&raw.usage, &defaults.usage, "server");
        let usage = match usage_text.parse::<Usage>() {
            Ok(u) => Some(u),
            Err(e) => {
                if own_usage {
                    self.err(&f("usage"), cert, e);
                }
                None
            }
        };
        let (life_text, own_life) = pick(&text(&raw.lifetime), &text(&defaults.lifetime), "90d");
        let lifetime = if own_life {
            self.duration(&f("lifetime"), cert, &life_text)
        } else {
            parse_duration(&life_text).ok()
        };
        let lifetime_field = if own_life {
            f("lifetime")
        } else if defaults.lifetime.is_some() {
            "defaults.lifetime".into()
        } else {
            f("lifetime")
        };
        // A default that is too long is reported once, at `defaults.lifetime`.
        let lifetime = if own_life {
            lifetime.filter(|l| self.fits(&lifetime_field, cert, *l))
        } else {
            lifetime.filter(|l| *l <= MAX_LIFETIME)
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
        let (rb_text, own_rb) = pick(
            &text(&raw.renew_before),
            &text(&defaults.renew_before),
            "33%",
        );
        let rb_field = if own_rb {
            f("renew_before")
        } else {
            "defaults.renew_before".into()
        };
        let renew_before = match RenewBefore::parse(&rb_text) {
            Ok(r) => Some(r),
            Err(e) => {
                if own_rb {
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
        let issuer = raw
            .issuer
            .clone()
            .or_else(|| defaults.issuer.clone())
            .unwrap_or_else(|| IssuerRef::INTERNAL.into());
        if issuer != IssuerRef::INTERNAL && !issuers.contains_key(&issuer) {
            let field = if raw.issuer.is_some() {
                f("issuer")
            } else {
                "defaults.issuer".into()
            };
            self.err(
                &field,
                cert,
                format!(
                    "unknown issuer `{}`; use `internal` or one declared under `issuers:`",
                    excerpt(&issuer)
                ),
            );
        }
        let reload = raw
            .reload
            .clone()
            .or_else(|| defaults.reload.clone())
            .unwrap_or_default();
        let reload_field = if raw.reload.is_some() {
            f("reload")
        } else {
            "defaults.reload".into()
        };
        self.check_reloads(&reload_field, cert, &reload, servers);

        let files = match &raw.files {
            None => {
                self.err(&path, cert, "has no `files:`; say where to install it, e.g. files: { layout: nginx, cert: /etc/nginx/tls/www.crt, key: /etc/nginx/tls/www.key }");
                None
            }
            Some(files) => self.resolve_files(&f("files"), cert, files),
        };
        let verify = match &raw.verify {
            None => None,
            Some(v) => self.resolve_verify(&f("verify"), cert, v, &sans),
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
            owner,
            group,
            key_mode: key_mode?,
            cert_mode: cert_mode?,
            issuer: IssuerRef::named(&issuer),
            files: files?,
            reload,
            verify,
            follow_symlinks: raw
                .follow_symlinks
                .or(defaults.follow_symlinks)
                .unwrap_or(false),
            hooks: hooks?,
        })))
    }

    fn principal_quiet(&mut self, name: &str, group: bool) -> Option<Principal> {
        let before = self.errors.len();
        let p = self.principal("", None, name, group);
        self.errors.truncate(before);
        p
    }

    fn resolve_files(&mut self, path: &str, cert: Option<&str>, files: &RawFiles) -> Option<Files> {
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
        if !ok {
            return None;
        }
        Some(Files {
            layout,
            cert: resolved.remove("cert")?,
            chain: resolved.remove("chain"),
            fullchain: resolved.remove("fullchain"),
            key: resolved.remove("key"),
        })
    }

    fn resolve_verify(
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
        if !ok {
            return None;
        }
        Some(VerifySpec {
            connect: v.connect.clone(),
            server_name: server_name?,
            timeout: timeout?,
        })
    }

    fn resolve_trust(
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

    /// Nothing certkeeper writes for a certificate or a trust target may land in its own
    /// state (the CA, the archive, the ledger, the lock) or on the configuration file,
    /// whatever the spelling (`..`, a symlinked directory).
    fn check_own_paths(
        &mut self,
        state_dir: &Path,
        certs: &[CertSpec],
        managed_at: &[usize],
        trust: &[TrustSpec],
    ) {
        let state = crate::fsutil::resolved(state_dir);
        let config = crate::fsutil::resolved(&self.file);
        let mut targets: Vec<(String, Option<String>, &Path, bool)> = Vec::new();
        for (c, i) in certs.iter().zip(managed_at) {
            for (field, p) in c.files.paths() {
                targets.push((
                    format!("certificates[{i}].files.{field}"),
                    Some(c.name.clone()),
                    p,
                    c.follow_symlinks,
                ));
            }
        }
        for (i, t) in trust.iter().enumerate() {
            targets.push((format!("trust[{i}].path"), None, &t.path, t.follow_symlinks));
        }
        // Directories looked at once each: thousands of certificates share a few.
        let mut links: HashMap<PathBuf, Option<PathBuf>> = HashMap::new();
        for (field, cert, path, follow) in targets {
            let real = crate::fsutil::resolved(path);
            let shown = if real.as_path() == path {
                String::new()
            } else {
                format!(" (that is {})", real.display())
            };
            if real.starts_with(&state) {
                self.err(
                    &field,
                    cert.as_deref(),
                    format!(
                        "{}{shown} is inside state_dir {}, which holds the CA, the archive, the ledger and the lock; certkeeper never writes a certificate there: choose a path outside it",
                        path.display(),
                        state_dir.display()
                    ),
                );
            } else if real == config {
                self.err(
                    &field,
                    cert.as_deref(),
                    format!(
                        "{}{shown} is the configuration file {}; choose another path",
                        path.display(),
                        self.file.display()
                    ),
                );
            } else if !follow {
                let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
                let link =
                    links
                        .entry(dir)
                        .or_insert_with_key(|dir| match crate::fsutil::no_link_on_way(dir) {
                            Err(crate::fsutil::FsError::LinkInPath { link, .. }) => Some(link),
                            _ => None,
                        });
                if let Some(link) = link {
                    self.err(
                        &field,
                        cert.as_deref(),
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

    fn check_unique(
        &mut self,
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
        // By the path the file system resolves (`..`, symlinked directories) and, for
        // files that exist, by device and inode (hard links).
        let mut claimed: HashMap<PathBuf, (String, PathBuf)> = HashMap::new();
        let mut claimed_ids: HashMap<(u64, u64), (String, PathBuf)> = HashMap::new();
        let mut claim = |cx: &mut Ctx,
                         path: &Path,
                         who: String,
                         field: String,
                         cert: Option<&str>| {
            let real = crate::fsutil::resolved(path);
            let id = crate::fsutil::file_identity(path);
            let other = claimed
                .get(&real)
                .or_else(|| id.and_then(|id| claimed_ids.get(&id)));
            if let Some((other, other_path)) = other {
                let spelling = if other_path.as_path() == path {
                    String::new()
                } else {
                    format!(" (as {})", other_path.display())
                };
                cx.err(
                        &field,
                        cert,
                        format!(
                            "{} is also written by {other}{spelling}; two outputs cannot share one file",
                            path.display()
                        ),
                    );
            } else {
                claimed.insert(real, (who.clone(), path.to_path_buf()));
                if let Some(id) = id {
                    claimed_ids.insert(id, (who, path.to_path_buf()));
                }
            }
        };
        for (c, i) in certs.iter().zip(managed_at) {
            let base = format!("certificates[{i}]");
            for (field, p) in c.files.paths() {
                claim(
                    self,
                    p,
                    format!("certificate `{}` (files.{field})", c.name),
                    format!("{base}.files.{field}"),
                    Some(&c.name),
                );
            }
        }
        for (w, i) in watched.iter().zip(watched_at) {
            let base = format!("certificates[{i}]");
            claim(
                self,
                &w.path,
                format!("watched certificate `{}`", w.name),
                format!("{base}.watch"),
                Some(&w.name),
            );
        }
        for (i, t) in trust.iter().enumerate() {
            claim(
                self,
                &t.path,
                format!("trust[{i}]"),
                format!("trust[{i}].path"),
                None,
            );
        }
    }
}

enum CertItem {
    Text(String, usize),
    Value(serde_yaml::Value),
}

enum Entry {
    Managed(Box<CertSpec>),
    Watched(WatchSpec),
}

fn quiet_mode(raw: &RawMode, secret: bool) -> Option<u32> {
    let mut cx = Ctx {
        file: PathBuf::new(),
        text: String::new(),
        loc: std::cell::OnceCell::new(),
        errors: Vec::new(),
        cert_index: Vec::new(),
        hook_timeout: DEFAULT_COMMAND_TIMEOUT,
    };
    cx.mode("", None, raw, secret)
}

fn describe_layout(layout: Layout) -> &'static str {
    match layout {
        Layout::Nginx => "`cert` (leaf + intermediates) and `key`",
        Layout::Apache => "`cert` (leaf), `chain` (intermediates) and `key`",
        Layout::Combined => "one `cert` file holding key, leaf and intermediates",
        Layout::Separate => "`cert`, `chain`, `fullchain` and `key`",
    }
}

#[cfg(test)]
mod tests;
