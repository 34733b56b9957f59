//! The CA keys at rest: plain PKCS#8 PEM, or encrypted PKCS#8 PEM (`ENCRYPTED PRIVATE
//! KEY`: PBES2, PBKDF2-HMAC-SHA256, AES-256-CBC) that `openssl pkey -passin` and GnuTLS
//! `certtool` read. The passphrase comes from `ca.key_passphrase_file` or from the
//! systemd credential `ca-passphrase`, and is read again each time it is needed.
//!
//! A plain key is accepted whether or not a passphrase is configured, so an existing CA
//! keeps working until `certkeeper ca encrypt` encrypts its keys.

use crate::config::CaSpec;
use crate::fsread::{read_own_with_meta, ReadError, PEM_MAX};
use crate::fsutil::{write_atomic, FileSpec};
use crate::keys::PrivateKey;
use pkcs8::der::{Decode, EncodePem};
use pkcs8::pkcs5::{self, pbes2};
use pkcs8::EncryptedPrivateKeyInfo;
use std::fmt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The name of the systemd credential that carries the passphrase
/// (`LoadCredentialEncrypted=ca-passphrase:...`).
pub const CREDENTIAL_NAME: &str = "ca-passphrase";

/// The most read from a passphrase file.
pub const PASSPHRASE_MAX: u64 = 4 << 10;

/// PBKDF2-HMAC-SHA256 iterations of the keys certkeeper encrypts: OWASP's figure for
/// PBKDF2-HMAC-SHA256 since 2023. Every guess at the passphrase costs an attacker this
/// many HMACs; every decode costs certkeeper the same, measured at about 65 ms on one
/// core of an x86 server with SHA extensions (release build; 310,000 took 33 ms), paid
/// when a CA key is read, never per handshake.
pub const PBKDF2_ITERATIONS: u32 = 600_000;

/// The most PBKDF2 iterations certkeeper spends on a key it decodes (a file that asks
/// for more is refused rather than left to occupy a core for minutes).
pub const MAX_PBKDF2_ITERATIONS: u32 = 10_000_000;

/// The most memory (bytes) certkeeper lets a scrypt-encrypted key ask for.
const MAX_SCRYPT_MEMORY: u64 = 256 << 20;

/// How to give certkeeper the passphrase, for messages.
const HOW_TO_PROVIDE: &str = "set `ca.key_passphrase_file` to a file of mode 0600 that holds it, or give the service the systemd credential `ca-passphrase` (LoadCredentialEncrypted=ca-passphrase:...)";

/// A passphrase for the CA keys. The bytes are wiped when dropped and never printed.
pub struct Passphrase {
    bytes: Zeroizing<Vec<u8>>,
    source: Option<PathBuf>,
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(p) => write!(f, "Passphrase(<redacted>, from {})", p.display()),
            None => write!(f, "Passphrase(<redacted>)"),
        }
    }
}

impl Passphrase {
    /// A passphrase given directly (not from a file): one line, not empty.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Passphrase, CaKeyError> {
        let bytes = Zeroizing::new(bytes.into());
        check_line(&bytes, Path::new("the passphrase given"))?;
        Ok(Passphrase {
            bytes,
            source: None,
        })
    }

    /// The file it was read from, if it was read from one.
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    fn expose(&self) -> &[u8] {
        &self.bytes
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CaKeyError {
    #[error("cannot read the CA key passphrase: {0}")]
    PassphraseRead(ReadError),
    #[error("{path}: mode {mode:04o} lets other users read the CA key passphrase; run `chmod 600 {path}`")]
    PassphraseTooOpen { path: PathBuf, mode: u32 },
    #[error(
        "{path}: {problem}; write the CA key passphrase as one line (a final newline is fine)"
    )]
    PassphraseMalformed {
        path: PathBuf,
        problem: &'static str,
    },
    #[error(
        "{path}: the CA key is encrypted and certkeeper has no passphrase for it; {HOW_TO_PROVIDE}"
    )]
    NoPassphrase { path: PathBuf },
    #[error("{path}: wrong passphrase: the CA key does not decrypt with the passphrase {from}; give the passphrase it was encrypted with")]
    WrongPassphrase { path: PathBuf, from: String },
    #[error("{path}: {reason}")]
    Unsupported { path: PathBuf, reason: String },
    #[error("{path}: not a readable CA key: {reason}; restore it from a backup")]
    Damaged { path: PathBuf, reason: String },
    #[error("cannot encrypt the CA key: {0}")]
    Encrypt(String),
    #[error("{path}: cannot encrypt the CA key: {reason}")]
    EncryptFile { path: PathBuf, reason: String },
    #[error(
        "no CA in {dir} yet; run `certkeeper ca init` (or `certkeeper renew`, which creates it)"
    )]
    NoCa { dir: PathBuf },
    #[error("no *.key file in {dir}; nothing to encrypt")]
    NoKeys { dir: PathBuf },
    #[error("{path}: {reason}")]
    Walk { path: PathBuf, reason: String },
    #[error("{0}")]
    Read(ReadError),
    #[error("{0}")]
    Write(crate::fsutil::FsError),
}

