//! What web servers load: nginx and Apache configuration text into the TLS server
//! blocks they declare (names, listen addresses, certificate and key files), and the
//! `certificates:` entries that adopt them. Text in, facts out: files are read by the
//! caller (`io::discover`), which hands nginx's `-T` dump, or Apache's files through a
//! loader, to these functions.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

/// How deep includes may nest before the configuration is taken to loop.
const MAX_INCLUDE_DEPTH: usize = 16;

/// One address a server block listens on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// The address as written, without brackets for IPv6; None: every address.
    pub host: Option<String>,
    pub port: u16,
    /// Whether TLS is spoken there (`listen ... ssl`, `ssl on;`, `SSLEngine on`).
    pub ssl: bool,
}

impl Listen {
    /// Where a client on this machine reaches it: every address (`*`, `0.0.0.0`,
    /// `[::]`, none) becomes the loopback address of its family.
    pub fn connect(&self) -> String {
        match self.host.as_deref() {
            None | Some("*") | Some("0.0.0.0") | Some("_default_") => {
                format!("127.0.0.1:{}", self.port)
            }
            Some("::") => format!("[::1]:{}", self.port),
            Some(h) if h.contains(':') => format!("[{h}]:{}", self.port),
            Some(h) => format!("{h}:{}", self.port),
        }
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host.as_deref() {
            None => write!(f, "*:{}", self.port)?,
            Some(h) if h.contains(':') => write!(f, "[{h}]:{}", self.port)?,
            Some(h) => write!(f, "{h}:{}", self.port)?,
        }
        if self.ssl {
            write!(f, " ssl")?;
        }
        Ok(())
    }
}

/// The files of one certificate a server block loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    /// None: the key is in the certificate file (Apache without `SSLCertificateKeyFile`).
    pub key: Option<PathBuf>,
    /// Apache's `SSLCertificateChainFile`.
    pub chain: Option<PathBuf>,
}

/// One TLS server block (`server { }` of nginx, `<VirtualHost>` of Apache).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vhost {
    /// Where it is declared: `FILE:LINE`.
    pub origin: String,
    pub names: Vec<String>,
    pub listen: Vec<Listen>,
    pub files: Vec<TlsFiles>,
    /// What could not be followed (a missing key directive, a path with variables).
    pub problems: Vec<String>,
}

/// What one server's configuration declares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    /// TLS server blocks only; plain HTTP ones are left out.
    pub vhosts: Vec<Vhost>,
    /// Problems of the configuration as a whole (an include that cannot be read).
    pub problems: Vec<String>,
}

/// One directive, with its block when it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    name: String,
    args: Vec<String>,
    file: usize,
    line: usize,
    block: Option<Vec<Node>>,
}

/// `p` from `base` when relative, with `.` and `..` taken out as written (the servers
/// open the path as given; the result names the same file unless a link is on the way).
fn resolve(base: &Path, p: &str) -> PathBuf {
    use std::path::Component;
    let p = Path::new(p);
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// `*`, `?` and `[...]` wildcards, as the shell matches file names (here on whole paths).
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    fn go(p: &[char], t: &[char]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some('*') => (0..=t.len()).any(|i| go(&p[1..], &t[i..])),
            Some('?') => !t.is_empty() && go(&p[1..], &t[1..]),
            Some('[') => {
                let Some(end) = p.iter().skip(1).position(|&c| c == ']').map(|i| i + 1) else {
                    return t.first() == Some(&'[') && go(&p[1..], &t[1..]);
                };
                let Some(&c) = t.first() else { return false };
                let set = &p[1..end];
                let (negate, set) = match set.first() {
                    Some('!') | Some('^') => (true, &set[1..]),
                    _ => (false, set),
                };
                let mut hit = false;
                let mut i = 0;
                while i < set.len() {
                    if i + 2 < set.len() && set[i + 1] == '-' {
                        hit |= set[i] <= c && c <= set[i + 2];
                        i += 3;
                    } else {
                        hit |= set[i] == c;
                        i += 1;
                    }
                }
                hit != negate && go(&p[end + 1..], &t[1..])
            }
            Some(&c) => t.first() == Some(&c) && go(&p[1..], &t[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    go(&p, &t)
}

pub fn has_wildcard(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

// ---------------------------------------------------------------------------------
// nginx

/// `nginx -T` output cut into its files: `# configuration file PATH:` starts each.
pub fn split_nginx_dump(dump: &str) -> Vec<(PathBuf, String)> {
    let mut files: Vec<(PathBuf, String)> = Vec::new();
    for line in dump.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\n', '\r']);
        if let Some(path) = bare
            .strip_prefix("# configuration file ")
            .and_then(|rest| rest.strip_suffix(':'))
        {
            files.push((PathBuf::from(path), String::new()));
        } else if let Some((_, text)) = files.last_mut() {
            text.push_str(line);
        }
    }
    files
}

#[derive(Debug, PartialEq)]
enum Tok {
    Word(String, usize),
    Open(usize),
    Close(usize),
    Semi(usize),
}

/// nginx's lexical rules: `#` comments (at the start of a word), single and double
/// quotes with backslash escapes, `{`, `}` and `;`, and `${var}` inside words.
fn nginx_tokens(text: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while let Some(c) = chars.next() {
        match c {
            '\n' => line += 1,
            c if c.is_whitespace() => {}
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        line += 1;
                        break;
                    }
                }
            }
            '{' => out.push(Tok::Open(line)),
            '}' => out.push(Tok::Close(line)),
            ';' => out.push(Tok::Semi(line)),
            '"' | '\'' => {
                let start = line;
                let mut word = String::new();
                let mut closed = false;
                while let Some(d) = chars.next() {
                    match d {
                        '\\' => match chars.next() {
                            Some(e @ ('"' | '\'' | '\\')) => word.push(e),
                            Some('n') => word.push('\n'),
                            Some('t') => word.push('\t'),
                            Some('r') => word.push('\r'),
                            Some(e) => {
                                word.push('\\');
                                word.push(e);
                            }
                            None => break,
                        },
                        d if d == c => {
                            closed = true;
                            break;
                        }
                        d => {
                            if d == '\n' {
                                line += 1;
                            }
                            word.push(d);
                        }
                    }
                }
                if !closed {
                    return Err(format!("line {start}: unterminated quoted string"));
                }
                out.push(Tok::Word(word, start));
            }
            c => {
                let mut word = String::from(c);
                let mut in_var = false;
                while let Some(&d) = chars.peek() {
                    if in_var {
                        word.push(d);
                        chars.next();
                        in_var = d != '}';
                        continue;
                    }
                    if d.is_whitespace() || d == ';' || d == '}' {
                        break;
                    }
                    if d == '{' {
                        if word.ends_with('$') {
                            in_var = true;
                        } else {
                            break;
                        }
                    }
                    if d == '\\' {
                        chars.next();
                        if let Some(e) = chars.next() {
                            word.push(e);
                        }
                        continue;
                    }
                    word.push(d);
                    chars.next();
                }
                out.push(Tok::Word(word, line));
            }
        }
    }
    Ok(out)
}

