//! DNS-01 (RFC 8555 §8.4): the TXT record at `_acme-challenge.NAME`, written by a command
//! of the user's or by an RFC 2136 dynamic update signed with TSIG. A CNAME at that name
//! is followed and the record written at its target (a delegated zone keeps the real
//! zone's keys off the host). Before the CA is told to look, the record must be visible
//! at the zone's authoritative servers (or at `resolvers:`); afterwards, and when the order
//! fails, it is removed.
//!
//! Everything here is synchronous (UDP with TCP fallback, bounded waits): the ACME issuer
//! calls it before it asks the CA to validate, and when the order is over.

use crate::config::{Dns01Spec, DnsProvider};
use crate::fsread::read_regular;
use crate::process::{run, show_command};
use hickory_proto::dnssec::rdata::tsig::TsigAlgorithm;
use hickory_proto::dnssec::tsig::TSigner;
use hickory_proto::op::{update_message, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordSet, RecordType};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::str::FromStr;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// How long one DNS query or update may take (per try).
const QUERY_TIMEOUT: Duration = Duration::from_secs(3);
/// CNAMEs followed from `_acme-challenge.NAME` at most.
const MAX_CNAME_HOPS: usize = 8;
/// The TTL of the records written: short, they live for one validation.
const RECORD_TTL: u32 = 60;
/// The most read from a TSIG key file.
const KEY_FILE_MAX: u64 = 16 << 10;
/// TSIG's allowed clock difference (RFC 8945 recommends 300 s).
const TSIG_FUDGE: u16 = 300;

/// One record written for an order.
#[derive(Debug, Clone)]
struct Written {
    /// The name written (after CNAMEs), fully qualified with its trailing dot.
    fqdn: String,
    value: String,
    /// The identifier it proves (without `*.`).
    domain: String,
}

/// The DNS-01 records of one order: written by `present`, waited for by `wait_visible`,
/// removed by `cleanup` (or when dropped).
pub struct Dns01 {
    spec: Dns01Spec,
    /// Whose records: the issuer's name, for logs.
    issuer: String,
    written: Vec<Written>,
}

impl Dns01 {
    pub fn new(spec: &Dns01Spec, issuer: &str) -> Dns01 {
        Dns01 {
            spec: spec.clone(),
            issuer: issuer.to_string(),
            written: Vec::new(),
        }
    }

    /// Writes `value` at `_acme-challenge.DOMAIN` (or where its CNAME points); `domain`
    /// is the identifier without a wildcard's `*.`. Returns the name written.
    pub fn present(&mut self, domain: &str, value: &str) -> Result<String, String> {
        let challenge = format!("_acme-challenge.{}.", domain.trim_end_matches('.'));
        let fqdn = self.follow_cnames(&challenge)?;
        match &self.spec.provider {
            DnsProvider::Command(argv) => {
                command(argv, "present", &fqdn, value, domain, self.spec.timeout)?
            }
            DnsProvider::Rfc2136 { .. } => self.update(&fqdn, value, true)?,
        }
        if fqdn == challenge {
            tracing::info!(issuer = %self.issuer, record = %fqdn, "DNS-01 record written");
        } else {
            tracing::info!(issuer = %self.issuer, record = %fqdn, cname_from = %challenge, "DNS-01 record written at the CNAME's target");
        }
        self.written.push(Written {
            fqdn: fqdn.clone(),
            value: value.to_string(),
            domain: domain.to_string(),
        });
        Ok(fqdn)
    }

