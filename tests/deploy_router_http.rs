//! The router's HTTP/1.1 handling against a scripted upstream on the host: chunked and large
//! bodies, 100-continue, HEAD, responses delimited by close, and an upstream that closes an
//! idle kept-alive connection (the request is replayed on a fresh one, not failed).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use kiln_router::http::{self, BodyLength, Head};
use kiln_testkit::deploy_support::TestEnv;

/// Decodes a chunked body (framing as the router relays it).
fn dechunk(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut r = BufReader::new(raw);
    loop {
        let mut line = String::new();
        r.read_line(&mut line).expect("size line");
        let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
            .expect("hex size");
        if size == 0 {
            return out;
        }
        let mut chunk = vec![0; size + 2];
        r.read_exact(&mut chunk).expect("chunk");
        out.extend_from_slice(&chunk[..size]);
    }
}

/// Reads a message body of framing `len` (decoded).
fn body_of(r: &mut BufReader<TcpStream>, len: BodyLength) -> Vec<u8> {
    let mut raw = Vec::new();
    http::relay_body(len, r, &mut raw, "peer", "test").expect("body");
    if len == BodyLength::Chunked {
        dechunk(&raw)
    } else {
        raw
    }
}

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
    while let Ok(Some(head)) = http::read_head(&mut r, "client") {
        let body = body_of(&mut r, head.request_body().expect("framing"));
        let path = head.start[1].clone();
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
                let text = format!("{} {} {}", head.method(), path, body.len());
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

/// A raw client connection to the router.
struct Raw {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Raw {
    fn new(addr: SocketAddr) -> Self {
        let s = TcpStream::connect(addr).expect("connect router");
        Self {
            w: s.try_clone().expect("clone"),
            r: BufReader::new(s),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).expect("send");
    }

    /// Reads a response to a request with `method`: head and decoded body.
    fn response(&mut self, method: &str) -> (Head, Vec<u8>) {
        let head = http::read_head(&mut self.r, "router")
            .expect("head")
            .expect("a response");
        let len = head.response_body(method).expect("framing");
        let body = body_of(&mut self.r, len);
        (head, body)
    }
}

#[test]
fn bodies_of_every_framing_cross_the_router_intact() {
    let env = TestEnv::with_netns(&[]);
    let up = upstream();
    let addr = env.start_router(&["--upstream", &up.to_string()]);
    let mut c = Raw::new(addr);

    // A chunked request, echoed back chunked (with a trailer).
    c.send(b"POST /echo-chunked HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4;x=y\r\ndefg\r\n0\r\n\r\n");
    let (h, body) = c.response("POST");
    assert_eq!((h.status(), body.as_slice()), (200, &b"abcdefg"[..]));

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
    let (_, body) = c.response("PUT");
    assert_eq!(
        String::from_utf8_lossy(&body),
        format!("PUT /big {}", big.len())
    );

    // Expect: 100-continue: the body is sent only after the router says so.
    c.send(b"POST /cont HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    let (interim, _) = c.response("POST");
    assert_eq!(interim.status(), 100);
    c.send(b"hello");
    let (h, body) = c.response("POST");
    assert_eq!((h.status(), body.as_slice()), (200, &b"POST /cont 5"[..]));

    // HEAD: a Content-Length but no body follows.
    c.send(b"HEAD /head HTTP/1.1\r\nHost: t\r\n\r\n");
    let (h, body) = c.response("HEAD");
    assert_eq!((h.header("content-length"), body.len()), (Some("5"), 0));

    // An upstream that closes an idle kept-alive connection: the next request is replayed.
    c.send(b"GET /idle-close HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.response("GET").0.status(), 200);
    std::thread::sleep(Duration::from_millis(100));
    c.send(b"POST /after-idle HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nok");
    let (h, body) = c.response("POST");
    assert_eq!(
        (h.status(), body.as_slice()),
        (200, &b"POST /after-idle 2"[..])
    );

    // A response delimited by close: the router closes the client connection after it.
    c.send(b"GET /until-close HTTP/1.1\r\nHost: t\r\n\r\n");
    let (h, body) = c.response("GET");
    assert_eq!(h.header("connection"), Some("close"));
    assert_eq!(body, b"all of it, then close");

    // A malformed request gets 400 and the connection closes.
    let mut bad = Raw::new(addr);
    bad.send(b"GET / HTTP/1.1\r\nno colon\r\n\r\n");
    assert_eq!(bad.response("GET").0.status(), 400);
    let st = env.settled();
    assert_eq!((st.gate.served, st.gate.failed), (7, 0), "{st:?}");
}
