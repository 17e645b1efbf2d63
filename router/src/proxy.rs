//! One client connection: read a request, pass the gate, relay it to the upstream current at
//! that moment, relay the response back; repeat while both sides keep the connection alive.

use std::io::{self, BufRead as _, BufReader, BufWriter, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use super::gate::{Gate, Outcome, Ticket};
use super::http::{self, BodyLength, Head, HttpError};
use super::upstream::Conn;

/// How long a client connection may stay silent (between requests or mid-request).
const CLIENT_IDLE: Duration = Duration::from_secs(300);
/// Largest request body read in full before sending (so the request can be replayed).
const MAX_REPLAY: u64 = 64 * 1024;
/// Side names used in errors.
const CLIENT: &str = "client";
/// Side names used in errors.
const UPSTREAM: &str = "upstream";

/// Why an exchange did not complete.
enum Failure {
    /// Nothing reached the client yet: answer 502 with this reason.
    Upstream(String),
    /// The client saw part of a response, or its request was cut: close the connection.
    Broken,
    /// The client went away.
    Client,
}

impl From<HttpError> for Failure {
    fn from(e: HttpError) -> Self {
        match e {
            HttpError::Io { side: CLIENT, .. } | HttpError::Truncated(CLIENT) => Self::Client,
            other => Self::Upstream(other.to_string()),
        }
    }
}

/// The client's two halves.
struct Client {
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
}

/// Serves one client connection until it closes; `retry` bounds how long a refusing upstream
/// is retried before the request is answered 502.
pub fn serve(gate: &Gate, stream: TcpStream, retry: Duration) {
    gate.connection();
    // Best effort: a socket option that cannot be set only costs latency (or an idle thread).
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(CLIENT_IDLE));
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let mut client = Client {
        reader: BufReader::new(stream),
        writer: BufWriter::new(write_half),
    };
    while let Some(keep) = next_request(gate, &mut client, retry) {
        if !keep {
            break;
        }
    }
    let _ = client.writer.flush();
    let _ = client.writer.get_ref().shutdown(Shutdown::Both);
}

/// Handles one request; `None` when the client closed, else whether to keep the connection.
fn next_request(gate: &Gate, client: &mut Client, retry: Duration) -> Option<bool> {
    let head = match http::read_head(&mut client.reader, CLIENT) {
        Ok(Some(h)) => h,
        Ok(None) | Err(HttpError::Io { .. }) => return None,
        Err(e) => {
            reply_error(client, 400, "Bad Request", &e.to_string());
            return Some(false);
        }
    };
    let body = match head.request_body() {
        Ok(b) => b,
        Err(e) => {
            reply_error(client, 400, "Bad Request", &e.to_string());
            return Some(false);
        }
    };
    let Some(ticket) = gate.admit() else {
        reply_error(client, 503, "Service Unavailable", "no upstream yet");
        gate.record(Outcome::Failed);
        return Some(false);
    };
    let result = exchange(&ticket, head, body, client, retry);
    // Counted before the ticket ends: once nothing is in flight, every count is in.
    gate.record(match &result {
        Ok(_) => Outcome::Served,
        Err(Failure::Upstream(_) | Failure::Broken) => Outcome::Failed,
        Err(Failure::Client) => Outcome::Aborted,
    });
    drop(ticket);
    match result {
        Ok(keep) => Some(keep),
        Err(Failure::Upstream(why)) => {
            reply_error(client, 502, "Bad Gateway", &why);
            Some(false)
        }
        Err(Failure::Broken | Failure::Client) => Some(false),
    }
}

/// Writes an error response the router makes itself (best effort: the client may be gone).
fn reply_error(client: &mut Client, status: u16, reason: &str, why: &str) {
    let body = format!("kiln router: {why}\n");
    let _ = client
        .writer
        .write_all(&http::simple_response(status, reason, &body, true))
        .and_then(|()| client.writer.flush());
}

/// Relays one request and its response; returns whether the client connection stays open.
fn exchange(
    ticket: &Ticket<'_>,
    mut head: Head,
    body: BodyLength,
    client: &mut Client,
    retry: Duration,
) -> Result<bool, Failure> {
    let method = head.method().to_string();
    let client_keeps = head.request_keeps_alive();
    let upgrade = head.header("upgrade").is_some();
    let expect_continue = head.has_token("expect", "100-continue");
    if expect_continue {
        // The router answers 100 itself once it has an upstream, then streams the body.
        head.remove("expect");
    }
    if !upgrade {
        // Hop-by-hop: the upstream connection is the router's, kept alive for reuse.
        head.remove("connection");
        head.remove("keep-alive");
    }
    let mut request = head.to_bytes();
    if expect_continue && body != BodyLength::Empty {
        continue_client(client)?;
    }
    // A small body is read in full first, so the request can be replayed on a fresh
    // connection if a kept-alive one turns out closed; a large or chunked one is streamed.
    let mut streamed = body;
    if let BodyLength::Fixed(n) = body {
        if n <= MAX_REPLAY {
            http::relay_body(body, &mut client.reader, &mut request, CLIENT, UPSTREAM)
                .map_err(|_| Failure::Client)?;
            streamed = BodyLength::Empty;
        }
    }
    let deadline = kiln_util::wait::Deadline::after(retry);
    let (up, response) = loop {
        let (mut up, reused) = ticket
            .upstream
            .checkout(deadline)
            .map_err(|e| Failure::Upstream(e.to_string()))?;
        let replayable = reused && streamed == BodyLength::Empty;
        match send(&mut up, &request, streamed, client) {
            Ok(()) => {}
            Err(Failure::Upstream(_)) if replayable => continue,
            Err(e) => return Err(e),
        }
        match read_final_head(&mut up, client) {
            Ok(Some(h)) => break (up, h),
            // A kept-alive connection the upstream closed meanwhile: try a fresh one.
            Ok(None) | Err(HttpError::Io { .. }) if replayable => continue,
            Ok(None) => {
                return Err(Failure::Upstream(
                    "upstream closed without answering".into(),
                ))
            }
            Err(e) => return Err(e.into()),
        }
    };
    if response.status() == 101 {
        write_head(client, &response)?;
        tunnel(client, up);
        return Ok(false);
    }
    respond(ticket, &method, client_keeps, response, up, client)
}

