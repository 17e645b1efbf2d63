//! The container process itself: argv/env, executable lookup, rlimits, identity, capabilities,
//! no_new_privs, seccomp and the final execve. Shared by the container init and `exec`.

use std::ffi::{CStr, CString};
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use caps::{CapSet, Capability, CapsHashSet};
use oci_spec::runtime::{LinuxCapabilities, LinuxSeccomp, PosixRlimitType, Process};

use crate::error::{Ctx, Error, Result};
use crate::seccomp;

/// PATH used for the lookup when the process environment has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Everything needed to turn the current (set-up) process into the container process.
pub struct Prepared {
    argv: Vec<CString>,
    envp: Vec<CString>,
    path_var: String,
    cwd: PathBuf,
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
    umask: Option<u32>,
    rlimits: Vec<(libc::__rlimit_resource_t, &'static str, u64, u64)>,
    caps: Option<Sets>,
    no_new_privs: bool,
    seccomp: Option<seccomp::Compiled>,
}

/// The five capability sets, converted.
struct Sets {
    bounding: CapsHashSet,
    effective: CapsHashSet,
    inheritable: CapsHashSet,
    permitted: CapsHashSet,
    ambient: CapsHashSet,
}

fn cstr(s: &str, what: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::Config(format!("{what} {s:?} contains a NUL byte")))
}

fn rlimit(t: PosixRlimitType) -> (libc::__rlimit_resource_t, &'static str) {
    use PosixRlimitType::*;
    match t {
        RlimitCpu => (libc::RLIMIT_CPU, "RLIMIT_CPU"),
        RlimitFsize => (libc::RLIMIT_FSIZE, "RLIMIT_FSIZE"),
        RlimitData => (libc::RLIMIT_DATA, "RLIMIT_DATA"),
        RlimitStack => (libc::RLIMIT_STACK, "RLIMIT_STACK"),
        RlimitCore => (libc::RLIMIT_CORE, "RLIMIT_CORE"),
        RlimitRss => (libc::RLIMIT_RSS, "RLIMIT_RSS"),
        RlimitNproc => (libc::RLIMIT_NPROC, "RLIMIT_NPROC"),
        RlimitNofile => (libc::RLIMIT_NOFILE, "RLIMIT_NOFILE"),
        RlimitMemlock => (libc::RLIMIT_MEMLOCK, "RLIMIT_MEMLOCK"),
        RlimitAs => (libc::RLIMIT_AS, "RLIMIT_AS"),
        RlimitLocks => (libc::RLIMIT_LOCKS, "RLIMIT_LOCKS"),
        RlimitSigpending => (libc::RLIMIT_SIGPENDING, "RLIMIT_SIGPENDING"),
        RlimitMsgqueue => (libc::RLIMIT_MSGQUEUE, "RLIMIT_MSGQUEUE"),
        RlimitNice => (libc::RLIMIT_NICE, "RLIMIT_NICE"),
        RlimitRtprio => (libc::RLIMIT_RTPRIO, "RLIMIT_RTPRIO"),
        RlimitRttime => (libc::RLIMIT_RTTIME, "RLIMIT_RTTIME"),
    }
}

/// Converts an OCI capability list to the caps crate's set (names the kernel lacks are skipped).
fn cap_set<T: serde::Serialize>(list: Option<&std::collections::HashSet<T>>) -> CapsHashSet {
    let mut out = CapsHashSet::new();
    for c in list.into_iter().flatten() {
        if let Ok(serde_json::Value::String(name)) = serde_json::to_value(c) {
            if let Ok(cap) = Capability::from_str(&name) {
                out.insert(cap);
            }
        }
    }
    out
}

fn sets(c: &LinuxCapabilities) -> Sets {
    Sets {
        bounding: cap_set(c.bounding().as_ref()),
        effective: cap_set(c.effective().as_ref()),
        inheritable: cap_set(c.inheritable().as_ref()),
        permitted: cap_set(c.permitted().as_ref()),
        ambient: cap_set(c.ambient().as_ref()),
    }
}

