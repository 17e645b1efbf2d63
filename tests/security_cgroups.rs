//! Security review findings 4 and 9, attacked the way an attacker would: a container with
//! CAP_MKNOD makes nodes for host devices and opens them; a container is created by a kiln that
//! runs inside a limited cgroup; a container looks for and writes host cgroup files through its
//! /sys/fs/cgroup.

mod runtime_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use runtime_support::{unique, Bundle};
use serde_json::json;

/// The v1 hierarchies a container joins on this host kind.
const JOINED: &[&str] = &[
    "blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "memory", "pids",
];

/// A missing prerequisite: fails under CI, otherwise skips the test with a note.
fn missing(what: &str) -> bool {
    assert!(
        std::env::var_os("CI").is_none(),
        "prerequisite missing: {what}"
    );
    eprintln!("skipped: {what}");
    true
}

/// A bundle whose process has CAP_MKNOD (and the default caps) and a writable rootfs.
fn mknod_bundle(script: &str) -> Bundle {
    let mut b = Bundle::new(&["sh", "-c", script]);
    for set in ["bounding", "effective", "permitted"] {
        b.config["process"]["capabilities"][set]
            .as_array_mut()
            .expect("caps")
            .push(json!("CAP_MKNOD"));
    }
    b.config["root"]["readonly"] = json!(false);
    b
}

/// The host's kernel log (what a write to /dev/kmsg would have added to).
fn host_kmsg() -> String {
    let out = Command::new("dmesg").output().expect("dmesg");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn host_devices_made_with_mknod_cannot_be_opened() {
    // The nodes need no host device behind them: 10:232 is /dev/kvm wherever KVM exists.
    let marker = unique("kiln-kmsg-attack-");
    let script = format!(
        "cd /tmp; mknod kmsg c 1 11; mknod loopctl c 10 237; mknod kvm c 10 232; \
         for d in kmsg loopctl kvm; do \
           if echo {marker} > $d; then echo OPENED-W $d; fi; \
           if head -c 1 $d > /dev/null; then echo OPENED-R $d; fi; \
         done 2>&1; \
         echo x > /dev/null && echo null-ok; head -c 4 /dev/zero | wc -c; \
         head -c 4 /dev/urandom | wc -c"
    );
    let loops_before = loop_devices();
    let b = mknod_bundle(&script);
    let out = b.run_ok();
    assert!(!out.contains("OPENED"), "a host device opened: {out}");
    assert!(
        out.matches("Operation not permitted").count() >= 6,
        "every open fails with EPERM: {out}"
    );
    assert!(out.contains("null-ok"), "/dev/null is allowed: {out}");
    assert_eq!(
        out.lines().filter(|l| l.trim() == "4").count(),
        2,
        "/dev/zero and /dev/urandom read: {out}"
    );
    assert!(
        !host_kmsg().contains(&marker),
        "the container wrote the host's kernel log"
    );
    assert_eq!(loop_devices(), loops_before, "loop devices changed");
}

/// Loop device nodes on the host.
fn loop_devices() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/dev")
        .expect("/dev")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("loop"))
        .collect();
    v.sort();
    v
}

#[test]
fn device_rules_of_the_config_apply_in_order_after_deny_all() {
    // The config allows reading (only) /dev/loop-control (10:237); writing it stays denied.
    let mut b = mknod_bundle(
        "cd /tmp; mknod loopctl c 10 237; mknod full c 1 7; \
         (exec 3< loopctl) && echo read-ok; (exec 3> loopctl) 2>&1; \
         (echo x > full) 2>&1; cat /sys/fs/cgroup/devices/devices.list",
    );
    b.config["linux"]["resources"]["devices"] = json!([
        {"allow": false, "access": "rwm"},
        {"allow": true, "type": "c", "major": 10, "minor": 237, "access": "r"},
        {"allow": false, "type": "c", "major": 1, "minor": 7, "access": "rwm"},
    ]);
    let out = b.run_ok();
    assert!(out.contains("read-ok"), "the allowed read works: {out}");
    assert_eq!(
        out.matches("Operation not permitted").count(),
        1,
        "writing loop-control is denied: {out}"
    );
    // The denied /dev/full is allowed again by runc's default list that follows (as in runc).
    assert!(out.contains("No space left on device"), "{out}");
    let list: Vec<&str> = out.lines().filter(|l| l.contains(':')).collect();
    assert!(list.contains(&"c 10:237 r"), "{out}");
    assert!(list.contains(&"c *:* m"), "{out}");
    assert!(!list.contains(&"a *:* rwm"), "deny-all came first: {out}");
}

#[test]
fn bad_device_rule_is_refused_and_leaves_no_cgroup() {
    let mut b = Bundle::new(&["true"]);
    b.config["linux"]["resources"]["devices"] =
        json!([{"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwx"}]);
    let (code, _, err) = b.run();
    assert_ne!(code, 0);
    assert!(err.contains("rwx"), "the error names the bad access: {err}");
    assert!(
        !b.cgroup_dir("devices").exists(),
        "a cgroup was left behind"
    );
    assert!(!b.cgroup_dir("pids").exists(), "a cgroup was left behind");
}