    /// Waits until every record written is visible where the CA will look, at most
    /// `propagation_timeout`.
    pub fn wait_visible(&self) -> Result<(), String> {
        if self.written.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let deadline = started + self.spec.propagation_timeout;
        let mut pause = Duration::from_millis(200);
        let mut targets: Vec<(String, Vec<SocketAddr>)> = Vec::new();
        for w in &self.written {
            if !targets.iter().any(|(n, _)| n == &w.fqdn) {
                targets.push((w.fqdn.clone(), self.servers_for(&w.fqdn)?));
            }
        }
        loop {
            let mut missing = Vec::new();
            for w in &self.written {
                let servers = &targets
                    .iter()
                    .find(|(n, _)| n == &w.fqdn)
                    .expect("target")
                    .1;
                for s in servers {
                    match txt_values(*s, &w.fqdn) {
                        Ok(values) if values.iter().any(|v| v == &w.value) => {}
                        Ok(_) => missing.push(format!("{} at {s}: not there yet", w.fqdn)),
                        Err(e) => missing.push(format!("{} at {s}: {e}", w.fqdn)),
                    }
                }
            }
            if missing.is_empty() {
                tracing::info!(issuer = %self.issuer, records = self.written.len(), waited_ms = started.elapsed().as_millis() as u64, "DNS-01 records visible");
                return Ok(());
            }
            if Instant::now() + pause > deadline {
                return Err(format!(
                    "DNS-01 record not visible within {:?} (`propagation_timeout`): {}",
                    self.spec.propagation_timeout,
                    missing.join("; ")
                ));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    /// Removes the records written; failures are logged (the record expires harmlessly).
    pub fn cleanup(&mut self) {
        for w in std::mem::take(&mut self.written) {
            let done = match &self.spec.provider {
                DnsProvider::Command(argv) => command(
                    argv,
                    "cleanup",
                    &w.fqdn,
                    &w.value,
                    &w.domain,
                    self.spec.timeout,
                ),
                DnsProvider::Rfc2136 { .. } => self.update(&w.fqdn, &w.value, false),
            };
            match done {
                Ok(()) => {
                    tracing::info!(issuer = %self.issuer, record = %w.fqdn, "DNS-01 record removed")
                }
                Err(e) => {
                    tracing::warn!(issuer = %self.issuer, record = %w.fqdn, error = %e, "could not remove the DNS-01 record; remove it by hand")
                }
            }
        }
    }

    /// Where lookups go: `resolvers:`, else the system's (`/etc/resolv.conf`).
    fn lookup_servers(&self) -> Result<Vec<SocketAddr>, String> {
        if !self.spec.resolvers.is_empty() {
            return resolve_all(&self.spec.resolvers);
        }
        let servers = system_resolvers();
        if servers.is_empty() {
            return Err("no resolver in /etc/resolv.conf; set `dns01.resolvers:`".into());
        }
        Ok(servers)
    }

    /// Follows CNAMEs from `name`; returns the last name (fully qualified).
    fn follow_cnames(&self, name: &str) -> Result<String, String> {
        let servers = self.lookup_servers()?;
        let mut current = name.to_string();
        for _ in 0..MAX_CNAME_HOPS {
            let answer = ask_any(&servers, &current, RecordType::CNAME)
                .map_err(|e| format!("cannot look up {current} (CNAME): {e}"))?;
            let next = answer.answers().iter().find_map(|r| match r.data() {
                RData::CNAME(c) if r.name().to_ascii().eq_ignore_ascii_case(&current) => {
                    Some(c.0.to_ascii())
                }
                _ => None,
            });
            match next {
                Some(n) => current = fqdn(&n),
                None => return Ok(current),
            }
        }
        Err(format!(
            "{name}: more than {MAX_CNAME_HOPS} CNAMEs in a row (a loop?)"
        ))
    }

    /// Where to wait for `fqdn`: `resolvers:`, else the zone's authoritative servers
    /// (its NS records, port 53); for RFC 2136, the primary updated as well.
    fn servers_for(&self, fqdn: &str) -> Result<Vec<SocketAddr>, String> {
        if !self.spec.resolvers.is_empty() {
            return resolve_all(&self.spec.resolvers);
        }
        let mut out = Vec::new();
        if let DnsProvider::Rfc2136 { server, .. } = &self.spec.provider {
            out.extend(resolve_all(std::slice::from_ref(server))?);
        }
        match self.authoritative(fqdn) {
            Ok(found) => {
                for a in found {
                    if !out.contains(&a) {
                        out.push(a);
                    }
                }
            }
            Err(e) if !out.is_empty() => {
                tracing::warn!(issuer = %self.issuer, record = %fqdn, error = %e, "cannot find the zone's name servers; waiting at the RFC 2136 server only");
            }
            Err(e) => {
                return Err(format!(
                    "cannot find the name servers of {fqdn}: {e}; set `dns01.resolvers:`"
                ))
            }
        }
        Ok(out)
    }

    /// The addresses of the name servers of `fqdn`'s zone, through the system resolvers.
    fn authoritative(&self, fqdn: &str) -> Result<Vec<SocketAddr>, String> {
        let servers = self.lookup_servers()?;
        let zone = zone_of(&servers, fqdn)?;
        let ns = ask_any(&servers, &zone, RecordType::NS)?;
        let mut out = Vec::new();
        for r in ns.answers() {
            let RData::NS(host) = r.data() else { continue };
            let host = host.0.to_ascii();
            for t in [RecordType::A, RecordType::AAAA] {
                if let Ok(m) = ask_any(&servers, &host, t) {
                    for a in m.answers() {
                        match a.data() {
                            RData::A(ip) => out.push(SocketAddr::new(ip.0.into(), 53)),
                            RData::AAAA(ip) => out.push(SocketAddr::new(ip.0.into(), 53)),
                            _ => {}
                        }
                    }
                }
            }
        }
        if out.is_empty() {
            return Err(format!("no address for the name servers of {zone}"));
        }
        Ok(out)
    }

    /// Adds (`add`) or deletes the TXT record by RFC 2136 update at the primary server.
    fn update(&self, fqdn: &str, value: &str, add: bool) -> Result<(), String> {
        let DnsProvider::Rfc2136 {
            server,
            key_name,
            key_algorithm,
            key_secret_file,
        } = &self.spec.provider
        else {
            unreachable!("update is for the rfc2136 provider");
        };
        let addrs = resolve_all(std::slice::from_ref(server))?;
        let addr = addrs[0];
        let signer = tsig_signer(key_name, key_algorithm, key_secret_file)?;
        let name =
            Name::from_ascii(fqdn).map_err(|e| format!("`{fqdn}` is not a DNS name: {e}"))?;
        let zone = zone_of(&[addr], fqdn)?;
        let zone = Name::from_ascii(&zone).map_err(|e| format!("zone `{zone}`: {e}"))?;
        let mut rrset = RecordSet::with_ttl(name.clone(), RecordType::TXT, RECORD_TTL);
        rrset.insert(
            Record::from_rdata(
                name,
                RECORD_TTL,
                RData::TXT(TXT::new(vec![value.to_string()])),
            ),
            0,
        );
        let mut msg = if add {
            update_message::append(rrset, zone.clone(), false, false)
        } else {
            update_message::delete_by_rdata(rrset, zone.clone(), false)
        };
        let now = time::OffsetDateTime::now_utc().unix_timestamp() as u32;
        msg.finalize(&signer, now)
            .map_err(|e| format!("cannot sign the update: {e}"))?;
        let answer = exchange_tcp(addr, &msg)?;
        match answer.response_code() {
            ResponseCode::NoError => Ok(()),
            ResponseCode::NotAuth => Err(format!(
                "{addr} refused the signed update of zone {zone} (NOTAUTH): the key `{key_name}` ({key_algorithm}) is unknown there, its secret differs, or the clocks are more than {TSIG_FUDGE} s apart"
            )),
            ResponseCode::Refused => Err(format!(
                "{addr} refused the update of zone {zone} (REFUSED): its `allow-update`/`update-policy` does not let the key `{key_name}` change {fqdn}"
            )),
            ResponseCode::NotZone => Err(format!(
                "{addr}: {fqdn} is not in zone {zone} (NOTZONE)"
            )),
            other => Err(format!("{addr} answered the update of {fqdn} with {other}")),
        }
    }
}

impl Drop for Dns01 {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Runs the `command` provider for one record.
fn command(
    argv: &[String],
    action: &str,
    fqdn: &str,
    value: &str,
    domain: &str,
    timeout: Duration,
) -> Result<(), String> {
    let env = [
        ("CERTKEEPER_DNS_ACTION", action),
        ("CERTKEEPER_DNS_NAME", fqdn),
        ("CERTKEEPER_DNS_VALUE", value),
        ("CERTKEEPER_DNS_DOMAIN", domain),
    ];
    let done = run(argv, &env, timeout).map_err(|e| format!("DNS-01 {action} of {fqdn}: {e}"))?;
    if done.status.success() {
        Ok(())
    } else {
        Err(format!(
            "DNS-01 {action} of {fqdn}: `{}` failed ({}): {}",
            show_command(argv),
            done.status,
            done.output
        ))
    }
}

/// A TSIG signer from the configured key (the secret is base64, alone or in a BIND `key`
/// clause as `tsig-keygen` writes it).
fn tsig_signer(name: &str, algorithm: &str, file: &std::path::Path) -> Result<TSigner, String> {
    let bytes = Zeroizing::new(
        read_regular(file, KEY_FILE_MAX).map_err(|e| format!("cannot read key_secret_file {e}"))?,
    );
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| format!("key_secret_file {}: not text", file.display()))?;
    let secret = match text.find("secret") {
        Some(at) => text[at..].split('"').nth(1).ok_or_else(|| {
            format!(
                "key_secret_file {}: `secret` without a quoted value",
                file.display()
            )
        })?,
        None => text.trim(),
    };
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim())
        .map_err(|_| {
            format!(
                "key_secret_file {}: the secret is not base64 (give the `secret` of `tsig-keygen`'s output, or the whole clause)",
                file.display()
            )
        })?;
    let algorithm = match algorithm {
        "hmac-sha256" => TsigAlgorithm::HmacSha256,
        "hmac-sha384" => TsigAlgorithm::HmacSha384,
        "hmac-sha512" => TsigAlgorithm::HmacSha512,
        other => return Err(format!("TSIG algorithm `{other}` is not supported")),
    };
    let name = Name::from_ascii(name).map_err(|e| format!("key_name `{name}`: {e}"))?;
    TSigner::new(key, algorithm, name, TSIG_FUDGE).map_err(|e| format!("TSIG key: {e}"))
}

/// `name` with its trailing dot.
fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

/// The zone `name` is in: the owner of the SOA record that the server returns for it
/// (in the answer at an apex, in the authority section below one).
fn zone_of(servers: &[SocketAddr], name: &str) -> Result<String, String> {
    let answer = ask_any(servers, name, RecordType::SOA)?;
    answer
        .answers()
        .iter()
        .chain(answer.name_servers())
        .find(|r| r.record_type() == RecordType::SOA)
        .map(|r| fqdn(&r.name().to_ascii()))
        .ok_or_else(|| {
            format!(
                "no zone found for {name} (the server answered {} without a SOA record)",
                answer.response_code()
            )
        })
}

/// The TXT strings at `name` on `server`.
fn txt_values(server: SocketAddr, name: &str) -> Result<Vec<String>, String> {
    let answer = ask(server, name, RecordType::TXT)?;
    Ok(answer
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::TXT(t) => Some(
                t.txt_data()
                    .iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect::<String>(),
            ),
            _ => None,
        })
        .collect())
}

