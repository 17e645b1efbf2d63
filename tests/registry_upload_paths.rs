//! Upload paths of `kiln push` the round-trip tests do not take: `--chunk-size` (PATCH chunks,
//! then the closing PUT) against an open plain-HTTP registry (anonymous, no challenge: no
//! `/v2/` probe before each request), and anonymous access to a registry that wants
//! credentials (the deferred login is tried, then a clear 401 naming the registry), and
//! `kiln build --push REGISTRY` (the flag, not kiln.toml's `[registry]`).

mod registry_support;

use kiln_testkit::common::Sandbox;
use registry_support::{build, have_tools, ok, shop, Registry};

/// Writes a layer of `len` bytes that gzip cannot shrink (an xorshift stream) and imports it.
fn import_incompressible(sb: &Sandbox, tag: &str, len: usize) {
    let src = sb.dir.path().join("rootfs");
    std::fs::create_dir_all(&src).expect("mkdir rootfs");
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let data: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect();
    std::fs::write(src.join("noise.bin"), data).expect("write noise");
    sb.ok(&["image", "import", &src.to_string_lossy(), "--tag", tag]);
}

#[test]
fn chunked_push_sends_patches_and_pulls_back_digest_for_digest() {
    if !have_tools(&["docker-registry"]) {
        return;
    }
    let reg = Registry::start(false, false);
    let sb = Sandbox::new();
    import_incompressible(&sb, "noise:v1", 300 * 1024);
    let target = format!("{}/chunks/noise:v1", reg.host);
    let pushed = ok(
        sb.kiln()
            .args(["push", "noise:v1", &target, "--plain-http", "--json"])
            .args(["--chunk-size", "65536"])
            .output()
            .expect("spawn kiln"),
        "chunked push",
    );
    let layer_size = pushed["blobs"][1]["size"].as_u64().expect("layer size");
    assert!(layer_size > 4 * 65536, "{pushed}");
    // Every blob was uploaded; the layer in at least ceil(size / 64 KiB) PATCHes, each 202.
    assert_eq!(pushed["uploaded_blobs"], 2, "{pushed}");
    let log = reg.log();
    let patches = log
        .lines()
        .filter(|l| l.contains("\"PATCH /v2/chunks/noise/blobs/uploads/") && l.contains("\" 202 "))
        .count() as u64;
    assert!(
        patches >= layer_size.div_ceil(65536),
        "{patches} PATCHes for {layer_size} bytes:\n{log}"
    );
    assert_eq!(reg.blob_puts("chunks/noise"), 2, "{log}");
    // An open registry is not probed with GET /v2/ before every request.
    let probes = log.lines().filter(|l| l.contains("\"GET /v2/ ")).count();
    assert_eq!(probes, 0, "anonymous push probed /v2/:\n{log}");

    // Pulled into a fresh store: the same manifest digest and layer bytes.
    let fresh = sb.dir.path().join("fresh-store");
    let pulled = ok(
        sb.kiln()
            .env("KILN_STORE", &fresh)
            .args([
                "pull",
                &target,
                "--tag",
                "noise:v1",
                "--plain-http",
                "--json",
            ])
            .output()
            .expect("spawn kiln"),
        "pull",
    );
    assert_eq!(pulled["digest"], pushed["digest"]);
    let layer = pushed["blobs"][1]["digest"].as_str().expect("digest");
    let hex = layer.trim_start_matches("sha256:");
    let path = |store: &std::path::Path| store.join("oci/blobs/sha256").join(hex);
    assert_eq!(
        std::fs::read(path(&fresh)).expect("pulled layer"),
        std::fs::read(path(&sb.store())).expect("local layer")
    );
}

#[test]
fn anonymous_push_to_a_registry_that_wants_credentials_is_a_clear_401() {
    if !have_tools(&["docker-registry", "htpasswd", "openssl"]) {
        return;
    }
    let reg = Registry::start(true, true);
    let sb = Sandbox::new();
    import_incompressible(&sb, "noise:v1", 4096);
    let target = format!("{}/private/noise:v1", reg.host);
    let out = sb
        .kiln()
        // No auth file anywhere: HOME and the auth file variables point at nothing.
        .env("HOME", sb.dir.path())
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("DOCKER_CONFIG")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("KILN_REGISTRY_CREDS")
        .args(["push", "noise:v1", &target, "--ca"])
        .arg(reg.ca())
        .output()
        .expect("spawn kiln");
    assert!(!out.status.success(), "anonymous push succeeded: {out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "registry {} refused access to private/noise",
            reg.host
        )) && err.contains("anonymously")
            && err.contains("401"),
        "{err}"
    );
    assert_eq!(reg.blob_puts("private/noise"), 0);
}

#[test]
fn build_push_flag_pushes_each_service_to_the_named_registry() {
    if !have_tools(&["docker-registry"]) {
        return;
    }
    let reg = Registry::start(false, false);
    let sb = Sandbox::new();
    let repo = shop(&sb);
    let to = format!("{}/flagged", reg.host);
    let report = build(&sb, &repo, &["--push", &to, "--plain-http"]);
    let web = &report["services"][0];
    let commit = report["commit"].as_str().expect("commit");
    let pushed = &web["pushed"];
    assert_eq!(
        pushed["reference"].as_str(),
        Some(format!("{to}/shop/web:{commit}").as_str()),
        "{report}"
    );
    assert_eq!(pushed["digest"], web["digest"], "{report}");
    // The registry serves that tag at that digest: pulled back into a fresh store.
    let fresh = sb.dir.path().join("fresh-store");
    let pulled = ok(
        sb.kiln()
            .env("KILN_STORE", &fresh)
            .args([
                "pull",
                &format!("{to}/shop/web:{commit}"),
                "--plain-http",
                "--json",
            ])
            .output()
            .expect("spawn kiln"),
        "pull",
    );
    assert_eq!(pulled["digest"], web["digest"]);
}
