//! OCI seccomp profiles compiled to BPF with seccompiler, and loaded with seccomp(2).
//!
//! seccompiler's filters have one on-match and one on-mismatch action, while an OCI profile gives
//! each syscall its own action. kiln therefore compiles one filter per distinct action and stacks
//! them: the kernel runs every filter and keeps the most severe verdict, so
//! * the "default" filter allows every syscall the profile names (under its conditions) and
//!   returns `defaultAction` for the rest;
//! * each non-allow action of the rules (also one equal to `defaultAction`) gets a filter that
//!   returns it for the syscalls that carry it, and allows the rest.
//!
//! What cannot be expressed: `SCMP_ACT_NOTIFY` and `listenerPath` (no user-notification fd),
//! `architectures` other than the native one (seccompiler checks one architecture: calls made
//! through another ABI, e.g. 32-bit x86, are killed), and flag `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV`
//! (only meaningful with notify). kiln refuses a profile using notify with an error naming it;
//! foreign architectures are ignored; syscall names unknown to this kernel's table are skipped (as
//! runc does).

mod syscalls_x86_64;

use std::collections::BTreeMap;

use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::error::{Error, Result};

/// A compiled profile: the BPF programs to stack and the seccomp(2) flags.
pub struct Compiled {
    programs: Vec<BpfProgram>,
    flags: libc::c_ulong,
}

/// The number of a syscall by name on this architecture.
pub fn syscall_number(name: &str) -> Option<i64> {
    let t = syscalls_x86_64::SYSCALLS;
    t.binary_search_by(|(n, _)| (*n).cmp(name))
        .ok()
        .map(|i| t[i].1)
}

fn action(a: LinuxSeccompAction, errno: Option<u32>, default_errno: u32) -> Result<SeccompAction> {
    Ok(match a {
        LinuxSeccompAction::ScmpActAllow => SeccompAction::Allow,
        LinuxSeccompAction::ScmpActErrno => SeccompAction::Errno(errno.unwrap_or(default_errno)),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            SeccompAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => SeccompAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => SeccompAction::Trap,
        LinuxSeccompAction::ScmpActTrace => SeccompAction::Trace(errno.unwrap_or(default_errno)),
        LinuxSeccompAction::ScmpActLog => SeccompAction::Log,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(Error::Seccomp(
                "action SCMP_ACT_NOTIFY is not supported by kiln (no seccomp user notification)"
                    .into(),
            ))
        }
    })
}

fn condition(a: &LinuxSeccompArg) -> Result<SeccompCondition> {
    let (op, value) = match a.op() {
        LinuxSeccompOperator::ScmpCmpNe => (SeccompCmpOp::Ne, a.value()),
        LinuxSeccompOperator::ScmpCmpLt => (SeccompCmpOp::Lt, a.value()),
        LinuxSeccompOperator::ScmpCmpLe => (SeccompCmpOp::Le, a.value()),
        LinuxSeccompOperator::ScmpCmpEq => (SeccompCmpOp::Eq, a.value()),
        LinuxSeccompOperator::ScmpCmpGe => (SeccompCmpOp::Ge, a.value()),
        LinuxSeccompOperator::ScmpCmpGt => (SeccompCmpOp::Gt, a.value()),
        LinuxSeccompOperator::ScmpCmpMaskedEq => (
            SeccompCmpOp::MaskedEq(a.value()),
            a.value_two().unwrap_or(0),
        ),
    };
    let idx = u8::try_from(a.index())
        .map_err(|_| Error::Seccomp(format!("argument index {} out of range", a.index())))?;
    SeccompCondition::new(idx, SeccompCmpArgLen::Qword, op, value)
        .map_err(|e| Error::Seccomp(format!("argument {}: {e}", a.index())))
}

/// The rules of one syscall entry: one AND-ed rule, or (when an argument index repeats, as
/// libseccomp treats it) one rule per condition, OR-ed. Empty = unconditional.
fn rules(args: &[LinuxSeccompArg]) -> Result<Vec<SeccompRule>> {
    if args.is_empty() {
        return Ok(vec![]);
    }
    let conds = args.iter().map(condition).collect::<Result<Vec<_>>>()?;
    let mut idx: Vec<usize> = args.iter().map(|a| a.index()).collect();
    idx.sort_unstable();
    idx.dedup();
    let mk = |c: Vec<SeccompCondition>| {
        SeccompRule::new(c).map_err(|e| Error::Seccomp(format!("rule: {e}")))
    };
    if idx.len() == args.len() {
        Ok(vec![mk(conds)?])
    } else {
        conds.into_iter().map(|c| mk(vec![c])).collect()
    }
}

/// Adds `new` rules for `nr` into a rule map, keeping "unconditional" when either side is.
fn merge(map: &mut BTreeMap<i64, Vec<SeccompRule>>, nr: i64, new: Vec<SeccompRule>) {
    match map.get_mut(&nr) {
        None => {
            map.insert(nr, new);
        }
        Some(old) if old.is_empty() => {}
        Some(old) => {
            if new.is_empty() {
                old.clear();
            } else {
                old.extend(new);
            }
        }
    }
}

