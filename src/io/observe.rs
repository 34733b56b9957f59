//! Reading a certificate's files back into what the renewal decision needs: parsed,
//! matched (key and certificate, chain order, issuer), and whether the key is kept as
//! private as configured (`exposure`, repaired by `tighten`).

use crate::config::WatchSpec;
use crate::config::{CertSpec, Files};
use crate::fsread::{self, PEM_MAX};
use crate::issuer::Issuer;
use crate::keys::KeyInfo;
use crate::model::Layout;
use crate::pkcs12::{OpenError, Opened};
use crate::policy::{Present, Seen};
use crate::x509::{check_chain_order, parse_pem, CertInfo, PemItem};
use std::fs;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// One file's parsed blocks.
struct Parsed {
    path: PathBuf,
    certs: Vec<CertInfo>,
    keys: Vec<KeyInfo>,
}

fn read(path: &Path) -> Result<Parsed, Seen> {
    let bytes = match fsread::read_regular(path, PEM_MAX) {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return Err(Seen::Missing(path.to_path_buf())),
        Err(e) => {
            return Err(Seen::Damaged {
                path: path.to_path_buf(),
                reason: e.reason(),
            });
        }
    };
    let items = parse_pem(&bytes).map_err(|reason| Seen::Damaged {
        path: path.to_path_buf(),
        reason,
    })?;
    let mut parsed = Parsed {
        path: path.to_path_buf(),
        certs: Vec::new(),
        keys: Vec::new(),
    };
    for item in items {
        match item {
            PemItem::Cert(c) => parsed.certs.push(*c),
            PemItem::Key(k) => parsed.keys.push(k),
            PemItem::Other(label) => {
                return Err(Seen::Damaged {
                    path: path.to_path_buf(),
                    reason: format!("unexpected `{}` block", crate::model::excerpt(&label)),
                })
            }
        }
    }
    Ok(parsed)
}

fn damaged(p: &Parsed, reason: impl Into<String>) -> Seen {
    Seen::Damaged {
        path: p.path.clone(),
        reason: reason.into(),
    }
}

fn only_certs(p: &Parsed, min: usize, max: Option<usize>, what: &str) -> Result<(), Seen> {
    if !p.keys.is_empty() {
        return Err(damaged(p, format!("the {what} file holds a private key")));
    }
    let n = p.certs.len();
    if n < min || max.is_some_and(|m| n > m) {
        return Err(damaged(
            p,
            format!("the {what} file holds {n} certificates"),
        ));
    }
    Ok(())
}

fn only_key(p: &Parsed) -> Result<&KeyInfo, Seen> {
    match (p.keys.len(), p.certs.len()) {
        (1, 0) => Ok(&p.keys[0]),
        (0, _) => Err(damaged(p, "no private key in the key file")),
        _ => Err(damaged(
            p,
            "the key file must hold exactly one private key and nothing else",
        )),
    }
}

fn same(a: &[CertInfo], b: &[CertInfo]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.der == y.der)
}

/// The file that holds a certificate's private key: `key`, or the one `combined` or
/// `pkcs12` file.
pub fn key_path(spec: &CertSpec) -> &Path {
    spec.files.key().unwrap_or(spec.files.cert())
}

/// Whether the key file lets someone read it whom the configuration does not: read bits
/// for group or others beyond `key_mode`, an owner other than the configured one (or,
/// when none is configured, than certkeeper's user), or another group than the
/// configured one while the group may read. One `stat`, done on every look (also when
/// the rest comes from the cache of checked files, whose entries predate a config
/// change).
pub fn exposure(spec: &CertSpec) -> Option<Seen> {
    exposure_in(spec, &fs::metadata(key_path(spec)).ok()?)
}

