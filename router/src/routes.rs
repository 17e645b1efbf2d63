//! Routes: which environment (and which of its apps, or which redirect) answers a request,
//! by host and path prefix. Pure functions over strings, so they can be fuzzed.
//!
//! A route is declared as a URL pattern in which `{default}` stands for the environment's
//! own host, `{env}.{project}.{domain}` (Platform.sh's routes.yaml convention):
//! `https://{default}/` → the app, `http://{default}/api` → a second app,
//! `https://www.{default}/` → a redirect. The ingress owns the host header check: anything
//! that is not a plain DNS name (or IP literal) with an optional port is refused.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::error::RouterError;

/// The scheme a route is declared for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// Plain HTTP (also served over TLS when a certificate covers the host).
    Http,
    /// TLS only: a plain request is redirected to `https://`.
    Https,
}

/// What answers a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Target {
    /// An app of the environment (`None`: the environment's main app).
    Upstream {
        /// The app's service name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        upstream: Option<String>,
    },
    /// A redirect to another URL (`{default}` expanded).
    Redirect {
        /// Where to.
        to: String,
        /// The status (301, 302, 307 or 308).
        #[serde(default = "default_redirect_code")]
        code: u16,
    },
}

/// The status of a redirect that does not say.
fn default_redirect_code() -> u16 {
    301
}

/// A route as a project declares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteSpec {
    /// The URL pattern (`{default}` stands for the environment's host).
    pub pattern: String,
    /// What answers it.
    #[serde(flatten)]
    pub target: Target,
    /// The environment's primary URL (`KILN_ROUTE`).
    #[serde(default)]
    pub primary: bool,
}

impl RouteSpec {
    /// The route used when a project declares none: `http://{default}/` → the main app.
    pub fn default_route() -> Self {
        Self {
            pattern: "http://{default}/".into(),
            target: Target::Upstream { upstream: None },
            primary: true,
        }
    }
}

/// A route with `{default}` expanded: what the ingress matches requests against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The environment it belongs to.
    pub env: String,
    /// The full URL (`https://main.shop.localhost/`).
    pub url: String,
    /// The pattern it came from.
    pub original_url: String,
    /// Its scheme.
    pub scheme: Scheme,
    /// The host, lower case, without port.
    pub host: String,
    /// The path prefix, starting with '/'.
    pub path: String,
    /// What answers it.
    pub target: Target,
    /// Whether it is the environment's primary route.
    pub primary: bool,
}

/// The host name of an environment: `{env}.{project}.{domain}`.
pub fn default_host(env: &str, project: &str, domain: &str) -> String {
    format!("{env}.{project}.{domain}").to_ascii_lowercase()
}