fn nginx_tree(text: &str, file: usize) -> Result<Vec<Node>, String> {
    let toks = nginx_tokens(text)?;
    let mut stack: Vec<Vec<Node>> = vec![Vec::new()];
    let mut open: Vec<(String, Vec<String>, usize)> = Vec::new();
    let mut words: Vec<(String, usize)> = Vec::new();
    for tok in toks {
        match tok {
            Tok::Word(w, l) => words.push((w, l)),
            Tok::Semi(l) => {
                let mut it = std::mem::take(&mut words).into_iter();
                let Some((name, line)) = it.next() else {
                    return Err(format!("line {l}: unexpected `;`"));
                };
                let args = it.map(|(w, _)| w).collect();
                stack.last_mut().unwrap().push(Node {
                    name,
                    args,
                    file,
                    line,
                    block: None,
                });
            }
            Tok::Open(l) => {
                let mut it = std::mem::take(&mut words).into_iter();
                let Some((name, line)) = it.next() else {
                    return Err(format!("line {l}: unexpected `{{`"));
                };
                open.push((name, it.map(|(w, _)| w).collect(), line));
                stack.push(Vec::new());
            }
            Tok::Close(l) => {
                if !words.is_empty() {
                    return Err(format!(
                        "line {l}: unexpected `}}` (a directive lacks its `;`)"
                    ));
                }
                let (Some((name, args, line)), Some(children)) = (open.pop(), stack.pop()) else {
                    return Err(format!("line {l}: unexpected `}}`"));
                };
                stack.last_mut().unwrap().push(Node {
                    name,
                    args,
                    file,
                    line,
                    block: Some(children),
                });
            }
        }
    }
    if let Some((name, _, line)) = open.last() {
        return Err(format!("line {line}: `{name} {{` is never closed"));
    }
    if let Some((w, l)) = words.first() {
        return Err(format!("line {l}: `{w}` lacks its `;`"));
    }
    Ok(stack.pop().unwrap())
}

struct NginxCx<'a> {
    files: &'a [(PathBuf, String)],
    conf_dir: PathBuf,
    trees: Vec<Option<Result<Vec<Node>, String>>>,
    problems: Vec<String>,
}

impl NginxCx<'_> {
    fn tree(&mut self, i: usize) -> Vec<Node> {
        if self.trees[i].is_none() {
            self.trees[i] = Some(nginx_tree(&self.files[i].1, i));
        }
        match self.trees[i].as_ref().unwrap() {
            Ok(t) => t.clone(),
            Err(e) => {
                let msg = format!("{}: {e}", self.files[i].0.display());
                if !self.problems.contains(&msg) {
                    self.problems.push(msg);
                }
                Vec::new()
            }
        }
    }

    /// `nodes` with every `include` replaced by the directives of the files it names.
    fn expand(&mut self, nodes: Vec<Node>, depth: usize) -> Vec<Node> {
        let mut out = Vec::new();
        for mut n in nodes {
            if n.name == "include" && n.block.is_none() && n.args.len() == 1 {
                if depth >= MAX_INCLUDE_DEPTH {
                    self.problems
                        .push(format!("includes nested deeper than {MAX_INCLUDE_DEPTH}"));
                    continue;
                }
                let pattern = resolve(&self.conf_dir, &n.args[0])
                    .to_string_lossy()
                    .into_owned();
                let matching: Vec<usize> = (0..self.files.len())
                    .filter(|&i| {
                        let p = self.files[i].0.to_string_lossy();
                        if has_wildcard(&pattern) {
                            wildcard_match(&pattern, &p)
                        } else {
                            p == pattern
                        }
                    })
                    .collect();
                for i in matching {
                    let t = self.tree(i);
                    out.extend(self.expand(t, depth + 1));
                }
                continue;
            }
            if let Some(block) = n.block.take() {
                n.block = Some(self.expand(block, depth));
            }
            out.push(n);
        }
        out
    }

    fn origin(&self, n: &Node) -> String {
        format!("{}:{}", self.files[n.file].0.display(), n.line)
    }
}

