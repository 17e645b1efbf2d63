//! Fixtures for the runtime's end-to-end tests: a busybox bundle with a runc-style config that a
//! test edits as JSON, run through the `kiln` binary; cleaned up on drop.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use serde_json::{json, Value};

pub use crate::common::{busybox_rootfs, unique, Sandbox};

/// A bundle (busybox rootfs + config.json) and the container id used for it.
pub struct Bundle {
    /// Scratch dir, state root and kiln command.
    pub sb: Sandbox,
    /// The bundle directory.
    pub dir: PathBuf,
    /// The config, written by `write` (tests edit it first).
    pub config: Value,
    /// The container id.
    pub id: String,
}

impl Bundle {
    /// The bundle's root filesystem.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    /// A bundle running `args`, with kiln's default config (pid/net/ipc/uts/mount/cgroup ns).
    pub fn new(args: &[&str]) -> Bundle {
        let sb = Sandbox::new();
        let dir = sb.dir.path().join("bundle");
        busybox_rootfs(&dir.join("rootfs"));
        std::fs::create_dir_all(&dir).expect("bundle dir");
        sb.ok(&["spec", "--bundle", dir.to_str().expect("utf8")]);
        let config: Value =
            serde_json::from_slice(&std::fs::read(dir.join("config.json")).expect("read config"))
                .expect("parse config");
        let id = unique("kt");
        let mut b = Bundle {
            sb,
            dir,
            config,
            id,
        };
        b.config["process"]["args"] = json!(args);
        // `kiln spec` is runc's template (a terminal, no cgroup namespace): tests read stdout
        // and expect their own cgroup namespace.
        b.config["process"]["terminal"] = json!(false);
        b.config["linux"]["namespaces"]
            .as_array_mut()
            .expect("namespaces")
            .push(json!({"type": "cgroup"}));
        b.config["linux"]["cgroupsPath"] = json!(format!("kiln-test/{}", b.id));
        b
    }

    /// Writes config.json.
    pub fn write(&self) {
        std::fs::write(
            self.dir.join("config.json"),
            serde_json::to_vec_pretty(&self.config).expect("json"),
        )
        .expect("write config");
    }

    /// Runs `kiln ARGS` (state root of this sandbox).
    pub fn kiln(&self, args: &[&str]) -> Output {
        self.sb.run(args)
    }

    /// Runs `kiln ARGS`, panicking with stderr on failure; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.sb.ok(args)
    }

    /// Writes the config and runs the container in the foreground: (exit code, stdout, stderr).
    pub fn run(&self) -> (i32, String, String) {
        self.write();
        let out = self.kiln(&[
            "run",
            "--bundle",
            self.dir.to_str().expect("utf8"),
            &self.id,
        ]);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs the container and asserts it exits 0; returns stdout.
    pub fn run_ok(&self) -> String {
        let (code, out, err) = self.run();
        assert_eq!(code, 0, "container failed: stdout={out} stderr={err}");
        out
    }

    /// Writes the config and creates the container (not started).
    pub fn create(&self) {
        self.write();
        self.create_id(&self.id);
    }

    /// Creates container `id` from the written config. The init inherits create's stdio, so
    /// create runs with files as stdout/stderr (a pipe would stay open as long as the container).
    pub fn create_id(&self, id: &str) {
        let (ok, err) = self.try_create(id);
        assert!(ok, "kiln create {id} failed: {err}");
    }

    /// Runs create for `id`: (success, stderr).
    pub fn try_create(&self, id: &str) -> (bool, String) {
        let log = self.sb.dir.path().join(format!("create-{id}.err"));
        let out = self.sb.dir.path().join(format!("create-{id}.out"));
        let status = self
            .sb
            .kiln()
            .args(["create", "--bundle", self.dir.to_str().expect("utf8"), id])
            .stdin(Stdio::null())
            .stdout(File::create(&out).expect("stdout file"))
            .stderr(File::create(&log).expect("stderr file"))
            .status()
            .expect("spawn kiln create");
        (
            status.success(),
            std::fs::read_to_string(&log).unwrap_or_default(),
        )
    }

    /// Runs `kiln ARGS` with stdio not connected (for commands that leave processes behind).
    pub fn ok_detached(&self, args: &[&str]) {
        let out = self
            .sb
            .kiln()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("spawn kiln");
        assert!(out.success(), "kiln {args:?} failed ({out})");
    }

    /// What the container wrote to stdout so far (created with `create`).
    pub fn create_stdout(&self, id: &str) -> String {
        std::fs::read_to_string(self.sb.dir.path().join(format!("create-{id}.out")))
            .unwrap_or_default()
    }

    /// The container's OCI state.
    pub fn state(&self) -> Value {
        serde_json::from_str(&self.ok(&["state", &self.id])).expect("state json")
    }

    /// Adds a mount entry.
    pub fn add_mount(&mut self, m: Value) {
        self.config["mounts"]
            .as_array_mut()
            .expect("mounts")
            .push(m);
    }

    /// The cgroup directory of this container in a v1 controller.
    pub fn cgroup_dir(&self, controller: &str) -> PathBuf {
        Path::new("/sys/fs/cgroup")
            .join(controller)
            .join("kiln-test")
            .join(&self.id)
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = self.kiln(&["delete", "--force", &self.id]);
        for c in [
            "cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "freezer",
        ] {
            let _ = std::fs::remove_dir(self.cgroup_dir(c));
        }
    }
}

/// Number of mounts in this process's mount namespace.
pub fn host_mount_count() -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .count()
}