/// [`exposure`] from the key file's metadata, when the caller has it.
pub fn exposure_in(spec: &CertSpec, meta: &fs::Metadata) -> Option<Seen> {
    use std::os::unix::fs::MetadataExt;
    let path = key_path(spec);
    let mode = meta.mode() & 0o777;
    let allowed = spec.key_mode;
    let extra = mode & 0o044 & !allowed;
    let why = if extra != 0 {
        let who = match (extra & 0o040 != 0, extra & 0o004 != 0) {
            (true, true) => "its group and every user",
            (true, false) => "its group",
            _ => "every user",
        };
        Some(format!(
            "has mode {mode:04o}, which lets {who} read it (key_mode is {allowed:04o})"
        ))
    } else {
        let owner = spec
            .owner
            .as_ref()
            .map(|o| (o.id, o.name.clone()))
            .unwrap_or_else(|| {
                // Asked once: certkeeper never changes its user.
                static ME: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
                let me = *ME.get_or_init(|| nix::unistd::geteuid().as_raw());
                (me, format!("uid {me}"))
            });
        if meta.uid() != owner.0 {
            Some(format!(
                "is owned by uid {}, not by {} as configured",
                meta.uid(),
                owner.1
            ))
        } else {
            match &spec.group {
                Some(g) if mode & 0o040 != 0 && meta.gid() != g.id => Some(format!(
                    "belongs to gid {} (which may read it), not to group {}",
                    meta.gid(),
                    g.name
                )),
                _ => None,
            }
        }
    };
    why.map(|why| Seen::Exposed {
        path: path.to_path_buf(),
        why,
    })
}

/// Takes back what an exposed key file allows at once (mode `key_mode`, the configured
/// owner and group), before the pair is replaced: the old key stays in the store as the
/// previous pair until the next install. Errors are logged; the reissue goes on.
pub fn tighten(spec: &CertSpec, path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = fs::set_permissions(path, fs::Permissions::from_mode(spec.key_mode)) {
        tracing::error!(certificate = %spec.name, path = %path.display(), error = %e, "cannot tighten the mode of an exposed key");
    }
    let uid = spec.owner.as_ref().map(|o| o.id);
    let gid = spec.group.as_ref().map(|g| g.id);
    if uid.is_some() || gid.is_some() {
        if let Err(e) = std::os::unix::fs::chown(path, uid, gid) {
            tracing::error!(certificate = %spec.name, path = %path.display(), error = %e, "cannot give an exposed key back to its owner");
        }
    }
}

/// Reads a managed certificate's files and checks them against each other.
pub fn observe(spec: &CertSpec, issuer: Option<&dyn Issuer>) -> Seen {
    match observe_inner(spec) {
        Ok((leaf, chain)) => {
            if let Some(exposed) = exposure(spec) {
                return exposed;
            }
            let from_issuer = issuer.is_some_and(|i| i.issued(&leaf, &chain));
            let issuer_not_after = chain.first().map(|c| c.not_after);
            let issuer_current = issuer.is_some_and(|i| i.issuing_now(&chain));
            Seen::Present(Box::new(Present {
                leaf,
                chain,
                from_issuer,
                issuer_not_after,
                issuer_current,
            }))
        }
        Err(seen) => seen,
    }
}

/// Who may read a certificate's `.p12` file, for the check of its password file.
pub fn p12_readers(spec: &CertSpec) -> crate::password::Readers {
    crate::password::Readers {
        key_mode: spec.key_mode,
        gid: spec.group.as_ref().map(|g| g.id),
    }
}

/// Opens a `pkcs12` layout's file with the password of its `password_file`.
fn open_p12(spec: &CertSpec, p12: &Path, password_file: &Path) -> Result<Opened, Seen> {
    let bytes = match fsread::read_regular(p12, PEM_MAX) {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return Err(Seen::Missing(p12.to_path_buf())),
        Err(e) => {
            return Err(Seen::Damaged {
                path: p12.to_path_buf(),
                reason: e.reason(),
            });
        }
    };
    let damaged = |reason: String| Seen::Damaged {
        path: p12.to_path_buf(),
        reason,
    };
    // A password that cannot be used is the password file's problem, not the .p12's.
    let password =
        crate::password::read_password(password_file, p12_readers(spec)).map_err(|e| match e {
            crate::password::PasswordError::Read(r) if r.is_not_found() => {
                Seen::Missing(password_file.to_path_buf())
            }
            e => Seen::Damaged {
                path: e.path().to_path_buf(),
                reason: e.reason(),
            },
        })?;
    crate::pkcs12::decode(&bytes, &password).map_err(|e| match e {
        OpenError::WrongPassword => damaged(format!(
            "does not open with the password in {} (another password, or a damaged file)",
            password_file.display()
        )),
        other => damaged(other.to_string()),
    })
}

