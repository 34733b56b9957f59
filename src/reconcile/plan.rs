//! What a pass does, decided before anything is written: which certificates are
//! renewed and why, which are kept and until when, and which servers are then tested
//! and reloaded. Every real pass decides each certificate with [`decide`]; `check` and
//! `renew --dry-run` print the [`Plan`] that [`make`] builds from the same decisions.

use super::observe_all;
use crate::config::{CertSpec, Config};
use crate::issuer::{InternalCa, Registry};
use crate::policy::{decide_with_revocations, relative, rfc3339, Reason, Seen, Verdict};
use crate::state::StateDir;
use std::collections::{BTreeSet, HashSet};
use time::OffsetDateTime;

/// What happens to one certificate.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Valid and not due: nothing is written.
    Keep {
        renew_at: OffsetDateTime,
        not_after: OffsetDateTime,
        serial: String,
        not_before: OffsetDateTime,
    },
    /// A new pair is issued and installed, for this reason.
    Renew(Reason),
}

/// Decides one certificate from what is on disk (pure): `force` renews what is fine;
/// `revoked` holds the serials revoked by the internal CA.
pub fn decide(
    spec: &CertSpec,
    seen: &Seen,
    now: OffsetDateTime,
    revoked: &HashSet<String>,
    force: bool,
) -> Action {
    match (decide_with_revocations(spec, seen, now, revoked), seen) {
        (Verdict::Fine { renew_at }, Seen::Present(p)) if !force => Action::Keep {
            renew_at,
            not_after: p.leaf.not_after,
            serial: p.leaf.serial.clone(),
            not_before: p.leaf.not_before,
        },
        (Verdict::Fine { .. }, _) => Action::Renew(Reason::Forced),
        (Verdict::Reissue(r), _) => Action::Renew(r),
    }
}

/// One certificate's line of the plan.
#[derive(Debug, Clone)]
pub struct Item {
    pub name: String,
    pub action: Action,
    /// The servers its renewal tests and reloads.
    pub reload: std::sync::Arc<[String]>,
}

#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub items: Vec<Item>,
}

impl Plan {
    /// The servers the plan tests and reloads: those of every certificate it renews.
    pub fn servers(&self) -> BTreeSet<&str> {
        self.items
            .iter()
            .filter(|i| matches!(i.action, Action::Renew(_)))
            .flat_map(|i| i.reload.iter().map(String::as_str))
            .collect()
    }

    /// How many certificates it renews.
    pub fn renewals(&self) -> usize {
        self.items
            .iter()
            .filter(|i| matches!(i.action, Action::Renew(_)))
            .count()
    }

    /// The plan as `check` and `renew --dry-run` print it: one aligned line per
    /// certificate, then the servers.
    pub fn render(&self, now: OffsetDateTime) -> String {
        let width = self.items.iter().map(|i| i.name.len()).max().unwrap_or(0);
        let mut out = String::new();
        for i in &self.items {
            let (what, why) = match &i.action {
                Action::Keep { renew_at, .. } => (
                    "ok",
                    format!(
                        "next renewal {} ({})",
                        relative(*renew_at, now),
                        rfc3339(*renew_at)
                    ),
                ),
                Action::Renew(reason) => ("would renew", reason.to_string()),
            };
            let label = format!("{}:", i.name);
            out.push_str(&format!("{label:w$} {what:11}  {why}\n", w = width + 1));
        }
        let servers = self.servers();
        if servers.is_empty() {
            out.push_str(&format!(
                "{} of {} certificate(s) to renew; no server to test or reload\n",
                self.renewals(),
                self.items.len()
            ));
        } else {
            out.push_str(&format!(
                "{} of {} certificate(s) to renew; then config test and reload: {}\n",
                self.renewals(),
                self.items.len(),
                servers.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
        out
    }
}

/// Reads what is on disk for `selected` (nothing is written) and decides each.
pub fn make(
    config: &Config,
    ca: Option<&InternalCa>,
    selected: &[&CertSpec],
    force: bool,
    now: OffsetDateTime,
) -> Plan {
    let revoked = crate::trust::revoked_serials(&StateDir::new(&config.state_dir));
    let issuers = Registry::new(config, ca);
    let issuer_of = |spec: &CertSpec| issuers.get(&spec.issuer);
    let seen = observe_all(selected, &issuer_of, None);
    Plan {
        items: selected
            .iter()
            .zip(seen)
            .map(|(spec, (seen, _, _))| Item {
                name: spec.name.clone(),
                action: decide(spec, &seen, now, &revoked, force),
                reload: spec.reload.clone(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn spec(name: &str) -> CertSpec {
        let yaml = format!(
            "state_dir: /nonexistent-state\nservers:\n  web: {{ type: command, test: [/bin/true], reload: [/bin/true] }}\ncertificates:\n  - name: {name}\n    sans: [{name}.example.internal]\n    files: {{ layout: combined, cert: /nonexistent-tls/{name}.pem }}\n    reload: [web]\n"
        );
        crate::config::parse(&yaml, Path::new("c.yaml"))
            .expect("valid")
            .certificates
            .remove(0)
    }

    #[test]
    fn missing_renews_and_force_renews_what_is_fine() {
        let now = OffsetDateTime::now_utc();
        let s = spec("www");
        let missing = Seen::Missing(PathBuf::from("/nonexistent-tls/www.pem"));
        let none = HashSet::new();
        assert!(matches!(
            decide(&s, &missing, now, &none, false),
            Action::Renew(Reason::Missing(_))
        ));
        let plan = Plan {
            items: vec![
                Item {
                    name: "www".into(),
                    action: decide(&s, &missing, now, &none, false),
                    reload: s.reload.clone(),
                },
                Item {
                    name: "a-longer-name".into(),
                    action: Action::Keep {
                        renew_at: now + time::Duration::days(3),
                        not_after: now + time::Duration::days(30),
                        serial: "01".into(),
                        not_before: now,
                    },
                    reload: vec!["other".into()].into(),
                },
            ],
        };
        // Only the servers of what is renewed are tested and reloaded.
        assert_eq!(plan.servers().into_iter().collect::<Vec<_>>(), ["web"]);
        let text = plan.render(now);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "www:           would renew  /nonexistent-tls/www.pem is missing"
        );
        assert!(lines[1].starts_with("a-longer-name: ok           next renewal in 3d"));
        assert_eq!(
            lines[2],
            "1 of 2 certificate(s) to renew; then config test and reload: web"
        );
    }
}
