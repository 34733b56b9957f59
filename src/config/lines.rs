//! The certificates list read line by line, when every entry has the plain shape that
//! configurations with thousands of certificates have: one `key: value` per line, the
//! value a plain word, a quoted string without escapes, or a one-line `[...]` or
//! `{ key: value, ... }` of those. The streaming parser takes about 30 ns per byte, this
//! takes a few.
//!
//! It reads nothing the parser would read otherwise: it only accepts lines whose
//! meaning is not in doubt, and anything else (a nested block, a multi-line value, a
//! tab, a colon or `#` in a word, an anchor...) makes it decline, and the document is
//! walked whole as before. What it cuts out is checked by the parser too: the
//! document with `[]` in place of the list must parse, within bounds, with `[]` as the
//! value of `certificates` where the list started.

use super::split::{Item, Split};
use super::tape::{self, Tok};

/// The split of `text`, or None when it declines (see the module's comment).
pub fn split(text: &str) -> Option<Split> {
    let b = text.as_bytes();
    // `certificates:` at the start of a line, once.
    let key = find_top_key(text, "certificates")?;
    let mut at = next_line(b, key)?;
    // The first entry: the list's column is its dash's.
    let (list_start, col) = loop {
        let (indent, content) = line_shape(b, at)?;
        match content {
            Content::Blank => at = next_line(b, at)?,
            // At column 0 the parser starts the list at the first entry's content,
            // and the rest keeps a `- `: left to it.
            Content::Other if indent > 0 && b.get(at + indent) == Some(&b'-') => {
                break (at + indent, indent)
            }
            _ => return None,
        }
    };
    let mut items: Vec<Item> = Vec::new();
    let mut toks: Vec<Tok> = Vec::new();
    // The list itself is counted in the rest (as `[]`).
    let mut nodes: u64 = 0;
    let mut line_no = 1 + b[..at].iter().filter(|c| **c == b'\n').count();
    // Where the list's text ends (its last value's end), and where the next token
    // after an entry is (a block mapping's end mark sits there).
    let mut list_end = list_start;
    let mut open: Option<usize> = None;
    let close =
        |items: &mut Vec<Item>, toks: &mut Vec<Tok>, open: &mut Option<usize>, next: usize| {
            if let Some(first) = open.take() {
                toks.push(Tok::structural(tape::MAP_END, next)?);
                let item = items.last_mut()?;
                item.tape = Some(first..toks.len());
            }
            Some(())
        };
    loop {
        if at >= b.len() {
            close(&mut items, &mut toks, &mut open, b.len())?;
            break;
        }
        let (indent, content) = line_shape(b, at)?;
        if content == Content::Blank {
            at = next_line(b, at).unwrap_or(b.len());
            line_no += 1;
            continue;
        }
        let lead = at + indent;
        let (key_at, new_item) = if indent == col && b[lead] == b'-' {
            // `- key: value`: one space after the dash, the mapping at col + 2.
            if b.get(lead + 1) != Some(&b' ') || !is_key_start(*b.get(lead + 2)?) {
                return None;
            }
            (lead + 2, true)
        } else if indent == col + 2 && open.is_some() && is_key_start(b[lead]) {
            (lead, false)
        } else if indent == 0 {
            // The list ends at the next top-level line.
            close(&mut items, &mut toks, &mut open, lead)?;
            break;
        } else {
            return None;
        };
        if new_item {
            close(&mut items, &mut toks, &mut open, lead)?;
            open = Some(toks.len());
            toks.push(Tok::structural(tape::MAP_START, key_at)?);
            nodes += 1;
            items.push(Item {
                start: key_at,
                end: key_at,
                line: line_no,
                tape: None,
            });
        }
        let end = read_pair(b, key_at, &mut toks, &mut nodes)?;
        let item = items.last_mut()?;
        item.end = end;
        list_end = end;
        at = next_line(b, at).unwrap_or(b.len());
        line_no += 1;
    }
    if items.is_empty() {
        return None;
    }
    let rest = format!("{}[]{}", &text[..list_start], &text[list_end..]);
    // The rest must mean what was assumed: `[]` is the value of `certificates`, where
    // the list started, and the document is within bounds with the entries counted.
    let (checked, rest_nodes) = super::split::walk(&rest).ok()?;
    let checked = checked?;
    if checked.list_start != list_start
        || !checked.items.is_empty()
        || rest_nodes.saturating_add(nodes) > super::limits::MAX_NODES
    {
        return None;
    }
    Some(Split {
        rest,
        items,
        toks,
        list_start,
    })
}

/// Where the line `key:` (at column 0, nothing after it but blanks and a comment)
/// starts, when exactly one line is.
fn find_top_key(text: &str, key: &str) -> Option<usize> {
    let b = text.as_bytes();
    let mut found = None;
    let mut at = 0;
    while at < b.len() {
        let line_end = memchr(b, at).unwrap_or(b.len());
        let line = &text[at..line_end];
        if let Some(after) = line.strip_prefix(key).and_then(|r| r.strip_prefix(':')) {
            let blank = after.trim_start_matches(' ');
            if blank.is_empty() || (blank.starts_with('#') && blank.len() < after.len()) {
                if found.is_some() {
                    return None;
                }
                found = Some(at);
            } else {
                return None;
            }
        }
        at = line_end + 1;
    }
    found
}

