//! End-to-end lifecycle of the OCI runtime: create/start/state/kill/delete, run's exit code,
//! clear errors, nothing left behind after failures or after many cycles.

mod runtime_support;

use runtime_support::{host_mount_count, Bundle};
use serde_json::json;

#[test]
fn create_start_kill_delete_walks_the_states() {
    let b = Bundle::new(&["sleep", "100"]);
    b.create();
    let s = b.state();
    assert_eq!(s["status"], "created");
    assert_eq!(s["id"], b.id.as_str());
    let pid = s["pid"].as_i64().expect("pid");
    assert!(pid > 0 && std::path::Path::new(&format!("/proc/{pid}")).exists());
    b.ok(&["start", &b.id]);
    assert_eq!(b.state()["status"], "running");
    b.ok(&["kill", &b.id, "KILL"]);
    let mut status = String::new();
    for _ in 0..200 {
        status = b.state()["status"].as_str().unwrap_or("").to_string();
        if status == "stopped" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(status, "stopped");
    b.ok(&["delete", &b.id]);
    assert!(
        !b.kiln(&["state", &b.id]).status.success(),
        "state after delete must fail"
    );
    assert!(!b.cgroup_dir("pids").exists(), "cgroup left behind");
}

#[test]
fn run_returns_the_exit_code_and_output() {
    let b = Bundle::new(&["sh", "-c", "echo out-$((6*7)); exit 3"]);
    let (code, out, _) = b.run();
    assert_eq!(code, 3);
    assert_eq!(out.trim(), "out-42");
    assert!(
        !b.kiln(&["state", &b.id]).status.success(),
        "run must delete the container"
    );
}

#[test]
fn delete_of_a_running_container_needs_force() {
    let b = Bundle::new(&["sleep", "100"]);
    b.create();
    b.ok(&["start", &b.id]);
    let out = b.kiln(&["delete", &b.id]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("running"));
    b.ok(&["delete", "--force", &b.id]);
    assert!(!b.cgroup_dir("memory").exists());
}

#[test]
fn duplicate_and_unknown_ids_are_clear_errors() {
    let b = Bundle::new(&["sleep", "100"]);
    b.create();
    let (ok, err) = b.try_create(&b.id);
    assert!(!ok);
    assert!(err.contains("already exists"), "{err}");
    let missing = b.kiln(&["start", "no-such-container"]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("does not exist"));
}

#[test]
fn failed_create_leaves_nothing_behind() {
    let mut b = Bundle::new(&["true"]);
    b.add_mount(json!({"destination": "/data", "type": "bind", "source": "/nonexistent/kiln-src", "options": ["rbind"]}));
    b.write();
    let (ok, err) = b.try_create(&b.id);
    assert!(!ok);
    assert!(
        err.contains("/nonexistent/kiln-src"),
        "error must name the path: {err}"
    );
    assert!(!b.sb.root().join(&b.id).exists(), "state dir left behind");
    for c in ["pids", "memory", "freezer"] {
        assert!(!b.cgroup_dir(c).exists(), "{c} cgroup left behind");
    }
}

#[test]
fn exec_without_a_command_and_bad_signal_are_refused() {
    let b = Bundle::new(&["sleep", "100"]);
    b.create();
    assert!(!b.kiln(&["kill", &b.id, "NOSIG"]).status.success());
    assert!(!b.kiln(&["exec", &b.id]).status.success());
}

#[test]
fn two_hundred_cycles_leave_no_mount_process_or_cgroup() {
    let b = Bundle::new(&["true"]);
    b.write();
    let mounts_before = host_mount_count();
    for i in 0..200 {
        let id = format!("{}-{i}", b.id);
        b.create_id(&id);
        let pid = serde_json::from_str::<serde_json::Value>(&b.ok(&["state", &id])).expect("state")
            ["pid"]
            .as_i64()
            .expect("pid");
        b.ok(&["start", &id]);
        b.ok(&["delete", "--force", &id]);
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z"))
            .unwrap_or(false);
        assert!(!alive, "cycle {i}: init {pid} still alive after delete");
    }
    assert_eq!(
        host_mount_count(),
        mounts_before,
        "mounts leaked into the host namespace"
    );
    assert!(
        b.ok(&["list", "--quiet"]).trim().is_empty(),
        "containers left in state root"
    );
    assert!(!b.cgroup_dir("pids").exists());
    let leftover: Vec<_> = std::fs::read_dir("/sys/fs/cgroup/pids/kiln-test")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        !leftover
            .iter()
            .any(|n| n.starts_with(&format!("{}-", b.id))),
        "cgroups left: {leftover:?}"
    );
}
