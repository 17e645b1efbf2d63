//! Security (issue 11, review finding A): the copy of the host's /sys that a container in a user
//! namespace without its own network namespace gets is private. Were it a plain clone of a
//! shared /sys (systemd's default), it would join the host's peer group and every mount made on
//! it (the cgroup view, the /sys/firmware mask, the container's own with CAP_SYS_ADMIN in its
//! user namespace) would appear on the host's /sys.
//!
//! The "host" here is a private mount namespace of the test (`unshare --mount`, propagation
//! private) whose /sys is made shared: the real host's /sys is never changed.

mod runtime_support;

use std::process::Command;

use runtime_support::Bundle;
use serde_json::json;

/// Run inside `unshare --mount`: makes /sys shared, lists the mounts at and under /sys before,
/// while the container runs (it prints `ready` once it has tried its mount) and after, then
/// what the container printed. Args: kiln binary, bundle, container id.
const SCRIPT: &str = r#"
mount --make-shared /sys || { echo "=cannot make /sys shared"; exit 90; }
snap() { echo "=$1"; awk '$5 == "/sys" || index($5, "/sys/") == 1 { print $5, $9, $10 }' /proc/self/mountinfo | sort; }
snap before
"$1" run --bundle "$2" "$3" > "$2/out" 2>&1 &
pid=$!
i=0
while ! grep -q ready "$2/out" && [ $i -lt 300 ]; do sleep 0.05; i=$((i+1)); done
snap during
wait $pid
echo "=code $?"
snap after
echo "=out"
cat "$2/out"
"#;

/// The lines of section `name` of the script's output.
fn section<'a>(out: &'a str, name: &str) -> Vec<&'a str> {
    out.strip_prefix('=')
        .unwrap_or(out)
        .split("\n=")
        .find_map(|s| {
            s.strip_prefix(name)
                .map(|rest| rest.strip_prefix('\n').unwrap_or(rest))
        })
        .map(|s| s.lines().collect())
        .unwrap_or_default()
}

/// Runs the container in a user namespace (mapped to 100000), without a network namespace,
/// trying to mount a tmpfs on /sys/kernel/mm; with `sys_admin` it has CAP_SYS_ADMIN (in its
/// user namespace) and the mount succeeds. Asserts the test's namespace sees no new /sys mount
/// while it runs and after.
fn container_mounts_stay_inside(sys_admin: bool) {
    if Command::new("unshare").arg("--help").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set and unshare(1) is missing"
        );
        eprintln!("skipped: unshare(1) is missing");
        return;
    }
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "if mount -t tmpfs attacker /sys/kernel/mm; then echo mounted; fi; echo ready; sleep 1",
    ]);
    let ns = b.config["linux"]["namespaces"].as_array_mut().expect("ns");
    ns.retain(|n| n["type"] != "network");
    ns.push(json!({"type": "user"}));
    b.config["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    b.config["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    if sys_admin {
        for set in ["bounding", "effective", "permitted"] {
            b.config["process"]["capabilities"][set]
                .as_array_mut()
                .expect("caps")
                .push(json!("CAP_SYS_ADMIN"));
        }
    }
    b.write();
    let mut cmd = Command::new("unshare");
    for (k, v) in b.sb.kiln().get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    let out = cmd
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            SCRIPT,
            "sh",
        ])
        .arg(kiln_testkit::common::kiln_bin())
        .arg(&b.dir)
        .arg(&b.id)
        .output()
        .expect("spawn unshare");
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.contains("\n=code 0\n"), "kiln run failed: {out}");
    let ran = section(&out, "out");
    assert!(ran.contains(&"ready"), "the container did not run: {out}");
    if sys_admin {
        assert!(
            ran.contains(&"mounted"),
            "the container could not mount on its /sys (the attack did not run): {out}"
        );
    }
    let before = section(&out, "before");
    assert!(before.iter().any(|l| l.starts_with("/sys ")), "{out}");
    assert_eq!(
        section(&out, "during"),
        before,
        "a mount made in the container appeared on the host's /sys while it ran: {out}"
    );
    assert_eq!(
        section(&out, "after"),
        before,
        "a mount made in the container is left on the host's /sys: {out}"
    );
}

#[test]
fn mounts_on_the_host_sys_copy_do_not_reach_a_shared_host_sys() {
    container_mounts_stay_inside(false);
}

#[test]
fn a_container_with_cap_sys_admin_cannot_mount_onto_a_shared_host_sys() {
    container_mounts_stay_inside(true);
}
