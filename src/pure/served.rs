//! What a strict client needs from the chain a server sends (pure): the certificates
//! after the leaf must be the chain installed with it, complete and in order. A
//! server that sends the leaf alone works with browsers that cache intermediates and
//! breaks curl, Go, Java and every fresh client.

use std::fmt;

/// How the ledger note of an install starts when the served chain had a problem.
pub const NOTE_PREFIX: &str = "served at ";

/// How the certificates a server sends after the leaf differ from the installed chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainProblem {
    /// Fewer certificates than the chain (the leaf alone, most often).
    Missing { sent: usize, expected: usize },
    /// The chain's certificates in another order.
    Order,
    /// The chain and more (a root, an old intermediate).
    Extra { sent: usize, expected: usize },
    /// Certificates that are not the chain installed with the leaf.
    Foreign,
}

/// Compares what the server sent after the leaf with the installed chain (DER each).
pub fn judge(sent: &[Vec<u8>], expected: &[Vec<u8>]) -> Option<ChainProblem> {
    if sent == expected {
        return None;
    }
    let all_known = sent.iter().all(|c| expected.contains(c));
    let all_sent = expected.iter().all(|c| sent.contains(c));
    Some(match (all_known, all_sent) {
        (true, true) if sent.len() == expected.len() => ChainProblem::Order,
        (true, _) if sent.len() < expected.len() => ChainProblem::Missing {
            sent: sent.len(),
            expected: expected.len(),
        },
        (_, true) if sent.starts_with(expected) => ChainProblem::Extra {
            sent: sent.len(),
            expected: expected.len(),
        },
        (_, true) => ChainProblem::Order,
        _ => ChainProblem::Foreign,
    })
}

fn certificates(n: usize) -> String {
    match n {
        0 => "no certificate".into(),
        1 => "1 certificate".into(),
        n => format!("{n} certificates"),
    }
}

impl fmt::Display for ChainProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChainProblem::Missing { sent, expected } => write!(
                f,
                "the server sends {} after the leaf where the chain has {}: clients that do not already hold the intermediate cannot verify it; point the server at the file that holds leaf and chain (the nginx layout's `cert`, the separate layout's `fullchain`, or the apache layout's `chain` as SSLCertificateChainFile)",
                certificates(*sent),
                certificates(*expected)
            ),
            ChainProblem::Order => f.write_str(
                "the server sends the chain's certificates in another order: each must be followed by the one that signed it; point the server at certkeeper's file, which has them in order",
            ),
            ChainProblem::Extra { sent, expected } => write!(
                f,
                "the server sends {} after the leaf where the chain has {}: the rest (a root, an old intermediate) only costs handshake bytes and confuses some clients; point the server at certkeeper's file",
                certificates(*sent),
                certificates(*expected)
            ),
            ChainProblem::Foreign => f.write_str(
                "the server sends intermediates that are not the chain installed with this certificate: it reads its chain from another file; point it at certkeeper's",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(n: u8) -> Vec<u8> {
        vec![n; 4]
    }

    #[test]
    fn each_difference_has_its_own_verdict() {
        let chain = vec![c(1), c(2)];
        assert_eq!(judge(&chain, &chain), None);
        assert_eq!(
            judge(&[], &chain),
            Some(ChainProblem::Missing {
                sent: 0,
                expected: 2
            })
        );
        assert_eq!(
            judge(&[c(1)], &chain),
            Some(ChainProblem::Missing {
                sent: 1,
                expected: 2
            })
        );
        assert_eq!(judge(&[c(2), c(1)], &chain), Some(ChainProblem::Order));
        assert_eq!(
            judge(&[c(1), c(2), c(9)], &chain),
            Some(ChainProblem::Extra {
                sent: 3,
                expected: 2
            })
        );
        assert_eq!(
            judge(&[c(2), c(1), c(9)], &chain),
            Some(ChainProblem::Order)
        );
        assert_eq!(judge(&[c(7)], &chain), Some(ChainProblem::Foreign));
        assert_eq!(judge(&[c(1), c(7)], &chain), Some(ChainProblem::Foreign));
        assert!(judge(&[], &chain)
            .unwrap()
            .to_string()
            .contains("no certificate after the leaf where the chain has 2 certificates"));
    }
}
