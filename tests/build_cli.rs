//! `kiln build` end to end: a git repo made in a tempdir, a busybox base image imported into the
//! test's own store (no network), builds and rebuilds checked through `--json`, the store and the
//! runtime state dir.

mod common;

use std::process::Command;

use common::Sandbox;
use kiln_testkit::build_support::{
    assert_nothing_left, busybox_base, names, LoopbackService, Project,
};
use serde_json::Value;

/// A stand-in `python3` for the base image: `python3 -m pip install ... -- PKG...` records each
/// package as a file (deterministically), and tries `$PROBE_PORT` on the loopback if set.
const FAKE_PYTHON: &str = r#"#!/bin/sh
if [ -n "$PROBE_PORT" ]; then echo probe | nc -w 2 127.0.0.1 "$PROBE_PORT"; echo "probe sent"; fi
seen=
for a in "$@"; do
  if [ -n "$seen" ]; then mkdir -p /usr/local/lib/fakepip && echo "$a" > "/usr/local/lib/fakepip/$a"; fi
  [ "$a" = "--" ] && seen=1
done
[ -f requirements.txt ] && mkdir -p /usr/local/lib/fakepip && cp requirements.txt /usr/local/lib/fakepip/from-requirements
echo "installed"
"#;

/// A project in a git repo: kiln.toml + `web/` + `docs/`, committed.
fn project(kiln_toml: &str) -> Project {
    let repo = Project::new();
    repo.write("kiln.toml", kiln_toml);
    repo.write("web/hello.txt", "hello\n");
    repo.write("web/requirements.txt", "toolz\n");
    repo.write("docs/readme.md", "docs\n");
    repo.commit("first");
    repo
}

/// A sandbox whose store has the busybox base (with the fake python3) tagged `busybox:latest`.
fn sandbox() -> Sandbox {
    busybox_base(&[("python3", FAKE_PYTHON)], |_| {})
}

fn toml(hook: &str, extra: &str) -> String {
    format!(
        r#"project = "demo"

[services.web]
base = "busybox"
source = "web"
start = "cat /app/hello.txt"
port = 8000
{extra}
[services.web.build]
flavor = "pip"
dependencies = {{ pip = ["toolz"] }}
hook = "{hook}"
timeout = 20
"#
    )
}

const HOOK: &str = "mkdir -p gen && cat hello.txt > gen/page.txt && echo built-page";

/// Runs `kiln build REPO --json [extra]`; returns the parsed report (panics on failure).
fn build(sb: &Sandbox, repo: &Project, extra: &[&str]) -> Value {
    let path = repo.path().to_string_lossy().into_owned();
    let mut args = vec!["build", path.as_str(), "--json"];
    args.extend_from_slice(extra);
    let out = sb.ok(&args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("bad JSON ({e}): {out}"))
}

fn web(report: &Value) -> &Value {
    &report["services"][0]
}

fn step<'a>(service: &'a Value, name: &str) -> &'a Value {
    service["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {service}"))
}

/// The paths in a layer blob of the sandbox's store.
fn layer_entries(sb: &Sandbox, digest: &Value) -> Vec<String> {
    let hex = digest
        .as_str()
        .expect("digest")
        .trim_start_matches("sha256:");
    let blob = sb.store().join("oci/blobs/sha256").join(hex);
    let out = Command::new("tar")
        .arg("tzf")
        .arg(&blob)
        .output()
        .expect("tar");
    assert!(out.status.success(), "tar tzf {}", blob.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_end_matches('/').to_string())
        .collect()
}

fn tags(sb: &Sandbox) -> Vec<String> {
    let index: Value = serde_json::from_slice(
        &std::fs::read(sb.store().join("oci/index.json")).expect("index.json"),
    )
    .expect("index JSON");
    index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .map(str::to_string)
        .collect()
}

