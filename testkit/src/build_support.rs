//! Fixtures for the build tests: a project in a git repository made by the test, a sandbox
//! whose store has a busybox base image, a host loopback service that records what reaches it,
//! and the checks that a build left nothing behind.

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{busybox_rootfs, Sandbox};

/// A git repository in a temp dir, committed with a fixed identity and date (so two runs of
/// a test make the same commit ids).
pub struct Project {
    /// The repository's work tree.
    pub dir: tempfile::TempDir,
}

impl Project {
    /// An empty repository on branch `main`.
    pub fn new() -> Project {
        let p = Project {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        p.git(&["init", "-q", "-b", "main"]);
        p
    }

    /// The work tree.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `text` at `rel` (parents created).
    pub fn write(&self, rel: &str, text: &str) {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }

    /// Runs `git ARGS` in the work tree; panics unless it succeeds; returns its stdout, trimmed.
    pub fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(self.path())
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .env("GIT_AUTHOR_DATE", "2020-01-01T00:00:00Z")
            .env("GIT_COMMITTER_DATE", "2020-01-01T00:00:00Z")
            .output()
            .expect("git");
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Commits everything; returns the commit id.
    pub fn commit(&self, msg: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", msg]);
        self.git(&["rev-parse", "HEAD"])
    }
}

impl Default for Project {
    fn default() -> Self {
        Self::new()
    }
}

/// A sandbox whose store has a busybox rootfs as `busybox:latest`, with `scripts` (name, text)
/// installed executable in its `/bin` and `prepare` run on the rootfs before the import.
pub fn busybox_base(scripts: &[(&str, &str)], prepare: impl FnOnce(&Path)) -> Sandbox {
    let sb = Sandbox::new();
    let rootfs = sb.dir.path().join("rootfs");
    busybox_rootfs(&rootfs);
    prepare(&rootfs);
    for (name, text) in scripts {
        let p = rootfs.join("bin").join(name);
        std::fs::write(&p, text).expect("write script");
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
    }
    // A relative source path: the import's history names it, and two stores must get one digest.
    let out = sb
        .kiln()
        .args(["image", "import", "rootfs", "--tag", "busybox:latest"])
        .current_dir(sb.dir.path())
        .output()
        .expect("spawn kiln");
    assert!(out.status.success(), "import: {out:?}");
    sb
}

/// Names in a directory, sorted (empty if it does not exist).
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Mounts (lines of `/proc/self/mountinfo`) whose mount point is under `dir`.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let d = dir.to_string_lossy().into_owned();
    info.lines()
        .filter(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&d)))
        .map(str::to_string)
        .collect()
}

/// Asserts that no container, mount or store scratch of the sandbox is left.
pub fn assert_nothing_left(sb: &Sandbox) {
    assert_eq!(names(&sb.root()), Vec::<String>::new(), "containers left");
    assert_eq!(
        mounts_under(sb.dir.path()),
        Vec::<String>::new(),
        "mounts left"
    );
    assert_eq!(
        names(&sb.store().join("tmp")),
        Vec::<String>::new(),
        "scratch left"
    );
}

/// A host loopback TCP service that records every connection it gets (`peer: what it sent`);
/// it stops accepting when dropped.
pub struct LoopbackService {
    /// Its port on 127.0.0.1.
    pub port: u16,
    received: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl LoopbackService {
    /// Listens on an ephemeral port of 127.0.0.1.
    pub fn start() -> LoopbackService {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopped) = (Arc::clone(&received), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, peer)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                        let mut buf = String::new();
                        let _ = s.read_to_string(&mut buf);
                        if let Ok(mut v) = seen.lock() {
                            v.push(format!("{peer}: {}", buf.trim()));
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        LoopbackService {
            port,
            received,
            stop,
        }
    }

    /// What reached it so far.
    pub fn received(&self) -> Vec<String> {
        self.received.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl Drop for LoopbackService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
