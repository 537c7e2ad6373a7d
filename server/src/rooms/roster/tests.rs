//! The roster's rules: idempotent events, race-free loads, pages, and net reports.

use super::*;

fn join(member: &str, name: &str) -> Change {
    Change::Join {
        member: member.into(),
        name: name.into(),
    }
}

fn leave(member: &str) -> Change {
    Change::Leave {
        member: member.into(),
    }
}

fn loaded(members: &[(&str, &str)]) -> Roster {
    let snapshot = members
        .iter()
        .map(|(m, n)| (m.to_string(), n.to_string()))
        .collect();
    Roster::of(snapshot)
}

fn names(list: &[Arc<str>]) -> Vec<&str> {
    list.iter().map(|name| &**name).collect()
}

#[test]
fn events_applied_twice_change_nothing() {
    let mut roster = loaded(&[]);
    roster.apply(join("a|1", "ada"));
    roster.apply(join("a|1", "ada"));
    roster.apply(join("b|1", "ada"));
    assert_eq!(roster.count(), 1, "one person, two tabs");
    roster.apply(leave("a|1"));
    roster.apply(leave("a|1"));
    assert_eq!(roster.count(), 1, "still one tab open");
    roster.apply(leave("b|1"));
    assert_eq!(roster.count(), 0);
    roster.apply(leave("c|9"));
    assert_eq!(roster.count(), 0);
}

#[test]
fn a_snapshot_older_than_the_events_kept_meanwhile_ends_current() {
    let mut roster = Roster::loading();
    // Heard while the snapshot was read: bob left (the snapshot has him or not), cy joined
    // and left, dee joined.
    roster.apply(leave("n|2"));
    roster.apply(join("n|3", "cy"));
    roster.apply(leave("n|3"));
    roster.apply(join("n|4", "dee"));
    let snapshot = vec![
        ("n|1".to_owned(), "ada".to_owned()),
        ("n|2".to_owned(), "bob".to_owned()),
        ("n|3".to_owned(), "cy".to_owned()),
    ];
    assert_eq!(roster.load(0, snapshot), Loaded::Applied);
    assert_eq!(roster.page(None, 10).names, ["ada", "dee"]);
    // Events after the load apply as usual; the load's snapshot again is stale.
    roster.apply(leave("n|1"));
    assert_eq!(roster.count(), 1);
    assert_eq!(roster.load(0, Vec::new()), Loaded::Stale);
}

#[test]
fn a_reload_keeps_the_events_of_the_load_it_replaces() {
    let mut roster = loaded(&[("n|1", "ada")]);
    let first = roster.begin_load();
    roster.apply(join("n|2", "bob"));
    let second = roster.begin_load();
    assert_eq!(roster.load(first, Vec::new()), Loaded::Stale);
    // The second snapshot was read before bob's join reached Redis.
    let snapshot = vec![("n|1".to_owned(), "ada".to_owned())];
    assert_eq!(roster.load(second, snapshot), Loaded::Applied);
    assert_eq!(roster.count(), 2);
}

#[test]
fn too_many_events_during_a_load_start_it_over() {
    let mut roster = Roster::loading();
    for i in 0..=MAX_KEPT {
        roster.apply(join(&format!("n|{i}"), &format!("u{i}")));
    }
    let Loaded::Again(again) = roster.load(0, Vec::new()) else {
        panic!("an overflowed load must be started over");
    };
    assert_eq!(roster.count() as usize, MAX_KEPT + 1, "events still apply");
    assert_eq!(roster.load(again, Vec::new()), Loaded::Applied);
    assert_eq!(roster.count(), 0, "the snapshot is the truth");
}

#[test]
fn pages_walk_every_name_once_in_order() {
    let mut roster = loaded(&[]);
    for i in 0..250 {
        roster.apply(join(&format!("n|{i}"), &format!("user{i:03}")));
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = roster.page(after.as_deref(), 100);
        assert_eq!(page.count, 250);
        assert!(page.names.len() <= 100);
        seen.extend(page.names.iter().cloned());
        after = page.names.last().cloned();
        if !page.more {
            break;
        }
    }
    let expected: Vec<String> = (0..250).map(|i| format!("user{i:03}")).collect();
    assert_eq!(seen, expected);
}

