use super::*;
use time::macros::datetime;

const DAY: u64 = 86_400;

fn span(from: OffsetDateTime, days: i64) -> Span {
    Span {
        not_before: from,
        not_after: from + time::Duration::days(days),
    }
}

fn timing() -> Timing {
    // 90-day leaves renewed 30 days early, a 3-year intermediate.
    let leaf = Duration::from_secs(120 * DAY);
    Timing {
        leaf_carry: leaf,
        root_carry: Duration::from_secs(3 * 365 * DAY) + leaf,
        root_overlap: Duration::from_secs(90 * DAY),
        rotate_before: RenewBefore::Share(333),
        root_lifetime: Duration::from_secs(10 * 365 * DAY),
        intermediate_lifetime: Duration::from_secs(3 * 365 * DAY),
    }
}

#[test]
fn a_ca_is_due_when_it_can_no_longer_carry_a_leaf_or_its_share_is_left() {
    let start = datetime!(2026-01-01 00:00 UTC);
    let s = span(start, 3 * 365);
    let third = RenewBefore::Share(333);
    let carry = Duration::from_secs(120 * DAY);
    // A 90-day leaf renewed 30 days early needs 120 days: less than a third.
    let at = rotate_at(s, carry, third);
    assert!((at - (s.not_after - time::Duration::days(365))).abs() < time::Duration::days(1));
    // A leaf longer than a third of the CA: its lifetime decides.
    let long = Duration::from_secs(2 * 365 * DAY);
    assert_eq!(
        rotate_at(s, long, third),
        s.not_after - time::Duration::days(2 * 365)
    );
    // A CA shorter than what it must carry is due from its first day.
    assert_eq!(rotate_at(span(start, 30), long, third), start);
    // A fixed rotate_before.
    assert_eq!(
        rotate_at(s, carry, RenewBefore::Fixed(Duration::from_secs(200 * DAY))),
        s.not_after - time::Duration::days(200)
    );
}

#[test]
fn the_intermediate_rotates_under_its_root_and_retired_ones_are_dropped_after_their_last_leaf() {
    let start = datetime!(2026-01-01 00:00 UTC);
    let t = timing();
    let mut s = CaState {
        root: span(start, 10 * 365),
        intermediate: span(start, 3 * 365),
        next_root: None,
        retired: vec![],
        old_roots: vec![],
    };
    let (due, next) = steps(&s, &t, start);
    assert!(due.is_empty());
    let at = next.unwrap();
    assert_eq!(at, rotate_at(s.intermediate, t.leaf_carry, t.rotate_before));
    assert_eq!(steps(&s, &t, at).0, vec![CaStep::RotateIntermediate]);
    s.retired.push(Retired {
        generation: 1,
        root: 1,
        last_leaf: at + time::Duration::days(90),
    });
    s.intermediate = span(at, 3 * 365);
    let (due, next) = steps(&s, &t, at);
    assert!(due.is_empty());
    assert_eq!(next, Some(at + time::Duration::days(90)));
    assert_eq!(
        steps(&s, &t, at + time::Duration::days(90)).0,
        vec![CaStep::DropIntermediate(1)]
    );
}

