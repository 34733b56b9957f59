//! Bounds on the shape of a configuration, checked in one streaming pass before it is
//! deserialized: how deep collections nest, and how many values the deserializer would
//! build, aliases expanded. Its scanner is quadratic in the nesting depth (100,000 `[`
//! took 20 s), it expands aliases into a value tree (1.2 MB of aliases to one wide
//! anchor grew to 24 GB before it was killed) and it takes about 1.4 µs per value
//! (a 4 MiB list of two million numbers took 2.8 s). Pure: text in, the first problem
//! out.

use saphyr_parser::{Event, Parser};
use std::collections::HashMap;

/// The deepest nesting accepted. A certkeeper configuration needs about six levels
/// (`certificates[0].hooks.renewed[0][1]`).
pub const MAX_DEPTH: usize = 64;
/// The most values (scalars, lists and mappings, those aliases repeat included) a
/// configuration may hold: a certificate takes about 17, so this is room for 29,000 of
/// them (more than fit in `CONFIG_MAX`), and `check` stays well under a second.
pub const MAX_NODES: u64 = 500_000;

/// What is wrong, and the line (1-based) where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exceeded {
    pub line: usize,
    pub message: String,
}

struct Open {
    anchor: usize,
    /// Nodes in this collection so far, itself and expanded aliases included.
    nodes: u64,
}

fn too_deep(line: usize) -> Exceeded {
    Exceeded {
        line,
        message: format!(
            "collections nest more than {MAX_DEPTH} levels deep; a certkeeper configuration needs a handful"
        ),
    }
}

fn too_many(line: usize, repeated: u64) -> Exceeded {
    let message = if repeated > 0 {
        format!(
            "with its aliases (`*name`) expanded the document holds more than {MAX_NODES} values; write the values out, or refer to smaller anchors"
        )
    } else {
        format!(
            "the document holds more than {MAX_NODES} values; that is more than tens of thousands of certificates need"
        )
    };
    Exceeded { line, message }
}

/// The running count of one walk over a document's events (see [`check`]).
#[derive(Default)]
pub struct Bounds {
    open: Vec<Open>,
    /// Values each anchor stands for, by anchor id.
    anchors: HashMap<usize, u64>,
    /// Values so far, and how many of them aliases repeated.
    nodes: u64,
    repeated: u64,
}

impl Bounds {
    /// Counts one event (found at `line`); the first bound it exceeds.
    pub fn see(&mut self, event: &Event, line: usize) -> Result<(), Exceeded> {
        let node = match *event {
            Event::MappingStart(anchor, _) | Event::SequenceStart(anchor, _) => {
                if self.open.len() >= MAX_DEPTH {
                    return Err(too_deep(line));
                }
                self.nodes += 1;
                if self.nodes > MAX_NODES {
                    return Err(too_many(line, self.repeated));
                }
                self.open.push(Open { anchor, nodes: 1 });
                return Ok(());
            }
            Event::MappingEnd | Event::SequenceEnd => {
                let Some(done) = self.open.pop() else {
                    return Ok(());
                };
                if done.anchor != 0 {
                    self.anchors.insert(done.anchor, done.nodes);
                }
                done.nodes
            }
            Event::Scalar(_, _, anchor, _) => {
                if anchor != 0 {
                    self.anchors.insert(anchor, 1);
                }
                self.nodes += 1;
                1
            }
            Event::Alias(id) => {
                // An alias to an anchor not yet closed (or unknown) is the
                // deserializer's error to report; it counts as one value here.
                let n = self.anchors.get(&id).copied().unwrap_or(1);
                self.repeated = self.repeated.saturating_add(n);
                self.nodes = self.nodes.saturating_add(n);
                n
            }
            _ => return Ok(()),
        };
        if self.nodes > MAX_NODES {
            return Err(too_many(line, self.repeated));
        }
        if let Some(parent) = self.open.last_mut() {
            parent.nodes = parent.nodes.saturating_add(node);
        }
        Ok(())
    }