#[test]
fn a_page_of_the_widest_names_fits_its_byte_budget() {
    let mut roster = loaded(&[]);
    let widest = "\u{1F600}".repeat(31);
    for i in 0..1000 {
        roster.apply(join(&format!("n|{i}"), &format!("{widest}{i:03}")));
    }
    let page = roster.page(None, 1000);
    assert!(page.more && page.names.len() < 1000);
    let bytes: usize = page.names.iter().map(|n| json_string_len(n) + 1).sum();
    assert!(bytes <= MEMBERS_BUDGET, "{bytes}");
}

#[test]
fn reports_say_where_every_name_that_changed_ended() {
    let mut roster = loaded(&[("n|1", "ada"), ("n|2", "bob")]);
    assert_eq!(
        roster.take_report(1000),
        Some(Report {
            count: 2,
            names: Some(NetChanges {
                joins: vec!["ada".into(), "bob".into()],
                leaves: Vec::new(),
            }),
        })
    );
    assert_eq!(roster.take_report(1000), None, "nothing new");
    // Came and went within one interval: a member may have seen cy in a page meanwhile, so
    // the report says cy is gone.
    roster.apply(join("n|3", "cy"));
    roster.apply(leave("n|3"));
    let report = roster.take_report(1000).unwrap();
    assert_eq!(report.count, 2);
    assert_eq!(names(&report.names.unwrap().leaves), ["cy"]);
    // Left and came back: bob is here, whatever a member saw in between.
    roster.apply(leave("n|2"));
    roster.apply(join("n|4", "bob"));
    roster.apply(join("n|5", "dee"));
    roster.apply(leave("n|1"));
    let report = roster.take_report(1000).unwrap();
    assert_eq!(report.count, 2);
    let net = report.names.unwrap();
    assert_eq!(names(&net.joins), ["bob", "dee"]);
    assert_eq!(names(&net.leaves), ["ada"]);
}

#[test]
fn a_member_who_saw_a_name_in_a_page_learns_that_it_left() {
    // Bob's page lists ada, loaded after the last report; ada leaves before the next.
    let mut roster = loaded(&[]);
    roster.apply(join("here|1", "bob"));
    roster.take_report(1000);
    let id = roster.begin_load();
    roster.load(id, vec![("far|1".to_owned(), "ada".to_owned())]);
    roster.apply(join("here|1", "bob"));
    assert_eq!(roster.page(None, 10).names, ["ada", "bob"]);
    roster.apply(leave("far|1"));
    let report = roster.take_report(1000).unwrap();
    assert_eq!(report.count, 1);
    assert_eq!(names(&report.names.unwrap().leaves), ["ada"]);
}

#[test]
fn large_rooms_report_only_the_count() {
    let mut roster = loaded(&[("n|1", "ada"), ("n|2", "bob")]);
    let report = roster.take_report(1).unwrap();
    assert_eq!(
        report,
        Report {
            count: 2,
            names: None
        }
    );
}

#[test]
fn a_reload_reports_what_it_corrected() {
    let mut roster = loaded(&[("n|1", "ada"), ("n|2", "bob")]);
    roster.take_report(1000);
    // While cut off from Redis, bob left and cy came; ada left and came back.
    let id = roster.begin_load();
    let snapshot = vec![
        ("n|7".to_owned(), "ada".to_owned()),
        ("n|3".to_owned(), "cy".to_owned()),
    ];
    assert_eq!(roster.load(id, snapshot), Loaded::Applied);
    let net = roster.take_report(1000).unwrap().names.unwrap();
    assert_eq!(names(&net.joins), ["cy"]);
    assert_eq!(names(&net.leaves), ["bob"]);
    // ada left and came back under another key: she is where she was, so nothing is said.
}

#[test]
fn a_load_that_confirms_what_was_known_is_no_change() {
    let mut roster = Roster::loading();
    roster.apply(join("n|1", "ada"));
    let changes = roster.changes();
    let snapshot = vec![("n|1".to_owned(), "ada".to_owned())];
    assert_eq!(roster.load(0, snapshot), Loaded::Applied);
    assert_eq!(roster.changes(), changes);
    let id = roster.begin_load();
    roster.load(id, vec![("n|2".to_owned(), "bob".to_owned())]);
    assert_eq!(roster.changes(), changes + 2, "ada left, bob came");
}
