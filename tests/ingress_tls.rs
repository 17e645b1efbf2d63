//! TLS termination: a wildcard certificate signed by a CA made in the test, verified by a
//! rustls client; HTTP/2 offered by ALPN; a route declared https redirects plain requests.

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use kiln_router::routes::{RouteSpec, Target};
use kiln_testkit::deploy_support::{app_in, TestEnv};
use kiln_testkit::ingress_support::{read_response, register, IngressGuard, Raw, Response};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};

/// A CA, and a certificate for `*.shop.localhost` it signed: (CA der, cert pem, key pem).
fn ca_and_wildcard() -> (CertificateDer<'static>, String, String) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key")).expect("CA");
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["*.shop.localhost".to_string()])
        .expect("params")
        .signed_by(&key, &ca)
        .expect("sign");
    (ca.der().clone(), cert.pem(), key.serialize_pem())
}

/// A TLS client trusting `ca`, offering `alpn`.
fn client(ca: &CertificateDer<'static>, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

/// A verified TLS connection to `addr` for `host`.
fn connect(
    cfg: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    host: &str,
) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let name = ServerName::try_from(host.to_string()).expect("server name");
    let conn = rustls::ClientConnection::new(cfg, name).expect("client");
    let mut s = rustls::StreamOwned::new(conn, TcpStream::connect(addr)?);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

/// GET `/` for `host` over TLS, HTTP/1.1.
fn get(cfg: Arc<rustls::ClientConfig>, addr: SocketAddr, host: &str) -> Response {
    let mut s = connect(cfg, addr, host).expect("TLS connect");
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())
        .expect("send");
    read_response(&mut BufReader::new(s), false).expect("response")
}

#[test]
fn a_tls_route_serves_a_verifying_client_offers_h2_and_redirects_plain_requests() {
    let env = TestEnv::with_netns(&["web"]);
    let _app = app_in(&env.netns("web"), "secure");
    let (ca, cert, key) = ca_and_wildcard();
    let dir = env.sandbox.dir.path();
    let (cert_path, key_path) = (dir.join("wild.pem"), dir.join("wild.key"));
    std::fs::write(&cert_path, cert).expect("cert");
    std::fs::write(&key_path, key).expect("key");
    let ingress = IngressGuard::start(
        &env,
        &[
            "--listen",
            "127.0.0.1:0",
            "--tls-listen",
            "127.0.0.1:0",
            "--tls-cert",
            cert_path.to_str().expect("utf8"),
            "--tls-key",
            key_path.to_str().expect("utf8"),
        ],
    );
    let tls_addr = ingress.info.tls_listen[0];
    register(
        &env,
        "main",
        &env.app("web").to_string(),
        "shop",
        &[RouteSpec {
            pattern: "https://{default}/".into(),
            target: Target::Upstream { upstream: None },
            primary: true,
        }],
    );
    let host = "main.shop.localhost";
    let r = get(client(&ca, &[b"http/1.1"]), tls_addr, host);
    assert_eq!((r.status, r.text()), (200, "secure 0".to_string()));

    // HTTP/2 is what ALPN settles on when the client offers it.
    let s = connect(client(&ca, &[b"h2", b"http/1.1"]), tls_addr, host).expect("h2 connect");
    assert_eq!(s.conn.alpn_protocol(), Some(&b"h2"[..]));

    // A client that does not trust the CA refuses the certificate.
    let (other_ca, _, _) = ca_and_wildcard();
    let err = connect(client(&other_ca, &[b"http/1.1"]), tls_addr, host)
        .expect_err("untrusted certificate refused");
    assert!(err.to_string().contains("certificate"), "{err}");

    // The route is https: a plain request is redirected there.
    let plain = Raw::new(ingress.addr()).get(host, "/path?q=1");
    assert_eq!(plain.status, 308);
    assert_eq!(
        plain.header("location"),
        Some(format!("https://{host}:{}/path?q=1", tls_addr.port()).as_str())
    );
}

#[test]
fn a_tls_listener_without_a_certificate_is_refused_by_name() {
    let env = TestEnv::with_netns(&[]);
    let out = env
        .sandbox
        .run(&["ingress", "start", "--tls-listen", "127.0.0.1:0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--tls-cert"), "{err}");
    let missing = env.sandbox.dir.path().join("missing.pem");
    let m = missing.to_str().expect("utf8");
    let out = env.sandbox.run(&[
        "ingress",
        "start",
        "--tls-listen",
        "127.0.0.1:0",
        "--tls-cert",
        m,
        "--tls-key",
        m,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing.pem"), "{err}");
    assert!(!kiln_router::layout::ingress_socket(&env.root()).exists());
}
