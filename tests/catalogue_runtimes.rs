//! The catalogue's runtime images (vendor-images/nodejs, php): each builds to the same digest
//! in two fresh stores, passes the layout judge and runs on kiln's runtime. The php image
//! serves an app the way a deploy runs it (read-only root, code at /app): nginx on 8080 passing
//! PHP to php-fpm over FastCGI, with the common extensions loaded, and stops on SIGTERM.

mod vendor_support;

use std::process::Command;
use std::time::Duration;

use kiln_testkit::common::Sandbox;
use vendor_support::{build, eventually, judge, stdout_if_ok, Container};

/// Builds `name` in `sb` and in a second fresh store; both give the same manifest digest.
fn build_twice(sb: &Sandbox, name: &str) {
    let first = build(sb, name);
    let second = build(&Sandbox::new(), name);
    assert_eq!(
        first["manifest_digest"], second["manifest_digest"],
        "{name} is not reproducible"
    );
    judge(sb, &format!("{name}:latest"));
}

#[test]
fn nodejs_image_runs_node_and_npm() {
    let sb = Sandbox::new();
    build_twice(&sb, "nodejs");
    let out = Container::new(
        &sb,
        "nodejs:latest",
        Some(&[
            "/bin/sh",
            "-c",
            "node -e 'console.log(process.versions.node)' && npm --version",
        ]),
    )
    .run();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let node = lines.next().unwrap_or_default();
    let npm = lines.next().unwrap_or_default();
    assert!(node.starts_with("18."), "node: {out:?}");
    assert!(npm.starts_with("9."), "npm: {out:?}");
}

const INDEX_PHP: &str = r#"<?php
$want = ["pdo_mysql", "pdo_pgsql", "mbstring", "xml", "curl", "gd", "intl", "memcached", "Zend OPcache"];
$missing = array_filter($want, fn($e) => !extension_loaded($e));
echo "php ", PHP_MAJOR_VERSION, ".", PHP_MINOR_VERSION, " uri=", $_SERVER["REQUEST_URI"],
    " missing=[", implode(",", $missing), "] user=", posix_getpwuid(posix_geteuid())["name"], "\n";
"#;

#[test]
fn php_image_serves_an_app_through_nginx_and_php_fpm() {
    let sb = Sandbox::new();
    build_twice(&sb, "php");
    let code = sb.dir.path().join("code");
    std::fs::create_dir_all(code.join("public")).expect("mkdir");
    std::fs::write(code.join("public/index.php"), INDEX_PHP).expect("index.php");
    std::fs::write(code.join("public/hello.txt"), "static ok\n").expect("hello.txt");
    let c = Container::new(
        &sb,
        "php:latest",
        Some(&[
            "/usr/local/bin/kiln-php",
            "--root",
            "public",
            "--passthru",
            "/index.php",
        ]),
    )
    .deployed_like(&code, "/app", &[]);
    let pid = c.start();
    let get = |path: &str| {
        let out = Command::new("nsenter")
            .arg(format!("--net=/proc/{pid}/ns/net"))
            .args(["curl", "-fsS", &format!("http://127.0.0.1:8080{path}")])
            .output()
            .ok()?;
        stdout_if_ok(out)
    };
    // A path that is no file goes to the passthru script.
    let page = eventually("GET /shop/cart", || get("/shop/cart"));
    assert_eq!(
        page.trim(),
        "php 8.2 uri=/shop/cart missing=[] user=www-data",
        "{page}"
    );
    assert_eq!(get("/hello.txt").as_deref(), Some("static ok\n"));
    let composer = Container::new(&sb, "php:latest", Some(&["composer", "--version"])).run();
    assert!(
        String::from_utf8_lossy(&composer.stdout).starts_with("Composer version 2."),
        "{composer:?}"
    );
    c.kill("TERM");
    assert!(
        c.stops_within(Duration::from_secs(10)),
        "SIGTERM did not stop nginx and php-fpm"
    );
}