/// The passphrase the configuration gives: `spec.key_passphrase_file` when set; else
/// the systemd credential `$CREDENTIALS_DIRECTORY/ca-passphrase` when it exists; else
/// none.
pub fn passphrase(spec: &CaSpec) -> Result<Option<Passphrase>, CaKeyError> {
    let credentials = std::env::var_os("CREDENTIALS_DIRECTORY")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from);
    passphrase_from(spec.key_passphrase_file.as_deref(), credentials.as_deref())
}

/// [`passphrase`] with its sources given: the configured file, and the credentials
/// directory (systemd's `$CREDENTIALS_DIRECTORY`).
pub fn passphrase_from(
    file: Option<&Path>,
    credentials_dir: Option<&Path>,
) -> Result<Option<Passphrase>, CaKeyError> {
    if let Some(file) = file {
        return read_passphrase(file).map(Some);
    }
    if let Some(dir) = credentials_dir {
        let path = dir.join(CREDENTIAL_NAME);
        match read_passphrase(&path) {
            Ok(p) => return Ok(Some(p)),
            Err(CaKeyError::PassphraseRead(e)) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Reads a passphrase file: a regular file reached through no link, at most
/// [`PASSPHRASE_MAX`] bytes, that neither group nor others may read. One final newline
/// (`\n` or `\r\n`) is not part of the passphrase; the rest must be one line, not empty.
pub fn read_passphrase(path: &Path) -> Result<Passphrase, CaKeyError> {
    let (mut bytes, meta) =
        read_own_with_meta(path, PASSPHRASE_MAX).map_err(CaKeyError::PassphraseRead)?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o044 != 0 {
        return Err(CaKeyError::PassphraseTooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    strip_final_newline(&mut bytes);
    check_line(&bytes, path)?;
    Ok(Passphrase {
        bytes,
        source: Some(path.to_path_buf()),
    })
}

/// Removes one final newline (`\n` or `\r\n`) of a secret read from a file.
pub(crate) fn strip_final_newline(bytes: &mut Vec<u8>) {
    if bytes.ends_with(b"\r\n") {
        bytes.truncate(bytes.len() - 2);
    } else if bytes.ends_with(b"\n") {
        bytes.truncate(bytes.len() - 1);
    }
}

/// A passphrase is one line, not empty: OpenSSL's `-passin file:` reads only up to the
/// first newline, and a NUL ends it in C.
fn check_line(bytes: &[u8], path: &Path) -> Result<(), CaKeyError> {
    let problem = if bytes.is_empty() {
        Some("the passphrase is empty")
    } else if bytes.iter().any(|b| matches!(b, b'\n' | b'\r')) {
        Some("the passphrase spans more than one line")
    } else if bytes.contains(&0) {
        Some("the passphrase contains a NUL byte")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(CaKeyError::PassphraseMalformed {
            path: path.to_path_buf(),
            problem,
        }),
        None => Ok(()),
    }
}

/// Whether this PEM text holds an encrypted private key (PKCS#8, or the legacy
/// OpenSSL `Proc-Type: 4,ENCRYPTED` form).
pub fn is_encrypted(pem: &str) -> bool {
    pem.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") || is_legacy_encrypted(pem)
}

fn is_legacy_encrypted(pem: &str) -> bool {
    pem.lines()
        .any(|l| l.trim_end() == "Proc-Type: 4,ENCRYPTED")
}

/// The key as it is stored: its plain PKCS#8 PEM without a passphrase, encrypted
/// PKCS#8 PEM (PBES2: PBKDF2-HMAC-SHA256 with a random 16-byte salt and
/// [`PBKDF2_ITERATIONS`], AES-256-CBC with a random IV) with one.
pub fn encode(
    key: &PrivateKey,
    pass: Option<&Passphrase>,
) -> Result<Zeroizing<String>, CaKeyError> {
    let Some(pass) = pass else {
        return Ok(Zeroizing::new(key.pem().to_string()));
    };
    let mut salt = [0u8; 16];
    let mut iv = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt)
        .and_then(|()| aws_lc_rs::rand::fill(&mut iv))
        .map_err(|_| CaKeyError::Encrypt("no random bytes from the system".into()))?;
    let params = pbes2::Parameters::pbkdf2_sha256_aes256cbc(PBKDF2_ITERATIONS, &salt, &iv)
        .map_err(|e| CaKeyError::Encrypt(e.to_string()))?;
    let der = key.pkcs8_der();
    pkcs8::PrivateKeyInfo::from_der(&der)
        .map_err(|e| CaKeyError::Encrypt(format!("the key is not PKCS#8: {e}")))?;
    let encrypted_data = params
        .encrypt(pass.expose(), &der)
        .map_err(|e| CaKeyError::Encrypt(e.to_string()))?;
    let info = EncryptedPrivateKeyInfo {
        encryption_algorithm: params.into(),
        encrypted_data: &encrypted_data,
    };
    let pem = info
        .to_pem(pkcs8::LineEnding::LF)
        .map_err(|e| CaKeyError::Encrypt(e.to_string()))?;
    Ok(Zeroizing::new(pem))
}

/// Reads a CA key from its PEM text, read from `path` (named in every error). An
/// encrypted key needs `pass`; a plain one is accepted with or without it.
pub fn decode(pem: &str, pass: Option<&Passphrase>, path: &Path) -> Result<PrivateKey, CaKeyError> {
    let damaged = |reason: String| CaKeyError::Damaged {
        path: path.to_path_buf(),
        reason,
    };
    if is_legacy_encrypted(pem) {
        return Err(CaKeyError::Unsupported {
            path: path.to_path_buf(),
            reason: "the key is encrypted in OpenSSL's legacy PEM form (Proc-Type: 4,ENCRYPTED), which certkeeper does not read; convert it with `openssl pkcs8 -topk8 -v2 aes-256-cbc -v2prf hmacWithSHA256`".into(),
        });
    }
    if !pem.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        return PrivateKey::from_pem(pem).map_err(|e| damaged(e.to_string()));
    }
    let blocks = ::pem::parse_many(pem).map_err(|e| damaged(e.to_string()))?;
    let block = blocks
        .iter()
        .find(|b| b.tag() == "ENCRYPTED PRIVATE KEY")
        .ok_or_else(|| damaged("no ENCRYPTED PRIVATE KEY block".into()))?;
    let info = EncryptedPrivateKeyInfo::from_der(block.contents())
        .map_err(|e| damaged(format!("not an encrypted PKCS#8 key: {e}")))?;
    let Some(pass) = pass else {
        return Err(CaKeyError::NoPassphrase {
            path: path.to_path_buf(),
        });
    };
    check_cost(&info.encryption_algorithm).map_err(|reason| CaKeyError::Unsupported {
        path: path.to_path_buf(),
        reason,
    })?;
    let wrong = || CaKeyError::WrongPassphrase {
        path: path.to_path_buf(),
        from: match pass.source() {
            Some(p) => format!("read from {}", p.display()),
            None => "given".into(),
        },
    };
    let mut buffer = Zeroizing::new(info.encrypted_data.to_vec());
    let plain = match info
        .encryption_algorithm
        .decrypt_in_place(pass.expose(), &mut buffer)
    {
        Ok(plain) => plain,
        // A bad padding: the derived key is not the one it was encrypted with. (pkcs5
        // 0.7 reports a bad padding on decryption as `EncryptFailed`.)
        Err(pkcs5::Error::DecryptFailed | pkcs5::Error::EncryptFailed) => return Err(wrong()),
        Err(e) => {
            return Err(CaKeyError::Unsupported {
                path: path.to_path_buf(),
                reason: format!("the key is encrypted in a way certkeeper does not read ({e}); re-encrypt it with `openssl pkcs8 -topk8 -v2 aes-256-cbc -v2prf hmacWithSHA256`"),
            })
        }
    };
    // A wrong passphrase passes the padding check about once in 256 tries; what it
    // yields is then no key.
    PrivateKey::from_pkcs8_der(plain).map_err(|_| wrong())
}

/// Refuses key derivations that would cost more than certkeeper spends on one key.
fn check_cost(scheme: &pkcs5::EncryptionScheme<'_>) -> Result<(), String> {
    let Some(params) = scheme.pbes2() else {
        return Err("the key is encrypted with PBES1 (an obsolete scheme certkeeper does not read); re-encrypt it with `openssl pkcs8 -topk8 -v2 aes-256-cbc -v2prf hmacWithSHA256`".into());
    };
    match &params.kdf {
        pbes2::Kdf::Pbkdf2(p) if p.iteration_count > MAX_PBKDF2_ITERATIONS => Err(format!(
            "the key asks for {} PBKDF2 iterations, more than the {MAX_PBKDF2_ITERATIONS} certkeeper spends on one key",
            p.iteration_count
        )),
        pbes2::Kdf::Scrypt(s) => {
            let memory = 128u64
                .saturating_mul(s.cost_parameter)
                .saturating_mul(u64::from(s.block_size))
                .saturating_mul(u64::from(s.parallelization));
            if memory > MAX_SCRYPT_MEMORY {
                Err(format!(
                    "the key's scrypt parameters need {} MiB, more than the {} MiB certkeeper spends on one key",
                    memory >> 20,
                    MAX_SCRYPT_MEMORY >> 20
                ))
            } else {
                Ok(())
            }
        }
        _ => Ok(()),
    }
}

/// What [`encrypt_all`] did with one key file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encrypted {
    /// It was plain and is now encrypted.
    Now(PathBuf),
    /// It was encrypted already, with this passphrase.
    Already(PathBuf),
}

impl fmt::Display for Encrypted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Encrypted::Now(p) => write!(f, "encrypted {}", p.display()),
            Encrypted::Already(p) => write!(f, "already encrypted {}", p.display()),
        }
    }
}

