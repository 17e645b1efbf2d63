//! The container's cgroup (v1 hierarchies, or v2 where the host is unified) through cgroups-rs:
//! creation with the config's limits and device rules, joining, freezing, stats, removal, and
//! the container's view of /sys/fs/cgroup.
//!
//! Where it lives (as runc does it): an absolute `cgroupsPath` is taken from the hierarchy roots;
//! a relative one (default `kiln/<id>`) nests, per hierarchy, under the cgroup of the process
//! that creates the container (/proc/self/cgroup), so a kiln started inside a limited cgroup
//! cannot escape that limit.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use kiln_util::wait::Deadline;

use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::cpuacct::CpuAcctController;
use cgroups_rs::fs::devices::{DevicePermissions, DeviceType};
use cgroups_rs::fs::freezer::FreezerController;
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::pid::PidController;
use cgroups_rs::fs::{
    hierarchies, Cgroup, DeviceResource, Hierarchy, MaxValue, Resources, Subsystem,
};
use cgroups_rs::CgroupPid;
use cgroups_rs::FreezerState;
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxResources};
use serde::{Deserialize, Serialize};

use crate::error::{Ctx, Error, Result};

/// The v1 controllers a container joins.
const CONTROLLERS: &[&str] = &[
    "cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "freezer", "devices",
];

/// Where the v1 hierarchies are mounted on hosts like this one.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The device rules runc 1.1 appends to every container's: mknod of any node, the default /dev
/// nodes (null, random, full, tty, zero, urandom), /dev/pts/*, /dev/ptmx and tun/tap.
/// (type, major, minor, access); -1 is any.
const DEFAULT_DEVICE_RULES: &[(DeviceType, i64, i64, &str)] = &[
    (DeviceType::Char, -1, -1, "m"),
    (DeviceType::Block, -1, -1, "m"),
    (DeviceType::Char, 1, 3, "rwm"),
    (DeviceType::Char, 1, 8, "rwm"),
    (DeviceType::Char, 1, 7, "rwm"),
    (DeviceType::Char, 5, 0, "rwm"),
    (DeviceType::Char, 1, 5, "rwm"),
    (DeviceType::Char, 1, 9, "rwm"),
    (DeviceType::Char, 136, -1, "rwm"),
    (DeviceType::Char, 5, 2, "rwm"),
    (DeviceType::Char, 10, 200, "rwm"),
];

/// A container's cgroup.
pub struct ContainerCgroup {
    cg: Cgroup,
    key: String,
    owned: bool,
}

/// Where a container's cgroup is: `leaf` under each hierarchy's `parents` entry (absent = the
/// hierarchy root). Persisted in the container state as [`ContainerCgroup::key`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Paths {
    leaf: String,
    #[serde(default)]
    parents: BTreeMap<String, String>,
    /// The cgroup existed before the container was created: it may hold processes that are
    /// not the container's, so kiln neither kills its members nor removes it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    preexisting: bool,
}

impl Paths {
    /// Parses a state key: a plain path (the same in every hierarchy) or the JSON form.
    fn parse(key: &str) -> Paths {
        if key.starts_with('{') {
            if let Ok(p) = serde_json::from_str(key) {
                return p;
            }
        }
        Paths {
            leaf: key.to_string(),
            parents: BTreeMap::new(),
            preexisting: false,
        }
    }

    /// The state key: the plain leaf when no hierarchy nests, else the JSON form.
    fn key(&self) -> String {
        if self.parents.is_empty() && !self.preexisting {
            return self.leaf.clone();
        }
        serde_json::to_string(self).unwrap_or_else(|_| self.leaf.clone())
    }

    /// The path of the cgroup in hierarchy `controller`, relative to its root.
    fn in_hierarchy(&self, controller: &str) -> PathBuf {
        match self.parents.get(controller) {
            Some(p) => Path::new(p).join(&self.leaf),
            None => PathBuf::from(&self.leaf),
        }
    }
}

/// cgroups-rs' hierarchy restricted to the controllers kiln uses.
#[derive(Debug)]
struct Only(Box<dyn Hierarchy>);

impl Hierarchy for Only {
    fn subsystems(&self) -> Vec<Subsystem> {
        self.0
            .subsystems()
            .into_iter()
            .filter(|s| CONTROLLERS.contains(&s.controller_name().as_str()))
            .collect()
    }
    fn root(&self) -> PathBuf {
        self.0.root()
    }
    fn root_control_group(&self) -> Cgroup {
        self.0.root_control_group()
    }
    fn parent_control_group(&self, path: &str) -> Cgroup {
        self.0.parent_control_group(path)
    }
    fn v2(&self) -> bool {
        self.0.v2()
    }
}

