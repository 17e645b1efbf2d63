//! Streams through the ingress: a WebSocket upgrade is relayed both ways (an echo), and a
//! server-sent event stream arrives event by event, not buffered until it ends.

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use kiln_testkit::deploy_support::TestEnv;
use kiln_testkit::ingress_support::{register, scripted_upstream, IngressGuard, Raw, Request};

/// Gap between the upstream's events.
const GAP: Duration = Duration::from_millis(300);

/// `/ws`: 101, then echo every byte; `/sse`: three events, `GAP` apart, chunked.
fn streams(req: &Request, out: &mut TcpStream) -> bool {
    match req.path.as_str() {
        "/ws" => {
            let ok = req.header("upgrade") == Some("websocket");
            let head = if ok {
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
            } else {
                "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"
            };
            if out.write_all(head.as_bytes()).is_err() || !ok {
                return false;
            }
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 || out.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            false
        }
        "/sse" => {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
            if out.write_all(head.as_bytes()).is_err() {
                return false;
            }
            for i in 0..3 {
                let event = format!("data: {i}\n\n");
                let chunk = format!("{:x}\r\n{event}\r\n", event.len());
                if out.write_all(chunk.as_bytes()).is_err() {
                    return false;
                }
                std::thread::sleep(GAP);
            }
            out.write_all(b"0\r\n\r\n").is_ok()
        }
        _ => false,
    }
}

#[test]
fn a_websocket_echo_and_sse_events_cross_the_ingress_as_they_happen() {
    let env = TestEnv::with_netns(&[]);
    let up = scripted_upstream(streams);
    let ingress = IngressGuard::start(&env, &["--listen", "127.0.0.1:0"]);
    register(&env, "live", &up.to_string(), "chat", &[]);
    let host = "live.chat.localhost";

    // WebSocket: the handshake passes, then a masked text frame comes back byte for byte.
    let mut ws = Raw::new(ingress.addr());
    ws.send(
        format!(
            "GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .as_bytes(),
    );
    let r = ws.response(true).expect("handshake answer");
    assert_eq!(r.status, 101, "{r:?}");
    assert_eq!(r.header("upgrade"), Some("websocket"));
    let mask = [1u8, 2, 3, 4];
    for text in ["hello", "through the ingress"] {
        let mut frame = vec![0x81, 0x80 | text.len() as u8];
        frame.extend_from_slice(&mask);
        frame.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        ws.send(&frame);
        let mut back = vec![0u8; frame.len()];
        ws.r.read_exact(&mut back).expect("echo");
        assert_eq!(back, frame, "the frame came back unchanged");
    }
    drop(ws);

    // SSE: each event arrives about GAP after the previous one.
    let mut sse = Raw::new(ingress.addr());
    sse.send(
        format!("GET /sse HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n")
            .as_bytes(),
    );
    let head = sse.response(true).expect("head");
    assert_eq!(head.header("content-type"), Some("text/event-stream"));
    let start = Instant::now();
    let mut arrivals = Vec::new();
    let mut line = String::new();
    while arrivals.len() < 3 {
        line.clear();
        assert!(
            sse.r.read_line(&mut line).expect("read") > 0,
            "stream ended early"
        );
        if line.starts_with("data: ") {
            arrivals.push((line.trim().to_string(), start.elapsed()));
        }
    }
    assert_eq!(
        arrivals.iter().map(|(d, _)| d.as_str()).collect::<Vec<_>>(),
        ["data: 0", "data: 1", "data: 2"]
    );
    assert!(arrivals[0].1 < GAP, "first event buffered: {arrivals:?}");
    assert!(
        arrivals[2].1 - arrivals[0].1 >= GAP,
        "events arrived together: {arrivals:?}"
    );
}
