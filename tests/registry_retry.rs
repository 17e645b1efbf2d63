//! Retries: a proxy in front of a plain-HTTP registry answers the first request of every other
//! connection with 503 (or 502/504) and closes it; `kiln push` and `kiln pull` still move the
//! image whole (same digest), and the proxy did fail requests.

mod registry_support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use kiln_testkit::common::Sandbox;
use registry_support::{have_tools, ok, Registry};

/// Forwards connections to `upstream`; every other connection gets a gateway error instead.
fn flaky_proxy(upstream: String, failed: Arc<AtomicUsize>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
    let addr = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().enumerate() {
            let Ok(mut client) = conn else { continue };
            if n % 2 == 0 {
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
            let Ok(server) = TcpStream::connect(&upstream) else {
                continue;
            };
            let (mut c2, mut s2) = match (client.try_clone(), server.try_clone()) {
                (Ok(c), Ok(s)) => (c, s),
                _ => continue,
            };
            let mut server = server;
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut client, &mut server);
                let _ = server.shutdown(Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s2, &mut c2);
                let _ = c2.shutdown(Shutdown::Write);
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
    let proxy = flaky_proxy(reg.host.clone(), failed.clone());
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
