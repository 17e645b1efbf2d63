//! Helpers of the vendor image tests: building recipes into a sandbox's store, running an
//! image on kiln's runtime over an umoci-unpacked bundle, the layout judge.

#![allow(dead_code)] // each test file uses its own share of these

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use kiln_testkit::common::{layout_judges, shared_deb_cache, unique, Sandbox};

/// The recipes shipped in the repository.
pub fn recipes() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("vendor-images")
}

/// Runs `kiln vendor build NAME --json` in `sb` with `recipes` and `cache`.
pub fn build_in(sb: &Sandbox, name: &str, recipes: &Path, cache: &Path) -> Output {
    sb.kiln()
        .env("KILN_DEB_CACHE", cache)
        .args(["vendor", "build", name, "--json", "--quiet", "--recipes"])
        .arg(recipes)
        .output()
        .expect("spawn kiln")
}

/// Builds a shipped recipe and returns its JSON report.
pub fn build(sb: &Sandbox, name: &str) -> serde_json::Value {
    let out = build_in(sb, name, &recipes(), &shared_deb_cache());
    assert!(
        out.status.success(),
        "kiln vendor build {name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("build report is JSON")
}

/// Names tagged in the store's index.json.
pub fn tags(sb: &Sandbox) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(sb.store().join("oci/index.json")) else {
        return Vec::new();
    };
    let index: serde_json::Value = serde_json::from_str(&text).expect("index.json");
    index["manifests"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|d| {
                    d["annotations"]["org.opencontainers.image.ref.name"]
                        .as_str()
                        .map(String::from)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Asserts that a build left no scratch directory in the store's tmp/.
pub fn assert_no_scratch(sb: &Sandbox) {
    let left: Vec<_> = std::fs::read_dir(sb.store().join("tmp"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind in tmp/: {left:?}");
}

/// A container over an umoci-unpacked bundle of an image; deleted on drop.
pub struct Container {
    /// The container id.
    pub id: String,
    /// The bundle folder (config.json, rootfs).
    pub bundle: PathBuf,
    root: PathBuf,
}

impl Container {
    /// Unpacks `tag` from the sandbox's store into a bundle for kiln's runtime; `args` replaces
    /// the image's command.
    pub fn new(sb: &Sandbox, tag: &str, args: Option<&[&str]>) -> Self {
        let bundle = sb.dir.path().join(unique("bundle-"));
        let image = format!("{}:{tag}", sb.store().join("oci").display());
        let out = Command::new("umoci")
            .args(["unpack", "--image", &image])
            .arg(&bundle)
            .output()
            .expect("umoci");
        assert!(
            out.status.success(),
            "umoci unpack {image}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = bundle.join("config.json");
        let mut cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("config.json")).expect("json");
        cfg["process"]["terminal"] = serde_json::Value::Bool(false);
        if let Some(a) = args {
            cfg["process"]["args"] = serde_json::json!(a);
        }
        std::fs::write(&path, serde_json::to_vec(&cfg).expect("json")).expect("write config.json");
        Self {
            id: unique("kiln-vendor-"),
            bundle,
            root: sb.root(),
        }
    }

    /// A command line of kiln's runtime with this sandbox's state root.
    pub fn rt(&self) -> Command {
        let mut c = Command::new(kiln_testkit::common::kiln_bin());
        c.arg("--root").arg(&self.root);
        c
    }

    /// Runs the container to completion; returns its output.
    pub fn run(&self) -> Output {
        self.rt()
            .args(["run", "-b"])
            .arg(&self.bundle)
            .arg(&self.id)
            .output()
            .expect("kiln run")
    }

    /// Starts the container detached; returns its pid.
    pub fn start(&self) -> u32 {
        let st = self
            .rt()
            .args(["run", "-d", "-b"])
            .arg(&self.bundle)
            .arg(&self.id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run -d");
        assert!(st.success(), "run -d {}", self.id);
        let out = self.rt().args(["state", &self.id]).output().expect("state");
        let state: serde_json::Value = serde_json::from_slice(&out.stdout).expect("state json");
        state["pid"].as_u64().expect("pid") as u32
    }

    /// Makes the container run the way a deploy runs a service: root read-only, `/tmp` a
    /// tmpfs, the host folder `volume` (owned by the image's user) bound at `dest`, `env` added.
    pub fn deployed_like(self, volume: &Path, dest: &str, env: &[&str]) -> Self {
        let path = self.bundle.join("config.json");
        let mut cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("config.json")).expect("json");
        let user = &cfg["process"]["user"];
        let (uid, gid) = (
            user["uid"].as_u64().unwrap_or(0),
            user["gid"].as_u64().unwrap_or(0),
        );
        std::fs::create_dir_all(volume).expect("mkdir volume");
        nix::unistd::chown(
            volume,
            Some(nix::unistd::Uid::from_raw(uid as u32)),
            Some(nix::unistd::Gid::from_raw(gid as u32)),
        )
        .expect("chown volume");
        cfg["root"]["readonly"] = serde_json::Value::Bool(true);
        let mounts = cfg["mounts"].as_array_mut().expect("mounts");
        mounts.push(serde_json::json!({
            "destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
            "options": ["nosuid", "nodev", "mode=1777"]
        }));
        mounts.push(serde_json::json!({
            "destination": dest, "type": "bind", "source": volume, "options": ["rbind", "rw"]
        }));
        let list = cfg["process"]["env"].as_array_mut().expect("env");
        list.extend(env.iter().map(|e| serde_json::json!(e)));
        std::fs::write(&path, serde_json::to_vec(&cfg).expect("json")).expect("write config.json");
        self
    }

    /// Runs `args` in the running container.
    pub fn exec(&self, args: &[&str]) -> Output {
        self.rt()
            .arg("exec")
            .arg(&self.id)
            .args(args)
            .output()
            .expect("kiln exec")
    }

    /// Sends `signal` (TERM, KILL, ...) to the container's init.
    pub fn kill(&self, signal: &str) {
        let out = self
            .rt()
            .args(["kill", &self.id, signal])
            .output()
            .expect("kiln kill");
        assert!(out.status.success(), "kill {signal}: {out:?}");
    }

    /// Whether the container stops within `within`.
    pub fn stops_within(&self, within: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < within {
            let out = self.rt().args(["state", &self.id]).output().expect("state");
            let state: serde_json::Value =
                serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
            if state["status"] == "stopped" {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Deletes the (stopped) container, so its id and bundle can be used again.
    pub fn delete(&self) {
        let _ = self.rt().args(["delete", "-f", &self.id]).output();
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self.rt().args(["delete", "-f", &self.id]).output();
    }
}

/// Retries `f` until it gives `Some`, for up to 20 seconds (services need a moment to listen).
pub fn eventually(what: &str, mut f: impl FnMut() -> Option<String>) -> String {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{what}: no answer"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn stdout_if_ok(out: Output) -> Option<String> {
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The judge (skopeo, umoci, oci-image-tool, runc) accepts the image; when a judge is missing
/// this is skipped, or fails under CI.
pub fn judge(sb: &Sandbox, tag: &str) {
    let Some(script) = layout_judges() else {
        return;
    };
    let out = Command::new("bash")
        .arg(script)
        .arg("validate-layout")
        .arg(sb.store().join("oci"))
        .arg(tag)
        .output()
        .expect("judges");
    assert!(
        out.status.success(),
        "validate-layout {tag}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