/// A cgroup directory this test made (with everything under it), removed on drop.
struct CgDir(PathBuf);

impl CgDir {
    fn new(controller: &str, name: &str) -> Option<CgDir> {
        let root = Path::new("/sys/fs/cgroup").join(controller);
        if !root.join("cgroup.procs").exists() {
            missing(&format!("cgroup v1 {controller} hierarchy"));
            return None;
        }
        let dir = root.join(name);
        std::fs::create_dir(&dir).expect("create test cgroup");
        Some(CgDir(dir))
    }
}

/// Kills what is left in `dir` and removes it bottom-up.
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    for _ in 0..500 {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for p in procs
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            // SAFETY: kill(2) on a pid read from the test's own cgroup.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for CgDir {
    fn drop(&mut self) {
        remove_cgroup_tree(&self.0);
    }
}

/// Runs the bundle's container with `kiln run` from inside the cgroup `cg` (the shell moves
/// itself there, then execs kiln): (exit code, stdout, stderr).
fn run_inside(b: &Bundle, cg: &Path) -> (i32, String, String) {
    b.write();
    let kiln = b.sb.kiln();
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg("echo $$ > \"$1/cgroup.procs\" && shift && exec \"$@\"")
        .arg("sh")
        .arg(cg)
        .arg(kiln.get_program())
        .args(["run", "--bundle", b.dir.to_str().expect("utf8"), &b.id]);
    for (k, v) in kiln.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    let out = c.output().expect("spawn sh");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Drops the cgroup namespace the test bundles get, so /proc/self/cgroup shows host paths.
fn without_cgroupns(b: &mut Bundle) {
    b.config["linux"]["namespaces"]
        .as_array_mut()
        .expect("namespaces")
        .retain(|n| n["type"] != "cgroup");
}

#[test]
fn a_kiln_inside_a_limited_cgroup_nests_the_container_under_it() {
    let name = unique("kiln-sec-limit-");
    let Some(cg) = CgDir::new("pids", &name) else {
        return;
    };
    std::fs::write(cg.0.join("pids.max"), "20").expect("pids.max");
    // The container asks for more than its creator may have: the creator's limit must hold.
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "grep pids /proc/self/cgroup; \
         (i=0; while [ $i -lt 60 ]; do sleep 30 & i=$((i+1)); done) 2>/dev/null; \
         read c < /sys/fs/cgroup/pids/pids.current; echo current $c",
    ]);
    b.config["linux"]["resources"]["pids"] = json!({"limit": 1000});
    without_cgroupns(&mut b);
    let (code, out, err) = run_inside(&b, &cg.0);
    assert_eq!(code, 0, "stdout={out} stderr={err}");
    let want = format!("pids:/{name}/kiln-test/{}", b.id);
    assert!(
        out.lines().any(|l| l.ends_with(&want)),
        "container cgroup not under the creator's: {out}"
    );
    let current: u32 = out
        .lines()
        .find_map(|l| l.strip_prefix("current "))
        .and_then(|n| n.trim().parse().ok())
        .expect("pids.current");
    assert!(
        current < 20,
        "the creator's pids limit did not hold: {current}"
    );
    assert!(
        !Path::new("/sys/fs/cgroup/pids/kiln-test")
            .join(&b.id)
            .exists(),
        "a cgroup was made at the hierarchy root"
    );
}

#[test]
fn an_absolute_cgroups_path_stays_as_given() {
    let name = unique("kiln-sec-abs-");
    let Some(cg) = CgDir::new("pids", &name) else {
        return;
    };
    let abs = unique("kiln-sec-abs-target-");
    let target = Path::new("/sys/fs/cgroup/pids").join(&abs);
    let _target_guard = CgDir(target.clone());
    let mut b = Bundle::new(&["sh", "-c", "grep pids /proc/self/cgroup"]);
    b.config["linux"]["cgroupsPath"] = json!(format!("/{abs}"));
    without_cgroupns(&mut b);
    let (code, out, err) = run_inside(&b, &cg.0);
    assert_eq!(code, 0, "stdout={out} stderr={err}");
    assert!(
        out.lines().any(|l| l.ends_with(&format!("pids:/{abs}"))),
        "{out}"
    );
}

#[test]
fn cgroups_path_with_dotdot_is_refused() {
    let mut b = Bundle::new(&["true"]);
    b.config["linux"]["cgroupsPath"] = json!("kiln-test/../../escape");
    let (code, _, err) = b.run();
    assert_ne!(code, 0);
    assert!(err.contains("cgroupsPath"), "{err}");
    assert!(!Path::new("/sys/fs/cgroup/pids/escape").exists());
}

