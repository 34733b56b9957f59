//! `certkeeper inspect [FILE...] [--connect HOST:PORT]`: what is in any PEM or DER file
//! (`-`: standard input), or what a TLS server serves, whether chains are in order and
//! which keys belong to which certificates (across everything given). Reads only; never
//! writes a file.
//!
//! Exit codes: 0 when all is well; 1 when a file cannot be read, a chain is out of
//! order, a key matches none of the certificates given, the connection fails, or what
//! the server serves does not verify; 2 on a usage error (a bad `--connect`,
//! `--server-name` or `--ca-file`, or a `--config` that cannot be loaded).
//!
//! `--connect` completes the handshake whatever the server presents (the chain is
//! captured without judging it; the server's handshake signature is still checked), then
//! verifies what was served as a strict client would: a chain to the trusted roots, the
//! server name (`--server-name`, by default HOST: a DNS name, or an IP address matched
//! against the IP SANs), the dates, keys and signatures clients accept. The roots are
//! `--ca-file` when given; otherwise the internal CA's roots when a configuration can be
//! read (`--config`, `$CERTKEEPER_CONFIG`, or the default path when that file exists)
//! and its CA exists, then the system's roots (`$SSL_CERT_FILE`, else
//! /etc/ssl/certs/ca-certificates.crt): what either set accepts verifies, and the output
//! says which one did. The handshake has a 10 s timeout.
//!
//! `--json` prints one JSON document with the same facts and exit code. Its fields
//! (stable; new ones may be added):
//!
//! - `ok`: whether everything is in order (exit code 0).
//! - `files`: one object per FILE, in the order given:
//!   - `file`: the path as given (`-` for standard input);
//!   - `error`: why it could not be read, or null;
//!   - `items`: its PEM blocks in order (see below);
//!   - `chain`: with two certificates or more, `{ "in_order": bool, "problem": string|null }`
//!     (each certificate must be signed by the next), else null.
//! - `connection` (with `--connect` only): `connect`, `server_name`, `error` (null, or
//!   why no certificate could be had), `protocol` (`TLSv1.3`), `cipher_suite`,
//!   `key_exchange`, `certificates` (items, as served, leaf first), `chain` (as for
//!   files), and `verification`: `{ "ok", "trusted", "trusted_by" (the roots that
//!   accepted the chain, or null), "checked_against" (every set of roots tried),
//!   "hostname_match", "leaf_validity", "problems" (what a client refuses, in words) }`.
//!
//! An item has `index` (1-based, within its file) and `kind`:
//! - `certificate`: `subject`, `issuer`, `sans` (`DNS:…`/`IP:…` values as plain names),
//!   `other_names`, `serial` (lower-case hex), `not_before`, `not_after` (RFC 3339),
//!   `validity` (`valid`, `expired`, `not_yet_valid`), `seconds_left` (negative once
//!   expired), `key_type` (certkeeper's name, e.g. `ecdsa-p256`, or null), `key_size`
//!   (bits), `fingerprint_sha256` (hex of the DER), `is_ca`, `path_length`, `usage`
//!   (`server`, `client`, `server+client`, or null), `self_signed`, `subject_key_id`,
//!   `authority_key_id` (colon hex), `matching_keys` (`[{ "source", "index" }]`: the
//!   private keys given that belong to it), `signature_algorithm`, `public_key`
//!   (`algorithm`, `size`, `curve`, `exponent`, `spki_sha256`) and `extensions`
//!   (`[{ "oid", "name", "critical", "values": [string] }]`, in certificate order);
//! - `private_key`: `key_type`, `key_size`, `matching_certificates` (`[{ "source", "index" }]`);
//! - `other`: `label` (a PEM block that is neither, e.g. `X509 CRL`).
//!
//! A `source` is a FILE as given, or the `--connect` address for served certificates.

use super::ca::print_cert;
use super::CliError;
use crate::config::{self, Config, LoadError};
use crate::encoding::colon_hex;
use crate::fsread::{read_regular, PEM_MAX};
use crate::keys::KeyInfo;
use crate::model::{excerpt, KeyType};
use crate::policy::rfc3339;
use crate::served::{Anchors, Problem};
use crate::x509::details::{details, Extension, PublicKey};
use crate::x509::{check_chain_order, parse_pem, CertInfo, PemItem};
use serde::Serialize;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use time::OffsetDateTime;

