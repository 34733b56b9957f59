//! What a configuration resolves to: the types the rest of certkeeper reads, with the
//! limits and defaults that apply to them.

use crate::duration::RenewBefore;
use crate::model::{IssuerRef, KeyType, Layout, San, Usage};
use std::collections::BTreeMap;
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
}

impl Files {
    /// Every path this certificate writes, with its field name, in the order of
    /// `Layout::needs` (cert, chain, fullchain, key).
    pub fn paths(&self) -> Vec<(&'static str, &Path)> {
        match self {
            Files::Nginx { cert, key } => vec![("cert", cert), ("key", key)],
            Files::Apache { cert, chain, key } => {
                vec![("cert", cert), ("chain", chain), ("key", key)]
            }
            Files::Combined { cert } => vec![("cert", cert)],
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

    pub fn layout(&self) -> Layout {
        match self {
            Files::Nginx { .. } => Layout::Nginx,
            Files::Apache { .. } => Layout::Apache,
            Files::Combined { .. } => Layout::Combined,
            Files::Separate { .. } => Layout::Separate,
        }
    }

    /// The `cert` file (in `combined`, the one file).
    pub fn cert(&self) -> &Path {
        match self {
            Files::Nginx { cert, .. }
            | Files::Apache { cert, .. }
            | Files::Combined { cert }
            | Files::Separate { cert, .. } => cert,
        }
    }

    /// The key file, in the layouts that have one.
    pub fn key(&self) -> Option<&Path> {
        match self {
            Files::Nginx { key, .. } | Files::Apache { key, .. } | Files::Separate { key, .. } => {
                Some(key)
            }
            Files::Combined { .. } => None,
        }
    }

    /// The chain file, in the layouts that have one.
    pub fn chain(&self) -> Option<&Path> {
        match self {
            Files::Apache { chain, .. } | Files::Separate { chain, .. } => Some(chain),
            _ => None,
        }
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
