//! The effects of `certkeeper discover`: running `nginx -T`, reading Apache's files
//! and the includes they name, and reading the certificate and key files a server
//! loads. The parsing itself is `pure::discover`.

use crate::discover::{apache_vhosts, has_wildcard, nginx_vhosts, wildcard_match, Findings};
use crate::fsread::{read_regular, read_text, CONFIG_MAX, PEM_MAX};
use crate::keys::KeyInfo;
use crate::x509::{parse_pem, CertInfo, PemItem};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The most `nginx -T` may print: every file of the configuration, each at most
/// `CONFIG_MAX`, for a generous number of files.
const DUMP_MAX: u64 = 64 << 20;

/// Runs `BINARY -T -q -c CONFIG` (nginx's full configuration, every included file
/// after a `# configuration file PATH:` line) and parses its output. nginx need not be
/// running; it needs to read its files. Killed after `timeout`.
pub fn nginx(binary: &Path, config: &Path, timeout: Duration) -> Result<Findings, String> {
    let config = std::path::absolute(config).unwrap_or_else(|_| config.to_path_buf());
    let mut child = Command::new(binary)
        .arg("-T")
        .arg("-q")
        .arg("-c")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = (&mut stdout).take(DUMP_MAX + 1).read_to_end(&mut buf);
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = (&mut stderr).take(64 << 10).read_to_end(&mut buf);
        buf
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "`{} -T -c {}` did not finish within {}s and was killed",
                    binary.display(),
                    config.display(),
                    timeout.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("waiting for {}: {e}", binary.display())),
        }
    };
    let out = out.join().unwrap_or_default();
    let err = String::from_utf8_lossy(&err.join().unwrap_or_default())
        .trim()
        .to_string();
    if !status.success() {
        return Err(format!(
            "`{} -T -c {}` failed ({status}): {err}",
            binary.display(),
            config.display()
        ));
    }
    if out.len() as u64 > DUMP_MAX {
        return Err(format!(
            "`{} -T` printed more than {DUMP_MAX} bytes",
            binary.display()
        ));
    }
    Ok(nginx_vhosts(&String::from_utf8_lossy(&out), &config))
}

/// Reads Apache's configuration from `main`, following `Include` and
/// `IncludeOptional` (wildcards, directories) itself; relative paths start at the
/// main file's directory until a `ServerRoot` directive says otherwise.
pub fn apache(main: &Path) -> Result<Findings, String> {
    let main = std::path::absolute(main).unwrap_or_else(|_| main.to_path_buf());
    let text = read_text(&main, CONFIG_MAX).map_err(|e| e.to_string())?;
    let root = main.parent().unwrap_or(Path::new("/")).to_path_buf();
    let mut load = |pattern: &Path, optional: bool| expand_include(pattern, optional);
    Ok(apache_vhosts(&main, &text, &root, &mut load))
}

/// The files an Apache include pattern names, sorted, with their text.
fn expand_include(pattern: &Path, optional: bool) -> Result<Vec<(PathBuf, String)>, String> {
    let mut paths = Vec::new();
    let text = pattern.to_string_lossy();
    if has_wildcard(&text) {
        glob(Path::new("/"), pattern, &mut paths);
        if paths.is_empty() && !optional {
            return Err("no file matches the wildcard".into());
        }
    } else if pattern.is_dir() {
        files_under(pattern, &mut paths, 0);
    } else if pattern.exists() || !optional {
        paths.push(pattern.to_path_buf());
    }
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            continue;
        }
        let mut text = read_text(&p, CONFIG_MAX).map_err(|e| e.to_string())?;
        out.push((p, std::mem::take(&mut *text)));
    }
    Ok(out)
}

/// Expands `pattern` (absolute, wildcards in any component) under `base`.
fn glob(base: &Path, pattern: &Path, out: &mut Vec<PathBuf>) {
    let mut comps = pattern
        .components()
        .filter(|c| !matches!(c, std::path::Component::RootDir));
    let Some(first) = comps.next() else {
        out.push(base.to_path_buf());
        return;
    };
    let rest: PathBuf = comps.collect();
    let first = first.as_os_str().to_string_lossy();
    let last = rest.as_os_str().is_empty();
    let mut next = Vec::new();
    if has_wildcard(&first) {
        let Ok(dir) = std::fs::read_dir(base) else {
            return;
        };
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && wildcard_match(&first, &name) {
                next.push(base.join(name));
            }
        }
        next.sort();
    } else {
        let p = base.join(&*first);
        if p.exists() {
            next.push(p);
        }
    }
    for p in next {
        if last {
            out.push(p);
        } else {
            glob(&p, &rest, out);
        }
    }
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut names: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    names.sort();
    for p in names {
        if p.is_dir() {
            if depth < 8 {
                files_under(&p, out, depth + 1);
            }
        } else {
            out.push(p);
        }
    }
}

