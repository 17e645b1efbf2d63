//! The container process: capabilities, seccomp, rlimits, user/groups, env and cwd.

mod runtime_support;

use runtime_support::Bundle;
use serde_json::json;

#[test]
fn capabilities_are_exactly_the_configured_sets() {
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status",
    ]);
    let set = json!(["CAP_CHOWN", "CAP_KILL"]);
    for s in [
        "bounding",
        "effective",
        "inheritable",
        "permitted",
        "ambient",
    ] {
        b.config["process"]["capabilities"][s] = set.clone();
    }
    let out = b.run_ok();
    // CAP_CHOWN = bit 0, CAP_KILL = bit 5: mask 0x21.
    for line in out.lines() {
        assert!(
            line.ends_with("0000000000000021"),
            "unexpected caps line {line:?} in {out}"
        );
    }
    assert_eq!(out.lines().count(), 5);
}

#[test]
fn seccomp_blocked_syscall_returns_its_errno() {
    let mut b = Bundle::new(&["sh", "-c", "mkdir /tmp/blocked; echo rc=$?"]);
    b.config["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]
    });
    let (code, out, err) = b.run();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("rc=1"), "{out}");
    assert!(err.contains("Permission denied"), "EACCES expected: {err}");
}

#[test]
fn seccomp_argument_conditions_are_honoured() {
    // personality(0xffffffff) only queries; block it with ENOSYS when arg0 == 8 (PER_LINUX32 test value).
    let mut b = Bundle::new(&["sh", "-c", "uname -m"]);
    b.config["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["uname"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38,
                      "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]}]
    });
    // uname's argument is a non-null pointer: the condition does not match, the call succeeds.
    let out = b.run_ok();
    assert_eq!(out.trim(), "x86_64");
}

#[test]
fn rlimits_are_applied_and_raising_is_explained() {
    let mut b = Bundle::new(&["sh", "-c", "ulimit -n; ulimit -Hn"]);
    b.config["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 512, "hard": 777}]);
    let out = b.run_ok();
    assert_eq!(out.lines().collect::<Vec<_>>(), vec!["512", "777"]);

    let mut hard = 0u64;
    let lim = std::fs::read_to_string("/proc/self/limits").expect("limits");
    for l in lim.lines().filter(|l| l.starts_with("Max open files")) {
        hard = l
            .split_whitespace()
            .nth(4)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
    }
    let mut up = Bundle::new(&["true"]);
    up.config["process"]["rlimits"] =
        json!([{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": hard + 1}]);
    let (code, _, err) = up.run();
    if code != 0 {
        assert!(
            err.contains("RLIMIT_NOFILE") && err.contains("CAP_SYS_RESOURCE"),
            "{err}"
        );
    }
}

#[test]
fn user_groups_env_cwd_and_umask() {
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "id -u; id -g; id -G; echo $GREETING; pwd; umask",
    ]);
    b.config["process"]["user"] =
        json!({"uid": 1000, "gid": 1001, "additionalGids": [1002], "umask": 63});
    b.config["process"]["env"] = json!(["PATH=/bin", "GREETING=hello kiln"]);
    b.config["process"]["cwd"] = json!("/work/dir");
    let out = b.run_ok();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1000");
    assert_eq!(lines[1], "1001");
    assert!(lines[2].split_whitespace().any(|g| g == "1002"), "{out}");
    assert_eq!(&lines[3..], &["hello kiln", "/work/dir", "0077"]);
}

#[test]
fn no_new_privileges_is_set() {
    let b = Bundle::new(&["sh", "-c", "grep NoNewPrivs /proc/self/status"]);
    let out = b.run_ok();
    assert!(out.trim().ends_with('1'), "{out}");
}

#[test]
fn missing_executable_fails_at_create_naming_it() {
    let b = Bundle::new(&["no-such-binary"]);
    let (code, _, err) = b.run();
    assert_ne!(code, 0);
    assert!(err.contains("no-such-binary"), "{err}");
}
