//! `certkeeper inspect FILE...`: what is in any PEM or DER file (`-`: standard input),
//! whether chains are in order and which keys belong to which certificates (across all
//! the files given). Exits 1 when a file cannot be read, a chain is out of order, or a
//! key matches none of the certificates given.

use super::ca::print_cert;
use super::CliError;
use crate::fsread::{read_regular, PEM_MAX};
use crate::keys::KeyInfo;
use crate::model::excerpt;
use crate::x509::{check_chain_order, parse_pem, CertInfo, PemItem};
use std::path::PathBuf;
use time::OffsetDateTime;

pub fn run(files: &[PathBuf], now: OffsetDateTime) -> Result<u8, CliError> {
    let mut parsed: Vec<(String, Vec<PemItem>)> = Vec::new();
    let mut failed = 0;
    // Keys that match none of the certificates given, and chains out of order.
    let mut mismatched = 0;
    for f in files {
        let stdin = f.as_os_str() == "-";
        let name = if stdin {
            "(standard input)".to_string()
        } else {
            f.display().to_string()
        };
        // Any file may be given: only a regular one of PEM size is read, so that a FIFO
        // or a device is an error at once rather than a hang (standard input is read
        // up to the same size).
        let bytes = if stdin {
            read_stdin()
        } else {
            read_regular(f, PEM_MAX).map_err(|e| e.reason())
        };
        match bytes.and_then(|b| parse_any(&b)) {
            Ok(items) if items.is_empty() => {
                println!(
                    "{name}: ERROR: no PEM blocks (not a certificate or key file, or overwritten)"
                );
                failed += 1;
            }
            Ok(items) => parsed.push((name, items)),
            Err(e) => {
                println!("{name}: ERROR: {e}");
                failed += 1;
            }
        }
    }
    let certs: Vec<(String, usize, &CertInfo)> = parsed
        .iter()
        .flat_map(|(n, items)| {
            items
                .iter()
                .enumerate()
                .filter_map(move |(i, it)| match it {
                    PemItem::Cert(c) => Some((n.clone(), i + 1, c.as_ref())),
                    _ => None,
                })
        })
        .collect();
    let keys: Vec<(String, usize, &KeyInfo)> = parsed
        .iter()
        .flat_map(|(n, items)| {
            items
                .iter()
                .enumerate()
                .filter_map(move |(i, it)| match it {
                    PemItem::Key(k) => Some((n.clone(), i + 1, k)),
                    _ => None,
                })
        })
        .collect();
    for (name, items) in &parsed {
        println!("{name}:");
        for (i, item) in items.iter().enumerate() {
            match item {
                PemItem::Cert(c) => {
                    println!("  [{}] certificate", i + 1);
                    print_cert(c, now, "      ");
                    let owners: Vec<String> = keys
                        .iter()
                        .filter(|(_, _, k)| c.matches(k))
                        .map(|(n, j, _)| format!("{n} [{j}]"))
                        .collect();
                    if !owners.is_empty() {
                        println!("      key match: {}", owners.join(", "));
                    }
                }
                PemItem::Key(k) => {
                    let kind = k.key_type.map(|t| t.as_str()).unwrap_or("unsupported type");
                    let matches: Vec<String> = certs
                        .iter()
                        .filter(|(_, _, c)| c.matches(k))
                        .map(|(n, j, _)| format!("{n} [{j}]"))
                        .collect();
                    let m = if matches.is_empty() {
                        if !certs.is_empty() {
                            mismatched += 1;
                        }
                        "matches none of the certificates given".to_string()
                    } else {
                        format!("matches {}", matches.join(", "))
                    };
                    println!("  [{}] private key ({kind}): {m}", i + 1);
                }
                PemItem::Other(label) => {
                    println!("  [{}] {} (not inspected)", i + 1, excerpt(label))
                }
            }
        }
        let file_certs: Vec<CertInfo> = items
            .iter()
            .filter_map(|it| match it {
                PemItem::Cert(c) => Some((**c).clone()),
                _ => None,
            })
            .collect();
        if file_certs.len() > 1 {
            match check_chain_order(&file_certs) {
                Ok(()) => println!("  chain: in order (each certificate is signed by the next)"),
                Err(e) => {
                    println!("  chain: WRONG: {e}");
                    mismatched += 1;
                }
            }
        }
    }
    Ok(u8::from(failed + mismatched > 0))
}

/// Standard input, at most `PEM_MAX` bytes.
fn read_stdin() -> Result<zeroize::Zeroizing<Vec<u8>>, String> {
    use std::io::Read;
    let mut buf = zeroize::Zeroizing::new(Vec::new());
    std::io::stdin()
        .take(PEM_MAX + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot read standard input: {e}"))?;
    if buf.len() as u64 > PEM_MAX {
        return Err(format!(
            "more than {PEM_MAX} bytes on standard input: not a certificate or key"
        ));
    }
    Ok(buf)
}

/// PEM blocks, or one DER certificate or PKCS#8 key.
fn parse_any(bytes: &[u8]) -> Result<Vec<PemItem>, String> {
    let looks_pem = bytes.windows(11).any(|w| w == b"-----BEGIN ");
    if looks_pem || bytes.is_empty() {
        return parse_pem(bytes);
    }
    if let Ok(c) = CertInfo::from_der(bytes) {
        return Ok(vec![PemItem::Cert(Box::new(c))]);
    }
    if let Ok(k) = KeyInfo::from_der("PRIVATE KEY", bytes) {
        return Ok(vec![PemItem::Key(k)]);
    }
    Err("neither PEM nor a DER certificate or PKCS#8 key".to_string())
}