/// Every `*.key` file under `ca_dir`, in subdirectories too, sorted. A link named
/// `*.key`, or one that leads to a directory, is an error: certkeeper follows no link
/// there, and skips nothing silently.
pub fn key_files(ca_dir: &Path) -> Result<Vec<PathBuf>, CaKeyError> {
    match std::fs::symlink_metadata(ca_dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(CaKeyError::Walk {
                path: ca_dir.to_path_buf(),
                reason: "is not a directory".into(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CaKeyError::NoCa {
                dir: ca_dir.to_path_buf(),
            })
        }
        Err(e) => {
            return Err(CaKeyError::Walk {
                path: ca_dir.to_path_buf(),
                reason: e.to_string(),
            })
        }
    }
    let mut out = Vec::new();
    collect_keys(ca_dir, &mut out)?;
    out.sort();
    Ok(out)
}

fn collect_keys(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), CaKeyError> {
    let walk_err = |path: &Path, e: std::io::Error| CaKeyError::Walk {
        path: path.to_path_buf(),
        reason: format!("cannot list: {e}"),
    };
    for entry in std::fs::read_dir(dir).map_err(|e| walk_err(dir, e))? {
        let entry = entry.map_err(|e| walk_err(dir, e))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| walk_err(&path, e))?;
        let is_key = path.extension().is_some_and(|x| x == "key");
        if kind.is_symlink() {
            if is_key || path.is_dir() {
                return Err(CaKeyError::Walk {
                    path,
                    reason: "is a symbolic link; certkeeper follows no link in its CA directory (replace it with the file or directory itself)".into(),
                });
            }
        } else if kind.is_dir() {
            collect_keys(&path, out)?;
        } else if is_key {
            out.push(path);
        }
    }
    Ok(())
}

