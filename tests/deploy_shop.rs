//! examples/shop deployed by `kiln deploy` from a git repo made by the test, on the python and
//! redis vendor images: the page proves redis was reached through the relationship and the
//! deploy hook ran; a redeploy of the same commit replaces nothing; a v2 commit swaps under 8
//! concurrent clients with no failed request; a failing hook rolls back; volumes survive and are
//! cloned for a child environment; an app without the relationship cannot reach redis; a hook
//! over its time limit is killed; a killed deploy frees the requests it held and the next one
//! converges; destroy leaves nothing behind.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{copy_example, git, shared_deb_cache, Sandbox};
use kiln::deploy::loadgen::{self, Client};
use kiln::deploy::Endpoint;
use serde_json::Value;

/// Destroys the environments when the test ends, whatever happens.
struct Envs<'a> {
    sb: &'a Sandbox,
    names: Vec<String>,
}

impl Drop for Envs<'_> {
    fn drop(&mut self) {
        for env in &self.names {
            let _ = self.sb.run(&["env", "destroy", env]);
        }
    }
}

fn status(sb: &Sandbox, env: &str) -> Value {
    let out = sb.ok(&["env", "status", env, "--json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("bad JSON ({e}): {out}"))
}

fn router(sb: &Sandbox, env: &str) -> SocketAddr {
    let s = status(sb, env);
    s["record"]["router"]["listen"]
        .as_str()
        .expect("router address")
        .parse()
        .expect("address")
}

fn pids(sb: &Sandbox, env: &str) -> Vec<u64> {
    let s = status(sb, env);
    ["cache", "web"]
        .iter()
        .map(|n| {
            s["record"]["services"][n]["process"]["pid"]
                .as_u64()
                .expect("pid")
        })
        .collect()
}

fn get(addr: SocketAddr) -> String {
    let (code, body) = Client::new(Endpoint::host(addr))
        .request("/", "")
        .expect("GET through the router");
    assert_eq!(code, 200, "{body}");
    body
}

fn commit_file(repo: &Path, file: &str, text: &str, msg: &str) {
    std::fs::write(repo.join(file), text).expect("write");
    git(repo, &["commit", "-q", "-am", msg]);
}

fn shop_repo(sb: &Sandbox) -> PathBuf {
    let repo = copy_example(sb.dir.path(), "shop");
    // The greeting names the version (the load clients tell v1 from v2 by the first word), and
    // a second app `probe` has no relationship to redis (and no port: a command is its health).
    let toml = std::fs::read_to_string(repo.join("kiln.toml")).expect("read");
    let toml = toml.replace("GREETING = \"hello\"", "GREETING = \"v1\"")
        + "\n[services.probe]\nbase = \"python\"\nsource = \"web\"\n\
           start = \"python3 -c 'import time; time.sleep(100000)'\"\n\
           [services.probe.deploy]\nhealth = \"test -e /app/server.py\"\n";
    std::fs::write(repo.join("kiln.toml"), toml).expect("write");
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "shop v1"]);
    repo
}

fn vendor(sb: &Sandbox, name: &str) {
    let recipes = Path::new(env!("CARGO_MANIFEST_DIR")).join("vendor-images");
    let out = sb
        .kiln()
        .env("KILN_DEB_CACHE", shared_deb_cache())
        .args(["vendor", "build", name, "--quiet", "--recipes"])
        .arg(&recipes)
        .output()
        .expect("spawn kiln");
    assert!(out.status.success(), "vendor build {name}: {out:?}");
}

