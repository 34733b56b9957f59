//! Helpers for the end-to-end tests: a private sandbox directory per test, running the
//! real binary, writing configurations, snapshots of directory trees, and the `openssl`
//! command line as an independent judge of what certkeeper wrote.

#![allow(dead_code)]

pub mod daemon;
pub mod servers;

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_certkeeper");

/// The result of one command.
pub struct Run {
    pub what: String,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl fmt::Debug for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` exited {}\n--- stdout ---\n{}--- stderr ---\n{}--------------",
            self.what, self.code, self.stdout, self.stderr
        )
    }
}

impl Run {
    fn from_output(what: String, out: Output) -> Run {
        Run {
            what,
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Panics with the whole output unless the exit code is `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Run {
        assert_eq!(self.code, code, "unexpected exit code: {self:?}");
        self
    }

    #[track_caller]
    pub fn ok(&self) -> &Run {
        self.expect_code(0)
    }

    /// stdout followed by stderr.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    #[track_caller]
    pub fn stdout_has(&self, needle: &str) -> &Run {
        assert!(
            self.stdout.contains(needle),
            "stdout should contain {needle:?}: {self:?}"
        );
        self
    }

    #[track_caller]
    pub fn stderr_has(&self, needle: &str) -> &Run {
        assert!(
            self.stderr.contains(needle),
            "stderr should contain {needle:?}: {self:?}"
        );
        self
    }

    /// The stdout line that starts with `NAME:` (renew prints one per certificate).
    #[track_caller]
    pub fn line_for(&self, name: &str) -> &str {
        let prefix = format!("{name}: ");
        self.stdout
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no line for `{name}`: {self:?}"))
    }
}

/// Environment shared by every child process: no inherited config, no colours, and an
/// OpenSSL that trusts nothing but what a test passes explicitly.
fn isolate(cmd: &mut Command) -> &mut Command {
    cmd.env_remove("CERTKEEPER_CONFIG")
        .env("NO_COLOR", "1")
        .env("SSL_CERT_FILE", "/dev/null")
        .env("SSL_CERT_DIR", "/nonexistent")
        .stdin(Stdio::null())
}

