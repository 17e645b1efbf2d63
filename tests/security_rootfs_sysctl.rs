//! Security (issue 11, finding 10): `linux.sysctl` keys are validated before the container is
//! created. A key that is an absolute path or climbs with `..`, a sysctl that is not namespaced,
//! and a namespaced one without its namespace are each refused with a message naming the key,
//! leave nothing behind and leave the host's file untouched; valid namespaced sysctls still apply.

mod runtime_support;

use std::path::{Path, PathBuf};

use runtime_support::{host_mount_count, unique, Bundle};
use serde_json::{json, Value};

/// A host file a hostile key aims at; removed on drop.
struct Victim(PathBuf);

impl Victim {
    fn new() -> Victim {
        let p = std::env::temp_dir().join(unique("kiln-sysctl-victim-"));
        std::fs::write(&p, "original").expect("victim");
        Victim(p)
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// Runs a container with `sysctl`, asserting it is refused with a message naming `key` and
/// leaves no state dir, cgroup or mount; `watched` must read the same before and after.
fn refused(b: &mut Bundle, key: &str, value: &str, watched: &Path) {
    b.config["linux"]["sysctl"] = json!({ key: value });
    let before = read(watched);
    let mounts = host_mount_count();
    let (code, out, err) = b.run();
    assert_ne!(code, 0, "sysctl {key:?} was accepted: {out}");
    assert!(
        err.contains(&format!("sysctl {key:?}")),
        "the error does not name {key:?}: {err}"
    );
    assert_eq!(read(watched), before, "{} was written", watched.display());
    assert_eq!(host_mount_count(), mounts, "a mount was left behind");
    assert!(!b.sb.root().join(&b.id).exists(), "the state dir was left");
    assert!(!b.cgroup_dir("memory").exists(), "the cgroup was left");
}

fn without_namespace(b: &mut Bundle, typ: &str) {
    let list: Vec<Value> = b.config["linux"]["namespaces"]
        .as_array()
        .expect("namespaces")
        .iter()
        .filter(|n| n["type"] != typ)
        .cloned()
        .collect();
    b.config["linux"]["namespaces"] = json!(list);
}

#[test]
fn an_absolute_path_key_is_refused() {
    let v = Victim::new();
    let mut b = Bundle::new(&["true"]);
    let key = v.0.to_str().expect("utf8").to_string();
    refused(&mut b, &key, "pwned", &v.0);
}

#[test]
fn a_key_climbing_out_of_proc_sys_is_refused() {
    let v = Victim::new();
    let mut b = Bundle::new(&["true"]);
    let key = format!("net/../../..{}", v.0.display());
    refused(&mut b, &key, "pwned", &v.0);
    refused(
        &mut b,
        "net.ipv4..ip_forward",
        "1",
        Path::new("/proc/sys/net/ipv4/ip_forward"),
    );
}

#[test]
fn a_host_wide_sysctl_is_refused() {
    let mut b = Bundle::new(&["true"]);
    let core = Path::new("/proc/sys/kernel/core_pattern");
    refused(&mut b, "kernel.core_pattern", "|/tmp/kiln-evil %p", core);
    refused(&mut b, "kernel/core_pattern", "|/tmp/kiln-evil %p", core);
    refused(
        &mut b,
        "vm.overcommit_memory",
        "1",
        Path::new("/proc/sys/vm/overcommit_memory"),
    );
}

#[test]
fn a_namespaced_sysctl_without_its_namespace_is_refused() {
    let mut b = Bundle::new(&["true"]);
    without_namespace(&mut b, "network");
    let somaxconn = Path::new("/proc/sys/net/core/somaxconn");
    refused(&mut b, "net.core.somaxconn", "77", somaxconn);
    // Joining the host's own network namespace by path is no namespace of its own either.
    b.config["linux"]["namespaces"]
        .as_array_mut()
        .expect("namespaces")
        .push(json!({"type": "network", "path": "/proc/self/ns/net"}));
    refused(&mut b, "net.core.somaxconn", "77", somaxconn);

    let mut b = Bundle::new(&["true"]);
    without_namespace(&mut b, "ipc");
    refused(
        &mut b,
        "kernel.shmmni",
        "77",
        Path::new("/proc/sys/kernel/shmmni"),
    );

    let mut b = Bundle::new(&["true"]);
    b.config["hostname"] = json!("box");
    refused(
        &mut b,
        "kernel.hostname",
        "other",
        Path::new("/proc/sys/kernel/hostname"),
    );
}

#[test]
fn valid_namespaced_sysctls_apply_in_the_container_only() {
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "cat /proc/sys/net/core/somaxconn /proc/sys/kernel/shmmni /proc/sys/fs/mqueue/msg_max \
         /proc/sys/net/ipv4/conf/lo/forwarding; hostname",
    ]);
    b.config["hostname"] = json!("box");
    b.config["linux"]["sysctl"] = json!({
        "net.core.somaxconn": "77",
        "kernel.shmmni": "77",
        "fs.mqueue.msg_max": "17",
        "net/ipv4/conf/lo/forwarding": "1",
        "kernel.hostname": "box",
    });
    let watched = [
        "/proc/sys/net/core/somaxconn",
        "/proc/sys/kernel/shmmni",
        "/proc/sys/fs/mqueue/msg_max",
        "/proc/sys/net/ipv4/conf/lo/forwarding",
    ];
    let before: Vec<String> = watched.iter().map(|p| read(Path::new(p))).collect();
    let out = b.run_ok();
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["77", "77", "17", "1", "box"],
        "{out}"
    );
    let after: Vec<String> = watched.iter().map(|p| read(Path::new(p))).collect();
    assert_eq!(before, after, "a sysctl reached the host");
}
