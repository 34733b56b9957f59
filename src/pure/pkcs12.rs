//! PKCS#12 (`.p12`) files as certkeeper writes and reads them: one key with its leaf and
//! chain, encrypted with PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC) and protected by an
//! HMAC-SHA256 MAC, the form OpenSSL 3 (without `-legacy`), NSS, Java and Windows read.
//! The friendly name (Java's alias) is the certificate's name.
//!
//! Must not: write the legacy RC2/3DES forms, print a password, or read a file (the
//! password comes from `io::password`, the bytes from the caller).

use p12_keystore::{
    EncryptionAlgorithm, KeyStore, KeyStoreEntry, MacAlgorithm, Pkcs12ImportPolicy, PrivateKeyChain,
};
use std::fmt;
use zeroize::Zeroizing;

/// PBKDF2 iterations for each of the two encrypted parts (certificates, key) and for
/// the MAC. .NET (and so Windows services written in it) refuses a file whose
/// derivations add up to more than 1,000,000 iterations, and p12 readers commonly cap
/// one derivation at 1,000,000: 3 × 200,000 stays within both, and is 100 times
/// OpenSSL's default of 2,048. Every open of the file, by certkeeper or a client, pays
/// the three derivations (tens of milliseconds).
pub const ITERATIONS: u32 = 200_000;

/// A password of a `.p12` file: one line, not empty, UTF-8 (what OpenSSL, NSS and Java
/// turn into the PKCS#12 BMPString alike). Wiped when dropped, never printed.
pub struct Password(Zeroizing<String>);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

impl Password {
    /// Checks the bytes of a password (without its final newline).
    pub fn new(bytes: Zeroizing<Vec<u8>>) -> Result<Password, &'static str> {
        if bytes.is_empty() {
            return Err("the password is empty");
        }
        if bytes.iter().any(|b| matches!(b, b'\n' | b'\r')) {
            return Err("the password spans more than one line");
        }
        if bytes.contains(&0) {
            return Err("the password contains a NUL byte");
        }
        let text = std::str::from_utf8(&bytes).map_err(|_| "the password is not UTF-8 text")?;
        Ok(Password(Zeroizing::new(text.to_string())))
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

/// Why a `.p12` file could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The MAC does not check out: another password, or changed bytes.
    #[error("does not open with the password (another password, or a damaged file)")]
    WrongPassword,
    #[error("not a PKCS#12 file certkeeper can read: {0}")]
    Damaged(String),
    #[error("holds no private key with its certificate")]
    NoKey,
}

/// What a `.p12` file holds: the key (PKCS#8 DER) and the leaf followed by its chain
/// (DER), as the file links them.
pub struct Opened {
    pub alias: String,
    pub key_der: Zeroizing<Vec<u8>>,
    pub certs: Vec<Vec<u8>>,
}

impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opened")
            .field("alias", &self.alias)
            .field("key_der", &"<redacted>")
            .field("certs", &self.certs.len())
            .finish()
    }
}