/// The first answer of any of `servers`.
fn ask_any(servers: &[SocketAddr], name: &str, t: RecordType) -> Result<Message, String> {
    let mut errors = Vec::new();
    for s in servers {
        match ask(*s, name, t) {
            Ok(m) => return Ok(m),
            Err(e) => errors.push(format!("{s}: {e}")),
        }
    }
    Err(errors.join("; "))
}

/// One query: UDP, then TCP when the answer was truncated. SERVFAIL and REFUSED are errors.
fn ask(server: SocketAddr, name: &str, t: RecordType) -> Result<Message, String> {
    let qname = Name::from_ascii(fqdn(name)).map_err(|e| format!("`{name}`: {e}"))?;
    let mut msg = Message::new();
    msg.set_id(rand_id())
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true);
    let mut q = Query::query(qname, t);
    q.set_query_class(DNSClass::IN);
    msg.add_query(q);
    let mut answer = exchange_udp(server, &msg)?;
    if answer.truncated() {
        answer = exchange_tcp(server, &msg)?;
    }
    match answer.response_code() {
        ResponseCode::NoError | ResponseCode::NXDomain => Ok(answer),
        other => Err(format!("{other} for {name} {t}")),
    }
}

fn rand_id() -> u16 {
    let mut b = [0u8; 2];
    // getrandom through the crypto library; an id only needs to be unpredictable.
    aws_lc_rs::rand::fill(&mut b).expect("random bytes");
    u16::from_be_bytes(b)
}