/// A config cgroupsPath as a relative path, refusing `..` (it would leave the caller's cgroup).
fn normalize(path: &Path) -> Result<String> {
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(Error::Config(format!(
            "linux.cgroupsPath {path:?} contains '..'"
        )));
    }
    Ok(path.to_string_lossy().trim_matches('/').to_string())
}

/// The caller's own cgroup in each v1 controller kiln uses, from /proc/self/cgroup (hierarchies
/// where it is at the root are left out).
fn own_cgroups() -> Result<BTreeMap<String, String>> {
    let p = Path::new("/proc/self/cgroup");
    let text = std::fs::read_to_string(p).at("reading", p)?;
    Ok(parse_proc_cgroup(&text))
}

/// Parses `/proc/<pid>/cgroup` lines `id:controllers:path` into controller → path (no slashes at
/// the ends), keeping the controllers kiln uses that are not at the root.
fn parse_proc_cgroup(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let mut f = line.splitn(3, ':');
        let (Some(_), Some(ctls), Some(path)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let path = path.trim_matches('/');
        if path.is_empty() {
            continue;
        }
        for c in ctls.split(',').filter(|c| CONTROLLERS.contains(c)) {
            out.insert(c.to_string(), path.to_string());
        }
    }
    out
}

fn handle(paths: &Paths) -> Cgroup {
    let rel: HashMap<String, String> = paths.parents.clone().into_iter().collect();
    Cgroup::load_with_relative_paths(Box::new(Only(hierarchies::auto())), &paths.leaf, rel)
}

fn err(path: &str, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Cgroup {
        path: path.to_string(),
        msg: format!("{what}: {e}"),
    }
}

impl ContainerCgroup {
    /// Creates (or reuses) container `id`'s cgroup for config `cgroups_path` in every used
    /// controller and applies `res` and the device rules (deny all, the config's, runc's
    /// defaults), before any process joins it.
    pub fn create(
        cgroups_path: Option<&Path>,
        id: &str,
        res: Option<&LinuxResources>,
    ) -> Result<ContainerCgroup> {
        let given = cgroups_path.map(normalize).transpose()?;
        let absolute = cgroups_path.is_some_and(|p| p.is_absolute());
        let paths = match given.filter(|p| !p.is_empty()) {
            Some(leaf) if absolute => Paths {
                leaf,
                parents: BTreeMap::new(),
                preexisting: false,
            },
            leaf => Paths {
                leaf: leaf.unwrap_or_else(|| {
                    kiln_util::cgroup::container_path(id)
                        .to_string_lossy()
                        .into_owned()
                }),
                parents: own_cgroups()?,
                preexisting: false,
            },
        };
        let mut paths = paths;
        paths.preexisting = handle(&paths).exists();
        let key = paths.key();
        let cg = handle(&paths);
        let me = ContainerCgroup {
            cg,
            key,
            owned: !paths.preexisting,
        };
        me.cg.create().map_err(|e| err(&me.key, "creating", e))?;
        let none = LinuxResources::default();
        if let Err(e) = me.apply(res.unwrap_or(&none)) {
            let _ = me.remove(Duration::ZERO);
            return Err(e);
        }
        Ok(me)
    }

    /// A handle on an existing cgroup from its [`key`](Self::key) (for stats, freezing and
    /// removal).
    pub fn load(key: &str) -> ContainerCgroup {
        let paths = Paths::parse(key);
        ContainerCgroup {
            cg: handle(&paths),
            key: key.to_string(),
            owned: !paths.preexisting,
        }
    }

    /// The key to persist in the container state: the path relative to the hierarchy roots,
    /// or (when some hierarchy nests under the creator's cgroup) a JSON description.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Applies the config's resource limits and device rules.
    pub fn apply(&self, res: &LinuxResources) -> Result<()> {
        let r = to_resources(res).map_err(|e| err(&self.key, "device rules", e))?;
        self.cg
            .apply(&r)
            .map_err(|e| err(&self.key, "applying resources", e))
    }

    /// Moves process `pid` (all its threads) into the cgroup.
    pub fn add(&self, pid: i32) -> Result<()> {
        self.cg
            .add_task_by_tgid(CgroupPid::from(pid as u64))
            .map_err(|e| err(&self.key, &format!("adding pid {pid}"), e))
    }

    /// Pids of every process in the cgroup.
    pub fn procs(&self) -> Vec<i32> {
        self.cg.procs().into_iter().map(|p| p.pid as i32).collect()
    }