/// How long the TCP connection and the handshake of `--connect` may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// PEM or DER files (`-`: standard input)
    #[arg(required_unless_present = "connect")]
    files: Vec<PathBuf>,
    /// One JSON document describing everything (same exit code)
    #[arg(long)]
    json: bool,
    /// Also the signature algorithm, public key details and every extension
    #[arg(long)]
    long: bool,
    /// Connect to a TLS server (HOST:PORT; PORT defaults to 443), show the chain it
    /// serves and verify it; with FILEs too, keys in them are matched against it
    #[arg(long, value_name = "HOST:PORT")]
    connect: Option<String>,
    /// The name to ask for (SNI) and to verify (default: HOST)
    #[arg(long, value_name = "NAME", requires = "connect")]
    server_name: Option<String>,
    /// Trust these roots (PEM) for --connect, instead of the internal CA's and the system's
    #[arg(long, value_name = "FILE", requires = "connect")]
    ca_file: Option<PathBuf>,
    /// Configuration whose internal CA's roots --connect trusts (default: the default
    /// path, when that file exists)
    #[arg(short = 'c', long = "config", env = "CERTKEEPER_CONFIG")]
    config: Option<PathBuf>,
}

/// Everything `inspect` found; the text view and `--json` show the same.
#[derive(Debug, Serialize)]
pub struct Report {
    pub ok: bool,
    pub files: Vec<Source>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection: Option<Connection>,
}

/// One FILE.
#[derive(Debug, Serialize)]
pub struct Source {
    pub file: String,
    pub error: Option<String>,
    pub items: Vec<Item>,
    pub chain: Option<ChainVerdict>,
    /// How the text view names it.
    #[serde(skip)]
    shown: String,
}

#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Item {
    Certificate(Box<CertView>),
    PrivateKey(KeyView),
    Other { index: usize, label: String },
}

#[derive(Debug, Serialize)]
pub struct CertView {
    pub index: usize,
    pub subject: String,
    pub issuer: String,
    pub sans: Vec<String>,
    pub other_names: Vec<String>,
    pub serial: String,
    pub not_before: String,
    pub not_after: String,
    pub validity: &'static str,
    pub seconds_left: i64,
    pub key_type: Option<&'static str>,
    pub key_size: Option<usize>,
    pub fingerprint_sha256: String,
    pub is_ca: bool,
    pub path_length: Option<u32>,
    pub usage: Option<&'static str>,
    pub self_signed: bool,
    pub subject_key_id: Option<String>,
    pub authority_key_id: Option<String>,
    pub matching_keys: Vec<Ref>,
    pub signature_algorithm: String,
    pub public_key: PublicKey,
    pub extensions: Vec<Extension>,
    #[serde(skip)]
    info: CertInfo,
}

#[derive(Debug, Serialize)]
pub struct KeyView {
    pub index: usize,
    pub key_type: Option<&'static str>,
    pub key_size: Option<usize>,
    pub matching_certificates: Vec<Ref>,
    #[serde(skip)]
    info: KeyInfo,
}

/// An item elsewhere: its FILE (or `--connect` address) and index.
#[derive(Debug, Clone, Serialize)]
pub struct Ref {
    pub source: String,
    pub index: usize,
    #[serde(skip)]
    shown: String,
}

#[derive(Debug, Serialize)]
pub struct ChainVerdict {
    pub in_order: bool,
    pub problem: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Connection {
    pub connect: String,
    pub server_name: String,
    pub error: Option<String>,
    pub protocol: Option<String>,
    pub cipher_suite: Option<String>,
    pub key_exchange: Option<String>,
    pub certificates: Vec<Item>,
    pub chain: Option<ChainVerdict>,
    pub verification: Option<Verification>,
}

#[derive(Debug, Serialize)]
pub struct Verification {
    pub ok: bool,
    pub trusted: bool,
    pub trusted_by: Option<String>,
    pub checked_against: Vec<String>,
    pub hostname_match: bool,
    pub leaf_validity: &'static str,
    pub problems: Vec<String>,
}

pub fn run(args: InspectArgs, now: OffsetDateTime) -> Result<u8, CliError> {
    // Usage errors first, before any file is read or any connection made.
    let target = match &args.connect {
        Some(c) => Some(target(c, args.server_name.as_deref())?),
        None => None,
    };
    let anchors = match &target {
        Some(_) => anchors(&args)?,
        None => Vec::new(),
    };
    let mut files: Vec<Source> = args.files.iter().map(|f| read_source(f)).collect();
    let mut connection = target.map(|(connect, server_name)| connect_to(connect, server_name));
    link_keys(&mut files, connection.as_mut(), now);
    if let Some(c) = connection.as_mut() {
        verify(c, &anchors, now);
    }
    let ok = files.iter().all(source_ok)
        && connection.as_ref().is_none_or(|c| {
            c.error.is_none()
                && c.chain.as_ref().is_none_or(|v| v.in_order)
                && c.verification.as_ref().is_some_and(|v| v.ok)
        })
        && keys_ok(&files, connection.as_ref());
    let report = Report {
        ok,
        files,
        connection,
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("the report serializes")
        );
    } else {
        print_report(&report, args.long, now);
    }
    Ok(u8::from(!report.ok))
}