/// Parses one `listen` directive's arguments (nginx).
pub fn parse_nginx_listen(args: &[String]) -> Option<Listen> {
    let addr = args.first()?;
    if addr.starts_with("unix:") {
        return None;
    }
    let ssl = args[1..].iter().any(|a| a == "ssl");
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        let (h, tail) = rest.split_once(']')?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None => 80,
        };
        (Some(h.to_string()), port)
    } else if let Ok(port) = addr.parse::<u16>() {
        (None, port)
    } else if let Some((h, p)) = addr.rsplit_once(':') {
        (Some(h.to_string()), p.parse().ok()?)
    } else {
        (Some(addr.clone()), 80)
    };
    let host = host.filter(|h| h != "*");
    Some(Listen { host, port, ssl })
}

fn values<'n>(nodes: &'n [Node], name: &str) -> Vec<&'n Node> {
    nodes.iter().filter(|n| n.name == name).collect()
}

fn flag_on(nodes: &[Node], name: &str) -> Option<bool> {
    values(nodes, name)
        .last()
        .and_then(|n| n.args.first())
        .map(|a| a.eq_ignore_ascii_case("on"))
}

/// The TLS server blocks of an nginx configuration, from `nginx -T`'s dump; `main`
/// is the file given with `-c` (its directory is where relative paths start).
pub fn nginx_vhosts(dump: &str, main: &Path) -> Findings {
    let files = split_nginx_dump(dump);
    let conf_dir = main.parent().unwrap_or(Path::new("/")).to_path_buf();
    let mut cx = NginxCx {
        files: &files,
        conf_dir,
        trees: vec![None; files.len()],
        problems: Vec::new(),
    };
    let Some(first) = files
        .iter()
        .position(|(p, _)| p == main)
        .or(if files.is_empty() { None } else { Some(0) })
    else {
        return Findings {
            vhosts: Vec::new(),
            problems: vec![format!(
                "nginx printed no configuration file for {}",
                main.display()
            )],
        };
    };
    let top = cx.tree(first);
    let top = cx.expand(top, 0);
    let mut vhosts = Vec::new();
    for ctx in top
        .iter()
        .filter(|n| n.name == "http" || n.name == "stream")
    {
        let block = ctx.block.as_deref().unwrap_or(&[]);
        let ctx_certs = values(block, "ssl_certificate");
        let ctx_keys = values(block, "ssl_certificate_key");
        let ctx_ssl = flag_on(block, "ssl");
        for server in block.iter().filter(|n| n.name == "server") {
            let body = server.block.as_deref().unwrap_or(&[]);
            let ssl_on = flag_on(body, "ssl").or(ctx_ssl).unwrap_or(false);
            let listen: Vec<Listen> = values(body, "listen")
                .iter()
                .filter_map(|n| parse_nginx_listen(&n.args))
                .map(|mut l| {
                    l.ssl |= ssl_on;
                    l
                })
                .collect();
            if !listen.iter().any(|l| l.ssl) {
                continue;
            }
            let names: Vec<String> = values(body, "server_name")
                .iter()
                .flat_map(|n| n.args.iter().cloned())
                .filter(|n| !n.is_empty())
                .collect();
            let own_certs = values(body, "ssl_certificate");
            let (certs, keys) = if own_certs.is_empty() {
                (ctx_certs.clone(), ctx_keys.clone())
            } else {
                let own_keys = values(body, "ssl_certificate_key");
                let keys = if own_keys.is_empty() {
                    ctx_keys.clone()
                } else {
                    own_keys
                };
                (own_certs, keys)
            };
            let mut v = Vhost {
                origin: cx.origin(server),
                names,
                listen,
                files: Vec::new(),
                problems: Vec::new(),
            };
            if certs.is_empty() {
                v.problems
                    .push("listens with ssl but no ssl_certificate applies".into());
            }
            for (i, c) in certs.iter().enumerate() {
                let Some(cert) = c.args.first() else { continue };
                if cert.contains('$') {
                    v.problems.push(format!(
                        "ssl_certificate {cert} uses variables (chosen per connection); not followed"
                    ));
                    continue;
                }
                if cert.starts_with("data:") || cert.starts_with("engine:") {
                    v.problems.push(format!(
                        "ssl_certificate {cert} is not a file; not followed"
                    ));
                    continue;
                }
                let key = match keys.get(i).and_then(|k| k.args.first()) {
                    Some(k) if k.contains('$') || k.starts_with("data:") => {
                        v.problems.push(format!(
                            "ssl_certificate_key {k} is not a plain file; not followed"
                        ));
                        continue;
                    }
                    Some(k) => resolve(&cx.conf_dir, k),
                    None => {
                        v.problems
                            .push(format!("ssl_certificate {cert} has no ssl_certificate_key"));
                        continue;
                    }
                };
                v.files.push(TlsFiles {
                    cert: resolve(&cx.conf_dir, cert),
                    key: Some(key),
                    chain: None,
                });
            }
            vhosts.push(v);
        }
    }
    Findings {
        vhosts,
        problems: cx.problems,
    }
}

// ---------------------------------------------------------------------------------
// Apache

