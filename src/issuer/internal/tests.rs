//! The CA over decades on an injected clock: rotations happen when the schedule says,
//! leaves always get their full lifetime, and every leaf in place verifies to a root in
//! the trust targets at every moment.

use super::*;
use crate::config::{CertSpec, Config};
use crate::issuer::make_csr;
use crate::policy::{decide, Present, Seen, Verdict};
use time::macros::datetime;

fn config(dir: &Path, extra_ca: &str, certs: &[(&str, &str)]) -> Config {
    let mut yaml = format!(
        "state_dir: {}/state\nca: {{ organization: Test Org, common_name: Test CA{extra_ca} }}\ncertificates:\n",
        dir.display()
    );
    for (name, lifetime) in certs {
        yaml.push_str(&format!(
            "  - name: {name}\n    sans: [{name}.example.internal]\n    lifetime: {lifetime}\n    files: {{ layout: combined, cert: {}/tls/{name}.pem }}\n",
            dir.display()
        ));
    }
    crate::config::parse(&yaml, Path::new("c.yaml")).expect("valid config")
}

struct Leaf {
    cert: CertInfo,
    chain: Vec<CertInfo>,
}

fn issue(ca: &InternalCa, spec: &CertSpec, now: OffsetDateTime) -> Leaf {
    let key = PrivateKey::generate(spec.key).unwrap();
    let req = IssueRequest {
        name: spec.name.clone(),
        common_name: spec.common_name.clone(),
        sans: spec.sans.clone(),
        usage: spec.usage,
        lifetime: spec.lifetime,
        profile: None,
    };
    let issued = ca.issue(&make_csr(&key, &req).unwrap(), &req, now).unwrap();
    assert!(
        issued.clamped.is_none(),
        "`{}` was cut short at {now}: {:?}",
        spec.name,
        issued.clamped
    );
    Leaf {
        cert: issued.leaf,
        chain: issued.chain.to_vec(),
    }
}

fn seen(ca: &InternalCa, leaf: &Leaf) -> Seen {
    Seen::Present(Box::new(Present {
        leaf: leaf.cert.clone(),
        chain: leaf.chain.clone(),
        from_issuer: ca.issued(&leaf.cert, &leaf.chain),
        issuer_not_after: leaf.chain.first().map(|c| c.not_after),
        issuer_current: ca.issuing_now(&leaf.chain),
    }))
}

/// Whether `leaf` verifies at `now` to one of `roots`, through its chain (and, like a
/// client, through whatever the chain leads to): signatures and validity.
fn verifies(leaf: &Leaf, roots: &[&CertInfo], now: OffsetDateTime) -> bool {
    let valid = |c: &CertInfo| c.not_before <= now && now < c.not_after;
    let mut cert = &leaf.cert;
    if !valid(cert) {
        return false;
    }
    for next in &leaf.chain {
        if let Some(root) = roots.iter().find(|r| cert.signed_by(r) && valid(r)) {
            let _ = root;
            return true;
        }
        if !(cert.signed_by(next) && valid(next)) {
            return false;
        }
        cert = next;
    }
    roots.iter().any(|r| cert.signed_by(r) && valid(r))
}

/// Runs the CA and the certificates of `config` from `start` for `years`, jumping from
/// event to event (a due renewal, a CA step) and checking at every stop. Returns the CA
/// changes in order with their times.
fn run(
    config: &Config,
    start: OffsetDateTime,
    span: time::Duration,
) -> Vec<(OffsetDateTime, Change)> {
    let state = crate::state::StateDir::new(&config.state_dir);
    state.create().unwrap();
    let dir = state.ca_dir();
    let timing = crate::policy::ca::timing(config);
    let longest = crate::policy::ca::longest_leaf(config);
    let mut ca = InternalCa::init(&config.ca, &dir, start).unwrap();
    let mut leaves: Vec<Leaf> = config
        .certificates
        .iter()
        .map(|c| issue(&ca, c, start))
        .collect();
    let mut log = Vec::new();
    let end = start + span;
    let mut now = start;
    let mut stops = 0;
    while now < end {
        stops += 1;
        assert!(stops < 100_000, "the schedule does not advance");
        ca = ca
            .maintain(&config.ca, &timing, longest, now, Force::Nothing, None)
            .unwrap();
        for c in ca.changes.drain(..) {
            log.push((now, c));
        }
        let roots = ca.roots();
        let mut next = end;
        for (spec, leaf) in config.certificates.iter().zip(leaves.iter_mut()) {
            assert!(
                verifies(leaf, &roots, now),
                "`{}` does not verify at {now} (leaf until {}, chain {:?}, roots {:?})",
                spec.name,
                leaf.cert.not_after,
                leaf.chain.iter().map(|c| &c.subject).collect::<Vec<_>>(),
                roots.iter().map(|c| &c.subject).collect::<Vec<_>>()
            );
            match decide(spec, &seen(&ca, leaf), now) {
                Verdict::Reissue(_) => {
                    *leaf = issue(&ca, spec, now);
                    assert!(verifies(leaf, &roots, now));
                    // A client holding only the roots of a moment ago verifies too.
                }
                Verdict::Fine { renew_at } => next = next.min(renew_at),
            }
            if let Verdict::Fine { renew_at } = decide(spec, &seen(&ca, leaf), now) {
                next = next.min(renew_at);
            }
        }
        if let (_, Some(at)) = crate::policy::ca::steps(&ca.state(), &timing, now) {
            next = next.min(at);
        }
        assert!(next > now, "nothing moves at {now}");
        now = next;
    }
    log
}

