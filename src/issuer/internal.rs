//! The built-in internal CA (root + intermediate). It enforces its own policy: it takes
//! only the public key from a CSR and sets names, usages, serial and validity itself.

mod make;
mod rotate;
pub mod store;

pub use rotate::{Change, Force};

use super::{sans_for_rcgen, IssueError, IssueRequest, Issued, Issuer};
use crate::config::CaSpec;
use crate::fsread::{read_own as read_regular, read_own_text as read_text, ReadError, PEM_MAX};
use crate::fsutil::{ensure_dir, sync_dir, write_atomic, FileSpec, FsError};
use crate::keys::PrivateKey;
use crate::model::{KeyType, Usage};
use crate::policy::ca::{CaState, Retired, Span};
use crate::x509::{parse_certs, CertInfo};
use make::{random_serial, to_offset};
use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyUsagePurpose, SanType, SerialNumber,
};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use store::*;
use time::OffsetDateTime;
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error(
        "no CA in {dir} yet; run `certkeeper ca init` (or `certkeeper renew`, which creates it)"
    )]
    Missing { dir: PathBuf },
    #[error("a CA already exists in {dir}; certkeeper never overwrites a CA")]
    Exists { dir: PathBuf },
    #[error("the CA in {dir} is incomplete ({missing} missing); restore it from a backup, or move the directory away to create a new CA")]
    Incomplete { dir: PathBuf, missing: String },
    #[error("{path}: mode {mode:04o} lets other users read the CA key; run `chmod 600 {path}`")]
    KeyTooOpen { path: PathBuf, mode: u32 },
    #[error("{path}: the CA key is owned by uid {uid}, not by the user certkeeper runs as (uid {me}), so that user may have read it; if that is expected, `chown {me} {path}`, else replace the CA")]
    KeyNotOurs { path: PathBuf, uid: u32, me: u32 },
    #[error("{path}: {reason}")]
    Damaged { path: PathBuf, reason: String },
    #[error("cannot create the CA: {0}")]
    Create(String),
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("{0}; the root key is needed to sign the root CRL")]
    RootKeyForCrl(ReadError),
    #[error(
        "{what} needs the key of {cert}, which is not on this host: give it with `--root-key FILE`"
    )]
    KeyOffline { what: &'static str, cert: String },
    #[error("{path}: this key does not belong to {cert}")]
    WrongKey { path: PathBuf, cert: String },
    #[error(transparent)]
    Key(#[from] crate::cakey::CaKeyError),
}

/// The internal CA as loaded from `state_dir/ca`: the issuing root and intermediate,
/// and the generations around them (see [`store`]).
pub struct InternalCa {
    pub dir: PathBuf,
    /// The root that signs the issuing intermediate.
    pub root: CertInfo,
    /// The intermediate that signs new leaves.
    pub intermediate: CertInfo,
    /// Decrypted on first use: reading the CA for `status` or `check` needs no key.
    intermediate_key: std::sync::OnceLock<PrivateKey>,
    /// The passphrase of keys encrypted at rest (`ca.key_passphrase_file`).
    pass: Option<crate::cakey::Passphrase>,
    pub manifest: Manifest,
    /// Earlier intermediates that still carry leaves, by generation (oldest first).
    pub retired: Vec<(u32, CertInfo)>,
    /// Earlier roots still trusted, by generation.
    pub old_roots: Vec<(u32, CertInfo)>,
    /// A new root published ahead of the switch, with its cross certificate.
    pub next_root: Option<(CertInfo, Option<CertInfo>)>,
    /// The issuing root signed by the root before it, served in chains while that root
    /// is still trusted.
    pub cross: Option<CertInfo>,
    /// What [`crate::reconcile::ensure_ca`] changed when it loaded this CA.
    pub changes: Vec<Change>,
    /// The chain served with new leaves, made once and shared by all of them.
    served_chain: std::sync::OnceLock<std::sync::Arc<[CertInfo]>>,
}

/// A CA certificate that signs a CRL, where its CRL and key are.
pub struct CrlSigner<'a> {
    /// The CRL's file, relative to the CA directory.
    pub crl: String,
    pub cert: &'a CertInfo,
    pub key: PathBuf,
    pub root: bool,
}

