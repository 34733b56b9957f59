//! The configuration file: parse (serde), then resolve and check every field and every
//! cross-field rule, collecting all errors with file, line and field. Pure apart from
//! `load` (reads the file) and user/group name look-ups.

mod checks;
pub mod diff;
mod error;
mod fields;
mod limits;
mod lines;
mod locate;
mod raw;
pub mod reference;
mod sections;
mod spec;
mod split;
mod tape;

pub use error::{ConfigError, ConfigErrors, LoadError};
pub use spec::*;

use crate::constraints::{NameConstraints, NameRule};
use crate::duration::{format_duration, parse_duration, RenewBefore};
use crate::fsread::{self, ReadError, CONFIG_MAX};
use crate::model::{excerpt, one_of, validate_dns_name, IssuerRef, KeyType, Layout, San, Usage};
use locate::Locator;
use raw::*;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    // One streaming walk bounds the document's shape and cuts out the certificates;
    // the deserializer then reads each piece once.
    let split = match split::split_checked(text) {
        Ok(split) => split,
        Err(e) => {
            return Err(ConfigErrors(vec![ConfigError {
                file: file.to_path_buf(),
                line: Some(e.line),
                field: String::new(),
                certificate: None,
                message: e.message,
            }]))
        }
    };
    let mut cx = Ctx::new(file, text);
    let config = cx.resolve(text, split);
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

struct Ctx<'t> {
    file: PathBuf,
    /// The file's text (not a copy: with 10,000 certificates it is 1.7 MB).
    text: &'t str,
    loc: std::cell::OnceCell<Locator>,
    errors: Vec<ConfigError>,
    /// Names of the certificates resolved so far, with their list index.
    cert_index: Vec<(String, usize)>,
    /// `hooks.timeout`: the default of every certificate's own hooks.
    hook_timeout: Duration,
    /// Issuers declared with errors (reported there, not again as unknown).
    broken_issuers: std::collections::BTreeSet<String>,
    /// The last `reload:` list and hooks given to a certificate, given to the next
    /// ones that have the same: one copy for thousands of certificates.
    shared_reload: Option<std::sync::Arc<[String]>>,
    shared_hooks: Option<std::sync::Arc<Hooks>>,
}

impl Ctx<'_> {
    fn new<'t>(file: &Path, text: &'t str) -> Ctx<'t> {
        Ctx {
            file: file.to_path_buf(),
            text,
            loc: std::cell::OnceCell::new(),
            errors: Vec::new(),
            cert_index: Vec::new(),
            hook_timeout: DEFAULT_COMMAND_TIMEOUT,
            broken_issuers: Default::default(),
            shared_reload: None,
            shared_hooks: None,
        }
    }
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

