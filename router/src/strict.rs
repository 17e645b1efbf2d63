//! The few request checks the ingress makes itself, before and beside hyper's parser
//! (RFC 9112-strict on its own): hyper accepts a request with both Content-Length and
//! Transfer-Encoding (chunked wins, the length is dropped and the connection closed after),
//! and takes a bare LF as a line end. The ingress refuses both outright (400 and close) in the
//! first request head of a connection, which it reads itself before handing the bytes to
//! hyper; in later heads hyper's own handling applies, which cannot desync an upstream (the
//! body is re-framed and the connection ends). Transfer-Encoding other than one `chunked`
//! and duplicate fields are refused per request (see [`check_framing`]).

use http::HeaderMap;

/// Longest first head the ingress reads itself.
pub const MAX_HEAD: usize = 64 * 1024;

/// What is wrong with a request head, for the 400 body.
pub type Why = &'static str;

/// Where the first head ends (just past its blank line), if it is complete in `buf`.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    let mut at = 0;
    while let Some(i) = buf[at..].iter().position(|&b| b == b'\n') {
        let nl = at + i;
        // An empty line: "\n" right after the previous line's "\n" (or "\r\n").
        if nl > 0
            && (buf[nl - 1] == b'\n' || (nl > 1 && buf[nl - 1] == b'\r' && buf[nl - 2] == b'\n'))
        {
            return Some(nl + 1);
        }
        at = nl + 1;
    }
    None
}

/// Checks the raw bytes of a request head: every line ends in CRLF, no NUL or bare CR, and
/// not both Content-Length and Transfer-Encoding.
pub fn check_head(head: &[u8]) -> Result<(), Why> {
    for (i, &b) in head.iter().enumerate() {
        match b {
            0 => return Err("NUL byte in request head"),
            b'\r' if head.get(i + 1) != Some(&b'\n') => return Err("bare CR in request head"),
            b'\n' if i == 0 || head[i - 1] != b'\r' => return Err("bare LF in request head"),
            _ => {}
        }
    }
    let mut cl = false;
    let mut te = false;
    for line in head.split(|&b| b == b'\n').skip(1) {
        let name = line.split(|&b| b == b':').next().unwrap_or_default();
        if line.len() > name.len() {
            cl |= name.eq_ignore_ascii_case(b"content-length");
            te |= name.eq_ignore_ascii_case(b"transfer-encoding");
        }
    }
    if cl && te {
        return Err("both Content-Length and Transfer-Encoding");
    }
    Ok(())
}

/// Checks a parsed request's framing fields: at most one Transfer-Encoding, exactly
/// `chunked`; at most one Content-Length value.
pub fn check_framing(headers: &HeaderMap) -> Result<(), Why> {
    let mut te = headers.get_all(http::header::TRANSFER_ENCODING).iter();
    if let Some(v) = te.next() {
        if te.next().is_some() {
            return Err("more than one Transfer-Encoding field");
        }
        if !v.as_bytes().eq_ignore_ascii_case(b"chunked") {
            return Err("Transfer-Encoding other than a single \"chunked\"");
        }
        if headers.contains_key(http::header::CONTENT_LENGTH) {
            return Err("both Content-Length and Transfer-Encoding");
        }
    }
    if headers.get_all(http::header::CONTENT_LENGTH).iter().count() > 1 {
        return Err("more than one Content-Length field");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_end_at_the_blank_line_and_bad_bytes_are_named() {
        let ok = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nNEXT";
        assert_eq!(head_end(ok), Some(ok.len() - 4));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
        assert_eq!(head_end(b"GET / HTTP/1.1\nHost: a\n\nX"), Some(24));
        check_head(&ok[..ok.len() - 4]).expect("clean head");
        for (head, says) in [
            (&b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n"[..], "bare CR"),
            (b"GET / HTTP/1.1\nX: a\r\n\r\n", "bare LF"),
            (b"GET / HTTP/1.1\r\nX: a\0\r\n\r\n", "NUL"),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 4\r\ntransfer-encoding: chunked\r\n\r\n",
                "both",
            ),
        ] {
            assert!(check_head(head).expect_err(says).contains(says));
        }
    }
}
