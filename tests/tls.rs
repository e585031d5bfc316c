//! Upstream https: a test CA made with rcgen, a small rustls server in a
//! thread, and the gateway trusting the CA through `[tls] extra_ca_file`.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use common::*;

const TLS_ANSWER: &str = r#"{"id":"chatcmpl-tls","object":"chat.completion","created":1,"model":"tls-upstream-model","choices":[{"index":0,"message":{"role":"assistant","content":"over tls"},"finish_reason":"stop"}]}"#;

struct TestPki {
    ca_pem: String,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: PrivateKeyDer<'static>,
    server_cert_pem: String,
    server_key_pem: String,
}

fn make_pki() -> TestPki {
    make_pki_for(&["localhost", "127.0.0.1"])
}

/// A CA and a server certificate for `names` (DNS names or IP addresses).
fn make_pki_for(names: &[&str]) -> TestPki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "shardgate test CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();

    let server_key = rcgen::KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = rcgen::CertificateParams::new(names).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = params.signed_by(&server_key, &ca_cert, &ca_key).unwrap();

    TestPki {
        ca_pem: ca_cert.pem(),
        server_chain: vec![server_cert.der().clone()],
        server_key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        server_cert_pem: server_cert.pem(),
        server_key_pem: server_key.serialize_pem(),
    }
}

/// What the TLS upstream saw.
#[derive(Default)]
struct Seen {
    /// Raw request heads.
    heads: Vec<String>,
    bodies: Vec<String>,
    /// Connections whose handshake completed.
    handshakes: usize,
    /// Connections accepted.
    connections: usize,
}

/// Serves HTTP/1.1 over TLS on 127.0.0.1: every request gets `TLS_ANSWER`
/// (Content-Length, keep-alive). Returns the port.
fn start_tls_upstream(pki: &TestPki, seen: Arc<Mutex<Seen>>) -> u16 {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(pki.server_chain.clone(), pki.server_key.clone_key())
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { return };
            let config = config.clone();
            let seen = seen.clone();
            seen.lock().unwrap().connections += 1;
            thread::spawn(move || serve_tls_connection(tcp, config, seen));
        }
    });
    port
}

fn serve_tls_connection(tcp: TcpStream, config: Arc<rustls::ServerConfig>, seen: Arc<Mutex<Seen>>) {
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let conn = rustls::ServerConnection::new(config).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let mut counted_handshake = false;
    loop {
        // One request: head, then a Content-Length body.
        let head_end = loop {
            if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos + 4;
            }
            match tls.read(&mut tmp) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
            if !counted_handshake && !tls.conn.is_handshaking() {
                counted_handshake = true;
                seen.lock().unwrap().handshakes += 1;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let len = head
            .to_ascii_lowercase()
            .lines()
            .find_map(|l| {
                l.strip_prefix("content-length:")
                    .map(|v| v.trim().to_string())
            })
            .map_or(0, |v| v.parse::<usize>().unwrap());
        while buf.len() < head_end + len {
            match tls.read(&mut tmp) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        }
        let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).into_owned();
        buf.drain(..head_end + len);
        {
            let mut s = seen.lock().unwrap();
            s.heads.push(head);
            s.bodies.push(body);
        }
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n{TLS_ANSWER}",
            TLS_ANSWER.len()
        );
        if tls.write_all(resp.as_bytes()).is_err() || tls.flush().is_err() {
            return;
        }
    }
}

#[test]
fn https_upstream_with_extra_ca_works() {
    let pki = make_pki();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let port = start_tls_upstream(&pki, seen.clone());
    let ca = tempfile::Builder::new().suffix(".pem").tempfile().unwrap();
    std::fs::write(ca.path(), &pki.ca_pem).unwrap();

    let config = ConfigBuilder::new(&format!("https://localhost:{port}/v1"))
        .extra_ca_file(ca.path())
        .build();
    let gw = start_gateway(&config);
    let mut c = Client::connect(gw.addr);
    let body = chat_body("via-tls", false);
    for _ in 0..3 {
        let r = c.request(&post_json("/v1/chat/completions", &body, &[]));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), TLS_ANSWER);
        assert_eq!(r.json()["model"], "tls-upstream-model");
    }

    let s = seen.lock().unwrap();
    assert_eq!(s.heads.len(), 3);
    let head = &s.heads[0];
    assert!(
        head.starts_with("POST /v1/chat/completions HTTP/1.1\r\n"),
        "{head}"
    );
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains(&format!("\r\nhost: localhost:{port}\r\n")),
        "{head}"
    );
    assert!(
        head.contains(&format!("Bearer {PROVIDER_KEY}")),
        "provider key sent over TLS: {head}"
    );
    assert_eq!(s.bodies[0], body);
    // Sequential requests on one client connection reuse the TLS connection.
    assert_eq!(
        s.handshakes, 1,
        "expected the pooled TLS connection to be reused"
    );
    drop(s);
    drop(ca);
}

#[test]
fn https_upstream_without_the_ca_is_502() {
    let pki = make_pki();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let port = start_tls_upstream(&pki, seen.clone());
    let config = ConfigBuilder::new(&format!("https://localhost:{port}/v1")).build();
    let gw = start_gateway(&config);
    let r = roundtrip(gw.addr, &chat("untrusted", &[]));
    let err = r.assert_error(502, "upstream_tls_failure");
    assert_eq!(err["type"], "upstream_error");
    let s = seen.lock().unwrap();
    assert!(s.connections >= 1, "the gateway did try to connect");
    assert!(
        s.heads.is_empty(),
        "no request may be sent to an untrusted server"
    );
}

