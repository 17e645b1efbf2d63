//! Cache keys and build plans of projects loaded from real git repositories.

mod common;

use std::collections::BTreeMap;

use common::TestRepo;
use kiln_builder::config::APP_ROOT;
use kiln_builder::plan::{self, AppPlan, BuildPlan, PlanError, StepAction, StepKind, SERVICE_JSON};
use kiln_builder::project::{LoadError, Project};
use kiln_builder::source::GitRepo;

/// Two apps (web, api) and a redis; web declares a global dependency and a hook.
const TWO_APPS: &str = r#"project = "shop"

[services.web]
base = "python"
source = "web"
start = "python3 server.py"
port = 8000
env = { GREETING = "hello" }
relationships = { cache = "cache:redis" }
mounts = { "/app/data" = { size = "256M" } }

[services.web.build]
flavor = "pip"
dependencies = { pip = ["gunicorn==23.0.0"] }
hook = "python3 make_assets.py"

[services.web.deploy]
hook = "python3 migrate.py"

[services.api]
base = "python"
source = "api"
start = "python3 api.py"
port = 8001

[services.cache]
image = "redis"
port = 6379
scheme = "redis"
"#;

fn bases() -> BTreeMap<String, String> {
    BTreeMap::from([("python".to_string(), format!("sha256:{}", "ab".repeat(32)))])
}

fn two_apps_repo() -> TestRepo {
    let repo = TestRepo::new();
    repo.write("kiln.toml", TWO_APPS);
    repo.write("web/server.py", "print('web v1')\n");
    repo.write(
        "web/make_assets.py",
        "open('generated.txt', 'w').write('x')\n",
    );
    repo.write("web/requirements.txt", "redis==5.0.1\n");
    repo.write("api/api.py", "print('api v1')\n");
    repo.write("README.md", "shop\n");
    repo.commit("first");
    repo
}

fn plan_at(repo: &TestRepo, rev: &str) -> BuildPlan {
    let git = GitRepo::open(repo.path()).unwrap_or_else(|e| panic!("open: {e}"));
    let project = Project::load_at(&git, rev).unwrap_or_else(|e| panic!("load {rev}: {e}"));
    plan::plan(&project, &bases()).unwrap_or_else(|e| panic!("plan {rev}: {e}"))
}

fn app<'p>(plan: &'p BuildPlan, name: &str) -> &'p AppPlan {
    plan.apps
        .iter()
        .find(|a| a.service == name)
        .unwrap_or_else(|| panic!("no app {name} in plan"))
}

fn step_key(app: &AppPlan, kind: StepKind) -> String {
    app.steps
        .iter()
        .find(|s| s.kind == kind)
        .map(|s| s.key.to_string())
        .unwrap_or_else(|| panic!("{}: no {} step", app.service, kind.as_str()))
}

/// Commits `kiln.toml` with `from` replaced by `to` and returns the new plan.
fn replan_with_config(repo: &TestRepo, from: &str, to: &str) -> BuildPlan {
    assert!(TWO_APPS.contains(from), "{from}");
    repo.write("kiln.toml", &TWO_APPS.replacen(from, to, 1));
    repo.commit(&format!("config: {to}"));
    plan_at(repo, "HEAD")
}

#[test]
fn a_commit_outside_an_apps_folder_keeps_its_key() {
    let repo = two_apps_repo();
    let first = plan_at(&repo, "HEAD");

    repo.write("api/api.py", "print('api v2')\n");
    repo.commit("api only");
    let api_changed = plan_at(&repo, "HEAD");
    assert_eq!(
        app(&first, "web").key,
        app(&api_changed, "web").key,
        "web rebuilt for an api change"
    );
    assert_ne!(
        app(&first, "api").key,
        app(&api_changed, "api").key,
        "api change not seen"
    );

    repo.write("README.md", "shop, documented\n");
    repo.commit("outside every source folder");
    let outside = plan_at(&repo, "HEAD");
    assert_eq!(app(&api_changed, "web").key, app(&outside, "web").key);
    assert_eq!(app(&api_changed, "api").key, app(&outside, "api").key);
    // The tag still follows the commit.
    assert_ne!(app(&api_changed, "web").tag, app(&outside, "web").tag);
}