#[test]
fn twenty_five_years_with_default_lifetimes_never_cut_a_leaf_short_nor_leave_a_gap() {
    let tmp = tempfile::tempdir().unwrap();
    let config = config(tmp.path(), "", &[("www", "90d"), ("api", "30d")]);
    let start = datetime!(2026-11-28 00:00 UTC);
    let log = run(&config, start, time::Duration::days(25 * 365));
    let count = |e: &str| log.iter().filter(|(_, c)| c.event == e).count();
    // A 3-year intermediate is replaced every 2 years (and with each root), a 10-year
    // root after 6 years and 8 months: in years 7, 13 and 20.
    assert_eq!(count("ca-rotate-intermediate"), 11, "{log:#?}");
    assert_eq!(count("ca-drop-intermediate"), 14, "{log:#?}");
    assert_eq!(count("ca-publish-root"), 3, "{log:#?}");
    assert_eq!(count("ca-switch-root"), 3, "{log:#?}");
    assert_eq!(count("ca-drop-root"), 3, "{log:#?}");
    // Every publication comes a whole overlap (90 days) before its switch.
    let publish: Vec<_> = log
        .iter()
        .filter(|(_, c)| c.event == "ca-publish-root")
        .collect();
    let switch: Vec<_> = log
        .iter()
        .filter(|(_, c)| c.event == "ca-switch-root")
        .collect();
    for (p, s) in publish.iter().zip(&switch) {
        assert!(s.0 - p.0 >= time::Duration::days(90), "{p:?} {s:?}");
    }
}

#[test]
fn short_lifetimes_rotate_the_same_way() {
    // The lifetimes the integration tests use: an 8-minute root, 3-minute
    // intermediates, leaves of 60 and 30 seconds, over an hour.
    let tmp = tempfile::tempdir().unwrap();
    let config = config(
        tmp.path(),
        ", root_lifetime: 8m, intermediate_lifetime: 3m, root_overlap: 30s",
        &[("www", "60s"), ("api", "30s")],
    );
    let start = datetime!(2026-11-28 00:00 UTC);
    let log = run(&config, start, time::Duration::hours(1));
    let count = |e: &str| log.iter().filter(|(_, c)| c.event == e).count();
    assert!(count("ca-rotate-intermediate") >= 5, "{log:#?}");
    assert!(count("ca-switch-root") >= 5, "{log:#?}");
    assert!(count("ca-drop-root") >= 4, "{log:#?}");
}

#[test]
fn a_rotation_that_cannot_be_written_changes_nothing_and_issuance_goes_on() {
    use crate::reconcile::maintain_ca;
    let tmp = tempfile::tempdir().unwrap();
    let config = config(tmp.path(), "", &[("www", "90d")]);
    let state = crate::state::StateDir::new(&config.state_dir);
    let start = datetime!(2026-11-28 00:00 UTC);
    maintain_ca(&config, &state, start, Force::Nothing, None).unwrap();
    // Something in the way of the new CA directory (as a full disk would be).
    let in_the_way = config.state_dir.join(".ca-next");
    fs::write(&in_the_way, "in the way").unwrap();
    let due = start + time::Duration::days(800);
    let ca = maintain_ca(&config, &state, due, Force::Nothing, None).unwrap();
    assert!(ca.changes.is_empty());
    assert_eq!(ca.manifest.intermediate, 1);
    issue(&ca, &config.certificates[0], due);
    // By hand, the same failure is an error.
    assert!(maintain_ca(&config, &state, due, Force::Intermediate, None).is_err());
    assert_eq!(
        InternalCa::load(&config.ca, &state.ca_dir())
            .unwrap()
            .manifest
            .intermediate,
        1
    );
    // Out of the way: the next pass rotates.
    fs::remove_file(&in_the_way).unwrap();
    let ca = maintain_ca(&config, &state, due, Force::Nothing, None).unwrap();
    assert_eq!(ca.changes.len(), 1, "{:?}", ca.changes);
    assert_eq!(ca.manifest.intermediate, 2);
}

/// The shortcut for keys made in this process (no CSR, no second look) gives the same
/// certificate as the CSR path: same names, usage and lifetime, for the key given,
/// signed by the issuing intermediate, chain in order, for every key type.
#[test]
fn issuing_for_a_key_of_this_process_matches_the_csr_path() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "", &[("www", "30d")]);
    let now = datetime!(2026-03-01 00:00 UTC);
    let (ca, _) = InternalCa::load_or_init(&cfg.ca, &cfg.state_dir.join("ca"), now).unwrap();
    let spec = &cfg.certificates[0];
    for kind in crate::model::KeyType::ALL {
        let key = PrivateKey::generate(kind).unwrap();
        let req = IssueRequest {
            name: spec.name.clone(),
            common_name: spec.common_name.clone(),
            sans: spec.sans.clone(),
            usage: spec.usage,
            lifetime: spec.lifetime,
            profile: None,
        };
        assert!(ca.signs_in_process());
        let direct = ca.issue_for_key(&key, &req, now, None).unwrap();
        let via_csr = ca.issue(&make_csr(&key, &req).unwrap(), &req, now).unwrap();
        assert!(direct.leaf.matches_key(&key), "{kind:?}");
        let full: Vec<_> = std::iter::once(direct.leaf.clone())
            .chain(direct.chain.iter().cloned())
            .collect();
        crate::x509::check_chain_order(&full).unwrap();
        assert!(ca.issued(&direct.leaf, &direct.chain));
        assert_eq!(direct.leaf.sans, via_csr.leaf.sans);
        assert_eq!(direct.leaf.subject, via_csr.leaf.subject);
        assert_eq!(direct.leaf.not_after, via_csr.leaf.not_after);
        assert_eq!(
            format!("{:?}", direct.leaf.usage),
            format!("{:?}", via_csr.leaf.usage)
        );
        assert_eq!(direct.chain.len(), via_csr.chain.len());
    }
}
