//! Cuts the `certificates:` list out of a configuration, item by item, with a streaming
//! YAML parser, so that each certificate is deserialized on its own. A file with ten
//! thousand certificates then never holds the whole document's event list and value
//! tree in memory at once. Anything unusual (anchors, aliases, non-ASCII text) makes it
//! decline, and the caller parses the document whole.

use super::tape::{self, Tok};
use saphyr_parser::{Event, Parser};

#[derive(Debug, PartialEq, Eq)]
pub struct Split {
    /// The document with `[]` in place of the certificates list.
    pub rest: String,
    /// Each certificate where it is in the file.
    pub items: Vec<Item>,
    /// The events of the items that have their `tape`.
    pub toks: Vec<Tok>,
    /// Where the list's text started.
    pub list_start: usize,
}

/// One certificate of the list: its text in the file and the line it starts on, and
/// the range of [`Split::toks`] that holds its events when they can be read as they
/// are (see `tape`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub start: usize,
    pub end: usize,
    pub line: usize,
    pub tape: Option<std::ops::Range<usize>>,
}

impl Item {
    /// The item's text, indented as in the file (its first line's column kept as
    /// spaces), to be read on its own.
    pub fn text(&self, text: &str) -> String {
        let col = self.start - text[..self.start].rfind('\n').map_or(0, |i| i + 1);
        let body = &text[self.start..self.end.min(text.len())];
        let mut s = String::with_capacity(col + body.len());
        s.extend(std::iter::repeat_n(' ', col));
        s.push_str(body);
        s
    }
}

/// [`split_certificates`] and the bounds of [`super::limits::check`] in one walk over
/// the document: the first bound exceeded, or the split (None when it declines).
pub fn split_checked(text: &str) -> Result<Option<Split>, super::limits::Exceeded> {
    if !text.is_ascii() {
        super::limits::check(text)?;
        return Ok(None);
    }
    if let Some(split) = super::lines::split(text) {
        return Ok(Some(split));
    }
    walk(text).map(|(split, _)| split)
}

/// [`split_checked`] by the streaming parser alone (ASCII text), with the values the
/// document holds (see `limits`).
pub fn walk(text: &str) -> Result<(Option<Split>, u64), super::limits::Exceeded> {
    use super::limits::Bounds;
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
        None => Ok((split, bounds.nodes())),
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
    let mut item: Option<Item> = None;
    let mut items: Vec<Item> = Vec::new();
    // The item's events, while every one of them can be read as it is.
    let mut toks: Vec<Tok> = Vec::new();
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
                    Some(last) if !flow_end => last.end,
                    _ => end,
                };
                let rest = format!(
                    "{}[]{}",
                    &text[..list_start],
                    &text[list_end.min(text.len())..]
                );
                return Some(Split {
                    rest,
                    items,
                    toks,
                    list_start,
                });
            }
            if depth == 2 && (opens || scalar) {
                item = Some(Item {
                    start,
                    end,
                    line: span.start.line(),
                    tape: Some(toks.len()..toks.len()),
                });
            }
            if let Some(it) = item.as_mut() {
                // A flow collection's close mark is its bracket; a block one's is not text.
                let counts = !closes || matches!(bytes.get(start), Some(b'}') | Some(b']'));
                if counts {
                    it.end = it.end.max(end);
                }
                if let Some(range) = it.tape.as_mut() {
                    match tape::token(text, &event, start, end) {
                        Some(t) => {
                            toks.push(t);
                            range.end = toks.len();
                        }
                        None => {
                            toks.truncate(range.start);
                            it.tape = None;
                        }
                    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_block_and_flow_items() {
        let text = "state_dir: /x\ncertificates:\n  - name: a\n    sans: [a.b]\n    files: { layout: nginx, cert: /a, key: /b }\n  # a comment\n  - name: b\n    sans:\n      - b.c\ntrust: []\n";
        let s = split_checked(text).unwrap().expect("splits");
        assert_eq!(s.items.len(), 2);
        assert_eq!(s.items[0].line, 3);
        assert_eq!(s.items[1].line, 7);
        let a: serde_yaml::Value = serde_yaml::from_str(&s.items[0].text(text)).unwrap();
        assert_eq!(a["files"]["key"], "/b");
        let b: serde_yaml::Value = serde_yaml::from_str(&s.items[1].text(text)).unwrap();
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