/// What the files of one loaded certificate hold.
#[derive(Debug, Default)]
pub struct PairFacts {
    /// The leaf (first certificate of the certificate file).
    pub leaf: Option<CertInfo>,
    /// How many more certificates follow the leaf in the certificate file.
    pub chain_in_cert: usize,
    /// Whether the certificate file also holds a private key.
    pub key_in_cert: bool,
    /// Whether a key of the key file (or of the certificate file) matches the leaf;
    /// None when no key could be read.
    pub key_matches: Option<bool>,
    /// Why something could not be read: file and reason.
    pub errors: Vec<String>,
}

fn read_pem(path: &Path) -> Result<Vec<PemItem>, String> {
    let items = read_regular(path, PEM_MAX)
        .map_err(|e| e.to_string())
        .and_then(|b| parse_pem(&b).map_err(|e| format!("{}: {e}", path.display())))?;
    if items.is_empty() {
        return Err(format!("{}: no PEM blocks", path.display()));
    }
    Ok(items)
}

/// Reads the certificate, key and chain files of one loaded pair. Never fails: what
/// cannot be read is in `errors`.
pub fn inspect(cert: &Path, key: Option<&Path>, chain: Option<&Path>) -> PairFacts {
    let mut facts = PairFacts::default();
    let mut keys: Vec<KeyInfo> = Vec::new();
    match read_pem(cert) {
        Ok(items) => {
            let mut certs = Vec::new();
            for item in items {
                match item {
                    PemItem::Cert(c) => certs.push(*c),
                    PemItem::Key(k) => {
                        facts.key_in_cert = true;
                        keys.push(k);
                    }
                    PemItem::Other(_) => {}
                }
            }
            if certs.is_empty() {
                facts
                    .errors
                    .push(format!("{}: holds no certificate", cert.display()));
            } else {
                facts.chain_in_cert = certs.len() - 1;
                facts.leaf = Some(certs.remove(0));
            }
        }
        Err(e) => facts.errors.push(e),
    }
    let mut key_unreadable = false;
    if let Some(key) = key.filter(|k| *k != cert) {
        match read_pem(key) {
            Ok(items) => {
                let before = keys.len();
                for item in items {
                    match item {
                        PemItem::Key(k) => keys.push(k),
                        PemItem::Other(label) if label.contains("ENCRYPTED") => {
                            facts.errors.push(format!(
                                "{}: the key is encrypted; it cannot be compared",
                                key.display()
                            ));
                            key_unreadable = true;
                        }
                        _ => {}
                    }
                }
                if keys.len() == before && !key_unreadable {
                    facts
                        .errors
                        .push(format!("{}: holds no private key", key.display()));
                    key_unreadable = true;
                }
            }
            Err(e) => {
                facts.errors.push(e);
                key_unreadable = true;
            }
        }
    }
    if let Some(chain) = chain {
        if let Err(e) = read_pem(chain) {
            facts.errors.push(e);
        }
    }
    if let Some(leaf) = &facts.leaf {
        if !keys.is_empty() && !key_unreadable {
            facts.key_matches = Some(keys.iter().any(|k| leaf.matches(k)));
        } else if keys.is_empty() && !key_unreadable {
            facts
                .errors
                .push(format!("{}: no private key found", cert.display()));
        }
    }
    facts
}

/// The internal CA's current intermediate(s) in `state_dir/ca`, when there is a CA.
pub fn internal_intermediates(state_dir: &Path) -> Vec<CertInfo> {
    let ca = state_dir.join("ca");
    // The issuing intermediate, and the earlier ones a rotation keeps for their leaves
    // (`ca/old/intermediate-G.crt`): leaves of either are certkeeper's.
    let mut paths = vec![ca.join("intermediate.crt")];
    if let Ok(entries) = std::fs::read_dir(ca.join("old")) {
        let mut old: Vec<_> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("intermediate-") && n.ends_with(".crt"))
            })
            .collect();
        old.sort();
        paths.extend(old);
    }
    paths
        .iter()
        .filter_map(|p| read_regular(p, PEM_MAX).ok())
        .flat_map(|b| crate::x509::parse_certs(&b, "intermediate").unwrap_or_default())
        .collect()
}

/// Whether a directory on the way to `path` is a symbolic link.
pub fn link_on_way(path: &Path) -> bool {
    let dir = path.parent().unwrap_or(Path::new("/"));
    matches!(
        crate::fsutil::no_link_on_way(dir),
        Err(crate::fsutil::FsError::LinkInPath { .. })
    )
}
