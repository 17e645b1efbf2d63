//! Network build steps behind this host's TLS-intercepting proxy: a `pip` flavor installing a
//! real package from PyPI fails with only the image's CA bundle (`KILN_BUILD_HOST_TRUST=off`) and
//! succeeds with the host's bundle passed through (the default), and so does an `npm` flavor
//! installing from the npm registry; no layer and no image config holds the host's CA or the
//! proxy settings.

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

/// Builds vendor image `name` into the sandbox's store.
fn vendor(sb: &Sandbox, name: &str) {
    let recipes = Path::new(env!("CARGO_MANIFEST_DIR")).join("vendor-images");
    let out = sb
        .kiln()
        .env("KILN_DEB_CACHE", shared_deb_cache())
        .args(["vendor", "build", name, "--quiet", "--recipes"])
        .arg(&recipes)
        .output()
        .expect("spawn kiln");
    assert!(out.status.success(), "vendor build {name}: {out:?}");
}

/// A git repository of `files` (path, content) in `parent/name`.
fn repo_of(parent: &Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let repo = parent.join(name);
    for (path, text) in files {
        let p = repo.join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", name]);
    repo
}

/// A project whose `pip` flavor installs `six` from PyPI; the hook (no network) imports it.
const PIP_PROJECT: [(&str, &str); 2] = [
    (
        "kiln.toml",
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
    ),
    ("web/requirements.txt", "six==1.17.0\n"),
];

/// A project whose `npm` flavor installs `ms` from the npm registry; the hook requires it.
const NPM_PROJECT: [(&str, &str); 3] = [
    (
        "kiln.toml",
        r#"project = "canpm"

[services.web]
base = "nodejs"
source = "web"
start = "node -e 'require(\"ms\")'"

[services.web.build]
flavor = "npm"
hook = "node -e 'console.log(require(\"ms\")(60000))'"
"#,
    ),
    (
        "web/package.json",
        r#"{"name": "canpm", "version": "1.0.0", "private": true, "dependencies": {"ms": "2.1.3"}}
"#,
    ),
    (
        "web/package-lock.json",
        r#"{
  "name": "canpm",
  "version": "1.0.0",
  "lockfileVersion": 3,
  "requires": true,
  "packages": {
    "": {"name": "canpm", "version": "1.0.0", "dependencies": {"ms": "2.1.3"}},
    "node_modules/ms": {
      "version": "2.1.3",
      "resolved": "https://registry.npmjs.org/ms/-/ms-2.1.3.tgz",
      "integrity": "sha512-6FlzubTLZG3J2a/NVCAleEhjzq5oxgHyaCU9yYXvcLsvoVaHJq/s5xXI6/XXP6tz7R9xAOtHnSO/tXtF3WRTlA=="
    }
  }
}
"#,
    ),
];

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
    vendor(&sb, "python");
    let repo = repo_of(sb.dir.path(), "ca-app", &PIP_PROJECT);
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

    let names = build_with_host_trust(&sb, &repo_arg, no_proxy);
    assert!(
        names.lines().any(|l| l.ends_with("dist-packages/six.py")),
        "six is not in the flavor layer: {names}"
    );
    assert_nothing_kept(&sb, &markers, no_proxy);
}

#[test]
fn npm_flavor_installs_from_the_npm_registry_through_the_host_ca() {
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
    vendor(&sb, "nodejs");
    let repo = repo_of(sb.dir.path(), "ca-npm", &NPM_PROJECT);
    let no_proxy = "kiln-no-proxy-marker.invalid";
    let names = build_with_host_trust(&sb, &repo.to_string_lossy(), no_proxy);
    assert!(
        names
            .lines()
            .any(|l| l == "app/node_modules/ms/package.json"),
        "ms is not in the flavor layer: {names}"
    );
    assert_nothing_kept(&sb, &markers, no_proxy);
}

/// Builds `repo` with the host's trust settings (and `NO_PROXY=no_proxy`); returns the names in
/// the flavor step's layer.
fn build_with_host_trust(sb: &Sandbox, repo_arg: &str, no_proxy: &str) -> String {
    let on = sb
        .kiln()
        .env("NO_PROXY", no_proxy)
        .args(["build", repo_arg, "--json"])
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
    assert!(!names.contains("kiln-host-ca"), "{names}");
    names.into_owned()
}

/// No blob of the store (layers decompressed, configs, manifests) holds the host's CA, the
/// proxy setting or the mounted bundle's path; no config or manifest names a CA or proxy
/// variable.
fn assert_nothing_kept(sb: &Sandbox, markers: &[String], no_proxy: &str) {
    for (path, data) in blobs(&sb.store()) {
        for m in markers {
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
