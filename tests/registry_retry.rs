//! Retries and resume: a proxy in front of a plain-HTTP registry answers the first request of
//! every other connection with 503 (or 502/504) and closes it, or cuts every blob download that
//! starts at byte 0 after a few KiB; `kiln push` and `kiln pull` still move the image whole
//! (same digest), a cut download resumes with a Range request, and the proxy did interfere.

mod registry_support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use kiln_testkit::common::Sandbox;
use registry_support::{have_tools, ok, Registry};

/// How the proxy misbehaves.
#[derive(Clone, Copy)]
enum Fault {
    /// Every other connection gets a gateway error for its first request.
    Gateway,
    /// A blob GET whose range starts at 0 is cut after this many response bytes.
    Cut(u64),
}

/// Forwards connections to `upstream`, misbehaving as `fault` says; counts what it broke.
fn flaky_proxy(upstream: String, fault: Fault, failed: Arc<AtomicUsize>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
    let addr = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().enumerate() {
            let Ok(mut client) = conn else { continue };
            if matches!(fault, Fault::Gateway) && n % 2 == 0 {
                let mut buf = [0u8; 4096];
                let _ = client.read(&mut buf);
                let code = [
                    "503 Service Unavailable",
                    "502 Bad Gateway",
                    "504 Gateway Timeout",
                ][failed.fetch_add(1, Ordering::SeqCst) % 3];
                let _ = client.write_all(
                    format!("HTTP/1.1 {code}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                );
                let _ = client.shutdown(Shutdown::Both);
                continue;
            }
            let Ok(mut server) = TcpStream::connect(&upstream) else {
                continue;
            };
            let (mut c2, mut s2) = match (client.try_clone(), server.try_clone()) {
                (Ok(c), Ok(s)) => (c, s),
                _ => continue,
            };
            // A blob request from byte 0 cuts the answer to it short (requests on one
            // connection are sequential, so the budget applies to that answer).
            let budget = Arc::new(AtomicU64::new(u64::MAX));
            let (b1, f1) = (budget.clone(), failed.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n @ 1..) = client.read(&mut buf) {
                    let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
                    if let Fault::Cut(bytes) = fault {
                        if head.starts_with("get ")
                            && head.contains("/blobs/sha256:")
                            && head.contains("range: bytes=0-")
                        {
                            f1.fetch_add(1, Ordering::SeqCst);
                            b1.store(bytes, Ordering::SeqCst);
                        }
                    }
                    if server.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = server.shutdown(Shutdown::Write);
            });
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n @ 1..) = s2.read(&mut buf) {
                    let left = budget.load(Ordering::SeqCst);
                    let n64 = n as u64;
                    if left != u64::MAX && n64 >= left {
                        let _ = c2.write_all(&buf[..left as usize]);
                        break;
                    }
                    if left != u64::MAX {
                        budget.store(left - n64, Ordering::SeqCst);
                    }
                    if c2.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = c2.shutdown(Shutdown::Both);
            });
        }
    });
    addr
}

#[test]
fn push_and_pull_ride_out_gateway_errors() {
    if !have_tools(&["docker-registry"]) {
        return;
    }
    let reg = Registry::start(false, false);
    let failed = Arc::new(AtomicUsize::new(0));
    let proxy = flaky_proxy(reg.host.clone(), Fault::Gateway, failed.clone());
    let sb = Sandbox::new();
    let src = sb.dir.path().join("rootfs");
    std::fs::create_dir_all(src.join("etc")).expect("mkdir");
    for i in 0..4 {
        std::fs::write(src.join(format!("etc/f{i}")), format!("{i}\n").repeat(5000))
            .expect("write");
    }
    sb.ok(&[
        "image",
        "import",
        &src.to_string_lossy(),
        "--tag",
        "tiny:v1",
    ]);
    let target = format!("{proxy}/retry/tiny:v1");
    let kiln = |store: &std::path::Path, args: &[&str]| {
        sb.kiln()
            .env("KILN_STORE", store)
            .args(args)
            .args(["--plain-http", "--json", "--jobs", "1"])
            .output()
            .expect("spawn kiln")
    };
    let pushed = ok(kiln(&sb.store(), &["push", "tiny:v1", &target]), "push");
    let fresh = sb.dir.path().join("fresh");
    let pulled = ok(kiln(&fresh, &["pull", &target]), "pull");
    assert_eq!(pulled["digest"], pushed["digest"]);
    assert!(
        failed.load(Ordering::SeqCst) >= 2,
        "the proxy failed no request"
    );
}

#[test]
fn a_cut_blob_download_resumes_with_a_range_request() {
    if !have_tools(&["docker-registry"]) {
        return;
    }
    let reg = Registry::start(false, false);
    let sb = Sandbox::new();
    // Incompressible content, so the layer blob is far bigger than the cut.
    let src = sb.dir.path().join("rootfs");
    std::fs::create_dir_all(&src).expect("mkdir");
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let noise: Vec<u8> = (0..400_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect();
    std::fs::write(src.join("noise"), noise).expect("write");
    sb.ok(&[
        "image",
        "import",
        &src.to_string_lossy(),
        "--tag",
        "noise:v1",
    ]);
    let pushed = ok(
        sb.kiln()
            .args(["push", "noise:v1", &format!("{}/resume/noise:v1", reg.host)])
            .args(["--plain-http", "--json"])
            .output()
            .expect("spawn kiln"),
        "push",
    );
    let cuts = Arc::new(AtomicUsize::new(0));
    let proxy = flaky_proxy(reg.host.clone(), Fault::Cut(64 * 1024), cuts.clone());
    let fresh = sb.dir.path().join("fresh");
    let out = sb
        .kiln()
        .env("KILN_STORE", &fresh)
        .args(["pull", &format!("{proxy}/resume/noise:v1")])
        .args(["--plain-http", "--json"])
        .output()
        .expect("spawn kiln");
    // kiln says where it resumed from (a Range request from there, not a new download).
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("resuming"), "{err}");
    let pulled = ok(out, "pull");
    assert_eq!(pulled["digest"], pushed["digest"]);
    assert!(cuts.load(Ordering::SeqCst) >= 1, "no download was cut");
    let fsck = sb
        .kiln()
        .env("KILN_STORE", &fresh)
        .args(["image", "fsck"])
        .output()
        .expect("fsck");
    assert!(fsck.status.success(), "{fsck:?}");
}
