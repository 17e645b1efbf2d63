//! Root filesystem: config mounts with their flags, bind mounts, default devices and /dev links,
//! masked and read-only paths, read-only root.

mod runtime_support;

use runtime_support::Bundle;
use serde_json::json;

#[test]
fn tmpfs_and_readonly_bind_mounts_apply_their_options() {
    let src = tempfile::tempdir().expect("tmp");
    std::fs::write(src.path().join("hello.txt"), "from-host").expect("write");
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "cat /data/hello.txt; echo; touch /data/x 2>/dev/null && echo data-rw || echo data-ro; \
         grep ' /scratch ' /proc/self/mountinfo | grep -q noexec && echo scratch-noexec",
    ]);
    b.add_mount(json!({"destination": "/data", "type": "bind", "source": src.path(), "options": ["rbind", "ro"]}));
    b.add_mount(json!({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "noexec", "size=1m"]}));
    let out = b.run_ok();
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        vec!["from-host", "data-ro", "scratch-noexec"],
        "{out}"
    );
}

#[test]
fn default_devices_and_links_exist() {
    let b = Bundle::new(&[
        "sh",
        "-c",
        "for d in null zero full random urandom tty; do [ -c /dev/$d ] || echo missing-$d; done; \
         for l in fd stdin ptmx; do readlink /dev/$l; done",
    ]);
    let out = b.run_ok();
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        vec!["/proc/self/fd", "/proc/self/fd/0", "pts/ptmx"],
        "{out}"
    );
}

#[test]
fn masked_and_readonly_paths_are_enforced() {
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "cat /proc/kcore 2>/dev/null | head -c 1 | wc -c; ls /sys/firmware | wc -l; \
         echo 1 > /proc/sys/kernel/domainname 2>/dev/null && echo sys-rw || echo sys-ro",
    ]);
    b.config["linux"]["maskedPaths"] = json!(["/proc/kcore", "/sys/firmware"]);
    b.config["linux"]["readonlyPaths"] = json!(["/proc/sys"]);
    let out = b.run_ok();
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        vec!["0", "0", "sys-ro"],
        "{out}"
    );
}

#[test]
fn readonly_root_refuses_writes() {
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "touch /newfile 2>/dev/null && echo rw || echo ro; touch /dev/shm/ok && echo shm-rw",
    ]);
    b.config["root"]["readonly"] = json!(true);
    let out = b.run_ok();
    assert_eq!(out.lines().collect::<Vec<_>>(), vec!["ro", "shm-rw"]);
}