/// Apache's directive syntax: one per line (a trailing `\` continues it), `#` comments
/// on their own lines, `<Section args>` ... `</Section>`, double or single quotes.
fn apache_words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut word = String::new();
        if c == '"' || c == '\'' {
            chars.next();
            while let Some(d) = chars.next() {
                if d == '\\' && chars.peek() == Some(&c) {
                    word.push(c);
                    chars.next();
                } else if d == c {
                    break;
                } else {
                    word.push(d);
                }
            }
        } else {
            while let Some(&d) = chars.peek() {
                if d.is_whitespace() {
                    break;
                }
                word.push(d);
                chars.next();
            }
        }
        out.push(word);
    }
    out
}

fn apache_tree(text: &str, file: usize) -> Result<Vec<Node>, String> {
    let mut stack: Vec<Vec<Node>> = vec![Vec::new()];
    let mut open: Vec<(String, Vec<String>, usize)> = Vec::new();
    let mut pending = String::new();
    let mut start = 0;
    for (i, raw) in text.lines().enumerate() {
        if pending.is_empty() {
            start = i + 1;
        }
        let line = raw.trim_end();
        if let Some(body) = line.strip_suffix('\\') {
            pending.push_str(body);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        let full = std::mem::take(&mut pending);
        let full = full.trim();
        if full.is_empty() || full.starts_with('#') {
            continue;
        }
        if let Some(close) = full.strip_prefix("</") {
            let name = close.trim_end_matches('>').trim();
            let (Some((open_name, args, line)), Some(children)) = (open.pop(), stack.pop()) else {
                return Err(format!("line {start}: `</{name}>` without its opening"));
            };
            if !open_name.eq_ignore_ascii_case(name) {
                return Err(format!(
                    "line {start}: `</{name}>` closes `<{open_name}>` (line {line})"
                ));
            }
            stack.last_mut().unwrap().push(Node {
                name: open_name,
                args,
                file,
                line,
                block: Some(children),
            });
        } else if let Some(section) = full.strip_prefix('<') {
            let section = section.strip_suffix('>').unwrap_or(section);
            let mut words = apache_words(section).into_iter();
            let name = words.next().unwrap_or_default();
            open.push((name, words.collect(), start));
            stack.push(Vec::new());
        } else {
            let mut words = apache_words(full).into_iter();
            let name = words.next().unwrap_or_default();
            stack.last_mut().unwrap().push(Node {
                name,
                args: words.collect(),
                file,
                line: start,
                block: None,
            });
        }
    }
    if let Some((name, _, line)) = open.last() {
        return Err(format!("line {line}: `<{name}>` is never closed"));
    }
    Ok(stack.pop().unwrap())
}

/// Reads the files an `Include` pattern (an absolute path, maybe with wildcards)
/// names, sorted as Apache reads them. `optional`: `IncludeOptional` (nothing
/// matching is not an error).
pub type ApacheLoader<'a> = dyn FnMut(&Path, bool) -> Result<Vec<(PathBuf, String)>, String> + 'a;

struct ApacheCx<'a, 'b> {
    load: &'a mut ApacheLoader<'b>,
    files: Vec<PathBuf>,
    server_root: PathBuf,
    defines: Vec<(String, String)>,
    problems: Vec<String>,
}

impl ApacheCx<'_, '_> {
    fn subst(&self, s: &str) -> String {
        let mut s = s.to_string();
        for (k, v) in &self.defines {
            s = s.replace(&format!("${{{k}}}"), v);
        }
        s
    }

    /// Reads `text` (of `path`) and every file it includes, in order: `ServerRoot`
    /// and `Define` apply from where they are met, as Apache reads them.
    fn read(&mut self, path: &Path, text: &str, depth: usize) -> Vec<Node> {
        let idx = self.files.len();
        self.files.push(path.to_path_buf());
        let nodes = match apache_tree(text, idx) {
            Ok(n) => n,
            Err(e) => {
                self.problems.push(format!("{}: {e}", path.display()));
                return Vec::new();
            }
        };
        self.expand(nodes, depth)
    }

    fn expand(&mut self, nodes: Vec<Node>, depth: usize) -> Vec<Node> {
        let mut out = Vec::new();
        for mut n in nodes {
            n.args = n.args.iter().map(|a| self.subst(a)).collect();
            let lower = n.name.to_ascii_lowercase();
            match (lower.as_str(), &n.block) {
                ("serverroot", None) if !n.args.is_empty() => {
                    self.server_root = PathBuf::from(&n.args[0]);
                }
                ("define", None) if !n.args.is_empty() => {
                    let v = n.args.get(1).cloned().unwrap_or_default();
                    self.defines.push((n.args[0].clone(), v));
                }
                ("include" | "includeoptional", None) if !n.args.is_empty() => {
                    if depth >= MAX_INCLUDE_DEPTH {
                        self.problems
                            .push(format!("includes nested deeper than {MAX_INCLUDE_DEPTH}"));
                        continue;
                    }
                    let pattern = resolve(&self.server_root, &n.args[0]);
                    let optional = lower == "includeoptional";
                    match (self.load)(&pattern, optional) {
                        Ok(files) => {
                            for (p, text) in files {
                                out.extend(self.read(&p, &text, depth + 1));
                            }
                        }
                        Err(e) => self.problems.push(format!(
                            "{}:{}: {} {}: {e}",
                            self.files[n.file].display(),
                            n.line,
                            n.name,
                            n.args[0]
                        )),
                    }
                    continue;
                }
                _ => {}
            }
            if let Some(block) = n.block.take() {
                n.block = Some(self.expand(block, depth));
            }
            out.push(n);
        }
        out
    }
}

/// Every directive of `nodes` and of the sections within them (`<IfModule>`...),
/// except `<VirtualHost>` sections, which are returned apart.
fn flatten<'n>(nodes: &'n [Node], flat: &mut Vec<&'n Node>, vhosts: &mut Vec<&'n Node>) {
    for n in nodes {
        match &n.block {
            Some(_) if n.name.eq_ignore_ascii_case("VirtualHost") => vhosts.push(n),
            Some(b) => flatten(b, flat, vhosts),
            None => flat.push(n),
        }
    }
}