fn exchange_udp(server: SocketAddr, msg: &Message) -> Result<Message, String> {
    let bytes = msg.to_vec().map_err(|e| e.to_string())?;
    let local: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().expect("address")
    } else {
        "[::]:0".parse().expect("address")
    };
    let sock = UdpSocket::bind(local).map_err(|e| e.to_string())?;
    sock.connect(server).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(QUERY_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 4096];
    for _try in 0..2 {
        sock.send(&bytes).map_err(|e| e.to_string())?;
        let started = Instant::now();
        while started.elapsed() < QUERY_TIMEOUT {
            let n = match sock.recv(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) => return Err(e.to_string()),
            };
            if let Ok(answer) = Message::from_vec(&buf[..n]) {
                if answer.id() == msg.id() && answer.message_type() == MessageType::Response {
                    return Ok(answer);
                }
            }
        }
    }
    Err(format!("no answer within {:?}", QUERY_TIMEOUT * 2))
}

fn exchange_tcp(server: SocketAddr, msg: &Message) -> Result<Message, String> {
    let bytes = msg.to_vec().map_err(|e| e.to_string())?;
    let fail = |e: std::io::Error| format!("{server} (TCP): {e}");
    let mut stream = TcpStream::connect_timeout(&server, QUERY_TIMEOUT).map_err(fail)?;
    stream.set_read_timeout(Some(QUERY_TIMEOUT)).map_err(fail)?;
    stream
        .set_write_timeout(Some(QUERY_TIMEOUT))
        .map_err(fail)?;
    let mut out = Vec::with_capacity(bytes.len() + 2);
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(&bytes);
    stream.write_all(&out).map_err(fail)?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).map_err(fail)?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut buf).map_err(fail)?;
    let answer = Message::from_vec(&buf).map_err(|e| format!("{server} (TCP): {e}"))?;
    if answer.id() != msg.id() {
        return Err(format!("{server} (TCP): an answer to another query"));
    }
    Ok(answer)
}