#[test]
fn a_second_build_at_the_same_commit_is_a_hit_and_starts_no_container() {
    let sb = sandbox();
    let repo = project(&toml(HOOK, ""));
    let first = build(&sb, &repo, &[]);
    assert_eq!(web(&first)["cache"], "miss");
    assert_eq!(
        first["containers"], 3,
        "dependencies, flavor, hook: {first}"
    );
    assert_nothing_left(&sb);

    let second = build(&sb, &repo, &[]);
    assert_eq!(web(&second)["cache"], "hit");
    assert_eq!(web(&second)["digest"], web(&first)["digest"]);
    assert_eq!(second["containers"], 0);
    assert_eq!(web(&second)["steps"].as_array().map(Vec::len), Some(0));
    assert_nothing_left(&sb);

    // The image runs what the hook made, with the config the plan asked for.
    let tag = web(&first)["image"].as_str().expect("image").to_string();
    let inspect: Value =
        serde_json::from_str(&sb.ok(&["image", "inspect", &tag, "--json"])).expect("inspect JSON");
    let cfg = &inspect["config"]["config"];
    assert_eq!(cfg["WorkingDir"], "/app");
    assert_eq!(cfg["Cmd"][2], "cat /app/hello.txt");
    assert_eq!(cfg["ExposedPorts"]["8000/tcp"], serde_json::json!({}));
    assert_eq!(cfg["Labels"]["dev.kiln.commit"], first["commit"]);
    let log = sb.ok(&["build", "log", "demo", "web"]);
    assert!(log.contains("built-page"), "log: {log}");
}

#[test]
fn only_a_change_inside_the_source_folder_rebuilds_and_the_dependencies_layer_is_reused() {
    let sb = sandbox();
    let repo = project(&toml(HOOK, ""));
    let first = build(&sb, &repo, &[]);

    repo.write("docs/readme.md", "more docs\n");
    let c2 = repo.commit("docs only");
    let second = build(&sb, &repo, &[]);
    assert_eq!(web(&second)["cache"], "hit");
    assert_eq!(web(&second)["digest"], web(&first)["digest"]);
    assert_eq!(second["containers"], 0);
    assert!(tags(&sb).contains(&format!("demo/web:{c2}")));

    repo.write("web/hello.txt", "hello again\n");
    repo.commit("code change");
    let third = build(&sb, &repo, &[]);
    let w = web(&third);
    assert_eq!(w["cache"], "miss");
    assert_ne!(w["digest"], web(&first)["digest"]);
    assert_eq!(step(w, "dependencies")["cache"], "hit");
    assert_eq!(
        step(w, "dependencies")["layer"],
        step(web(&first), "dependencies")["layer"]
    );
    // The flavor step reads only requirements.txt: reused too, and the file it read is not in
    // its layer (it was an input below the upper dir, not a change).
    assert_eq!(step(w, "flavor")["cache"], "hit");
    assert_eq!(
        step(w, "flavor")["layer"],
        step(web(&first), "flavor")["layer"]
    );
    let flavor = layer_entries(&sb, &step(w, "flavor")["layer"]);
    assert!(
        flavor.contains(&"usr/local/lib/fakepip/from-requirements".to_string()),
        "{flavor:?}"
    );
    assert!(!flavor.iter().any(|e| e.starts_with("app")), "{flavor:?}");
    assert_eq!(step(w, "code")["cache"], "miss");
    assert_eq!(step(w, "hook")["cache"], "miss");
    assert_eq!(third["containers"], 1, "only the hook runs: {third}");
    assert_nothing_left(&sb);
}

#[test]
fn two_fresh_stores_build_the_same_commit_to_the_same_digests() {
    let repo = project(&toml(HOOK, ""));
    let a = build(&sandbox(), &repo, &[]);
    let b = build(&sandbox(), &repo, &[]);
    assert_eq!(web(&a)["cache"], "miss");
    assert_eq!(web(&b)["cache"], "miss");
    for s in ["dependencies", "code", "flavor", "hook", "config"] {
        assert_eq!(step(web(&a), s)["layer"], step(web(&b), s)["layer"], "{s}");
    }
    assert_eq!(web(&a)["digest"], web(&b)["digest"]);
}

#[test]
fn neither_the_hook_nor_the_network_steps_reach_a_host_loopback_port() {
    let service = LoopbackService::start();
    let port = service.port;
    let hook = format!(
        "if echo hi | nc -w 2 127.0.0.1 {port}; then echo REACHED; exit 1; else echo unreachable; fi"
    );
    let sb = sandbox();
    let extra = format!("env = {{ PROBE_PORT = \"{port}\" }}\n");
    let repo = project(&toml(&hook, &extra));
    let report = build(&sb, &repo, &[]);
    assert_eq!(web(&report)["cache"], "miss");
    let log = sb.ok(&["build", "log", "demo", "web"]);
    assert!(log.contains("unreachable"), "log: {log}");
    assert!(!log.lines().any(|l| l == "REACHED"), "log: {log}");
    // The dependencies and flavor steps have a network of their own (slirp4netns), which does
    // not lead to the host's loopback: they tried (twice) and nothing arrived.
    assert_eq!(log.matches("probe sent").count(), 2, "log: {log}");
    assert_eq!(service.received(), Vec::<String>::new(), "log: {log}");
}