    /// The values counted so far.
    pub fn nodes(&self) -> u64 {
        self.nodes
    }

    /// A parse error: the streaming parser stops at 255 open flow collections (`[[[…`)
    /// before it reports the first of them, and that is the nesting bound too. Other
    /// errors pass: the deserializer reports syntax errors with their own line.
    pub fn parse_error(e: &saphyr_parser::ScanError) -> Result<(), Exceeded> {
        if e.info().contains("recursion limit") {
            return Err(too_deep(e.marker().line()));
        }
        Ok(())
    }
}

/// Walks the document's events and stops at the first bound exceeded. A document that
/// does not parse passes: the deserializer reports syntax errors with their own line.
pub fn check(text: &str) -> Result<(), Exceeded> {
    let mut bounds = Bounds::default();
    for item in Parser::new_from_str(text) {
        match item {
            Ok((event, span)) => bounds.see(&event, span.start.line())?,
            Err(e) => return Bounds::parse_error(&e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_documents_pass() {
        let text = "state_dir: /x\ncertificates:\n  - name: a\n    sans: [a.b]\n    hooks: { renewed: [[sh, -c, 'x']] }\n";
        assert_eq!(check(text), Ok(()));
        assert_eq!(check(""), Ok(()));
        // Shared anchors are fine.
        let mut text = String::from("defaults: &d { key: ecdsa-p256, lifetime: 90d }\nx:\n");
        for _ in 0..1000 {
            text.push_str("  - *d\n");
        }
        assert_eq!(check(&text), Ok(()));
    }

    #[test]
    fn deep_nesting_is_refused_at_its_line() {
        for (open, close) in [("[", "]"), ("{a: ", "}"), ("- ", "")] {
            let n = 100_000;
            let text = format!("a: 1\nb:\n  {}x{}\n", open.repeat(n), close.repeat(n));
            let started = std::time::Instant::now();
            let e = check(&text).unwrap_err();
            assert!(started.elapsed() < std::time::Duration::from_secs(1));
            assert_eq!(e.line, 3, "{open}");
            assert!(e.message.contains("more than 64 levels"), "{e:?}");
        }
        // Up to the bound is fine.
        let text = format!(
            "a: {}{}\n",
            "[".repeat(MAX_DEPTH - 1),
            "]".repeat(MAX_DEPTH - 1)
        );
        assert_eq!(check(&text), Ok(()));
    }

    #[test]
    fn an_alias_bomb_is_refused() {
        let mut text = String::from("a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        let mut prev = 'a';
        for name in "bcdefghi".chars() {
            text.push_str(&format!(
                "{name}: &{name} [{}]\n",
                vec![format!("*{prev}"); 9].join(", ")
            ));
            prev = name;
        }
        let e = check(&text).unwrap_err();
        assert!(e.message.contains("aliases (`*name`) expanded"), "{e:?}");
        assert!(e.line >= 6, "{e:?}");
    }

    #[test]
    fn a_wide_anchor_repeated_often_is_refused() {
        // Few aliases, each repeating many nodes: what a jump count does not catch.
        let wide = vec!["1"; 20_000].join(",");
        let text = format!("a: &a [{wide}]\nb: [{}]\n", vec!["*a"; 100].join(","));
        assert!(check(&text).is_err());
    }

    #[test]
    fn a_document_of_too_many_values_is_refused() {
        let text = format!("a: [{}]\n", vec!["1"; MAX_NODES as usize].join(","));
        let e = check(&text).unwrap_err();
        assert!(e.message.contains("holds more than 500000 values"), "{e:?}");
        assert!(!e.message.contains("aliases"), "{e:?}");
        let text = format!("a: [{}]\n", vec!["1"; MAX_NODES as usize - 3].join(","));
        assert_eq!(check(&text), Ok(()));
    }

    #[test]
    fn broken_yaml_is_left_to_the_deserializer() {
        assert_eq!(check("a: [\n"), Ok(()));
        assert_eq!(check("a: *nope\n"), Ok(()));
    }
}