fn source_ok(s: &Source) -> bool {
    s.error.is_none() && s.chain.as_ref().is_none_or(|c| c.in_order)
}

/// Every key matches a certificate, unless no certificate was given at all.
fn keys_ok(files: &[Source], connection: Option<&Connection>) -> bool {
    let any_cert = files
        .iter()
        .flat_map(|s| &s.items)
        .chain(connection.iter().flat_map(|c| &c.certificates))
        .any(|i| matches!(i, Item::Certificate(_)));
    !any_cert
        || files.iter().flat_map(|s| &s.items).all(|i| match i {
            Item::PrivateKey(k) => !k.matching_certificates.is_empty(),
            _ => true,
        })
}

// ---------------------------------------------------------------------------------------
// Reading

fn read_source(f: &Path) -> Source {
    let stdin = f.as_os_str() == "-";
    let shown = if stdin {
        "(standard input)".to_string()
    } else {
        f.display().to_string()
    };
    // Any file may be given: only a regular one of PEM size is read, so that a FIFO or
    // a device is an error at once rather than a hang (standard input is read up to the
    // same size).
    let bytes = if stdin {
        read_stdin()
    } else {
        read_regular(f, PEM_MAX).map_err(|e| e.reason())
    };
    let (items, error) = match bytes.and_then(|b| parse_any(&b)) {
        Ok(items) if items.is_empty() => (
            Vec::new(),
            Some("no PEM blocks (not a certificate or key file, or overwritten)".to_string()),
        ),
        Ok(items) => (items, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    let items: Vec<Item> = items
        .into_iter()
        .enumerate()
        .map(|(i, it)| view(i + 1, it))
        .collect();
    let chain = chain_verdict(&items);
    Source {
        file: f.display().to_string(),
        error,
        items,
        chain,
        shown,
    }
}

fn view(index: usize, item: PemItem) -> Item {
    match item {
        PemItem::Cert(c) => Item::Certificate(Box::new(cert_view(index, *c))),
        PemItem::Key(k) => Item::PrivateKey(KeyView {
            index,
            key_type: k.key_type.map(KeyType::as_str),
            key_size: k.key_type.map(key_bits),
            matching_certificates: Vec::new(),
            info: k,
        }),
        PemItem::Other(label) => Item::Other {
            index,
            label: excerpt(&label).to_string(),
        },
    }
}

fn key_bits(k: KeyType) -> usize {
    match k {
        KeyType::EcdsaP256 | KeyType::Ed25519 => 256,
        KeyType::EcdsaP384 => 384,
        KeyType::Rsa2048 => 2048,
        KeyType::Rsa3072 => 3072,
        KeyType::Rsa4096 => 4096,
    }
}

fn cert_view(index: usize, c: CertInfo) -> CertView {
    // The DER was parsed once already: details cannot fail on it.
    let d = details(&c.der).unwrap_or_else(|_| crate::x509::details::Details {
        signature_algorithm: String::new(),
        public_key: PublicKey {
            algorithm: String::new(),
            size: None,
            curve: None,
            exponent: None,
            spki_sha256: String::new(),
        },
        extensions: Vec::new(),
    });
    CertView {
        index,
        subject: c.subject.clone(),
        issuer: c.issuer.clone(),
        sans: c.sans.iter().map(|s| s.to_string()).collect(),
        other_names: c.other_names.clone(),
        serial: c.serial.clone(),
        not_before: rfc3339(c.not_before),
        not_after: rfc3339(c.not_after),
        validity: "valid",
        seconds_left: 0,
        key_type: c.key_type.map(KeyType::as_str),
        key_size: d.public_key.size,
        fingerprint_sha256: c.fingerprint.clone(),
        is_ca: c.is_ca,
        path_length: c.path_len,
        usage: c.usage.map(|u| u.as_str()),
        self_signed: c.is_self_signed(),
        subject_key_id: c.subject_key_id.as_deref().map(colon_hex),
        authority_key_id: c.authority_key_id.as_deref().map(colon_hex),
        matching_keys: Vec::new(),
        signature_algorithm: d.signature_algorithm,
        public_key: d.public_key,
        extensions: d.extensions,
        info: c,
    }
}

fn chain_verdict(items: &[Item]) -> Option<ChainVerdict> {
    let certs: Vec<CertInfo> = items
        .iter()
        .filter_map(|i| match i {
            Item::Certificate(c) => Some(c.info.clone()),
            _ => None,
        })
        .collect();
    (certs.len() > 1).then(|| match check_chain_order(&certs) {
        Ok(()) => ChainVerdict {
            in_order: true,
            problem: None,
        },
        Err(e) => ChainVerdict {
            in_order: false,
            problem: Some(e),
        },
    })
}

/// Dates against `now`, and which keys match which certificates, across every file and
/// the served chain.
fn link_keys(files: &mut [Source], connection: Option<&mut Connection>, now: OffsetDateTime) {
    let mut lists: Vec<(String, String, &mut Vec<Item>)> = files
        .iter_mut()
        .map(|s| (s.file.clone(), s.shown.clone(), &mut s.items))
        .collect();
    if let Some(c) = connection {
        lists.push((
            c.connect.clone(),
            format!("{} (served)", c.connect),
            &mut c.certificates,
        ));
    }
    let mut certs: Vec<(Ref, Vec<u8>)> = Vec::new();
    let mut keys: Vec<(Ref, Vec<u8>)> = Vec::new();
    for (source, shown, items) in &lists {
        for it in items.iter() {
            let at = |index| Ref {
                source: source.clone(),
                index,
                shown: format!("{shown} [{index}]"),
            };
            match it {
                Item::Certificate(c) => certs.push((at(c.index), c.info.public_key_raw.clone())),
                Item::PrivateKey(k) => keys.push((at(k.index), k.info.public_key_raw.clone())),
                Item::Other { .. } => {}
            }
        }
    }
    for (_, _, items) in lists.iter_mut() {
        for it in items.iter_mut() {
            match it {
                Item::Certificate(c) => {
                    let secs = (c.info.not_after - now).whole_seconds();
                    c.seconds_left = secs;
                    c.validity = if secs <= 0 {
                        "expired"
                    } else if now < c.info.not_before {
                        "not_yet_valid"
                    } else {
                        "valid"
                    };
                    c.matching_keys = keys
                        .iter()
                        .filter(|(_, pk)| *pk == c.info.public_key_raw)
                        .map(|(r, _)| r.clone())
                        .collect();
                }
                Item::PrivateKey(k) => {
                    k.matching_certificates = certs
                        .iter()
                        .filter(|(_, pk)| *pk == k.info.public_key_raw)
                        .map(|(r, _)| r.clone())
                        .collect();
                }
                Item::Other { .. } => {}
            }
        }
    }
}

/// Standard input, at most `PEM_MAX` bytes.
fn read_stdin() -> Result<zeroize::Zeroizing<Vec<u8>>, String> {
    use std::io::Read;
    let mut buf = zeroize::Zeroizing::new(Vec::new());
    std::io::stdin()
        .take(PEM_MAX + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot read standard input: {e}"))?;
    if buf.len() as u64 > PEM_MAX {
        return Err(format!(
            "more than {PEM_MAX} bytes on standard input: not a certificate or key"
        ));
    }
    Ok(buf)
}

/// PEM blocks, or one DER certificate or PKCS#8 key.
fn parse_any(bytes: &[u8]) -> Result<Vec<PemItem>, String> {
    let looks_pem = bytes.windows(11).any(|w| w == b"-----BEGIN ");
    if looks_pem || bytes.is_empty() {
        return parse_pem(bytes);
    }
    if let Ok(c) = CertInfo::from_der(bytes) {
        return Ok(vec![PemItem::Cert(Box::new(c))]);
    }
    if let Ok(k) = KeyInfo::from_der("PRIVATE KEY", bytes) {
        return Ok(vec![PemItem::Key(k)]);
    }
    Err("neither PEM nor a DER certificate or PKCS#8 key".to_string())
}

// ---------------------------------------------------------------------------------------
// Connecting

/// `--connect` and `--server-name` as an address to dial (`host:port`) and the name to
/// ask for and verify.
fn target(connect: &str, server_name: Option<&str>) -> Result<(String, String), CliError> {
    let usage = |why: &str| {
        CliError::Usage(format!(
            "--connect `{}`: {why}; give HOST:PORT, e.g. www.example.com:443 or [::1]:8443",
            excerpt(connect)
        ))
    };
    let (host, port) = if let Some(rest) = connect.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| usage("no `]` after the IPv6 address"))?;
        match after {
            "" => (host, None),
            p => (
                host,
                Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| usage("expected `:PORT` after `]`"))?,
                ),
            ),
        }
    } else if connect.parse::<IpAddr>().is_ok() {
        (connect, None)
    } else {
        match connect.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (connect, None),
        }
    };
    if host.is_empty() {
        return Err(usage("no host"));
    }
    let port: u16 = match port {
        None => 443,
        Some(p) => p
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| usage("the port is not a number from 1 to 65535"))?,
    };
    let dial = match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
        _ => format!("{host}:{port}"),
    };
    let name = server_name.unwrap_or(host).to_string();
    if rustls::pki_types::ServerName::try_from(name.clone()).is_err() {
        return Err(CliError::Usage(format!(
            "`{}` is neither a DNS name nor an IP address; give --server-name NAME",
            excerpt(&name)
        )));
    }
    Ok((dial, name))
}

