//! What a new configuration changes that a running daemon cannot take on: the state
//! directory (the CA, the ledger, the lock), the CA's own settings and the metrics
//! listener are set up once at start. A reload that changes one of them is refused by
//! name, and the running configuration stays. The exceptions: the CA's name
//! constraints (`ca.permitted`, `ca.excluded`) are checked against the certificates of
//! the configuration being loaded and written into the CA certificates made from then
//! on; `ca.rotate_before` and `ca.root_overlap` only move the CA's next rotation; and
//! `ca.key_passphrase_file` is read again each time a CA key is. A reload takes them.

use super::Config;

/// The fields, by their configuration names, whose change needs a restart
/// (`ca.key_passphrase_file` changes live).
pub fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let (a, b) = (&old.ca, &new.ca);
    [
        ("state_dir", old.state_dir != new.state_dir),
        ("ca.organization", a.organization != b.organization),
        ("ca.common_name", a.common_name != b.common_name),
        ("ca.key", a.key != b.key),
        ("ca.root_lifetime", a.root_lifetime != b.root_lifetime),
        (
            "ca.intermediate_lifetime",
            a.intermediate_lifetime != b.intermediate_lifetime,
        ),
        ("metrics.listen", old.metrics != new.metrics),
    ]
    .into_iter()
    .filter(|(_, changed)| *changed)
    .map(|(field, _)| field)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(extra: &str) -> Config {
        let text = format!(
            "state_dir: /nonexistent-state/a\n{extra}certificates:\n  - name: www\n    sans: [www.example.internal]\n    files: {{ layout: combined, cert: /nonexistent-tls/www.pem }}\n"
        );
        super::super::parse(&text, Path::new("c.yaml")).expect("valid")
    }

    #[test]
    fn certificates_servers_and_hooks_change_live() {
        let old = parse("");
        let new = parse("hooks:\n  renewed: [[/bin/true]]\n");
        assert!(needs_restart(&old, &new).is_empty());
        let mut more = old.clone();
        more.certificates.clear();
        assert!(needs_restart(&old, &more).is_empty());
    }

    #[test]
    fn ca_constraints_change_live() {
        let old = parse("");
        let new = parse("ca:\n  permitted: [example.internal]\n  excluded: [10.0.0.0/8]\n");
        assert_ne!(old.ca, new.ca);
        assert!(needs_restart(&old, &new).is_empty());
    }

    #[test]
    fn the_state_the_ca_and_the_listener_need_a_restart() {
        let old = parse("");
        let new = parse("ca:\n  common_name: Other CA\n  root_lifetime: 20y\nmetrics:\n  listen: 127.0.0.1:9999\n");
        assert_eq!(
            needs_restart(&old, &new),
            ["ca.common_name", "ca.root_lifetime", "metrics.listen"]
        );
        let passphrase = parse("ca:\n  key_passphrase_file: /etc/certkeeper/ca-passphrase\n");
        assert!(
            needs_restart(&old, &passphrase).is_empty(),
            "the passphrase file is read at each use"
        );
        let mut moved = old.clone();
        moved.state_dir = "/nonexistent-state/b".into();
        assert_eq!(needs_restart(&old, &moved), ["state_dir"]);
    }
}
