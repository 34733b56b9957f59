//! Checking what a server really serves: a TLS handshake to `host:port` with a given
//! SNI name, returning the end-entity certificate the server presented, and waiting
//! until that is the certificate we installed. Blocking, std networking only. It
//! compares bytes; it never decides trust and never reads or writes files.

use crate::x509::CertInfo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};
use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot resolve `{connect}`: {source}; check verify.connect (host:port)")]
    Resolve {
        connect: String,
        #[source]
        source: io::Error,
    },
    #[error("`{server_name}` cannot be sent as a TLS server name (SNI); check verify.server_name")]
    BadServerName { server_name: String },
    #[error("cannot connect to {addr} ({connect}): {source}; is the server running and listening there?")]
    Connect {
        connect: String,
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("no answer from {connect} within {}ms; is the server overloaded, or is verify.connect a port that does not speak TLS?", after.as_millis())]
    Timeout { connect: String, after: Duration },
    #[error("TLS handshake with {connect} (SNI {server_name}) failed: {reason}; check the server's TLS settings and its error log")]
    Handshake {
        connect: String,
        server_name: String,
        reason: String,
    },
    #[error("{connect} (SNI {server_name}) refused the client certificate `{client}`: {alert}; check that the server trusts certkeeper's CA for clients (ssl_client_certificate / SSLCACertificateFile) and that the certificate is valid")]
    ClientRefused {
        connect: String,
        server_name: String,
        client: String,
        alert: String,
        /// SHA-256 of the leaf the refusing server presented, when it did.
        leaf: Option<String>,
    },
    #[error("{connect} (SNI {server_name}) completed the handshake without presenting a certificate; check the server's TLS settings")]
    NoCertificate {
        connect: String,
        server_name: String,
    },
    #[error("{connect} (SNI {server_name}) still serves {found} after {}ms, not the installed certificate ({expected}); check that the server's certificate setting points at the installed file and that the reload took effect", waited.as_millis())]
    NotServed {
        connect: String,
        server_name: String,
        waited: Duration,
        /// Serial and fingerprint of the certificate we wanted to see.
        expected: String,
        /// What the server presented instead.
        found: Box<Found>,
    },
    #[error("could not get a certificate from {connect} (SNI {server_name}) within {}ms to compare with the installed one ({expected}); last attempt: {last}", waited.as_millis())]
    Unreachable {
        connect: String,
        server_name: String,
        waited: Duration,
        expected: String,
        #[source]
        last: Box<VerifyError>,
    },
}

/// What a server presented instead of the certificate waited for.
#[derive(Debug)]
pub struct Found {
    /// Serial, fingerprint and subject of its leaf.
    pub served: String,
    /// What it presented (DER, leaf first), for a caller to judge.
    pub chain: Vec<Vec<u8>>,
    /// What clients refuse in it, as " (clients refuse it: …)", when a caller judged.
    pub refused: String,
}

impl std::fmt::Display for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.served, self.refused)
    }
}

/// Connects to `connect` ("host:port"), performs a TLS handshake with SNI
/// `server_name` and returns the DER of the end-entity certificate the server presented.
/// `timeout` bounds the TCP connect and every read and write.
pub fn served_leaf(
    connect: &str,
    server_name: &str,
    timeout: Duration,
) -> Result<Vec<u8>, VerifyError> {
    served_chain(connect, server_name, timeout, None).map(|mut s| s.chain.swap_remove(0))
}

/// What a server presented in one handshake.
#[derive(Debug, Clone, Default)]
pub struct Served {
    /// Every certificate (DER), leaf first, in the order sent.
    pub chain: Vec<Vec<u8>>,
    /// Whether the server asked for a client certificate (mutual TLS).
    pub asked_for_client_cert: bool,
    /// What was negotiated: protocol (`TLSv1.3`), cipher suite
    /// (`TLS13_AES_256_GCM_SHA384`) and key exchange group (`X25519`).
    pub protocol: Option<String>,
    pub cipher_suite: Option<String>,
    pub key_exchange: Option<String>,
}

