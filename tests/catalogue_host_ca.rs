//! Network build steps behind this host's TLS-intercepting proxy: a `pip` flavor installing a
//! real package from PyPI fails with only the image's CA bundle (`KILN_BUILD_HOST_TRUST=off`) and
//! succeeds with the host's bundle passed through (the default); no layer and no image config
//! holds the host's CA or the proxy settings.

use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_testkit::common::{git, shared_deb_cache, Sandbox};

/// A line of base64 from the middle of each host-only CA certificate (not in Debian's bundle).
fn host_ca_markers() -> Vec<String> {
    let dir = Path::new("/usr/local/share/ca-certificates");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let body: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() >= 60)
            .collect();
        if let Some(line) = body.get(body.len() / 2) {
            out.push(line.to_string());
        }
    }
    out
}

/// Builds the python vendor image into the sandbox's store.
fn vendor_python(sb: &Sandbox) {
    let recipes = Path::new(env!("CARGO_MANIFEST_DIR")).join("vendor-images");
    let out = sb
        .kiln()
        .env("KILN_DEB_CACHE", shared_deb_cache())
        .args(["vendor", "build", "python", "--quiet", "--recipes"])
        .arg(&recipes)
        .output()
        .expect("spawn kiln");
    assert!(out.status.success(), "vendor build python: {out:?}");
}

/// A project whose `pip` flavor installs `six` from PyPI; the hook (no network) imports it.
fn project(parent: &Path) -> PathBuf {
    let repo = parent.join("ca-app");
    std::fs::create_dir_all(repo.join("web")).expect("mkdir");
    std::fs::write(
        repo.join("kiln.toml"),
        r#"project = "ca"

[services.web]
base = "python"
source = "web"
start = "python3 -c 'import six'"

[services.web.build]
flavor = "pip"
hook = "python3 -c 'import six; print(six.__version__)'"
env = { PIP_RETRIES = "0", PIP_DEFAULT_TIMEOUT = "30" }
"#,
    )
    .expect("kiln.toml");
    std::fs::write(repo.join("web/requirements.txt"), "six==1.17.0\n").expect("requirements");
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "ca"]);
    repo
}

/// Every blob of the store, decompressed when it is gzip.
fn blobs(store: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = store.join("oci/blobs/sha256");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("blobs dir").flatten() {
        let p = entry.path();
        let raw = std::fs::read(&p).expect("read blob");
        let data = if raw.starts_with(&[0x1f, 0x8b]) {
            let unzipped = Command::new("gzip")
                .args(["-dc"])
                .arg(&p)
                .output()
                .expect("gzip");
            assert!(unzipped.status.success(), "gzip -dc {}", p.display());
            unzipped.stdout
        } else {
            raw
        };
        out.push((p, data));
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn pip_flavor_installs_from_pypi_through_the_host_ca_and_no_layer_keeps_it() {
    let markers = host_ca_markers();
    if markers.is_empty() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set and the host trusts no CA of its own in /usr/local/share/ca-certificates"
        );
        eprintln!("SKIP: no host-only CA in /usr/local/share/ca-certificates");
        return;
    }
    let sb = Sandbox::new();
    vendor_python(&sb);
    let repo = project(sb.dir.path());
    let repo_arg = repo.to_string_lossy().into_owned();
    // A proxy setting that leads nowhere it is used, to see that it is passed on but not kept.
    let no_proxy = "kiln-no-proxy-marker.invalid";

    // Control: with only the image's bundle, PyPI's (intercepted) certificate is not trusted.
    let off = sb
        .kiln()
        .env("KILN_BUILD_HOST_TRUST", "off")
        .args(["build", &repo_arg, "--json"])
        .output()
        .expect("spawn kiln");
    let said = String::from_utf8_lossy(&off.stderr);
    assert!(!off.status.success(), "built without the host CA: {off:?}");
    assert!(
        said.contains("CERTIFICATE_VERIFY_FAILED") || said.contains("certificate verify failed"),
        "{said}"
    );

    let on = sb
        .kiln()
        .env("NO_PROXY", no_proxy)
        .args(["build", &repo_arg, "--json"])
        .output()
        .expect("spawn kiln");
    assert!(
        on.status.success(),
        "build with the host CA failed: {}",
        String::from_utf8_lossy(&on.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&on.stdout).expect("JSON report");
    let steps = report["services"][0]["steps"].as_array().expect("steps");
    let flavor = steps
        .iter()
        .find(|s| s["name"] == "flavor")
        .expect("flavor step");
    let layer = flavor["layer"].as_str().expect("layer");
    let blob = sb
        .store()
        .join("oci/blobs/sha256")
        .join(layer.trim_start_matches("sha256:"));
    let list = Command::new("tar")
        .arg("tzf")
        .arg(&blob)
        .output()
        .expect("tar");
    let names = String::from_utf8_lossy(&list.stdout);
    assert!(
        names.lines().any(|l| l.ends_with("dist-packages/six.py")),
        "six is not in the flavor layer: {names}"
    );
    assert!(!names.contains("kiln-host-ca"), "{names}");

    for (path, data) in blobs(&sb.store()) {
        for m in &markers {
            assert!(
                !contains(&data, m.as_bytes()),
                "{} holds the host's CA ({m})",
                path.display()
            );
        }
        for m in [no_proxy, "kiln-host-ca"] {
            assert!(
                !contains(&data, m.as_bytes()),
                "{} holds {m}",
                path.display()
            );
        }
        // Configs and manifests (JSON) name no CA or proxy variable.
        if data.starts_with(b"{") {
            for m in ["SSL_CERT_FILE", "PIP_CERT", "NODE_EXTRA_CA_CERTS", "PROXY"] {
                assert!(
                    !contains(&data, m.as_bytes()),
                    "{} holds {m}",
                    path.display()
                );
            }
        }
    }
}
