//! Prometheus metrics of the daemon, served as text at `/metrics` on `metrics.listen`:
//! the classic text format (0.0.4) by default, OpenMetrics 1.0 when the scraper asks
//! for it (`Accept: application/openmetrics-text`). The HTTP side is deliberately tiny:
//! one GET route, one response, connection closed.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabel {
    pub server: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CaLabel {
    /// `root` or `intermediate`.
    pub ca: String,
    /// Which generation of it (1 for the first; each rotation adds one).
    pub generation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabel {
    pub name: String,
    /// The `verify.connect` address.
    pub target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CaKindLabel {
    /// `root` or `intermediate`.
    pub ca: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabel {
    version: String,
}

/// What the series of one certificate say. A value that is absent (`None`) has no
/// series: a `not_after` before anything was found in place, a renewal count before
/// the first attempt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CertRow {
    pub not_after: Option<i64>,
    pub next_renewal: Option<i64>,
    pub last_success: Option<i64>,
    /// Managed certificates only (watched ones have no renewals).
    pub failing: Option<bool>,
    pub renewal_failures: Option<u64>,
    /// Renewal attempts by result.
    pub succeeded: u64,
    pub failed: u64,
}

/// A [`CertRow`] as kept: 40 bytes where the row takes 88 (counters saturate at 2^32).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Packed {
    not_after: i64,
    next_renewal: i64,
    last_success: i64,
    renewal_failures: u32,
    succeeded: u32,
    failed: u32,
    /// Which of the values are there, and `failing`.
    flags: u8,
}

const HAS_NOT_AFTER: u8 = 1;
const HAS_NEXT_RENEWAL: u8 = 2;
const HAS_LAST_SUCCESS: u8 = 4;
const HAS_FAILING: u8 = 8;
const FAILING: u8 = 16;
const HAS_RENEWAL_FAILURES: u8 = 32;

impl Packed {
    fn of(r: &CertRow) -> Packed {
        let flag = |on: bool, f: u8| if on { f } else { 0 };
        let small = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        Packed {
            not_after: r.not_after.unwrap_or(0),
            next_renewal: r.next_renewal.unwrap_or(0),
            last_success: r.last_success.unwrap_or(0),
            renewal_failures: small(r.renewal_failures.unwrap_or(0)),
            succeeded: small(r.succeeded),
            failed: small(r.failed),
            flags: flag(r.not_after.is_some(), HAS_NOT_AFTER)
                | flag(r.next_renewal.is_some(), HAS_NEXT_RENEWAL)
                | flag(r.last_success.is_some(), HAS_LAST_SUCCESS)
                | flag(r.failing.is_some(), HAS_FAILING)
                | flag(r.failing == Some(true), FAILING)
                | flag(r.renewal_failures.is_some(), HAS_RENEWAL_FAILURES),
        }
    }

    /// The row after `change`.
    fn changed(self, change: impl FnOnce(&mut CertRow)) -> CertRow {
        let mut row = self.row();
        change(&mut row);
        row
    }

    fn row(&self) -> CertRow {
        let has = |f: u8| self.flags & f != 0;
        CertRow {
            not_after: has(HAS_NOT_AFTER).then_some(self.not_after),
            next_renewal: has(HAS_NEXT_RENEWAL).then_some(self.next_renewal),
            last_success: has(HAS_LAST_SUCCESS).then_some(self.last_success),
            failing: has(HAS_FAILING).then_some(has(FAILING)),
            renewal_failures: has(HAS_RENEWAL_FAILURES).then_some(u64::from(self.renewal_failures)),
            succeeded: u64::from(self.succeeded),
            failed: u64::from(self.failed),
        }
    }
}

/// The per-certificate series, one row per name, encoded at each scrape. A family per
/// series kept a label string, a hash bucket and an allocated atomic for every
/// certificate in each of six families: about 5 MB with 10,000 certificates, where
/// these rows need under one.
#[derive(Debug, Default)]
struct CertTable(std::sync::Mutex<BTreeMap<Box<str>, Packed>>);

impl CertTable {
    fn rows(&self) -> std::sync::MutexGuard<'_, BTreeMap<Box<str>, Packed>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One sample of a certificate's series: a gauge, or a counter with its `result`
/// label (the renewals by result).
enum Sample {
    Gauge(i64),
    Counter(Option<&'static str>, u64),
}

/// A family of [`CertTable`]: name, help, type, and the samples a row has in it.
type Series = (
    &'static str,
    &'static str,
    MetricType,
    fn(&CertRow) -> [Option<Sample>; 2],
);

/// The families of [`CertTable`], in the order they are encoded.
const CERT_SERIES: [Series; 6] = [
    (
        "certificate_failing",
        "1 while the last attempt to renew or install the certificate failed (also one never installed), else 0",
        MetricType::Gauge,
        |r| [r.failing.map(|f| Sample::Gauge(i64::from(f))), None],
    ),
    (
        "renewal_failures",
        "Failed attempts to renew or install the certificate",
        MetricType::Counter,
        |r| [r.renewal_failures.map(|n| Sample::Counter(None, n)), None],
    ),
    (
        "certificate_not_after_seconds",
        "notAfter of the certificate in place (Unix time), managed and watched",
        MetricType::Gauge,
        |r| [r.not_after.map(Sample::Gauge), None],
    ),
    (
        "certificate_next_renewal_seconds",
        "When certkeeper will next try to renew the certificate (Unix time)",
        MetricType::Gauge,
        |r| [r.next_renewal.map(Sample::Gauge), None],
    ),
    (
        "renewals",
        "Renewal attempts by result",
        MetricType::Counter,
        |r| {
            [
                (r.succeeded > 0).then_some(Sample::Counter(Some("success"), r.succeeded)),
                (r.failed > 0).then_some(Sample::Counter(Some("failure"), r.failed)),
            ]
        },
    ),
    (
        "last_success_timestamp_seconds",
        "When the certificate was last found valid or renewed (Unix time)",
        MetricType::Gauge,
        |r| [r.last_success.map(Sample::Gauge), None],
    ),
];

/// What a declared certificate has from its first moment.
fn declared(row: &mut CertRow) {
    row.failing.get_or_insert(false);
    row.renewal_failures.get_or_insert(0);
}

impl Collector for CertTable {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rows = self.rows();
        for (name, help, kind, samples) in CERT_SERIES {
            // As a family with no series: nothing at all.
            if !rows
                .values()
                .any(|r| samples(&r.row()).iter().any(Option::is_some))
            {
                continue;
            }
            // The registry ends every help text with a period; so does this.
            let help = format!("{help}.");
            let mut family = encoder.encode_descriptor(name, &help, None, kind)?;
            for (cert, row) in rows.iter() {
                for sample in samples(&row.row()).into_iter().flatten() {
                    match sample {
                        Sample::Gauge(v) => ConstGauge::new(v)
                            .encode(family.encode_family(&[("name", &**cert)])?)?,
                        Sample::Counter(None, n) => ConstCounter::new(n)
                            .encode(family.encode_family(&[("name", &**cert)])?)?,
                        Sample::Counter(Some(result), n) => ConstCounter::new(n).encode(
                            family.encode_family(&[("name", &**cert), ("result", result)])?,
                        )?,
                    }
                }
            }
        }
        Ok(())
    }
}

pub struct Metrics {
    registry: Registry,
    certs: Arc<CertTable>,
    pub reloads: Family<ReloadLabel, Counter>,
    pub ca_not_after: Family<CaLabel, Gauge>,
    pub ca_rotation_blocked: Family<CaKindLabel, Gauge>,
    pub served_matches: Family<TargetLabel, Gauge>,
    pub served_verified: Family<TargetLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("certkeeper");
        let certs = Arc::new(CertTable::default());
        let reloads = Family::<ReloadLabel, Counter>::default();
        let ca_not_after = Family::<CaLabel, Gauge>::default();
        let ca_rotation_blocked = Family::<CaKindLabel, Gauge>::default();
        let served_matches = Family::<TargetLabel, Gauge>::default();
        let served_verified = Family::<TargetLabel, Gauge>::default();
        registry.register_collector(Box::new(certs.clone()));
        registry.register("reloads", "Server reloads by result", reloads.clone());
        registry.register(
            "ca_not_after_seconds",
            "notAfter of the internal CA's roots and intermediates, every generation it keeps (Unix time)",
            ca_not_after.clone(),
        );
        registry.register(
            "served_matches",
            "1 when the verify target last served the certificate on disk, 0 when it served something else (drift)",
            served_matches.clone(),
        );
        registry.register(
            "served_verified",
            "1 when a strict client last accepted what the verify target served (complete chain in order, trusted roots, name, dates, key), else 0",
            served_verified.clone(),
        );
        registry.register(
            "ca_rotation_blocked",
            "1 while a CA certificate is due for replacement and cannot be replaced here (root key offline), else 0",
            ca_rotation_blocked.clone(),
        );
        registry.register(
            "build",
            "certkeeper build information",
            Info::new(BuildLabel {
                version: env!("CARGO_PKG_VERSION").to_string(),
            }),
        );
        Metrics {
            registry,
            certs,
            reloads,
            ca_not_after,
            ca_rotation_blocked,
            served_matches,
            served_verified,
        }
    }
}

impl Metrics {
    /// The metrics in OpenMetrics 1.0 text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("text encoding");
        out
    }

    /// The metrics in Prometheus' classic text format 0.0.4 (what `promtool check
    /// metrics` reads): see [`classic`].
    pub fn render_classic(&self) -> String {
        classic(&self.render())
    }

    /// Creates the series of a managed certificate with their first values, so that
    /// alerts see it from its first moment (also when it is never installed).
    pub fn declare(&self, name: &str) {
        self.declare_all(std::iter::once(name));
    }

    /// [`Metrics::declare`] for many certificates at once (the table is then rebuilt
    /// whole, with full nodes, rather than grown one name at a time).
    pub fn declare_all<'a>(&self, names: impl Iterator<Item = &'a str>) {
        let mut rows = self.certs.rows();
        let mut new: Vec<(Box<str>, Packed)> = Vec::new();
        for name in names {
            match rows.get_mut(name) {
                Some(p) => *p = Packed::of(&p.changed(declared)),
                None => new.push((
                    name.into(),
                    Packed::of(&Packed::default().changed(declared)),
                )),
            }
        }
        if !new.is_empty() {
            let old = std::mem::take(&mut *rows);
            *rows = old.into_iter().chain(new).collect();
        }
    }

    /// Changes the series of the certificate `name` (made when it has none); a row left
    /// with no series is dropped.
    pub fn update(&self, name: &str, change: impl FnOnce(&mut CertRow)) {
        let mut rows = self.certs.rows();
        let row = rows.get(name).copied().unwrap_or_default().changed(change);
        if row == CertRow::default() {
            rows.remove(name);
        } else {
            match rows.get_mut(name) {
                Some(p) => *p = Packed::of(&row),
                None => {
                    rows.insert(name.into(), Packed::of(&row));
                }
            }
        }
    }

    /// Forgets series of certificates that are no longer configured.
    pub fn forget(&self, name: &str) {
        self.certs.rows().remove(name);
    }
}