/// How far back a new certificate's notBefore goes, to absorb clock skew between hosts.
/// A tenth of the lifetime at most, so short demo lifetimes stay mostly in the future.
pub fn backdate_for(lifetime: Duration) -> Duration {
    (lifetime / 10).min(Duration::from_secs(300))
}

fn read_cert(dir: &Path, name: &str) -> Result<CertInfo, CaError> {
    let path = dir.join(name);
    let bytes = read_regular(&path, PEM_MAX)?;
    let mut certs = parse_certs(&bytes, "CA certificate").map_err(|reason| CaError::Damaged {
        path: path.clone(),
        reason,
    })?;
    Ok(certs.remove(0))
}

/// Refuses a CA key file that other users could read (or may have read).
fn check_key_file(path: &Path) -> Result<(), CaError> {
    if let Ok(meta) = fs::symlink_metadata(path) {
        if !meta.is_file() {
            // The bounded reader names what it is ("a symbolic link, not a regular
            // file") and never follows it.
            read_regular(path, PEM_MAX)?;
        }
        if meta.mode() & 0o077 != 0 {
            return Err(CaError::KeyTooOpen {
                path: path.to_path_buf(),
                mode: meta.mode() & 0o7777,
            });
        }
        let me = nix::unistd::geteuid().as_raw();
        if meta.uid() != me {
            return Err(CaError::KeyNotOurs {
                path: path.to_path_buf(),
                uid: meta.uid(),
                me,
            });
        }
    }
    Ok(())
}

/// Reads a CA key (decrypting it with `pass` when it is encrypted at rest), refusing
/// one that other users could read, and one that does not belong to `cert`.
pub fn read_key(
    path: &Path,
    cert: &CertInfo,
    pass: Option<&crate::cakey::Passphrase>,
) -> Result<PrivateKey, CaError> {
    check_key_file(path)?;
    let pem = read_text(path, PEM_MAX)?;
    let key = crate::cakey::decode(&pem, pass, path)?;
    if !cert.matches_key(&key) {
        return Err(CaError::WrongKey {
            path: path.to_path_buf(),
            cert: cert.subject.clone(),
        });
    }
    Ok(key)
}

impl InternalCa {
    pub fn exists(dir: &Path) -> bool {
        store::recover(dir);
        dir.join(INT_CRT).exists() || dir.join(ROOT_CRT).exists()
    }

