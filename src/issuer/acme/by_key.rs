//! Revocation signed with the certificate's own key (RFC 8555 §7.6, the `jwk` form):
//! for when the account that ordered the certificate cannot be used (its credentials
//! lost, or the CA no longer knows it). A new account would not do: a CA revokes for an
//! account only what that account ordered or has authorizations for.

use super::{chain, AcmeError};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use bytes::Bytes;
use instant_acme::{BodyWrapper, HttpClient, RevocationRequest};
use serde_json::{json, Value};
use zeroize::Zeroizing;

/// badNonce answers retried at most (the CA sends a fresh nonce with each).
const NONCE_RETRIES: usize = 3;
/// The most read of one response body.
const BODY_MAX: usize = 1 << 20;

/// A certificate's private key, as a JWS signer.
enum Signer {
    Ec(EcdsaKeyPair, &'static str, &'static str),
    Ed(Ed25519KeyPair),
    Rsa(RsaKeyPair),
}

impl Signer {
    /// The first `PRIVATE KEY` (PKCS#8) block of `pem`.
    fn from_pem(pem_text: &str) -> Result<Signer, String> {
        let blocks = pem::parse_many(pem_text).map_err(|e| format!("the key file: {e}"))?;
        let block = blocks
            .iter()
            .find(|b| b.tag() == "PRIVATE KEY")
            .ok_or("the key file holds no PKCS#8 private key")?;
        let der = Zeroizing::new(block.contents().to_vec());
        for (alg, jws, crv) in [
            (
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                "ES256",
                "P-256",
            ),
            (
                &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
                "ES384",
                "P-384",
            ),
            (
                &signature::ECDSA_P521_SHA512_FIXED_SIGNING,
                "ES512",
                "P-521",
            ),
        ] {
            if let Ok(k) = EcdsaKeyPair::from_pkcs8(alg, &der) {
                return Ok(Signer::Ec(k, jws, crv));
            }
        }
        if let Ok(k) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der) {
            return Ok(Signer::Ed(k));
        }
        RsaKeyPair::from_pkcs8(&der)
            .map(Signer::Rsa)
            .map_err(|_| "the key is not an ECDSA, Ed25519 or RSA PKCS#8 key".to_string())
    }

    fn alg(&self) -> &'static str {
        match self {
            Signer::Ec(_, alg, _) => alg,
            Signer::Ed(_) => "EdDSA",
            Signer::Rsa(_) => "RS256",
        }
    }

    /// The public key as a JWK (RFC 7517/7518/8037).
    fn jwk(&self) -> Value {
        match self {
            Signer::Ec(k, _, crv) => {
                // Uncompressed point: 0x04 || X || Y.
                let point = &k.public_key().as_ref()[1..];
                let (x, y) = point.split_at(point.len() / 2);
                json!({"kty": "EC", "crv": crv, "x": B64.encode(x), "y": B64.encode(y)})
            }
            Signer::Ed(k) => {
                json!({"kty": "OKP", "crv": "Ed25519", "x": B64.encode(k.public_key().as_ref())})
            }
            Signer::Rsa(k) => {
                let p = k.public_key();
                json!({
                    "kty": "RSA",
                    "n": B64.encode(p.modulus().big_endian_without_leading_zero()),
                    "e": B64.encode(p.exponent().big_endian_without_leading_zero()),
                })
            }
        }
    }

    fn sign(&self, data: &[u8]) -> Result<Vec<u8>, String> {
        let rng = SystemRandom::new();
        let fail = |_| "cannot sign with the certificate's key".to_string();
        Ok(match self {
            Signer::Ec(k, _, _) => k.sign(&rng, data).map_err(fail)?.as_ref().to_vec(),
            Signer::Ed(k) => k.sign(data).as_ref().to_vec(),
            Signer::Rsa(k) => {
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &rng, data, &mut sig)
                    .map_err(fail)?;
                sig
            }
        })
    }
}