/// The roots what a server serves is verified against, in the order tried.
fn anchors(args: &InspectArgs) -> Result<Vec<Anchors>, CliError> {
    if let Some(path) = &args.ca_file {
        let certs = read_regular(path, 4 << 20)
            .map_err(|e| e.reason())
            .and_then(|b| parse_pem(&b))
            .map_err(|e| CliError::Usage(format!("--ca-file {}: {e}", path.display())))?
            .into_iter()
            .filter_map(|i| match i {
                PemItem::Cert(c) => Some(c.der),
                _ => None,
            })
            .collect::<Vec<_>>();
        if certs.is_empty() {
            return Err(CliError::Usage(format!(
                "--ca-file {}: no certificate in it",
                path.display()
            )));
        }
        return Ok(vec![Anchors::new(
            certs,
            format!("the roots of {}", path.display()),
        )]);
    }
    let mut out = Vec::new();
    if let Some(config) = optional_config(args)? {
        match crate::reconcile::load_ca(&config) {
            Ok(Some(ca)) => out.push(Anchors::new(
                ca.roots().into_iter().map(|r| r.der.clone()).collect(),
                format!("the internal CA's roots ({})", ca.dir.display()),
            )),
            Ok(None) => {}
            Err(e) => eprintln!("warning: the internal CA's roots are not trusted: {e}"),
        }
    }
    let system = crate::reconcile::clients::system_store();
    let store = crate::reconcile::clients::read_anchors(
        &system,
        format!("the system's trusted roots ({})", system.display()),
    );
    out.push(Anchors::new(store.certs.clone(), store.source.clone()));
    Ok(out)
}

