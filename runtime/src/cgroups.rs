//! The container's cgroup (v1 hierarchies, or v2 where the host is unified) through cgroups-rs:
//! creation with the config's limits, joining, freezing, stats and removal.

use std::path::Path;
use std::time::{Duration, Instant};

use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::cpuacct::CpuAcctController;
use cgroups_rs::fs::freezer::FreezerController;
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::pid::PidController;
use cgroups_rs::fs::{hierarchies, Cgroup, MaxValue, Resources};
use cgroups_rs::CgroupPid;
use cgroups_rs::FreezerState;
use oci_spec::runtime::LinuxResources;

use crate::error::{Error, Result};

/// The v1 controllers a container joins (devices is left to the host's policy).
const CONTROLLERS: &[&str] = &[
    "cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "freezer",
];

/// Where the v1 freezer hierarchy is mounted on hosts like this one.
const FREEZER_ROOT: &str = "/sys/fs/cgroup/freezer";

/// A container's cgroup.
pub struct ContainerCgroup {
    cg: Cgroup,
    path: String,
}

/// Normalises a config cgroupsPath (absolute or relative, both taken from the hierarchy roots).
pub fn normalize(path: &Path) -> String {
    path.to_string_lossy().trim_matches('/').to_string()
}

fn err(path: &str, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Cgroup {
        path: path.to_string(),
        msg: format!("{what}: {e}"),
    }
}

impl ContainerCgroup {
    /// Creates (or reuses) the cgroup at `path` in every used controller and applies `res`.
    pub fn create(path: &str, res: Option<&LinuxResources>) -> Result<ContainerCgroup> {
        let names = CONTROLLERS.iter().map(|s| s.to_string()).collect();
        let cg = Cgroup::new_with_specified_controllers(hierarchies::auto(), path, Some(names))
            .map_err(|e| err(path, "creating", e))?;
        let me = ContainerCgroup {
            cg,
            path: path.to_string(),
        };
        if let Some(res) = res {
            if let Err(e) = me.apply(res) {
                let _ = me.remove(Duration::ZERO);
                return Err(e);
            }
        }
        Ok(me)
    }

    /// A handle on an existing cgroup (for stats, freezing and removal).
    pub fn load(path: &str) -> ContainerCgroup {
        let names = CONTROLLERS.iter().map(|s| s.to_string()).collect();
        ContainerCgroup {
            cg: Cgroup::load_with_specified_controllers(hierarchies::auto(), path, names),
            path: path.to_string(),
        }
    }

    /// The cgroup path relative to the hierarchy roots.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Applies the config's resource limits.
    pub fn apply(&self, res: &LinuxResources) -> Result<()> {
        let r = to_resources(res);
        self.cg
            .apply(&r)
            .map_err(|e| err(&self.path, "applying resources", e))
    }

    /// Moves process `pid` (all its threads) into the cgroup.
    pub fn add(&self, pid: i32) -> Result<()> {
        self.cg
            .add_task_by_tgid(CgroupPid::from(pid as u64))
            .map_err(|e| err(&self.path, &format!("adding pid {pid}"), e))
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
            .ok_or_else(|| err(&self.path, "freeze", "no freezer controller"))?;
        f.freeze().map_err(|e| err(&self.path, "freezing", e))
    }

    /// Thaws (resume) every process in the cgroup.
    pub fn thaw(&self) -> Result<()> {
        let f: &FreezerController = self
            .cg
            .controller_of()
            .ok_or_else(|| err(&self.path, "thaw", "no freezer controller"))?;
        f.thaw().map_err(|e| err(&self.path, "thawing", e))
    }

    /// Removes the cgroup directories, retrying while exiting processes leave (up to `wait`).
    pub fn remove(&self, wait: Duration) -> Result<()> {
        let deadline = Instant::now() + wait;
        loop {
            match self.cg.delete() {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    return Err(err(&self.path, "removing", e));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
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

/// Whether the freezer cgroup at `path` is frozen (a cheap direct read; false when unknown).
pub fn is_frozen(path: &str) -> bool {
    let p = Path::new(FREEZER_ROOT).join(path).join("freezer.state");
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

/// Maps the OCI resources onto cgroups-rs' description of them.
fn to_resources(res: &LinuxResources) -> Resources {
    let mut r = Resources::default();
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
    r
}
