//! exec: a new process in the running container's namespaces and cgroup, from the command
//! line or a process.json, detached with a pid file, and with a terminal.

mod runtime_support;

use runtime_support::Bundle;
use serde_json::json;

fn running(hostname: &str) -> Bundle {
    let mut b = Bundle::new(&["sleep", "100"]);
    b.config["hostname"] = json!(hostname);
    b.create();
    b.ok(&["start", &b.id]);
    b
}

#[test]
fn exec_runs_inside_the_container() {
    let b = running("exec-box");
    let out = b.ok(&[
        "exec",
        "--env",
        "X=42",
        "--cwd",
        "/tmp",
        &b.id,
        "sh",
        "-c",
        "hostname; echo $X; pwd; echo $$",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..3], &["exec-box", "42", "/tmp"]);
    let pid: u32 = lines[3].parse().expect("pid");
    assert!(
        pid > 1,
        "exec'd process must live in the container's pid namespace"
    );
    let procs = std::fs::read_to_string(b.cgroup_dir("pids").join("cgroup.procs")).expect("procs");
    assert_eq!(
        procs.lines().count(),
        1,
        "exec'd process left in the cgroup"
    );
}

#[test]
fn exec_exit_code_and_user() {
    let b = running("x");
    let out = b.kiln(&[
        "exec",
        "--user",
        "1000:1000",
        &b.id,
        "sh",
        "-c",
        "id -u; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1000");
}

#[test]
fn exec_process_json_detached_with_pid_file() {
    let b = running("x");
    let proc_file = b.sb.dir.path().join("process.json");
    let pid_file = b.sb.dir.path().join("exec.pid");
    std::fs::write(
        &proc_file,
        serde_json::to_vec(
            &json!({"args": ["sleep", "50"], "cwd": "/", "user": {"uid": 0, "gid": 0},
                                   "env": ["PATH=/bin"]}),
        )
        .expect("json"),
    )
    .expect("write");
    b.ok_detached(&[
        "exec",
        "--detach",
        "--process",
        proc_file.to_str().expect("utf8"),
        "--pid-file",
        pid_file.to_str().expect("utf8"),
        &b.id,
    ]);
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    let procs = std::fs::read_to_string(b.cgroup_dir("pids").join("cgroup.procs")).expect("procs");
    assert!(
        procs.lines().any(|l| l.trim() == pid.to_string()),
        "exec'd pid {pid} not in {procs}"
    );
    let ps: Vec<i32> = serde_json::from_str(&b.ok(&["ps", "--format", "json", &b.id])).expect("ps");
    assert_eq!(ps.len(), 2);
}

#[test]
fn exec_with_a_terminal_gets_a_tty() {
    let b = running("x");
    let out = b.kiln(&[
        "exec",
        "-t",
        &b.id,
        "sh",
        "-c",
        "tty; test -t 0 && echo is-a-tty",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/dev/pts/"), "{text}");
    assert!(text.contains("is-a-tty"), "{text}");
}

#[test]
fn exec_into_a_stopped_container_is_refused() {
    let b = Bundle::new(&["true"]);
    b.create();
    b.ok(&["start", &b.id]);
    for _ in 0..200 {
        if b.state()["status"] == "stopped" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let out = b.kiln(&["exec", &b.id, "true"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("stopped"));
}
