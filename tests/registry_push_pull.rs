//! `kiln push` / `kiln pull` against Debian's docker-registry with TLS from a test CA and
//! htpasswd basic auth: examples/shop's images round-trip with identical manifest digests,
//! skopeo agrees, a code-only commit uploads only its new layers, a bad password is a clear
//! error, and a blob corrupted in the registry leaves no tag and no blob behind.

mod registry_support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use kiln_testkit::common::{git, Sandbox};
use registry_support::{build, have_tools, json, ok, shop, Registry, PASSWORD, USER};

const TOOLS: &[&str] = &["docker-registry", "htpasswd", "openssl", "skopeo"];

/// `kiln push|pull ARGS --ca CA --json` with `auth` as REGISTRY_AUTH_FILE, against `store`.
fn remote(sb: &Sandbox, store: &Path, reg: &Registry, auth: &Path, args: &[&str]) -> Output {
    sb.kiln()
        .env("KILN_STORE", store)
        .env("REGISTRY_AUTH_FILE", auth)
        .env("HOME", sb.dir.path())
        .args(args)
        .arg("--ca")
        .arg(reg.ca())
        .arg("--json")
        .output()
        .expect("spawn kiln")
}

/// The config and layer digests of an image in a store.
fn blobs_of(sb: &Sandbox, store: &Path, image: &str) -> BTreeSet<String> {
    let out = sb
        .kiln()
        .env("KILN_STORE", store)
        .args(["image", "inspect", image, "--json"])
        .output()
        .expect("spawn kiln");
    let doc = ok(out, "image inspect");
    let m = &doc["manifest"];
    let mut set = BTreeSet::from([m["config"]["digest"].as_str().expect("config").to_string()]);
    for l in m["layers"].as_array().expect("layers") {
        set.insert(l["digest"].as_str().expect("digest").to_string());
    }
    set
}

fn skopeo_inspect(reg: &Registry, reference: &str, raw: bool) -> Vec<u8> {
    let mut c = Command::new("skopeo");
    c.arg("inspect");
    if raw {
        c.arg("--raw");
    }
    let out = c
        .arg("--cert-dir")
        .arg(reg.cert_dir())
        .arg("--creds")
        .arg(format!("{USER}:{PASSWORD}"))
        .arg(format!("docker://{}/{reference}", reg.host))
        .output()
        .expect("spawn skopeo");
    assert!(out.status.success(), "skopeo inspect: {out:?}");
    out.stdout
}

fn sha256(bytes: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(bytes)
        .expect("write");
    let out = child.wait_with_output().expect("sha256sum");
    let text = String::from_utf8_lossy(&out.stdout);
    format!("sha256:{}", text.split_whitespace().next().expect("hex"))
}

