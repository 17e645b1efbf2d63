//! Each namespace kind: new ones differ from the host's, joined ones (by path) are shared, and a
//! user namespace gets the configured id maps.

mod runtime_support;

use runtime_support::Bundle;
use serde_json::json;

/// Inode link of one of our own namespaces, e.g. "net:[4026531840]".
fn host_ns(name: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{name}"))
        .expect("readlink ns")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn every_new_namespace_differs_from_the_host() {
    let b = Bundle::new(&[
        "sh",
        "-c",
        "for n in pid net ipc uts mnt cgroup; do readlink /proc/self/ns/$n; done",
    ]);
    let out = b.run_ok();
    let inside: Vec<&str> = out.lines().collect();
    assert_eq!(inside.len(), 6, "{out}");
    for (name, line) in ["pid", "net", "ipc", "uts", "mnt", "cgroup"]
        .iter()
        .zip(inside)
    {
        assert_ne!(line, host_ns(name), "{name} namespace is the host's");
    }
}

#[test]
fn pid_namespace_makes_the_process_pid_1_and_uts_sets_hostname() {
    let mut b = Bundle::new(&["sh", "-c", "echo $$; hostname"]);
    b.config["hostname"] = json!("kiln-box");
    let out = b.run_ok();
    assert_eq!(out.lines().collect::<Vec<_>>(), vec!["1", "kiln-box"]);
}

#[test]
fn a_new_network_namespace_has_its_loopback_up() {
    // With lo down a connect to 127.0.0.1 fails "network unreachable"; with lo up it is refused.
    let b = Bundle::new(&[
        "sh",
        "-c",
        "ifconfig lo | grep -c UP; nc -w1 127.0.0.1 1 2>&1; true",
    ]);
    let out = b.run_ok();
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("1"), "lo is not up: {out}");
    assert!(
        out.to_lowercase().contains("refused"),
        "127.0.0.1 not reachable: {out}"
    );
}

#[test]
fn user_namespace_gets_the_configured_maps() {
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "cat /proc/self/uid_map /proc/self/gid_map; id -u",
    ]);
    b.config["linux"]["namespaces"]
        .as_array_mut()
        .expect("ns")
        .push(json!({"type": "user"}));
    b.config["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    b.config["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    let out = b.run_ok();
    let words: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(
        words,
        vec!["0", "100000", "65536", "0", "100000", "65536", "0"],
        "{out}"
    );
}

#[test]
fn namespaces_are_joined_by_path() {
    // A first container holds a network and uts namespace; the second joins them by path.
    let mut holder = Bundle::new(&["sleep", "100"]);
    holder.config["hostname"] = json!("holder");
    holder.create();
    let pid = holder.state()["pid"].as_i64().expect("pid");
    let want = std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .expect("ns")
        .to_string_lossy()
        .into_owned();

    let mut b = Bundle::new(&["sh", "-c", "readlink /proc/self/ns/net; hostname"]);
    b.config["hostname"] = serde_json::Value::Null;
    for ns in b.config["linux"]["namespaces"].as_array_mut().expect("ns") {
        if ns["type"] == "network" {
            ns["path"] = json!(format!("/proc/{pid}/ns/net"));
        }
        if ns["type"] == "uts" {
            ns["path"] = json!(format!("/proc/{pid}/ns/uts"));
        }
    }
    let out = b.run_ok();
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        vec![want.as_str(), "holder"]
    );
}

#[test]
fn joining_a_namespace_of_the_wrong_type_fails_clearly() {
    let mut b = Bundle::new(&["true"]);
    for ns in b.config["linux"]["namespaces"].as_array_mut().expect("ns") {
        if ns["type"] == "network" {
            ns["path"] = json!("/proc/self/ns/uts");
        }
    }
    let (code, _, err) = b.run();
    assert_ne!(code, 0);
    assert!(err.contains("joining namespace"), "{err}");
}