/// Listing of the container's /sys/fs/cgroup, and attempts on host cgroup files through it.
const VIEW_ATTACK: &str = "ls /sys/fs/cgroup | tr '\\n' ' '; echo; \
     cat /sys/fs/cgroup/pids/cgroup.procs | wc -l; \
     for f in /sys/fs/cgroup/*/release_agent /sys/fs/cgroup/*/../release_agent \
              /sys/fs/cgroup/systemd/release_agent /sys/fs/cgroup/unified/cgroup.procs; do \
       (echo /evil > $f) 2>/dev/null && echo WROTE $f; done; \
     (echo 100 > /sys/fs/cgroup/pids/pids.max) 2>&1; \
     mkdir /sys/fs/cgroup/pids/child 2>&1 && rmdir /sys/fs/cgroup/pids/child; echo done";

/// A host file a container must not be able to change, and its content now.
fn host_release_agents() -> Vec<(PathBuf, String)> {
    std::fs::read_dir("/sys/fs/cgroup")
        .expect("/sys/fs/cgroup")
        .flatten()
        .map(|e| e.path().join("release_agent"))
        .filter(|p| p.exists())
        .map(|p| {
            let s = std::fs::read_to_string(&p).unwrap_or_default();
            (p, s)
        })
        .collect()
}

#[test]
fn the_cgroup_view_shows_only_the_containers_own_cgroups_read_only() {
    let before = host_release_agents();
    let b = Bundle::new(&["sh", "-c", VIEW_ATTACK]);
    let out = b.run_ok();
    let first = out.lines().next().unwrap_or("");
    let listed: Vec<&str> = first.split_whitespace().collect();
    assert_eq!(listed, JOINED, "foreign hierarchies shown: {out}");
    let procs: usize = out
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("procs count");
    assert!(
        procs <= 3,
        "pids/cgroup.procs is the container's own (sh, cat, wc): {out}"
    );
    assert!(!out.contains("WROTE"), "{out}");
    assert!(out.contains("Read-only file system"), "{out}");
    assert!(out.contains("done"), "{out}");
    assert_eq!(
        host_release_agents(),
        before,
        "a host release_agent changed"
    );
    assert!(!b.cgroup_dir("pids").join("child").exists());
}

#[test]
fn a_rw_cgroup_mount_still_reaches_no_host_cgroup_file() {
    let before = host_release_agents();
    let mut b = Bundle::new(&["sh", "-c", VIEW_ATTACK]);
    for m in b.config["mounts"].as_array_mut().expect("mounts") {
        if m["type"] == "cgroup" {
            m["options"] = json!(["nosuid", "noexec", "nodev", "relatime", "rw"]);
        }
    }
    let out = b.run_ok();
    let listed: Vec<&str> = out
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(listed, JOINED, "foreign hierarchies shown: {out}");
    assert!(
        !out.contains("WROTE"),
        "a host cgroup file was written: {out}"
    );
    assert_eq!(
        host_release_agents(),
        before,
        "a host release_agent changed"
    );
    assert!(out.contains("done"), "{out}");
}

/// A user namespace without a network namespace cannot mount sysfs, so the host's /sys is
/// bound instead. None of the host's cgroup hierarchy roots may come along under the cgroup
/// view (a recursive bind made inside the container's namespace would bring them, locked
/// beneath the view, visible in mountinfo with roots like `/../..` and reachable by unmounting
/// the view): every cgroup mount the container has is one of its own cgroups, shown at `/`.
/// Then the same attack as above, and the host's cgroup files are unchanged.
#[test]
fn in_a_user_namespace_without_netns_no_host_cgroup_root_is_mounted() {
    let before = host_release_agents();
    let script = format!("grep -E ' - cgroup2? ' /proc/self/mountinfo; {VIEW_ATTACK}");
    let mut b = Bundle::new(&["sh", "-c", &script]);
    let ns = b.config["linux"]["namespaces"].as_array_mut().expect("ns");
    ns.retain(|n| n["type"] != "network");
    ns.push(json!({"type": "user"}));
    b.config["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 0, "size": 65536}]);
    b.config["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 0, "size": 65536}]);
    let out = b.run_ok();
    let cgroup_mounts: Vec<&str> = out.lines().filter(|l| l.contains(" - cgroup")).collect();
    assert!(!cgroup_mounts.is_empty(), "no cgroup mount at all: {out}");
    for m in &cgroup_mounts {
        let f: Vec<&str> = m.split_whitespace().collect();
        assert_eq!(
            f[3], "/",
            "a cgroup mount that is not the container's own: {m}"
        );
        assert!(
            f[5].split(',').any(|o| o == "ro"),
            "a cgroup mount is writable: {m}"
        );
    }
    let names: Vec<&str> = cgroup_mounts
        .iter()
        .filter_map(|m| m.split_whitespace().nth(4)?.strip_prefix("/sys/fs/cgroup/"))
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        names.len(),
        "a hierarchy mounted twice: {out}"
    );
    assert_eq!(sorted, JOINED, "foreign hierarchies mounted: {out}");
    assert!(
        !out.contains("WROTE"),
        "a host cgroup file was written: {out}"
    );
    assert!(out.contains("done"), "{out}");
    assert_eq!(
        host_release_agents(),
        before,
        "a host release_agent changed"
    );
}