/// One test's private world: a temporary directory holding the config, the state
/// directory and every installed file.
pub struct Sandbox {
    tmp: TempDir,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox {
            tmp: tempfile::Builder::new()
                .prefix("certkeeper-cli-")
                .tempdir()
                .expect("temporary directory"),
        }
    }

    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    /// A path inside the sandbox.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir().join(rel)
    }

    pub fn config_path(&self) -> PathBuf {
        self.path("config.yaml")
    }

    pub fn config(&self) -> String {
        self.config_path().display().to_string()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.path("state")
    }

    /// Replaces `$DIR` with the sandbox's absolute path.
    pub fn expand(&self, text: &str) -> String {
        text.replace("$DIR", &self.dir().display().to_string())
    }

    /// Writes `config.yaml` (after `$DIR` expansion) and returns its path.
    pub fn write_config(&self, yaml: &str) -> PathBuf {
        let p = self.config_path();
        fs::write(&p, self.expand(yaml)).expect("write config");
        p
    }

    /// Writes a config made of the standard header and these certificates, and the
    /// password file (`$DIR/NAME.pass`, mode 0600) of each `pkcs12` one that has none.
    pub fn write_certs(&self, certs: &[CertDef]) -> PathBuf {
        for c in certs.iter().filter(|c| c.layout == Layout::Pkcs12) {
            let p = self.path(&format!("{}.pass", c.name));
            if !p.exists() {
                fs::write(&p, format!("password of {}\n", c.name)).expect("password file");
                set_mode(&p, 0o600);
            }
        }
        let mut yaml = header();
        if certs.is_empty() {
            // Managing nothing must be said explicitly.
            yaml = yaml.replace("certificates:\n", "certificates: []\n");
        }
        for c in certs {
            yaml.push_str(&c.yaml());
        }
        self.write_config(&yaml)
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        isolate(&mut cmd).args(args).current_dir(self.dir());
        cmd
    }

    /// Runs certkeeper with `args` (exactly as given) and waits for it.
    pub fn run(&self, args: &[&str]) -> Run {
        let out = self
            .command(args)
            .output()
            .expect("run the certkeeper binary");
        Run::from_output(format!("certkeeper {}", args.join(" ")), out)
    }

    /// Runs `certkeeper SUBCOMMAND... -c CONFIG`.
    pub fn ck(&self, args: &[&str]) -> Run {
        let config = self.config();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-c", &config]);
        self.run(&all)
    }

    /// Starts `certkeeper SUBCOMMAND... -c CONFIG` without waiting.
    pub fn spawn(&self, args: &[&str]) -> Child {
        let config = self.config();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-c", &config]);
        self.command(&all)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn certkeeper")
    }

    pub fn renew_all(&self) -> Run {
        self.ck(&["renew", "--all"])
    }

    /// Writes the CA's trust bundle to `root.pem` and returns its path.
    pub fn root_bundle(&self) -> PathBuf {
        let r = self.ck(&["ca", "bundle"]);
        r.ok();
        assert!(
            r.stdout.contains("-----BEGIN CERTIFICATE-----"),
            "ca bundle printed no certificate: {r:?}"
        );
        let p = self.path("root.pem");
        fs::write(&p, &r.stdout).expect("write root.pem");
        p
    }

    /// Writes `config.yaml`: state dir, CA, `top` (more top-level YAML, may be empty),
    /// the given `servers:` entries and the certificates; then checks it.
    pub fn write_config_with(&self, top: &str, servers: &[String], certs: &[CertDef]) {
        let mut y = String::from(
            "state_dir: $DIR/state\n\
             ca:\n  organization: Test Org\n  common_name: Test CA\n",
        );
        y.push_str(top);
        if !servers.is_empty() {
            y.push_str("servers:\n");
            for s in servers {
                y.push_str(s);
            }
        }
        y.push_str(if certs.is_empty() {
            "certificates: []\n"
        } else {
            "certificates:\n"
        });
        for c in certs {
            y.push_str(&c.yaml());
        }
        self.write_config(&y);
        self.ck(&["check"]).ok();
    }

    /// `status --json`, the row of `name`.
    #[track_caller]
    pub fn status_row(&self, name: &str) -> serde_json::Value {
        let r = self.ck(&["status", "--json"]);
        let rows: serde_json::Value = serde_json::from_str(&r.stdout)
            .unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {r:?}"));
        rows.as_array()
            .unwrap()
            .iter()
            .find(|row| row["name"] == name)
            .unwrap_or_else(|| panic!("no status row for {name}: {rows}"))
            .clone()
    }

    /// Whether nobody holds the state lock (certkeeper locks the state directory).
    pub fn state_lock_free(&self) -> bool {
        let dir = fs::File::open(self.state_dir()).expect("open the state directory");
        nix::fcntl::Flock::lock(dir, nix::fcntl::FlockArg::LockExclusiveNonblock).is_ok()
    }

    pub fn ledger(&self) -> Vec<serde_json::Value> {
        ledger(&self.state_dir().join("ledger.jsonl"))
    }

    pub fn snapshot(&self) -> Snapshot {
        snapshot(self.dir())
    }
}

/// Every line of a ledger, each of which must be one JSON object.
#[track_caller]
pub fn ledger(path: &Path) -> Vec<serde_json::Value> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => panic!("{}: {e}", path.display()),
    };
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "the ledger's last line is not terminated:\n{text}"
    );
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            let v: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("ledger line {} is not JSON ({e}): {l}", i + 1));
            assert!(v.is_object(), "ledger line {} is not an object: {l}", i + 1);
            v
        })
        .collect()
}

/// How many ledger entries have this event (and this certificate name, when given).
pub fn count_events(entries: &[serde_json::Value], event: &str, name: Option<&str>) -> usize {
    entries
        .iter()
        .filter(|e| e["event"] == event)
        .filter(|e| name.is_none_or(|n| e["name"] == n))
        .count()
}

// ---------------------------------------------------------------------------------------
// Configurations

/// The top of every generated config: the state directory and a CA with defaults.
pub fn header() -> String {
    "state_dir: $DIR/state\n\
     ca:\n  organization: Test Org\n  common_name: Test CA\n\
     certificates:\n"
        .to_string()
}

/// The layouts, as the product names them.
pub use certkeeper::model::Layout;

/// One managed certificate in a generated config; its files live in `$DIR/tls/`.
#[derive(Clone, Debug)]
pub struct CertDef {
    pub name: String,
    pub sans: Vec<String>,
    pub key: Option<String>,
    pub layout: Layout,
    pub usage: Option<String>,
    /// Extra YAML lines, each already indented for a list item's fields ("    x: y").
    pub extra: Vec<String>,
}