/// A client certificate presented in handshakes (`verify.client_cert`): its name in
/// the configuration, leaf and chain, and key.
#[derive(Debug)]
pub struct Identity {
    pub name: String,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// [`served_leaf`], with the certificates the server sent after the leaf: every
/// certificate presented, in the order it was sent. With `client`, its certificate is
/// presented when the server asks for one, and a server that refuses it after the
/// handshake (TLS 1.3 sends that verdict in its first flight after it) is an error.
pub fn served_chain(
    connect: &str,
    server_name: &str,
    timeout: Duration,
    client: Option<&Identity>,
) -> Result<Served, VerifyError> {
    let name =
        ServerName::try_from(server_name.to_string()).map_err(|_| VerifyError::BadServerName {
            server_name: server_name.into(),
        })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let recorder = Arc::new(LeafRecorder {
        algorithms: provider.signature_verification_algorithms,
        leaf: Mutex::new(None),
    });
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| handshake_error(connect, server_name, e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone());
    let asked = Arc::new(Asked {
        key: match client {
            Some(id) => Some(Arc::new(
                CertifiedKey::from_der(id.chain.clone(), id.key.clone_key(), &provider).map_err(
                    |e| {
                        handshake_error(
                            connect,
                            server_name,
                            format!("the client certificate `{}` cannot be used: {e}", id.name),
                        )
                    },
                )?,
            )),
            None => None,
        },
        asked: Mutex::new(false),
    });
    let mut config = builder.with_client_cert_resolver(asked.clone());
    // A resumed session would skip the certificate: always a full handshake.
    config.resumption = rustls::client::Resumption::disabled();
    let mut conn = ClientConnection::new(Arc::new(config), name)
        .map_err(|e| handshake_error(connect, server_name, e.to_string()))?;

    let mut sock = tcp_connect(connect, timeout)?;
    let io_err = |e: io::Error| {
        if matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            VerifyError::Timeout {
                connect: connect.into(),
                after: timeout,
            }
        } else {
            handshake_error(connect, server_name, e.to_string())
        }
    };
    let was_asked = || *asked.asked.lock().unwrap_or_else(|e| e.into_inner());
    let refused = |alert: String| VerifyError::ClientRefused {
        connect: connect.into(),
        server_name: server_name.into(),
        client: client.map(|c| c.name.clone()).unwrap_or_default(),
        alert,
        leaf: recorder
            .leaf
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(|chain| chain.first())
            .map(|der| crate::encoding::sha256_hex(der)),
    };
    while conn.is_handshaking() {
        let (read, written) = match conn.complete_io(&mut sock) {
            Ok(rw) => rw,
            Err(e) if client.is_some() && was_asked() => return Err(refused(e.to_string())),
            Err(e) => return Err(io_err(e)),
        };
        if read == 0 && written == 0 && conn.is_handshaking() {
            return Err(handshake_error(
                connect,
                server_name,
                "the server closed the connection".into(),
            ));
        }
    }
    // A TLS 1.3 server judges the client certificate after the client's last handshake
    // message: its next flight is session tickets (accepted) or an alert (refused).
    if client.is_some() && was_asked() {
        let wait = timeout.min(Duration::from_secs(2));
        let _ = sock.set_read_timeout(Some(wait));
        match conn.read_tls(&mut sock) {
            Ok(_) => {
                if let Err(e) = conn.process_new_packets() {
                    return Err(refused(e.to_string()));
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(refused(e.to_string())),
        }
    }
    let protocol = conn.protocol_version().map(|v| {
        v.as_str()
            .map(|s| s.replace('_', "."))
            .unwrap_or_else(|| format!("{v:?}"))
    });
    let cipher_suite = conn.negotiated_cipher_suite().map(|s| {
        let s = s.suite();
        s.as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("{s:?}"))
    });
    let key_exchange = conn.negotiated_key_exchange_group().map(|g| {
        let g = g.name();
        g.as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("{g:?}"))
    });
    // Be polite; the answer does not matter.
    conn.send_close_notify();
    let _ = conn.complete_io(&mut sock);

    let chain = recorder
        .leaf
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    match chain {
        Some(chain) => Ok(Served {
            chain,
            asked_for_client_cert: was_asked(),
            protocol,
            cipher_suite,
            key_exchange,
        }),
        None => Err(VerifyError::NoCertificate {
            connect: connect.into(),
            server_name: server_name.into(),
        }),
    }
}

/// Presents the client certificate, if there is one, when the server asks, and
/// remembers that it asked.
#[derive(Debug)]
struct Asked {
    key: Option<Arc<CertifiedKey>>,
    asked: Mutex<bool>,
}

