//! Table tests of the renewal decision with an explicit `now`.

use super::*;
use crate::config::{CertSpec, Files};
use crate::duration::RenewBefore;
use crate::model::{KeyType, San, Usage};
use crate::x509::CertInfo;
use std::path::PathBuf;
use time::macros::datetime;

const T0: OffsetDateTime = datetime!(2026-11-27 12:00 UTC);

fn d(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

fn t(secs: i64) -> OffsetDateTime {
    T0 + time::Duration::seconds(secs)
}

fn spec(lifetime: u64, renew_before: RenewBefore) -> CertSpec {
    CertSpec {
        name: "www".into(),
        common_name: "www.example.internal".into(),
        sans: vec![San::Dns("www.example.internal".into())],
        usage: Usage::Server,
        key: KeyType::EcdsaP256,
        lifetime: d(lifetime),
        renew_before,
        owner: None,
        group: None,
        key_mode: 0o600,
        cert_mode: 0o644,
        issuer: crate::model::IssuerRef::Internal,
        files: Files::Nginx {
            cert: "/x/www.crt".into(),
            key: "/x/www.key".into(),
        },
        reload: Vec::new().into(),
        verify: Vec::new(),
        follow_symlinks: false,
        hooks: Default::default(),
        fallback: Vec::new(),
        fallback_before: RenewBefore::Share(165),
        profile: None,
    }
}

/// A leaf as the internal CA makes it: valid from `nb` to `na` (seconds from T0).
fn leaf(nb: i64, na: i64) -> CertInfo {
    CertInfo {
        der: vec![],
        subject: "CN=www.example.internal".into(),
        issuer: "CN=CA".into(),
        common_name: Some("www.example.internal".into()),
        sans: vec![San::Dns("www.example.internal".into())],
        other_names: vec![],
        not_before: t(nb),
        not_after: t(na),
        serial: "1234abcd".into(),
        is_ca: false,
        path_len: None,
        usage: Some(Usage::Server),
        key_type: Some(KeyType::EcdsaP256),
        spki: vec![],
        public_key_raw: vec![],
        fingerprint: String::new(),
        subject_key_id: None,
        authority_key_id: None,
    }
}

fn seen(l: CertInfo) -> Seen {
    Seen::Present(Box::new(Present {
        leaf: l,
        chain: vec![],
        from_issuer: true,
        issuer_not_after: None,
        issuer_current: true,
    }))
}

const DAY: i64 = 86_400;

#[test]
fn due_at_the_edges() {
    // 90 days, renew 30 days before: due at day 60 minus the jitter (< 1h).
    let s = spec(90 * DAY as u64, RenewBefore::Fixed(d(30 * DAY as u64)));
    let l = leaf(-300, 90 * DAY);
    let at = renew_at(&s, &l);
    assert!(at <= t(60 * DAY) && at > t(60 * DAY - 3600), "{at}");
    let cases = [
        (0, false),
        (59 * DAY, false),
        ((at - T0).whole_seconds() - 1, false),
        ((at - T0).whole_seconds(), true),
        (60 * DAY, true),
        (90 * DAY - 1, true),
    ];
    for (now, due) in cases {
        let v = decide(&s, &seen(l.clone()), t(now));
        match (due, &v) {
            (false, Verdict::Fine { renew_at }) => assert_eq!(*renew_at, at),
            (true, Verdict::Reissue(Reason::Due(r))) => assert_eq!(*r, at),
            _ => panic!("now = T0+{now}s: expected due={due}, got {v:?}"),
        }
    }
}

#[test]
fn share_versus_duration() {
    let l = leaf(0, 100 * DAY);
    // 25% of 100 days = 25 days before notAfter (jitter at most 1h).
    let share = renew_at(&spec(100 * DAY as u64, RenewBefore::Share(250)), &l);
    assert!(
        share <= t(75 * DAY) && share > t(75 * DAY - 3600),
        "{share}"
    );
    let fixed = renew_at(
        &spec(100 * DAY as u64, RenewBefore::Fixed(d(10 * DAY as u64))),
        &l,
    );
    assert!(
        fixed <= t(90 * DAY) && fixed > t(90 * DAY - 3600),
        "{fixed}"
    );
}

#[test]
fn jitter_is_bounded_and_deterministic() {
    for window in [d(10), d(600), d(30 * 86_400)] {
        let max = (window / 10).min(d(3600));
        let mut distinct = std::collections::HashSet::new();
        for i in 0..200 {
            let name = format!("cert-{i}");
            let j = jitter(&name, "abcdef", window);
            assert!(j <= max, "{j:?} > {max:?}");
            assert_eq!(j, jitter(&name, "abcdef", window));
            distinct.insert(j.as_millis());
        }
        assert!(
            distinct.len() > 50,
            "jitter does not spread: {}",
            distinct.len()
        );
    }
}

#[test]
fn backdated_not_before_does_not_loop() {
    // A 30-second certificate whose notBefore is backdated by 3 s (our own skew margin),
    // by 5 minutes, or by an hour: right after issue it is fine, not due.
    for backdate in [3, 300, 3600] {
        let s = spec(30, RenewBefore::Share(330));
        let l = leaf(-backdate, 30);
        match decide(&s, &seen(l.clone()), T0) {
            Verdict::Fine { renew_at } => {
                assert!(
                    renew_at >= t(18) && renew_at <= t(21),
                    "backdate {backdate}: {renew_at}"
                )
            }
            v => panic!("backdate {backdate}: a fresh certificate is {v:?}"),
        }
    }
}

#[test]
fn shorter_validity_than_asked_does_not_loop() {
    // Asked for 90 days with renew_before 30 days, but the CA gave 7 days.
    let s = spec(90 * DAY as u64, RenewBefore::Fixed(d(30 * DAY as u64)));
    let l = leaf(0, 7 * DAY);
    match decide(&s, &seen(l), t(60)) {
        Verdict::Fine { renew_at } => assert!(renew_at > t(3 * DAY) && renew_at <= t(7 * DAY / 2)),
        v => panic!("{v:?}"),
    }
}

#[test]
fn expired_and_not_yet_valid() {
    let s = spec(90 * DAY as u64, RenewBefore::Share(330));
    let l = leaf(0, 90 * DAY);
    assert_eq!(
        decide(&s, &seen(l.clone()), t(90 * DAY)),
        Verdict::Reissue(Reason::Expired(t(90 * DAY)))
    );
    assert_eq!(
        decide(&s, &seen(l.clone()), t(100 * DAY)),
        Verdict::Reissue(Reason::Expired(t(90 * DAY)))
    );
    assert_eq!(
        decide(&s, &seen(l), t(-1)),
        Verdict::Reissue(Reason::NotYetValid(T0))
    );
}

#[test]
fn config_changes_force_reissue() {
    let base = spec(90 * DAY as u64, RenewBefore::Share(330));
    let l = leaf(0, 90 * DAY);
    let mut s = base.clone();
    s.sans.push(San::Ip("10.0.0.5".parse().unwrap()));
    assert!(matches!(
        decide(&s, &seen(l.clone()), t(1)),
        Verdict::Reissue(Reason::NamesChanged { .. })
    ));
    let mut s = base.clone();
    s.key = KeyType::Ed25519;
    assert!(matches!(
        decide(&s, &seen(l.clone()), t(1)),
        Verdict::Reissue(Reason::KeyTypeChanged { .. })
    ));
    let mut s = base.clone();
    s.usage = Usage::ServerClient;
    assert!(matches!(
        decide(&s, &seen(l.clone()), t(1)),
        Verdict::Reissue(Reason::UsageChanged { .. })
    ));
    let mut s = base.clone();
    s.common_name = "other".into();
    assert!(matches!(
        decide(&s, &seen(l.clone()), t(1)),
        Verdict::Reissue(Reason::CommonNameChanged { .. })
    ));
    let foreign = Seen::Present(Box::new(Present {
        leaf: l.clone(),
        chain: vec![],
        from_issuer: false,
        issuer_not_after: None,
        issuer_current: true,
    }));
    assert_eq!(
        decide(&base, &foreign, t(1)),
        Verdict::Reissue(Reason::IssuerChanged)
    );
    assert!(matches!(
        decide(&base, &seen(l), t(1)),
        Verdict::Fine { .. }
    ));
}

#[test]
fn missing_damaged_and_mismatched_files() {
    let s = spec(90 * DAY as u64, RenewBefore::Share(330));
    let p = PathBuf::from("/x/www.key");
    assert_eq!(
        decide(&s, &Seen::Missing(p.clone()), T0),
        Verdict::Reissue(Reason::Missing(p.clone()))
    );
    assert_eq!(
        decide(&s, &Seen::KeyMismatch(p.clone()), T0),
        Verdict::Reissue(Reason::KeyMismatch(p.clone()))
    );
    let dmg = Seen::Damaged {
        path: p.clone(),
        reason: "x".into(),
    };
    assert!(matches!(
        decide(&s, &dmg, T0),
        Verdict::Reissue(Reason::Damaged { .. })
    ));
    let exposed = Seen::Exposed {
        path: p.clone(),
        why: "has mode 0644".into(),
    };
    let v = decide(&s, &exposed, T0);
    assert_eq!(
        v,
        Verdict::Reissue(Reason::KeyExposed {
            path: p.clone(),
            why: "has mode 0644".into()
        })
    );
    if let Verdict::Reissue(r) = v {
        assert_eq!(r.code(), "key-exposed");
        assert_eq!(
            r.to_string(),
            "/x/www.key has mode 0644: the key may have been read, so a new key replaces it"
        );
    }
}

#[test]
fn relative_phrases() {
    assert_eq!(relative(t(90), T0), "in 1m 30s");
    assert_eq!(relative(t(-3 * DAY), T0), "3d ago");
}

#[test]
fn a_revoked_certificate_is_reissued_at_once() {
    let s = spec(90 * DAY as u64, RenewBefore::Share(330));
    let l = leaf(0, 90 * DAY);
    let mut revoked = std::collections::HashSet::new();
    assert!(matches!(
        decide_with_revocations(&s, &seen(l.clone()), t(1), &revoked),
        Verdict::Fine { .. }
    ));
    revoked.insert(l.serial.clone());
    assert_eq!(
        decide_with_revocations(&s, &seen(l.clone()), t(1), &revoked),
        Verdict::Reissue(Reason::Revoked(l.serial.clone()))
    );
}

#[test]
fn acme_leaves_may_allow_more_usage_than_asked_internal_ones_may_not() {
    let base = spec(90 * DAY as u64, RenewBefore::Share(330));
    let mut l = leaf(0, 90 * DAY);
    l.usage = Some(Usage::ServerClient);
    // The internal CA sets usage itself: an exact match is required.
    assert!(matches!(
        decide(&base, &seen(l.clone()), t(1)),
        Verdict::Reissue(Reason::UsageChanged { .. })
    ));
    // An ACME CA picks the EKUs; server+client covers server.
    let mut s = base.clone();
    s.issuer = crate::model::IssuerRef::Acme("fleet".into());
    assert!(matches!(
        decide(&s, &seen(l.clone()), t(1)),
        Verdict::Fine { .. }
    ));
    // ...but a server-only leaf does not cover a client certificate.
    s.usage = Usage::Client;
    l.usage = Some(Usage::Server);
    assert!(matches!(
        decide(&s, &seen(l), t(1)),
        Verdict::Reissue(Reason::UsageChanged { .. })
    ));
}

#[test]
fn a_leaf_cut_short_to_end_with_its_ca_is_not_renewed_in_a_loop() {
    let s = spec(90 * 86_400, RenewBefore::Fixed(d(30 * 86_400)));
    // Issued at day 70, cut short to day 100 where the intermediate ends: its window
    // (30 days) covers all of it, so it is "due" from the start; a new one would end at
    // day 100 too.
    let (day70, day100) = (70 * 86_400, 100 * 86_400);
    let clamped = |ca_end: Option<i64>| {
        Seen::Present(Box::new(Present {
            leaf: leaf(day70 - 300, day100),
            chain: vec![],
            from_issuer: true,
            issuer_not_after: ca_end.map(t),
            issuer_current: true,
        }))
    };
    assert_eq!(
        decide(&s, &clamped(Some(day100)), t(day70 + 60)),
        Verdict::Fine {
            renew_at: t(day100)
        }
    );
    // Without a CA that ends with it, the same leaf is due (and a renewal helps).
    assert!(matches!(
        decide(&s, &clamped(Some(day100 + 365 * 86_400)), t(day70 + 60)),
        Verdict::Reissue(Reason::Due(_))
    ));
    assert!(matches!(
        decide(&s, &clamped(None), t(day70 + 60)),
        Verdict::Reissue(Reason::Due(_))
    ));
    // At its end it is reissued like any expired certificate.
    assert!(matches!(
        decide(&s, &clamped(Some(day100)), t(day100)),
        Verdict::Reissue(_)
    ));
}

#[test]
fn a_failing_issuer_gives_way_to_the_fallback_only_late_or_when_nothing_is_in_place() {
    use time::macros::datetime;
    let mut s = spec(90 * 86400, RenewBefore::Share(330));
    s.fallback_before = RenewBefore::Fixed(Duration::from_secs(10 * 86400));
    let made = rcgen::generate_simple_self_signed(vec!["a.test".to_string()]).unwrap();
    let mut leaf = crate::x509::CertInfo::from_der(made.cert.der()).unwrap();
    leaf.not_before = datetime!(2026-01-01 0:00 UTC);
    leaf.not_after = datetime!(2026-04-01 0:00 UTC);
    assert!(fallback_due(&s, None, datetime!(2026-01-02 0:00 UTC)));
    assert!(!fallback_due(
        &s,
        Some(&leaf),
        datetime!(2026-03-01 0:00 UTC)
    ));
    assert!(!fallback_due(
        &s,
        Some(&leaf),
        datetime!(2026-03-21 23:59 UTC)
    ));
    assert!(fallback_due(
        &s,
        Some(&leaf),
        datetime!(2026-03-22 0:00 UTC)
    ));
    assert!(fallback_due(
        &s,
        Some(&leaf),
        datetime!(2026-05-01 0:00 UTC)
    ));
    // A share of a 90-day life: 16.5% is 14.85 days.
    s.fallback_before = RenewBefore::Share(165);
    assert!(!fallback_due(
        &s,
        Some(&leaf),
        datetime!(2026-03-17 0:00 UTC)
    ));
    assert!(fallback_due(
        &s,
        Some(&leaf),
        datetime!(2026-03-18 0:00 UTC)
    ));
}

#[test]
fn the_ari_point_lies_in_the_window_spreads_and_stays_put() {
    use time::macros::datetime;
    let (start, end) = (
        datetime!(2026-12-01 0:00 UTC),
        datetime!(2026-12-03 0:00 UTC),
    );
    let a = ari_point("www", "0a", start, end);
    assert!(a >= start && a < end, "{a}");
    assert_eq!(a, ari_point("www", "0a", start, end), "every look agrees");
    let points: std::collections::HashSet<_> = (0..100)
        .map(|i| ari_point(&format!("c{i}"), "1", start, end))
        .collect();
    assert!(points.len() > 90, "{} distinct points", points.len());
    // A window that ends before it starts: its start.
    assert_eq!(ari_point("www", "0a", end, start), end);
}
