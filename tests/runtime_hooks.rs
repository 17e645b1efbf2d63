//! Lifecycle hooks run at their points with the state on stdin; a failing hook fails create;
//! a hook that outlives its timeout is killed.

mod runtime_support;

use runtime_support::Bundle;
use serde_json::json;

fn hook(log: &std::path::Path, name: &str) -> serde_json::Value {
    json!({"path": "/bin/sh", "args": ["sh", "-c", format!("echo {name} $(cat) >> {}", log.display())]})
}

#[test]
fn hooks_run_in_order_with_the_state_on_stdin() {
    let mut b = Bundle::new(&["true"]);
    let logdir = b.sb.dir.path().join("hooks");
    std::fs::create_dir_all(&logdir).expect("log dir");
    let log = logdir.join("hooks.log");
    // startContainer runs inside the container: the log dir is mounted at the same path there.
    b.add_mount(
        json!({"destination": logdir, "type": "bind", "source": logdir, "options": ["rbind"]}),
    );
    let mut hooks = serde_json::Map::new();
    for k in [
        "prestart",
        "createRuntime",
        "createContainer",
        "startContainer",
        "poststart",
        "poststop",
    ] {
        hooks.insert(k.to_string(), json!([hook(&log, k)]));
    }
    b.config["hooks"] = serde_json::Value::Object(hooks);
    b.run_ok();
    let text = std::fs::read_to_string(&log).expect("hook log");
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        names,
        vec![
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststart",
            "poststop"
        ],
        "{text}"
    );
    for line in text.lines() {
        let state: serde_json::Value =
            serde_json::from_str(line.split_once(' ').expect("state").1).expect("state json");
        assert_eq!(state["id"], b.id.as_str(), "{line}");
    }
}

#[test]
fn failing_create_runtime_hook_fails_create_and_cleans_up() {
    let mut b = Bundle::new(&["true"]);
    b.config["hooks"] = json!({"createRuntime": [{"path": "/bin/false"}]});
    let (code, _, err) = b.run();
    assert_ne!(code, 0);
    assert!(err.contains("createRuntime hook /bin/false"), "{err}");
    assert!(!b.sb.root().join(&b.id).exists());
    assert!(!b.cgroup_dir("pids").exists());
}

#[test]
fn hook_timeout_kills_the_hook() {
    let mut b = Bundle::new(&["true"]);
    b.config["hooks"] =
        json!({"prestart": [{"path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1}]});
    let start = std::time::Instant::now();
    let (code, _, err) = b.run();
    assert_ne!(code, 0);
    assert!(err.contains("timed out"), "{err}");
    assert!(start.elapsed() < std::time::Duration::from_secs(20));
}