    /// Freezes (pause) every process in the cgroup.
    pub fn freeze(&self) -> Result<()> {
        let f: &FreezerController = self
            .cg
            .controller_of()
            .ok_or_else(|| err(&self.key, "freeze", "no freezer controller"))?;
        f.freeze().map_err(|e| err(&self.key, "freezing", e))
    }

    /// Thaws (resume) every process in the cgroup.
    pub fn thaw(&self) -> Result<()> {
        let f: &FreezerController = self
            .cg
            .controller_of()
            .ok_or_else(|| err(&self.key, "thaw", "no freezer controller"))?;
        f.thaw().map_err(|e| err(&self.key, "thawing", e))
    }

    /// Whether kiln created the cgroup for the container (it did not exist before): only then
    /// are all its members the container's.
    pub fn owned(&self) -> bool {
        self.owned
    }

    /// Removes the cgroup directories, retrying while exiting processes leave (up to `wait`).
    /// A cgroup that existed before the container ([`Self::owned`] false) is left in place.
    pub fn remove(&self, wait: Duration) -> Result<()> {
        if !self.owned {
            return Ok(());
        }
        kiln_util::wait::retry(Deadline::after(wait), Duration::from_millis(2), |_| {
            self.cg.delete()
        })
        .map_err(|e| err(&self.key, "removing", e))
    }

    /// Resource usage as runc's `events --stats` reports it.
    pub fn stats(&self) -> serde_json::Value {
        let mut data = serde_json::Map::new();
        if let Some(acct) = self.cg.controller_of::<CpuAcctController>() {
            let a = acct.cpuacct();
            let percpu: Vec<u64> = a
                .usage_percpu
                .split_whitespace()
                .filter_map(|s| s.parse().ok())
                .collect();
            let mut throttling = serde_json::json!({});
            if let Some(cpu) = self.cg.controller_of::<CpuController>() {
                let stat = cpu.cpu().stat;
                let get = |k: &str| {
                    stat.lines()
                        .find_map(|l| l.strip_prefix(k)?.trim().parse::<u64>().ok())
                        .unwrap_or(0)
                };
                throttling = serde_json::json!({
                    "periods": get("nr_periods"),
                    "throttledPeriods": get("nr_throttled"),
                    "throttledTime": get("throttled_time"),
                });
            }
            data.insert(
                "cpu".into(),
                serde_json::json!({
                    "usage": {"total": a.usage, "percpu": percpu, "kernel": a.usage_sys, "user": a.usage_user},
                    "throttling": throttling,
                }),
            );
        }
        if let Some(mem) = self.cg.controller_of::<MemController>() {
            let m = mem.memory_stat();
            let sw = mem.memswap();
            data.insert(
                "memory".into(),
                serde_json::json!({
                    "usage": {"limit": m.limit_in_bytes, "usage": m.usage_in_bytes,
                              "max": m.max_usage_in_bytes, "failcnt": m.fail_cnt},
                    "swap": {"limit": sw.limit_in_bytes, "usage": sw.usage_in_bytes,
                             "max": sw.max_usage_in_bytes, "failcnt": sw.fail_cnt},
                    "cache": m.stat.cache,
                    "raw": {"cache": m.stat.cache, "rss": m.stat.rss, "mapped_file": m.stat.mapped_file},
                }),
            );
        }
        if let Some(p) = self.cg.controller_of::<PidController>() {
            let limit = match p.get_pid_max() {
                Ok(MaxValue::Value(v)) => v,
                _ => 0,
            };
            data.insert(
                "pids".into(),
                serde_json::json!({"current": p.get_pid_current().unwrap_or(0), "limit": limit}),
            );
        }
        serde_json::Value::Object(data)
    }
}

/// Whether the freezer cgroup of state key `key` is frozen (a cheap direct read; false when
/// unknown).
pub fn is_frozen(key: &str) -> bool {
    let p = Path::new(CGROUP_ROOT)
        .join("freezer")
        .join(Paths::parse(key).in_hierarchy("freezer"))
        .join("freezer.state");
    std::fs::read(p)
        .map(|s| s.starts_with(b"FROZEN"))
        .unwrap_or(false)
}

/// Whether the freezer reports `FreezerState::Frozen` through cgroups-rs (slower, exact).
pub fn frozen(cg: &ContainerCgroup) -> bool {
    cg.cg
        .controller_of::<FreezerController>()
        .and_then(|f| f.state().ok())
        .is_some_and(|s| matches!(s, FreezerState::Frozen))
}

