//! The router end to end: the `kiln` binary starts it detached; upstreams listen inside
//! network namespaces made by `kiln net`; the test drives hold / switch / release.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kiln_router::daemon;
use kiln_testkit::deploy_support::{app_in, load, via, Client, TestEnv};

#[test]
fn router_proxies_to_an_app_inside_its_netns_over_keep_alive() {
    let env = TestEnv::with_netns(&["app"]);
    let _app = app_in(&env.netns("app"), "v1");
    let upstream = env.app("app").to_string();
    let addr = env.start_router(&["--upstream", &upstream]);
    let mut c = Client::new(via(addr));
    for i in 0..20 {
        let body = "x".repeat(i * 100);
        assert_eq!(
            c.request("/", &body),
            Ok((200, format!("v1 {}", body.len())))
        );
    }
    let st = env.settled();
    assert_eq!((st.gate.served, st.gate.failed), (20, 0));
    assert_eq!(st.gate.connections, 1, "one client connection kept alive");
    assert_eq!(st.gate.upstream.as_deref(), Some(upstream.as_str()));
}

#[test]
fn a_swap_under_keep_alive_load_loses_no_request() {
    let env = TestEnv::with_netns(&["v1", "v2"]);
    let _v1 = app_in(&env.netns("v1"), "v1");
    let _v2 = app_in(&env.netns("v2"), "v2");
    let addr = env.start_router(&["--upstream", &env.app("v1").to_string()]);
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(&via(addr), 8, &stop);
    std::thread::sleep(Duration::from_millis(300));
    let mut ctl = env.control();
    assert!(
        ctl.hold(Duration::from_secs(10)).expect("hold"),
        "in-flight requests drained"
    );
    // Requests pile up at the gate while the "deploy" happens.
    std::thread::sleep(Duration::from_millis(150));
    ctl.switch(&env.app("v2")).expect("switch");
    let released = ctl.release().expect("release");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let results: Vec<_> = clients
        .into_iter()
        .map(|c| c.join().expect("client"))
        .collect();
    let st = env.settled();
    let ok: u64 = results.iter().map(|r| r.ok).sum();
    let failed: u64 = results.iter().map(|r| r.failed).sum();
    let longest = results.iter().map(|r| r.longest).max().unwrap_or_default();
    println!(
        "swap under load: {ok} requests ok, {failed} failed, {released} released from hold, \
         {} held in total, longest client wait {longest:?}, longest hold {:.1} ms, hold window {:.1} ms",
        st.gate.held_total,
        st.gate.longest_hold_ms,
        st.gate.last_hold_ms.unwrap_or(0.0)
    );
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.failed, 0, "client {i} failed: {:?}", r.errors);
        let order: Vec<&str> = r.runs.iter().map(|(who, _)| who.as_str()).collect();
        assert_eq!(
            order,
            ["v1", "v2"],
            "client {i} saw answers switch once, v1 then v2"
        );
    }
    assert_eq!(st.gate.failed, 0);
    assert!(
        released >= 1 && st.gate.held_total >= released,
        "requests were held: {st:?}"
    );
    assert_eq!(st.gate.served, ok, "router and clients agree");
}

#[test]
fn a_held_request_is_served_after_release_even_if_the_app_comes_up_late() {
    let env = TestEnv::with_netns(&["app"]);
    // A first deploy: the router starts held, with no upstream yet.
    let addr = env.start_router(&["--hold"]);
    let pending = std::thread::spawn(move || Client::new(via(addr)).request("/first", ""));
    let mut ctl = env.control();
    while ctl.status().expect("status").gate.waiting == 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    ctl.switch(&env.app("app")).expect("switch");
    assert_eq!(ctl.release().expect("release"), 1);
    // The app listens only after the release: the router retries the refused connects.
    std::thread::sleep(Duration::from_millis(200));
    let _app = app_in(&env.netns("app"), "v1");
    assert_eq!(pending.join().expect("client"), Ok((200, "v1 0".into())));
    let st = env.settled();
    assert_eq!(
        (st.gate.served, st.gate.failed, st.gate.held_total),
        (1, 0, 1)
    );
    assert!(st.gate.longest_hold_ms > 0.0);
}

