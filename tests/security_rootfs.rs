//! Security (issue 11, finding 3): paths inside the rootfs are resolved inside the root and used
//! through fds. An image's symlink chains (40 links, and 41: one past the kernel's limit) that
//! end at a host path, used as a mount destination, a bind mount target, a /dev entry, the cwd
//! and a masked path, never reach the host; a path component swapped between a directory and a
//! symlink to a host directory while containers are created never lets a mount or a file land
//! on the host.

mod runtime_support;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use runtime_support::{host_mount_count, unique, Bundle};
use serde_json::json;

/// A host directory an attacker aims at, with one file in it; removed on drop.
struct HostTarget {
    dir: PathBuf,
}

impl HostTarget {
    fn new() -> HostTarget {
        let dir = std::env::temp_dir().join(unique("kiln-host-target-"));
        std::fs::create_dir_all(&dir).expect("host target dir");
        std::fs::write(dir.join("victim"), "original").expect("victim file");
        HostTarget { dir }
    }

    /// Asserts the directory holds exactly what it held at the start and nothing is mounted on
    /// or under it in the host's mount namespace.
    fn assert_untouched(&self, what: &str) {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .expect("list host target")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["victim"], "{what}: the host dir was written");
        assert_eq!(
            std::fs::read_to_string(self.dir.join("victim")).expect("read victim"),
            "original",
            "{what}: the host file was changed"
        );
        let mi = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        assert!(
            !mi.contains(self.dir.to_str().expect("utf8")),
            "{what}: a mount landed on the host dir"
        );
    }

    /// The path the host dir has when an image's absolute symlink is resolved inside `rootfs`.
    fn inside(&self, rootfs: &Path) -> PathBuf {
        rootfs.join(self.dir.strip_prefix("/").expect("absolute"))
    }
}

