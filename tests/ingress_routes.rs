//! The host ingress routes by Host and path: two environments of one project and one of
//! another behind one ingress, each app listening inside its own network namespace; declared
//! routes (a path route to a second app, a redirect); an unknown host gets 404, never another
//! environment's app.

use kiln_router::routes::{RouteSpec, Target};
use kiln_testkit::deploy_support::{app_in, TestEnv};
use kiln_testkit::ingress_support::{register, settled, IngressGuard, Raw};

fn route(pattern: &str, target: Target) -> RouteSpec {
    RouteSpec {
        pattern: pattern.into(),
        target,
        primary: false,
    }
}

#[test]
fn environments_are_reached_by_host_and_declared_routes_and_unknown_hosts_get_404() {
    let env = TestEnv::with_netns(&["main", "api", "pr", "blog"]);
    let _apps = [
        app_in(&env.netns("main"), "shop-main"),
        app_in(&env.netns("api"), "shop-api"),
        app_in(&env.netns("pr"), "shop-pr"),
        app_in(&env.netns("blog"), "blog-prod"),
    ];
    let ingress = IngressGuard::start(&env, &["--listen", "127.0.0.1:0"]);
    let up = |s: &str| env.app(s).to_string();
    let mut main = register(
        &env,
        "main",
        &up("main"),
        "shop",
        &[
            route("http://{default}/", Target::Upstream { upstream: None }),
            route(
                "http://{default}/api",
                Target::Upstream {
                    upstream: Some("api".into()),
                },
            ),
            route(
                "http://www.{default}/",
                Target::Redirect {
                    to: "http://{default}/".into(),
                    code: 301,
                },
            ),
        ],
    );
    main.switch_app(&env.app("api"), Some("api"))
        .expect("second app");
    register(&env, "pr-1", &up("pr"), "shop", &[]);
    register(&env, "prod", &up("blog"), "blog", &[]);

    let mut c = Raw::new(ingress.addr());
    for (host, path, answer) in [
        ("main.shop.localhost", "/", "shop-main 0"),
        ("Main.Shop.Localhost:8080", "/x", "shop-main 0"),
        ("main.shop.localhost", "/api/v1", "shop-api 0"),
        ("main.shop.localhost", "/apis", "shop-main 0"),
        ("pr-1.shop.localhost", "/", "shop-pr 0"),
        ("prod.blog.localhost", "/", "blog-prod 0"),
    ] {
        let r = c.get(host, path);
        assert_eq!(
            (r.status, r.text()),
            (200, answer.to_string()),
            "{host}{path}"
        );
    }
    let r = c.get("www.main.shop.localhost", "/");
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("http://main.shop.localhost/"));
    for host in [
        "nope.shop.localhost",
        "shop.localhost",
        "127.0.0.1",
        "main.blog.localhost",
    ] {
        let r = c.get(host, "/");
        assert_eq!(r.status, 404, "{host}");
        assert!(
            r.text().contains("no environment serves host"),
            "{host}: {}",
            r.text()
        );
    }
    // A Host that is not a host name is refused, not routed.
    c.send(b"GET / HTTP/1.1\r\nHost: main.shop.localhost/../x\r\n\r\n");
    assert_eq!(c.response(false).expect("answer").status, 400);
    assert!(c.closed());
    let mut c = Raw::new(ingress.addr());

    let st = ingress.control().status().expect("ingress status");
    assert_eq!(st.hosts["main.shop.localhost"], ["main"]);
    assert_eq!(st.hosts["prod.blog.localhost"], ["prod"]);
    let main_st = settled(&env, "main");
    assert_eq!(main_st.urls[0], "http://main.shop.localhost/");
    assert_eq!((main_st.gate.served, main_st.gate.failed), (4, 0));
    let text = env.sandbox.ok(&["env", "status", "main"]);
    assert!(text.contains("http://main.shop.localhost/api"), "{text}");
    let log = std::fs::read_to_string(kiln_deploy::layout::access_log(&env.root(), "main"))
        .expect("access log");
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert!(lines.iter().any(|l| l["path"] == "/api/v1"
        && l["status"] == 200
        && l["host"] == "main.shop.localhost"
        && l["bytes"] == 10
        && l["upstream_ms"].is_number()));
    let out = env.sandbox.ok(&["logs", "main", "--router"]);
    assert!(out.contains("\"/api/v1\""), "{out}");
    // A route another environment already serves is refused, naming it; nothing changes.
    let mut pr = kiln_router::client::RouterClient::connect(&env.root(), "pr-1").expect("pr-1");
    let err = pr
        .routes(
            "shop",
            &[route(
                "http://main.shop.localhost/",
                Target::Upstream { upstream: None },
            )],
        )
        .expect_err("taken")
        .to_string();
    assert!(
        err.contains("already routed to environment \"main\""),
        "{err}"
    );
    assert_eq!(c.get("pr-1.shop.localhost", "/").text(), "shop-pr 0");
    assert_eq!(c.get("main.shop.localhost", "/").text(), "shop-main 0");
}