/// Pids whose command line contains `needle`.
fn processes_running(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

/// Polls `f` every `pause` until it is true or `timeout` passed; its last answer.
fn wait_until(timeout: Duration, pause: Duration, mut f: impl FnMut() -> bool) -> bool {
    let until = std::time::Instant::now() + timeout;
    while !f() && std::time::Instant::now() < until {
        std::thread::sleep(pause);
    }
    f()
}

/// Starts `kiln deploy` of `repo` into `env`, SIGKILLs it once a process matching `hook` runs;
/// returns (router held when killed, router released within 5 s after).
fn kill_deploy_in_hook(sb: &Sandbox, repo: &str, env: &str, hook: &str) -> (bool, bool) {
    let mut child = sb
        .kiln()
        .args(["deploy", repo, "--env", env])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn deploy");
    let ms = Duration::from_millis;
    wait_until(Duration::from_secs(60), ms(20), || {
        !processes_running(hook).is_empty()
    });
    let held = router_held(sb, env);
    child.kill().expect("kill -9 the deploy");
    let _ = child.wait();
    let released = wait_until(Duration::from_secs(5), ms(10), || !router_held(sb, env));
    (held, released)
}

/// After a killed deploy and the next one: no process matching `hook` runs, and `env` has one
/// container per service, no orphan.
fn assert_settled(sb: &Sandbox, env: &str, hook: &str) {
    assert!(processes_running(hook).is_empty(), "the orphans went");
    let containers = std::fs::read_dir(sb.root().join("envs").join(env).join("containers"))
        .expect("containers")
        .count();
    assert_eq!(containers, 3, "one container per service, no orphan");
}

/// Whether the router of `env` holds requests now.
fn router_held(sb: &Sandbox, env: &str) -> bool {
    kiln::deploy::router::client::RouterClient::connect(&sb.root(), env)
        .and_then(|mut c| c.status())
        .expect("router status")
        .gate
        .held
}

/// Each client's runs of answers: (first word, how many in a row).
type Runs = Vec<Vec<(String, u64)>>;

/// How many visits the page says the volume holds.
fn visits(page: &str) -> u64 {
    page.lines()
        .find(|l| l.starts_with("data:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no visit count in {page}"))
}

/// Runs 8 keep-alive clients through the router while `during` runs; returns (ok, failed,
/// longest wait, each client's runs of answers, first errors).
fn under_load(addr: SocketAddr, during: impl FnOnce()) -> (u64, u64, Duration, Runs, Vec<String>) {
    let stop = Arc::new(AtomicBool::new(false));
    let handles = loadgen::load(&Endpoint::host(addr), 8, &stop);
    std::thread::sleep(Duration::from_millis(300));
    during();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed, mut longest, mut runs, mut errors) =
        (0, 0, Duration::ZERO, Vec::new(), Vec::new());
    for h in handles {
        let r = h.join().expect("client");
        ok += r.ok;
        failed += r.failed;
        longest = longest.max(r.longest);
        runs.push(r.runs);
        errors.extend(r.errors);
    }
    (ok, failed, longest, runs, errors)
}