impl Drop for HostTarget {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Makes `dir/<prefix>0 -> <prefix>1 -> ... -> <prefix>{n-1} -> target`: `n` symlinks to follow.
fn chain(dir: &Path, prefix: &str, n: usize, target: &Path) {
    for i in 0..n {
        let link = dir.join(format!("{prefix}{i}"));
        if i + 1 == n {
            symlink(target, &link).expect("last link");
        } else {
            symlink(format!("{prefix}{}", i + 1), &link).expect("link");
        }
    }
}

/// Runs the container; with `links` > 40 it must fail naming `path` with ELOOP and leave no state
/// dir, cgroup or mount behind. Returns whether it ran.
fn run_expecting(b: &Bundle, links: usize, path: &str, host: &HostTarget, what: &str) -> bool {
    let mounts = host_mount_count();
    let (code, out, err) = b.run();
    host.assert_untouched(what);
    assert_eq!(
        host_mount_count(),
        mounts,
        "{what}: a mount was left behind"
    );
    assert!(
        !b.sb.root().join(&b.id).exists(),
        "{what}: the state dir was left behind"
    );
    assert!(
        !b.cgroup_dir("memory").exists() && !b.cgroup_dir("pids").exists(),
        "{what}: the cgroup was left behind"
    );
    if links > 40 {
        assert_ne!(code, 0, "{what}: a {links}-link chain was followed: {out}");
        assert!(
            err.contains(path) && err.contains("Too many levels of symbolic links"),
            "{what}: the error does not name {path} with ELOOP: {err}"
        );
        false
    } else {
        assert_eq!(code, 0, "{what}: stdout={out} stderr={err}");
        true
    }
}

#[test]
fn a_mount_destination_through_a_symlink_chain_stays_in_the_root() {
    for n in [40, 41] {
        let host = HostTarget::new();
        let mut b = Bundle::new(&["true"]);
        chain(&b.rootfs(), "l", n, &host.dir);
        b.add_mount(json!({"destination": "/l0/scratch", "type": "tmpfs", "source": "tmpfs"}));
        if run_expecting(&b, n, "/l0/scratch", &host, &format!("tmpfs, {n} links")) {
            assert!(host.inside(&b.rootfs()).join("scratch").is_dir());
        }
    }
}

#[test]
fn a_bind_mount_target_through_a_symlink_chain_stays_in_the_root() {
    let src = tempfile::tempdir().expect("tmp");
    std::fs::write(src.path().join("payload"), "x").expect("payload");
    for n in [40, 41] {
        let host = HostTarget::new();
        let mut b = Bundle::new(&["true"]);
        // A directory bind under the chain, and a file bind onto the host file itself.
        chain(&b.rootfs(), "d", n, &host.dir);
        chain(&b.rootfs(), "f", n, &host.dir.join("victim"));
        b.add_mount(json!({"destination": "/d0/vol", "type": "bind", "source": src.path(), "options": ["rbind", "ro"]}));
        b.add_mount(json!({"destination": "/f0", "type": "bind", "source": src.path().join("payload"), "options": ["bind"]}));
        if run_expecting(&b, n, "/d0/vol", &host, &format!("bind, {n} links")) {
            let inside = host.inside(&b.rootfs());
            assert!(inside.join("vol").is_dir());
            assert!(inside.join("victim").is_file());
        }
    }
}

#[test]
fn dev_entries_through_a_symlink_chain_stay_in_the_root() {
    for n in [40, 41] {
        let host = HostTarget::new();
        let mut b = Bundle::new(&["true"]);
        // /dev itself is the chain: default nodes and the /dev/fd, stdin ... links go through it.
        let dev = b.rootfs().join("dev");
        std::fs::remove_dir(&dev).expect("rm dev");
        chain(&b.rootfs(), "v", n - 1, &host.dir);
        symlink("v0", &dev).expect("dev link");
        let mounts: Vec<_> = b.config["mounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .filter(|m| !m["destination"].as_str().unwrap_or("").starts_with("/dev"))
            .cloned()
            .collect();
        b.config["mounts"] = json!(mounts);
        if run_expecting(&b, n, "/dev", &host, &format!("/dev, {n} links")) {
            let inside = host.inside(&b.rootfs());
            assert!(inside.join("null").exists() && inside.join("fd").is_symlink());
        }
    }
}

#[test]
fn a_device_path_through_a_symlink_chain_stays_in_the_root() {
    for n in [40, 41] {
        let host = HostTarget::new();
        let mut b = Bundle::new(&["true"]);
        chain(&b.rootfs(), "n", n, &host.dir);
        b.config["linux"]["devices"] = json!([{
            "path": "/n0/evil", "type": "c", "major": 1, "minor": 3, "fileMode": 438
        }]);
        if run_expecting(&b, n, "/n0", &host, &format!("device, {n} links")) {
            assert!(host.inside(&b.rootfs()).join("evil").exists());
        }
    }
}

#[test]
fn a_cwd_through_a_symlink_chain_stays_in_the_root() {
    for n in [40, 41] {
        let host = HostTarget::new();
        let mut b = Bundle::new(&["true"]);
        chain(&b.rootfs(), "c", n, &host.dir);
        b.config["process"]["cwd"] = json!("/c0/work");
        if run_expecting(&b, n, "/c0/work", &host, &format!("cwd, {n} links")) {
            assert!(host.inside(&b.rootfs()).join("work").is_dir());
        }
    }
}

#[test]
fn a_masked_path_through_a_symlink_chain_is_refused() {
    for n in [40, 41] {
        let host = HostTarget::new();
        let mut b = Bundle::new(&["true"]);
        chain(&b.rootfs(), "m", n, &host.dir.join("victim"));
        b.config["linux"]["maskedPaths"] = json!(["/m0", "/proc/kcore"]);
        b.config["linux"]["readonlyPaths"] = json!(["/m0", "/proc/sys"]);
        run_expecting(&b, n, "/m0", &host, &format!("masked path, {n} links"));
    }
}

/// Exchanges two names atomically, as an attacker racing the runtime would.
fn exchange(a: &Path, b: &Path) {
    let _ = nix::fcntl::renameat2(
        nix::fcntl::AT_FDCWD,
        a,
        nix::fcntl::AT_FDCWD,
        b,
        nix::fcntl::RenameFlags::RENAME_EXCHANGE,
    );
}

/// Stops and joins the swapping thread, even when an assertion fails.
struct Swapper {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Swapper {
    fn start(a: PathBuf, b: PathBuf) -> Swapper {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut n = 0;
            while !s.load(Ordering::Relaxed) {
                exchange(&a, &b);
                n += 1;
            }
            n
        });
        Swapper {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().map_or(0, |t| t.join().unwrap_or(0))
    }
}

impl Drop for Swapper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn a_component_swapped_for_a_host_symlink_never_gets_the_mount() {
    let host = HostTarget::new();
    let src = tempfile::tempdir().expect("tmp");
    std::fs::write(src.path().join("payload"), "x").expect("payload");
    let mut b = Bundle::new(&["true"]);
    let rootfs = b.rootfs();
    std::fs::create_dir(rootfs.join("swap")).expect("swap dir");
    symlink(&host.dir, rootfs.join("alt")).expect("alt link");
    b.add_mount(json!({"destination": "/swap/vol", "type": "bind", "source": src.path(), "options": ["rbind"]}));
    b.add_mount(json!({"destination": "/swap/file", "type": "bind", "source": src.path().join("payload"), "options": ["bind"]}));
    b.add_mount(json!({"destination": "/swap/tmp", "type": "tmpfs", "source": "tmpfs"}));
    b.write();
    let swapper = Swapper::start(rootfs.join("swap"), rootfs.join("alt"));
    let mounts = host_mount_count();
    let mut ran = 0;
    let iterations = 60;
    for i in 0..iterations {
        let id = format!("{}-{i}", b.id);
        let out = b.kiln(&["run", "--bundle", b.dir.to_str().expect("utf8"), &id]);
        if out.status.success() {
            ran += 1;
        }
        let _ = b.kiln(&["delete", "--force", &id]);
        host.assert_untouched(&format!("iteration {i}"));
    }
    let swaps = swapper.finish();
    assert_eq!(host_mount_count(), mounts, "a mount was left behind");
    assert!(swaps > 1000, "the swapper barely ran ({swaps} swaps)");
    assert!(ran > 0, "no container ran in {iterations} iterations");
    host.assert_untouched("after the race");
}

#[test]
fn nested_readonly_paths_are_each_read_only() {
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "touch /ro/a 2>/dev/null && echo ro-rw || echo ro-ro; \
         touch /ro/sub/b 2>/dev/null && echo sub-rw || echo sub-ro",
    ]);
    std::fs::create_dir_all(b.rootfs().join("ro/sub")).expect("mkdir");
    b.config["linux"]["readonlyPaths"] = json!(["/ro", "/ro/sub"]);
    let out = b.run_ok();
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["ro-ro", "sub-ro"],
        "{out}"
    );
}

