//! End-to-end tests of `kiln vendor build`: each recipe builds from an empty store, the images
//! run (kiln's runtime over an umoci-unpacked bundle),
//! services answer real clients, builds are reproducible, and bad input leaves nothing tagged.

mod vendor_support;

use std::path::PathBuf;
use std::process::Command;

use kiln_testkit::common::{shared_deb_cache, Sandbox};
use vendor_support::{
    assert_no_scratch, build, build_in, eventually, judge, recipes, stdout_if_ok, tags, Container,
};

#[test]
fn busybox_builds_runs_and_passes_the_layout_judge() {
    let sb = Sandbox::new();
    let report = build(&sb, "busybox");
    let digest = report["recipe_digest"].as_str().expect("recipe digest");
    let mut got = tags(&sb);
    got.sort();
    assert_eq!(
        got,
        vec![format!("busybox:{digest}"), "busybox:latest".to_string()]
    );
    let out = Container::new(
        &sb,
        "busybox:latest",
        Some(&["busybox", "sh", "-c", "echo ok"]),
    )
    .run();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok\n",
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Applet links were made at build time: `ls` is a link to busybox.
    let out = Container::new(
        &sb,
        "busybox:latest",
        Some(&["/bin/sh", "-c", "readlink /bin/ls"]),
    )
    .run();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("busybox"),
        "{out:?}"
    );
    judge(&sb, "busybox:latest");
}

#[test]
fn python_image_imports_redis_and_has_pip_and_ca_bundle() {
    let sb = Sandbox::new();
    build(&sb, "python");
    let c = Container::new(
        &sb,
        "python:latest",
        Some(&[
            "python3",
            "-c",
            "import redis; print('redis', redis.__version__)",
        ]),
    );
    let out = c.run();
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("redis "),
        "{out:?}"
    );
    // pip is there for the pip build flavor, and TLS has the trusted CA bundle that
    // update-ca-certificates would have made.
    let check = "import ssl, pip; n = len(ssl.create_default_context().get_ca_certs()); print('pip', n > 100)";
    let out = Container::new(&sb, "python:latest", Some(&["python3", "-c", check])).run();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "pip True\n",
        "{out:?}"
    );
    judge(&sb, "python:latest");
}

#[test]
fn redis_image_serves_ping_to_a_client() {
    let sb = Sandbox::new();
    let report = build(&sb, "redis");
    // Shares the base layer with every image built on `base`.
    assert!(
        report["layers"][0]["created_by"]
            .as_str()
            .unwrap_or("")
            .contains("base:"),
        "{report}"
    );
    let out = Container::new(&sb, "redis:latest", Some(&["redis-server", "--version"])).run();
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("Redis server v="),
        "{out:?}"
    );

    // The image's own command: redis in the foreground on 0.0.0.0:6379, as user redis.
    let c = Container::new(&sb, "redis:latest", None);
    c.start();
    let pong = eventually("redis-cli ping", || {
        stdout_if_ok(
            c.rt()
                .args(["exec", &c.id, "redis-cli", "-h", "127.0.0.1", "ping"])
                .output()
                .ok()?,
        )
    });
    assert_eq!(pong.trim(), "PONG");
    judge(&sb, "redis:latest");
}

#[test]
fn nginx_image_serves_http_to_a_client() {
    let sb = Sandbox::new();
    build(&sb, "nginx");
    let c = Container::new(&sb, "nginx:latest", None);
    let pid = c.start();
    // The client runs on the host in the container's network namespace.
    let body = eventually("GET http://127.0.0.1:8080/", || {
        let out = Command::new("nsenter")
            .arg(format!("--net=/proc/{pid}/ns/net"))
            .args(["/bin/busybox", "wget", "-qO-", "http://127.0.0.1:8080/"])
            .output()
            .ok()?;
        stdout_if_ok(out)
    });
    assert!(body.contains("kiln nginx ok"), "{body}");
    judge(&sb, "nginx:latest");
}

