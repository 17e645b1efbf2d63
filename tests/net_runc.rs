//! An OCI runtime joins kiln's namespaces by path: a container in `app`'s namespace, given its
//! hosts file and KILN_RELATIONSHIPS, reaches its declared `database` by name and nothing else.
//! Uses runc (scripts/setup installs it) until kiln's own runtime lands.

use std::io::BufRead as _;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

use kiln_netns::{Edge, Plan, Pool, Topology};
use kiln_testkit::common::{busybox_rootfs, unique, Sandbox};

/// Writes an OCI bundle whose process runs `script` in the network namespace at `netns`.
fn bundle(dir: &Path, netns: &Path, hosts: &Path, env: &[String], script: &str) {
    busybox_rootfs(&dir.join("rootfs"));
    let spec = Command::new("runc")
        .args(["spec", "--bundle"])
        .arg(dir)
        .status()
        .expect("runc spec");
    assert!(spec.success());
    let path = dir.join("config.json");
    let mut c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("read config")).expect("config");
    c["process"]["terminal"] = false.into();
    c["process"]["args"] = serde_json::json!(["/bin/sh", "-c", script]);
    let vars = c["process"]["env"].as_array_mut().expect("env");
    vars.extend(env.iter().map(|v| serde_json::Value::from(v.as_str())));
    for ns in c["linux"]["namespaces"].as_array_mut().expect("namespaces") {
        if ns["type"] == "network" {
            ns["path"] = netns.to_str().expect("path").into();
        }
    }
    c["mounts"]
        .as_array_mut()
        .expect("mounts")
        .push(serde_json::json!({
            "destination": "/etc/hosts", "type": "bind",
            "source": hosts.to_str().expect("path"), "options": ["bind", "ro"]
        }));
    std::fs::write(&path, serde_json::to_vec_pretty(&c).expect("json")).expect("write config");
}

#[test]
fn runc_joins_by_path_and_reaches_only_declared_names() {
    let sb = Sandbox::new();
    let p = unique("r").replace('-', "x");
    let (app, db, cache) = (format!("{p}app"), format!("{p}db"), format!("{p}cache"));
    let edge = |from: &str, name: &str, to: &str| Edge {
        from: from.to_string(),
        name: name.to_string(),
        to: to.to_string(),
        endpoint: None,
        port: 7300,
        scheme: "tcp".into(),
    };
    let topology = Topology {
        services: vec![app.clone(), db.clone(), cache.clone()],
        edges: vec![edge(&app, "database", &db), edge(&cache, "store", &db)],
    };
    let env = unique("e");
    let root = sb.root();
    let plan = Plan::new(&topology, Pool::DEFAULT, None).expect("plan");
    kiln_netns::apply(&env, &plan, &root).expect("apply");
    let _teardown = Teardown(&env, &root);

    let listener = kiln_netns::with_netns(&kiln_netns::netns_path(&root, &env, &db), || {
        TcpListener::bind(("0.0.0.0", 7300))
    })
    .expect("enter db")
    .expect("listen in db");
    let hosts = sb.dir.path().join("hosts");
    std::fs::write(&hosts, plan.hosts(&app).expect("hosts")).expect("write hosts");
    let rels = format!(
        "KILN_RELATIONSHIPS={}",
        plan.relationships_env(&app).expect("rels")
    );
    // cache's own address (on its link with db): app has no route to it.
    let (cache_end, _) = plan.links_of(&cache).next().expect("cache link");
    let script = format!(
        "echo hello | timeout 10 nc database 7300; echo db=$?; \
         timeout 10 nc {} 7300 </dev/null; echo cache=$?; \
         [ -n \"$KILN_RELATIONSHIPS\" ] && echo rels=set",
        cache_end.ip
    );
    let bdir = sb.dir.path().join("bundle");
    bundle(
        &bdir,
        &kiln_netns::netns_path(&root, &env, &app),
        &hosts,
        &[rels],
        &script,
    );
    // db answers one connection: reads a line, then closes (busybox nc exits on the close).
    let server = std::thread::spawn(move || accept_one_line(&listener));
    let out = Command::new("runc")
        .arg("--root")
        .arg(sb.dir.path().join("runc"))
        .args(["run", "--bundle"])
        .arg(&bdir)
        .arg(unique("kn"))
        .output()
        .expect("runc run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "runc: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (from, line) = server.join().expect("server thread");
    assert!(stdout.contains("db=0"), "{stdout}");
    assert!(stdout.contains("cache=1"), "{stdout}");
    assert!(stdout.contains("rels=set"), "{stdout}");
    let (app_end, _) = plan.links_of(&app).next().expect("app's link");
    assert_eq!(from, Some(std::net::IpAddr::V4(app_end.ip)));
    assert_eq!(line, "hello\n");
}

/// Accepts one connection within 20 s, reads one line from it and closes it.
fn accept_one_line(listener: &TcpListener) -> (Option<std::net::IpAddr>, String) {
    listener.set_nonblocking(true).expect("nonblocking");
    for _ in 0..2000 {
        match listener.accept() {
            Ok((conn, from)) => {
                conn.set_nonblocking(false).expect("blocking");
                conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))
                    .expect("timeout");
                let mut line = String::new();
                let _ = std::io::BufReader::new(conn).read_line(&mut line);
                return (Some(from.ip()), line);
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
        }
    }
    (None, String::new())
}

/// Tears the environment down when the test ends, pass or fail.
struct Teardown<'a>(&'a str, &'a Path);

impl Drop for Teardown<'_> {
    fn drop(&mut self) {
        if let Err(e) = kiln_netns::teardown(self.0, self.1) {
            eprintln!("teardown {}: {e}", self.0);
        }
    }
}