#[test]
fn a_code_change_rebuilds_code_and_hook_but_not_dependencies_or_flavor() {
    let repo = two_apps_repo();
    let first = plan_at(&repo, "HEAD");
    repo.write("web/server.py", "print('web v2')\n");
    repo.commit("web code");
    let second = plan_at(&repo, "HEAD");
    let (a, b) = (app(&first, "web"), app(&second, "web"));
    assert_ne!(a.key, b.key);
    assert_eq!(
        step_key(a, StepKind::Dependencies),
        step_key(b, StepKind::Dependencies)
    );
    assert_eq!(step_key(a, StepKind::Flavor), step_key(b, StepKind::Flavor));
    assert_ne!(step_key(a, StepKind::Code), step_key(b, StepKind::Code));
    assert_ne!(step_key(a, StepKind::Hook), step_key(b, StepKind::Hook));

    repo.write("web/requirements.txt", "redis==5.0.2\n");
    repo.commit("web requirements");
    let third = plan_at(&repo, "HEAD");
    let c = app(&third, "web");
    assert_eq!(
        step_key(b, StepKind::Dependencies),
        step_key(c, StepKind::Dependencies)
    );
    assert_ne!(step_key(b, StepKind::Flavor), step_key(c, StepKind::Flavor));
}

#[test]
fn runtime_only_config_changes_keep_the_key() {
    let repo = two_apps_repo();
    let first = app(&plan_at(&repo, "HEAD"), "web").key;
    for (from, to) in [
        (
            "start = \"python3 server.py\"",
            "start = \"python3 -u server.py\"",
        ),
        ("port = 8000", "port = 8080"),
        (
            "relationships = { cache = \"cache:redis\" }",
            "relationships = {}",
        ),
        ("size = \"256M\"", "size = \"1G\""),
        (
            "hook = \"python3 migrate.py\"",
            "hook = \"python3 migrate.py --fast\"",
        ),
    ] {
        let plan = replan_with_config(&repo, from, to);
        assert_eq!(
            app(&plan, "web").key,
            first,
            "changing `{from}` to `{to}` changed the key"
        );
    }
}

#[test]
fn build_config_changes_change_the_key() {
    for (from, to, same_deps) in [
        (
            "hook = \"python3 make_assets.py\"",
            "hook = \"python3 make_assets.py --minify\"",
            true,
        ),
        ("GREETING = \"hello\"", "GREETING = \"bonjour\"", false),
        ("flavor = \"pip\"", "flavor = \"none\"", true),
        ("gunicorn==23.0.0", "gunicorn==22.0.0", false),
        (
            "base = \"python\"\nsource = \"web\"",
            "base = \"python\"\nsource = \"api\"",
            true,
        ),
    ] {
        let repo = two_apps_repo();
        let first = plan_at(&repo, "HEAD");
        let changed = replan_with_config(&repo, from, to);
        let (a, b) = (app(&first, "web"), app(&changed, "web"));
        assert_ne!(a.key, b.key, "changing `{from}` to `{to}` kept the key");
        let deps_equal = step_key(a, StepKind::Dependencies) == step_key(b, StepKind::Dependencies);
        assert_eq!(deps_equal, same_deps, "dependencies key after `{to}`");
        assert_eq!(
            app(&first, "api").key,
            app(&changed, "api").key,
            "api key moved for a web change"
        );
    }
}

#[test]
fn a_new_base_image_digest_changes_every_key() {
    let repo = two_apps_repo();
    let git = GitRepo::open(repo.path()).unwrap_or_else(|e| panic!("{e}"));
    let project = Project::load_at(&git, "HEAD").unwrap_or_else(|e| panic!("{e}"));
    let a = plan::plan(&project, &bases()).unwrap_or_else(|e| panic!("{e}"));
    let newer = BTreeMap::from([("python".to_string(), format!("sha256:{}", "cd".repeat(32)))]);
    let b = plan::plan(&project, &newer).unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(app(&a, "web").key, app(&b, "web").key);
    assert_ne!(
        step_key(app(&a, "web"), StepKind::Dependencies),
        step_key(app(&b, "web"), StepKind::Dependencies)
    );
    assert_eq!(
        step_key(app(&a, "web"), StepKind::Code),
        step_key(app(&b, "web"), StepKind::Code)
    );

    let err = plan::plan(&project, &BTreeMap::new())
        .err()
        .unwrap_or_else(|| panic!("planned without bases"));
    assert!(
        matches!(&err, PlanError::UnknownBase { service, base } if service == "api" && base == "python"),
        "{err}"
    );
}