#[test]
fn a_root_is_published_an_overlap_before_it_can_no_longer_carry_and_switched_after_it() {
    let start = datetime!(2026-01-01 00:00 UTC);
    let t = timing();
    let root = span(start, 10 * 365);
    let (publish, switch) = root_schedule(root, &t);
    assert_eq!(switch - publish, time::Duration::days(90));
    // The old root can still carry a whole intermediate and leaf when issuance moves.
    assert!(root.not_after - switch >= time::Duration::seconds(t.root_carry.as_secs() as i64));
    let mut s = CaState {
        root,
        intermediate: span(publish - time::Duration::days(100), 3 * 365),
        next_root: None,
        retired: vec![],
        old_roots: vec![],
    };
    assert_eq!(steps(&s, &t, publish).0, vec![CaStep::PublishRoot]);
    s.next_root = Some(publish);
    let (due, next) = steps(&s, &t, publish + time::Duration::days(1));
    assert!(due.is_empty());
    assert_eq!(next, Some(switch));
    assert_eq!(steps(&s, &t, switch).0, vec![CaStep::SwitchRoot]);
    // After the switch: the old root stays while its intermediate carries leaves.
    let old_int = s.intermediate;
    s = CaState {
        root: span(publish, 10 * 365),
        intermediate: span(switch, 3 * 365),
        next_root: None,
        retired: vec![Retired {
            generation: 1,
            root: 1,
            last_leaf: switch + time::Duration::days(90),
        }],
        old_roots: vec![1],
    };
    assert!(old_int.not_after > switch + time::Duration::days(90));
    assert!(steps(&s, &t, switch + time::Duration::days(89))
        .0
        .is_empty());
    assert_eq!(
        steps(&s, &t, switch + time::Duration::days(90)).0,
        vec![CaStep::DropIntermediate(1), CaStep::DropRoot(1)]
    );
}

#[test]
fn an_intermediate_that_ends_with_its_root_waits_for_the_root_and_offline_keys_are_alarms() {
    let start = datetime!(2026-01-01 00:00 UTC);
    let t = timing();
    let root = span(start, 10 * 365);
    let late = root.not_after - time::Duration::days(200);
    let s = CaState {
        root,
        // Made late, cut short to end with the root.
        intermediate: Span {
            not_before: late,
            not_after: root.not_after,
        },
        next_root: None,
        retired: vec![],
        old_roots: vec![],
    };
    let (due, next) = steps(&s, &t, late);
    assert_eq!(
        due,
        vec![CaStep::PublishRoot],
        "never a loop of short intermediates"
    );
    assert!(next.is_none_or(|n| n > late));
    let (int, root_h) = health(&s, &t, false, false, late);
    assert!(matches!(root_h, CaHealth::Blocked { .. }), "{root_h:?}");
    assert!(matches!(int, CaHealth::Blocked { .. }), "{int:?}");
    assert!(alarm("root", root_h)
        .unwrap()
        .contains("ca rotate-root --root-key"));
    let (int, root_h) = health(&s, &t, true, false, late);
    assert!(matches!(root_h, CaHealth::Due { .. }));
    assert!(alarm("intermediate", int).is_none());
    let (int, _) = health(&s, &t, true, false, root.not_after);
    assert!(matches!(int, CaHealth::Expired { .. }));
    // Lifetimes that do not fit: nothing is due, nothing to wake up for, an alarm.
    let tight = Timing {
        leaf_carry: Duration::from_secs(120 * DAY),
        root_carry: Duration::from_secs(220 * DAY),
        root_overlap: Duration::from_secs(10 * DAY),
        rotate_before: RenewBefore::Share(333),
        root_lifetime: Duration::from_secs(400 * DAY),
        intermediate_lifetime: Duration::from_secs(100 * DAY),
    };
    let s = CaState {
        root: span(start, 400),
        intermediate: span(start, 100),
        next_root: None,
        retired: vec![],
        old_roots: vec![],
    };
    let (due, next) = steps(&s, &tight, start + time::Duration::days(1));
    assert!(due.is_empty());
    assert_eq!(next, Some(root_schedule(s.root, &tight).0));
    let (int, _) = health(&s, &tight, true, false, start + time::Duration::days(1));
    assert!(
        alarm("intermediate", int).unwrap().contains("too short"),
        "{int:?}"
    );
}

#[test]
fn the_default_overlap_is_90_days_or_a_fortieth_of_a_short_root() {
    assert_eq!(
        default_root_overlap(Duration::from_secs(10 * 365 * DAY)),
        Duration::from_secs(90 * DAY)
    );
    assert_eq!(
        default_root_overlap(Duration::from_secs(480)),
        Duration::from_secs(12)
    );
}