/// OpenMetrics text turned into the classic format: counters and info metrics are
/// named with their suffix in `# HELP`/`# TYPE` (`x_total` counter, `x_info` gauge),
/// and the OpenMetrics-only lines (`# EOF`, `# UNIT`) are dropped.
pub fn classic(openmetrics: &str) -> String {
    let mut suffix: std::collections::HashMap<&str, (&str, &str)> = Default::default();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            match rest.split_once(' ') {
                Some((name, "counter")) => {
                    suffix.insert(name, ("_total", "counter"));
                }
                Some((name, "info")) => {
                    suffix.insert(name, ("_info", "gauge"));
                }
                _ => {}
            }
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta.and_then(|(p, rest)| {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            suffix
                .get(name)
                .map(|(sfx, kind)| (p, name, text, *sfx, *kind))
        }) {
            Some(("# TYPE ", name, _, sfx, kind)) => {
                out.push_str(&format!("# TYPE {name}{sfx} {kind}\n"))
            }
            Some((p, name, text, sfx, _)) => out.push_str(&format!("{p}{name}{sfx} {text}\n")),
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// Whether a request asks for OpenMetrics (`Accept: application/openmetrics-text`).
fn wants_openmetrics(head: &str) -> bool {
    head.lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("accept")
                && v.to_ascii_lowercase()
                    .contains("application/openmetrics-text")
        })
    })
}