fn memchr(b: &[u8], from: usize) -> Option<usize> {
    b[from..].iter().position(|c| *c == b'\n').map(|i| from + i)
}

/// The start of the line after the one at `at`.
fn next_line(b: &[u8], at: usize) -> Option<usize> {
    memchr(b, at).map(|i| i + 1)
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Content {
    /// Nothing but spaces, or a comment.
    Blank,
    Other,
}

/// The line at `at`: its indentation (spaces) and whether it holds anything. None for
/// a tab or a carriage return before its content.
fn line_shape(b: &[u8], at: usize) -> Option<(usize, Content)> {
    let mut i = at;
    while b.get(i) == Some(&b' ') {
        i += 1;
    }
    let content = match b.get(i) {
        None | Some(b'\n') | Some(b'#') => Content::Blank,
        Some(b'\t') | Some(b'\r') => return None,
        Some(_) => Content::Other,
    };
    Some((i - at, content))
}

fn is_key_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

fn is_key_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// A word: starts with a letter, digit, `/`, `_` or `.`, then those, `-`, `+`, `@` and
/// `=`: no character that is an indicator anywhere in it (`:`, `#`, `,`, brackets,
/// quotes) and no space.
fn is_word_start(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'/' | b'_' | b'.')
}

fn is_word_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'/' | b'_' | b'.' | b'-' | b'+' | b'@' | b'=')
}

/// `key: value` from `at` to the end of its line (blanks and a comment may follow);
/// its tokens pushed. The end of its text.
fn read_pair(b: &[u8], at: usize, toks: &mut Vec<Tok>, nodes: &mut u64) -> Option<usize> {
    let key_end = at + b[at..].iter().take_while(|c| is_key_char(**c)).count();
    if b.get(key_end) != Some(&b':') || b.get(key_end + 1) != Some(&b' ') {
        return None;
    }
    toks.push(Tok::plain(at, key_end - at)?);
    *nodes += 1;
    let mut i = key_end + 1;
    while b.get(i) == Some(&b' ') {
        i += 1;
    }
    let end = match *b.get(i)? {
        b'[' => read_flow(b, i, false, toks, nodes)?,
        b'{' => read_flow(b, i, true, toks, nodes)?,
        _ => read_scalar(b, i, toks, nodes)?,
    };
    line_ends(b, end)?;
    Some(end)
}

/// Only blanks, then perhaps a comment, from `at` to the end of the line.
fn line_ends(b: &[u8], at: usize) -> Option<()> {
    let mut i = at;
    while b.get(i) == Some(&b' ') {
        i += 1;
    }
    match b.get(i) {
        None | Some(b'\n') => Some(()),
        Some(b'#') if i > at => Some(()),
        _ => None,
    }
}

/// A word or a quoted string at `at`; its end.
fn read_scalar(b: &[u8], at: usize, toks: &mut Vec<Tok>, nodes: &mut u64) -> Option<usize> {
    let c = *b.get(at)?;
    *nodes += 1;
    if c == b'"' || c == b'\'' {
        let len = b[at + 1..]
            .iter()
            .take_while(|x| **x != c && **x != b'\\' && **x != b'\n')
            .count();
        if b.get(at + 1 + len) != Some(&c) {
            return None;
        }
        toks.push(Tok::quoted(at + 1, len)?);
        // The parser's span of a quoted scalar takes in the blanks after it.
        let end = at + len + 2;
        return Some(end + b[end..].iter().take_while(|x| **x == b' ').count());
    }
    if !is_word_start(c) {
        return None;
    }
    let len = b[at..].iter().take_while(|x| is_word_char(**x)).count();
    toks.push(Tok::plain(at, len)?);
    Some(at + len)
}

