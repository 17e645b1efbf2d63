//! Just enough HTTP/1.1 to route per request: message heads, body framing, relaying bodies.
//!
//! The router never buffers a whole body: it reads a head, decides how long the body is
//! (RFC 9112 §6: no body, Content-Length, chunked, or until close for responses) and streams
//! exactly that many bytes on, so the next message on a keep-alive connection starts where it
//! should and can be sent to another upstream.

use std::io::{self, BufRead, Read, Write};

/// Longest message head accepted (request or status line plus headers).
const MAX_HEAD: usize = 64 * 1024;
/// Longest chunk-size line or trailer line.
const MAX_LINE: usize = 8 * 1024;

/// A malformed or unreadable message.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Reading or writing failed.
    #[error("{side}: {source}")]
    Io {
        /// "client" or "upstream", and what was being done.
        side: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The peer closed in the middle of a message.
    #[error("{0}: connection closed mid-message")]
    Truncated(&'static str),
    /// The message breaks HTTP/1.1's syntax.
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// A request or response head, parsed.
#[derive(Debug, Clone)]
pub struct Head {
    /// The start line's three parts: method, target, version (request) or version, status,
    /// reason (response).
    pub start: [String; 3],
    /// Header fields in order, names as sent.
    pub headers: Vec<(String, String)>,
}

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Fixed(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Everything until the connection closes (responses only).
    UntilClose,
}

impl Head {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether a comma-separated header holds `token` (case-insensitive).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// Removes every field named `name`.
    pub fn remove(&mut self, name: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    /// The HTTP version of a request (start[2]) or response (start[0]) is 1.0.
    fn is_http10(version: &str) -> bool {
        version.eq_ignore_ascii_case("HTTP/1.0")
    }

    /// A request's method.
    pub fn method(&self) -> &str {
        &self.start[0]
    }

    /// A response's status code (0 when unparsable).
    pub fn status(&self) -> u16 {
        self.start[1].parse().unwrap_or(0)
    }

    /// Whether the connection stays open after this request (HTTP/1.1 default, or 1.0 with
    /// keep-alive).
    pub fn request_keeps_alive(&self) -> bool {
        keeps_alive(self, &self.start[2])
    }

    /// Whether the connection stays open after this response.
    pub fn response_keeps_alive(&self) -> bool {
        keeps_alive(self, &self.start[0])
    }

    /// The body framing of a request.
    pub fn request_body(&self) -> Result<BodyLength, HttpError> {
        Ok(framing(self)?.unwrap_or(BodyLength::Empty))
    }

    /// The body framing of a response to a request with method `method`.
    pub fn response_body(&self, method: &str) -> Result<BodyLength, HttpError> {
        let status = self.status();
        if method.eq_ignore_ascii_case("HEAD")
            || (100..200).contains(&status)
            || status == 204
            || status == 304
        {
            return Ok(BodyLength::Empty);
        }
        Ok(framing(self)?.unwrap_or(BodyLength::UntilClose))
    }

    /// The head as bytes on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(self.start.join(" ").as_bytes());
        out.extend_from_slice(b"\r\n");
        for (n, v) in &self.headers {
            out.extend_from_slice(n.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }
}

/// Persistence per RFC 9112 §9.3.
fn keeps_alive(head: &Head, version: &str) -> bool {
    if head.has_token("connection", "close") {
        return false;
    }
    !Head::is_http10(version) || head.has_token("connection", "keep-alive")
}

/// Content-Length or chunked, if the head declares either.
fn framing(head: &Head) -> Result<Option<BodyLength>, HttpError> {
    if let Some(te) = head.header("transfer-encoding") {
        let last = te.rsplit(',').next().unwrap_or("").trim();
        if !last.eq_ignore_ascii_case("chunked") {
            return Err(HttpError::Malformed(format!(
                "transfer-encoding {te:?} does not end in chunked"
            )));
        }
        return Ok(Some(BodyLength::Chunked));
    }
    let mut length = None;
    for (n, v) in &head.headers {
        if n.eq_ignore_ascii_case("content-length") {
            let n: u64 = v
                .trim()
                .parse()
                .map_err(|_| HttpError::Malformed(format!("content-length {v:?}")))?;
            if length.is_some_and(|l| l != n) {
                return Err(HttpError::Malformed("conflicting content-length".into()));
            }
            length = Some(n);
        }
    }
    Ok(length.map(|n| {
        if n == 0 {
            BodyLength::Empty
        } else {
            BodyLength::Fixed(n)
        }
    }))
}

/// Reads one line (up to `max` bytes, ending in LF) into `buf`; returns the bytes read.
fn read_line(
    r: &mut impl BufRead,
    buf: &mut Vec<u8>,
    max: usize,
    side: &'static str,
) -> Result<usize, HttpError> {
    let n = r
        .take(max as u64 + 1)
        .read_until(b'\n', buf)
        .map_err(|source| HttpError::Io { side, source })?;
    if n > max {
        return Err(HttpError::Malformed(format!(
            "{side}: line longer than {max} bytes"
        )));
    }
    Ok(n)
}

/// Reads a message head; `None` when the peer closed (or sent only blank lines) before it.
pub fn read_head(r: &mut impl BufRead, side: &'static str) -> Result<Option<Head>, HttpError> {
    let mut line = Vec::new();
    let mut total = 0;
    // RFC 9112 §2.2: a server ignores at least one empty line before a request line.
    loop {
        line.clear();
        let n = read_line(r, &mut line, MAX_LINE, side)?;
        if n == 0 {
            return Ok(None);
        }
        total += n;
        if trim_eol(&line).is_empty() && total < MAX_LINE {
            continue;
        }
        break;
    }
    let start_text = text(trim_eol(&line))?;
    let mut parts = start_text.splitn(3, ' ');
    let start = [
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    ];
    if start.iter().take(2).any(String::is_empty) {
        return Err(HttpError::Malformed(format!(
            "{side}: start line {start_text:?}"
        )));
    }
    let mut headers = Vec::new();
    loop {
        line.clear();
        let n = read_line(r, &mut line, MAX_LINE, side)?;
        if n == 0 {
            return Err(HttpError::Truncated(side));
        }
        total += n;
        if total > MAX_HEAD {
            return Err(HttpError::Malformed(format!(
                "{side}: head over {MAX_HEAD} bytes"
            )));
        }
        let field = trim_eol(&line);
        if field.is_empty() {
            break;
        }
        if field.starts_with(b" ") || field.starts_with(b"\t") {
            return Err(HttpError::Malformed(format!(
                "{side}: obsolete line folding"
            )));
        }
        let field = text(field)?;
        let (name, value) = field
            .split_once(':')
            .ok_or_else(|| HttpError::Malformed(format!("{side}: header line {field:?}")))?;
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(HttpError::Malformed(format!(
                "{side}: header name {name:?}"
            )));
        }
        headers.push((name.to_string(), value.trim().to_string()));
    }
    Ok(Some(Head { start, headers }))
}

/// The line without its CRLF or LF.
fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// A head line as text.
fn text(bytes: &[u8]) -> Result<&str, HttpError> {
    std::str::from_utf8(bytes).map_err(|_| HttpError::Malformed("head is not UTF-8".into()))
}

/// Copies a body of framing `length` from `from` (the `src` side) to `to` (the `dst` side).
pub fn relay_body(
    length: BodyLength,
    from: &mut impl BufRead,
    to: &mut impl Write,
    src: &'static str,
    dst: &'static str,
) -> Result<(), HttpError> {
    let write_err = |source| HttpError::Io { side: dst, source };
    match length {
        BodyLength::Empty => Ok(()),
        BodyLength::Fixed(n) => copy_exact(from, to, n, src, dst),
        BodyLength::UntilClose => io::copy(from, to)
            .map(drop)
            .map_err(|source| HttpError::Io { side: src, source }),
        BodyLength::Chunked => {
            let mut line = Vec::new();
            loop {
                line.clear();
                if read_line(from, &mut line, MAX_LINE, src)? == 0 {
                    return Err(HttpError::Truncated(src));
                }
                to.write_all(&line).map_err(write_err)?;
                let size_text = text(trim_eol(&line))?;
                let size_hex = size_text.split(';').next().unwrap_or("").trim();
                let size = u64::from_str_radix(size_hex, 16)
                    .map_err(|_| HttpError::Malformed(format!("chunk size {size_text:?}")))?;
                if size == 0 {
                    break;
                }
                // The chunk and its CRLF.
                copy_exact(from, to, size + 2, src, dst)?;
            }
            // Trailer fields, then the final empty line.
            loop {
                line.clear();
                if read_line(from, &mut line, MAX_LINE, src)? == 0 {
                    return Err(HttpError::Truncated(src));
                }
                to.write_all(&line).map_err(write_err)?;
                if trim_eol(&line).is_empty() {
                    return Ok(());
                }
            }
        }
    }
}

/// Copies exactly `n` bytes.
fn copy_exact(
    from: &mut impl BufRead,
    to: &mut impl Write,
    n: u64,
    src: &'static str,
    dst: &'static str,
) -> Result<(), HttpError> {
    let mut left = n;
    while left > 0 {
        let chunk = from
            .fill_buf()
            .map_err(|source| HttpError::Io { side: src, source })?;
        if chunk.is_empty() {
            return Err(HttpError::Truncated(src));
        }
        let take = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        to.write_all(&chunk[..take])
            .map_err(|source| HttpError::Io { side: dst, source })?;
        from.consume(take);
        left -= take as u64;
    }
    Ok(())
}

/// A complete response the router makes itself (errors, 100 Continue).
pub fn simple_response(status: u16, reason: &str, body: &str, close: bool) -> Vec<u8> {
    let connection = if close { "close" } else { "keep-alive" };
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;

    fn head(raw: &str) -> Head {
        read_head(&mut BufReader::new(raw.as_bytes()), "client")
            .expect("parse")
            .expect("a head")
    }

    #[test]
    fn request_framing_and_persistence() {
        let h = head("\r\nPOST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello");
        assert_eq!(h.method(), "POST");
        assert_eq!(h.request_body().expect("framing"), BodyLength::Fixed(5));
        assert!(h.request_keeps_alive());
        let h = head("GET / HTTP/1.0\r\n\r\n");
        assert!(!h.request_keeps_alive());
        assert_eq!(h.request_body().expect("framing"), BodyLength::Empty);
        let h = head("GET / HTTP/1.1\r\nConnection: Keep-Alive, Close\r\n\r\n");
        assert!(!h.request_keeps_alive());
        let h = head("PUT / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!(h.request_body().expect("framing"), BodyLength::Chunked);
        let h = head("PUT / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
        assert!(h.request_body().is_err());
    }

    #[test]
    fn response_framing() {
        let h = head("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(h.response_body("GET").expect("f"), BodyLength::UntilClose);
        assert_eq!(h.response_body("HEAD").expect("f"), BodyLength::Empty);
        let h = head("HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n");
        assert_eq!(h.response_body("GET").expect("f"), BodyLength::Empty);
    }

    #[test]
    fn malformed_heads_are_refused() {
        for raw in [
            "GET\r\n\r\n",
            "GET / HTTP/1.1\r\nNo colon here\r\n\r\n",
            "GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\n",
        ] {
            assert!(
                read_head(&mut BufReader::new(raw.as_bytes()), "client").is_err(),
                "{raw:?} accepted"
            );
        }
        let empty = read_head(&mut BufReader::new(&b""[..]), "client").expect("clean close");
        assert!(empty.is_none());
    }

    #[test]
    fn chunked_bodies_relay_exactly_and_stop_at_their_end() {
        let raw = b"4;ext=1\r\nwiki\r\n5\r\npedia\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        let mut from = BufReader::new(&raw[..]);
        let mut to = Vec::new();
        relay_body(
            BodyLength::Chunked,
            &mut from,
            &mut to,
            "client",
            "upstream",
        )
        .expect("relay");
        assert_eq!(&to[..], &raw[..raw.len() - 4]);
        let mut rest = String::new();
        from.read_to_string(&mut rest).expect("rest");
        assert_eq!(rest, "NEXT");
    }

    #[test]
    fn a_short_fixed_body_is_truncated() {
        let mut to = Vec::new();
        let err = relay_body(
            BodyLength::Fixed(10),
            &mut BufReader::new(&b"abc"[..]),
            &mut to,
            "client",
            "upstream",
        )
        .expect_err("short");
        assert!(matches!(err, HttpError::Truncated("client")));
    }
}