/// Encrypts every plain `*.key` file under `ca_dir` with `pass` (see [`encode`]), each
/// replaced atomically with mode 0600 and its owner kept; an encrypted one must decrypt
/// with `pass`. Every key is read, checked and encrypted first: when any of them fails,
/// nothing is written and every failure is returned.
pub fn encrypt_all(ca_dir: &Path, pass: &Passphrase) -> Result<Vec<Encrypted>, Vec<CaKeyError>> {
    let files = key_files(ca_dir).map_err(|e| vec![e])?;
    if files.is_empty() {
        return Err(vec![CaKeyError::NoKeys {
            dir: ca_dir.to_path_buf(),
        }]);
    }
    let mut errors = Vec::new();
    let mut outcomes = Vec::new();
    let mut writes = Vec::new();
    for path in files {
        match prepare(&path, pass) {
            Ok(None) => outcomes.push(Encrypted::Already(path)),
            Ok(Some(spec)) => {
                writes.push(spec);
                outcomes.push(Encrypted::Now(path));
            }
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    for spec in &writes {
        write_atomic(spec).map_err(|e| vec![CaKeyError::Write(e)])?;
    }
    Ok(outcomes)
}

/// The write that encrypts one key file, or `None` when it is encrypted with `pass`
/// already.
fn prepare(path: &Path, pass: &Passphrase) -> Result<Option<FileSpec>, CaKeyError> {
    let (bytes, meta) = read_own_with_meta(path, PEM_MAX).map_err(CaKeyError::Read)?;
    let text = std::str::from_utf8(&bytes).map_err(|e| CaKeyError::Damaged {
        path: path.to_path_buf(),
        reason: format!("not PEM text (byte {})", e.valid_up_to()),
    })?;
    if is_encrypted(text) {
        decode(text, Some(pass), path)?;
        return Ok(None);
    }
    let key = decode(text, None, path)?;
    let pem = encode(&key, Some(pass)).map_err(|e| CaKeyError::EncryptFile {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    // What is written must give back the same key.
    let again = decode(&pem, Some(pass), path)?;
    if again.pkcs8_der() != key.pkcs8_der() {
        return Err(CaKeyError::EncryptFile {
            path: path.to_path_buf(),
            reason: "the encrypted key does not decrypt to the same key".into(),
        });
    }
    // The owner stays (a key of another user than the one running this is rewritten
    // for that user); the mode is the CA keys' own.
    let (uid, gid) = (meta.uid(), meta.gid());
    Ok(Some(FileSpec {
        path: path.to_path_buf(),
        bytes: Zeroizing::new(pem.as_bytes().to_vec()),
        mode: 0o600,
        uid: (uid != nix::unistd::geteuid().as_raw()).then_some(uid),
        gid: (gid != nix::unistd::getegid().as_raw()).then_some(gid),
        follow_symlinks: false,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::KeyType;
    use std::fs;

    const TYPES: [KeyType; 4] = [
        KeyType::EcdsaP256,
        KeyType::EcdsaP384,
        KeyType::Ed25519,
        KeyType::Rsa2048,
    ];

    fn pass(text: &str) -> Passphrase {
        Passphrase::new(text.as_bytes().to_vec()).unwrap()
    }

    /// Writes `bytes` to `dir/name` with `mode` and returns the path.
    fn file(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> PathBuf {
        let p = dir.join(name);
        fs::write(&p, bytes).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn every_key_type_round_trips_encrypted() {
        let p = pass("correct horse battery staple");
        for kind in TYPES {
            let key = PrivateKey::generate(kind).unwrap();
            let enc = encode(&key, Some(&p)).unwrap();
            assert!(
                enc.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----\n"),
                "{kind}: {}",
                &*enc
            );
            assert!(is_encrypted(&enc), "{kind}");
            assert!(!enc.contains("-----BEGIN PRIVATE KEY-----"), "{kind}");
            let back = decode(&enc, Some(&p), Path::new("/ca/k.key")).unwrap();
            assert_eq!(back.key_type(), Some(kind));
            assert_eq!(back.public_key_raw(), key.public_key_raw(), "{kind}");
            // The same PKCS#8 comes back (an Ed25519 key stays v1).
            assert_eq!(back.pem(), key.pem(), "{kind}");
            // A fresh salt and IV each time.
            assert_ne!(*encode(&key, Some(&p)).unwrap(), *enc, "{kind}");
        }
    }

    #[test]
    fn the_encryption_is_pbes2_pbkdf2_sha256_aes256cbc() {
        let key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
        let enc = encode(&key, Some(&pass("x"))).unwrap();
        let der = ::pem::parse(enc.as_bytes()).unwrap();
        assert_eq!(der.tag(), "ENCRYPTED PRIVATE KEY");
        let info = EncryptedPrivateKeyInfo::from_der(der.contents()).unwrap();
        let params = info.encryption_algorithm.pbes2().expect("PBES2");
        let kdf = params.kdf.pbkdf2().expect("PBKDF2");
        assert_eq!(kdf.iteration_count, PBKDF2_ITERATIONS);
        assert_eq!(kdf.salt.len(), 16);
        assert_eq!(kdf.prf, pbes2::Pbkdf2Prf::HmacWithSha256);
        assert!(matches!(
            params.encryption,
            pbes2::EncryptionScheme::Aes256Cbc { .. }
        ));
    }

    #[test]
    fn without_a_passphrase_the_key_is_plain_pem() {
        let key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
        let plain = encode(&key, None).unwrap();
        assert_eq!(&*plain, key.pem());
        assert!(!is_encrypted(&plain));
    }

    #[test]
    fn a_wrong_passphrase_names_the_file_and_not_the_passphrase() {
        let d = tempfile::tempdir().unwrap();
        let key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
        let enc = encode(&key, Some(&pass("right-passphrase"))).unwrap();
        let wrong = read_passphrase(&file(d.path(), "p", b"wrong-passphrase\n", 0o600)).unwrap();
        let path = Path::new("/var/lib/certkeeper/ca/intermediate.key");
        let e = decode(&enc, Some(&wrong), path).unwrap_err();
        assert!(matches!(e, CaKeyError::WrongPassphrase { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.starts_with("/var/lib/certkeeper/ca/intermediate.key: wrong passphrase"),
            "{msg}"
        );
        assert!(
            msg.contains(&d.path().join("p").display().to_string()),
            "{msg}"
        );
        assert!(!msg.contains("wrong-passphrase") && !msg.contains("right-passphrase"));
        let e = decode(&enc, Some(&pass("right-passphrasE")), path).unwrap_err();
        assert!(matches!(e, CaKeyError::WrongPassphrase { .. }), "{e:?}");
    }

    #[test]
    fn an_encrypted_key_without_a_passphrase_says_how_to_give_one() {
        let key = PrivateKey::generate(KeyType::Ed25519).unwrap();
        let enc = encode(&key, Some(&pass("secret"))).unwrap();
        let e = decode(&enc, None, Path::new("/s/ca/root.key")).unwrap_err();
        assert!(matches!(e, CaKeyError::NoPassphrase { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.starts_with("/s/ca/root.key: the CA key is encrypted"),
            "{msg}"
        );
        assert!(msg.contains("ca.key_passphrase_file"), "{msg}");
        assert!(
            msg.contains("LoadCredentialEncrypted=ca-passphrase"),
            "{msg}"
        );
    }

    #[test]
    fn a_plain_key_is_accepted_with_or_without_a_passphrase() {
        let key = PrivateKey::generate(KeyType::EcdsaP384).unwrap();
        for p in [None, Some(pass("secret"))] {
            let back = decode(key.pem(), p.as_ref(), Path::new("/ca/k.key")).unwrap();
            assert_eq!(back.public_key_raw(), key.public_key_raw());
        }
        let e = decode("garbage", None, Path::new("/ca/k.key")).unwrap_err();
        assert!(matches!(e, CaKeyError::Damaged { .. }), "{e:?}");
        assert!(
            e.to_string()
                .starts_with("/ca/k.key: not a readable CA key"),
            "{e}"
        );
    }

    #[test]
    fn legacy_encrypted_pem_is_refused_with_the_conversion() {
        let legacy = "-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,00112233445566778899AABBCCDDEEFF\n\nAAAA\n-----END EC PRIVATE KEY-----\n";
        assert!(is_encrypted(legacy));
        let e = decode(legacy, Some(&pass("x")), Path::new("/ca/k.key")).unwrap_err();
        assert!(matches!(e, CaKeyError::Unsupported { .. }), "{e:?}");
        assert!(e.to_string().contains("openssl pkcs8 -topk8"), "{e}");
    }

    #[test]
    fn a_key_asking_for_too_much_work_is_refused_at_once() {
        let (salt, iv) = ([1u8; 16], [2u8; 16]);
        let params =
            pbes2::Parameters::pbkdf2_sha256_aes256cbc(MAX_PBKDF2_ITERATIONS + 1, &salt, &iv)
                .unwrap();
        let pem = EncryptedPrivateKeyInfo {
            encryption_algorithm: params.into(),
            encrypted_data: &[0u8; 48],
        }
        .to_pem(pkcs8::LineEnding::LF)
        .unwrap();
        let started = std::time::Instant::now();
        let e = decode(&pem, Some(&pass("x")), Path::new("/ca/k.key")).unwrap_err();
        assert!(matches!(e, CaKeyError::Unsupported { .. }), "{e:?}");
        assert!(e.to_string().contains("PBKDF2 iterations"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn one_final_newline_is_not_part_of_the_passphrase() {
        let d = tempfile::tempdir().unwrap();
        let key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
        let enc = encode(&key, Some(&pass("s3cret"))).unwrap();
        for (i, text) in [&b"s3cret"[..], b"s3cret\n", b"s3cret\r\n"]
            .into_iter()
            .enumerate()
        {
            let p = read_passphrase(&file(d.path(), &format!("ok{i}"), text, 0o600)).unwrap();
            decode(&enc, Some(&p), Path::new("/ca/k.key"))
                .unwrap_or_else(|e| panic!("{text:?}: {e}"));
        }
        // A passphrase with a trailing space is another passphrase.
        let p = read_passphrase(&file(d.path(), "space", b"s3cret \n", 0o600)).unwrap();
        assert!(decode(&enc, Some(&p), Path::new("/ca/k.key")).is_err());
        for (name, text, problem) in [
            ("empty", &b""[..], "empty"),
            ("newline", b"\n", "empty"),
            ("crlf", b"\r\n", "empty"),
            ("two", b"s3cret\n\n", "more than one line"),
            ("lines", b"s3cret\nmore\n", "more than one line"),
            ("nul", b"s3c\0ret\n", "NUL"),
        ] {
            let e = read_passphrase(&file(d.path(), name, text, 0o600)).unwrap_err();
            assert!(
                matches!(e, CaKeyError::PassphraseMalformed { .. }),
                "{name}: {e:?}"
            );
            assert!(e.to_string().contains(problem), "{name}: {e}");
        }
        assert!(Passphrase::new(Vec::new()).is_err());
    }

    #[test]
    fn a_passphrase_file_others_can_read_is_refused() {
        let d = tempfile::tempdir().unwrap();
        for mode in [0o640, 0o604, 0o644, 0o440] {
            let p = file(d.path(), &format!("p{mode:o}"), b"secret\n", mode);
            let e = read_passphrase(&p).unwrap_err();
            assert!(
                matches!(e, CaKeyError::PassphraseTooOpen { mode: m, .. } if m == mode),
                "{mode:o}: {e:?}"
            );
            assert!(
                e.to_string()
                    .ends_with(&format!("run `chmod 600 {}`", p.display())),
                "{e}"
            );
        }
        for mode in [0o600, 0o400] {
            let p = file(d.path(), &format!("q{mode:o}"), b"secret\n", mode);
            read_passphrase(&p).unwrap();
        }
    }

    #[test]
    fn a_passphrase_file_is_read_through_no_link() {
        let d = tempfile::tempdir().unwrap();
        let real = file(d.path(), "real", b"secret\n", 0o600);
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = read_passphrase(&link).unwrap_err();
        assert!(matches!(e, CaKeyError::PassphraseRead(_)), "{e:?}");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        let e = read_passphrase(&d.path().join("missing")).unwrap_err();
        assert!(e.to_string().contains("no such file"), "{e}");
    }

    #[test]
    fn the_configured_file_comes_first_then_the_systemd_credential() {
        let d = tempfile::tempdir().unwrap();
        let configured = file(d.path(), "configured", b"from-config\n", 0o600);
        let creds = d.path().join("creds");
        fs::create_dir(&creds).unwrap();
        let secret = |p: Option<Passphrase>| p.map(|p| p.expose().to_vec());

        // No credential yet: none, or the configured file.
        assert!(passphrase_from(None, Some(&creds)).unwrap().is_none());
        assert!(passphrase_from(None, None).unwrap().is_none());
        file(&creds, CREDENTIAL_NAME, b"from-credential", 0o400);
        assert_eq!(
            secret(passphrase_from(None, Some(&creds)).unwrap()),
            Some(b"from-credential".to_vec())
        );
        let p = passphrase_from(Some(&configured), Some(&creds))
            .unwrap()
            .unwrap();
        assert_eq!(p.expose(), b"from-config");
        assert_eq!(p.source(), Some(configured.as_path()));
        // A configured file that is missing is an error, not a fallback.
        let e = passphrase_from(Some(&d.path().join("gone")), Some(&creds)).unwrap_err();
        assert!(e.to_string().contains("no such file"), "{e}");
        // A credential that is there but unusable is an error too.
        fs::set_permissions(
            creds.join(CREDENTIAL_NAME),
            fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        assert!(matches!(
            passphrase_from(None, Some(&creds)),
            Err(CaKeyError::PassphraseTooOpen { .. })
        ));
    }

    #[test]
    fn the_passphrase_is_never_in_debug_output() {
        let d = tempfile::tempdir().unwrap();
        let p = read_passphrase(&file(d.path(), "p", b"hunter2\n", 0o600)).unwrap();
        let shown = format!("{p:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        assert!(!format!("{:?}", pass("hunter2")).contains("hunter2"));
    }

    #[test]
    fn encrypt_all_encrypts_plain_keys_and_checks_encrypted_ones() {
        let d = tempfile::tempdir().unwrap();
        let ca = d.path().join("ca");
        fs::create_dir_all(ca.join("old")).unwrap();
        let root = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
        let old = PrivateKey::generate(KeyType::Ed25519).unwrap();
        file(&ca, "root.key", root.pem().as_bytes(), 0o600);
        file(
            &ca.join("old"),
            "intermediate.key",
            old.pem().as_bytes(),
            0o600,
        );
        file(&ca, "root.crt", b"not a key", 0o644);
        let p = pass("secret");
        let done = encrypt_all(&ca, &p).unwrap();
        assert_eq!(
            done,
            [
                Encrypted::Now(ca.join("old/intermediate.key")),
                Encrypted::Now(ca.join("root.key")),
            ]
        );
        for (name, key) in [("root.key", &root), ("old/intermediate.key", &old)] {
            let path = ca.join(name);
            let text = fs::read_to_string(&path).unwrap();
            assert!(is_encrypted(&text), "{name}");
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
                0o600
            );
            let back = decode(&text, Some(&p), &path).unwrap();
            assert_eq!(back.public_key_raw(), key.public_key_raw(), "{name}");
        }
        assert_eq!(fs::read(ca.join("root.crt")).unwrap(), b"not a key");
        let before = fs::read(ca.join("root.key")).unwrap();
        assert_eq!(
            encrypt_all(&ca, &p).unwrap(),
            [
                Encrypted::Already(ca.join("old/intermediate.key")),
                Encrypted::Already(ca.join("root.key")),
            ]
        );
        assert_eq!(fs::read(ca.join("root.key")).unwrap(), before);

        // A wrong passphrase: an error, and the new plain key is left as it is.
        let extra = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
        file(&ca, "extra.key", extra.pem().as_bytes(), 0o600);
        let errors = encrypt_all(&ca, &pass("other")).unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors
            .iter()
            .all(|e| matches!(e, CaKeyError::WrongPassphrase { .. })));
        assert_eq!(
            fs::read_to_string(ca.join("extra.key")).unwrap(),
            extra.pem()
        );
        assert_eq!(fs::read(ca.join("root.key")).unwrap(), before);
    }

    #[test]
    fn encrypt_all_follows_no_link_and_needs_a_ca() {
        let d = tempfile::tempdir().unwrap();
        let ca = d.path().join("ca");
        let e = encrypt_all(&ca, &pass("x")).unwrap_err();
        assert!(matches!(e[..], [CaKeyError::NoCa { .. }]), "{e:?}");
        fs::create_dir(&ca).unwrap();
        let e = encrypt_all(&ca, &pass("x")).unwrap_err();
        assert!(matches!(e[..], [CaKeyError::NoKeys { .. }]), "{e:?}");
        let key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
        let outside = file(d.path(), "outside.key", key.pem().as_bytes(), 0o600);
        file(&ca, "root.key", key.pem().as_bytes(), 0o600);
        std::os::unix::fs::symlink(&outside, ca.join("link.key")).unwrap();
        let e = encrypt_all(&ca, &pass("x")).unwrap_err();
        assert!(
            e[0].to_string().contains("link.key: is a symbolic link"),
            "{e:?}"
        );
        assert_eq!(fs::read_to_string(ca.join("root.key")).unwrap(), key.pem());
        assert_eq!(fs::read_to_string(&outside).unwrap(), key.pem());
    }
}
