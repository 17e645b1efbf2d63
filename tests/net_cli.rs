//! `kiln net` as a user runs it: apply a topology file, show it, tear it down; bad input.

use kiln_testkit::common::{unique, Sandbox};

/// Mount points under `dir` (from /proc/self/mountinfo).
fn mounts_under(dir: &std::path::Path) -> Vec<String> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(dir.to_str().expect("utf-8 path")))
        .map(str::to_string)
        .collect()
}

/// A TOML topology with prefixed service names: app → db, app → cache, worker → db.
fn topology_toml(p: &str) -> String {
    format!(
        r#"services = ["{p}app", "{p}db", "{p}cache", "{p}worker"]

[[edges]]
from = "{p}app"
name = "database"
to = "{p}db"
port = 5432
scheme = "pgsql"

[[edges]]
from = "{p}app"
name = "redis"
to = "{p}cache"
port = 6379
scheme = "redis"

[[edges]]
from = "{p}worker"
name = "database"
to = "{p}db"
port = 5432
scheme = "pgsql"
"#
    )
}

#[test]
fn apply_show_teardown() {
    let sb = Sandbox::new();
    let p = unique("c").replace('-', "x");
    let env = unique("e");
    let file = sb.dir.path().join("topology.toml");
    std::fs::write(&file, topology_toml(&p)).expect("write topology");
    let pool = format!("10.{}.{}.0/24", 150 + std::process::id() % 50, 7);

    let file = file.to_str().expect("path");
    let apply = |extra: &[&str]| {
        let mut args = vec!["net", "apply", "--env", &env, "--pool", &pool];
        args.extend_from_slice(extra);
        args.push(file);
        sb.ok(&args)
    };
    let out = apply(&[]);
    assert!(out.contains("4 services, 3 links (3 created"), "{out}");
    assert_eq!(mounts_under(&sb.root()).len(), 4);

    let text = sb.ok(&["net", "show", "--env", &env]);
    assert!(
        text.contains(&format!("{p}app")) && text.contains("veth"),
        "{text}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&sb.ok(&["net", "show", "--env", &env, "--json"])).expect("json");
    let services = json["services"].as_array().expect("services");
    assert_eq!(services.len(), 4);
    assert!(services.iter().all(|s| s["present"] == true));
    let app = &json["outputs"][format!("{p}app")];
    assert!(app["hosts"].as_str().expect("hosts").contains("database"));
    assert_eq!(app["relationships"]["redis"][0]["port"], 6379);
    assert_eq!(
        app["relationships"]["redis"][0]["service"],
        format!("{p}cache")
    );
    assert!(!app["relationships_env"].as_str().expect("env").is_empty());
    // Re-applying the same file changes nothing.
    let again = apply(&["--json"]);
    let again: serde_json::Value = serde_json::from_str(&again).expect("json");
    assert_eq!(again["kept_links"].as_array().expect("kept").len(), 3);
    assert!(again["created_links"]
        .as_array()
        .expect("created")
        .is_empty());

    sb.ok(&["net", "teardown", "--env", &env]);
    assert!(mounts_under(&sb.root()).is_empty());
    assert!(!sb.root().join("netns").join(&env).exists());
    let twice = sb.ok(&["net", "teardown", "--env", &env]);
    assert!(twice.contains("removed 0"), "{twice}");
}

#[test]
fn bad_topology_is_named_and_leaves_nothing() {
    let sb = Sandbox::new();
    let env = unique("e");
    let file = sb.dir.path().join("topology.json");
    std::fs::write(
        &file,
        r#"{"services": ["app", "db"], "edges": [{"from": "app", "name": "database", "to": "dbx", "port": 5432}]}"#,
    )
    .expect("write");
    let out = sb.run(&["net", "apply", "--env", &env, file.to_str().expect("path")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("relationship app.database: unknown service \"dbx\""),
        "{err}"
    );
    assert!(!sb.root().join("netns").join(&env).exists());
    assert!(mounts_under(&sb.root()).is_empty());

    let out = sb.run(&[
        "net",
        "apply",
        "--env",
        "../x",
        file.to_str().expect("path"),
    ]);
    assert!(!out.status.success());
    let out = sb.run(&[
        "net",
        "apply",
        "--env",
        &env,
        "--pool",
        "10.0.0.1/24",
        "x.json",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("10.0.0.1/24"), "{err}");
}

/// A ring of `n` services (names prefixed), each declaring the next, as JSON.
fn ring_json(p: &str, n: usize) -> String {
    let services: Vec<String> = (0..n).map(|i| format!("\"{p}s{i}\"")).collect();
    let edges: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"from": "{p}s{i}", "name": "next", "to": "{p}s{}", "port": 80}}"#,
                (i + 1) % n
            )
        })
        .collect();
    format!(
        r#"{{"services": [{}], "edges": [{}]}}"#,
        services.join(", "),
        edges.join(", ")
    )
}

/// An apply killed at any point is finished by the next apply and cleaned by teardown.
#[test]
fn killed_apply_converges_and_tears_down() {
    let sb = Sandbox::new();
    let p = unique("k").replace('-', "x");
    let file = sb.dir.path().join("ring.json");
    std::fs::write(&file, ring_json(&p, 30)).expect("write topology");
    let file = file.to_str().expect("path");
    for delay_ms in [2, 10, 25] {
        let env = unique("e");
        let mut child = sb
            .kiln()
            .args(["net", "apply", "--env", &env, file])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn kiln");
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        child.wait().expect("wait");

        let out = sb.ok(&["net", "apply", "--env", &env, "--json", file]);
        let applied: serde_json::Value = serde_json::from_str(&out).expect("json");
        let made = applied["created_links"].as_array().expect("created").len();
        let kept = applied["kept_links"].as_array().expect("kept").len();
        assert_eq!(made + kept, 30, "after a kill at {delay_ms} ms: {out}");
        eprintln!("killed after {delay_ms} ms: {kept} links had been made, {made} made now");
        let status: serde_json::Value =
            serde_json::from_str(&sb.ok(&["net", "show", "--env", &env, "--json"])).expect("json");
        for s in status["services"].as_array().expect("services") {
            let veths = s["links"]
                .as_array()
                .expect("links")
                .iter()
                .filter(|l| l["kind"] == "veth" && l["up"] == true)
                .count();
            assert_eq!(veths, 2, "{s}");
        }

        sb.ok(&["net", "teardown", "--env", &env]);
        assert!(mounts_under(&sb.root()).is_empty());
        assert!(!sb.root().join("netns").join(&env).exists());
    }
}
