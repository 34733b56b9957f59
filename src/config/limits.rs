//! Bounds on the shape of a configuration, checked in one streaming pass before it is
//! deserialized: how deep collections nest, and how many nodes aliases repeat. The
//! YAML deserializer's scanner is quadratic in the nesting depth (100,000 `[` took a
//! minute) and it expands aliases into a value tree (an "alias bomb" of a few hundred
//! bytes stands for billions of nodes). Pure: text in, the first problem out.

use saphyr_parser::{Event, Parser};
use std::collections::HashMap;

/// The deepest nesting accepted. A certkeeper configuration needs about six levels
/// (`certificates[0].hooks.renewed[0][1]`).
pub const MAX_DEPTH: usize = 64;
/// The most nodes all aliases together may repeat: generous for anchors shared by ten
/// thousand certificates, small enough that expanding them stays a fraction of a second.
pub const MAX_ALIAS_NODES: u64 = 1_000_000;

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

/// Walks the document's events and stops at the first bound exceeded. A document that
/// does not parse passes: the deserializer reports syntax errors with their own line.
pub fn check(text: &str) -> Result<(), Exceeded> {
    let mut open: Vec<Open> = Vec::new();
    // Nodes each anchor stands for, by anchor id.
    let mut anchors: HashMap<usize, u64> = HashMap::new();
    let mut repeated: u64 = 0;
    for item in Parser::new_from_str(text) {
        let (event, span) = match item {
            Ok(item) => item,
            // The streaming parser stops at 255 open flow collections (`[[[…`) before it
            // reports the first of them; that is the nesting bound too.
            Err(e) if e.info().contains("recursion limit") => {
                return Err(too_deep(e.marker().line()))
            }
            Err(_) => return Ok(()),
        };
        let line = span.start.line();
        let node = match event {
            Event::MappingStart(anchor, _) | Event::SequenceStart(anchor, _) => {
                if open.len() >= MAX_DEPTH {
                    return Err(too_deep(line));
                }
                open.push(Open { anchor, nodes: 1 });
                continue;
            }
            Event::MappingEnd | Event::SequenceEnd => {
                let Some(done) = open.pop() else { continue };
                if done.anchor != 0 {
                    anchors.insert(done.anchor, done.nodes);
                }
                done.nodes
            }
            Event::Scalar(_, _, anchor, _) => {
                if anchor != 0 {
                    anchors.insert(anchor, 1);
                }
                1
            }
            Event::Alias(id) => {
                // An alias to an anchor not yet closed (or unknown) is the
                // deserializer's error to report; it counts as one node here.
                let n = anchors.get(&id).copied().unwrap_or(1);
                repeated = repeated.saturating_add(n);
                if repeated > MAX_ALIAS_NODES {
                    return Err(Exceeded {
                        line,
                        message: format!(
                            "aliases (`*name`) repeat more than {MAX_ALIAS_NODES} nodes; write the values out, or refer to smaller anchors"
                        ),
                    });
                }
                n
            }
            _ => continue,
        };
        if let Some(parent) = open.last_mut() {
            parent.nodes = parent.nodes.saturating_add(node);
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
        assert!(e.message.contains("aliases"), "{e:?}");
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
    fn broken_yaml_is_left_to_the_deserializer() {
        assert_eq!(check("a: [\n"), Ok(()));
        assert_eq!(check("a: *nope\n"), Ok(()));
    }
}