#[test]
fn examples_shop_deploys_swaps_without_loss_rolls_back_and_destroys_clean() {
    let sb = Sandbox::new();
    vendor(&sb, "python");
    vendor(&sb, "redis");
    let repo = shop_repo(&sb);
    let repo_s = repo.to_string_lossy().to_string();
    let env = common::unique("shop");
    let child = format!("{env}-pr");
    let first = format!("{env}-k");
    let _guard = Envs {
        sb: &sb,
        names: vec![first.clone(), child.clone(), env.clone()],
    };

    // v1: the page proves redis via the relationship and the deploy hook.
    sb.ok(&["deploy", &repo_s, "--env", &env]);
    let addr = router(&sb, &env);
    let page = get(addr);
    assert!(page.starts_with("v1 from shop v1"), "{page}");
    assert!(page.contains("redis: ok at cache:6379"), "{page}");
    assert!(page.contains("migration: applied for v1"), "{page}");
    assert!(page.contains("BUILT BY THE KILN BUILD HOOK"), "{page}");

    // A redeploy of the same commit replaces nothing.
    let before = pids(&sb, &env);
    let out = sb.ok(&["deploy", &repo_s, "--env", &env, "--json"]);
    let report: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        report["changes"]["replace"].as_array().map(Vec::len),
        Some(0),
        "{out}"
    );
    assert_eq!(pids(&sb, &env), before, "same pids after a no-op redeploy");

    // The relationship is the only way to redis: web reaches it, probe does not.
    let s = status(&sb, &env);
    let ip = s["record"]["services"]["web"]["links"]["cache"][0]["ip"]
        .as_str()
        .expect("cache ip")
        .to_string();
    let connect =
        format!("import socket; socket.create_connection(('{ip}', 6379), 2); print('connected')");
    let from_web = sb.run(&["shell", &env, "web", "--", "python3", "-c", &connect]);
    assert!(from_web.status.success(), "web reaches redis: {from_web:?}");
    let from_probe = sb.run(&["shell", &env, "probe", "--", "python3", "-c", &connect]);
    assert!(
        !from_probe.status.success(),
        "probe must not reach redis: {from_probe:?}"
    );

    // v2 under 8 concurrent clients: v1 then v2, no failed request.
    let visits_before = visits(&page);
    let toml = std::fs::read_to_string(repo.join("kiln.toml")).expect("read");
    std::fs::write(repo.join("web/VERSION"), "v2\n").expect("write");
    commit_file(&repo, "kiln.toml", &toml.replace("\"v1\"", "\"v2\""), "v2");
    let mut swap = String::new();
    let (ok, failed, longest, runs, errors) = under_load(addr, || {
        swap = sb.ok(&["deploy", &repo_s, "--env", &env, "--json"]);
    });
    let swap: Value = serde_json::from_str(&swap).expect("json");
    let hold_ms = swap["hold_ms"].as_f64().expect("hold_ms");
    eprintln!(
        "swap v1→v2 under 8 clients: {ok} requests ok, {failed} failed, longest wait {:.1} ms, \
         hold window {hold_ms:.1} ms, steps {}",
        longest.as_secs_f64() * 1000.0,
        swap["steps"]
    );
    assert!(hold_ms > 0.0, "the swap held requests: {swap}");
    assert_eq!(
        swap["changes"]["replace"],
        serde_json::json!(["probe", "web"]),
        "{swap}"
    );
    assert_eq!(failed, 0, "no request fails during the swap: {errors:?}");
    for r in &runs {
        let order: Vec<&str> = r.iter().map(|(w, _)| w.as_str()).collect();
        assert!(
            order == ["v1", "v2"] || order == ["v2"],
            "answers switch once: {order:?}"
        );
    }
    assert!(
        runs.iter().any(|r| r.iter().any(|(w, _)| w == "v1")),
        "{runs:?}"
    );
    let page = get(addr);
    assert!(page.starts_with("v2 from shop v2"), "{page}");
    let visits_after = visits(&page);
    assert!(
        visits_after > visits_before + ok - 1,
        "the volume kept v1's data: {page}"
    );

    // A failing deploy hook rolls back: v2 keeps answering, no failed request.
    let toml = std::fs::read_to_string(repo.join("kiln.toml")).expect("read");
    commit_file(
        &repo,
        "kiln.toml",
        &toml.replace(
            "hook = \"python3 migrate.py\"",
            "hook = \"python3 migrate.py && exit 3\"",
        ),
        "v3 with a failing hook",
    );
    let mut bad = None;
    let (_, failed, _, _, errors) = under_load(addr, || {
        bad = Some(sb.run(&["deploy", &repo_s, "--env", &env]));
    });
    let bad = bad.expect("deploy ran");
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success(), "a failing hook fails the deploy");
    assert!(err.contains("deploy hook") && err.contains("web"), "{err}");
    assert_eq!(
        failed, 0,
        "no request fails during the rollback: {errors:?}"
    );
    assert!(get(addr).starts_with("v2 from shop v2"));
    git(&repo, &["reset", "-q", "--hard", "HEAD~1"]);

    // A hook over its time limit is killed, with every process it started; the deploy rolls
    // back naming the limit.
    let v2_toml = std::fs::read_to_string(repo.join("kiln.toml")).expect("read");
    let sleeper = |secs: u32, extra: &str| {
        v2_toml.replace(
            "hook = \"python3 migrate.py\"",
            &format!("hook = \"python3 -c 'import time; time.sleep({secs})'\"{extra}"),
        )
    };
    commit_file(
        &repo,
        "kiln.toml",
        &sleeper(31, "\ntimeout = 1"),
        "v3 slow hook",
    );
    let slow = sb.run(&["deploy", &repo_s, "--env", &env]);
    let err = String::from_utf8_lossy(&slow.stderr);
    assert!(
        !slow.status.success(),
        "a hook over its limit fails the deploy"
    );
    assert!(err.contains("timed out after 1 s"), "{err}");
    assert!(
        processes_running("time.sleep(31)").is_empty(),
        "the hook was killed"
    );
    assert!(get(addr).starts_with("v2 from shop v2"));
    git(&repo, &["reset", "-q", "--hard", "HEAD~1"]);

    // A health command that never passes fails the deploy after its timeout, naming it.
    commit_file(
        &repo,
        "kiln.toml",
        &v2_toml.replace(
            "health = \"test -e /app/server.py\"",
            "health = \"test -e /app/missing\"\nhealth_timeout = 1",
        ),
        "v3 unhealthy probe",
    );
    let sick = sb.run(&["deploy", &repo_s, "--env", &env]);
    let err = String::from_utf8_lossy(&sick.stderr);
    assert!(
        !sick.status.success(),
        "an unhealthy service fails the deploy"
    );
    assert!(
        err.contains("probe")
            && err.contains("health check")
            && err.contains("test -e /app/missing"),
        "{err}"
    );
    assert!(get(addr).starts_with("v2 from shop v2"));
    git(&repo, &["reset", "-q", "--hard", "HEAD~1"]);

    // A deploy killed while it holds requests: the router lets them through (to the new
    // container, which answers on the same port of the same namespace), none fails; the next
    // deploy settles what the killed one left and converges.
    commit_file(&repo, "kiln.toml", &sleeper(32, ""), "v3 hook that hangs");
    let mut killed = None;
    let (ok, failed, _, _, errors) = under_load(addr, || {
        let (held, released) = kill_deploy_in_hook(&sb, &repo_s, &env, "time.sleep(32)");
        assert!(held, "held while the hook runs");
        killed = Some(released);
    });
    assert_eq!(
        killed,
        Some(true),
        "the router released when the deploy died"
    );
    assert_eq!(failed, 0, "no request fails when a deploy dies: {errors:?}");
    assert!(ok > 0);
    // The next deploy adopts the container left serving and replaces it in a hold: no request
    // fails either.
    git(&repo, &["reset", "-q", "--hard", "HEAD~1"]);
    let (_, failed, _, _, errors) = under_load(addr, || {
        sb.ok(&["deploy", &repo_s, "--env", &env]);
    });
    assert_eq!(
        failed, 0,
        "no request fails when the orphan is replaced: {errors:?}"
    );
    assert_settled(&sb, &env, "time.sleep(32)");
    assert!(get(addr).starts_with("v2 from shop v2"));

    // The environment stops and starts again, even with its namespaces gone meanwhile.
    sb.ok(&["env", "stop", &env]);
    sb.ok(&["net", "teardown", "--env", &env]);
    sb.ok(&["env", "start", &env]);
    let addr = router(&sb, &env);
    assert!(get(addr).starts_with("v2 from shop v2"));

    // A child environment sees the parent's data; later writes stay apart.
    sb.ok(&["deploy", &repo_s, "--env", &child, "--parent", &env]);
    let child_addr = router(&sb, &child);
    let c1 = visits(&get(child_addr));
    assert!(c1 > visits_after, "the child cloned the parent's volume");
    let p1 = visits(&get(addr));
    let c2 = visits(&get(child_addr));
    let p2 = visits(&get(addr));
    assert_eq!(c2, c1 + 1, "the parent's write does not show in the child");
    assert_eq!(p2, p1 + 1, "the child's write does not show in the parent");

    // A first deploy killed in its hook: its router lets requests through (to nothing yet),
    // and the next deploy of the environment removes what it left and converges.
    commit_file(&repo, "kiln.toml", &sleeper(33, ""), "v3 hook that hangs");
    let (_, released) = kill_deploy_in_hook(&sb, &repo_s, &first, "time.sleep(33)");
    assert!(released, "a new router is released when its deploy dies");
    git(&repo, &["reset", "-q", "--hard", "HEAD~1"]);
    sb.ok(&["deploy", &repo_s, "--env", &first]);
    assert_settled(&sb, &first, "time.sleep(33)");
    assert!(get(router(&sb, &first)).starts_with("v2 from shop v2"));
    sb.ok(&["env", "destroy", &first]);

    // Destroy leaves no process, mount, netns, cgroup or router.
    let web_pid = pids(&sb, &env)[1];
    let router_pid = status(&sb, &env)["record"]["router"]["process"]["pid"]
        .as_u64()
        .expect("router pid");
    let netns: Vec<u64> = [&env, &child]
        .iter()
        .flat_map(|e| {
            ["cache", "probe", "web"].map(|s| {
                use std::os::unix::fs::MetadataExt;
                std::fs::metadata(sb.root().join("netns").join(e).join(s))
                    .expect("netns file")
                    .ino()
            })
        })
        .collect();
    sb.ok(&["env", "destroy", &env]);
    sb.ok(&["env", "destroy", &child]);
    // A namespace lives while a mount or a process holds it; its veth ends go with it.
    let held: Vec<String> = std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_link(e.path().join("ns/net")).ok())
        .map(|l| l.to_string_lossy().into_owned())
        .filter(|l| netns.iter().any(|i| *l == format!("net:[{i}]")))
        .collect();
    assert!(
        held.is_empty(),
        "no process in the env's namespaces: {held:?}"
    );
    for pid in [web_pid, router_pid] {
        // Gone, or a zombie waiting for a reaper that is not ours.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next());
        assert!(
            matches!(state, None | Some("Z")),
            "pid {pid} is gone: {stat}"
        );
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let root = sb.root().to_string_lossy().to_string();
    assert!(!mounts.contains(&root), "no mount left under {root}");
    assert!(
        !netns.iter().any(|i| mounts.contains(&format!("net:[{i}]"))),
        "no netns mount left anywhere"
    );
    let cgroups: Vec<String> = std::fs::read_dir("/sys/fs/cgroup/freezer")
        .expect("freezer")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(&env))
        .collect();
    assert!(cgroups.is_empty(), "no cgroup left: {cgroups:?}");
    assert!(
        !sb.root().join("envs").join(&env).exists(),
        "no env record left"
    );
}