/// Serves `/metrics` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            let mut n = 0;
            // Read the request head, bounded in size and time.
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while n < buf.len() {
                    match stream.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => n += k,
                    }
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            })
            .await;
            if read.is_err() {
                return;
            }
            let head = String::from_utf8_lossy(&buf[..n]);
            let (status, ctype, body) = match head.split_whitespace().take(2).collect::<Vec<_>>()[..]
            {
                ["GET", "/metrics"] if wants_openmetrics(&head) => (
                    "200 OK",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    metrics.render(),
                ),
                ["GET", "/metrics"] => (
                    "200 OK",
                    "text/plain; version=0.0.4; charset=utf-8",
                    metrics.render_classic(),
                ),
                ["GET", _] => ("404 Not Found", "text/plain", "see /metrics\n".to_string()),
                _ => (
                    "405 Method Not Allowed",
                    "text/plain",
                    "GET only\n".to_string(),
                ),
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(resp.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_classic_format_names_counters_and_info_with_their_suffix() {
        let m = Metrics::default();
        m.declare("www");
        m.update("www", |row| row.succeeded += 1);
        let open = m.render();
        assert!(open.ends_with("# EOF\n"), "{open}");
        assert!(open.contains("# TYPE certkeeper_build info"), "{open}");
        let text = m.render_classic();
        assert!(!text.contains("# EOF"), "{text}");
        assert!(
            text.contains("# TYPE certkeeper_renewals_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP certkeeper_renewals_total Renewal attempts by result."),
            "{text}"
        );
        assert!(
            text.contains("certkeeper_renewals_total{name=\"www\",result=\"success\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE certkeeper_build_info gauge\n"),
            "{text}"
        );
        assert!(
            text.contains("certkeeper_renewal_failures_total{name=\"www\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("certkeeper_certificate_failing{name=\"www\"} 0\n"),
            "{text}"
        );
        assert!(wants_openmetrics("GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n"));
        assert!(!wants_openmetrics(
            "GET /metrics HTTP/1.1\r\nAccept: text/plain\r\n"
        ));
    }

    #[test]
    fn certificate_series_come_and_go_with_their_values() {
        let m = Metrics::default();
        m.declare("b");
        m.declare("a");
        m.update("w", |row| row.not_after = Some(1_900_000_000));
        m.update("a", |row| {
            row.failing = Some(true);
            *row.renewal_failures.get_or_insert(0) += 1;
            row.failed += 1;
        });
        let text = m.render_classic();
        // By name, whatever order they were made in.
        let a = text.find("certkeeper_certificate_failing{name=\"a\"} 1\n");
        let b = text.find("certkeeper_certificate_failing{name=\"b\"} 0\n");
        assert!(a.is_some() && b.is_some() && a < b, "{text}");
        assert!(text.contains("certkeeper_renewals_total{name=\"a\",result=\"failure\"} 1\n"));
        assert!(!text.contains("result=\"success\""), "{text}");
        assert!(text.contains("certkeeper_certificate_not_after_seconds{name=\"w\"} 1900000000\n"));
        // A watched certificate has no renewal series; its row goes with its last value.
        assert!(
            !text.contains("certkeeper_certificate_failing{name=\"w\"}"),
            "{text}"
        );
        m.update("w", |row| row.not_after = None);
        m.forget("b");
        let text = m.render_classic();
        assert!(!text.contains("name=\"w\""), "{text}");
        assert!(!text.contains("name=\"b\""), "{text}");
        assert!(
            !text.contains("certkeeper_certificate_not_after_seconds"),
            "{text}"
        );
        assert_eq!(m.certs.rows().len(), 1);
        // Declaring many at once keeps what the known ones have.
        m.declare_all(["c", "a"].into_iter());
        let text = m.render_classic();
        assert!(
            text.contains("certkeeper_certificate_failing{name=\"a\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("certkeeper_certificate_failing{name=\"c\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("certkeeper_renewal_failures_total{name=\"a\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn a_row_is_kept_as_it_was_given() {
        let full = CertRow {
            not_after: Some(-5),
            next_renewal: Some(0),
            last_success: Some(i64::MAX),
            failing: Some(true),
            renewal_failures: Some(7),
            succeeded: 3,
            failed: 9,
        };
        assert_eq!(Packed::of(&full).row(), full);
        let none = CertRow::default();
        assert_eq!(Packed::of(&none).row(), none);
        let off = CertRow {
            failing: Some(false),
            renewal_failures: Some(0),
            ..none
        };
        assert_eq!(Packed::of(&off).row(), off);
        assert_eq!(std::mem::size_of::<Packed>(), 40);
    }
}
