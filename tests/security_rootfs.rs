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

/// Deletes container `id` of a bundle when dropped (a failed assertion leaves nothing behind).
struct Created<'a> {
    b: &'a Bundle,
    id: String,
}

impl Drop for Created<'_> {
    fn drop(&mut self) {
        let _ = self.b.kiln(&["delete", "--force", &self.id]);
    }
}

/// The mounts of `pid`'s mount namespace: (mount point, whether mounted read-only), in
/// mountinfo order (a later mount at the same point is on top).
fn mounts_of(pid: i64) -> Vec<(String, bool)> {
    let mi = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
    mi.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[4].to_string(), f[5].split(',').any(|o| o == "ro"))
        })
        .collect()
}

/// The regression test for the ro-bind / readonlyPaths rename race (the adversarial review's
/// proof of concept): the rootfs holds `mnt/x` (a directory) beside `mnt/l -> /dev/shm`, and
/// `ro/y` beside `ro/m -> /dev/shm`; two threads swap each pair with RENAME_EXCHANGE in a tight
/// loop while kiln creates 100 containers with a read-only bind of a host directory at `/mnt/x`
/// and `/ro/y` in `readonlyPaths`. A runtime that mounts and then remounts read-only by path
/// finds the symlink the second time and makes `/dev/shm` read-only instead, leaving the bind
/// writable. Each time, once created, the container's mounts at those places must all be
/// read-only, writing the host file through the container's root must fail with EROFS, and the
/// host must be unchanged.
#[test]
fn a_swapped_component_never_leaves_a_read_only_mount_writable() {
    let src = tempfile::tempdir().expect("tmp");
    let payload = src.path().join("payload");
    std::fs::write(&payload, "original").expect("payload");
    let mut b = Bundle::new(&["true"]);
    let rootfs = b.rootfs();
    for (dir, link) in [("mnt/x", "mnt/l"), ("ro/y", "ro/m")] {
        std::fs::create_dir_all(rootfs.join(dir)).expect("swap dir");
        symlink("/dev/shm", rootfs.join(link)).expect("swap link");
    }
    std::fs::write(rootfs.join("ro/y/mark"), "image").expect("mark");
    b.add_mount(json!({"destination": "/mnt/x", "type": "bind", "source": src.path(), "options": ["rbind", "ro"]}));
    b.config["linux"]["readonlyPaths"] = json!(["/ro/y", "/proc/sys"]);
    b.write();
    let mounts = host_mount_count();
    let (mut created, mut via_link, mut swaps) = (0, 0, 0);
    // Against the pre-fix runtime (a remount after a second lookup) about one create in 80
    // lost the race here: 100 catch it most of the time, in about a minute.
    let iterations = 100;
    for i in 0..iterations {
        let id = format!("{}-{i}", b.id);
        let swappers = [
            Swapper::start(rootfs.join("mnt/x"), rootfs.join("mnt/l")),
            Swapper::start(rootfs.join("ro/y"), rootfs.join("ro/m")),
        ];
        let (ok, err) = b.try_create(&id);
        let guard = Created { b: &b, id };
        // The attack window is the setup: freeze the names to inspect what it made.
        swaps += swappers.into_iter().map(Swapper::finish).sum::<u64>();
        if !ok {
            assert!(!err.is_empty(), "iteration {i}: create failed silently");
            continue;
        }
        created += 1;
        let state: serde_json::Value =
            serde_json::from_str(&b.ok(&["state", &guard.id])).expect("state json");
        let pid = state["pid"].as_i64().expect("pid");
        let seen = mounts_of(pid);
        for (point, ro) in &seen {
            if point.starts_with("/mnt/") || point.starts_with("/ro/") {
                assert!(
                    *ro,
                    "iteration {i}: {point} is mounted read-write: {seen:?}"
                );
            }
        }
        if let Some((_, ro)) = seen.iter().rev().find(|(p, _)| p == "/dev/shm") {
            let stacked = seen.iter().filter(|(p, _)| p == "/dev/shm").count() > 1;
            assert!(
                !stacked || *ro,
                "iteration {i}: the mount on top of /dev/shm is read-write: {seen:?}"
            );
        }
        // Write the host file through the container's root, wherever the bind landed.
        let root = PathBuf::from(format!("/proc/{pid}/root"));
        let mut found = 0;
        for place in ["mnt/x", "mnt/l", "dev/shm"] {
            // Only directories: an absolute link would be followed from the host's root here.
            let dir = root.join(place);
            let p = dir.join("payload");
            if !dir.symlink_metadata().is_ok_and(|m| m.is_dir()) || !p.exists() {
                continue;
            }
            found += 1;
            if place.starts_with("dev/shm") {
                via_link += 1;
            }
            let e = std::fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .map(drop)
                .expect_err(&format!("iteration {i}: {place} is writable"));
            assert_eq!(e.raw_os_error(), Some(nix::libc::EROFS), "{place}: {e}");
        }
        assert!(
            found > 0,
            "iteration {i}: the bind mount is nowhere: {seen:?}"
        );
        drop(guard);
        assert_eq!(
            std::fs::read_to_string(&payload).expect("payload"),
            "original",
            "iteration {i}: the host file was written"
        );
    }
    assert_eq!(host_mount_count(), mounts, "a mount was left behind");
    assert!(swaps > 1000, "the swappers barely ran ({swaps} swaps)");
    assert!(
        created > 0,
        "no container was created in {iterations} iterations"
    );
    eprintln!("{created}/{iterations} created, {via_link} through the link, {swaps} swaps");
}