/// The private key of a certificate as installed, as PEM text (for presenting it as a
/// client certificate, or signing a revocation request with it).
pub fn key_pem(spec: &CertSpec) -> Result<Zeroizing<String>, String> {
    if let Files::Pkcs12 { p12, password_file } = &spec.files {
        let opened = open_p12(spec, p12, password_file).map_err(|seen| match seen {
            Seen::Damaged { path, reason } => format!("{}: {reason}", path.display()),
            Seen::Missing(path) => format!("{}: no such file", path.display()),
            _ => format!("{}: cannot be opened", p12.display()),
        })?;
        return Ok(Zeroizing::new(crate::encoding::pem_encode(
            "PRIVATE KEY",
            &opened.key_der,
        )));
    }
    let path = key_path(spec);
    let bytes = fsread::read_regular(path, PEM_MAX).map_err(|e| e.to_string())?;
    String::from_utf8(bytes.to_vec())
        .map(Zeroizing::new)
        .map_err(|_| format!("{}: not PEM text", path.display()))
}

/// The key, leaf and chain in a `pkcs12` layout's file.
fn observe_p12(
    spec: &CertSpec,
    p12: &Path,
    password_file: &Path,
) -> Result<(Vec<CertInfo>, KeyInfo), Seen> {
    let opened = open_p12(spec, p12, password_file)?;
    let damaged = |reason: String| Seen::Damaged {
        path: p12.to_path_buf(),
        reason,
    };
    let certs = opened
        .certs
        .iter()
        .map(|der| CertInfo::from_der(der))
        .collect::<Result<Vec<_>, _>>()
        .map_err(damaged)?;
    if certs.len() < 2 {
        return Err(damaged(
            "the .p12 file must hold the certificate and its chain".into(),
        ));
    }
    let key = KeyInfo::from_der("PRIVATE KEY", &opened.key_der)
        .map_err(|e| damaged(format!("its private key: {e}")))?;
    Ok((certs, key))
}

fn observe_inner(spec: &CertSpec) -> Result<(CertInfo, Vec<CertInfo>), Seen> {
    let f = &spec.files;
    if let Files::Pkcs12 { p12, password_file } = f {
        let (certs, key) = observe_p12(spec, p12, password_file)?;
        return matched(spec, certs, &key, p12);
    }
    // Read every file first so that "missing" wins over "damaged" consistently.
    let paths: Vec<&Path> = f.paths().into_iter().map(|(_, p)| p).collect();
    let mut parsed = Vec::new();
    for p in &paths {
        parsed.push(read(p)?);
    }
    let (certs, key, key_path): (Vec<CertInfo>, &KeyInfo, &Path) = match f.layout() {
        Layout::Nginx => {
            let (cert, keyf) = (&parsed[0], &parsed[1]);
            only_certs(cert, 2, None, "certificate")?;
            (cert.certs.clone(), only_key(keyf)?, &keyf.path)
        }
        Layout::Apache => {
            let (cert, chain, keyf) = (&parsed[0], &parsed[1], &parsed[2]);
            only_certs(cert, 1, Some(1), "certificate")?;
            only_certs(chain, 1, None, "chain")?;
            let all = cert.certs.iter().chain(&chain.certs).cloned().collect();
            (all, only_key(keyf)?, &keyf.path)
        }
        Layout::Combined => {
            let one = &parsed[0];
            if one.keys.len() != 1 {
                return Err(damaged(
                    one,
                    "the combined file must hold exactly one private key",
                ));
            }
            if one.certs.len() < 2 {
                return Err(damaged(
                    one,
                    "the combined file must hold the certificate and its chain",
                ));
            }
            (one.certs.clone(), &one.keys[0], &one.path)
        }
        Layout::Separate => {
            let (cert, chain, full, keyf) = (&parsed[0], &parsed[1], &parsed[2], &parsed[3]);
            only_certs(cert, 1, Some(1), "certificate")?;
            only_certs(chain, 1, None, "chain")?;
            only_certs(full, 2, None, "fullchain")?;
            let all: Vec<CertInfo> = cert.certs.iter().chain(&chain.certs).cloned().collect();
            if !same(&all, &full.certs) {
                return Err(damaged(
                    full,
                    "the fullchain file is not the certificate followed by the chain",
                ));
            }
            (all, only_key(keyf)?, &keyf.path)
        }
        Layout::Pkcs12 => unreachable!("opened above"),
    };
    matched(spec, certs, key, key_path)
}