/// Expands the route specs of `env` (none: the default route); the first primary one (or
/// the first route) is primary.
pub fn expand(env: &str, default: &str, specs: &[RouteSpec]) -> Result<Vec<Route>, RouterError> {
    let fallback = [RouteSpec::default_route()];
    let specs = if specs.is_empty() {
        &fallback[..]
    } else {
        specs
    };
    let primaries = specs.iter().filter(|s| s.primary).count();
    if primaries > 1 {
        return Err(RouterError::BadRoute {
            route: specs
                .iter()
                .filter(|s| s.primary)
                .map(|s| s.pattern.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            why: "more than one route is marked primary".into(),
        });
    }
    let mut out = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let bad = |why: String| RouterError::BadRoute {
            route: spec.pattern.clone(),
            why,
        };
        let url = spec.pattern.replace("{default}", default);
        let (scheme, rest) = if let Some(r) = url.strip_prefix("https://") {
            (Scheme::Https, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (Scheme::Http, r)
        } else {
            return Err(bad("must start with http:// or https://".into()));
        };
        let (host, path) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        if host.contains(':') && !host.starts_with('[') {
            return Err(bad("a route's host cannot carry a port".into()));
        }
        let host = normalize_host(host).map_err(|why| bad(why.into()))?;
        if path.contains(['?', '#', '{', '}']) || path.contains("/../") || path.ends_with("/..") {
            return Err(bad(format!("path {path:?} is not a plain prefix")));
        }
        let target = match &spec.target {
            Target::Redirect { to, code } => {
                if ![301, 302, 307, 308].contains(code) {
                    return Err(bad(format!(
                        "redirect code {code} is not 301, 302, 307 or 308"
                    )));
                }
                Target::Redirect {
                    to: to.replace("{default}", default),
                    code: *code,
                }
            }
            t => t.clone(),
        };
        out.push(Route {
            env: env.to_string(),
            url: format!(
                "{}://{host}{path}",
                if scheme == Scheme::Https {
                    "https"
                } else {
                    "http"
                }
            ),
            original_url: spec.pattern.clone(),
            scheme,
            host,
            path: path.to_string(),
            target,
            primary: spec.primary || (primaries == 0 && i == 0),
        });
    }
    Ok(out)
}

/// Lower-cases a host and strips a trailing dot; refuses anything but letters, digits, '-',
/// '.', '_' (and a bracketed IPv6 literal).
pub fn normalize_host(host: &str) -> Result<String, &'static str> {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return Err("empty host");
    }
    if host.len() > 253 {
        return Err("host longer than 253 characters");
    }
    if let Some(v6) = host.strip_prefix('[') {
        let inner = v6.strip_suffix(']').ok_or("unclosed '[' in host")?;
        return inner
            .parse::<std::net::Ipv6Addr>()
            .map(|ip| format!("[{ip}]"))
            .map_err(|_| "bad IPv6 literal in host");
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    {
        return Err("host holds a character that is not a letter, digit, '-', '.' or '_'");
    }
    if host.split('.').any(str::is_empty) {
        return Err("empty label in host");
    }
    Ok(host.to_ascii_lowercase())
}

/// Splits a Host header (or `:authority`) into the normalized host; the port is dropped.
pub fn host_of(header: &str) -> Result<String, &'static str> {
    let header = header.trim_matches([' ', '\t']);
    if header.starts_with('[') {
        let end = header.find(']').ok_or("unclosed '[' in host")?;
        let port = &header[end + 1..];
        check_port(port)?;
        return normalize_host(&header[..=end]);
    }
    match header.rsplit_once(':') {
        Some((host, port)) => {
            check_port(&format!(":{port}"))?;
            normalize_host(host)
        }
        None => normalize_host(header),
    }
}

/// Accepts "" or ":DIGITS" (at most 5 digits).
fn check_port(port: &str) -> Result<(), &'static str> {
    match port.strip_prefix(':') {
        None if port.is_empty() => Ok(()),
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => Ok(()),
        _ => Err("bad port in host"),
    }
}

/// Whether `path` is under the route prefix `prefix` (whole segments).
pub fn path_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// Every environment's routes, by host; the longest matching path prefix wins.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    by_host: HashMap<String, Vec<Route>>,
}

impl RouteTable {
    /// Builds the table from each environment's routes; a host and path two environments
    /// both claim is an error naming both.
    pub fn build<'a>(envs: impl IntoIterator<Item = &'a [Route]>) -> Result<Self, RouterError> {
        let mut by_host: HashMap<String, Vec<Route>> = HashMap::new();
        for routes in envs {
            for r in routes {
                let list = by_host.entry(r.host.clone()).or_default();
                if let Some(other) = list.iter().find(|o| o.path == r.path) {
                    return Err(RouterError::BadRoute {
                        route: r.original_url.clone(),
                        why: format!(
                            "{}{} is already routed to environment {:?}",
                            r.host, r.path, other.env
                        ),
                    });
                }
                list.push(r.clone());
            }
        }
        for list in by_host.values_mut() {
            list.sort_by_key(|r| std::cmp::Reverse(r.path.len()));
        }
        Ok(Self { by_host })
    }

    /// The route for a request to `host` (normalized) and `path`.
    pub fn lookup(&self, host: &str, path: &str) -> Option<&Route> {
        self.by_host
            .get(host)?
            .iter()
            .find(|r| path_matches(&r.path, path))
    }

    /// Every host with the environments it serves.
    pub fn hosts(&self) -> BTreeMap<String, Vec<String>> {
        self.by_host
            .iter()
            .map(|(h, rs)| {
                let mut envs: Vec<String> = rs.iter().map(|r| r.env.clone()).collect();
                envs.sort();
                envs.dedup();
                (h.clone(), envs)
            })
            .collect()
    }
}