impl Ctx<'_> {
    fn loc(&self) -> &Locator {
        self.loc.get_or_init(|| Locator::new(self.text))
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

    fn resolve(&mut self, text: &str, split: Option<split::Split>) -> Option<Config> {
        // Certificates are deserialized one by one when the list can be cut out of the
        // document (`split`): memory then stays flat with thousands of them.
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
        let mut toks = Vec::new();
        let items: Vec<CertItem> = match (split, certs_value) {
            (Some(split), _) => {
                toks = split.toks;
                split.items.into_iter().map(CertItem::Cut).collect()
            }
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
        // Sized once: grown by doubling, the list of 10,000 would hold room for 16,384
        // (2.5 MB unused), then be copied to its size.
        certificates.reserve_exact(items.len());
        self.hook_timeout = hooks
            .as_ref()
            .map_or(DEFAULT_COMMAND_TIMEOUT, |h| h.timeout);
        // A slice of certificates at a time is read on all cores, straight into their
        // fields, then resolved in order; anything amiss is read again as a value,
        // which names the field at fault as for every other section.
        let mut rest: Vec<(usize, CertItem)> = items.into_iter().enumerate().collect();
        while !rest.is_empty() {
            let later = rest.split_off(rest.len().min(CONFIG_SLICE));
            let slice = std::mem::replace(&mut rest, later);
            let batches: Vec<&[(usize, CertItem)]> = slice.chunks(PARSE_BATCH).collect();
            let read: Vec<Option<raw::RawCertificate>> =
                crate::par::map(&batches, 2, |b| read_batch(text, &toks, b))
                    .into_iter()
                    .flatten()
                    .collect();
            for ((i, item), fast) in slice.into_iter().zip(read) {
                let item = match item {
                    CertItem::Value(v) => CertInput::Value(v),
                    CertItem::Cut(cut) => {
                        let line = cut.line;
                        if let Some(raw) = fast {
                            CertInput::Raw(Box::new(raw))
                        } else {
                            match serde_yaml::from_str::<serde_yaml::Value>(&cut.text(text)) {
                                Ok(v) => CertInput::Value(v),
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
                    }
                };
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
        }
        // The entries' events are done with: their room goes to the checks.
        drop(toks);
        let trust = trust_value
            .and_then(|v| self.section::<Vec<RawTrust>>("trust", v, None))
            .map(|raw| self.resolve_trust(raw, &servers))
            .unwrap_or_default();

        self.check_outputs(
            state_dir.as_deref(),
            &certificates,
            &managed_at,
            &watched,
            &watched_at,
            &trust,
        );
        self.check_verify_refs(&certificates, &managed_at, &trust);
        self.check_acme_names(&certificates, &managed_at, &issuers);
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
}

/// Certificates read together on all cores (their texts and fields held at once).
const CONFIG_SLICE: usize = 1024;
/// Certificates read by one parser: a YAML parser costs more to set up than a
/// certificate's few lines cost to read.
const PARSE_BATCH: usize = 64;

/// Each certificate of `batch` read straight into its fields (None: read it again as a
/// value, which names what is wrong). An item cut from the file is read from the
/// events the split recorded when it could record them all (see `tape`); the others
/// are parsed again. Consecutive items cut from one block list at one indentation are,
/// put back one after another behind their `- `, the list's own text: one parse reads
/// them all. Anything else, or a batch that fails, is read item by item.
fn read_batch(
    text: &str,
    toks: &[tape::Tok],
    batch: &[(usize, CertItem)],
) -> Vec<Option<raw::RawCertificate>> {
    let mut read: Vec<Option<raw::RawCertificate>> = batch
        .iter()
        .map(|(_, item)| match item {
            CertItem::Cut(cut) => cut
                .tape
                .clone()
                .and_then(|range| tape::read(text, &toks[range])),
            CertItem::Value(_) => None,
        })
        .collect();
    let left: Vec<(usize, String)> = batch
        .iter()
        .zip(&read)
        .enumerate()
        .filter_map(|(k, ((_, item), fast))| match (item, fast) {
            (CertItem::Cut(cut), None) => Some((k, cut.text(text))),
            _ => None,
        })
        .collect();
    let texts: Vec<&str> = left.iter().map(|(_, t)| t.as_str()).collect();
    match read_together(&texts) {
        Some(all) => {
            for ((k, _), raw) in left.iter().zip(all) {
                read[*k] = Some(raw);
            }
        }
        None => {
            for (k, t) in &left {
                read[*k] = serde_yaml::from_str::<raw::RawCertificate>(t).ok();
            }
        }
    }
    read
}

/// Items cut from a block list, all at one indentation, read by one parser as the list
/// they were cut from; None when they are not such items or one of them is amiss.
fn read_together(texts: &[&str]) -> Option<Vec<raw::RawCertificate>> {
    let column = |t: &str| t.len() - t.trim_start_matches(' ').len();
    let col = column(texts.first()?);
    if texts.len() < 2 || col < 2 || texts.iter().any(|t| column(t) != col) {
        return None;
    }
    let mut list = String::with_capacity(texts.iter().map(|t| t.len() + 1).sum());
    for t in texts {
        // An item cut after a block scalar ends with the next line's indentation: left
        // out, or `|+` would keep one more line break than the file has.
        let body = match t.rfind('\n') {
            Some(end) if t[end + 1..].bytes().all(|b| b == b' ' || b == b'\t') => &t[col..=end],
            _ => &t[col..],
        };
        list.push_str(&t[..col - 2]);
        list.push_str("- ");
        list.push_str(body);
        if !body.ends_with('\n') {
            list.push('\n');
        }
    }
    let all: Vec<raw::RawCertificate> = serde_yaml::from_str(&list).ok()?;
    (all.len() == texts.len()).then_some(all)
}

enum CertItem {
    Cut(split::Item),
    Value(serde_yaml::Value),
}

/// A certificate entry to resolve: read straight into its fields, or a value (whose
/// errors name the field at fault).
enum CertInput {
    Raw(Box<raw::RawCertificate>),
    Value(serde_yaml::Value),
}

enum Entry {
    Managed(Box<CertSpec>),
    Watched(WatchSpec),
}

#[cfg(test)]
mod tests;