#[test]
fn an_upstream_that_never_answers_gets_a_502_naming_it() {
    let env = TestEnv::with_netns(&["app"]);
    let upstream = env.app("app").to_string();
    let addr = env.start_router(&["--upstream", &upstream, "--retry-ms", "100"]);
    let (status, body) = Client::new(via(addr)).request("/", "").expect("an answer");
    assert_eq!(status, 502);
    assert!(
        body.contains(&upstream) && body.contains("ECONNREFUSED"),
        "{body}"
    );
    assert_eq!(env.settled().gate.failed, 1);
}

#[test]
fn destroy_leaves_no_router_socket_netns_or_volume() {
    let env = TestEnv::with_netns(&["app", "db"]);
    env.start_router(&["--upstream", &env.app("app").to_string()]);
    let info = daemon::running(&env.root(), &env.name)
        .expect("read record")
        .expect("router running");
    let volume =
        kiln_deploy::volumes::ensure(&env.sandbox.store(), &env.name, "app.data").expect("volume");
    std::fs::write(volume.join("f"), "data").expect("write");
    let ls = env.sandbox.ok(&["env", "ls"]);
    assert!(ls.contains(&env.name), "{ls}");
    let out = env.sandbox.ok(&["env", "destroy", &env.name]);
    assert!(
        out.contains("router stopped") && out.contains("2 namespaces"),
        "{out}"
    );
    assert!(
        !info.process.alive(),
        "router process gone (at most a zombie for init to reap)"
    );
    assert!(!info.socket.exists(), "control socket removed");
    let ns_dir = kiln_netns::env_dir(&env.root(), &env.name);
    assert!(kiln_netns::mounted_in(&ns_dir).expect("mounts").is_empty());
    assert!(!env.netns("app").exists() && !env.netns("db").exists());
    assert!(!volume.exists());
    assert!(!kiln_deploy::layout::env_dir(&env.root(), &env.name).exists());
    assert!(!env.sandbox.ok(&["env", "ls"]).contains(&env.name));
    let again = env.sandbox.ok(&["env", "destroy", &env.name]);
    assert!(
        again.contains("not running") && again.contains("0 namespaces"),
        "{again}"
    );
}

#[test]
fn bad_router_input_is_refused_by_name_and_leaves_nothing() {
    let env = TestEnv::with_netns(&[]);
    let out = env.sandbox.run(&["env", "router", "../x", "start"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid environment name \"../x\""), "{err}");
    let out = env
        .sandbox
        .run(&["env", "router", &env.name, "start", "--upstream", "nowhere"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nowhere") && err.contains("IP:PORT"), "{err}");
    let out = env.sandbox.run(&["env", "router", &env.name, "release"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no running router"),
        "{err}"
    );
    assert!(!env.sandbox.root().join("envs").join(&env.name).exists());
    // A second router for one environment is refused while the first runs.
    env.start_router(&[]);
    let out = env.sandbox.run(&["env", "router", &env.name, "start"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("already has a router"),
        "{err}"
    );
}

#[test]
fn of_routers_started_at_once_for_one_env_exactly_one_runs() {
    let env = TestEnv::with_netns(&[]);
    let starts: Vec<_> = (0..4)
        .map(|_| {
            env.sandbox
                .kiln()
                .args(["env", "router", &env.name, "start"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn kiln")
        })
        .collect();
    let outs: Vec<_> = starts
        .into_iter()
        .map(|c| c.wait_with_output().expect("wait"))
        .collect();
    let won = outs.iter().filter(|o| o.status.success()).count();
    assert_eq!(won, 1, "{outs:?}");
    for o in outs.iter().filter(|o| !o.status.success()) {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("already has a router"), "{err}");
    }
    let st = env.settled();
    assert_eq!(st.env, env.name);
}