/// A one-line `[a, b]` or `{ k: v, k: v }` at `at`; its end (after the bracket).
fn read_flow(
    b: &[u8],
    at: usize,
    map: bool,
    toks: &mut Vec<Tok>,
    nodes: &mut u64,
) -> Option<usize> {
    let (open_kind, close_kind, close) = if map {
        (tape::MAP_START, tape::MAP_END, b'}')
    } else {
        (tape::SEQ_START, tape::SEQ_END, b']')
    };
    toks.push(Tok::structural(open_kind, at)?);
    *nodes += 1;
    let skip = |mut i: usize| {
        while b.get(i) == Some(&b' ') {
            i += 1;
        }
        i
    };
    let mut i = skip(at + 1);
    if b.get(i) == Some(&close) {
        toks.push(Tok::structural(close_kind, i)?);
        return Some(i + 1);
    }
    loop {
        if map {
            let key_end = i + b[i..].iter().take_while(|c| is_key_char(**c)).count();
            if !b.get(i).is_some_and(|c| is_key_start(*c))
                || b.get(key_end) != Some(&b':')
                || b.get(key_end + 1) != Some(&b' ')
            {
                return None;
            }
            toks.push(Tok::plain(i, key_end - i)?);
            *nodes += 1;
            i = skip(key_end + 1);
        }
        i = skip(read_scalar(b, i, toks, nodes)?);
        match b.get(i) {
            Some(b',') => {
                i = skip(i + 1);
                if matches!(b.get(i), Some(b']') | Some(b'}') | Some(b',')) {
                    return None;
                }
            }
            Some(c) if *c == close => {
                toks.push(Tok::structural(close_kind, i)?);
                return Some(i + 1);
            }
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator of configurations: plain lists the line reader
    /// takes, and shapes it must decline, around and between them.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self, n: usize) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 33) % n as u64) as usize
        }

        fn pick<'a>(&mut self, of: &[&'a str]) -> &'a str {
            of[self.next(of.len())]
        }
    }

    const PLAIN_LINES: &[&str] = &[
        "name: c{i}",
        "sans: [c{i}.example.internal]",
        "sans: [a.b, c.d,e.f]",
        "sans: []",
        "sans: [ \"x y\" , 'z' ]",
        "files: { layout: nginx, cert: /tls/c{i}.crt, key: /tls/c{i}.key }",
        "files: {layout: apache, cert: \"/a b/c.crt\"}",
        "files: {}",
        "reload: [web]",
        "key: ecdsa-p256",
        "key: 'rsa-2048'",
        "lifetime: 30d",
        "renew_before: 0600",
        "key_mode: \"0640\"",
        "follow_symlinks: true",
        "common_name: null",
        "issuer: .inf",
        "profile: a+b@c=d",
        "name: c{i}   # a comment",
        "name: \"c{i}\"  ",
        "usage: server",
        "sans: ['a' ,\"b\"  ]",
        "files: { cert: '/x.crt'   , key: /x.key}",
    ];

    /// Shapes the line reader leaves to the parser.
    const OTHER_LINES: &[&str] = &[
        "hooks:\n      renewed: [x]",
        "sans:\n      - a.b",
        "name: a: b",
        "name: &x a",
        "name: *x",
        "name: !tag a",
        "name: |\n      text",
        "name: 'it''s'",
        "name: \"a\\tb\"",
        "name: a\tb",
        "name: [a,]",
        "name: [a\n      , b]",
        "name: c:d",
        "name: -1",
        "name: a\r",
        "name:",
        "name: a b",
        "  name: over-indented",
        "name: {a:b}",
        // The parser's span of a quoted scalar runs on to the end of a comment after it.
        "name: \"c{i}\"  # quoted, then a comment",
    ];

    fn config(g: &mut Gen, other: bool) -> String {
        let col = g.pick(&["", "  ", "    "]);
        let mut t = String::new();
        t.push_str(g.pick(&[
            "",
            "state_dir: /var/lib/x\n",
            "# top\nservers:\n  web:\n    type: command\n    reload: [/bin/true]\n",
        ]));
        t.push_str(g.pick(&["certificates:\n", "certificates:   # the list\n"]));
        let n = 1 + g.next(6);
        for i in 0..n {
            if g.next(4) == 0 {
                t.push_str(g.pick(&["\n", "  # between\n", "# at zero\n", "   \n"]));
            }
            let lines = 1 + g.next(5);
            for l in 0..lines {
                let mut body = g.pick(PLAIN_LINES).replace("{i}", &i.to_string());
                if other && g.next(3) == 0 {
                    body = g.pick(OTHER_LINES).to_string();
                }
                let lead = if l == 0 { "- " } else { "  " };
                t.push_str(&format!("{col}{lead}{body}\n"));
            }
        }
        t.push_str(g.pick(&[
            "",
            "trust: []\n",
            "# end\ndefaults:\n  key: rsa-2048\n",
            "\n\nmetrics: { listen: 127.0.0.1:9000 }\n",
            "...\n",
            "---\nx: 1\n",
        ]));
        t
    }

    #[test]
    fn what_the_lines_give_is_what_the_parser_gives() {
        let (mut read, mut declined) = (0, 0);
        for round in 0..12000 {
            let mut g = Gen(round);
            let other = round % 2 == 1;
            let text = config(&mut g, other);
            let slow = crate::config::split::walk(&text).map(|(s, _)| s);
            match split(&text) {
                Some(fast) => {
                    read += 1;
                    assert_eq!(Ok(Some(fast)), slow, "{text}");
                }
                None => {
                    declined += 1;
                    let col0 = text.contains("\n- ");
                    assert!(other || col0 || text.contains("\n---"), "declined:\n{text}");
                }
            }
        }
        assert!(
            read > 3000 && declined > 3000,
            "{read} read, {declined} declined"
        );
    }
}