/// The configuration given (an error if it cannot be loaded), else the one at the
/// default path when that file exists (a warning if it cannot be loaded).
fn optional_config(args: &InspectArgs) -> Result<Option<Config>, CliError> {
    match &args.config {
        Some(path) => config::load(path).map(Some).map_err(CliError::Config),
        None => {
            let path = PathBuf::from(config::DEFAULT_PATH);
            if !path.exists() {
                return Ok(None);
            }
            match config::load(&path) {
                Ok(c) => Ok(Some(c)),
                Err(e) => {
                    let why = match e {
                        LoadError::Unreadable(u) => u.to_string(),
                        LoadError::Invalid(errs) => {
                            format!("{} errors in the configuration", errs.0.len())
                        }
                    };
                    eprintln!(
                        "warning: {}: {why}; the internal CA's roots are not trusted",
                        path.display()
                    );
                    Ok(None)
                }
            }
        }
    }
}

/// One handshake; what was served, or why nothing was.
fn connect_to(connect: String, server_name: String) -> Connection {
    let mut c = Connection {
        connect,
        server_name,
        error: None,
        protocol: None,
        cipher_suite: None,
        key_exchange: None,
        certificates: Vec::new(),
        chain: None,
        verification: None,
    };
    match crate::verify::served_chain(&c.connect, &c.server_name, CONNECT_TIMEOUT, None) {
        Ok(served) => {
            c.protocol = served.protocol;
            c.cipher_suite = served.cipher_suite;
            c.key_exchange = served.key_exchange;
            for (i, der) in served.chain.iter().enumerate() {
                c.certificates.push(match CertInfo::from_der(der) {
                    Ok(info) => Item::Certificate(Box::new(cert_view(i + 1, info))),
                    Err(e) => Item::Other {
                        index: i + 1,
                        label: format!("unreadable certificate ({e})"),
                    },
                });
            }
            c.chain = chain_verdict(&c.certificates);
        }
        Err(e) => c.error = Some(connect_error(e)),
    }
    c
}

