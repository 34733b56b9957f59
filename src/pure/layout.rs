//! Layouts: which bytes go to which file with which mode (pure). Reading the files back
//! is `observe`; a `pkcs12` layout's password is read by `io::password`.

use crate::config::{CertSpec, Files};
use crate::fsutil::FileSpec;
use crate::keys::PrivateKey;
use crate::pkcs12::Password;
use crate::x509::CertInfo;
use std::path::Path;
use zeroize::Zeroizing;

fn pems(certs: &[&CertInfo]) -> String {
    certs.iter().map(|c| c.to_pem()).collect()
}

/// The files a certificate's layout writes, key material included. `password` encrypts
/// a `pkcs12` layout's file (the others take none); the error says why that file could
/// not be made.
pub fn render(
    spec: &CertSpec,
    key: &PrivateKey,
    leaf: &CertInfo,
    chain: &[CertInfo],
    password: Option<&Password>,
) -> Result<Vec<FileSpec>, String> {
    let full: Vec<&CertInfo> = std::iter::once(leaf).chain(chain).collect();
    let chain_refs: Vec<&CertInfo> = chain.iter().collect();
    let bytes_file = |path: &Path, bytes: Zeroizing<Vec<u8>>, secret: bool| FileSpec {
        path: path.to_path_buf(),
        bytes,
        mode: if secret {
            spec.key_mode
        } else {
            spec.cert_mode
        },
        uid: spec.owner.as_ref().map(|p| p.id),
        gid: spec.group.as_ref().map(|p| p.id),
        follow_symlinks: spec.follow_symlinks,
    };
    let file = |path: &Path, text: String, secret: bool| {
        bytes_file(path, Zeroizing::new(text.into_bytes()), secret)
    };
    let key_file = |path: &Path| file(path, key.pem().to_string(), true);
    // The key is written first: a reader that sees the new certificate then finds its key.
    Ok(match &spec.files {
        Files::Nginx { cert, key } => vec![key_file(key), file(cert, pems(&full), false)],
        Files::Apache { cert, chain, key } => vec![
            key_file(key),
            file(chain, pems(&chain_refs), false),
            file(cert, leaf.to_pem(), false),
        ],
        Files::Combined { cert } => {
            vec![file(cert, format!("{}{}", key.pem(), pems(&full)), true)]
        }
        Files::Separate {
            cert,
            chain,
            fullchain,
            key,
        } => vec![
            key_file(key),
            file(chain, pems(&chain_refs), false),
            file(fullchain, pems(&full), false),
            file(cert, leaf.to_pem(), false),
        ],
        Files::Pkcs12 { p12, .. } => {
            let password = password.ok_or("no password to encrypt the .p12 file with")?;
            let ders: Vec<&[u8]> = full.iter().map(|c| c.der.as_slice()).collect();
            let bytes = crate::pkcs12::encode(&spec.name, &key.pkcs8_der(), &ders, password)
                .map_err(|e| format!("cannot make the .p12 file: {e}"))?;
            vec![bytes_file(p12, bytes, true)]
        }
    })
}