#[test]
fn shop_images_round_trip_through_a_tls_registry_and_a_code_only_push_moves_only_new_layers() {
    if !have_tools(TOOLS) {
        return;
    }
    let reg = Registry::start(true, true);
    let sb = Sandbox::new();
    let auth = reg.auth_file("auth.json", PASSWORD);
    let repo = shop(&sb);
    let first = build(&sb, &repo, &[]);
    let web = &first["services"][0];
    let (web_tag, web_digest) = (
        web["image"].as_str().expect("image").to_string(),
        web["digest"].as_str().expect("digest").to_string(),
    );
    let store = sb.store();
    let fresh = sb.dir.path().join("fresh-store");

    // A bad password: a clear error naming the user and the file, and nothing uploaded.
    let wrong = reg.auth_file("wrong.json", "not-the-password");
    let target = format!("{}/shop/web:v1", reg.host);
    let out = remote(&sb, &store, &reg, &wrong, &["push", &web_tag, &target]);
    assert!(!out.status.success(), "push with a bad password succeeded");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refused") && err.contains(USER) && err.contains("wrong.json"),
        "{err}"
    );
    assert_eq!(reg.blob_puts("shop/web"), 0);

    // Cold push of the base image and of web: every blob goes up once, digests are kept.
    let base = ok(
        remote(
            &sb,
            &store,
            &reg,
            &auth,
            &[
                "push",
                "python:latest",
                &format!("{}/kiln/python:3", reg.host),
            ],
        ),
        "push python",
    );
    let python_blobs = blobs_of(&sb, &store, "python:latest");
    assert_eq!(
        base["uploaded_blobs"].as_u64(),
        Some(python_blobs.len() as u64),
        "{base}"
    );
    let pushed = ok(
        remote(
            &sb,
            &store,
            &reg,
            &auth,
            &["push", &web_tag, &target, "--mount-from", "kiln/python"],
        ),
        "push web",
    );
    assert_eq!(pushed["digest"], web_digest.as_str());
    let web_blobs = blobs_of(&sb, &store, &web_tag);
    let mounted = pushed["blobs"]
        .as_array()
        .expect("blobs")
        .iter()
        .filter(|b| b["action"] == "mounted")
        .count();
    // The python layers under web were mounted from kiln/python, not uploaded again.
    assert!(mounted >= python_blobs.len() - 1, "{pushed}");
    let new_for_web = web_blobs.len() - mounted;
    assert_eq!(
        pushed["uploaded_blobs"].as_u64(),
        Some(new_for_web as u64),
        "{pushed}"
    );
    assert_eq!(reg.blob_puts("shop/web"), new_for_web);

    // skopeo reads the same manifest, byte for byte.
    let raw = skopeo_inspect(&reg, "shop/web:v1", true);
    assert_eq!(sha256(&raw), web_digest);
    let inspect = json(&skopeo_inspect(&reg, "shop/web:v1", false));
    assert_eq!(inspect["Digest"], web_digest.as_str());

    // Pull into a fresh store: the same manifest digest, and fsck is clean.
    let pulled = ok(
        remote(
            &sb,
            &fresh,
            &reg,
            &auth,
            &["pull", &target, "--tag", "web:v1"],
        ),
        "pull web",
    );
    assert_eq!(pulled["digest"], web_digest.as_str());
    assert_eq!(
        pulled["downloaded_blobs"].as_u64(),
        Some(web_blobs.len() as u64)
    );
    assert_eq!(blobs_of(&sb, &fresh, "web:v1"), web_blobs);
    let fsck = sb
        .kiln()
        .env("KILN_STORE", &fresh)
        .args(["image", "fsck", "--json"])
        .output()
        .expect("fsck");
    assert!(fsck.status.success(), "fsck: {fsck:?}");

    // A code-only commit: only the layers that changed (and the config) go up.
    let server = repo.join("web/server.py");
    let mut code = std::fs::read_to_string(&server).expect("read server.py");
    code.push_str("\n# a code-only change\n");
    std::fs::write(&server, code).expect("write server.py");
    git(&repo, &["commit", "-q", "-am", "code only"]);
    let second = build(&sb, &repo, &[]);
    let web2 = &second["services"][0];
    let web2_tag = web2["image"].as_str().expect("image").to_string();
    let web2_blobs = blobs_of(&sb, &store, &web2_tag);
    let changed: BTreeSet<&String> = web2_blobs.difference(&web_blobs).collect();
    assert!(
        !changed.is_empty() && changed.len() < web2_blobs.len(),
        "{changed:?}"
    );
    let puts_before = reg.blob_puts("shop/web");
    let target2 = format!("{}/shop/web:v2", reg.host);
    let again = ok(
        remote(&sb, &store, &reg, &auth, &["push", &web2_tag, &target2]),
        "push web v2",
    );
    let uploaded: BTreeSet<String> = again["blobs"]
        .as_array()
        .expect("blobs")
        .iter()
        .filter(|b| b["action"] == "uploaded")
        .map(|b| b["digest"].as_str().expect("digest").to_string())
        .collect();
    assert_eq!(uploaded.iter().collect::<BTreeSet<_>>(), changed, "{again}");
    assert_eq!(reg.blob_puts("shop/web") - puts_before, changed.len());
    let changed_bytes: u64 = again["blobs"]
        .as_array()
        .expect("blobs")
        .iter()
        .filter(|b| b["action"] == "uploaded")
        .map(|b| b["size"].as_u64().expect("size"))
        .sum();
    let total_bytes: u64 = again["blobs"]
        .as_array()
        .expect("blobs")
        .iter()
        .map(|b| b["size"].as_u64().expect("size"))
        .sum();
    assert!(
        changed_bytes < total_bytes / 2,
        "{changed_bytes} of {total_bytes}"
    );

    // Pulling v2 into the store that has v1 fetches only the new blobs.
    let pulled2 = ok(
        remote(&sb, &fresh, &reg, &auth, &["pull", &target2]),
        "pull web v2",
    );
    assert_eq!(pulled2["digest"], web2["digest"]);
    assert_eq!(pulled2["tag"], "shop/web:v2");
    assert_eq!(
        pulled2["downloaded_blobs"].as_u64(),
        Some(changed.len() as u64)
    );
}

#[test]
fn a_blob_corrupted_in_the_registry_leaves_no_tag_and_no_blob() {
    if !have_tools(TOOLS) {
        return;
    }
    let reg = Registry::start(true, true);
    let sb = Sandbox::new();
    let auth = reg.auth_file("auth.json", PASSWORD);
    let src = sb.dir.path().join("rootfs");
    std::fs::create_dir_all(src.join("etc")).expect("mkdir");
    std::fs::write(src.join("etc/hello"), "hello from a layer\n".repeat(1000)).expect("write");
    sb.ok(&[
        "image",
        "import",
        &src.to_string_lossy(),
        "--tag",
        "tiny:v1",
    ]);
    let target = format!("{}/attack/tiny:v1", reg.host);
    let pushed = ok(
        remote(&sb, &sb.store(), &reg, &auth, &["push", "tiny:v1", &target]),
        "push",
    );
    let layer = pushed["blobs"]
        .as_array()
        .expect("blobs")
        .iter()
        .find(|b| b["digest"] != pushed["blobs"][0]["digest"])
        .expect("a layer")["digest"]
        .as_str()
        .expect("digest")
        .to_string();
    // The attacker controls the registry's storage: same length, other bytes.
    let data = reg.blob_data(&layer);
    let mut bytes = std::fs::read(&data).expect("read blob data");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&data, bytes).expect("corrupt blob");

    let fresh = sb.dir.path().join("fresh-store");
    let out = remote(
        &sb,
        &fresh,
        &reg,
        &auth,
        &["pull", &target, "--tag", "tiny:v1"],
    );
    assert!(!out.status.success(), "a corrupt blob was accepted");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&layer), "{err}");
    let index = std::fs::read_to_string(fresh.join("oci/index.json")).expect("index");
    assert!(!index.contains("tiny"), "tagged: {index}");
    let hex = layer.trim_start_matches("sha256:");
    assert!(!fresh.join("oci/blobs/sha256").join(hex).exists());
    let manifest = pushed["digest"]
        .as_str()
        .expect("digest")
        .trim_start_matches("sha256:");
    assert!(!fresh.join("oci/blobs/sha256").join(manifest).exists());
    let tmp: Vec<_> = std::fs::read_dir(fresh.join("tmp"))
        .expect("tmp")
        .flatten()
        .collect();
    assert!(tmp.is_empty(), "left in tmp: {tmp:?}");
}