#[test]
fn two_fresh_stores_give_the_same_manifest_digest() {
    for name in ["busybox", "redis"] {
        let (a, b) = (Sandbox::new(), Sandbox::new());
        let (ra, rb) = (build(&a, name), build(&b, name));
        assert_eq!(
            ra["manifest_digest"], rb["manifest_digest"],
            "{name} is not reproducible"
        );
        assert_eq!(ra["layers"], rb["layers"]);
        // Everything was cached by the first build: the second downloads nothing.
        assert_eq!(rb["downloaded"], 0, "{name}: second build downloaded .debs");
    }
}

#[test]
fn images_on_the_base_share_their_first_layer() {
    let sb = Sandbox::new();
    let (redis, nginx) = (build(&sb, "redis"), build(&sb, "nginx"));
    assert_eq!(redis["layers"][0]["digest"], nginx["layers"][0]["digest"]);
    assert_ne!(redis["layers"][1]["digest"], nginx["layers"][1]["digest"]);
}

#[test]
fn failing_run_step_is_named_and_nothing_is_tagged() {
    let sb = Sandbox::new();
    let body = "packages = [\"busybox-static\"]\n[[run]]\nargs = [\"/bin/busybox\", \"false\"]\n";
    let dir = recipe_dir(&sb, "failing", body);
    let out = build_in(&sb, "failing", &dir, &shared_deb_cache());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("run step") && err.contains("false"), "{err}");
    assert!(tags(&sb).is_empty());
    assert_no_scratch(&sb);
}

/// Writes a recipe `name` with `body` into a fresh recipes dir.
fn recipe_dir(sb: &Sandbox, name: &str, body: &str) -> PathBuf {
    let dir = sb.dir.path().join("recipes");
    std::fs::create_dir_all(&dir).expect("mkdir recipes");
    std::fs::write(dir.join(format!("{name}.toml")), body).expect("write recipe");
    dir
}

#[test]
fn unknown_package_is_named_and_nothing_is_tagged() {
    let sb = Sandbox::new();
    let dir = recipe_dir(
        &sb,
        "bogus",
        "packages = [\"busybox-static\", \"kiln-no-such-package\"]\n",
    );
    let out = build_in(&sb, "bogus", &dir, &shared_deb_cache());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("kiln-no-such-package") && err.contains("unknown"),
        "{err}"
    );
    assert!(tags(&sb).is_empty());
    assert_no_scratch(&sb);
}

#[test]
fn bad_recipe_key_is_named() {
    let sb = Sandbox::new();
    let dir = recipe_dir(
        &sb,
        "typo",
        "packages = [\"busybox-static\"]\npackage = [\"x\"]\n",
    );
    let out = build_in(&sb, "typo", &dir, &shared_deb_cache());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("typo.toml") && err.contains("package"),
        "{err}"
    );
    assert!(tags(&sb).is_empty());
    assert_no_scratch(&sb);
}

#[test]
fn checksum_mismatch_is_named_and_nothing_is_tagged() {
    let sb = Sandbox::new();
    // Learn busybox-static's sha256 from a good build, then plant a corrupt file under that name
    // in a private cache.
    let good = Sandbox::new();
    let report = build(&good, "busybox");
    let sha = report["packages"][0]["sha256"]
        .as_str()
        .expect("sha256")
        .to_string();
    let cache = sb.dir.path().join("debs");
    std::fs::create_dir_all(&cache).expect("mkdir cache");
    let planted = cache.join(format!("{sha}.deb"));
    let mut bytes =
        std::fs::read(shared_deb_cache().join(format!("{sha}.deb"))).expect("cached deb");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&planted, bytes).expect("plant");

    let out = build_in(&sb, "busybox", &recipes(), &cache);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("checksum mismatch") && err.contains("busybox-static") && err.contains(&sha),
        "{err}"
    );
    assert!(tags(&sb).is_empty());
    assert_no_scratch(&sb);
    assert!(!planted.exists(), "the corrupt .deb stays in the cache");
}