#[test]
fn examples_shop_plans_code_hook_and_config_with_kiln_env() {
    let repo = TestRepo::new();
    repo.copy_from("examples/shop");
    let sha = repo.commit("shop");
    let plan = plan_at(&repo, "main");
    assert_eq!(plan.project, "shop");
    assert_eq!(plan.images.len(), 1);
    assert_eq!(
        (
            plan.images[0].service.as_str(),
            plan.images[0].image.as_str()
        ),
        ("cache", "redis")
    );
    let web = app(&plan, "web");
    assert_eq!(web.tag, format!("shop/web:{sha}"));
    let kinds: Vec<StepKind> = web.steps.iter().map(|s| s.kind).collect();
    // No global dependencies, and requirements.txt lists nothing: no step runs pip.
    assert_eq!(kinds, [StepKind::Code, StepKind::Hook, StepKind::Config]);
    match &web.steps[1].action {
        StepAction::Run(run) => {
            assert!(!run.network, "the build hook must have no network");
            assert_eq!(run.over, [StepKind::Code]);
            assert_eq!(run.workdir, APP_ROOT);
            assert_eq!(run.commands[0][..2], ["/bin/sh", "-c"]);
        }
        other => panic!("hook step is {other:?}"),
    }
    for (name, value) in [
        ("KILN_GIT_SHA", sha.as_str()),
        ("KILN_GIT_BRANCH", "main"),
        ("KILN_PROJECT", "shop"),
        ("KILN_BUILD_TYPE", "branch"),
        ("GREETING", "hello"),
    ] {
        assert_eq!(web.env.get(name).map(String::as_str), Some(value), "{name}");
    }
    assert_eq!(web.image.cmd, ["/bin/sh", "-c", "python3 server.py"]);
    assert_eq!(web.image.exposed_port, Some(8000));
    assert_eq!(web.image.labels.get("dev.kiln.commit"), Some(&sha));
    let StepAction::Files(files) = &web.steps[2].action else {
        panic!("config step writes no files");
    };
    assert_eq!(files[0].path, SERVICE_JSON);
    let json: serde_json::Value =
        serde_json::from_slice(&files[0].data).unwrap_or_else(|e| panic!("service.json: {e}"));
    assert_eq!(json["service"], "web");
    assert_eq!(json["key"], web.key.to_string());
    assert_eq!(json["source"]["tree"], web.tree.to_string());
    assert!(
        !String::from_utf8_lossy(&files[0].data).contains(&sha),
        "config layer must not depend on the commit"
    );

    // The code layer's files come straight from the tree.
    let git = GitRepo::open(repo.path()).unwrap_or_else(|e| panic!("{e}"));
    let StepAction::Tree { tree, dest } = &web.steps[0].action else {
        panic!("code step is not a tree");
    };
    assert_eq!(dest, APP_ROOT);
    let paths: Vec<String> = git
        .entries(*tree)
        .unwrap_or_else(|e| panic!("{e}"))
        .map(|e| {
            e.map(|e| e.path.display().to_string())
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    for want in [
        "server.py",
        "make_assets.py",
        "migrate.py",
        "assets/banner.txt.in",
        "VERSION",
    ] {
        assert!(
            paths.iter().any(|p| p == want),
            "{want} missing from {paths:?}"
        );
    }
}

#[test]
fn a_pull_request_build_plans_the_merge_with_pr_variables() {
    let repo = two_apps_repo();
    repo.git(&["checkout", "-q", "-b", "feature"]);
    repo.write("web/server.py", "print('web from the PR')\n");
    let head = repo.commit("pr change");
    repo.git(&["checkout", "-q", "main"]);
    repo.write("api/api.py", "print('api on main')\n");
    let base = repo.commit("main moves on");
    let git = GitRepo::open(repo.path()).unwrap_or_else(|e| panic!("{e}"));
    let project = Project::load_pull_request(&git, "main", "feature", Some("Better web"))
        .unwrap_or_else(|e| panic!("{e}"));
    let merged = project.revision.tree;
    let web_file = git
        .read_file(merged, "web/server.py")
        .unwrap_or_else(|e| panic!("{e}"));
    let api_file = git
        .read_file(merged, "api/api.py")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        web_file.as_deref(),
        Some(&b"print('web from the PR')\n"[..])
    );
    assert_eq!(api_file.as_deref(), Some(&b"print('api on main')\n"[..]));
    let plan = plan::plan(&project, &bases()).unwrap_or_else(|e| panic!("{e}"));
    let web = app(&plan, "web");
    for (name, value) in [
        ("KILN_BUILD_TYPE", "pullrequest"),
        ("KILN_PR_BASE_SHA", base.as_str()),
        ("KILN_PR_HEAD_SHA", head.as_str()),
        ("KILN_PR_TITLE", "Better web"),
        ("KILN_GIT_SHA", head.as_str()),
        ("KILN_GIT_BRANCH", "feature"),
    ] {
        assert_eq!(web.env.get(name).map(String::as_str), Some(value), "{name}");
    }
}

#[test]
fn loading_names_the_service_folder_commit_and_line_at_fault() {
    let repo = two_apps_repo();
    repo.git(&["rm", "-q", "-r", "api"]);
    let sha = repo.commit("api folder gone");
    let git = GitRepo::open(repo.path()).unwrap_or_else(|e| panic!("{e}"));
    let err = Project::load_at(&git, "HEAD")
        .err()
        .unwrap_or_else(|| panic!("loaded without api/"));
    assert!(
        matches!(&err, LoadError::MissingSource { service, folder, commit } if service == "api" && folder == "api" && *commit == sha),
        "{err}"
    );

    repo.write(
        "kiln.toml",
        &TWO_APPS.replace("port = 8001", "port = 8001\ncolour = \"blue\""),
    );
    repo.write("api/api.py", "print('back')\n");
    repo.commit("bad key");
    let err = Project::load_at(&git, "HEAD")
        .err()
        .unwrap_or_else(|| panic!("loaded a bad kiln.toml"));
    let shown = err.to_string();
    assert!(
        shown.contains("kiln.toml:25:1: `services.api.colour`"),
        "{shown}"
    );

    repo.git(&["rm", "-q", "kiln.toml"]);
    repo.commit("no config");
    let err = Project::load_at(&git, "HEAD")
        .err()
        .unwrap_or_else(|| panic!("loaded without kiln.toml"));
    assert!(matches!(err, LoadError::NoConfig { .. }), "{err}");
}

#[test]
fn a_source_that_is_a_file_or_an_npm_app_without_lock_file_is_named() {
    let repo = two_apps_repo();
    repo.git(&["rm", "-q", "-r", "api"]);
    repo.write("api", "not a folder\n");
    repo.commit("api is a file");
    let git = GitRepo::open(repo.path()).unwrap_or_else(|e| panic!("{e}"));
    let err = Project::load_at(&git, "HEAD")
        .err()
        .unwrap_or_else(|| panic!("loaded a file as a source folder"));
    assert!(
        matches!(&err, LoadError::SourceFolder { service, .. } if service == "api"),
        "{err}"
    );

    repo.write(
        "kiln.toml",
        &TWO_APPS
            .replace("flavor = \"pip\"", "flavor = \"npm\"")
            .replace("source = \"api\"", "source = \"web\""),
    );
    repo.commit("npm without lock file");
    let err = Project::load_at(&git, "HEAD")
        .err()
        .unwrap_or_else(|| panic!("loaded npm without package-lock.json"));
    assert_eq!(
        err.to_string(),
        "service `web`: flavor `npm` needs `package-lock.json` in source folder `web`"
    );
}
