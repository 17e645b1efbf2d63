//! Hardened defaults for the containers kiln configures itself (deployed services, build
//! steps): the seccomp allow list container platforms ship (default EPERM), a reduced
//! capability set, no_new_privs, and runc's masked and read-only paths.
//!
//! The profile is kiln's own data, written after the default profile of podman and Docker:
//! every syscall a service normally makes is allowed; what is left out is what needs a
//! capability kiln does not grant (mount, unshare/setns, module and key management, clock
//! setting, bpf, perf, ptrace, reboot, swap, quota, kexec ...) or is a known kernel attack
//! surface with no service use (userfaultfd, keyctl, io_uring, the new mount API).

use std::collections::HashSet;

use oci_spec::OciSpecError;

use oci_spec::runtime::{
    get_default_maskedpaths, get_default_readonly_paths, Arch, Capability, LinuxCapabilities,
    LinuxCapabilitiesBuilder, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg,
    LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSeccompOperator, LinuxSyscall,
    LinuxSyscallBuilder, Spec,
};

/// Syscalls allowed whatever their arguments.
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "alarm",
    "arch_prctl",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "clock_getres",
    "clock_gettime",
    "clock_nanosleep",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fallocate",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchownat",
    "fcntl",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstatfs",
    "fsync",
    "ftruncate",
    "futex",
    "futex_requeue",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "geteuid",
    "getgid",
    "getgroups",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresuid",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "gettid",
    "gettimeofday",
    "getuid",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_setup",
    "io_submit",
    "ioctl",
    "ioprio_get",
    "ioprio_set",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "mincore",
    "mkdir",
    "mkdirat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedsend",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "nanosleep",
    "newfstatat",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_getfd",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recvfrom",
    "recvmmsg",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "sendfile",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsuid",
    "setgid",
    "setgroups",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setresgid",
    "setresuid",
    "setreuid",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_tid_address",
    "setuid",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "socket",
    "socketpair",
    "splice",
    "stat",
    "statfs",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_settime",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_settime",
    "times",
    "tkill",
    "truncate",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "write",
    "writev",
];

/// The namespace flags of clone(2): CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID,
/// NEWNET (a service may fork and make threads, not namespaces).
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// personality(2) values allowed: PER_LINUX, UNAME26, PER_LINUX32, PER_LINUX32|UNAME26 and
/// the query 0xffffffff (no READ_IMPLIES_EXEC, no ADDR_NO_RANDOMIZE).
const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// The capabilities of a service: podman's default set without SETFCAP (no file capabilities
/// to grant: the root is read-only) and SYS_CHROOT (no service use). Enough for a root
/// process to drop to its user (SETUID, SETGID, SETPCAP), own and chmod its files (CHOWN,
/// DAC_OVERRIDE, FOWNER, FSETID), signal its children (KILL) and bind a low port where the
/// network namespace allows it (NET_BIND_SERVICE). Not SYS_ADMIN, NET_RAW, NET_ADMIN, MKNOD,
/// SYS_PTRACE, SYS_MODULE, SYS_RAWIO, SYS_TIME, AUDIT_WRITE or any other.
pub const SERVICE_CAPABILITIES: &[Capability] = &[
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::NetBindService,
];

/// runc's masked paths (and powercap, which leaks energy counters), hidden in every container.
pub fn masked_paths() -> Vec<String> {
    let mut paths = get_default_maskedpaths();
    paths.push("/sys/devices/virtual/powercap".to_string());
    paths
}

/// runc's read-only paths.
pub fn readonly_paths() -> Vec<String> {
    get_default_readonly_paths()
}