/// Why no certificate could be had, in words for `--connect` (the daemon's messages
/// name its `verify` settings instead).
fn connect_error(e: crate::verify::VerifyError) -> String {
    use crate::verify::VerifyError;
    match e {
        VerifyError::Resolve { connect, source } => format!("cannot resolve `{connect}`: {source}"),
        VerifyError::Timeout { connect, after } => format!(
            "no answer from {connect} within {} s; is the server overloaded, or is it a port that does not speak TLS?",
            after.as_secs()
        ),
        other => other.to_string(),
    }
}

/// Judges what was served as a client trusting `anchors` would (the first set that
/// accepts the chain wins).
fn verify(c: &mut Connection, anchors: &[Anchors], now: OffsetDateTime) {
    let Some(Item::Certificate(leaf)) = c.certificates.first() else {
        if c.error.is_none() && !c.certificates.is_empty() {
            c.error = Some("the server's certificate cannot be read".into());
        }
        return;
    };
    let served: Vec<Vec<u8>> = c
        .certificates
        .iter()
        .filter_map(|i| match i {
            Item::Certificate(c) => Some(c.info.der.clone()),
            _ => None,
        })
        .collect();
    let mut tried: Vec<Vec<Problem>> = Vec::new();
    let mut trusted_by = None;
    for a in anchors {
        let problems = crate::served::as_a_client(&served, &c.server_name, a, now);
        let untrusted = problems
            .iter()
            .any(|p| matches!(p, Problem::Untrusted { .. }));
        tried.push(problems);
        if !untrusted {
            trusted_by = Some(a.source.clone());
            break;
        }
    }
    // Trusted: what that set of roots found. Not: the other problems once, and why
    // each set of roots refused the chain.
    let problems: Vec<Problem> = if trusted_by.is_some() {
        tried.pop().unwrap_or_default()
    } else {
        let mut all: Vec<Problem> = tried.first().cloned().unwrap_or_default();
        all.retain(|p| !matches!(p, Problem::Untrusted { .. }));
        all.extend(
            tried
                .iter()
                .flatten()
                .filter(|p| matches!(p, Problem::Untrusted { .. }))
                .cloned(),
        );
        all
    };
    c.verification = Some(Verification {
        ok: problems.is_empty(),
        trusted: trusted_by.is_some(),
        trusted_by,
        checked_against: anchors.iter().map(|a| a.source.clone()).collect(),
        hostname_match: !problems.iter().any(|p| matches!(p, Problem::Name { .. })),
        leaf_validity: leaf.validity,
        problems: problems.iter().map(|p| p.to_string()).collect(),
    });
}

// ---------------------------------------------------------------------------------------
// The text view

fn print_report(r: &Report, long: bool, now: OffsetDateTime) {
    for s in &r.files {
        match &s.error {
            Some(e) => println!("{}: ERROR: {e}", s.shown),
            None => {
                println!("{}:", s.shown);
                print_items(&s.items, long, now);
                print_chain(s.chain.as_ref());
            }
        }
    }
    if let Some(c) = &r.connection {
        print_connection(c, long, now);
    }
}