#[test]
fn https_upstream_with_wrong_host_name_is_502() {
    // The certificate is for "localhost" only; the gateway connects by IP.
    let pki = make_pki_for(&["localhost"]);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let port = start_tls_upstream(&pki, seen.clone());
    let ca = tempfile::Builder::new().suffix(".pem").tempfile().unwrap();
    std::fs::write(ca.path(), &pki.ca_pem).unwrap();
    let config = ConfigBuilder::new(&format!("https://127.0.0.1:{port}/v1"))
        .extra_ca_file(ca.path())
        .build();
    let gw = start_gateway(&config);
    let r = roundtrip(gw.addr, &chat("wrong-name", &[]));
    r.assert_error(502, "upstream_tls_failure");
    let s = seen.lock().unwrap();
    assert!(s.connections >= 1, "the gateway did try to connect");
    assert!(s.heads.is_empty());
}

#[test]
fn missing_extra_ca_file_fails_at_startup() {
    let config = ConfigBuilder::new("https://localhost:9/v1")
        .extra_ca_file(std::path::Path::new("/nonexistent/shardgate-ca.pem"))
        .build();
    let file = config_file(&config);
    let path = file.path().to_str().unwrap();
    let (status, stdout, stderr) = run_to_exit(
        &["serve", "--config", path],
        &[],
        &[],
        Duration::from_secs(10),
    );
    assert!(!status.success(), "stdout: {stdout}");
    assert!(
        stderr.contains("/nonexistent/shardgate-ca.pem"),
        "stderr: {stderr}"
    );
    assert!(!stdout.contains("listening on"));
}

// ---------------------------------------------------------------------------
// TLS for clients: the gateway's own listener
// ---------------------------------------------------------------------------

/// A gateway serving HTTPS with the PKI's server certificate, in front of
/// the mock; returns it with the files it needs kept alive.
fn start_https_gateway(
    pki: &TestPki,
    extra: impl FnOnce(ConfigBuilder) -> ConfigBuilder,
) -> (Proc, Proc, Vec<tempfile::NamedTempFile>) {
    let cert = config_file(&pki.server_cert_pem);
    let key = config_file(&pki.server_key_pem);
    let mock = start_mock(&[]);
    let builder = extra(
        ConfigBuilder::for_mock(&mock)
            .server("tls_cert_file", toml_str(cert.path().to_str().unwrap()))
            .server("tls_key_file", toml_str(key.path().to_str().unwrap())),
    );
    let gw = start_gateway(&builder.build());
    (mock, gw, vec![cert, key])
}

/// A rustls client trusting the test CA.
fn tls_client(
    pki: &TestPki,
    addr: std::net::SocketAddr,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pki.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// Reads one whole response (head and a Content-Length body).
fn read_response<S: Read>(s: &mut S) -> (u16, String) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let status: u16 = head[9..12].parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[test]
fn clients_can_connect_over_tls_with_keep_alive() {
    let pki = make_pki();
    let (_mock, gw, _files) = start_https_gateway(&pki, |b| b);
    let mut s = tls_client(&pki, gw.addr);
    for _ in 0..3 {
        s.write_all(&chat("tls-model", &[])).unwrap();
        let (status, body) = read_response(&mut s);
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(MOCK_ANSWER), "{body}");
    }
    // The gateway offers HTTP/1.1 only; this client asked for no ALPN.
    assert_eq!(s.conn.alpn_protocol(), None);
}

#[test]
fn tls_connections_have_the_same_limits() {
    let pki = make_pki();
    let (_mock, gw, _files) = start_https_gateway(&pki, |b| b.limit("max_head_bytes", 2048));
    let mut s = tls_client(&pki, gw.addr);
    let big = format!(
        "GET /health HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "a".repeat(4096)
    );
    s.write_all(big.as_bytes()).unwrap();
    let (status, body) = read_response(&mut s);
    assert_eq!(status, 431, "{body}");
}

#[test]
fn plain_http_on_the_tls_port_is_refused_and_a_stalled_handshake_times_out() {
    let pki = make_pki();
    let (_mock, gw, _files) = start_https_gateway(&pki, |b| b.timeout("header_read_ms", 500));
    // Plain HTTP is not a TLS ClientHello: the connection ends, unanswered
    // in HTTP.
    let mut tcp = TcpStream::connect(gw.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.write_all(&get("/health")).unwrap();
    let mut out = Vec::new();
    let _ = tcp.read_to_end(&mut out);
    assert!(
        !out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    // A client that opens a connection and says nothing is closed after
    // the head timeout, like a plain one.
    let mut idle = TcpStream::connect(gw.addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let n = idle.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_missing_certificate_fails_at_startup_naming_the_file() {
    let text = ConfigBuilder::new("http://127.0.0.1:9/v1")
        .server("tls_cert_file", toml_str("/nonexistent/cert.pem"))
        .server("tls_key_file", toml_str("/nonexistent/key.pem"))
        .build();
    let file = config_file(&text);
    let (status, _out, err) = run_to_exit(
        &["serve", "--config", file.path().to_str().unwrap()],
        &[],
        &[],
        Duration::from_secs(10),
    );
    assert!(!status.success());
    assert!(err.contains("/nonexistent/cert.pem"), "{err}");
}
