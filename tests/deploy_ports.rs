//! A service in a user namespace serves on a port below 1024: its root is an unprivileged host
//! uid without CAP_NET_BIND_SERVICE over the network namespace (the host's user namespace owns
//! it), so kiln makes every port of the service's own namespace unprivileged when it creates
//! it. The host's setting does not change.

use kiln_router::Endpoint;
use kiln_testkit::build_support::Project;
use kiln_testkit::common::{unique, Envs, Sandbox};
use kiln_testkit::loadgen::Client;

/// The host's (and each network namespace's) lowest unprivileged port.
const PORT_START: &str = "/proc/sys/net/ipv4/ip_unprivileged_port_start";

fn read_port_start() -> String {
    std::fs::read_to_string(PORT_START)
        .expect("read ip_unprivileged_port_start")
        .trim()
        .to_string()
}

#[test]
fn a_mapped_service_listens_on_port_80_and_the_host_keeps_its_setting() {
    let host_before = read_port_start();
    let sb = Sandbox::new();
    sb.vendor("python");
    let repo = Project::new();
    repo.write(
        "kiln.toml",
        "project = \"lowport\"\n\n[services.web]\nbase = \"python\"\nsource = \"web\"\n\
         start = \"python3 -m http.server 80\"\nport = 80\n\n[services.web.build]\n\
         flavor = \"pip\"\n",
    );
    repo.write("web/requirements.txt", "");
    repo.write("web/index.html", "served-on-port-80\n");
    repo.commit("port 80");
    let env = unique("port");
    let _envs = Envs {
        sb: &sb,
        names: vec![env.clone()],
    };
    sb.ok(&["deploy", &repo.path().to_string_lossy(), "--env", &env]);

    // It runs mapped: container root is an unprivileged uid of the host.
    let s = sb.env_status(&env);
    let pid = s["services"]["web"]["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("web is not running: {s}"));
    let uid_map = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).expect("uid_map");
    let host_uid: u64 = uid_map
        .split_whitespace()
        .nth(1)
        .and_then(|u| u.parse().ok())
        .expect("uid map");
    assert!(host_uid >= 1_000_000, "not mapped: {uid_map}");

    // The router reaches it on port 80 of its namespace.
    let (code, body) = Client::new(Endpoint::host(sb.router_address(&env)))
        .request("/index.html", "")
        .expect("GET through the router");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("served-on-port-80"), "{body}");

    // Only the service's namespace changed.
    let netns = kiln_netns::netns_path(&sb.root(), &env, "web");
    let inside = kiln_netns::with_netns(&netns, read_port_start).expect("enter netns");
    assert_eq!(inside, "0");
    assert_eq!(read_port_start(), host_before, "the host's setting changed");
}