/// Compiles an OCI seccomp profile.
pub fn compile(s: &LinuxSeccomp) -> Result<Compiled> {
    if s.listener_path().is_some() {
        return Err(Error::Seccomp(
            "listenerPath (seccomp user notification) is not supported by kiln".into(),
        ));
    }
    let arch = TargetArch::x86_64;
    let default_errno = s.default_errno_ret().unwrap_or(libc::EPERM as u32);
    let default = action(s.default_action(), s.default_errno_ret(), default_errno)?;
    let mut named: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let mut groups: Vec<(SeccompAction, BTreeMap<i64, Vec<SeccompRule>>)> = Vec::new();
    for sc in s.syscalls().as_deref().unwrap_or(&[]) {
        let act = action(sc.action(), sc.errno_ret(), default_errno)?;
        let r = rules(sc.args().as_deref().unwrap_or(&[]))?;
        for name in sc.names() {
            let Some(nr) = syscall_number(name) else {
                continue;
            };
            merge(&mut named, nr, r.clone());
            if act != SeccompAction::Allow {
                let i = match groups.iter().position(|(a, _)| *a == act) {
                    Some(i) => i,
                    None => {
                        groups.push((act.clone(), BTreeMap::new()));
                        groups.len() - 1
                    }
                };
                merge(&mut groups[i].1, nr, r.clone());
            }
        }
    }
    let mut programs = Vec::new();
    let build = |rules, mismatch, on_match| -> Result<BpfProgram> {
        let f = SeccompFilter::new(rules, mismatch, on_match, arch)
            .map_err(|e| Error::Seccomp(format!("building filter: {e}")))?;
        f.try_into()
            .map_err(|e: seccompiler::BackendError| Error::Seccomp(format!("compiling: {e}")))
    };
    // Every action keeps its own filter, also one equal to the default: the default filter
    // allows every named syscall, so skipping it would turn those rules into ALLOW.
    // Load order: the filters that leave seccomp(2) alone first, then the default filter (it
    // allows seccomp when a rule names it), then those that act on seccomp(2) itself.
    let seccomp_nr = syscall_number("seccomp");
    let (late, early): (Vec<_>, Vec<_>) = groups
        .into_iter()
        .partition(|(_, map)| seccomp_nr.is_some_and(|nr| map.contains_key(&nr)));
    for (act, map) in early {
        programs.push(build(map, SeccompAction::Allow, act)?);
    }
    if default != SeccompAction::Allow {
        programs.push(build(named, default.clone(), SeccompAction::Allow)?);
    }
    for (act, map) in late {
        programs.push(build(map, SeccompAction::Allow, act)?);
    }
    let mut flags: libc::c_ulong = 0;
    for f in s.flags().as_deref().unwrap_or(&[]) {
        flags |= match f {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => libc::SECCOMP_FILTER_FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
            }
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => 0,
        };
    }
    Ok(Compiled { programs, flags })
}