/// The `.p12` bytes for a key (PKCS#8 DER), its leaf and the chain (DER, the leaf
/// first), under the friendly name `alias`.
pub fn encode(
    alias: &str,
    key_der: &[u8],
    certs: &[&[u8]],
    password: &Password,
) -> Result<Zeroizing<Vec<u8>>, String> {
    let key = p12_keystore::PrivateKey::from_der(key_der).map_err(|e| e.to_string())?;
    let certs = certs
        .iter()
        .map(|der| p12_keystore::Certificate::from_der(der).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    // The local key id ties the key bag to the leaf's bag; OpenSSL uses the leaf's
    // SHA-1 fingerprint, any unique value does.
    let chain = PrivateKeyChain::new(alias.as_bytes().to_vec(), key, certs);
    let mut store = KeyStore::new();
    store.add_entry(alias, KeyStoreEntry::PrivateKeyChain(chain));
    let bytes = store
        .writer(password.expose())
        .encryption_algorithm(EncryptionAlgorithm::PbeWithHmacSha256AndAes256)
        .encryption_iterations(ITERATIONS)
        .mac_algorithm(MacAlgorithm::HmacSha256)
        .mac_iterations(ITERATIONS)
        .write()
        .map_err(|e| e.to_string())?;
    Ok(Zeroizing::new(bytes))
}

/// Opens a `.p12` file's bytes with `password`: its first key with the certificates
/// linked to it.
pub fn decode(bytes: &[u8], password: &Password) -> Result<Opened, OpenError> {
    let store = KeyStore::from_pkcs12(bytes, password.expose(), Pkcs12ImportPolicy::Strict)
        .map_err(|e| match e {
            p12_keystore::error::Error::MacError(_) => OpenError::WrongPassword,
            other => OpenError::Damaged(other.to_string()),
        })?;
    let (alias, chain) = store.private_key_chain().ok_or(OpenError::NoKey)?;
    if chain.certs().is_empty() {
        return Err(OpenError::NoKey);
    }
    Ok(Opened {
        alias: alias.to_string(),
        key_der: Zeroizing::new(chain.key().as_der().to_vec()),
        certs: chain.certs().iter().map(|c| c.as_der().to_vec()).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pw(text: &str) -> Password {
        Password::new(Zeroizing::new(text.as_bytes().to_vec())).unwrap()
    }

    /// A self-made CA and a leaf it signed: (key DER, [leaf DER, CA DER]).
    fn pair() -> (Vec<u8>, Vec<Vec<u8>>) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "Test CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut leaf = CertificateParams::new(vec!["alice.example.internal".into()]).unwrap();
        leaf.distinguished_name
            .push(rcgen::DnType::CommonName, "alice.example.internal");
        let leaf = leaf.signed_by(&key, &issuer).unwrap();
        (
            key.serialize_der(),
            vec![leaf.der().to_vec(), ca_cert.der().to_vec()],
        )
    }

    #[test]
    fn what_encode_writes_decode_reads_back_with_the_name_as_alias() {
        let (key, certs) = pair();
        let refs: Vec<&[u8]> = certs.iter().map(|c| c.as_slice()).collect();
        let bytes = encode("alice", &key, &refs, &pw("s3cret pass")).unwrap();
        let opened = decode(&bytes, &pw("s3cret pass")).unwrap();
        assert_eq!(opened.alias, "alice");
        assert_eq!(*opened.key_der, key);
        assert_eq!(opened.certs, certs, "the leaf first, then its chain");
        // Salt and IV are fresh each time: two files of one pair differ.
        let again = encode("alice", &key, &refs, &pw("s3cret pass")).unwrap();
        assert_ne!(*bytes, *again);
    }

    #[test]
    fn the_file_is_pbes2_with_aes_256_and_an_hmac_sha256_mac() {
        let (key, certs) = pair();
        let refs: Vec<&[u8]> = certs.iter().map(|c| c.as_slice()).collect();
        let bytes = encode("alice", &key, &refs, &pw("pw")).unwrap();
        let has = |oid: &[u8]| bytes.windows(oid.len()).any(|w| w == oid);
        // id-PBES2 1.2.840.113549.1.5.13, id-PBKDF2 1.2.840.113549.1.5.12,
        // hmacWithSHA256 1.2.840.113549.2.9, aes256-CBC 2.16.840.1.101.3.4.1.42,
        // sha256 (the MAC's digest) 2.16.840.1.101.3.4.2.1.
        assert!(has(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05, 0x0d]));
        assert!(has(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05, 0x0c]));
        assert!(has(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x02, 0x09]));
        assert!(has(&[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a]));
        assert!(has(&[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01]));
        // No legacy PKCS#12 PBE (1.2.840.113549.1.12.1.x: RC2, RC4, 3DES).
        assert!(!has(&[
            0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x01
        ]));
    }

    #[test]
    fn another_password_or_changed_bytes_do_not_open_it() {
        let (key, certs) = pair();
        let refs: Vec<&[u8]> = certs.iter().map(|c| c.as_slice()).collect();
        let bytes = encode("alice", &key, &refs, &pw("right")).unwrap();
        assert_eq!(
            decode(&bytes, &pw("wrong")).unwrap_err(),
            OpenError::WrongPassword
        );
        let mut changed = bytes.to_vec();
        let at = changed.len() / 2;
        changed[at] ^= 1;
        assert!(decode(&changed, &pw("right")).is_err());
        assert!(matches!(
            decode(b"not a p12", &pw("right")),
            Err(OpenError::Damaged(_))
        ));
    }

    #[test]
    fn a_password_is_one_line_of_text_and_never_printed() {
        let bad = |b: &[u8]| Password::new(Zeroizing::new(b.to_vec())).unwrap_err();
        assert_eq!(bad(b""), "the password is empty");
        assert_eq!(bad(b"a\nb"), "the password spans more than one line");
        assert_eq!(bad(b"a\rb"), "the password spans more than one line");
        assert_eq!(bad(b"a\0b"), "the password contains a NUL byte");
        assert_eq!(bad(b"\xff\xfe"), "the password is not UTF-8 text");
        assert_eq!(format!("{:?}", pw("hunter2")), "Password(<redacted>)");
    }
}