fn apache_values<'n>(nodes: &[&'n Node], name: &str) -> Vec<&'n Node> {
    nodes
        .iter()
        .copied()
        .filter(|n| n.name.eq_ignore_ascii_case(name) && !n.args.is_empty())
        .collect()
}

/// One `<VirtualHost>` address: `*:443`, `_default_:443`, `[::1]:8443`, `host`.
pub fn parse_apache_addr(addr: &str, ssl: bool) -> Option<Listen> {
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        let (h, tail) = rest.split_once(']')?;
        let port = match tail.strip_prefix(':') {
            Some("*") | None => 443,
            Some(p) => p.parse().ok()?,
        };
        (h.to_string(), port)
    } else if let Some((h, p)) = addr.rsplit_once(':') {
        let port = if p == "*" {
            if ssl {
                443
            } else {
                80
            }
        } else {
            p.parse().ok()?
        };
        (h.to_string(), port)
    } else {
        (addr.to_string(), if ssl { 443 } else { 80 })
    };
    let host = Some(host).filter(|h| h != "*" && h != "_default_");
    Some(Listen { host, port, ssl })
}

/// The TLS virtual hosts of an Apache configuration whose main file is `main` (with
/// `text`), reading includes through `load`. `server_root`: where relative paths
/// start until a `ServerRoot` directive says otherwise.
pub fn apache_vhosts(
    main: &Path,
    text: &str,
    server_root: &Path,
    load: &mut ApacheLoader<'_>,
) -> Findings {
    let mut cx = ApacheCx {
        load,
        files: Vec::new(),
        server_root: server_root.to_path_buf(),
        defines: Vec::new(),
        problems: Vec::new(),
    };
    let tree = cx.read(main, text, 0);
    let root = cx.server_root.clone();
    let mut global = Vec::new();
    let mut sections = Vec::new();
    flatten(&tree, &mut global, &mut sections);
    let global_on = apache_values(&global, "SSLEngine")
        .last()
        .map(|n| n.args[0].eq_ignore_ascii_case("on"));
    let mut vhosts = Vec::new();
    for section in sections {
        let mut body = Vec::new();
        let mut nested = Vec::new();
        flatten(
            section.block.as_deref().unwrap_or(&[]),
            &mut body,
            &mut nested,
        );
        let ssl = apache_values(&body, "SSLEngine")
            .last()
            .map(|n| n.args[0].eq_ignore_ascii_case("on"))
            .or(global_on)
            .unwrap_or(false);
        if !ssl {
            continue;
        }
        let mut names: Vec<String> = Vec::new();
        for n in apache_values(&body, "ServerName").last().into_iter() {
            // `ServerName scheme://host:port`: the host.
            let name = n.args[0].rsplit("://").next().unwrap_or(&n.args[0]);
            let name = match name.rsplit_once(':') {
                Some((h, p)) if p.parse::<u16>().is_ok() => h,
                _ => name,
            };
            names.push(name.to_string());
        }
        for n in apache_values(&body, "ServerAlias") {
            names.extend(n.args.iter().cloned());
        }
        let listen = section
            .args
            .iter()
            .filter_map(|a| parse_apache_addr(a, true))
            .collect();
        let pick = |name: &str| {
            let own = apache_values(&body, name);
            if own.is_empty() {
                apache_values(&global, name)
            } else {
                own
            }
        };
        let certs = pick("SSLCertificateFile");
        let keys = pick("SSLCertificateKeyFile");
        let chain = pick("SSLCertificateChainFile")
            .last()
            .map(|n| resolve(&root, &n.args[0]));
        let mut v = Vhost {
            origin: format!("{}:{}", cx.files[section.file].display(), section.line),
            names,
            listen,
            files: Vec::new(),
            problems: Vec::new(),
        };
        if certs.is_empty() {
            v.problems
                .push("SSLEngine on but no SSLCertificateFile applies".into());
        }
        for (i, c) in certs.iter().enumerate() {
            v.files.push(TlsFiles {
                cert: resolve(&root, &c.args[0]),
                key: keys.get(i).map(|k| resolve(&root, &k.args[0])),
                chain: chain.clone(),
            });
        }
        vhosts.push(v);
    }
    Findings {
        vhosts,
        problems: cx.problems,
    }
}

// ---------------------------------------------------------------------------------
// Adoption: a `certificates:` block

/// Which files layout a loaded pair is in, as certkeeper would write it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Adopted {
    Nginx {
        cert: PathBuf,
        key: PathBuf,
    },
    Apache {
        cert: PathBuf,
        chain: PathBuf,
        key: PathBuf,
    },
    Combined {
        cert: PathBuf,
    },
}

/// One certificate to adopt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adopt {
    /// Server names of the blocks that load it, in order (the first names the entry).
    pub server_names: Vec<String>,
    /// The certificate's own names (DNS and IP), as `San` prints them.
    pub sans: Vec<String>,
    /// Issued by certkeeper's internal CA: managed; otherwise watched.
    pub internal: bool,
    pub files: Adopted,
    /// The `servers:` entry that loads it, when one does.
    pub reload: Option<String>,
    /// Where it is served: every TLS listen address of the vhosts that load it.
    pub listen: Vec<Listen>,
    /// A directory on the way to a file is a link (certkeeper then needs to be told).
    pub follow_symlinks: bool,
}