impl Compiled {
    /// Loads every program into the calling thread (the last step before execve).
    pub fn load(&self) -> Result<()> {
        for p in &self.programs {
            let prog = libc::sock_fprog {
                len: p.len() as u16,
                filter: p.as_ptr() as *mut libc::sock_filter,
            };
            // SAFETY: `prog` describes a live BPF program; the kernel copies it.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    self.flags,
                    &prog as *const libc::sock_fprog,
                )
            };
            if rc != 0 {
                return Err(Error::Seccomp(format!(
                    "loading filter ({} instructions): {}",
                    p.len(),
                    std::io::Error::last_os_error()
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscall_table_finds_common_calls() {
        assert_eq!(syscall_number("read"), Some(0));
        assert_eq!(syscall_number("getcwd"), Some(79));
        assert_eq!(syscall_number("no_such_call"), None);
    }

    #[test]
    fn profile_with_errno_default_compiles_to_filters() {
        let p: LinuxSeccomp = serde_json::from_str(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"names":["getcwd"],"action":"SCMP_ACT_ERRNO","errnoRet":1},
                {"names":["personality"],"action":"SCMP_ACT_ERRNO","errnoRet":22,
                 "args":[{"index":0,"value":8,"op":"SCMP_CMP_EQ"}]}]}"#,
        )
        .expect("profile parses");
        let c = compile(&p).expect("compiles");
        assert_eq!(c.programs.len(), 2, "one filter per distinct errno action");
    }

    /// What a syscall returned in a child under a compiled profile.
    #[derive(Debug, PartialEq)]
    enum Outcome {
        /// The syscall ran and failed with this errno (or 0 when it succeeded).
        Ran(i32),
        /// The filter returned this errno.
        Errno(i32),
    }

    /// Loads the profile in a forked child, makes syscall `nr` with `args` there and reports how
    /// it ended. `ran` says which errno the call itself returns when it is allowed.
    fn outcome(profile: &str, nr: libc::c_long, args: [u64; 3], ran: i32) -> Outcome {
        let mut v: serde_json::Value = serde_json::from_str(profile).expect("profile parses");
        // The child must be able to leave.
        v["syscalls"]
            .as_array_mut()
            .expect("syscalls")
            .push(serde_json::json!({"names": ["exit", "exit_group"], "action": "SCMP_ACT_ALLOW"}));
        let p: LinuxSeccomp = serde_json::from_value(v).expect("profile parses");
        let c = compile(&p).expect("compiles");
        // SAFETY: the child only makes raw syscalls on memory that is already allocated and
        // leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            // SAFETY: plain prctl / syscall calls in the child, followed by _exit.
            unsafe {
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                if c.load().is_err() {
                    libc::_exit(255);
                }
                let rc = libc::syscall(nr, args[0], args[1], args[2]);
                let e = if rc < 0 { *libc::__errno_location() } else { 0 };
                libc::_exit(e.min(254));
            }
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(
            libc::WIFEXITED(status),
            "child ended by a signal: {status:#x}"
        );
        let code = libc::WEXITSTATUS(status);
        assert_ne!(code, 255, "loading the filter failed");
        if code == ran {
            Outcome::Ran(code)
        } else {
            Outcome::Errno(code)
        }
    }

    #[test]
    fn every_rule_keeps_its_action() {
        let missing = c"/nonexistent-kiln-seccomp-test/dir".as_ptr() as u64;
        let mkdir = |p: &str| outcome(p, libc::SYS_mkdir, [missing, 0o755, 0], libc::ENOENT);
        let persona = |p: &str, arg: u64| outcome(p, libc::SYS_personality, [arg, 0, 0], 0);
        let query = 0xffff_ffff;
        let table: &[(&str, &str, Outcome)] = &[
            (
                "mkdir ERRNO under an equal ERRNO default",
                r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
                    {"names":["mkdir"],"action":"SCMP_ACT_ERRNO"}]}"#,
                Outcome::Errno(libc::EPERM),
            ),
            (
                "mkdir ERRNO(EACCES) under an ERRNO(EPERM) default",
                r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":1,"syscalls":[
                    {"names":["mkdir"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#,
                Outcome::Errno(libc::EACCES),
            ),
            (
                "mkdir ALLOW under an ERRNO default",
                r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
                    {"names":["mkdir"],"action":"SCMP_ACT_ALLOW"}]}"#,
                Outcome::Ran(libc::ENOENT),
            ),
            (
                "mkdir ERRNO under an ALLOW default",
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                    {"names":["mkdir"],"action":"SCMP_ACT_ERRNO","errnoRet":38}]}"#,
                Outcome::Errno(libc::ENOSYS),
            ),
            (
                "unnamed mkdir under an ERRNO default",
                r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":22,"syscalls":[
                    {"names":["getcwd"],"action":"SCMP_ACT_ALLOW"}]}"#,
                Outcome::Errno(libc::EINVAL),
            ),
        ];
        for (what, profile, want) in table {
            assert_eq!(&mkdir(profile), want, "{what}");
        }
        // Argument conditions: the rule's action applies only where they match.
        let cond = r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":1,"syscalls":[
            {"names":["personality"],"action":"SCMP_ACT_ERRNO","errnoRet":1,
             "args":[{"index":0,"value":8,"op":"SCMP_CMP_EQ"}]},
            {"names":["personality"],"action":"SCMP_ACT_ALLOW",
             "args":[{"index":0,"value":4294967295,"op":"SCMP_CMP_EQ"}]}]}"#;
        assert_eq!(
            persona(cond, 8),
            Outcome::Errno(libc::EPERM),
            "arg 8 is ERRNO"
        );
        assert_eq!(
            persona(cond, query),
            Outcome::Ran(0),
            "the query is allowed"
        );
        assert_eq!(persona(cond, 0), Outcome::Errno(libc::EPERM), "default");
        let cond_eq_default = r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":1,"syscalls":[
            {"names":["personality"],"action":"SCMP_ACT_ERRNO","errnoRet":13,
             "args":[{"index":0,"value":8,"op":"SCMP_CMP_EQ"}]},
            {"names":["personality"],"action":"SCMP_ACT_ALLOW"}]}"#;
        assert_eq!(persona(cond_eq_default, 8), Outcome::Errno(libc::EACCES));
        assert_eq!(persona(cond_eq_default, query), Outcome::Ran(0));
    }

    #[test]
    fn notify_is_refused_by_name() {
        let p: LinuxSeccomp = serde_json::from_str(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_NOTIFY"}]}"#,
        )
        .expect("profile parses");
        let e = compile(&p).err().expect("notify refused").to_string();
        assert!(e.contains("SCMP_ACT_NOTIFY"), "{e}");
    }
}