impl CertDef {
    pub fn new(name: &str, layout: Layout) -> CertDef {
        CertDef {
            name: name.to_string(),
            sans: vec![format!("{name}.example.internal")],
            key: None,
            layout,
            usage: None,
            extra: Vec::new(),
        }
    }

    pub fn key(mut self, key: &str) -> CertDef {
        self.key = Some(key.to_string());
        self
    }

    pub fn usage(mut self, usage: &str) -> CertDef {
        self.usage = Some(usage.to_string());
        self
    }

    pub fn sans(mut self, sans: &[&str]) -> CertDef {
        self.sans = sans.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn extra(mut self, line: &str) -> CertDef {
        self.extra.push(format!("    {line}"));
        self
    }

    pub fn yaml(&self) -> String {
        let mut y = format!(
            "  - name: {}\n    sans: [{}]\n",
            self.name,
            self.sans.join(", ")
        );
        if let Some(k) = &self.key {
            y.push_str(&format!("    key: {k}\n"));
        }
        if let Some(u) = &self.usage {
            y.push_str(&format!("    usage: {u}\n"));
        }
        y.push_str(&format!(
            "    files:\n      layout: {}\n",
            self.layout.as_str()
        ));
        let f = self.files_rel();
        if self.layout == Layout::Pkcs12 {
            // The password file is the test's to write: `$DIR/NAME.pass`.
            y.push_str(&format!(
                "      p12: $DIR/{}\n      password_file: $DIR/{}.pass\n",
                f.cert, self.name
            ));
        }
        for (field, rel) in [
            (
                "cert",
                Some(f.cert.as_str()).filter(|_| self.layout != Layout::Pkcs12),
            ),
            ("chain", f.chain.as_deref()),
            ("fullchain", f.fullchain.as_deref()),
            ("key", f.key.as_deref()),
        ] {
            if let Some(rel) = rel {
                y.push_str(&format!("      {field}: $DIR/{rel}\n"));
            }
        }
        for l in &self.extra {
            y.push_str(l);
            y.push('\n');
        }
        y
    }

    fn files_rel(&self) -> FilesRel {
        let n = &self.name;
        match self.layout {
            Layout::Nginx => FilesRel {
                cert: format!("tls/{n}.crt"),
                chain: None,
                fullchain: None,
                key: Some(format!("tls/{n}.key")),
            },
            Layout::Apache => FilesRel {
                cert: format!("tls/{n}.crt"),
                chain: Some(format!("tls/{n}.chain.crt")),
                fullchain: None,
                key: Some(format!("tls/{n}.key")),
            },
            Layout::Combined => FilesRel {
                cert: format!("tls/{n}.pem"),
                chain: None,
                fullchain: None,
                key: None,
            },
            Layout::Separate => FilesRel {
                cert: format!("tls/{n}.crt"),
                chain: Some(format!("tls/{n}.chain.crt")),
                fullchain: Some(format!("tls/{n}.fullchain.crt")),
                key: Some(format!("tls/{n}.key")),
            },
            Layout::Pkcs12 => FilesRel {
                cert: format!("tls/{n}.p12"),
                chain: None,
                fullchain: None,
                key: None,
            },
        }
    }

    /// Where this certificate's files are in `sb`.
    pub fn files(&self, sb: &Sandbox) -> Installed {
        let f = self.files_rel();
        let p = |rel: &str| sb.path(rel);
        let cert = p(&f.cert);
        let chain = f.chain.as_deref().map(p);
        let fullchain = f.fullchain.as_deref().map(p);
        let key = f.key.as_deref().map(p);
        let (untrusted, key_file) = match self.layout {
            Layout::Nginx => (cert.clone(), key.clone().unwrap()),
            Layout::Apache => (chain.clone().unwrap(), key.clone().unwrap()),
            Layout::Combined | Layout::Pkcs12 => (cert.clone(), cert.clone()),
            Layout::Separate => (fullchain.clone().unwrap(), key.clone().unwrap()),
        };
        let mut modes = vec![(
            cert.clone(),
            if matches!(self.layout, Layout::Combined | Layout::Pkcs12) {
                0o600
            } else {
                0o644
            },
        )];
        for c in [&chain, &fullchain].into_iter().flatten() {
            modes.push((c.clone(), 0o644));
        }
        if let Some(k) = &key {
            modes.push((k.clone(), 0o600));
        }
        Installed {
            layout: self.layout,
            cert,
            chain,
            fullchain,
            key,
            untrusted,
            key_file,
            modes,
            password_file: (self.layout == Layout::Pkcs12)
                .then(|| sb.path(&format!("{}.pass", self.name))),
        }
    }
}

struct FilesRel {
    cert: String,
    chain: Option<String>,
    fullchain: Option<String>,
    key: Option<String>,
}

/// The files of one installed certificate.
#[derive(Clone, Debug)]
pub struct Installed {
    pub layout: Layout,
    /// The file whose first certificate is the leaf.
    pub cert: PathBuf,
    pub chain: Option<PathBuf>,
    pub fullchain: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// A file holding the intermediates (possibly with the leaf in front).
    pub untrusted: PathBuf,
    /// The file holding the private key (the cert file for `combined`).
    pub key_file: PathBuf,
    /// Every file with the mode it must have.
    pub modes: Vec<(PathBuf, u32)>,
    /// The password file of a `pkcs12` layout.
    pub password_file: Option<PathBuf>,
}

impl Installed {
    pub fn paths(&self) -> Vec<PathBuf> {
        self.modes.iter().map(|(p, _)| p.clone()).collect()
    }

