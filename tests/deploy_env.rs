//! Environments end to end: `kiln env status` checks liveness for real, health checks reach
//! into the app's namespace, and volumes clone from a frozen parent independently.

use std::path::Path;
use std::time::Duration;

use kiln_deploy::env_state::{EnvState, ServiceState};
use kiln_deploy::volumes::{self, CgroupFreezer};
use kiln_deploy::{health, layout};
use kiln_router::daemon;
use kiln_testkit::deploy_support::{app_in, TestEnv};
use kiln_util::process::ProcessRef;

/// A child process killed and reaped on drop.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `kiln env status ENV --json`, parsed.
fn status_json(env: &TestEnv) -> serde_json::Value {
    let out = env.sandbox.ok(&["env", "status", &env.name, "--json"]);
    serde_json::from_str(&out).expect("status JSON")
}

#[test]
fn env_status_tells_the_truth_after_processes_die_on_their_own() {
    let env = TestEnv::with_netns(&["web"]);
    env.start_router(&["--upstream", &env.app("web").to_string()]);
    let mut sleeper = Child(
        std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("spawn"),
    );
    let process = ProcessRef::of(sleeper.0.id()).expect("in /proc");
    EnvState::update(&env.root(), &env.name, |s| {
        s.commit = Some("c0ffee".into());
        s.services.insert(
            "web".into(),
            ServiceState {
                image: "shop/web:c0ffee".into(),
                digest: "sha256:ab".into(),
                process: Some(process),
                netns: Some(env.netns("web")),
                port: Some(8000),
                ..ServiceState::default()
            },
        );
        Ok(())
    })
    .expect("record");
    let st = status_json(&env);
    assert_eq!(st["router"]["running"], true);
    assert_eq!(st["router"]["status"]["held"], false);
    assert_eq!(st["services"]["web"]["state"], "running");
    assert_eq!(st["services"]["web"]["pid"], sleeper.0.id());
    assert_eq!(st["services"]["web"]["netns_present"], true);
    assert_eq!(st["record"]["commit"], "c0ffee");
    let text = env.sandbox.ok(&["env", "status", &env.name]);
    assert!(
        text.contains("shop/web:c0ffee") && text.contains("running"),
        "{text}"
    );

    // The app dies and the router is killed behind kiln's back.
    sleeper.0.kill().expect("kill app");
    sleeper.0.wait().expect("reap app");
    let router = daemon::running(&env.root(), &env.name)
        .expect("record")
        .expect("router");
    assert!(router.process.signal(nix::sys::signal::Signal::SIGKILL));
    assert!(router.process.wait_gone(Duration::from_secs(5)));
    let st = status_json(&env);
    assert_eq!(st["router"]["running"], false);
    assert_eq!(st["services"]["web"]["state"], "exited");
    assert!(st["services"]["web"]["pid"].is_null());
    let ls = env.sandbox.ok(&["env", "ls"]);
    assert!(
        ls.contains(&env.name) && ls.contains("dead") && ls.contains("0/1"),
        "{ls}"
    );
    // A dead router's leftovers do not stop a new one.
    env.start_router(&[]);
}

#[test]
fn health_waits_for_the_port_inside_the_app_netns() {
    let env = TestEnv::with_netns(&["app"]);
    let app = env.app("app");
    let err = health::wait_port(&app, Duration::from_millis(100))
        .expect_err("nothing listens yet")
        .to_string();
    assert!(
        err.contains(&env.netns("app").display().to_string()),
        "{err}"
    );
    let netns = env.netns("app");
    let late = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(150));
        app_in(&netns, "v1")
    });
    let took = health::wait_port(&app, Duration::from_secs(10)).expect("healthy once it listens");
    let _app = late.join().expect("app thread");
    println!("health: port answered in the netns after {took:?}");
    // A namespace that does not exist is named in the error.
    let missing = Path::new("/nonexistent/netns");
    let err = health::wait_port(
        &kiln_router::Endpoint::in_netns(app.addr, missing),
        Duration::from_millis(50),
    )
    .expect_err("no such namespace")
    .to_string();
    assert!(err.contains("/nonexistent/netns"), "{err}");
}

#[test]
fn a_child_env_clones_a_frozen_parents_volumes_and_they_diverge() {
    let env = TestEnv::with_netns(&[]);
    let store = env.sandbox.store();
    let parent_env = format!("{}-main", env.name);
    let child_env = format!("{}-pr", env.name);
    let vol = volumes::mount_volume_name("web", "/app/data");
    let parent = volumes::ensure(&store, &parent_env, &vol).expect("parent volume");
    std::fs::write(parent.join("seed"), "from main").expect("seed");
    // A writer in the parent keeps appending while the clone happens; it is frozen meanwhile.
    let key = format!("kiln-test-{}", env.name);
    let cgroup = Path::new("/sys/fs/cgroup/freezer").join(&key);
    std::fs::create_dir(&cgroup).expect("freezer cgroup");
    struct Cg<'a>(&'a Path);
    impl Drop for Cg<'_> {
        fn drop(&mut self) {
            let _ = std::fs::write(self.0.join("freezer.state"), "THAWED");
            let _ = std::fs::remove_dir(self.0);
        }
    }
    let _cg = Cg(&cgroup);
    let log = parent.join("log");
    let writer = Child(
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("while :; do echo line >> {}; done", log.display()))
            .spawn()
            .expect("writer"),
    );
    std::fs::write(cgroup.join("cgroup.procs"), writer.0.id().to_string()).expect("join cgroup");
    while std::fs::metadata(&log).map_or(0, |m| m.len()) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut freezer = CgroupFreezer::new(vec![key]);
    let report = volumes::clone_from(
        &store,
        &parent_env,
        &child_env,
        std::slice::from_ref(&vol),
        &mut freezer,
    )
    .expect("clone");
    assert_eq!(report.cloned, std::slice::from_ref(&vol));
    let child = layout::volume_dir(&store, &child_env, &vol);
    let copied = std::fs::read_to_string(child.join("log")).expect("cloned log");
    assert!(
        copied.ends_with("line\n"),
        "a consistent copy ends on a whole line"
    );
    assert_eq!(
        std::fs::read_to_string(child.join("seed")).expect("seed"),
        "from main"
    );
    // The parent runs again (thawed) and its writes do not show in the child.
    let grown = |len: usize| {
        for _ in 0..1000 {
            if std::fs::metadata(&log).map_or(0, |m| m.len() as usize) > len {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    };
    assert!(grown(copied.len()), "the parent's writer was thawed");
    assert_eq!(
        std::fs::read_to_string(child.join("log"))
            .expect("log")
            .len(),
        copied.len()
    );
    std::fs::write(child.join("seed"), "from pr").expect("child write");
    assert_eq!(
        std::fs::read_to_string(parent.join("seed")).expect("seed"),
        "from main"
    );
    drop(writer);
    for e in [&parent_env, &child_env] {
        env.sandbox.ok(&["env", "destroy", e]);
        assert!(volumes::list(&store, e).expect("list").is_empty());
    }
}
