//! `base` as a registry reference: `kiln build` pulls it into a fresh store, builds on it, caches
//! by its manifest digest; `[registry]` in kiln.toml pushes the built image and the pushed digest
//! is in `--json`. Against a plain-HTTP registry without auth (`plain_http = true`).

mod registry_support;

use kiln_testkit::common::{git, Sandbox};
use registry_support::{build, have_tools, ok, shop, Registry};

#[test]
fn a_registry_base_is_pulled_on_build_and_the_built_image_is_pushed() {
    if !have_tools(&["docker-registry"]) {
        return;
    }
    let reg = Registry::start(false, false);
    // The python base, built and pushed from another machine's store.
    let origin = Sandbox::new();
    let repo = shop(&origin);
    let base_ref = format!("{}/library/python:3.12", reg.host);
    let base = ok(
        origin
            .kiln()
            .args(["push", "python:latest", &base_ref, "--plain-http", "--json"])
            .output()
            .expect("spawn kiln"),
        "push python",
    );

    // A fresh store: kiln.toml names the base by registry reference and pushes to [registry].
    let sb = Sandbox::new();
    let toml = repo.join("kiln.toml");
    let text = std::fs::read_to_string(&toml).expect("read kiln.toml");
    let text = text.replace("base = \"python\"", &format!("base = \"{base_ref}\""));
    assert!(text.contains(&base_ref));
    let text = format!(
        "{text}\n[registry]\nurl = \"{}/team\"\nplain_http = true\n",
        reg.host
    );
    std::fs::write(&toml, text).expect("write kiln.toml");
    git(&repo, &["commit", "-q", "-am", "base from the registry"]);

    let first = build(&sb, &repo, &["--plain-http"]);
    let web = &first["services"][0];
    assert_eq!(web["cache"], "miss", "{first}");
    let pushed = &web["pushed"];
    assert_eq!(pushed["digest"], web["digest"], "{first}");
    let commit = first["commit"].as_str().expect("commit");
    assert_eq!(
        pushed["reference"].as_str(),
        Some(format!("{}/team/shop/web:{commit}", reg.host).as_str())
    );
    // The base is in the store under its reference, at the digest the registry has.
    let tags = sb.ok(&["image", "ls", "--json"]);
    assert!(tags.contains(&base_ref), "{tags}");
    let inspect = ok(
        sb.kiln()
            .args(["image", "inspect", &base_ref, "--json"])
            .output()
            .expect("spawn kiln"),
        "inspect base",
    );
    assert_eq!(inspect["digest"], base["digest"]);

    // Built again: a hit (the base's digest is in the key and did not change), nothing uploaded.
    let second = build(&sb, &repo, &["--plain-http"]);
    let web2 = &second["services"][0];
    assert_eq!(web2["cache"], "hit", "{second}");
    assert_eq!(web2["pushed"]["uploaded_blobs"], 0, "{second}");
    assert_eq!(web2["pushed"]["digest"], web["digest"]);

    // A base reference the registry does not have: a clear error naming it, nothing tagged.
    let other = Sandbox::new();
    let text = std::fs::read_to_string(&toml).expect("read kiln.toml");
    let missing = format!("{}/library/python:9.9", reg.host);
    std::fs::write(&toml, text.replace(&base_ref, &missing)).expect("write kiln.toml");
    git(&repo, &["commit", "-q", "-am", "a missing base"]);
    let out = other
        .kiln()
        .args(["build", &repo.to_string_lossy(), "--plain-http"])
        .output()
        .expect("spawn kiln");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&missing), "{err}");
    let index = std::fs::read_to_string(other.store().join("oci/index.json")).unwrap_or_default();
    assert!(!index.contains("python"), "{index}");
}