    /// Creates root and intermediate in `dir`. The keys and certificates are written to
    /// a temporary directory that is renamed into place, so a crash leaves no half CA.
    pub fn init(spec: &CaSpec, dir: &Path, now: OffsetDateTime) -> Result<InternalCa, CaError> {
        let pass = crate::cakey::passphrase(spec)?;
        if dir.exists()
            && fs::read_dir(dir)
                .map(|mut d| d.next().is_some())
                .unwrap_or(true)
        {
            return Err(CaError::Exists {
                dir: dir.to_path_buf(),
            });
        }
        let parent = dir.parent().unwrap_or(Path::new("/"));
        ensure_dir(parent, 0o700)?;
        let (root, _) = make::root(spec, 1, now, None)?;
        let int = make::intermediate(spec, 1, &root.cert, &root.key, now)?;
        let tmp = parent.join(format!(".ca-init-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        ensure_dir(&tmp, 0o700)?;
        for (name, bytes, mode) in [
            (
                ROOT_KEY,
                crate::cakey::encode(&root.key, pass.as_ref())?,
                0o600,
            ),
            (
                INT_KEY,
                crate::cakey::encode(&int.key, pass.as_ref())?,
                0o600,
            ),
            (ROOT_CRT, Zeroizing::new(root.cert.to_pem()), 0o644),
            (INT_CRT, Zeroizing::new(int.cert.to_pem()), 0o644),
        ] {
            write_atomic(&FileSpec {
                path: tmp.join(name),
                bytes: Zeroizing::new(bytes.as_bytes().to_vec()),
                mode,
                uid: None,
                gid: None,
                follow_symlinks: false,
            })?;
        }
        if dir.exists() {
            fs::remove_dir(dir).map_err(|source| FsError::Io {
                path: dir.to_path_buf(),
                action: "cannot replace empty directory",
                source,
            })?;
        }
        fs::rename(&tmp, dir).map_err(|source| FsError::Io {
            path: dir.to_path_buf(),
            action: "cannot move the new CA into place",
            source,
        })?;
        sync_dir(parent)?;
        InternalCa::load(spec, dir)
    }

    /// Loads the CA, refusing keys that other users could read. Keys are read (and
    /// decrypted with the passphrase `spec` gives) when first used, so reading the CA
    /// for `status` or `check` needs neither.
    pub fn load(spec: &CaSpec, dir: &Path) -> Result<InternalCa, CaError> {
        store::recover(dir);
        let present: Vec<bool> = [ROOT_CRT, INT_CRT, INT_KEY]
            .iter()
            .map(|f| dir.join(f).exists())
            .collect();
        if present.iter().all(|p| !p) {
            return Err(CaError::Missing {
                dir: dir.to_path_buf(),
            });
        }
        if present.iter().any(|p| !p) {
            let missing = [ROOT_CRT, INT_CRT, INT_KEY]
                .iter()
                .zip(&present)
                .filter(|(_, p)| !**p)
                .map(|(f, _)| *f)
                .collect::<Vec<_>>()
                .join(", ");
            return Err(CaError::Incomplete {
                dir: dir.to_path_buf(),
                missing,
            });
        }
        let manifest = Manifest::read(dir)?;
        let root = read_cert(dir, ROOT_CRT)?;
        let intermediate = read_cert(dir, INT_CRT)?;
        let pass = crate::cakey::passphrase(spec)?;
        for key in [ROOT_KEY, INT_KEY] {
            let path = dir.join(key);
            if path.exists() {
                // Checked for its mode and owner even though only rotations use the
                // root's.
                check_key_file(&path)?;
            }
        }
        if !intermediate.signed_by(&root) {
            return Err(CaError::Damaged {
                path: dir.join(INT_CRT),
                reason: format!("not signed by {}", dir.join(ROOT_CRT).display()),
            });
        }
        let mut old_roots = Vec::new();
        for &g in &manifest.old_roots {
            old_roots.push((g, read_cert(dir, &old_root(g, "crt"))?));
        }
        let mut retired = Vec::new();
        for r in &manifest.retired {
            let name = old_int(r.generation, "crt");
            let cert = read_cert(dir, &name)?;
            let signer = if r.root == manifest.root {
                Some(&root)
            } else {
                old_roots.iter().find(|(g, _)| *g == r.root).map(|(_, c)| c)
            };
            if !signer.is_some_and(|s| cert.signed_by(s)) {
                return Err(CaError::Damaged {
                    path: dir.join(name),
                    reason: format!("not signed by root generation {}", r.root),
                });
            }
            retired.push((r.generation, cert));
        }
        let next_root = match &manifest.next_root {
            None => None,
            Some(_) => {
                let next = read_cert(dir, NEXT_ROOT_CRT)?;
                let cross = dir
                    .join(NEXT_ROOT_CROSS)
                    .exists()
                    .then(|| read_cert(dir, NEXT_ROOT_CROSS))
                    .transpose()?;
                Some((next, cross))
            }
        };
        let cross = dir
            .join(ROOT_CROSS)
            .exists()
            .then(|| read_cert(dir, ROOT_CROSS))
            .transpose()?
            // Served only while the root that signed it is trusted.
            .filter(|c| old_roots.iter().any(|(_, r)| c.signed_by(r)));
        Ok(InternalCa {
            dir: dir.to_path_buf(),
            root,
            intermediate,
            intermediate_key: std::sync::OnceLock::new(),
            pass,
            manifest,
            retired,
            old_roots,
            next_root,
            cross,
            changes: Vec::new(),
            served_chain: Default::default(),
        })
    }

    /// Loads the CA, creating it first when the directory holds none.
    pub fn load_or_init(
        spec: &CaSpec,
        dir: &Path,
        now: OffsetDateTime,
    ) -> Result<(InternalCa, bool), CaError> {
        match InternalCa::load(spec, dir) {
            Ok(ca) => Ok((ca, false)),
            Err(CaError::Missing { .. }) => InternalCa::init(spec, dir, now).map(|ca| (ca, true)),
            Err(e) => Err(e),
        }
    }

    /// The CA's schedule as the pure policy sees it.
    pub fn state(&self) -> CaState {
        let span = |c: &CertInfo| Span {
            not_before: c.not_before,
            not_after: c.not_after,
        };
        CaState {
            root: span(&self.root),
            intermediate: span(&self.intermediate),
            next_root: self.manifest.next_root.as_ref().map(|n| n.published_at),
            retired: self
                .manifest
                .retired
                .iter()
                .map(|r| Retired {
                    generation: r.generation,
                    root: r.root,
                    last_leaf: r.last_leaf,
                })
                .collect(),
            old_roots: self.manifest.old_roots.clone(),
        }
    }

    /// Every root a client must trust now: the issuing one, a published successor,
    /// and earlier ones that kept intermediates still depend on.
    pub fn roots(&self) -> Vec<&CertInfo> {
        let mut out: Vec<&CertInfo> = self.old_roots.iter().map(|(_, c)| c).collect();
        out.push(&self.root);
        out.extend(self.next_root.as_ref().map(|(c, _)| c));
        out
    }

    /// Every intermediate that carries leaves: retired ones, then the issuing one.
    pub fn intermediates(&self) -> Vec<&CertInfo> {
        let mut out: Vec<&CertInfo> = self.retired.iter().map(|(_, c)| c).collect();
        out.push(&self.intermediate);
        out
    }

    /// What a new leaf is served with: the issuing intermediate, and while the root
    /// before the issuing one is trusted, the cross certificate that links them (clients
    /// that only know the earlier root still verify).
    pub fn chain(&self) -> std::sync::Arc<[CertInfo]> {
        self.served_chain
            .get_or_init(|| {
                let mut chain = vec![self.intermediate.clone()];
                chain.extend(self.cross.clone());
                chain.into()
            })
            .clone()
    }

    /// Every CA certificate that signs a CRL: each intermediate (retired ones, then the
    /// issuing one) for its leaves, each root (earlier ones, then the issuing one) for
    /// its intermediates.
    pub fn crl_signers(&self) -> Vec<CrlSigner<'_>> {
        let mut out = Vec::new();
        for (g, c) in &self.retired {
            out.push(CrlSigner {
                crl: old_int(*g, "crl"),
                cert: c,
                key: self.dir.join(old_int(*g, "key")),
                root: false,
            });
        }
        out.push(CrlSigner {
            crl: "intermediate.crl".into(),
            cert: &self.intermediate,
            key: self.dir.join(INT_KEY),
            root: false,
        });
        for (g, c) in &self.old_roots {
            out.push(CrlSigner {
                crl: old_root(*g, "crl"),
                cert: c,
                key: self.dir.join(old_root(*g, "key")),
                root: true,
            });
        }
        out.push(CrlSigner {
            crl: "root.crl".into(),
            cert: &self.root,
            key: self.dir.join(ROOT_KEY),
            root: true,
        });
        out
    }

    /// Signs a CRL with the CA certificate `cert` and its key at `key_path`.
    pub fn sign_crl_as(
        &self,
        cert: &CertInfo,
        key_path: &Path,
        revoked: &[(String, OffsetDateTime, Option<rcgen::RevocationReason>)],
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
        number: u64,
    ) -> Result<String, CaError> {
        let owned;
        let key = if cert.der == self.intermediate.der {
            self.intermediate_key()?
        } else {
            owned = match read_key(key_path, cert, self.pass.as_ref()) {
                Err(CaError::Read(e)) if e.is_not_found() => return Err(CaError::RootKeyForCrl(e)),
                other => other?,
            };
            &owned
        };
        let issuer = rcgen::Issuer::from_ca_cert_der(&cert.der.clone().into(), key.pair())
            .map_err(|e| CaError::Create(e.to_string()))?;
        let mut revoked_certs = Vec::new();
        for (serial, time, reason) in revoked {
            let bytes = crate::encoding::hex_decode(serial)
                .ok_or_else(|| CaError::Create(format!("bad serial {serial}")))?;
            revoked_certs.push(rcgen::RevokedCertParams {
                serial_number: SerialNumber::from_slice(&bytes),
                revocation_time: *time,
                reason_code: *reason,
                invalidity_date: None,
            });
        }
        let params = rcgen::CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        let crl = params
            .signed_by(&issuer)
            .map_err(|e| CaError::Create(format!("cannot sign the CRL: {e}")))?;
        Ok(crate::encoding::pem_encode("X509 CRL", crl.der()))
    }

    /// Names the set of intermediates whose leaves count as issued here: what a cache
    /// of checked files is valid for.
    pub fn issuing_id(&self) -> String {
        self.intermediates()
            .iter()
            .map(|c| c.fingerprint.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The issuing intermediate's key, read (and decrypted) once.
    fn intermediate_key(&self) -> Result<&PrivateKey, CaError> {
        if let Some(k) = self.intermediate_key.get() {
            return Ok(k);
        }
        let key = read_key(
            &self.dir.join(INT_KEY),
            &self.intermediate,
            self.pass.as_ref(),
        )?;
        Ok(self.intermediate_key.get_or_init(|| key))
    }

    /// The passphrase keys are encrypted with, if any.
    pub fn passphrase(&self) -> Option<&crate::cakey::Passphrase> {
        self.pass.as_ref()
    }

    pub fn root_pem(&self) -> String {
        self.roots().iter().map(|c| c.to_pem()).collect()
    }

    pub fn has_root_key(&self) -> bool {
        self.dir.join(ROOT_KEY).exists()
    }

    pub fn has_next_root_key(&self) -> bool {
        self.dir.join(NEXT_ROOT_KEY).exists()
    }

    pub fn key_type(&self) -> Option<KeyType> {
        self.intermediate.key_type
    }

    /// Records that `certkeeper issue` made a leaf ending at `not_after` under the
    /// issuing intermediate, so that a rotation keeps the intermediate until then.
    /// The caller holds the state lock.
    pub fn note_adhoc(&mut self, not_after: OffsetDateTime) -> Result<(), CaError> {
        if self.manifest.adhoc_until.is_some_and(|t| t >= not_after) {
            return Ok(());
        }
        let mut m = self.manifest.clone();
        m.adhoc_until = Some(not_after);
        let dir = crate::fsutil::Dir::open(&self.dir, false)?;
        dir.replace_file(
            MANIFEST.as_ref(),
            &FileSpec {
                path: self.dir.join(MANIFEST),
                bytes: m.to_bytes(),
                mode: 0o644,
                uid: None,
                gid: None,
                follow_symlinks: false,
            },
        )?;
        self.manifest = m;
        Ok(())
    }
}

impl InternalCa {
    /// A leaf for `public_key` as `req` asks, signed by the issuing intermediate.
    fn sign_leaf(
        &self,
        public_key: &impl rcgen::PublicKeyData,
        req: &IssueRequest,
        now: OffsetDateTime,
    ) -> Result<Issued, IssueError> {
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(DnType::CommonName, req.common_name.as_str());
        p.subject_alt_names = sans_for_rcgen(&req.sans)?;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if matches!(public_key.algorithm(), a if *a == rcgen::PKCS_RSA_SHA256 || *a == rcgen::PKCS_RSA_SHA384 || *a == rcgen::PKCS_RSA_SHA512)
        {
            // TLS 1.2 RSA key exchange needs keyEncipherment on RSA server keys.
            p.key_usages.push(KeyUsagePurpose::KeyEncipherment);
        }
        p.extended_key_usages = match req.usage {
            Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Usage::ServerClient => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        };
        p.serial_number = Some(random_serial());
        p.not_before = now - to_offset(backdate_for(req.lifetime));
        // A leaf never outlives the CA that signs it.
        let wanted = now + to_offset(req.lifetime);
        p.not_after = wanted.min(self.intermediate.not_after);
        p.use_authority_key_identifier_extension = true;
        let key = self
            .intermediate_key()
            .map_err(|e| IssueError::Sign(e.to_string()))?;
        let issuer =
            rcgen::Issuer::from_ca_cert_der(&self.intermediate.der.clone().into(), key.pair())
                .map_err(|e| IssueError::Sign(e.to_string()))?;
        let cert = p
            .signed_by(public_key, &issuer)
            .map_err(|e| IssueError::Sign(e.to_string()))?;
        let leaf = CertInfo::from_der(cert.der()).map_err(IssueError::Sign)?;
        Ok(Issued {
            leaf,
            chain: self.chain(),
            clamped: (wanted > self.intermediate.not_after).then_some(wanted),
        })
    }
}

impl Issuer for InternalCa {
    fn id(&self) -> &str {
        crate::model::IssuerRef::INTERNAL
    }

    fn issue(
        &self,
        csr_der: &[u8],
        req: &IssueRequest,
        now: OffsetDateTime,
    ) -> Result<Issued, IssueError> {
        if now >= self.intermediate.not_after {
            return Err(IssueError::CaExpired(self.intermediate.not_after));
        }
        let csr = CertificateSigningRequestParams::from_der(&csr_der.to_vec().into())
            .map_err(|e| IssueError::BadCsr(e.to_string()))?;
        // The CSR proves possession of the key; its names must be the ones requested.
        let mut asked: Vec<String> = csr
            .params
            .subject_alt_names
            .iter()
            .map(|s| match s {
                SanType::DnsName(d) => d.as_str().to_ascii_lowercase(),
                SanType::IpAddress(ip) => ip.to_string(),
                other => format!("{other:?}"),
            })
            .collect();
        let mut want: Vec<String> = req.sans.iter().map(|s| s.to_string()).collect();
        asked.sort();
        want.sort();
        if asked != want {
            return Err(IssueError::BadCsr(format!(
                "the CSR asks for {asked:?}, the request for {want:?}"
            )));
        }
        self.sign_leaf(&csr.public_key, req, now)
    }

    /// Signs for the new key itself, without a CSR: the key was made in this process a
    /// moment ago, so there is no possession to prove and no request to check.
    fn issue_for_key(
        &self,
        key: &PrivateKey,
        req: &IssueRequest,
        now: OffsetDateTime,
        _old: Option<&CertInfo>,
    ) -> Result<Issued, IssueError> {
        if now >= self.intermediate.not_after {
            return Err(IssueError::CaExpired(self.intermediate.not_after));
        }
        self.sign_leaf(key.pair(), req, now)
    }

    /// What it returns is signed here by the issuing intermediate, whose key was checked
    /// against its certificate when it was read, with the chain the CA was loaded and
    /// checked with: there is nothing to verify again.
    fn signs_in_process(&self) -> bool {
        true
    }

    fn issued(&self, _leaf: &CertInfo, chain: &[CertInfo]) -> bool {
        // The leaf's signature by chain[0] was verified with the chain order; the
        // intermediate being one of ours (issuing, or retired but still carrying its
        // leaves) byte for byte completes the proof.
        chain
            .first()
            .is_some_and(|c| self.intermediates().iter().any(|i| i.der == c.der))
    }

    fn issuing_now(&self, chain: &[CertInfo]) -> bool {
        chain
            .first()
            .is_some_and(|c| c.der == self.intermediate.der)
    }
}

#[cfg(test)]
mod tests;