    /// Checks modes, chain, purpose, key readability and key/cert match with openssl.
    #[track_caller]
    pub fn check(&self, root: &Path, purpose: &str) {
        for (p, want) in &self.modes {
            assert_eq!(mode(p), *want, "mode of {}", p.display());
        }
        if let Some(password_file) = &self.password_file {
            let tmp = tempfile::tempdir().expect("temporary directory");
            let u = p12_unpack(&self.cert, password_file, tmp.path());
            verify(root, &u.chain, &u.leaf, purpose).ok();
            assert_eq!(
                pubkey_of_key(&u.key),
                pubkey_of_cert(&u.leaf),
                "{} holds a key that is not its leaf's",
                self.cert.display()
            );
            assert_eq!(pem_blocks(&u.chain, "CERTIFICATE").len(), 1, "p12 chain");
            return;
        }
        verify(root, &self.untrusted, &self.cert, purpose).ok();
        openssl(&["pkey", "-in", path_str(&self.key_file), "-noout"]).ok();
        assert_eq!(
            pubkey_of_key(&self.key_file),
            pubkey_of_cert(&self.cert),
            "{} does not hold the key of {}",
            self.key_file.display(),
            self.cert.display()
        );
        // Structural expectations per layout.
        let count = |p: &Path| pem_blocks(p, "CERTIFICATE").len();
        match self.layout {
            Layout::Nginx => assert_eq!(count(&self.cert), 2, "nginx cert = leaf + intermediate"),
            Layout::Apache => {
                assert_eq!(count(&self.cert), 1, "apache cert = leaf only");
                assert_eq!(count(self.chain.as_ref().unwrap()), 1, "apache chain");
            }
            Layout::Combined => {
                assert_eq!(count(&self.cert), 2, "combined = key + leaf + intermediate");
                assert_eq!(pem_blocks(&self.cert, "PRIVATE KEY").len(), 1);
            }
            Layout::Separate => {
                let cert = fs::read_to_string(&self.cert).unwrap();
                let chain = fs::read_to_string(self.chain.as_ref().unwrap()).unwrap();
                let full = fs::read_to_string(self.fullchain.as_ref().unwrap()).unwrap();
                assert_eq!(count(&self.cert), 1, "separate cert = leaf only");
                assert_eq!(full, format!("{cert}{chain}"), "fullchain = cert + chain");
            }
            Layout::Pkcs12 => unreachable!("checked above"),
        }
    }