/// `KILN_ROUTES`: base64 of the JSON object `{url: {type, upstream | to, primary,
/// original_url}}` (Platform.sh's `PLATFORM_ROUTES` shape).
pub fn routes_env(routes: &[Route]) -> String {
    use base64::Engine;
    let map: serde_json::Map<String, serde_json::Value> = routes
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(&r.target).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("primary".into(), r.primary.into());
                o.insert("original_url".into(), r.original_url.clone().into());
            }
            (r.url.clone(), v)
        })
        .collect();
    base64::engine::general_purpose::STANDARD.encode(serde_json::Value::Object(map).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(pattern: &str, target: Target) -> RouteSpec {
        RouteSpec {
            pattern: pattern.into(),
            target,
            primary: false,
        }
    }

    #[test]
    fn routes_expand_and_the_longest_prefix_wins() {
        let host = default_host("main", "shop", "localhost");
        let routes = expand(
            "main",
            &host,
            &[
                spec("https://{default}/", Target::Upstream { upstream: None }),
                spec(
                    "http://{default}/api",
                    Target::Upstream {
                        upstream: Some("api".into()),
                    },
                ),
                spec(
                    "http://www.{default}/",
                    Target::Redirect {
                        to: "https://{default}/".into(),
                        code: 301,
                    },
                ),
            ],
        )
        .expect("expand");
        assert!(routes[0].primary && !routes[1].primary);
        assert_eq!(routes[0].url, "https://main.shop.localhost/");
        let table = RouteTable::build([routes.as_slice()]).expect("table");
        let at = |h: &str, p: &str| table.lookup(h, p).map(|r| r.path.as_str());
        assert_eq!(at("main.shop.localhost", "/api/x"), Some("/api"));
        assert_eq!(at("main.shop.localhost", "/api"), Some("/api"));
        assert_eq!(at("main.shop.localhost", "/apix"), Some("/"));
        assert_eq!(at("other.shop.localhost", "/"), None);
        assert!(matches!(
            &table.lookup("www.main.shop.localhost", "/").expect("www").target,
            Target::Redirect { to, .. } if to == "https://main.shop.localhost/"
        ));
        let again = expand("pr", &host, &[RouteSpec::default_route()]).expect("expand");
        let err = RouteTable::build([routes.as_slice(), again.as_slice()])
            .expect_err("two envs on one host")
            .to_string();
        assert!(
            err.contains("already routed to environment \"main\""),
            "{err}"
        );
    }

    #[test]
    fn hosts_are_checked_and_normalized() {
        assert_eq!(
            host_of("Main.Shop.LOCALHOST:8080").as_deref(),
            Ok("main.shop.localhost")
        );
        assert_eq!(host_of("a.b.").as_deref(), Ok("a.b"));
        assert_eq!(host_of("[::1]:80").as_deref(), Ok("[::1]"));
        for bad in [
            "", "a b", "a\rb", "a..b", "a:80:90", "a:", "a:123456", "[::1", "a/b", "a\0",
        ] {
            assert!(host_of(bad).is_err(), "{bad:?} accepted");
        }
        let bad = |p: &str, t: Target| {
            expand("e", "e.p.d", &[spec(p, t)])
                .expect_err(p)
                .to_string()
        };
        let up = || Target::Upstream { upstream: None };
        assert!(bad("ftp://{default}/", up()).contains("http://"));
        assert!(bad("http://{default}:81/", up()).contains("port"));
        assert!(bad("http://{default}/a?b", up()).contains("plain prefix"));
        let redirect = Target::Redirect {
            to: "/".into(),
            code: 200,
        };
        assert!(bad("http://{default}/", redirect).contains("301"));
    }
}