/// Tells the client to send its body (the router stripped `Expect` from the request).
fn continue_client(client: &mut Client) -> Result<(), Failure> {
    client
        .writer
        .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
        .and_then(|()| client.writer.flush())
        .map_err(|_| Failure::Client)
}

/// Writes the request (head and any buffered body) and streams the rest of the body, in as
/// few writes as possible.
fn send(
    up: &mut Conn,
    request: &[u8],
    streamed: BodyLength,
    client: &mut Client,
) -> Result<(), Failure> {
    let upstream_err = |e: std::io::Error| Failure::Upstream(format!("{UPSTREAM}: {e}"));
    let mut w = BufWriter::with_capacity(16 * 1024, up.get_ref());
    w.write_all(request).map_err(upstream_err)?;
    if streamed != BodyLength::Empty {
        http::relay_body(streamed, &mut client.reader, &mut w, CLIENT, UPSTREAM).map_err(|e| {
            match Failure::from(e) {
                Failure::Client => Failure::Client,
                _ => Failure::Broken,
            }
        })?;
    }
    w.flush().map_err(upstream_err)
}

/// Relays the response head and body; pools the upstream connection when it can be reused.
fn respond(
    ticket: &Ticket<'_>,
    method: &str,
    client_keeps: bool,
    mut response: Head,
    mut up: Conn,
    client: &mut Client,
) -> Result<bool, Failure> {
    let length = response.response_body(method)?;
    let upstream_keeps = response.response_keeps_alive() && length != BodyLength::UntilClose;
    let keep = client_keeps && length != BodyLength::UntilClose;
    response.remove("connection");
    response.remove("keep-alive");
    response.headers.push((
        "Connection".into(),
        if keep { "keep-alive" } else { "close" }.into(),
    ));
    write_head(client, &response)?;
    http::relay_body(length, &mut up, &mut client.writer, UPSTREAM, CLIENT).map_err(|e| {
        match Failure::from(e) {
            Failure::Client => Failure::Client,
            _ => Failure::Broken,
        }
    })?;
    client.writer.flush().map_err(|_| Failure::Client)?;
    if upstream_keeps {
        ticket.upstream.checkin(up);
    }
    Ok(keep)
}

/// Reads response heads, passing interim 1xx ones (but 101) on to the client.
fn read_final_head(up: &mut Conn, client: &mut Client) -> Result<Option<Head>, HttpError> {
    loop {
        let Some(h) = http::read_head(up, UPSTREAM)? else {
            return Ok(None);
        };
        if (100..200).contains(&h.status()) && h.status() != 101 {
            client
                .writer
                .write_all(&h.to_bytes())
                .map_err(|source| HttpError::Io {
                    side: CLIENT,
                    source,
                })?;
            continue;
        }
        return Ok(Some(h));
    }
}

/// Writes a head to the client.
fn write_head(client: &mut Client, head: &Head) -> Result<(), Failure> {
    client
        .writer
        .write_all(&head.to_bytes())
        .map_err(|_| Failure::Client)
}

/// After 101 Switching Protocols: bytes both ways until either side closes.
fn tunnel(client: &mut Client, mut up: Conn) {
    let (Ok(mut up_write), Ok(())) = (up.get_ref().try_clone(), client.writer.flush()) else {
        return;
    };
    // Bytes the client sent after its request head are already in the reader's buffer.
    let buffered = client.reader.buffer().to_vec();
    if up_write.write_all(&buffered).is_err() {
        return;
    }
    client.reader.consume(buffered.len());
    let Ok(mut client_read) = client.reader.get_ref().try_clone() else {
        return;
    };
    std::thread::scope(|s| {
        s.spawn(move || {
            let _ = io::copy(&mut client_read, &mut up_write);
            let _ = up_write.shutdown(Shutdown::Write);
        });
        let mut out = client.writer.get_ref();
        let _ = io::copy(&mut up, &mut out);
        let _ = out.shutdown(Shutdown::Both);
    });
}
