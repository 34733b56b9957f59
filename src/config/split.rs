//! Cuts the `certificates:` list out of a configuration, item by item, with a streaming
//! YAML parser, so that each certificate is deserialized on its own. A file with ten
//! thousand certificates then never holds the whole document's event list and value
//! tree in memory at once. Anything unusual (anchors, aliases, non-ASCII text) makes it
//! decline, and the caller parses the document whole.

use saphyr_parser::{Event, Parser};

#[derive(Debug)]
pub struct Split {
    /// The document with `[]` in place of the certificates list.
    pub rest: String,
    /// Each certificate's text (indented as in the file) and the line it starts on.
    pub items: Vec<(String, usize)>,
}

/// [`split_certificates`] and the bounds of [`super::limits::check`] in one walk over
/// the document: the first bound exceeded, or the split (None when it declines).
pub fn split_checked(text: &str) -> Result<Option<Split>, super::limits::Exceeded> {
    use super::limits::Bounds;
    if !text.is_ascii() {
        super::limits::check(text)?;
        return Ok(None);
    }
    let mut bounds = Bounds::default();
    let mut exceeded = None;
    let mut broken = false;
    // Every event is counted as the split reads it; the walk ends at the first bound
    // exceeded (the split then sees the end of the document and declines), and after
    // the first syntax error (which the parser would repeat forever).
    let mut events = Parser::new_from_str(text).map_while(|item| {
        if broken {
            return None;
        }
        let counted = match &item {
            Ok((event, span)) => bounds.see(event, span.start.line()),
            Err(e) => {
                broken = true;
                Bounds::parse_error(e)
            }
        };
        match counted {
            Ok(()) => Some(item),
            Err(e) => {
                exceeded = Some(e);
                None
            }
        }
    });
    let split = split_events(text, &mut events);
    // What the split did not need to read is still counted.
    for _ in events.by_ref() {}
    drop(events);
    match exceeded {
        Some(e) => Err(e),
        None => Ok(split),
    }
}