/// `HOST:PORT` strings to addresses (a host name through the system's resolver).
fn resolve_all(servers: &[String]) -> Result<Vec<SocketAddr>, String> {
    let mut out = Vec::new();
    for s in servers {
        let found = s
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve `{s}`: {e}"))?;
        out.extend(found);
    }
    if out.is_empty() {
        return Err(format!("no address for {}", servers.join(", ")));
    }
    Ok(out)
}

/// The `nameserver` lines of `/etc/resolv.conf`, port 53.
fn system_resolvers() -> Vec<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    parse_resolv_conf(&text)
}

fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| {
            let ip = rest.trim().split('%').next()?;
            std::net::IpAddr::from_str(ip).ok()
        })
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers_on_port_53() {
        let found = parse_resolv_conf(
            "# comment\nsearch example.com\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nnameserver  2001:db8::53\noptions ndots:2\n",
        );
        assert_eq!(
            found,
            vec![
                "192.0.2.53:53".parse().unwrap(),
                "[fe80::1]:53".parse().unwrap(),
                "[2001:db8::53]:53".parse().unwrap()
            ]
        );
    }

    #[test]
    fn a_tsig_key_is_read_alone_or_from_a_bind_key_clause() {
        let dir = tempfile::tempdir().unwrap();
        let clause = dir.path().join("clause.key");
        std::fs::write(
            &clause,
            "key \"certkeeper\" {\n\talgorithm hmac-sha256;\n\tsecret \"c2VjcmV0LXNlY3JldC1zZWNyZXQ=\";\n};\n",
        )
        .unwrap();
        let alone = dir.path().join("alone.key");
        std::fs::write(&alone, "c2VjcmV0LXNlY3JldC1zZWNyZXQ=\n").unwrap();
        for f in [&clause, &alone] {
            let s = tsig_signer("certkeeper", "hmac-sha256", f).unwrap();
            assert_eq!(s.key(), b"secret-secret-secret");
            assert_eq!(s.signer_name().to_ascii(), "certkeeper.");
        }
        std::fs::write(&alone, "not base64!\n").unwrap();
        let e = tsig_signer("certkeeper", "hmac-sha256", &alone)
            .err()
            .unwrap();
        assert!(e.contains("not base64"), "{e}");
    }
}