/// Sends `revokeCert` for `request` to the CA at `directory`, signed with `key_pem`
/// (the certificate's own key).
pub(super) async fn revoke(
    http: &dyn HttpClient,
    directory: &str,
    request: &RevocationRequest<'_>,
    key_pem: &str,
) -> Result<(), AcmeError> {
    let signer = Signer::from_pem(key_pem).map_err(AcmeError::Certificate)?;
    let dir = get_json(http, directory).await?;
    let url = |field: &str| {
        dir[field].as_str().map(str::to_string).ok_or_else(|| {
            AcmeError::Client(format!("the ACME directory {directory} has no `{field}`"))
        })
    };
    let (new_nonce, revoke_url) = (url("newNonce")?, url("revokeCert")?);
    let mut nonce = fresh_nonce(http, &new_nonce).await?;
    let payload =
        B64.encode(serde_json::to_vec(request).map_err(|e| AcmeError::Certificate(e.to_string()))?);
    for _ in 0..=NONCE_RETRIES {
        let protected = B64.encode(
            json!({"alg": signer.alg(), "jwk": signer.jwk(), "nonce": nonce, "url": revoke_url})
                .to_string(),
        );
        let signature = signer
            .sign(format!("{protected}.{payload}").as_bytes())
            .map_err(AcmeError::Certificate)?;
        let body =
            json!({"protected": protected, "payload": payload, "signature": B64.encode(signature)});
        let req = http::Request::post(&revoke_url)
            .header(http::header::CONTENT_TYPE, "application/jose+json")
            .body(BodyWrapper::from(body.to_string().into_bytes()))
            .map_err(|e| AcmeError::Client(e.to_string()))?;
        let mut rsp = http
            .request(req)
            .await
            .map_err(|e| AcmeError::Certificate(format!("revocation request: {}", chain(&e))))?;
        let status = rsp.parts.status;
        let next_nonce = header(&rsp.parts, "replay-nonce");
        let text = body_text(&mut rsp).await;
        if status.is_success() {
            return Ok(());
        }
        let problem: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let kind = problem["type"].as_str().unwrap_or("");
        match next_nonce {
            Some(n) if kind.ends_with(":badNonce") => nonce = n,
            _ => {
                return Err(AcmeError::Certificate(format!(
                    "revocation signed with the certificate's key refused ({status}): {} ({kind})",
                    problem["detail"].as_str().unwrap_or(text.trim())
                )))
            }
        }
    }
    Err(AcmeError::Certificate(
        "revocation refused: the CA kept answering badNonce".into(),
    ))
}

async fn get_json(http: &dyn HttpClient, url: &str) -> Result<Value, AcmeError> {
    let req = http::Request::get(url)
        .body(BodyWrapper::from(Vec::new()))
        .map_err(|e| AcmeError::Client(e.to_string()))?;
    let mut rsp = http
        .request(req)
        .await
        .map_err(|e| AcmeError::Client(format!("{url}: {}", chain(&e))))?;
    let text = body_text(&mut rsp).await;
    serde_json::from_str(&text)
        .map_err(|e| AcmeError::Client(format!("{url}: not an ACME directory: {e}")))
}

async fn fresh_nonce(http: &dyn HttpClient, url: &str) -> Result<String, AcmeError> {
    let req = http::Request::head(url)
        .body(BodyWrapper::from(Vec::new()))
        .map_err(|e| AcmeError::Client(e.to_string()))?;
    let rsp = http
        .request(req)
        .await
        .map_err(|e| AcmeError::Client(format!("{url}: {}", chain(&e))))?;
    header(&rsp.parts, "replay-nonce")
        .ok_or_else(|| AcmeError::Client(format!("{url}: no Replay-Nonce in the answer")))
}

fn header(parts: &http::response::Parts, name: &str) -> Option<String> {
    parts
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn body_text(rsp: &mut instant_acme::BytesResponse) -> String {
    let bytes: Bytes = rsp.body.into_bytes().await.unwrap_or_default();
    String::from_utf8_lossy(&bytes[..bytes.len().min(BODY_MAX)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each key type gives a JWK of its kind and a signature its public key verifies.
    #[test]
    fn every_key_type_signs_a_jws_its_jwk_verifies() {
        use crate::keys::PrivateKey;
        use crate::model::KeyType;
        for (kind, alg, verify) in [
            (
                KeyType::EcdsaP256,
                "ES256",
                &signature::ECDSA_P256_SHA256_FIXED as &dyn signature::VerificationAlgorithm,
            ),
            (
                KeyType::EcdsaP384,
                "ES384",
                &signature::ECDSA_P384_SHA384_FIXED,
            ),
            (KeyType::Ed25519, "EdDSA", &signature::ED25519),
            (
                KeyType::Rsa2048,
                "RS256",
                &signature::RSA_PKCS1_2048_8192_SHA256,
            ),
        ] {
            let key = PrivateKey::generate(kind).unwrap();
            let s = Signer::from_pem(key.pem()).unwrap_or_else(|e| panic!("{kind:?}: {e}"));
            assert_eq!(s.alg(), alg);
            let sig = s.sign(b"header.payload").unwrap();
            let jwk = s.jwk();
            let field = |f: &str| B64.decode(jwk[f].as_str().unwrap()).unwrap();
            let verified = match jwk["kty"].as_str().unwrap() {
                "EC" => {
                    let mut p = vec![4u8];
                    p.extend(field("x"));
                    p.extend(field("y"));
                    signature::UnparsedPublicKey::new(verify, &p)
                        .verify(b"header.payload", &sig)
                        .is_ok()
                }
                "OKP" => signature::UnparsedPublicKey::new(verify, &field("x"))
                    .verify(b"header.payload", &sig)
                    .is_ok(),
                _ => signature::RsaPublicKeyComponents {
                    n: field("n"),
                    e: field("e"),
                }
                .verify(
                    &signature::RSA_PKCS1_2048_8192_SHA256,
                    b"header.payload",
                    &sig,
                )
                .is_ok(),
            };
            assert!(verified, "{kind:?}: the JWK's key verifies the signature");
        }
    }
}