impl ResolvesClientCert for Asked {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        *self.asked.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.key.clone()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Polls `served_chain` until the server presents `expected_der` as its leaf or
/// `deadline` (a duration from now) has passed, and returns everything it presented.
/// A reloading server may answer with the old certificate for a moment, so one look is
/// never enough.
pub fn wait_for_leaf(
    connect: &str,
    server_name: &str,
    expected_der: &[u8],
    deadline: Duration,
) -> Result<Served, VerifyError> {
    let fingerprint = crate::encoding::sha256_hex(expected_der);
    wait_served(
        connect,
        server_name,
        &fingerprint,
        describe(expected_der),
        deadline,
        None,
    )
}

/// [`wait_for_leaf`] for the leaf whose SHA-256 fingerprint (hex) is `fingerprint`,
/// presenting `client` when the server asks for a client certificate.
pub fn wait_for_fingerprint(
    connect: &str,
    server_name: &str,
    fingerprint: &str,
    deadline: Duration,
    client: Option<&Identity>,
) -> Result<Served, VerifyError> {
    let expected = format!("SHA-256 {fingerprint}");
    wait_served(
        connect,
        server_name,
        fingerprint,
        expected,
        deadline,
        client,
    )
}

fn wait_served(
    connect: &str,
    server_name: &str,
    fingerprint: &str,
    expected: String,
    deadline: Duration,
    client: Option<&Identity>,
) -> Result<Served, VerifyError> {
    let started = Instant::now();
    let end = started + deadline;
    // Short at first: nginx usually switches within tens of milliseconds.
    let mut pause = Duration::from_millis(10);
    loop {
        let remaining = end.saturating_duration_since(Instant::now());
        let attempt = remaining.clamp(Duration::from_millis(200), Duration::from_secs(5));
        let last = match served_chain(connect, server_name, attempt, client) {
            Ok(s) if crate::encoding::sha256_hex(&s.chain[0]) == fingerprint => return Ok(s),
            Ok(s) => Ok(s.chain),
            // The new certificate, and the client one refused: waiting changes nothing.
            // A refusal with another leaf may come from a worker of the server's old
            // configuration, still answering for a moment after a reload: look again.
            Err(e @ VerifyError::ClientRefused { .. }) if matches!(&e, VerifyError::ClientRefused { leaf: Some(l), .. } if l == fingerprint) => {
                return Err(e)
            }
            Err(e) => Err(e),
        };
        let now = Instant::now();
        if now >= end {
            let waited = now - started;
            return Err(match last {
                Ok(chain) => VerifyError::NotServed {
                    connect: connect.into(),
                    server_name: server_name.into(),
                    waited,
                    expected,
                    found: Box::new(Found {
                        served: describe(&chain[0]),
                        chain,
                        refused: String::new(),
                    }),
                },
                Err(e) => VerifyError::Unreachable {
                    connect: connect.into(),
                    server_name: server_name.into(),
                    waited,
                    expected,
                    last: Box::new(e),
                },
            });
        }
        std::thread::sleep(pause.min(end - now));
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// A certificate as messages name it: serial, fingerprint, subject and expiry.
pub fn describe(der: &[u8]) -> String {
    match CertInfo::from_der(der) {
        Ok(c) => format!(
            "serial {}, SHA-256 {}, subject {}, not after {}",
            c.serial,
            c.fingerprint,
            c.subject,
            c.not_after
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|_| c.not_after.to_string())
        ),
        Err(e) => format!(
            "an unparsable certificate ({e}), SHA-256 {}",
            crate::encoding::hex(
                aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der).as_ref()
            )
        ),
    }
}

fn handshake_error(connect: &str, server_name: &str, reason: String) -> VerifyError {
    VerifyError::Handshake {
        connect: connect.into(),
        server_name: server_name.into(),
        reason,
    }
}

/// Tries every address `connect` resolves to; the first that answers wins.
fn tcp_connect(connect: &str, timeout: Duration) -> Result<TcpStream, VerifyError> {
    let resolve_err = |source| VerifyError::Resolve {
        connect: connect.into(),
        source,
    };
    let addrs: Vec<SocketAddr> = connect.to_socket_addrs().map_err(resolve_err)?.collect();
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(sock) => {
                let setup = sock
                    .set_read_timeout(Some(timeout))
                    .and_then(|_| sock.set_write_timeout(Some(timeout)))
                    .and_then(|_| sock.set_nodelay(true));
                return match setup {
                    Ok(()) => Ok(sock),
                    Err(source) => Err(VerifyError::Connect {
                        connect: connect.into(),
                        addr,
                        source,
                    }),
                };
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                last = Some(VerifyError::Timeout {
                    connect: connect.into(),
                    after: timeout,
                })
            }
            Err(source) => {
                last = Some(VerifyError::Connect {
                    connect: connect.into(),
                    addr,
                    source,
                })
            }
        }
    }
    Err(last.unwrap_or_else(|| {
        resolve_err(io::Error::new(
            io::ErrorKind::NotFound,
            "it resolves to no address",
        ))
    }))
}

