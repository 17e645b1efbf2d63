//! Errors of kiln.toml: each names the file, line, column and key, and says what is wrong.

use std::fmt;

/// What is wrong with a key of kiln.toml.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// A `[routes]` entry that cannot be served.
    #[error("{0}")]
    BadRoute(String),
    /// The text is not TOML.
    #[error("TOML syntax: {0}")]
    Syntax(String),
    /// TOML, but not the shape of kiln.toml (unknown key, wrong type, missing key).
    #[error("{0}")]
    Schema(String),
    /// A project, service, relationship or endpoint name that is not a DNS label.
    #[error("`{0}` is not a valid name: use 1 to 63 lowercase letters, digits and '-', starting with a letter and not ending with '-'")]
    BadName(String),
    /// A service that sets both app keys and `image`.
    #[error("sets both `image` (a service run as it is) and `{app_key}` (an app built from source); use one or the other")]
    AppAndImage {
        /// The app key that was found.
        app_key: &'static str,
    },
    /// A service that is neither an app nor an image service.
    #[error("is neither an app (`base` + `source` + `start`) nor a service (`image`)")]
    NeitherAppNorImage,
    /// A key an app must have.
    #[error("is required for an app")]
    MissingForApp,
    /// A key that only image services may have, set on an app.
    #[error("is only for services with `image`; an app has one endpoint, `port` + `scheme`")]
    NotForApp,
    /// A source folder that is not a clean relative path.
    #[error("`{0}` is not a folder of the repository: use a relative path without `..`, `.` or empty parts (or `.` for the root)")]
    BadSource(String),
    /// A registry reference (`base` or `[registry] url`) that kiln cannot use.
    #[error("`{0}` is not a usable registry reference: {1}")]
    BadRegistryReference(String, &'static str),
    /// A relationship value not of the form `service` or `service:endpoint`.
    #[error("`{0}` is not of the form \"service\" or \"service:endpoint\"")]
    BadRelationship(String),
    /// A relationship to a service that is not declared.
    #[error("points at service `{0}`, which is not declared in [services]")]
    UnknownService(String),
    /// A relationship from a service to itself.
    #[error("points at its own service `{0}`")]
    SelfRelationship(String),
    /// A relationship to an endpoint the target does not have.
    #[error("service `{service}` has no endpoint `{endpoint}` (it has: {available})")]
    UnknownEndpoint {
        /// Target service.
        service: String,
        /// Endpoint asked for.
        endpoint: String,
        /// Its endpoints, comma-separated (or `none`).
        available: String,
    },
    /// A relationship to a service that has no endpoint (an app without `port`).
    #[error("service `{0}` has no endpoint to connect to (an app needs `port`)")]
    NoEndpoints(String),
    /// A relationship without endpoint to a service with several.
    #[error("service `{service}` has {count} endpoints: name one, as \"{service}:<endpoint>\"")]
    AmbiguousEndpoint {
        /// Target service.
        service: String,
        /// How many endpoints it has.
        count: usize,
    },
    /// A mount path that is not absolute and normalised, or is `/` or the code folder.
    #[error(
        "`{0}` is not a mount path: use an absolute, normalised path other than `/` and `/app`"
    )]
    BadMountPath(String),
    /// A mount inside another mount.
    #[error("`{inner}` is inside mount `{outer}`")]
    NestedMount {
        /// The nested mount.
        inner: String,
        /// The mount that holds it.
        outer: String,
    },
    /// A size that does not parse or is zero.
    #[error("`{0}` is not a size: use bytes or a number with K, M, G or T (powers of 1024), e.g. \"256M\"")]
    BadSize(String),
    /// Port 0.
    #[error("port must be between 1 and 65535")]
    ZeroPort,
    /// A scheme that is not lowercase letters, digits, `+`, `-`, `.`.
    #[error("`{0}` is not a scheme: use lowercase letters, digits, '+', '-' or '.', starting with a letter")]
    BadScheme(String),
    /// An environment variable name that is not `[A-Za-z_][A-Za-z0-9_]*`.
    #[error("`{0}` is not an environment variable name")]
    BadEnvName(String),
    /// An environment variable name kiln sets itself.
    #[error("`{0}`: names starting with KILN_ are set by kiln")]
    ReservedEnv(String),
    /// A command or value that must not be empty.
    #[error("must not be empty")]
    Empty,
    /// An image service with no way to reach it.
    #[error("a service with `image` needs `port` (and `scheme`) or `endpoints`")]
    NoEndpoint,
    /// An image service with both a default endpoint and an endpoints table.
    #[error("set either `port` + `scheme` or `endpoints`, not both")]
    PortAndEndpoints,
    /// A time limit of zero.
    #[error("must be at least 1 second")]
    ZeroTimeout,
    /// A time limit beyond any sensible wait.
    #[error("must be at most {max} seconds (a week)")]
    TimeoutTooLong {
        /// The largest accepted value.
        max: u64,
    },
    /// A project without services.
    #[error("declares no services")]
    NoServices,
}

/// One thing wrong in a kiln.toml, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, as the user knows it (`kiln.toml`, or `<commit>:kiln.toml`).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// Dotted key path (`services.web.port`); empty for syntax errors.
    pub key: String,
    /// What is wrong.
    pub problem: Problem,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.key.is_empty() {
            write!(f, "`{}`: ", self.key)?;
        }
        write!(f, "{}", self.problem)
    }
}

impl std::error::Error for ConfigError {}

/// Everything wrong with a kiln.toml, in the order of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The first error in file order.
    pub fn first(&self) -> Option<&ConfigError> {
        self.0.first()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
