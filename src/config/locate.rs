//! Maps YAML paths (`certificates[2].files.cert`) to the line they start on, so that
//! errors found after deserialization can still point at the right line.

use saphyr_parser::{Event, Parser};
use std::collections::HashMap;

#[derive(Default, Debug)]
pub struct Locator {
    lines: HashMap<String, usize>,
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, index: usize },
}

impl Locator {
    /// Walks the document's events. A document that does not parse yields an empty map:
    /// the deserializer reports syntax errors with their own line.
    pub fn new(text: &str) -> Locator {
        let mut lines = HashMap::new();
        let mut stack: Vec<Frame> = Vec::new();
        for item in Parser::new_from_str(text) {
            let Ok((event, span)) = item else { break };
            let line = span.start.line();
            match event {
                Event::Scalar(value, ..) => {
                    if let Some(p) = node_path(&mut stack, &mut lines, Some(&value), line) {
                        lines.entry(p).or_insert(line);
                    }
                }
                Event::Alias(_) => {
                    if let Some(p) = node_path(&mut stack, &mut lines, None, line) {
                        lines.entry(p).or_insert(line);
                    }
                }
                Event::MappingStart(..) | Event::SequenceStart(..) => {
                    let p = node_path(&mut stack, &mut lines, None, line).unwrap_or_default();
                    lines.entry(p.clone()).or_insert(line);
                    stack.push(if matches!(event, Event::MappingStart(..)) {
                        Frame::Map { path: p, key: None }
                    } else {
                        Frame::Seq { path: p, index: 0 }
                    });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                }
                _ => {}
            }
        }
        Locator { lines }
    }

    /// The line of `path`, or of its nearest ancestor that has one.
    pub fn line(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(l) = self.lines.get(p) {
                return Some(*l);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

/// The path of the node an event starts, or None when the node is a mapping key
/// (whose line is recorded under the path it names).
fn node_path(
    stack: &mut [Frame],
    lines: &mut HashMap<String, usize>,
    scalar: Option<&str>,
    line: usize,
) -> Option<String> {
    match stack.last_mut() {
        None => Some(String::new()),
        Some(Frame::Seq { path, index }) => {
            let p = format!("{path}[{index}]");
            *index += 1;
            Some(p)
        }
        Some(Frame::Map { path, key }) => match key.take() {
            Some(k) => Some(join(path, &k)),
            None => {
                let k = scalar.unwrap_or("?").to_string();
                lines.entry(join(path, &k)).or_insert(line);
                *key = Some(k);
                None
            }
        },
    }
}

pub fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_lines() {
        let text = "state_dir: /x\ncertificates:\n  - name: a\n    sans: [a.b]\n  - name: b\n    files:\n      cert: /c\n";
        let loc = Locator::new(text);
        assert_eq!(loc.line("state_dir"), Some(1));
        assert_eq!(loc.line("certificates[0]"), Some(3));
        assert_eq!(loc.line("certificates[0].sans"), Some(4));
        assert_eq!(loc.line("certificates[1].name"), Some(5));
        assert_eq!(loc.line("certificates[1].files.cert"), Some(7));
        assert_eq!(loc.line("certificates[1].files.key"), Some(6));
        assert_eq!(loc.line("certificates[0].sans[0]"), Some(4));
    }
}