/// Accepts whatever certificate the server presents and remembers the end-entity one.
///
/// This is deliberately *not* trust: certkeeper only compares the served bytes with the
/// certificate it installed, so chain building, names and dates do not matter here.
/// The handshake signature is still verified for real, which proves the server holds
/// the private key of the certificate it presented.
#[derive(Debug)]
struct LeafRecorder {
    algorithms: WebPkiSupportedAlgorithms,
    /// The leaf, then what the server sent after it.
    leaf: Mutex<Option<Vec<Vec<u8>>>>,
}

impl ServerCertVerifier for LeafRecorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chain = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| c.to_vec())
            .collect();
        *self.leaf.lock().unwrap_or_else(|e| e.into_inner()) = Some(chain);
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// An in-process TLS server presenting a fresh self-signed certificate; answers
    /// handshakes until the test process ends. Returns its address and the leaf DER.
    fn tls_server(names: &[&str]) -> (String, Vec<u8>) {
        let ck = rcgen::generate_simple_self_signed(
            names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        let der = ck.cert.der().to_vec();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(der.clone())], key)
        .unwrap();
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut conn = rustls::ServerConnection::new(Arc::clone(&config)).unwrap();
                while conn.is_handshaking() {
                    if conn.complete_io(&mut stream).is_err() {
                        break;
                    }
                }
                let _ = conn.complete_io(&mut stream);
            }
        });
        (addr, der)
    }

    #[test]
    fn returns_the_served_leaf_and_waits_for_it() {
        let (addr, der) = tls_server(&["www.example.internal"]);
        let got = served_leaf(&addr, "www.example.internal", Duration::from_secs(5)).unwrap();
        assert_eq!(got, der);
        wait_for_leaf(&addr, "www.example.internal", &der, Duration::from_secs(5)).unwrap();
    }

    #[test]
    fn waiting_for_another_certificate_names_what_is_served() {
        let (addr, served) = tls_server(&["www.example.internal"]);
        let (_, other) = tls_server(&["www.example.internal"]);
        let err = wait_for_leaf(
            &addr,
            "www.example.internal",
            &other,
            Duration::from_millis(300),
        )
        .unwrap_err();
        let served = CertInfo::from_der(&served).unwrap();
        let other = CertInfo::from_der(&other).unwrap();
        match &err {
            VerifyError::NotServed {
                found, expected: e, ..
            } => {
                let s = &found.served;
                assert!(s.contains(&served.fingerprint), "{s}");
                assert!(e.contains(&other.serial), "{e}");
            }
            other => panic!("expected NotServed, got {other:?}"),
        }
    }

    #[test]
    fn refuses_a_bad_server_name() {
        let err = served_leaf("127.0.0.1:1", "not a name", Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, VerifyError::BadServerName { .. }), "{err:?}");
    }

    #[test]
    fn a_closed_port_is_a_connect_error() {
        // Bind and release: nothing listens there now.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let connect = format!("127.0.0.1:{port}");
        let err = served_leaf(&connect, "localhost", Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, VerifyError::Connect { .. }), "{err:?}");
        assert!(err.to_string().contains(&connect), "{err}");
    }

    #[test]
    fn a_silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let connect = listener.local_addr().unwrap().to_string();
        let started = Instant::now();
        let err = served_leaf(&connect, "localhost", Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, VerifyError::Timeout { .. }), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn a_non_tls_server_is_a_handshake_error() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let connect = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
        });
        let err = served_leaf(&connect, "localhost", Duration::from_secs(2)).unwrap_err();
        assert!(matches!(err, VerifyError::Handshake { .. }), "{err:?}");
        server.join().unwrap();
    }

    #[test]
    fn waiting_on_a_closed_port_reports_the_last_error() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let connect = format!("127.0.0.1:{port}");
        let started = Instant::now();
        let err = wait_for_leaf(
            &connect,
            "localhost",
            b"not a cert",
            Duration::from_millis(300),
        )
        .unwrap_err();
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(300), "{waited:?}");
        assert!(waited < Duration::from_secs(3), "{waited:?}");
        match &err {
            VerifyError::Unreachable { last, .. } => {
                assert!(matches!(**last, VerifyError::Connect { .. }), "{last:?}")
            }
            other => panic!("expected Unreachable, got {other:?}"),
        }
        assert!(err.to_string().contains("unparsable certificate"), "{err}");
    }
}