/// A certificate name from a server name: lower-case, `[a-z0-9._-]`, `*` as `wildcard`.
pub fn sanitize_name(server_name: &str) -> String {
    let mut out = String::new();
    for c in server_name
        .to_ascii_lowercase()
        .replace('*', "wildcard")
        .chars()
    {
        if c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c) {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_matches(['-', '.']).to_string();
    let out: String = out.chars().take(100).collect();
    if out.is_empty() {
        "cert".into()
    } else {
        out
    }
}

fn q(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

fn qp(p: &Path) -> String {
    q(&p.to_string_lossy())
}

/// The name to send as SNI: the first server name the certificate covers, else its
/// first plain DNS name.
fn sni_name(a: &Adopt) -> Option<String> {
    let plain = |n: &&String| {
        !n.starts_with('*')
            && !n.starts_with('~')
            && n.contains('.')
            && crate::model::validate_dns_name(n).is_ok()
    };
    let covered = |n: &&String| {
        a.sans.iter().any(|s| s.eq_ignore_ascii_case(n))
            || a.sans.iter().any(|s| {
                s.strip_prefix("*.").is_some_and(|d| {
                    n.split_once('.')
                        .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(d))
                })
            })
    };
    a.server_names
        .iter()
        .filter(plain)
        .find(covered)
        .or_else(|| a.sans.iter().find(plain))
        .cloned()
}

/// The `certificates:` entries adopting `items`, each name unique and not in `taken`.
pub fn certificates_yaml(items: &[Adopt], taken: &[String]) -> String {
    let mut used: BTreeSet<String> = taken.iter().cloned().collect();
    let mut y = String::from("certificates:\n");
    if items.is_empty() {
        return "certificates: []\n".into();
    }
    for a in items {
        let first = a
            .server_names
            .iter()
            .find(|n| !n.is_empty() && *n != "_" && !n.starts_with('~'))
            .or(a.sans.first())
            .map(String::as_str)
            .unwrap_or("cert");
        let base = sanitize_name(first);
        let mut name = base.clone();
        let mut i = 2;
        while used.contains(&name) {
            name = format!("{base}-{i}");
            i += 1;
        }
        used.insert(name.clone());
        y.push_str(&format!("  - name: {}\n", q(&name)));
        if !a.internal {
            let cert = match &a.files {
                Adopted::Nginx { cert, .. }
                | Adopted::Apache { cert, .. }
                | Adopted::Combined { cert } => cert,
            };
            y.push_str(&format!("    watch: {}\n", qp(cert)));
            continue;
        }
        let sans: Vec<String> = a.sans.iter().map(|s| q(s)).collect();
        y.push_str(&format!("    sans: [{}]\n", sans.join(", ")));
        y.push_str("    files:\n");
        match &a.files {
            Adopted::Nginx { cert, key } => {
                y.push_str(&format!(
                    "      layout: nginx\n      cert: {}\n      key: {}\n",
                    qp(cert),
                    qp(key)
                ));
            }
            Adopted::Apache { cert, chain, key } => {
                y.push_str(&format!(
                    "      layout: apache\n      cert: {}\n      chain: {}\n      key: {}\n",
                    qp(cert),
                    qp(chain),
                    qp(key)
                ));
            }
            Adopted::Combined { cert } => {
                y.push_str(&format!(
                    "      layout: combined\n      cert: {}\n",
                    qp(cert)
                ));
            }
        }
        if a.follow_symlinks {
            y.push_str("    follow_symlinks: true\n");
        }
        if let Some(server) = &a.reload {
            y.push_str(&format!("    reload: [{}]\n", q(server)));
        }
        match (&a.listen[..], sni_name(a)) {
            ([], _) | (_, None) => {}
            ([listen], Some(sni)) => y.push_str(&format!(
                "    verify:\n      connect: {}\n      server_name: {}\n",
                q(&listen.connect()),
                q(&sni)
            )),
            (all, Some(sni)) => {
                y.push_str("    verify:\n");
                for listen in all {
                    y.push_str(&format!(
                        "      - connect: {}\n        server_name: {}\n",
                        q(&listen.connect()),
                        q(&sni)
                    ));
                }
            }
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn dump(files: &[(&str, &str)]) -> String {
        files
            .iter()
            .map(|(p, t)| format!("# configuration file {p}:\n{t}\n"))
            .collect()
    }

    #[test]
    fn nginx_listen_variants() {
        let l = |a: &[&str]| parse_nginx_listen(&s(a)).unwrap();
        assert_eq!(
            l(&["443", "ssl"]),
            Listen {
                host: None,
                port: 443,
                ssl: true
            }
        );
        let x = l(&["127.0.0.1:8443", "ssl", "http2"]);
        assert_eq!(
            (x.host.as_deref(), x.port, x.ssl),
            (Some("127.0.0.1"), 8443, true)
        );
        assert_eq!(x.connect(), "127.0.0.1:8443");
        let x = l(&["[::]:443", "ssl", "default_server"]);
        assert_eq!((x.host.as_deref(), x.port), (Some("::"), 443));
        assert_eq!(x.connect(), "[::1]:443");
        assert_eq!(x.to_string(), "[::]:443 ssl");
        let x = l(&["*:8080"]);
        assert_eq!((x.host, x.port, x.ssl), (None, 8080, false));
        assert_eq!(l(&["localhost"]).port, 80);
        assert_eq!(l(&["0.0.0.0:443", "ssl"]).connect(), "127.0.0.1:443");
        assert!(parse_nginx_listen(&s(&["unix:/run/x.sock", "ssl"])).is_none());
    }

    #[test]
    fn nginx_comments_quotes_nested_blocks_and_includes() {
        let text = dump(&[
            (
                "/etc/nginx/nginx.conf",
                r#"# main file; { not a block }
user nobody;
events { worker_connections 64; }
http {
    ssl_certificate "tls/default.crt"; # inherited
    ssl_certificate_key 'tls/default.key';
    include conf.d/*.conf;
    server {
        listen 80;
        server_name plain.example;
        location / { return 200 "a ; b { } # c"; }
    }
}
"#,
            ),
            (
                "/etc/nginx/conf.d/a.conf",
                r#"server {
    listen 127.0.0.1:8443 ssl http2;
    listen [::]:8443 ssl;
    server_name www.example.com  api.example.com;
    server_name more.example.com;
    location /x { if ($http_x) { return 404; } }
}
"#,
            ),
            (
                "/etc/nginx/conf.d/b.conf",
                r#"server {
    listen 443;
    ssl on;
    server_name "b.example.com";
    ssl_certificate /srv/b.crt;
    ssl_certificate_key /srv/b.key;
    ssl_certificate /srv/b-rsa.crt;
    ssl_certificate_key /srv/b-rsa.key;
}
server { listen 9443 ssl; ssl_certificate /srv/$ssl_server_name.crt; ssl_certificate_key /srv/k; }
"#,
            ),
        ]);
        let f = nginx_vhosts(&text, Path::new("/etc/nginx/nginx.conf"));
        assert!(f.problems.is_empty(), "{:?}", f.problems);
        assert_eq!(f.vhosts.len(), 3, "{:#?}", f.vhosts);
        let a = &f.vhosts[0];
        assert_eq!(a.origin, "/etc/nginx/conf.d/a.conf:1");
        assert_eq!(
            a.names,
            s(&["www.example.com", "api.example.com", "more.example.com"])
        );
        assert_eq!(a.listen.len(), 2);
        assert_eq!(
            a.files,
            vec![TlsFiles {
                cert: "/etc/nginx/tls/default.crt".into(),
                key: Some("/etc/nginx/tls/default.key".into()),
                chain: None
            }]
        );
        let b = &f.vhosts[1];
        assert_eq!(b.names, s(&["b.example.com"]));
        assert!(b.listen[0].ssl, "ssl on; makes every listen TLS");
        assert_eq!(b.files.len(), 2);
        assert_eq!(b.files[1].cert, PathBuf::from("/srv/b-rsa.crt"));
        assert_eq!(b.files[1].key, Some("/srv/b-rsa.key".into()));
        let c = &f.vhosts[2];
        assert!(c.files.is_empty());
        assert!(c.problems[0].contains("variables"), "{:?}", c.problems);
    }

    #[test]
    fn nginx_syntax_errors_are_problems_not_panics() {
        for bad in [
            "http { server { listen 443 ssl; }",
            "http { } }",
            "a \"b;",
            "x",
            "; ",
        ] {
            let f = nginx_vhosts(&dump(&[("/n.conf", bad)]), Path::new("/n.conf"));
            assert!(f.vhosts.is_empty());
            assert_eq!(f.problems.len(), 1, "{bad}: {:?}", f.problems);
        }
        let f = nginx_vhosts("", Path::new("/n.conf"));
        assert!(f.problems[0].contains("no configuration file"));
    }

    #[test]
    fn nginx_missing_key_is_reported() {
        let text = dump(&[(
            "/n.conf",
            "http { server { listen 443 ssl; server_name a.b; ssl_certificate /a.crt; } }",
        )]);
        let f = nginx_vhosts(&text, Path::new("/n.conf"));
        assert!(f.vhosts[0].problems[0].contains("no ssl_certificate_key"));
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("/a/*.conf", "/a/x.conf"));
        assert!(!wildcard_match("/a/*.conf", "/a/x.conf~"));
        assert!(wildcard_match("/a/[a-c]?.conf", "/a/b1.conf"));
        assert!(!wildcard_match("/a/[!a-c]?.conf", "/a/b1.conf"));
    }

    fn loader(
        files: BTreeMap<&'static str, &'static str>,
    ) -> impl FnMut(&Path, bool) -> Result<Vec<(PathBuf, String)>, String> {
        move |pattern: &Path, optional: bool| {
            let p = pattern.to_string_lossy();
            let found: Vec<(PathBuf, String)> = files
                .iter()
                .filter(|(k, _)| wildcard_match(&p, k))
                .map(|(k, v)| (PathBuf::from(k), v.to_string()))
                .collect();
            if found.is_empty() && !optional && !has_wildcard(&p) {
                Err("no such file".into())
            } else {
                Ok(found)
            }
        }
    }

    #[test]
    fn apache_vhosts_aliases_includes_and_inheritance() {
        let main = r#"# Apache
ServerRoot "/etc/apache2"
Define TLS /etc/ssl/site
SSLCertificateKeyFile /etc/ssl/default.key
<IfModule ssl_module>
    IncludeOptional sites/*.conf
</IfModule>
Include missing.conf
<VirtualHost *:80>
    ServerName plain.example.com
</VirtualHost>
"#;
        let files = BTreeMap::from([
            (
                "/etc/apache2/sites/a.conf",
                r#"<VirtualHost 127.0.0.1:8443 [::1]:8443>
    ServerName https://www.example.com:8443
    ServerAlias api.example.com \
        "alt.example.com"
    SSLEngine On
    # SSLCertificateFile /nope
    SSLCertificateFile ${TLS}.crt
    SSLCertificateChainFile ${TLS}-chain.crt
    SSLCertificateKeyFile ${TLS}.key
    <Directory /x>
        Require all granted
    </Directory>
</VirtualHost>
"#,
            ),
            (
                "/etc/apache2/sites/b.conf",
                r#"<VirtualHost _default_:443>
  ServerName b.example.com
  <IfModule mod_ssl.c>
    SSLEngine on
    SSLCertificateFile tls/b.pem
  </IfModule>
</VirtualHost>
"#,
            ),
        ]);
        let mut load = loader(files);
        let f = apache_vhosts(
            Path::new("/etc/apache2/apache2.conf"),
            main,
            Path::new("/nowhere"),
            &mut load,
        );
        assert_eq!(f.problems.len(), 1, "{:?}", f.problems);
        assert!(f.problems[0].contains("missing.conf"), "{:?}", f.problems);
        assert_eq!(f.vhosts.len(), 2, "{:#?}", f.vhosts);
        let a = &f.vhosts[0];
        assert_eq!(a.origin, "/etc/apache2/sites/a.conf:1");
        assert_eq!(
            a.names,
            s(&["www.example.com", "api.example.com", "alt.example.com"])
        );
        assert_eq!(a.listen.len(), 2);
        assert_eq!(a.listen[1].connect(), "[::1]:8443");
        assert_eq!(
            a.files,
            vec![TlsFiles {
                cert: "/etc/ssl/site.crt".into(),
                key: Some("/etc/ssl/site.key".into()),
                chain: Some("/etc/ssl/site-chain.crt".into()),
            }]
        );
        let b = &f.vhosts[1];
        assert_eq!(b.listen[0].connect(), "127.0.0.1:443");
        assert_eq!(
            resolve(Path::new("/etc/nginx"), "./../ssl/x.crt"),
            PathBuf::from("/etc/ssl/x.crt")
        );
        assert_eq!(b.files[0].cert, PathBuf::from("/etc/apache2/tls/b.pem"));
        assert_eq!(
            b.files[0].key,
            Some("/etc/ssl/default.key".into()),
            "the main server's key applies"
        );
    }

    #[test]
    fn apache_unbalanced_sections_are_problems() {
        let mut load = loader(BTreeMap::new());
        let f = apache_vhosts(
            Path::new("/a.conf"),
            "<VirtualHost *:443>\nSSLEngine on\n",
            Path::new("/"),
            &mut load,
        );
        assert!(f.vhosts.is_empty());
        assert!(f.problems[0].contains("never closed"), "{:?}", f.problems);
        let f = apache_vhosts(
            Path::new("/a.conf"),
            "</VirtualHost>\n",
            Path::new("/"),
            &mut load,
        );
        assert!(f.problems[0].contains("without its opening"));
    }

    #[test]
    fn names_are_sanitized() {
        assert_eq!(sanitize_name("WWW.Example.com"), "www.example.com");
        assert_eq!(sanitize_name("*.example.com"), "wildcard.example.com");
        assert_eq!(sanitize_name("_"), "_");
        assert_eq!(sanitize_name("a b/c"), "a-b-c");
        assert_eq!(sanitize_name("..."), "cert");
    }

    #[test]
    fn yaml_entries() {
        let managed = Adopt {
            server_names: s(&["www.example.com", "api.example.com"]),
            sans: s(&["www.example.com", "api.example.com"]),
            internal: true,
            files: Adopted::Nginx {
                cert: "/t/www.crt".into(),
                key: "/t/www.key".into(),
            },
            reload: Some("web".into()),
            listen: vec![Listen {
                host: None,
                port: 8443,
                ssl: true,
            }],
            follow_symlinks: false,
        };
        let mut second = managed.clone();
        second.files = Adopted::Apache {
            cert: "/t/a.crt".into(),
            chain: "/t/a.chain".into(),
            key: "/t/a.key".into(),
        };
        second.reload = None;
        let watched = Adopt {
            server_names: s(&["*.foreign.example"]),
            internal: false,
            files: Adopted::Combined {
                cert: "/t/f.pem".into(),
            },
            ..managed.clone()
        };
        let y = certificates_yaml(&[managed, second, watched], &s(&["www.example.com-2"]));
        assert_eq!(
            y,
            r#"certificates:
  - name: "www.example.com"
    sans: ["www.example.com", "api.example.com"]
    files:
      layout: nginx
      cert: "/t/www.crt"
      key: "/t/www.key"
    reload: ["web"]
    verify:
      connect: "127.0.0.1:8443"
      server_name: "www.example.com"
  - name: "www.example.com-3"
    sans: ["www.example.com", "api.example.com"]
    files:
      layout: apache
      cert: "/t/a.crt"
      chain: "/t/a.chain"
      key: "/t/a.key"
    verify:
      connect: "127.0.0.1:8443"
      server_name: "www.example.com"
  - name: "wildcard.foreign.example"
    watch: "/t/f.pem"
"#
        );
        assert_eq!(certificates_yaml(&[], &[]), "certificates: []\n");
    }
}
