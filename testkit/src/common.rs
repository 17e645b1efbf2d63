//! Fixtures shared by the end-to-end tests of the `kiln` binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// The checkout's root (the workspace folder).
pub fn workspace_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Path of the `kiln` binary under test: `$KILN_BIN`, else `kiln` in the target directory the
/// running test binary was built into (cargo builds it for the kiln package's tests).
pub fn kiln_bin() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("KILN_BIN") {
            return bin.to_string_lossy().into_owned();
        }
        let exe = std::env::current_exe().expect("the test binary's path");
        // target/<profile>/deps/<test> → target/<profile>/kiln
        let bin = exe
            .parent()
            .and_then(Path::parent)
            .map(|profile| profile.join("kiln"))
            .filter(|p| p.exists())
            .unwrap_or_else(|| panic!("no kiln binary beside {} (set KILN_BIN)", exe.display()));
        bin.to_string_lossy().into_owned()
    })
}

/// A name unique to this test process and call, for global things (container ids, cgroups, veths).
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A scratch directory with a store and a runtime state root inside it, removed on drop.
pub struct Sandbox {
    /// The temp dir holding everything.
    pub dir: tempfile::TempDir,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    /// Creates a fresh sandbox.
    pub fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("kiln-test-")
                .tempdir()
                .expect("tempdir"),
        }
    }

    /// The store dir (`--store`).
    pub fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// The runtime state root (`--root`).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// A `kiln` command with this sandbox's `--store` and `--root`.
    pub fn kiln(&self) -> Command {
        let mut c = Command::new(kiln_bin());
        c.env("KILN_STORE", self.store())
            .env("KILN_RUNTIME", self.root());
        c
    }

    /// Runs `kiln ARGS`, returning its output (does not check the status).
    pub fn run(&self, args: &[&str]) -> Output {
        self.kiln().args(args).output().expect("spawn kiln")
    }

    /// Runs `kiln ARGS` and panics with its stderr unless it succeeds; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kiln {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Builds the vendor image `name` (`vendor-images/<name>.toml`) into this sandbox's store,
    /// with the .deb files from the shared cache.
    pub fn vendor(&self, name: &str) {
        let out = self
            .kiln()
            .env("KILN_DEB_CACHE", shared_deb_cache())
            .args(["vendor", "build", name, "--quiet", "--recipes"])
            .arg(workspace_root().join("vendor-images"))
            .output()
            .expect("spawn kiln");
        assert!(out.status.success(), "vendor build {name}: {out:?}");
    }

    /// `kiln env status ENV --json`, parsed.
    pub fn env_status(&self, env: &str) -> serde_json::Value {
        let out = self.ok(&["env", "status", env, "--json"]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("bad JSON ({e}): {out}"))
    }

    /// The address the router of `env` listens on (from its record).
    pub fn router_address(&self, env: &str) -> std::net::SocketAddr {
        let s = self.env_status(env);
        s["record"]["router"]["listen"]
            .as_str()
            .unwrap_or_else(|| panic!("no router address in {s}"))
            .parse()
            .expect("router address")
    }
}

/// Environments of a sandbox, destroyed (`kiln env destroy`) when this is dropped, whatever
/// happens in the test.
pub struct Envs<'a> {
    /// The sandbox they live in.
    pub sb: &'a Sandbox,
    /// Their names.
    pub names: Vec<String>,
}

impl Drop for Envs<'_> {
    fn drop(&mut self) {
        for env in &self.names {
            // Best effort: a destroy that fails here leaves what the test's own asserts report.
            let _ = self.sb.run(&["env", "destroy", env]);
        }
    }
}

/// Makes a minimal busybox root filesystem at `dir` (static busybox + applet links + passwd/group).
pub fn busybox_rootfs(dir: &Path) {
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.exists(),
        "/bin/busybox missing: apt-get install busybox-static (scripts/setup)"
    );
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "root"] {
        std::fs::create_dir_all(dir.join(d)).expect("mkdir rootfs");
    }
    std::fs::copy(busybox, dir.join("bin/busybox")).expect("copy busybox");
    let list = Command::new(busybox)
        .arg("--list")
        .output()
        .expect("busybox --list");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet));
        }
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )
    .expect("passwd");
    std::fs::write(dir.join("etc/group"), "root:x:0:\nnobody:x:65534:\n").expect("group");
}

/// Path of the shared judges script (`../shared/judges/judges.sh` beside the checkout), if present.
pub fn judges_script() -> Option<PathBuf> {
    let p = workspace_root().join("../shared/judges/judges.sh");
    p.exists().then_some(p)
}

/// The tools the layout judges run.
pub const LAYOUT_JUDGES: [&str; 4] = ["skopeo", "umoci", "oci-image-tool", "runc"];

/// Whether `tool` is an executable on `PATH`.
pub fn on_path(tool: &str) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(tool))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// The judges script when it and every layout judge are there. When something is missing the
/// test is skipped with a line saying what — except under CI (env `CI` set), where a missing
/// judge fails the test instead of letting it pass silently.
pub fn layout_judges() -> Option<PathBuf> {
    let script = judges_script();
    let mut missing: Vec<String> = LAYOUT_JUDGES
        .iter()
        .filter(|t| !on_path(t))
        .map(|t| t.to_string())
        .collect();
    if script.is_none() {
        missing.insert(0, "../shared/judges/judges.sh beside the checkout".into());
    }
    if missing.is_empty() {
        return script;
    }
    let what = missing.join(", ");
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set and the layout judges are missing: {what} (scripts/setup installs them)"
    );
    eprintln!("SKIP: the layout judges are missing: {what}");
    None
}

/// The .deb cache shared by tests: `$KILN_DEB_CACHE` or /var/cache/kiln/debs.
pub fn shared_deb_cache() -> PathBuf {
    std::env::var_os("KILN_DEB_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/kiln/debs"))
}

/// Runs `git ARGS` in `dir` with a fixed identity; panics unless it succeeds.
pub fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

/// Copies `examples/<name>` into `<parent>/<name>` (no git yet) and returns that folder.
pub fn copy_example(parent: &Path, name: &str) -> PathBuf {
    let repo = parent.join(name);
    std::fs::create_dir(&repo).expect("mkdir example copy");
    let example = workspace_root().join("examples").join(name);
    let cp = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", example.display()))
        .arg(&repo)
        .status()
        .expect("cp");
    assert!(cp.success(), "cp -a {}", example.display());
    repo
}
