//! Security review finding 7: a seccomp rule whose action equals the default action was compiled
//! as ALLOW. The attack: a profile with an ERRNO default that also marks mkdir ERRNO, and a
//! process that calls mkdir anyway.

mod runtime_support;

use runtime_support::Bundle;
use serde_json::json;

/// What busybox's sh, mkdir and touch (and the init's last steps) need, besides mkdir itself.
const ALLOWED: &[&str] = &[
    "access",
    "arch_prctl",
    "brk",
    "capget",
    "capset",
    "chdir",
    "clock_gettime",
    "clone",
    "clone3",
    "close",
    "close_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "execve",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fchdir",
    "fcntl",
    "fstat",
    "fstatfs",
    "futex",
    "getcwd",
    "getdents64",
    "getegid",
    "geteuid",
    "getgid",
    "getgroups",
    "getpgrp",
    "getpid",
    "getppid",
    "getrandom",
    "getrlimit",
    "gettid",
    "getuid",
    "ioctl",
    "lseek",
    "lstat",
    "madvise",
    "mmap",
    "mprotect",
    "munmap",
    "newfstatat",
    "open",
    "openat",
    "pipe",
    "pipe2",
    "poll",
    "prctl",
    "pread64",
    "prlimit64",
    "read",
    "readlink",
    "readv",
    "rseq",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "set_robust_list",
    "set_tid_address",
    "setgid",
    "setgroups",
    "setpgid",
    "setresgid",
    "setresuid",
    "setuid",
    "sigaltstack",
    "stat",
    "statfs",
    "statx",
    "umask",
    "uname",
    "utimensat",
    "vfork",
    "wait4",
    "write",
    "writev",
];

/// Runs `script` under an ERRNO-default profile whose mkdir rule is `mkdir_rule`.
fn run_with_mkdir_rule(script: &str, mkdir_rule: serde_json::Value) -> (Bundle, String) {
    let mut b = Bundle::new(&["sh", "-c", script]);
    b.config["root"]["readonly"] = json!(false);
    let mut rule = mkdir_rule;
    rule["names"] = json!(["mkdir", "mkdirat"]);
    b.config["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [
            {"names": ALLOWED, "action": "SCMP_ACT_ALLOW"},
            rule,
        ],
    });
    let out = b.run_ok();
    (b, out)
}

const ATTACK: &str = "mkdir /tmp/attack-dir 2>&1; echo rc=$?; touch /tmp/ok-file && echo touch-ok";

#[test]
fn mkdir_marked_errno_under_an_errno_default_fails() {
    let (b, out) = run_with_mkdir_rule(ATTACK, json!({"action": "SCMP_ACT_ERRNO"}));
    assert!(out.contains("Operation not permitted"), "{out}");
    assert!(out.contains("rc=1"), "{out}");
    assert!(
        out.contains("touch-ok"),
        "the allowed calls work (the profile is not just broken): {out}"
    );
    let tmp = b.dir.join("rootfs/tmp");
    assert!(!tmp.join("attack-dir").exists(), "mkdir ran");
    assert!(tmp.join("ok-file").exists());
}

#[test]
fn mkdir_rule_with_its_own_errno_under_an_errno_default_returns_it() {
    let (b, out) = run_with_mkdir_rule(
        ATTACK,
        json!({"action": "SCMP_ACT_ERRNO", "errnoRet": libc::EACCES}),
    );
    assert!(out.contains("Permission denied"), "{out}");
    assert!(out.contains("touch-ok"), "{out}");
    assert!(!b.dir.join("rootfs/tmp/attack-dir").exists(), "mkdir ran");
}
