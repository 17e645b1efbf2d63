//! cgroup limits are enforced: memory (an over-allocation is killed) and pids (a fork bomb stops
//! at pids.max); pause/resume freeze the container; stats are reported.

mod runtime_support;

use runtime_support::Bundle;
use serde_json::json;

#[test]
fn pids_limit_stops_a_fork_bomb() {
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "(i=0; while [ $i -lt 40 ]; do sleep 5 & i=$((i+1)); done) 2>/dev/null; \
         read c < /sys/fs/cgroup/pids/pids.current; read m < /sys/fs/cgroup/pids/pids.max; \
         echo $c; echo $m",
    ]);
    b.config["linux"]["resources"]["pids"] = json!({"limit": 10});
    let out = b.run_ok();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.last(), Some(&"10"), "{out}");
    let current: u32 = lines[0].parse().expect("pids.current");
    assert!(current <= 10, "pids.current {current} above the limit");
}

#[test]
fn memory_limit_is_set_and_enforced() {
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes; \
         x=$(head -c 64m /dev/zero | tr '\\0' a); echo survived ${#x}",
    ]);
    b.config["linux"]["resources"]["memory"] = json!({"limit": 16777216, "swap": 16777216});
    let (code, out, _) = b.run();
    assert_eq!(
        code, 137,
        "the shell holding 64 MiB must be OOM-killed: {out}"
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first(), Some(&"16777216"), "{out}");
    assert!(
        !out.contains("survived"),
        "64 MiB buffered under a 16 MiB limit: {out}"
    );
}

#[test]
fn pause_resume_and_stats() {
    let b = Bundle::new(&["sleep", "100"]);
    b.create();
    b.ok(&["start", &b.id]);
    b.ok(&["pause", &b.id]);
    assert_eq!(b.state()["status"], "paused");
    let frozen =
        std::fs::read_to_string(b.cgroup_dir("freezer").join("freezer.state")).expect("freezer");
    assert_eq!(frozen.trim(), "FROZEN");
    b.ok(&["resume", &b.id]);
    assert_eq!(b.state()["status"], "running");
    let stats: serde_json::Value =
        serde_json::from_str(&b.ok(&["events", "--stats", &b.id])).expect("stats json");
    assert_eq!(stats["type"], "stats");
    assert!(
        stats["data"]["pids"]["current"].as_u64().unwrap_or(0) >= 1,
        "{stats}"
    );
    assert!(
        stats["data"]["memory"]["usage"]["usage"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{stats}"
    );
    let ps: Vec<i64> =
        serde_json::from_str(&b.ok(&["ps", "--format", "json", &b.id])).expect("ps json");
    assert_eq!(ps, vec![b.state()["pid"].as_i64().expect("pid")]);
}