#[test]
fn concurrent_builds_of_one_commit_build_once_and_agree() {
    let sb = sandbox();
    let repo = project(&toml(HOOK, ""));
    let path = repo.path().to_string_lossy().into_owned();
    let spawn = || {
        sb.kiln()
            .args(["build", &path, "--json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn kiln")
    };
    let (a, b) = (spawn(), spawn());
    let reports: Vec<Value> = [a, b]
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().expect("wait");
            assert!(out.status.success(), "{out:?}");
            serde_json::from_slice(&out.stdout).expect("JSON")
        })
        .collect();
    assert_eq!(web(&reports[0])["digest"], web(&reports[1])["digest"]);
    let containers: u64 = reports
        .iter()
        .map(|r| r["containers"].as_u64().expect("count"))
        .sum();
    assert_eq!(
        containers, 3,
        "one build ran dependencies, flavor and hook, the other waited: {reports:?}"
    );
    assert_nothing_left(&sb);
}

#[test]
fn a_failing_hook_names_service_and_step_shows_its_last_lines_and_leaves_nothing() {
    let sb = sandbox();
    let repo = project(&toml("echo first-line; echo last-words >&2; exit 3", ""));
    let cache_before = names(&sb.store().join("cache"));
    let tags_before = tags(&sb);
    let path = repo.path().to_string_lossy().into_owned();
    let out = sb.run(&["build", &path]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("service `web`, step `hook`"), "{err}");
    assert!(err.contains("status 3"), "{err}");
    assert!(err.contains("last-words"), "{err}");
    assert_eq!(tags(&sb), tags_before, "nothing tagged");
    assert_eq!(
        names(&sb.store().join("cache")),
        cache_before,
        "cache unchanged"
    );
    assert_nothing_left(&sb);
    let log = sb.ok(&["build", "log", "demo", "web"]);
    assert!(
        log.contains("first-line") && log.contains("last-words"),
        "{log}"
    );
}

#[test]
fn a_hook_past_its_timeout_is_killed_and_leaves_nothing() {
    let sb = sandbox();
    let repo = project(&toml(HOOK, "").replace(
        &format!("hook = \"{HOOK}\"\ntimeout = 20"),
        "hook = \"echo waiting; sleep 60\"\ntimeout = 1",
    ));
    let path = repo.path().to_string_lossy().into_owned();
    let out = sb.run(&["build", &path]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("step `dependencies`") || err.contains("step `hook`"),
        "{err}"
    );
    assert!(err.contains("timed out after 1 s"), "{err}");
    assert!(tags(&sb).iter().all(|t| !t.starts_with("demo/")));
    assert_nothing_left(&sb);
}

#[test]
fn steps_see_the_kiln_variables_of_a_branch_and_of_a_pull_request_build() {
    let sb = sandbox();
    let hook = "echo type=$KILN_BUILD_TYPE branch=$KILN_GIT_BRANCH sha=$KILN_GIT_SHA \
                pr=$KILN_PR_BASE_SHA..$KILN_PR_HEAD_SHA title=$KILN_PR_TITLE";
    let repo = project(&toml(hook, ""));
    let main = repo.git(&["rev-parse", "HEAD"]);
    build(&sb, &repo, &["--branch", "main"]);
    let log = sb.ok(&["build", "log", "demo", "web", "--commit", &main]);
    assert!(
        log.contains(&format!("type=branch branch=main sha={main} pr=.. title=")),
        "{log}"
    );

    repo.git(&["checkout", "-q", "-b", "feature"]);
    repo.write("web/feature.txt", "new\n");
    let head = repo.commit("feature");
    let report = build(
        &sb,
        &repo,
        &[
            "--pr-base",
            &main,
            "--pr-head",
            &head,
            "--pr-title",
            "Add feature",
            "--branch",
            "feature",
        ],
    );
    assert_eq!(web(&report)["image"], format!("demo/web:{head}"));
    let log = sb.ok(&["build", "log", "demo", "web", "--commit", &head]);
    assert!(
        log.contains(&format!(
            "type=pullrequest branch=feature sha={head} pr={main}..{head} title=Add feature"
        )),
        "{log}"
    );
}

#[test]
fn an_unknown_base_image_is_an_error_naming_the_service() {
    let sb = sandbox();
    let repo = project(&toml(HOOK, "").replace("base = \"busybox\"", "base = \"nope\""));
    let path = repo.path().to_string_lossy().into_owned();
    let out = sb.run(&["build", &path]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("service `web`") && err.contains("`nope:latest`"),
        "{err}"
    );
}
