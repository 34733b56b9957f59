//! Private keys: generation for every supported key type, PEM in a form OpenSSL 3.0
//! reads (PKCS#8 v1, also for Ed25519), loading, and the public half for matching.
//! Key bytes live in zeroizing buffers and never appear in `Debug` output.

use crate::model::KeyType;
use rcgen::{KeyPair, PublicKeyData, RsaKeySize, SignatureAlgorithm};
use std::fmt;
use zeroize::Zeroizing;

/// A private key with its PEM encoding.
pub struct PrivateKey {
    pair: KeyPair,
    pem: Zeroizing<String>,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey({:?}, <redacted>)", self.key_type())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot generate a {0} key: {1}")]
    Generate(KeyType, String),
    #[error("not a readable private key: {0}")]
    Parse(String),
    #[error("unsupported key: {0}")]
    Unsupported(String),
}

/// PKCS#8 v1 header for an Ed25519 private key; the 32-byte seed follows.
const ED25519_PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

impl PrivateKey {
    /// Generates a fresh key. RSA generation takes tens to hundreds of milliseconds:
    /// async callers run this on a blocking thread.
    pub fn generate(kind: KeyType) -> Result<PrivateKey, KeyError> {
        let gen_err = |e: rcgen::Error| KeyError::Generate(kind, e.to_string());
        let pair = match kind {
            KeyType::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            KeyType::EcdsaP384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
            KeyType::Ed25519 => {
                // rcgen writes PKCS#8 v2 (with the public key), which OpenSSL 3.0 cannot
                // read; rebuild the key as v1 from its seed.
                let v2 = KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(gen_err)?;
                let der = Zeroizing::new(v2.serialize_der());
                let seed = der
                    .windows(4)
                    .position(|w| w == [0x04, 0x22, 0x04, 0x20])
                    .map(|i| &der[i + 4..i + 36])
                    .ok_or_else(|| {
                        KeyError::Generate(kind, "unexpected Ed25519 encoding".into())
                    })?;
                let mut v1 = Zeroizing::new(ED25519_PKCS8_V1_PREFIX.to_vec());
                v1.extend_from_slice(seed);
                KeyPair::try_from(v1.as_slice())
            }
            KeyType::Rsa2048 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_2048)
            }
            KeyType::Rsa3072 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_3072)
            }
            KeyType::Rsa4096 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_4096)
            }
        }
        .map_err(gen_err)?;
        Ok(Self::wrap(pair))
    }

    /// Loads a PEM private key (PKCS#8, SEC1 or PKCS#1).
    pub fn from_pem(pem: &str) -> Result<PrivateKey, KeyError> {
        let block = pem
            .split("-----BEGIN ")
            .skip(1)
            .find(|b| {
                b.starts_with("PRIVATE KEY")
                    || b.starts_with("EC PRIVATE KEY")
                    || b.starts_with("RSA PRIVATE KEY")
            })
            .ok_or_else(|| KeyError::Parse("no PRIVATE KEY block".into()))?;
        let block = format!("-----BEGIN {block}");
        let pair = KeyPair::from_pem(&block).map_err(|e| KeyError::Parse(e.to_string()))?;
        let key = Self::wrap(pair);
        key.key_type_checked()?;
        Ok(key)
    }

    /// Loads a PKCS#8 private key from its DER (what an encrypted PKCS#8 key decrypts
    /// to). The DER is kept as given, so an Ed25519 key stays PKCS#8 v1.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<PrivateKey, KeyError> {
        let pair = KeyPair::try_from(der).map_err(|e| KeyError::Parse(e.to_string()))?;
        let key = Self::wrap(pair);
        key.key_type_checked()?;
        Ok(key)
    }

    /// The PKCS#8 DER of the key (the contents of its `PRIVATE KEY` PEM block).
    pub fn pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.pair.serialize_der())
    }

    fn wrap(pair: KeyPair) -> PrivateKey {
        let pem = Zeroizing::new(pair.serialize_pem());
        PrivateKey { pair, pem }
    }

    pub fn pem(&self) -> &str {
        &self.pem
    }

    pub fn pair(&self) -> &KeyPair {
        &self.pair
    }

    /// The subjectPublicKey bits, as they appear in a certificate.
    pub fn public_key_raw(&self) -> &[u8] {
        self.pair.public_key_raw()
    }

    pub fn spki_der(&self) -> Vec<u8> {
        self.pair.subject_public_key_info()
    }

    pub fn key_type(&self) -> Option<KeyType> {
        self.key_type_checked().ok()
    }

    fn key_type_checked(&self) -> Result<KeyType, KeyError> {
        key_type_of_spki(&self.spki_der())
    }

    /// The signature algorithm a CA with this key signs with.
    pub fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.pair.algorithm()
    }
}

/// What the agent needs to know about a key file: its public half and type. Found
/// without cryptography for EC keys (their encoding carries the public point, which
/// is also all OpenSSL compares when it checks a key against a certificate), by a
/// full parse otherwise. Holds no secret.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub public_key_raw: Vec<u8>,
    pub key_type: Option<KeyType>,
}

impl KeyInfo {
    /// `label` is the PEM label (`PRIVATE KEY`, `EC PRIVATE KEY`, `RSA PRIVATE KEY`).
    pub fn from_der(label: &str, der: &[u8]) -> Result<KeyInfo, KeyError> {
        if let Some(info) = ec_fast_path(label, der) {
            return Ok(info);
        }
        let pem = Zeroizing::new(crate::encoding::pem_encode(label, der));
        let key = PrivateKey::from_pem(&pem)?;
        Ok(KeyInfo {
            public_key_raw: key.public_key_raw().to_vec(),
            key_type: key.key_type(),
        })
    }
}

