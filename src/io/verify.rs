//! Checking what a server really serves: a TLS handshake to `host:port` with a given
//! SNI name, returning the end-entity certificate the server presented, and waiting
//! until that is the certificate we installed. Blocking, std networking only. It
//! compares bytes; it never decides trust and never reads or writes files.

use crate::x509::CertInfo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
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
    #[error("{connect} (SNI {server_name}) completed the handshake without presenting a certificate; check the server's TLS settings")]
    NoCertificate {
        connect: String,
        server_name: String,
    },
    #[error("{connect} (SNI {server_name}) still serves {served} after {}ms, not the installed certificate ({expected}); check that the server's certificate setting points at the installed file and that the reload took effect", waited.as_millis())]
    NotServed {
        connect: String,
        server_name: String,
        waited: Duration,
        /// Serial and fingerprint of the certificate we wanted to see.
        expected: String,
        /// Serial, fingerprint and subject of what the server presented instead.
        served: String,
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

/// Connects to `connect` ("host:port"), performs a TLS handshake with SNI
/// `server_name` and returns the DER of the end-entity certificate the server presented.
/// `timeout` bounds the TCP connect and every read and write.
pub fn served_leaf(
    connect: &str,
    server_name: &str,
    timeout: Duration,
) -> Result<Vec<u8>, VerifyError> {
    served_chain(connect, server_name, timeout).map(|mut chain| chain.swap_remove(0))
}

/// Every certificate a server presented (DER), leaf first, in the order sent.
pub type Served = Vec<Vec<u8>>;

/// [`served_leaf`], with the certificates the server sent after the leaf: every
/// certificate presented, in the order it was sent.
pub fn served_chain(
    connect: &str,
    server_name: &str,
    timeout: Duration,
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
    let mut config = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| handshake_error(connect, server_name, e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
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
    while conn.is_handshaking() {
        let (read, written) = conn.complete_io(&mut sock).map_err(io_err)?;
        if read == 0 && written == 0 && conn.is_handshaking() {
            return Err(handshake_error(
                connect,
                server_name,
                "the server closed the connection".into(),
            ));
        }
    }
    // Be polite; the answer does not matter.
    conn.send_close_notify();
    let _ = conn.complete_io(&mut sock);

    let chain = recorder
        .leaf
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    chain.ok_or_else(|| VerifyError::NoCertificate {
        connect: connect.into(),
        server_name: server_name.into(),
    })
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
    )
}

/// [`wait_for_leaf`] for the leaf whose SHA-256 fingerprint (hex) is `fingerprint`.
pub fn wait_for_fingerprint(
    connect: &str,
    server_name: &str,
    fingerprint: &str,
    deadline: Duration,
) -> Result<Served, VerifyError> {
    let expected = format!("SHA-256 {fingerprint}");
    wait_served(connect, server_name, fingerprint, expected, deadline)
}

fn wait_served(
    connect: &str,
    server_name: &str,
    fingerprint: &str,
    expected: String,
    deadline: Duration,
) -> Result<Served, VerifyError> {
    let started = Instant::now();
    let end = started + deadline;
    // Short at first: nginx usually switches within tens of milliseconds.
    let mut pause = Duration::from_millis(10);
    loop {
        let remaining = end.saturating_duration_since(Instant::now());
        let attempt = remaining.clamp(Duration::from_millis(200), Duration::from_secs(5));
        let last = match served_chain(connect, server_name, attempt) {
            Ok(chain) if crate::encoding::sha256_hex(&chain[0]) == fingerprint => return Ok(chain),
            Ok(mut chain) => Ok(chain.swap_remove(0)),
            Err(e) => Err(e),
        };
        let now = Instant::now();
        if now >= end {
            let waited = now - started;
            return Err(match last {
                Ok(der) => VerifyError::NotServed {
                    connect: connect.into(),
                    server_name: server_name.into(),
                    waited,
                    expected,
                    served: describe(&der),
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
                served: s,
                expected: e,
                ..
            } => {
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
