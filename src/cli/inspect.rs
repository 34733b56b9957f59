//! `certkeeper inspect FILE...`: what is in any PEM file, whether chains are in order
//! and which keys belong to which certificates (across all the files given).

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
    for f in files {
        let name = f.display().to_string();
        // Any file may be given: only a regular one of PEM size is read, so that a FIFO
        // or a device is an error at once rather than a hang.
        match read_regular(f, PEM_MAX)
            .map_err(|e| e.reason())
            .and_then(|b| parse_pem(&b))
        {
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
                Err(e) => println!("  chain: WRONG: {e}"),
            }
        }
    }
    Ok(if failed > 0 { 1 } else { 0 })
}