/// One DER element: (tag, contents, rest).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = match first {
        n if n < 0x80 => (n as usize, rest),
        0x81 => (*rest.first()? as usize, &rest[1..]),
        0x82 => (
            (*rest.first()? as usize) << 8 | *rest.get(1)? as usize,
            rest.get(2..)?,
        ),
        _ => return None,
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];

/// The public point of a PKCS#8 or SEC1 EC key that carries it, with the curve.
fn ec_fast_path(label: &str, der: &[u8]) -> Option<KeyInfo> {
    let (ec_key, mut curve) = match label {
        "PRIVATE KEY" => {
            let (0x30, body, _) = tlv(der)? else {
                return None;
            };
            let (0x02, _version, rest) = tlv(body)? else {
                return None;
            };
            let (0x30, alg, rest) = tlv(rest)? else {
                return None;
            };
            let (0x06, oid, params) = tlv(alg)? else {
                return None;
            };
            if oid != OID_EC_PUBLIC_KEY {
                return None;
            }
            let (0x06, curve, _) = tlv(params)? else {
                return None;
            };
            let (0x04, inner, _) = tlv(rest)? else {
                return None;
            };
            (inner, Some(curve))
        }
        "EC PRIVATE KEY" => (der, None),
        _ => return None,
    };
    let (0x30, body, _) = tlv(ec_key)? else {
        return None;
    };
    let (0x02, _version, mut rest) = tlv(body)? else {
        return None;
    };
    let (0x04, scalar, r) = tlv(rest)? else {
        return None;
    };
    rest = r;
    let mut point = None;
    while !rest.is_empty() {
        let (tag, value, r) = tlv(rest)?;
        rest = r;
        match tag {
            0xa0 => curve = curve.or(tlv(value).filter(|t| t.0 == 0x06).map(|t| t.1)),
            0xa1 => {
                let (0x03, bits, _) = tlv(value)? else {
                    return None;
                };
                point = bits.strip_prefix(&[0u8]).map(<[u8]>::to_vec);
            }
            _ => return None,
        }
    }
    let (key_type, size) = match curve? {
        c if c == OID_P256 => (KeyType::EcdsaP256, 32),
        c if c == OID_P384 => (KeyType::EcdsaP384, 48),
        _ => return None,
    };
    let point = point?;
    if scalar.len() != size || point.len() != 1 + 2 * size || point[0] != 4 {
        return None;
    }
    Some(KeyInfo {
        public_key_raw: point,
        key_type: Some(key_type),
    })
}

/// The key type of a DER SubjectPublicKeyInfo.
pub fn key_type_of_spki(spki: &[u8]) -> Result<KeyType, KeyError> {
    use x509_parser::prelude::FromDer;
    use x509_parser::public_key::PublicKey;
    let (_, info) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki)
        .map_err(|e| KeyError::Unsupported(e.to_string()))?;
    let oid = info.algorithm.algorithm.to_id_string();
    if oid == "1.3.101.112" {
        return Ok(KeyType::Ed25519);
    }
    match info.parsed() {
        Ok(PublicKey::RSA(rsa)) => match rsa.key_size() {
            2048 => Ok(KeyType::Rsa2048),
            3072 => Ok(KeyType::Rsa3072),
            4096 => Ok(KeyType::Rsa4096),
            n => Err(KeyError::Unsupported(format!("RSA key of {n} bits"))),
        },
        Ok(PublicKey::EC(ec)) => match ec.key_size() {
            256 => Ok(KeyType::EcdsaP256),
            384 => Ok(KeyType::EcdsaP384),
            n => Err(KeyError::Unsupported(format!("EC key of {n} bits"))),
        },
        _ => Err(KeyError::Unsupported(format!("public key algorithm {oid}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_type_round_trips_through_pem() {
        for kind in KeyType::ALL {
            if kind == KeyType::Rsa4096 {
                continue; // slow; covered by the integration tests
            }
            let key = PrivateKey::generate(kind).unwrap();
            assert_eq!(key.key_type(), Some(kind));
            assert!(
                key.pem().starts_with("-----BEGIN PRIVATE KEY-----"),
                "{kind}"
            );
            let again = PrivateKey::from_pem(key.pem()).unwrap();
            assert_eq!(again.public_key_raw(), key.public_key_raw(), "{kind}");
            assert!(!format!("{key:?}").contains("BEGIN"));
        }
    }

    #[test]
    fn ed25519_is_pkcs8_v1() {
        let key = PrivateKey::generate(KeyType::Ed25519).unwrap();
        let b64: String = key
            .pem()
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        // 48 bytes of DER = 64 base64 characters; v2 would be longer.
        assert_eq!(b64.len(), 64, "{}", key.pem());
    }

    #[test]
    fn key_info_finds_the_public_half_of_every_type() {
        for kind in [
            KeyType::EcdsaP256,
            KeyType::EcdsaP384,
            KeyType::Ed25519,
            KeyType::Rsa2048,
        ] {
            let key = PrivateKey::generate(kind).unwrap();
            let der = ::pem::parse(key.pem()).unwrap();
            let info = KeyInfo::from_der(der.tag(), der.contents()).unwrap();
            assert_eq!(info.public_key_raw, key.public_key_raw(), "{kind}");
            assert_eq!(info.key_type, Some(kind));
        }
        let key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
        let der = ::pem::parse(key.pem()).unwrap();
        assert!(
            ec_fast_path("PRIVATE KEY", der.contents()).is_some(),
            "EC keys take the fast path"
        );
        let mut bad = der.contents().to_vec();
        bad.truncate(bad.len() - 5);
        assert!(KeyInfo::from_der("PRIVATE KEY", &bad).is_err());
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(PrivateKey::from_pem("hello").is_err());
        assert!(PrivateKey::from_pem(
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
        )
        .is_err());
    }
}