fn print_items(items: &[Item], long: bool, now: OffsetDateTime) {
    let list = |refs: &[Ref]| {
        refs.iter()
            .map(|r| r.shown.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    for item in items {
        match item {
            Item::Certificate(c) => {
                println!("  [{}] certificate", c.index);
                print_cert(&c.info, now, "      ");
                if !c.matching_keys.is_empty() {
                    println!("      key match: {}", list(&c.matching_keys));
                }
                if long {
                    print_long(c, "      ");
                }
            }
            Item::PrivateKey(k) => {
                let m = if k.matching_certificates.is_empty() {
                    "matches none of the certificates given".to_string()
                } else {
                    format!("matches {}", list(&k.matching_certificates))
                };
                println!(
                    "  [{}] private key ({}): {m}",
                    k.index,
                    k.key_type.unwrap_or("unsupported type")
                );
            }
            Item::Other { index, label } => println!("  [{index}] {label} (not inspected)"),
        }
    }
}

fn print_chain(chain: Option<&ChainVerdict>) {
    match chain {
        Some(ChainVerdict {
            problem: Some(e), ..
        }) => println!("  chain: WRONG: {e}"),
        Some(_) => println!("  chain: in order (each certificate is signed by the next)"),
        None => {}
    }
}

/// `openssl x509 -text`, readable: signature, public key, every extension.
fn print_long(c: &CertView, indent: &str) {
    println!("{indent}signature: {}", c.signature_algorithm);
    println!("{indent}public key: {}", c.public_key.summary());
    let spki = crate::encoding::hex_decode(&c.public_key.spki_sha256).unwrap_or_default();
    println!(
        "{indent}key sha256: {} (SubjectPublicKeyInfo)",
        colon_hex(&spki)
    );
    if c.extensions.is_empty() {
        println!("{indent}extensions: none");
        return;
    }
    println!("{indent}extensions:");
    for e in &c.extensions {
        let head = format!(
            "{indent}  {}{}",
            e.name,
            if e.critical { " (critical)" } else { "" }
        );
        match e.values.as_slice() {
            [] => println!("{head}"),
            [one] => println!("{head}: {one}"),
            many => {
                println!("{head}:");
                for v in many {
                    println!("{indent}    {v}");
                }
            }
        }
    }
}

fn print_connection(c: &Connection, long: bool, now: OffsetDateTime) {
    let head = format!("{} (server name {})", c.connect, c.server_name);
    if let Some(e) = &c.error {
        println!("{head}: ERROR: {e}");
        return;
    }
    println!("{head}:");
    let tls: Vec<String> = [
        c.protocol.clone(),
        c.cipher_suite.clone(),
        c.key_exchange.as_ref().map(|k| format!("key exchange {k}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    println!("  TLS:       {}", tls.join(", "));
    print_items(&c.certificates, long, now);
    print_chain(c.chain.as_ref());
    let Some(v) = &c.verification else {
        return;
    };
    match &v.trusted_by {
        Some(by) => println!("  trusted:   yes, by {by}"),
        None => println!(
            "  trusted:   NO (checked against {})",
            v.checked_against.join(" and ")
        ),
    }
    println!(
        "  name:      {} {}",
        c.server_name,
        if v.hostname_match {
            "matches the certificate"
        } else {
            "does NOT match the certificate"
        }
    );
    for p in &v.problems {
        println!("  PROBLEM:   {p}");
    }
    println!(
        "  verified:  {}",
        if v.ok && c.chain.as_ref().is_none_or(|v| v.in_order) {
            "OK"
        } else {
            "FAILED"
        }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_takes_host_port_ipv6_and_a_default_port() {
        let ok = |c: &str, n: Option<&str>| target(c, n).unwrap_or_else(|e| panic!("{c}: {e:?}"));
        assert_eq!(
            ok("www.example.com:8443", None),
            ("www.example.com:8443".into(), "www.example.com".into())
        );
        assert_eq!(
            ok("www.example.com", None),
            ("www.example.com:443".into(), "www.example.com".into())
        );
        assert_eq!(
            ok("127.0.0.1:8443", Some("www.example.internal")),
            ("127.0.0.1:8443".into(), "www.example.internal".into())
        );
        assert_eq!(
            ok("127.0.0.1:8443", None),
            ("127.0.0.1:8443".into(), "127.0.0.1".into())
        );
        assert_eq!(ok("[::1]:8443", None), ("[::1]:8443".into(), "::1".into()));
        assert_eq!(ok("::1", None), ("[::1]:443".into(), "::1".into()));
        for bad in [
            "www.example.com:https",
            ":443",
            "[::1",
            "host:0",
            "host:70000",
        ] {
            assert!(
                matches!(target(bad, None), Err(CliError::Usage(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            target("127.0.0.1:443", Some("not a name")),
            Err(CliError::Usage(_))
        ));
    }
}
