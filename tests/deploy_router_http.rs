//! The ingress's HTTP/1.1 handling against a scripted upstream on the host: chunked and large
//! bodies, 100-continue, HEAD, responses delimited by close, and an upstream that closes an
//! idle kept-alive connection (the request is replayed on a fresh one, not failed).

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use kiln_testkit::deploy_support::TestEnv;
use kiln_testkit::ingress_support::{read_request, Raw, Response};

/// A scripted upstream: answers by path, on the host loopback.
fn upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            std::thread::spawn(move || serve(conn));
        }
    });
    addr
}

/// One upstream connection.
fn serve(conn: TcpStream) {
    let mut out = conn.try_clone().expect("clone");
    let mut r = BufReader::new(conn);
    while let Some(req) = read_request(&mut r) {
        let (method, path, body) = (req.method, req.path, req.body);
        let reply: Vec<u8> = match path.as_str() {
            "/echo-chunked" => {
                let half = body.len() / 2;
                let mut v = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
                for part in [&body[..half], &body[half..]] {
                    v.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                    v.extend_from_slice(part);
                    v.extend_from_slice(b"\r\n");
                }
                v.extend_from_slice(b"0\r\nX-Trailer: t\r\n\r\n");
                v
            }
            "/until-close" => {
                let _ = out.write_all(b"HTTP/1.1 200 OK\r\n\r\nall of it, then close");
                return;
            }
            "/head" => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n".to_vec(),
            _ => {
                let text = format!("{method} {path} {}", body.len());
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}",
                    text.len()
                )
                .into_bytes()
            }
        };
        if out.write_all(&reply).is_err() {
            return;
        }
        if path == "/idle-close" {
            // Close the kept-alive connection shortly after answering, as servers do when idle.
            std::thread::sleep(Duration::from_millis(30));
            return;
        }
    }
}

/// Reads one response, panicking when there is none.
fn response(c: &mut Raw, head_only: bool) -> Response {
    c.response(head_only).expect("a response")
}

#[test]
fn bodies_of_every_framing_cross_the_router_intact() {
    let env = TestEnv::with_netns(&[]);
    let up = upstream();
    let addr = env.start_router(&["--upstream", &up.to_string()]);
    let mut c = Raw::new(addr);

    // A chunked request, echoed back chunked (with a trailer).
    c.send(b"POST /echo-chunked HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4;x=y\r\ndefg\r\n0\r\n\r\n");
    let h = response(&mut c, false);
    let body = h.body.clone();
    assert_eq!((h.status, body.as_slice()), (200, &b"abcdefg"[..]));

    // A large fixed body (streamed, not buffered) on the same kept-alive connection.
    let big = vec![b'z'; 3 * 1024 * 1024];
    c.send(
        format!(
            "PUT /big HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            big.len()
        )
        .as_bytes(),
    );
    c.send(&big);
    let body = response(&mut c, false).body;
    assert_eq!(
        String::from_utf8_lossy(&body),
        format!("PUT /big {}", big.len())
    );

    // Expect: 100-continue: the body is sent only after the router says so.
    c.send(b"POST /cont HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    let interim = response(&mut c, true);
    assert_eq!(interim.status, 100);
    c.send(b"hello");
    let h = response(&mut c, false);
    let body = h.body.clone();
    assert_eq!((h.status, body.as_slice()), (200, &b"POST /cont 5"[..]));

    // HEAD: a Content-Length but no body follows.
    c.send(b"HEAD /head HTTP/1.1\r\nHost: t\r\n\r\n");
    let h = response(&mut c, true);
    assert_eq!(h.header("content-length"), Some("5"));

    // An upstream that closes an idle kept-alive connection: the next request is replayed.
    c.send(b"GET /idle-close HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(response(&mut c, false).status, 200);
    std::thread::sleep(Duration::from_millis(100));
    c.send(b"POST /after-idle HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nok");
    let h = response(&mut c, false);
    let body = h.body.clone();
    assert_eq!(
        (h.status, body.as_slice()),
        (200, &b"POST /after-idle 2"[..])
    );

    // A response delimited by close reaches the client whole (re-framed: chunked).
    c.send(b"GET /until-close HTTP/1.1\r\nHost: t\r\n\r\n");
    let h = response(&mut c, false);
    assert_eq!(h.body, b"all of it, then close");

    // A malformed request gets 400 and the connection closes.
    let mut bad = Raw::new(addr);
    bad.send(b"GET / HTTP/1.1\r\nno colon\r\n\r\n");
    assert_eq!(response(&mut bad, false).status, 400);
    let st = env.settled();
    let log = std::fs::read_to_string(kiln_deploy::layout::access_log(&env.root(), &env.name))
        .expect("access log");
    assert_eq!((st.gate.served, st.gate.failed), (7, 0), "{st:?}\n{log}");
}