fn rule(
    names: &[&str],
    action: LinuxSeccompAction,
    args: Vec<LinuxSeccompArg>,
) -> Result<LinuxSyscall, OciSpecError> {
    let mut b = LinuxSyscallBuilder::default()
        .names(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .action(action);
    if !args.is_empty() {
        b = b.args(args);
    }
    b.build()
}

fn arg(
    value: u64,
    value_two: u64,
    op: LinuxSeccompOperator,
) -> Result<LinuxSeccompArg, OciSpecError> {
    LinuxSeccompArgBuilder::default()
        .index(0usize)
        .value(value)
        .value_two(value_two)
        .op(op)
        .build()
}

/// The default seccomp profile: EPERM for every syscall not allowed. Only ALLOW and
/// ERRNO(ENOSYS) rules: nothing repeats the default action, so the profile means the same
/// to a compiler that merges rules by action.
pub fn default_seccomp() -> Result<LinuxSeccomp, OciSpecError> {
    let allow = LinuxSeccompAction::ScmpActAllow;
    let mut syscalls = vec![rule(ALLOWED, allow, Vec::new())?];
    // clone without namespace flags (flags & NS == 0).
    syscalls.push(rule(
        &["clone"],
        allow,
        vec![arg(
            CLONE_NAMESPACE_FLAGS,
            0,
            LinuxSeccompOperator::ScmpCmpMaskedEq,
        )?],
    )?);
    // personality: the listed values only.
    for p in PERSONALITIES {
        syscalls.push(rule(
            &["personality"],
            allow,
            vec![arg(*p, 0, LinuxSeccompOperator::ScmpCmpEq)?],
        )?);
    }
    // clone3 passes its flags in memory, out of seccomp's sight: ENOSYS makes libc fall back
    // to clone, where the flags are checked.
    let mut clone3 = rule(&["clone3"], LinuxSeccompAction::ScmpActErrno, Vec::new())?;
    clone3.set_errno_ret(Some(libc::ENOSYS as u32));
    syscalls.push(clone3);
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .default_errno_ret(libc::EPERM as u32)
        .architectures(vec![Arch::ScmpArchX86_64])
        .syscalls(syscalls)
        .build()
}

/// The service capability set as bounding, effective and permitted (none inheritable or
/// ambient: a process that is not root in its container keeps none across exec).
pub fn service_capabilities() -> Result<LinuxCapabilities, OciSpecError> {
    let set: HashSet<Capability> = SERVICE_CAPABILITIES.iter().copied().collect();
    LinuxCapabilitiesBuilder::default()
        .bounding(set.clone())
        .effective(set.clone())
        .permitted(set)
        .inheritable(HashSet::new())
        .ambient(HashSet::new())
        .build()
}

/// Applies the hardened defaults to `spec`: the default seccomp profile, the service
/// capabilities, no_new_privs, runc's masked and read-only paths.
pub fn harden(spec: &mut Spec) -> Result<(), OciSpecError> {
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_capabilities(Some(service_capabilities()?));
    process.set_no_new_privileges(Some(true));
    spec.set_process(Some(process));
    let mut linux = spec.linux().clone().unwrap_or_default();
    linux.set_seccomp(Some(default_seccomp()?));
    linux.set_masked_paths(Some(masked_paths()));
    linux.set_readonly_paths(Some(readonly_paths()));
    spec.set_linux(Some(linux));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_compiles_and_names_known_syscalls() {
        let p = default_seccomp().expect("profile");
        for sc in p.syscalls().as_deref().unwrap_or(&[]) {
            for n in sc.names() {
                assert!(
                    crate::seccomp::syscall_number(n).is_some(),
                    "{n} is not an x86_64 syscall"
                );
                assert_ne!(
                    (sc.action(), sc.errno_ret().or(p.default_errno_ret())),
                    (p.default_action(), p.default_errno_ret()),
                    "{n} repeats the default action"
                );
            }
        }
        for banned in [
            "mount",
            "unshare",
            "setns",
            "ptrace",
            "bpf",
            "keyctl",
            "init_module",
        ] {
            assert!(
                !ALLOWED.contains(&banned),
                "{banned} must not be in the allow list"
            );
        }
        crate::seccomp::compile(&p).expect("compiles");
    }

    #[test]
    fn harden_sets_caps_nnp_and_paths() {
        let mut spec = Spec::default();
        harden(&mut spec).expect("harden");
        let p = spec.process().as_ref().expect("process");
        assert_eq!(p.no_new_privileges(), Some(true));
        let caps = p.capabilities().as_ref().expect("caps");
        let bnd = caps.bounding().as_ref().expect("bounding");
        assert_eq!(bnd.len(), SERVICE_CAPABILITIES.len());
        assert!(!bnd.contains(&Capability::SysAdmin) && !bnd.contains(&Capability::NetRaw));
        assert_eq!(caps.ambient().as_ref().map(HashSet::len), Some(0));
        let linux = spec.linux().as_ref().expect("linux");
        assert!(linux.seccomp().is_some());
        assert!(linux
            .masked_paths()
            .as_deref()
            .unwrap_or(&[])
            .contains(&"/proc/kcore".to_string()));
    }
}
