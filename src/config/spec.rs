//! What a configuration resolves to: the types the rest of certkeeper reads, with the
//! limits and defaults that apply to them.

use crate::constraints::NameConstraints;
use crate::duration::RenewBefore;
use crate::model::{IssuerRef, KeyType, Layout, San, Usage};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub const DEFAULT_PATH: &str = "/etc/certkeeper/config.yaml";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/certkeeper";
/// The longest certificate name: names become directory names, and file names with a
/// suffix (`NAME.crt`, `.NAME.crt.certkeeper-tmp-RANDOM`), within Linux's 255 bytes.
pub const MAX_NAME_LEN: usize = 200;
/// The longest path accepted (Linux's PATH_MAX, less the terminating zero).
pub const MAX_PATH_LEN: usize = 4095;
/// The shortest lifetime a leaf may ask for: short enough for demos and tests.
pub const MIN_LIFETIME: Duration = Duration::from_secs(30);
/// The longest lifetime accepted: the end of a certificate must fit in its date field
/// (year 9999 at most); a thousand years is far past any use.
pub const MAX_LIFETIME: Duration = Duration::from_secs(1000 * 365 * 86_400);

#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (named in every message).
    pub file: PathBuf,
    /// The CA, the archive, the ledger and the lock; resolved (no link on the way).
    pub state_dir: PathBuf,
    /// The internal CA's settings (used when it is created; its name constraints also
    /// when certificates are checked).
    pub ca: CaSpec,
    /// The web servers certificates reload, by name.
    pub servers: BTreeMap<String, ServerSpec>,
    /// The managed certificates, in the order of the file.
    pub certificates: Vec<CertSpec>,
    /// Certificates certkeeper only watches (`watch:`), never issues.
    pub watched: Vec<WatchSpec>,
    /// Where the CA's trust material goes (bundles, CRLs).
    pub trust: Vec<TrustSpec>,
    /// ACME issuers, by name (`issuers:`).
    pub issuers: BTreeMap<String, AcmeSpec>,
    /// Where `/metrics` is served (`metrics.listen`), if anywhere.
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
    /// `O=` of the root and intermediate.
    pub organization: String,
    /// `CN=` base of the root (`… Root`) and intermediate.
    pub common_name: String,
    /// The CA keys' type.
    pub key: KeyType,
    /// How long the root lives.
    pub root_lifetime: Duration,
    /// How long the intermediate lives; no leaf outlives it.
    pub intermediate_lifetime: Duration,
    /// `ca.permitted` and `ca.excluded`: the names the CA may certify, written into the
    /// CA certificates made from now on as a critical nameConstraints extension, and
    /// checked for every certificate with `issuer: internal`. DNS rules are matched on
    /// whole labels, without regard to case: `example.internal` covers that name and
    /// every name under it, `.example.internal` (a leading dot) only the names under it,
    /// as OpenSSL and rustls read them. IP rules are ranges (`10.0.0.0/8`, `fd00::/8`; a
    /// bare address is one address). A kind of name (DNS, IP) with no permitted rule is
    /// free; an excluded rule wins over a permitted one. Empty: nothing is constrained.
    /// A change needs no restart: it applies to the certificates checked from then on and
    /// to the next CA certificates made.
    pub constraints: NameConstraints,
    /// A CA certificate is replaced at the latest when this share (or duration) of its
    /// lifetime is left; earlier when it could no longer carry what it signs.
    pub rotate_before: RenewBefore,
    /// How long trust targets carry a new root before issuance moves to it.
    pub root_overlap: Duration,
    /// The file holding the passphrase of the CA keys encrypted at rest, when set;
    /// read again each time a key is needed (see `cakey::passphrase`).
    pub key_passphrase_file: Option<PathBuf>,
}

impl Default for CaSpec {
    /// The built-in CA: `certkeeper Internal CA`, ECDSA P-256, a 10-year root and
    /// 3-year intermediates, replaced with a third of their life left.
    fn default() -> CaSpec {
        let root_lifetime = Duration::from_secs(10 * 365 * 86_400);
        CaSpec {
            organization: "certkeeper".into(),
            common_name: "certkeeper Internal CA".into(),
            key: KeyType::EcdsaP256,
            root_lifetime,
            intermediate_lifetime: Duration::from_secs(3 * 365 * 86_400),
            rotate_before: RenewBefore::Share(333),
            root_overlap: crate::policy::ca::default_root_overlap(root_lifetime),
            constraints: NameConstraints::default(),
            key_passphrase_file: None,
        }
    }
}

