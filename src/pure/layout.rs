//! Layouts: which bytes go to which file with which mode (pure). Reading the files back
//! is `observe`.

use crate::config::{CertSpec, Files};
use crate::fsutil::FileSpec;
use crate::keys::PrivateKey;
use crate::x509::CertInfo;
use std::path::Path;
use zeroize::Zeroizing;

fn pems(certs: &[&CertInfo]) -> String {
    certs.iter().map(|c| c.to_pem()).collect()
}

/// The files a certificate's layout writes, key material included.
pub fn render(
    spec: &CertSpec,
    key: &PrivateKey,
    leaf: &CertInfo,
    chain: &[CertInfo],
) -> Vec<FileSpec> {
    let full: Vec<&CertInfo> = std::iter::once(leaf).chain(chain).collect();
    let chain_refs: Vec<&CertInfo> = chain.iter().collect();
    let file = |path: &Path, text: String, secret: bool| FileSpec {
        path: path.to_path_buf(),
        bytes: Zeroizing::new(text.into_bytes()),
        mode: if secret {
            spec.key_mode
        } else {
            spec.cert_mode
        },
        uid: spec.owner.as_ref().map(|p| p.id),
        gid: spec.group.as_ref().map(|p| p.id),
        follow_symlinks: spec.follow_symlinks,
    };
    let key_file = |path: &Path| file(path, key.pem().to_string(), true);
    // The key is written first: a reader that sees the new certificate then finds its key.
    match &spec.files {
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
    }
}