/// A container in a user namespace without its own network namespace cannot mount sysfs, so it
/// gets the host's /sys bound instead: with the mount's flags (ro, nosuid, nodev, noexec) on it
/// and on every mount below it, so nothing under the host's /sys can be written.
#[test]
fn the_host_sys_fallback_keeps_the_mount_flags() {
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "grep -E ' /sys(/[^ ]*)? ' /proc/self/mountinfo; (echo x > /sys/kernel/mm/ksm/run && echo WROTE); true",
    ]);
    let ns = b.config["linux"]["namespaces"].as_array_mut().expect("ns");
    ns.retain(|n| n["type"] != "network");
    ns.push(json!({"type": "user"}));
    b.config["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 0, "size": 65536}]);
    b.config["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 0, "size": 65536}]);
    let out = b.run_ok();
    let mounts: Vec<&str> = out
        .lines()
        .filter(|l| {
            let point = l.split_whitespace().nth(4).unwrap_or("");
            point == "/sys" || point.starts_with("/sys/")
        })
        .collect();
    assert!(!mounts.is_empty(), "no /sys mount: {out}");
    for m in &mounts {
        let opts = m.split_whitespace().nth(5).unwrap_or("");
        assert!(
            opts.split(',').any(|o| o == "ro"),
            "a /sys mount is not read-only: {m}"
        );
    }
    assert!(!out.contains("WROTE"), "wrote the host's /sys: {out}");
}