impl Prepared {
    /// Checks and converts the process description (nothing is applied yet).
    pub fn new(p: &Process, seccomp: Option<&LinuxSeccomp>) -> Result<Prepared> {
        let args = p.args().as_deref().unwrap_or(&[]);
        if args.is_empty() {
            return Err(Error::Config("process.args is empty".into()));
        }
        let argv = args
            .iter()
            .map(|a| cstr(a, "argument"))
            .collect::<Result<Vec<_>>>()?;
        let env = p.env().as_deref().unwrap_or(&[]);
        let envp = env
            .iter()
            .map(|e| cstr(e, "environment entry"))
            .collect::<Result<Vec<_>>>()?;
        let path_var = env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH)
            .to_string();
        let rlimits = p
            .rlimits()
            .as_deref()
            .unwrap_or(&[])
            .iter()
            .map(|r| {
                let (res, name) = rlimit(r.typ());
                (res, name, r.soft(), r.hard())
            })
            .collect();
        let user = p.user();
        Ok(Prepared {
            argv,
            envp,
            path_var,
            cwd: p.cwd().clone(),
            uid: user.uid(),
            gid: user.gid(),
            groups: user.additional_gids().clone().unwrap_or_default(),
            umask: user.umask(),
            rlimits,
            caps: p.capabilities().as_ref().map(sets),
            no_new_privs: p.no_new_privileges().unwrap_or(false),
            seccomp: seccomp.map(seccomp::compile).transpose()?,
        })
    }

    /// The working directory of the process.
    pub fn cwd(&self) -> &Path {
        &self.cwd
    }

    /// Finds the executable like execvp does, but with the container's PATH, in the current root.
    pub fn resolve_exe(&self) -> Result<CString> {
        let arg0 = self.argv[0].to_bytes();
        if arg0.contains(&b'/') {
            return Ok(self.argv[0].clone());
        }
        let name = String::from_utf8_lossy(arg0).into_owned();
        for dir in self.path_var.split(':').filter(|d| !d.is_empty()) {
            let cand = Path::new(dir).join(&name);
            if let Ok(md) = std::fs::metadata(&cand) {
                if md.is_file() && md.permissions().mode() & 0o111 != 0 {
                    return CString::new(cand.as_os_str().as_bytes())
                        .map_err(|_| Error::Config("executable path has a NUL".into()));
                }
            }
        }
        Err(Error::Config(format!(
            "executable {name:?} not found in $PATH ({})",
            self.path_var
        )))
    }

    /// Applies the rlimits, explaining the failure when a hard limit cannot be raised.
    pub fn apply_rlimits(&self) -> Result<()> {
        for &(res, name, soft, hard) in &self.rlimits {
            let lim = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            // SAFETY: `lim` is a valid rlimit struct.
            if unsafe { libc::setrlimit(res, &lim) } == 0 {
                continue;
            }
            let e = std::io::Error::last_os_error();
            let mut cur = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: `cur` is a valid out pointer.
            unsafe { libc::getrlimit(res, &mut cur) };
            let why = if e.raw_os_error() == Some(libc::EPERM) && hard > cur.rlim_max {
                format!(
                    "the hard limit is above the current hard limit {} and raising it needs \
                     CAP_SYS_RESOURCE, which this process does not have ({e})",
                    cur.rlim_max
                )
            } else if soft > hard {
                format!("soft limit is above the hard limit ({e})")
            } else {
                e.to_string()
            };
            return Err(Error::Rlimit {
                name: name.to_string(),
                soft,
                hard,
                why,
            });
        }
        Ok(())
    }

    /// chdir to the process cwd before the identity switch, or `false` when only the process's
    /// own user may enter it (EACCES/EPERM with the setup's capabilities): [`Prepared::chdir`]
    /// then enters it after [`Prepared::switch_identity`], as runc does.
    pub fn chdir_early(&self) -> Result<bool> {
        match std::env::set_current_dir(&self.cwd) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) => Ok(false),
            r => {
                r.at("chdir to process.cwd", &self.cwd)?;
                self.check_cwd().map(|()| true)
            }
        }
    }

    /// chdir to the process cwd, then checks (as runc does with getcwd) that the directory is
    /// inside the current root: a cwd reached through a leaked fd or a magic link is refused.
    pub fn chdir(&self) -> Result<()> {
        std::env::set_current_dir(&self.cwd).at("chdir to process.cwd", &self.cwd)?;
        self.check_cwd()
    }

    /// Refuses a current directory the kernel reports unreachable from the root.
    fn check_cwd(&self) -> Result<()> {
        // getcwd(3) fails (ENOENT) when the kernel reports a directory unreachable from the root.
        match std::env::current_dir() {
            Ok(p) if p.is_absolute() => Ok(()),
            _ => Err(Error::CwdOutsideRoot(self.cwd.clone())),
        }
    }

    /// Narrows the bounding, effective and permitted sets to the process's own plus `keep`
    /// (what the remaining setup steps need; [`Prepared::switch_identity`] drops them), so
    /// that a tracer of this setup process gains nothing the process itself will not have.
    pub fn limit_capabilities(&self, keep: &[Capability]) -> Result<()> {
        let Some(c) = &self.caps else {
            return Ok(());
        };
        let mut allowed: CapsHashSet = c.permitted.union(&c.effective).copied().collect();
        allowed.extend(keep.iter().copied());
        Self::drop_bounding(&c.bounding.union(&allowed).copied().collect())?;
        for which in [CapSet::Effective, CapSet::Permitted] {
            caps::set(None, which, &allowed)
                .map_err(|e| Error::Config(format!("limiting {which:?} capabilities: {e}")))?;
        }
        Ok(())
    }

    /// Drops every capability not in `keep` from the bounding set.
    fn drop_bounding(keep: &CapsHashSet) -> Result<()> {
        for cap in caps::all() {
            if !keep.contains(&cap) {
                match caps::drop(None, CapSet::Bounding, cap) {
                    Ok(()) => {}
                    // Capabilities newer than this kernel are not in its bounding set.
                    Err(_) if !crate::process::cap_supported(cap) => {}
                    Err(e) => {
                        return Err(Error::Config(format!(
                            "dropping {cap} from the bounding set: {e}"
                        )))
                    }
                }
            }
        }
        Ok(())
    }

    /// Switches user, groups, umask and capabilities (and loads seccomp when that needs
    /// privileges, without no_new_privs); [`Prepared::restrict`] completes it.
    pub fn switch_identity(&self) -> Result<()> {
        if let Some(m) = self.umask {
            // SAFETY: umask cannot fail.
            unsafe { libc::umask(m as libc::mode_t) };
        }
        // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: load it while we have it.
        if !self.no_new_privs {
            if let Some(s) = &self.seccomp {
                s.load()?;
            }
        }
        if let Some(c) = &self.caps {
            Self::drop_bounding(&c.bounding)?;
            crate::sys::prctl(libc::PR_SET_KEEPCAPS, 1, 0).step("prctl(PR_SET_KEEPCAPS)")?;
        }
        self.set_ids()?;
        if let Some(c) = &self.caps {
            crate::sys::prctl(libc::PR_SET_KEEPCAPS, 0, 0).step("prctl(PR_SET_KEEPCAPS)")?;
            let set = |which: CapSet, v: &CapsHashSet| {
                caps::set(None, which, v)
                    .map_err(|e| Error::Config(format!("setting {which:?} capabilities: {e}")))
            };
            set(CapSet::Effective, &c.effective)?;
            set(CapSet::Inheritable, &c.inheritable)?;
            set(CapSet::Permitted, &c.permitted)?;
            // Ambient caps must also be permitted and inheritable; others are skipped (as runc).
            caps::clear(None, CapSet::Ambient)
                .map_err(|e| Error::Config(format!("clearing ambient capabilities: {e}")))?;
            for cap in &c.ambient {
                if c.permitted.contains(cap) && c.inheritable.contains(cap) {
                    caps::raise(None, CapSet::Ambient, *cap).map_err(|e| {
                        Error::Config(format!("raising ambient capability {cap}: {e}"))
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Sets no_new_privs and loads seccomp with it, the last steps before execve.
    pub fn restrict(&self) -> Result<()> {
        if self.no_new_privs {
            crate::sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0)
                .step("prctl(PR_SET_NO_NEW_PRIVS)")?;
            if let Some(s) = &self.seccomp {
                s.load()?;
            }
        }
        Ok(())
    }

    fn set_ids(&self) -> Result<()> {
        use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
        let groups: Vec<Gid> = self.groups.iter().copied().map(Gid::from_raw).collect();
        match setgroups(&groups) {
            // In a user namespace with setgroups denied, an empty list is the only option.
            Err(nix::errno::Errno::EPERM) if groups.is_empty() => {}
            r => r
                .map_err(std::io::Error::from)
                .step(format!("setgroups({:?})", self.groups))?,
        }
        let gid = Gid::from_raw(self.gid);
        setresgid(gid, gid, gid)
            .map_err(std::io::Error::from)
            .step(format!("setresgid({})", self.gid))?;
        let uid = Uid::from_raw(self.uid);
        setresuid(uid, uid, uid)
            .map_err(std::io::Error::from)
            .step(format!("setresuid({})", self.uid))
    }

    /// Replaces the process image; returns only with the error.
    pub fn exec(&self, exe: &CStr) -> Error {
        let e = crate::sys::execve(exe, &self.argv, &self.envp);
        Error::Path {
            step: "execve".into(),
            path: PathBuf::from(exe.to_string_lossy().into_owned()),
            errno: e,
        }
    }
}

/// Closes every descriptor above 2 + `preserve` (the `--preserve-fds` range 3..3+preserve stays)
/// except `own`, the setup process's own close-on-exec descriptors.
///
/// What passes into the container process is the caller's descriptors in 3..3+preserve: they
/// came into kiln without close-on-exec. kiln's own descriptors that landed in the range (the
/// exec helper's handles of the container's namespaces when the caller left it empty, the
/// sync socket) are all close-on-exec and close at the exec: none is made inheritable.
pub fn close_leaked_fds(preserve: u32, own: &[RawFd]) -> Result<()> {
    crate::sys::close_fds_from(first_closed(preserve)?, own).step("closing inherited descriptors")
}

fn first_closed(preserve: u32) -> Result<RawFd> {
    RawFd::try_from(preserve)
        .ok()
        .and_then(|n| n.checked_add(3))
        .ok_or_else(|| Error::Config(format!("--preserve-fds {preserve} is too large")))
}

/// Whether the running kernel knows capability `cap` (index <= cap_last_cap).
pub fn cap_supported(cap: Capability) -> bool {
    static LAST: std::sync::OnceLock<u8> = std::sync::OnceLock::new();
    let last = *LAST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(40)
    });
    cap.index() <= last
}
