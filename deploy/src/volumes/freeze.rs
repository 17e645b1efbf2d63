//! Keeping a parent environment still while its volumes are cloned.

use std::time::Duration;

use kiln_runtime::cgroups::{self, ContainerCgroup};
use kiln_util::wait::{self, Deadline};

use crate::error::FreezeError;

/// How often a freeze looks whether the cgroups got there.
const POLL: Duration = Duration::from_millis(2);

/// Freezes and thaws the processes writing to the volumes being cloned.
pub trait Freezer {
    /// Stops them (every process of the parent's containers), returning once they are stopped.
    fn freeze(&mut self) -> Result<(), FreezeError>;
    /// Lets them run again.
    fn thaw(&mut self) -> Result<(), FreezeError>;
}

/// For a parent with nothing running (or when consistency is not needed).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoFreezer;

impl Freezer for NoFreezer {
    fn freeze(&mut self) -> Result<(), FreezeError> {
        Ok(())
    }

    fn thaw(&mut self) -> Result<(), FreezeError> {
        Ok(())
    }
}

/// Freezes the freezer cgroups of the parent's containers through the runtime's cgroups
/// (`kiln pause` freezes the same way), named by the keys the runtime records for them.
#[derive(Debug, Clone)]
pub struct CgroupFreezer {
    /// The cgroups, as the runtime's container state names them (`kiln/<container>`, or the
    /// JSON form where a hierarchy nests under kiln's own cgroup).
    pub cgroups: Vec<String>,
    /// How long to wait for a cgroup to report FROZEN.
    pub timeout: Duration,
}

impl CgroupFreezer {
    /// Freezes these cgroups, waiting up to 5 s each.
    pub fn new(cgroups: Vec<String>) -> Self {
        Self {
            cgroups,
            timeout: Duration::from_secs(5),
        }
    }

    /// Freezes (or thaws) every cgroup, then waits until each reports it.
    fn set(&self, frozen: bool) -> Result<(), FreezeError> {
        let handles: Vec<ContainerCgroup> = self
            .cgroups
            .iter()
            .map(|k| ContainerCgroup::load(k))
            .collect();
        for cg in &handles {
            if frozen {
                cg.freeze()?;
            } else {
                cg.thaw()?;
            }
        }
        for cg in &handles {
            // Reading the state moves a FREEZING cgroup on to FROZEN.
            let there = || cgroups::frozen(cg) == frozen;
            if !wait::until(Deadline::after(self.timeout), POLL, there) {
                return Err(FreezeError::Timeout {
                    cgroup: cg.key().to_string(),
                    state: if frozen { "frozen" } else { "thawed" },
                    waited: self.timeout,
                });
            }
        }
        Ok(())
    }
}

impl Freezer for CgroupFreezer {
    fn freeze(&mut self) -> Result<(), FreezeError> {
        let frozen = self.set(true);
        if frozen.is_err() {
            // Best effort: a half-frozen parent must not stay frozen; the freeze error is reported.
            let _ = self.set(false);
        }
        frozen
    }

    fn thaw(&mut self) -> Result<(), FreezeError> {
        self.set(false)
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    /// A freezer cgroup holding one `sleep`, thawed and removed on drop.
    struct Frozen {
        dir: PathBuf,
        child: std::process::Child,
    }

    impl Drop for Frozen {
        fn drop(&mut self) {
            let _ = std::fs::write(self.dir.join("freezer.state"), "THAWED");
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = std::fs::remove_dir(&self.dir);
        }
    }

    #[test]
    fn a_cgroup_freezer_freezes_and_thaws_its_processes() {
        let root = Path::new("/sys/fs/cgroup/freezer");
        if !root.join("cgroup.procs").exists() {
            assert!(
                std::env::var_os("CI").is_none(),
                "no cgroup v1 freezer here"
            );
            eprintln!("skipped: no cgroup v1 freezer here");
            return;
        }
        let name = format!("kiln-test-freeze-{}", std::process::id());
        let dir = root.join(&name);
        std::fs::create_dir(&dir).expect("mkdir cgroup");
        let child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("spawn sleep");
        let cg = Frozen { dir, child };
        std::fs::write(cg.dir.join("cgroup.procs"), cg.child.id().to_string()).expect("join");
        let mut f = CgroupFreezer::new(vec![name.clone()]);
        f.freeze().expect("freeze");
        let state = |p: &Path| std::fs::read_to_string(p.join("freezer.state")).expect("state");
        assert_eq!(state(&cg.dir).trim(), "FROZEN");
        f.thaw().expect("thaw");
        assert_eq!(state(&cg.dir).trim(), "THAWED");
        let missing = format!("{name}/missing");
        let err = CgroupFreezer::new(vec![missing.clone()])
            .freeze()
            .expect_err("no such cgroup");
        let text = kiln_util::error::chain(&err);
        assert!(text.contains(&missing), "{text}");
    }
}
