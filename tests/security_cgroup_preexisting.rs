//! Security (issue 11, review finding C): an absolute `cgroupsPath` naming a cgroup that
//! already exists and holds a host process. Deleting the container (the automatic delete of
//! `kiln run`, `delete --force` of a running one, `kill --all`) signals only the container's
//! processes, never the cgroup's other members, and leaves the cgroup it did not create.

mod runtime_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use runtime_support::{unique, Bundle};
use serde_json::json;

/// The v1 controllers kiln puts a container in.
const CONTROLLERS: &[&str] = &[
    "cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "freezer", "devices",
];

/// A cgroup made by the test in every v1 controller, holding a host `sleep`; on drop the
/// sleep is killed and the cgroup removed.
struct HostCgroup {
    name: String,
    dirs: Vec<PathBuf>,
    victim: Child,
}

impl HostCgroup {
    fn new() -> Option<HostCgroup> {
        let name = unique("kiln-test-pre-");
        let mut victim = Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("spawn sleep");
        let mut dirs = Vec::new();
        for c in CONTROLLERS {
            let root = Path::new("/sys/fs/cgroup").join(c);
            if !root.join("cgroup.procs").exists() {
                continue;
            }
            let dir = root.join(&name);
            std::fs::create_dir(&dir).expect("create host cgroup");
            if *c == "cpuset" {
                for f in ["cpuset.cpus", "cpuset.mems"] {
                    let v = std::fs::read_to_string(root.join(f)).expect("cpuset root");
                    std::fs::write(dir.join(f), v.trim()).expect("cpuset");
                }
            }
            dirs.push(dir.clone());
            std::fs::write(dir.join("cgroup.procs"), victim.id().to_string())
                .expect("move the host process into the cgroup");
        }
        if dirs.is_empty() {
            let _ = victim.kill();
            let _ = victim.wait();
            return None;
        }
        Some(HostCgroup { name, dirs, victim })
    }

    fn victim_alive(&mut self) -> bool {
        matches!(self.victim.try_wait(), Ok(None))
    }

    fn assert_untouched(&mut self, what: &str) {
        assert!(
            self.victim_alive(),
            "{what}: the host process in the cgroup was killed"
        );
        for d in &self.dirs {
            assert!(
                d.exists(),
                "{what}: the pre-existing cgroup {} was removed",
                d.display()
            );
        }
    }
}

impl Drop for HostCgroup {
    fn drop(&mut self) {
        let _ = self.victim.kill();
        let _ = self.victim.wait();
        for d in &self.dirs {
            let _ = std::fs::remove_dir(d);
        }
    }
}

fn setup() -> Option<HostCgroup> {
    let cg = HostCgroup::new();
    if cg.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set and there are no v1 cgroups"
        );
        eprintln!("skipped: no v1 cgroup hierarchies");
    }
    cg
}

#[test]
fn the_automatic_delete_of_run_leaves_a_preexisting_cgroup_and_its_processes() {
    let Some(mut host) = setup() else { return };
    let mut b = Bundle::new(&["true"]);
    b.config["linux"]["cgroupsPath"] = json!(format!("/{}", host.name));
    b.run_ok();
    host.assert_untouched("kiln run");
}

#[test]
fn delete_force_and_kill_all_signal_only_the_containers_processes() {
    let Some(mut host) = setup() else { return };
    let mut b = Bundle::new(&["sleep", "60"]);
    b.config["linux"]["cgroupsPath"] = json!(format!("/{}", host.name));
    b.write();
    b.ok_detached(&[
        "run",
        "-d",
        "--bundle",
        b.dir.to_str().expect("utf8"),
        &b.id,
    ]);
    let init = b.state()["pid"].as_u64().expect("pid");
    b.ok(&["kill", "--all", &b.id, "KILL"]);
    let gone = kiln_util::wait::until(
        kiln_util::wait::Deadline::after(std::time::Duration::from_secs(5)),
        std::time::Duration::from_millis(10),
        || kiln_util::process::stat(init as u32).is_none_or(|s| s.exited()),
    );
    assert!(gone, "kill --all did not kill the container's init");
    host.assert_untouched("kill --all");
    b.ok(&["delete", "--force", &b.id]);
    host.assert_untouched("delete --force");
}