/// The leaf and chain of `certs` when the leaf is `key`'s and the chain in order.
fn matched(
    spec: &CertSpec,
    certs: Vec<CertInfo>,
    key: &KeyInfo,
    key_path: &Path,
) -> Result<(CertInfo, Vec<CertInfo>), Seen> {
    let f = &spec.files;
    let leaf = certs[0].clone();
    if !leaf.matches(key) {
        return Err(Seen::KeyMismatch(key_path.to_path_buf()));
    }
    check_chain_order(&certs).map_err(|reason| Seen::Damaged {
        path: f.cert().to_path_buf(),
        reason,
    })?;
    Ok((leaf, certs[1..].to_vec()))
}

/// The certificates in a watch-only certificate's file (the leaf first), or why they
/// could not be read.
pub fn watched(w: &WatchSpec) -> Result<Vec<CertInfo>, String> {
    let bytes = fsread::read_regular(&w.path, PEM_MAX).map_err(|e| e.to_string())?;
    crate::x509::parse_certs(&bytes, "watched certificate")
        .map_err(|e| format!("{}: {e}", w.path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CaSpec;
    use crate::issuer::{make_csr, InternalCa, IssueRequest, Issuer, Registry};
    use crate::keys::PrivateKey;
    use crate::model::{IssuerRef, KeyType};
    use std::time::Duration;
    use time::OffsetDateTime;

    /// A CA in `dir/ca` and a certificate `www` of `layout` whose files are in `dir/tls`.
    fn world(dir: &Path, layout: &str) -> (crate::config::Config, InternalCa) {
        let d = dir.display();
        let files = match layout {
            "nginx" => format!("{{ layout: nginx, cert: {d}/tls/www.crt, key: {d}/tls/www.key }}"),
            "apache" => format!("{{ layout: apache, cert: {d}/tls/www.crt, chain: {d}/tls/chain.crt, key: {d}/tls/www.key }}"),
            "separate" => format!("{{ layout: separate, cert: {d}/tls/www.crt, chain: {d}/tls/chain.crt, fullchain: {d}/tls/full.crt, key: {d}/tls/www.key }}"),
            "pkcs12" => {
                use std::os::unix::fs::PermissionsExt;
                let pw = dir.join("www.pass");
                fs::write(&pw, "correct horse\n").unwrap();
                fs::set_permissions(&pw, fs::Permissions::from_mode(0o600)).unwrap();
                format!("{{ layout: pkcs12, p12: {d}/tls/www.p12, password_file: {d}/www.pass }}")
            }
            _ => format!("{{ layout: combined, cert: {d}/tls/www.pem }}"),
        };
        let yaml = format!(
            "state_dir: {d}/state\ncertificates:\n  - name: www\n    sans: [www.example.internal]\n    files: {files}\n"
        );
        let config = crate::config::parse(&yaml, Path::new("c.yaml")).expect("valid");
        let spec = CaSpec {
            organization: "certkeeper tests".into(),
            common_name: "Test CA".into(),
            key: KeyType::EcdsaP256,
            root_lifetime: Duration::from_secs(10 * 365 * 86_400),
            intermediate_lifetime: Duration::from_secs(3 * 365 * 86_400),
            ..CaSpec::default()
        };
        let ca = InternalCa::init(&spec, &dir.join("ca"), OffsetDateTime::now_utc()).unwrap();
        (config, ca)
    }

    /// Issues `www` and writes the files `layout::render` makes.
    fn install(config: &crate::config::Config, ca: &InternalCa) -> CertInfo {
        let spec = &config.certificates[0];
        let key = PrivateKey::generate(spec.key).unwrap();
        let req = IssueRequest {
            name: spec.name.clone(),
            common_name: spec.common_name.clone(),
            sans: spec.sans.clone(),
            usage: spec.usage,
            lifetime: spec.lifetime,
            profile: None,
        };
        let issued = ca
            .issue(
                &make_csr(&key, &req).unwrap(),
                &req,
                OffsetDateTime::now_utc(),
            )
            .unwrap();
        let password = spec.files.password_file().map(|p| {
            crate::password::read_password(p, p12_readers(spec)).expect("a usable password")
        });
        let files =
            crate::layout::render(spec, &key, &issued.leaf, &issued.chain, password.as_ref())
                .unwrap();
        for f in files {
            crate::fsutil::write_atomic(&f).unwrap();
        }
        issued.leaf
    }

    #[test]
    fn what_render_writes_observe_reads_back_for_every_layout() {
        for layout in ["nginx", "apache", "separate", "combined", "pkcs12"] {
            let dir = tempfile::tempdir().unwrap();
            let (config, ca) = world(dir.path(), layout);
            let spec = &config.certificates[0];
            let registry = Registry::new(&config, Some(&ca));
            assert!(matches!(
                observe(spec, registry.get(&IssuerRef::Internal)),
                Seen::Missing(_)
            ));
            let leaf = install(&config, &ca);
            match observe(spec, registry.get(&spec.issuer)) {
                Seen::Present(p) => {
                    assert_eq!(p.leaf.fingerprint, leaf.fingerprint, "{layout}");
                    assert_eq!(p.chain.len(), 1, "{layout}: the intermediate");
                    assert!(p.from_issuer, "{layout}");
                }
                other => panic!("{layout}: {other:?}"),
            }
            // The installed key, as a client certificate's key is read to be presented.
            let pem = key_pem(spec).unwrap();
            assert_eq!(
                PrivateKey::from_pem(&pem).unwrap().public_key_raw(),
                leaf.public_key_raw.as_slice(),
                "{layout}"
            );
            // The key of another pair beside this certificate: seen as a mismatch (or,
            // in one file, as a damaged file).
            let other = PrivateKey::generate(spec.key).unwrap();
            let key_at = key_path(spec).to_path_buf();
            if layout == "pkcs12" {
                // A file of another pair, or one encrypted with another password.
                let theirs =
                    crate::pkcs12::Password::new(Zeroizing::new(b"other".to_vec())).unwrap();
                let mut p =
                    rcgen::CertificateParams::new(vec!["www.example.internal".into()]).unwrap();
                p.distinguished_name
                    .push(rcgen::DnType::CommonName, "www.example.internal");
                let cert = p.self_signed(other.pair()).unwrap();
                let ders: [&[u8]; 2] = [cert.der(), cert.der()];
                let bytes =
                    crate::pkcs12::encode("www", &other.pkcs8_der(), &ders, &theirs).unwrap();
                fs::write(&key_at, &*bytes).unwrap();
                match observe(spec, registry.get(&spec.issuer)) {
                    Seen::Damaged { path, reason } => {
                        assert_eq!(path, key_at);
                        assert!(
                            reason.contains("does not open with the password in"),
                            "{reason}"
                        );
                        assert!(!reason.contains("correct horse"), "{reason}");
                    }
                    other => panic!("{other:?}"),
                }
                continue;
            }
            if layout == "combined" {
                let text = fs::read_to_string(&key_at).unwrap();
                let certs = &text[text.find("-----BEGIN CERTIFICATE").unwrap()..];
                fs::write(&key_at, format!("{}{certs}", other.pem())).unwrap();
            } else {
                fs::write(&key_at, other.pem()).unwrap();
            }
            assert!(
                matches!(
                    observe(spec, registry.get(&spec.issuer)),
                    Seen::KeyMismatch(_) | Seen::Damaged { .. }
                ),
                "{layout}"
            );
        }
    }

    #[test]
    fn the_registry_finds_the_internal_ca_and_says_why_an_issuer_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let (config, ca) = world(dir.path(), "nginx");
        assert_eq!(
            Registry::new(&config, Some(&ca))
                .get(&IssuerRef::Internal)
                .map(|i| i.id().to_string()),
            Some("internal".into())
        );
        assert!(Registry::new(&config, None)
            .get(&IssuerRef::Internal)
            .is_none());
        assert!(Registry::new(&config, Some(&ca))
            .get(&IssuerRef::Acme("fleet".into()))
            .is_none());
        assert_eq!(
            Registry::unavailable(&IssuerRef::Internal),
            "the internal CA is not available"
        );
    }
}