/// A user or group, by the name the config gave and the id it resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// As written in the configuration.
    pub name: String,
    /// The uid or gid it resolved to.
    pub id: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CertSpec {
    /// Unique; names the store, the archive and the ledger entries.
    pub name: String,
    /// `CN=` of the leaf (given, or the first DNS name).
    pub common_name: String,
    /// DNS names and IP addresses, without duplicates.
    pub sans: Vec<San>,
    /// Server, client or both (extended key usage).
    pub usage: Usage,
    /// The leaf key's type (a new key at every renewal).
    pub key: KeyType,
    /// How long a leaf lives (never past the intermediate).
    pub lifetime: Duration,
    /// How long before the end it is renewed (a duration or a share).
    pub renew_before: RenewBefore,
    /// Owner of the installed files, when set (boxed: rarely set, and every
    /// certificate is kept in memory).
    pub owner: Option<Box<Principal>>,
    /// Group of the installed files, when set.
    pub group: Option<Box<Principal>>,
    /// Mode of the key (and of a `combined` file).
    pub key_mode: u32,
    /// Mode of the certificate and chain files.
    pub cert_mode: u32,
    /// Which issuer signs it.
    pub issuer: IssuerRef,
    /// Where its files go, by layout.
    pub files: Files,
    /// Servers config-tested and reloaded after an install (one list shared by the
    /// certificates that name the same servers).
    pub reload: Arc<[String]>,
    /// Where to check that the new certificate is served.
    /// Where clients reach it: each target is checked after a reload and every
    /// `verify.every` (several when the name is served on several ports or hosts).
    pub verify: Vec<VerifySpec>,
    /// Whether links of the user's own, at the files or on the way to them, are written through.
    pub follow_symlinks: bool,
    /// This certificate's own hooks, run after the global ones (shared by the
    /// certificates that have none).
    pub hooks: Arc<Hooks>,
    /// Issuers to try, in order, when `issuer` fails and only `fallback_before` of the
    /// certificate's life is left (at once when none is in place).
    pub fallback: Vec<IssuerRef>,
    /// How long before the end a failing issuer gives way to `fallback` (a duration or
    /// a share; default half of `renew_before`).
    pub fallback_before: RenewBefore,
    /// The ACME profile to order (over the issuer's `profile:`).
    pub profile: Option<String>,
}