fn split_events<'t, E>(text: &'t str, events: E) -> Option<Split>
where
    E: IntoIterator<Item = Result<(Event<'t>, saphyr_parser::Span), saphyr_parser::ScanError>>,
{
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    // Top-level mapping (depth 1): whether the next node is a key, and whether the
    // last key was `certificates`.
    let mut key_turn = true;
    let mut certs_key = false;
    // Inside the certificates list: where it starts, and the item being read.
    let mut seq_start: Option<usize> = None;
    let mut item: Option<(usize, usize, usize)> = None;
    let mut items: Vec<(usize, usize, usize)> = Vec::new();
    for ev in events {
        let (event, span) = ev.ok()?;
        let (start, end) = (span.start.index(), span.end.index());
        match &event {
            Event::Alias(_) => return None,
            Event::Scalar(_, _, anchor, _)
            | Event::MappingStart(anchor, _)
            | Event::SequenceStart(anchor, _)
                if *anchor != 0 =>
            {
                return None
            }
            _ => {}
        }
        let opens = matches!(event, Event::MappingStart(..) | Event::SequenceStart(..));
        let closes = matches!(event, Event::MappingEnd | Event::SequenceEnd);
        let scalar = matches!(event, Event::Scalar(..));
        if let Some(list_start) = seq_start {
            if closes && depth == 2 {
                // The list ends. A block list's end mark sits at the next token: the
                // list's text ends with its last item (or at `]` for a flow list).
                let flow_end = bytes.get(start) == Some(&b']');
                let list_end = match items.last() {
                    Some(last) if !flow_end => last.1,
                    _ => end,
                };
                return Some(finish(text, list_start, list_end, items));
            }
            if depth == 2 && (opens || scalar) {
                item = Some((start, end, span.start.line()));
            }
            if let Some(it) = item.as_mut() {
                // A flow collection's close mark is its bracket; a block one's is not text.
                let counts = !closes || matches!(bytes.get(start), Some(b'}') | Some(b']'));
                if counts {
                    it.1 = it.1.max(end);
                }
            }
            if opens {
                depth += 1;
            }
            if closes {
                depth -= 1;
            }
            if depth == 2 && (scalar || closes) {
                items.extend(item.take());
            }
            continue;
        }
        if depth == 1 && (opens || scalar) {
            if key_turn {
                certs_key = matches!(&event, Event::Scalar(v, ..) if v == "certificates");
                key_turn = false;
            } else {
                key_turn = true;
                if certs_key {
                    if !matches!(event, Event::SequenceStart(..)) {
                        return None;
                    }
                    seq_start = Some(start);
                    depth += 1;
                    continue;
                }
            }
        }
        if opens {
            depth += 1;
        }
        if closes {
            depth = depth.checked_sub(1)?;
        }
    }
    None
}

fn finish(text: &str, start: usize, end: usize, items: Vec<(usize, usize, usize)>) -> Split {
    let rest = format!("{}[]{}", &text[..start], &text[end.min(text.len())..]);
    let items = items
        .into_iter()
        .map(|(s, e, line)| {
            let col = s - text[..s].rfind('\n').map(|i| i + 1).unwrap_or(0);
            (
                format!("{}{}", " ".repeat(col), &text[s..e.min(text.len())]),
                line,
            )
        })
        .collect();
    Split { rest, items }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_block_and_flow_items() {
        let text = "state_dir: /x\ncertificates:\n  - name: a\n    sans: [a.b]\n    files: { layout: nginx, cert: /a, key: /b }\n  # a comment\n  - name: b\n    sans:\n      - b.c\ntrust: []\n";
        let s = split_checked(text).unwrap().expect("splits");
        assert_eq!(s.items.len(), 2);
        assert_eq!(s.items[0].1, 3);
        assert_eq!(s.items[1].1, 7);
        let a: serde_yaml::Value = serde_yaml::from_str(&s.items[0].0).unwrap();
        assert_eq!(a["files"]["key"], "/b");
        let b: serde_yaml::Value = serde_yaml::from_str(&s.items[1].0).unwrap();
        assert_eq!(b["sans"][0], "b.c");
        let rest: serde_yaml::Value = serde_yaml::from_str(&s.rest).unwrap();
        assert_eq!(rest["certificates"], serde_yaml::Value::Sequence(vec![]));
        assert_eq!(rest["state_dir"], "/x");
        assert!(rest["trust"].is_sequence());
    }

    #[test]
    fn bounds_are_checked_in_the_same_walk_as_the_split() {
        use crate::config::limits::{check, MAX_DEPTH};
        // Too deep inside a certificate, after the list, and with non-ASCII text (which
        // the split declines): the same answer as the bounds check alone.
        let deep = |at: &str| {
            let nest = format!(
                "{}1{}",
                "[".repeat(MAX_DEPTH + 1),
                "]".repeat(MAX_DEPTH + 1)
            );
            match at {
                "item" => format!("certificates:\n  - name: a\n    x: {nest}\n"),
                "after" => format!("certificates:\n  - name: a\ntrust: {nest}\n"),
                _ => format!("certificates:\n  - name: é\n    x: {nest}\n"),
            }
        };
        for at in ["item", "after", "non-ascii"] {
            let text = deep(at);
            let want = check(&text).unwrap_err();
            assert_eq!(split_checked(&text).unwrap_err(), want, "{at}");
        }
        // Too many values inside the list.
        let ones = vec!["1"; crate::config::limits::MAX_NODES as usize].join(",");
        let many = format!("certificates:\n  - name: a\n    x: [{ones}]\n");
        assert_eq!(split_checked(&many).unwrap_err(), check(&many).unwrap_err());
        // Within bounds: split as before.
        assert!(split_checked("certificates:\n  - name: a\n")
            .unwrap()
            .is_some());
    }

    #[test]
    fn declines_what_it_cannot_cut_safely() {
        assert!(split_checked("certificates:\n  - &a {name: a}\n  - *a\n")
            .unwrap()
            .is_none());
        assert!(split_checked("certificates: 3\n").unwrap().is_none());
        assert!(split_checked("certificates:\n  - name: é\n")
            .unwrap()
            .is_none());
        let s = split_checked("certificates: []\n").unwrap().unwrap();
        assert!(s.items.is_empty());
    }
}
