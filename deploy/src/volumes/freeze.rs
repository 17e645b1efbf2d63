//! Keeping a parent environment still while its volumes are cloned.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Freezes and thaws the processes writing to the volumes being cloned.
pub trait Freezer {
    /// Stops them (every process of the parent's containers), returning once they are stopped.
    fn freeze(&mut self) -> Result<(), String>;
    /// Lets them run again.
    fn thaw(&mut self) -> Result<(), String>;
}

/// For a parent with nothing running (or when consistency is not needed).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoFreezer;

impl Freezer for NoFreezer {
    fn freeze(&mut self) -> Result<(), String> {
        Ok(())
    }

    fn thaw(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// Freezes cgroup v1 freezer cgroups (the parent's containers' cgroups) via `freezer.state`.
#[derive(Debug, Clone)]
pub struct CgroupFreezer {
    /// Freezer cgroup directories (e.g. `/sys/fs/cgroup/freezer/kiln/<container>`).
    pub cgroups: Vec<PathBuf>,
    /// How long to wait for a cgroup to report FROZEN.
    pub timeout: Duration,
}

impl CgroupFreezer {
    /// Freezes these cgroups, waiting up to 5 s each.
    pub fn new(cgroups: Vec<PathBuf>) -> Self {
        Self {
            cgroups,
            timeout: Duration::from_secs(5),
        }
    }

    /// Writes `state` to every cgroup and waits until each reports it.
    fn set(&self, state: &str) -> Result<(), String> {
        for cg in &self.cgroups {
            write_state(cg, state)?;
        }
        for cg in &self.cgroups {
            wait_state(cg, state, self.timeout)?;
        }
        Ok(())
    }
}

impl Freezer for CgroupFreezer {
    fn freeze(&mut self) -> Result<(), String> {
        let frozen = self.set("FROZEN");
        if frozen.is_err() {
            // Best effort: a half-frozen parent must not stay frozen; the freeze error is reported.
            let _ = self.set("THAWED");
        }
        frozen
    }

    fn thaw(&mut self) -> Result<(), String> {
        self.set("THAWED")
    }
}

/// Writes a freezer state.
fn write_state(cgroup: &Path, state: &str) -> Result<(), String> {
    let file = cgroup.join("freezer.state");
    std::fs::write(&file, state).map_err(|e| format!("writing {state} to {}: {e}", file.display()))
}

/// Waits until the freezer reports `state` (reading it moves FREEZING on to FROZEN).
fn wait_state(cgroup: &Path, state: &str, timeout: Duration) -> Result<(), String> {
    let file = cgroup.join("freezer.state");
    let deadline = Instant::now() + timeout;
    loop {
        let now = std::fs::read_to_string(&file)
            .map_err(|e| format!("reading {}: {e}", file.display()))?;
        if now.trim() == state {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{} still {} after {timeout:?}",
                file.display(),
                now.trim()
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A freezer cgroup holding one `sleep`, removed on drop.
    struct Frozen {
        dir: PathBuf,
        child: std::process::Child,
    }

    impl Drop for Frozen {
        fn drop(&mut self) {
            let _ = write_state(&self.dir, "THAWED");
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = std::fs::remove_dir(&self.dir);
        }
    }

    #[test]
    fn a_cgroup_freezer_freezes_and_thaws_its_processes() {
        let root = Path::new("/sys/fs/cgroup/freezer");
        if !root.join("cgroup.procs").exists() {
            eprintln!("skipped: no cgroup v1 freezer here");
            return;
        }
        let dir = root.join(format!("kiln-test-freeze-{}", std::process::id()));
        std::fs::create_dir(&dir).expect("mkdir cgroup");
        let child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("spawn sleep");
        let cg = Frozen { dir, child };
        std::fs::write(cg.dir.join("cgroup.procs"), cg.child.id().to_string()).expect("join");
        let mut f = CgroupFreezer::new(vec![cg.dir.clone()]);
        f.freeze().expect("freeze");
        let state = |p: &Path| std::fs::read_to_string(p.join("freezer.state")).expect("state");
        assert_eq!(state(&cg.dir).trim(), "FROZEN");
        f.thaw().expect("thaw");
        assert_eq!(state(&cg.dir).trim(), "THAWED");
        let err = CgroupFreezer::new(vec![cg.dir.join("missing")])
            .freeze()
            .expect_err("no such cgroup");
        assert!(err.contains("missing/freezer.state"), "{err}");
    }
}