    pub fn serial(&self) -> String {
        match &self.password_file {
            Some(password_file) => {
                let tmp = tempfile::tempdir().expect("temporary directory");
                serial(&p12_unpack(&self.cert, password_file, tmp.path()).leaf)
            }
            None => serial(&self.cert),
        }
    }
}

/// A `.p12` file taken apart by `openssl pkcs12` (OpenSSL 3, no `-legacy`) into PEM
/// files in `dir`.
pub struct Unpacked {
    /// Everything `openssl pkcs12 -nodes` printed.
    pub all: PathBuf,
    /// The first certificate (the key's).
    pub leaf: PathBuf,
    /// The certificates after it.
    pub chain: PathBuf,
    /// The private key.
    pub key: PathBuf,
}

#[track_caller]
pub fn p12_unpack(p12: &Path, password_file: &Path, dir: &Path) -> Unpacked {
    let all = dir.join("all.pem");
    openssl(&[
        "pkcs12",
        "-in",
        path_str(p12),
        "-passin",
        &format!("file:{}", path_str(password_file)),
        "-nodes",
        "-out",
        path_str(&all),
    ])
    .ok();
    let certs = pem_blocks(&all, "CERTIFICATE");
    let keys = pem_blocks(&all, "PRIVATE KEY");
    assert!(!certs.is_empty(), "no certificate in {}", p12.display());
    assert_eq!(keys.len(), 1, "one private key in {}", p12.display());
    let u = Unpacked {
        leaf: dir.join("leaf.pem"),
        chain: dir.join("chain.pem"),
        key: dir.join("key.pem"),
        all,
    };
    fs::write(&u.leaf, &certs[0]).unwrap();
    fs::write(&u.chain, certs[1..].concat()).unwrap();
    fs::write(&u.key, &keys[0]).unwrap();
    u
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

pub fn mode(p: &Path) -> u32 {
    fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

pub fn set_mode(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The PEM blocks with this label in a file, each with its BEGIN/END lines.
pub fn pem_blocks(p: &Path, label: &str) -> Vec<String> {
    let text = fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in text.lines() {
        if line == begin {
            cur = Some(String::new());
        }
        if let Some(c) = cur.as_mut() {
            c.push_str(line);
            c.push('\n');
        }
        if line == end {
            out.extend(cur.take());
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// openssl

/// Runs the openssl CLI with no system trust.
pub fn openssl(args: &[&str]) -> Run {
    let mut cmd = Command::new("openssl");
    isolate(&mut cmd).args(args);
    let out = cmd.output().expect("run openssl");
    Run::from_output(format!("openssl {}", args.join(" ")), out)
}

/// `openssl verify` trusting only `root`; the first certificate in `leaf` is checked.
pub fn verify(root: &Path, untrusted: &Path, leaf: &Path, purpose: &str) -> Run {
    openssl(&[
        "verify",
        "-x509_strict",
        "-no-CAfile",
        "-no-CApath",
        "-no-CAstore",
        "-CAfile",
        path_str(root),
        "-untrusted",
        path_str(untrusted),
        "-purpose",
        purpose,
        path_str(leaf),
    ])
}

/// The public key of a private key file, as PEM.
#[track_caller]
pub fn pubkey_of_key(p: &Path) -> String {
    let r = openssl(&["pkey", "-in", path_str(p), "-pubout"]);
    r.ok();
    r.stdout
}

/// The public key of the first certificate in a file, as PEM.
#[track_caller]
pub fn pubkey_of_cert(p: &Path) -> String {
    let r = openssl(&["x509", "-in", path_str(p), "-pubkey", "-noout"]);
    r.ok();
    r.stdout
}

/// The serial of the first certificate in a file, lower-case hex.
#[track_caller]
pub fn serial(p: &Path) -> String {
    let r = openssl(&["x509", "-in", path_str(p), "-noout", "-serial"]);
    r.ok();
    r.stdout
        .trim()
        .strip_prefix("serial=")
        .expect("serial= line")
        .to_ascii_lowercase()
}

/// `openssl x509 -text` of the first certificate in a file.
#[track_caller]
pub fn cert_text(p: &Path) -> String {
    let r = openssl(&["x509", "-in", path_str(p), "-noout", "-text"]);
    r.ok();
    r.stdout
}

/// What openssl says the key type of a private key file is, in certkeeper's words.
#[track_caller]
pub fn key_type_of(p: &Path) -> String {
    let r = openssl(&["pkey", "-in", path_str(p), "-noout", "-text"]);
    r.ok();
    let first = r.stdout.lines().next().unwrap_or_default().to_string();
    let all = &r.stdout;
    if first.starts_with("ED25519 Private-Key") {
        "ed25519".into()
    } else if first.starts_with("Private-Key: (") && all.contains("NIST CURVE: P-256") {
        "ecdsa-p256".into()
    } else if first.starts_with("Private-Key: (") && all.contains("NIST CURVE: P-384") {
        "ecdsa-p384".into()
    } else if let Some(bits) = first
        .strip_prefix("Private-Key: (")
        .and_then(|s| s.strip_suffix(" bit, 2 primes)"))
    {
        format!("rsa-{bits}")
    } else {
        panic!("unrecognised key: {r:?}")
    }
}

/// A fresh ECDSA P-256 key in PEM, made by openssl.
pub fn openssl_p256_key() -> String {
    let r = openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
    ]);
    r.ok();
    r.stdout
}

// ---------------------------------------------------------------------------------------
// Snapshots

#[derive(Clone, PartialEq, Eq)]
pub enum Node {
    Dir {
        mode: u32,
    },
    File {
        mode: u32,
        bytes: Vec<u8>,
    },
    Symlink {
        target: PathBuf,
    },
    /// A FIFO, a socket, a device: its mode only (reading it could block).
    Special {
        mode: u32,
    },
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Dir { mode } => write!(f, "dir {mode:04o}"),
            Node::File { mode, bytes } => write!(f, "file {mode:04o}, {} bytes", bytes.len()),
            Node::Symlink { target } => write!(f, "symlink -> {}", target.display()),
            Node::Special { mode } => write!(f, "special {mode:04o}"),
        }
    }
}

/// Every path under a root (relative to it) with its type, mode and bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Snapshot(pub BTreeMap<PathBuf, Node>);

impl Snapshot {
    pub fn paths(&self) -> Vec<&PathBuf> {
        self.0.keys().collect()
    }

    /// The paths that differ between two snapshots, with what each side has.
    pub fn diff(&self, other: &Snapshot) -> Vec<String> {
        let mut out = Vec::new();
        for (p, a) in &self.0 {
            match other.0.get(p) {
                None => out.push(format!("removed {} ({a:?})", p.display())),
                Some(b) if a != b => out.push(format!("changed {}: {a:?} -> {b:?}", p.display())),
                _ => {}
            }
        }
        for (p, b) in &other.0 {
            if !self.0.contains_key(p) {
                out.push(format!("added {} ({b:?})", p.display()));
            }
        }
        out
    }

    #[track_caller]
    pub fn assert_same(&self, after: &Snapshot, context: &str) {
        let d = self.diff(after);
        assert!(
            d.is_empty(),
            "{context}: files changed:\n  {}",
            d.join("\n  ")
        );
    }
}

pub fn snapshot(root: &Path) -> Snapshot {
    let mut map = BTreeMap::new();
    walk(root, root, &mut map);
    Snapshot(map)
}

fn walk(root: &Path, dir: &Path, map: &mut BTreeMap<PathBuf, Node>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for p in entries {
        let meta = fs::symlink_metadata(&p).expect("metadata");
        let rel = p.strip_prefix(root).unwrap().to_path_buf();
        let mode = meta.permissions().mode() & 0o7777;
        if meta.file_type().is_symlink() {
            map.insert(
                rel,
                Node::Symlink {
                    target: fs::read_link(&p).unwrap(),
                },
            );
        } else if meta.is_dir() {
            map.insert(rel, Node::Dir { mode });
            walk(root, &p, map);
        } else if !meta.is_file() {
            map.insert(rel, Node::Special { mode });
        } else {
            map.insert(
                rel,
                Node::File {
                    mode,
                    bytes: fs::read(&p).unwrap(),
                },
            );
        }
    }
}

/// Polls `pred` (every 2 ms at first, backing off to every 20 ms) until it holds or
/// `limit` passes; says whether it held. The one way tests wait: never a fixed sleep.
pub fn wait_until(limit: Duration, mut pred: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(2);
    loop {
        if pred() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// [`wait_until`] that panics, naming `what`, when `limit` passes first; returns how
/// long it took.
#[track_caller]
pub fn wait_for(limit: Duration, what: &str, pred: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    if !wait_until(limit, pred) {
        panic!("timed out after {limit:?} waiting for {what}");
    }
    start.elapsed()
}

/// Polls `probe` until it returns `Ok`; panics with `what` and the last `Err` once
/// `limit` has passed. For waits whose failure should say what was last seen.
#[track_caller]
pub fn poll<T>(limit: Duration, what: &str, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let mut last = String::new();
    let mut found = None;
    let done = wait_until(limit, || match probe() {
        Ok(v) => {
            found = Some(v);
            true
        }
        Err(e) => {
            last = e;
            false
        }
    });
    match (done, found) {
        (true, Some(v)) => v,
        _ => panic!("timed out after {limit:?} waiting for {what}; last: {last}"),
    }
}