impl CertSpec {
    /// How often what its targets serve is checked: the shortest `verify.every`.
    pub fn check_every(&self) -> Option<Duration> {
        self.verify.iter().filter_map(|v| v.every).min()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Files {
    /// `cert`: leaf + chain; `key`.
    Nginx { cert: PathBuf, key: PathBuf },
    /// `cert`: the leaf alone; `chain`: the intermediates; `key`.
    Apache {
        cert: PathBuf,
        chain: PathBuf,
        key: PathBuf,
    },
    /// One file: key, leaf and chain.
    Combined { cert: PathBuf },
    /// Every form: leaf, chain, leaf + chain, key.
    Separate {
        cert: PathBuf,
        chain: PathBuf,
        fullchain: PathBuf,
        key: PathBuf,
    },
    /// One PKCS#12 file: key, leaf and chain, encrypted with the password read from
    /// `password_file` (which certkeeper never writes).
    Pkcs12 {
        p12: PathBuf,
        password_file: PathBuf,
    },
}

impl Files {
    /// Every path this certificate writes, with its field name, in the order of
    /// `Layout::needs` (cert, chain, fullchain, key; or p12).
    pub fn paths(&self) -> Vec<(&'static str, &Path)> {
        match self {
            Files::Nginx { cert, key } => vec![("cert", cert), ("key", key)],
            Files::Apache { cert, chain, key } => {
                vec![("cert", cert), ("chain", chain), ("key", key)]
            }
            Files::Combined { cert } => vec![("cert", cert)],
            Files::Pkcs12 { p12, .. } => vec![("p12", p12)],
            Files::Separate {
                cert,
                chain,
                fullchain,
                key,
            } => vec![
                ("cert", cert),
                ("chain", chain),
                ("fullchain", fullchain),
                ("key", key),
            ],
        }
        .into_iter()
        .map(|(field, p)| (field, p.as_path()))
        .collect()
    }

    /// How many files [`Files::paths`] names.
    pub fn count(&self) -> usize {
        match self {
            Files::Combined { .. } | Files::Pkcs12 { .. } => 1,
            Files::Nginx { .. } => 2,
            Files::Apache { .. } => 3,
            Files::Separate { .. } => 4,
        }
    }

    pub fn layout(&self) -> Layout {
        match self {
            Files::Nginx { .. } => Layout::Nginx,
            Files::Apache { .. } => Layout::Apache,
            Files::Combined { .. } => Layout::Combined,
            Files::Separate { .. } => Layout::Separate,
            Files::Pkcs12 { .. } => Layout::Pkcs12,
        }
    }

    /// The `cert` file (in `combined`, the one file; in `pkcs12`, the `p12` file).
    pub fn cert(&self) -> &Path {
        match self {
            Files::Nginx { cert, .. }
            | Files::Apache { cert, .. }
            | Files::Combined { cert }
            | Files::Separate { cert, .. } => cert,
            Files::Pkcs12 { p12, .. } => p12,
        }
    }

    /// The key file, in the layouts that have one.
    pub fn key(&self) -> Option<&Path> {
        match self {
            Files::Nginx { key, .. } | Files::Apache { key, .. } | Files::Separate { key, .. } => {
                Some(key)
            }
            Files::Combined { .. } | Files::Pkcs12 { .. } => None,
        }
    }

    /// The chain file, in the layouts that have one.
    pub fn chain(&self) -> Option<&Path> {
        match self {
            Files::Apache { chain, .. } | Files::Separate { chain, .. } => Some(chain),
            _ => None,
        }
    }

    /// The file that holds the password of a `pkcs12` layout.
    pub fn password_file(&self) -> Option<&Path> {
        match self {
            Files::Pkcs12 { password_file, .. } => Some(password_file),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct VerifySpec {
    /// `HOST:PORT` to connect to.
    pub connect: String,
    /// The SNI name sent (and expected in the leaf).
    pub server_name: String,
    /// How long the new leaf may take to be served.
    pub timeout: Duration,
    /// How often the daemon checks that the server still serves the certificate on
    /// disk (drift: a hand-made reload, a reverted vhost); None: never (`every: 0`).
    pub every: Option<Duration>,
    /// The roots clients of this target trust (`verify.roots`); None: the issuer's
    /// (the internal CA's roots, or the system store for ACME certificates).
    pub roots: Option<PathBuf>,
    /// A managed client certificate presented in the handshake (mutual TLS).
    pub client_cert: Option<String>,
    /// How the target is named in metrics, `status` and the ledger: `connect`, with the
    /// SNI name when the certificate has two targets at one address.
    pub label: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WatchSpec {
    /// Unique among all certificates.
    pub name: String,
    /// The PEM file watched.
    pub path: PathBuf,
    /// How long before its end it needs attention.
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
    /// The file written.
    pub path: PathBuf,
    /// Roots, chain or CRLs.
    pub contents: TrustContents,
    /// Servers reloaded when it changes.
    pub reload: Vec<String>,
    /// A command run when it changes.
    pub run: Option<Vec<String>>,
    /// Owner of the file, when set.
    pub owner: Option<Principal>,
    /// Group of the file, when set.
    pub group: Option<Principal>,
    /// Whether a link of the user's own (at the file or on the way) is written through.
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
    /// As declared under `servers:`.
    pub name: String,
    /// nginx, apache, systemd or command.
    pub kind: ServerKind,
    /// The master's pid file (nginx, apache).
    pub pid_file: Option<PathBuf>,
    /// The server binary, when not the packaged one.
    pub binary: Option<PathBuf>,
    /// The server's own configuration file, when not the default.
    pub config: Option<PathBuf>,
    /// The systemd unit (`type: systemd`).
    pub unit: Option<String>,
    /// The config test command, replacing the built-in one.
    pub test: Option<Vec<String>>,
    /// The reload command, replacing the built-in one.
    pub reload: Option<Vec<String>>,
    /// Deadline of the config test and of the reload command.
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AcmeSpec {
    /// As declared under `issuers:`.
    pub name: String,
    /// The ACME directory URL.
    pub directory: String,
    /// Roots to trust for the directory, instead of the system's.
    pub ca_bundle: Option<PathBuf>,
    /// Account contacts (`mailto:` URLs).
    pub contact: Vec<String>,
    /// External account binding: key id and the file of its HMAC key.
    pub eab: Option<(String, PathBuf)>,
    /// http-01 answers as files under this directory.
    pub webroot: Option<PathBuf>,
    /// http-01 answers from a listener of certkeeper's own.
    pub standalone: Option<SocketAddr>,
    /// DNS-01: how TXT records are written and where they are looked for.
    pub dns01: Option<Dns01Spec>,
    /// The ACME profile (draft-aaron-acme-profiles) ordered when the certificate names none.
    pub profile: Option<String>,
}

impl AcmeSpec {
    /// Whether http-01 is configured (`webroot:` or `standalone:`).
    pub fn http01(&self) -> bool {
        self.webroot.is_some() || self.standalone.is_some()
    }
}

/// `challenge: dns01:` of an ACME issuer.
#[derive(Debug, Clone, PartialEq)]
pub struct Dns01Spec {
    pub provider: DnsProvider,
    /// Where to wait for the record (`HOST:PORT`); empty: the zone's authoritative servers.
    pub resolvers: Vec<String>,
    /// How long a `command` may run.
    pub timeout: Duration,
    /// How long to wait for the record to be visible before answering the challenge.
    pub propagation_timeout: Duration,
}

/// The default `dns01.propagation_timeout`.
pub const DEFAULT_PROPAGATION_TIMEOUT: Duration = Duration::from_secs(120);

/// Who writes the `_acme-challenge` TXT records.
#[derive(Debug, Clone, PartialEq)]
pub enum DnsProvider {
    /// A program run with `CERTKEEPER_DNS_ACTION`, `CERTKEEPER_DNS_NAME`, `CERTKEEPER_DNS_VALUE`.
    Command(Vec<String>),
    /// RFC 2136 dynamic updates signed with TSIG.
    Rfc2136 {
        /// `HOST:PORT` of the primary server.
        server: String,
        key_name: String,
        /// `hmac-sha256`, `hmac-sha384` or `hmac-sha512`.
        key_algorithm: String,
        /// The base64 secret, alone or as a BIND `key` clause (`tsig-keygen`'s output).
        key_secret_file: PathBuf,
    },
}