/// The device rules a container gets: deny all, then the config's in order, then runc's
/// default allow list.
fn device_rules(config: &[LinuxDeviceCgroup]) -> std::result::Result<Vec<DeviceResource>, String> {
    let rule = |allow, devtype, major, minor, access: &str| {
        let access = DevicePermissions::from_str(access)
            .map_err(|_| format!("access {access:?} is not made of r, w and m"))?;
        Ok::<_, String>(DeviceResource {
            allow,
            devtype,
            major,
            minor,
            access,
        })
    };
    let mut out = vec![rule(false, DeviceType::All, -1, -1, "rwm")?];
    for d in config {
        let devtype = match d.typ().unwrap_or(LinuxDeviceType::A) {
            LinuxDeviceType::A => DeviceType::All,
            LinuxDeviceType::B => DeviceType::Block,
            LinuxDeviceType::C | LinuxDeviceType::U => DeviceType::Char,
            LinuxDeviceType::P => {
                return Err(format!(
                    "rule {d}: type 'p' (a fifo) is not a device cgroup type (a, b or c)"
                ))
            }
        };
        let access = d
            .access()
            .as_deref()
            .filter(|a| !a.is_empty())
            .unwrap_or("rwm");
        let (major, minor) = (d.major().unwrap_or(-1), d.minor().unwrap_or(-1));
        out.push(rule(d.allow(), devtype, major, minor, access)?);
    }
    for &(devtype, major, minor, access) in DEFAULT_DEVICE_RULES {
        out.push(rule(true, devtype, major, minor, access)?);
    }
    Ok(out)
}

/// Maps the OCI resources onto cgroups-rs' description of them.
fn to_resources(res: &LinuxResources) -> std::result::Result<Resources, String> {
    let mut r = Resources::default();
    r.devices.devices = device_rules(res.devices().as_deref().unwrap_or(&[]))?;
    if let Some(m) = res.memory() {
        r.memory.memory_hard_limit = m.limit();
        r.memory.memory_soft_limit = m.reservation();
        r.memory.memory_swap_limit = m.swap();
        r.memory.kernel_memory_limit = m.kernel();
        r.memory.kernel_tcp_memory_limit = m.kernel_tcp();
        r.memory.swappiness = m.swappiness();
    }
    if let Some(p) = res.pids() {
        let l = p.limit();
        r.pid.maximum_number_of_processes = Some(if l <= 0 {
            MaxValue::Max
        } else {
            MaxValue::Value(l)
        });
    }
    if let Some(c) = res.cpu() {
        r.cpu.shares = c.shares();
        r.cpu.quota = c.quota();
        r.cpu.period = c.period();
        r.cpu.realtime_runtime = c.realtime_runtime();
        r.cpu.realtime_period = c.realtime_period();
        r.cpu.cpus = c.cpus().clone();
        r.cpu.mems = c.mems().clone();
    }
    if let Some(b) = res.block_io() {
        r.blkio.weight = b.weight();
        r.blkio.leaf_weight = b.leaf_weight();
    }
    Ok(r)
}

/// What a container's /sys/fs/cgroup shows (the `cgroup` mount of a config): for each
/// hierarchy its cgroup (state key `key`) is in, that cgroup's own directory under the
/// hierarchy's name, so nothing above it (no host cgroup file) is reachable, plus the aliases
/// of co-mounted hierarchies (cpu -> cpu,cpuacct). Hierarchies it is not in are absent.
#[derive(Debug, Default)]
pub struct CgroupView {
    /// (name under the view, the container's cgroup directory on the host).
    pub dirs: Vec<(OsString, PathBuf)>,
    /// (alias name under the view, the name it links to).
    pub aliases: Vec<(OsString, PathBuf)>,
}

/// The view of /sys/fs/cgroup for the container whose cgroup state key is `key`.
pub fn view(key: Option<&str>) -> Result<CgroupView> {
    let mut v = CgroupView::default();
    let Some(key) = key else {
        return Ok(v);
    };
    let cg = ContainerCgroup::load(key);
    for s in cg.cg.subsystems() {
        let src = s.to_controller().path();
        let Some(name) = src
            .strip_prefix(CGROUP_ROOT)
            .ok()
            .and_then(|r| r.components().next())
            .map(|c| c.as_os_str().to_os_string())
        else {
            continue;
        };
        if !v.dirs.iter().any(|(n, _)| *n == name) {
            v.dirs.push((name, src.to_path_buf()));
        }
    }
    let root = Path::new(CGROUP_ROOT);
    for e in std::fs::read_dir(root).at("listing", root)?.flatten() {
        let Ok(link) = std::fs::read_link(e.path()) else {
            continue;
        };
        if v.dirs.iter().any(|(n, _)| link.as_os_str() == n) {
            v.aliases.push((e.file_name(), link));
        }
    }
    Ok(v)
}
