//! kiln.toml as written: the serde shape, strict (unknown keys are errors), before validation.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::model::{Flavor, PackageManager};

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProject {
    pub project: String,
    #[serde(default)]
    pub services: BTreeMap<String, RawService>,
    pub registry: Option<RawRegistry>,
    #[serde(default)]
    pub routes: BTreeMap<String, RawRoute>,
}

/// `[registry]`: where `kiln build` pushes each service's image after a build.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRegistry {
    pub url: String,
    pub ca: Option<String>,
    #[serde(default)]
    pub plain_http: bool,
}

/// One `[routes."<url pattern>"]` table: `upstream = "<app>"` or `redirect = "<url>"`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    pub upstream: Option<String>,
    pub redirect: Option<String>,
    pub code: Option<u16>,
    pub primary: Option<bool>,
}

/// One `[services.<name>]` table: an app (base + source) or a service (image); validation decides.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawService {
    pub base: Option<String>,
    pub source: Option<String>,
    pub start: Option<String>,
    pub image: Option<String>,
    pub port: Option<u16>,
    pub scheme: Option<String>,
    pub endpoints: Option<BTreeMap<String, RawEndpoint>>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub relationships: BTreeMap<String, String>,
    #[serde(default)]
    pub mounts: BTreeMap<String, RawMount>,
    pub build: Option<RawBuild>,
    pub deploy: Option<RawDeploy>,
    pub security: Option<RawSecurity>,
}

/// `[services.<name>.security]`: opting out of kiln's container defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSecurity {
    pub host_root: Option<bool>,
}

/// `endpoints.<name> = { port, scheme }` of a service.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEndpoint {
    pub port: u16,
    pub scheme: Option<String>,
}

/// `mounts."<path>" = { size }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMount {
    pub size: RawSize,
}

/// A size as written: `"256M"` or a number of bytes.
#[derive(Debug)]
pub(crate) enum RawSize {
    Bytes(u64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl serde::de::Visitor<'_> for SizeVisitor {
            type Value = RawSize;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a size such as \"256M\" or a number of bytes")
            }
            fn visit_u64<E: serde::de::Error>(self, bytes: u64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(bytes))
            }
            fn visit_i64<E: serde::de::Error>(self, bytes: i64) -> Result<RawSize, E> {
                u64::try_from(bytes)
                    .map(RawSize::Bytes)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(bytes), &self))
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<RawSize, E> {
                Ok(RawSize::Text(text.to_string()))
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

/// `[services.<name>.build]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBuild {
    pub flavor: Option<Flavor>,
    #[serde(default)]
    pub dependencies: BTreeMap<PackageManager, Vec<String>>,
    pub hook: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub timeout: Option<u64>,
}

/// `[services.<name>.deploy]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDeploy {
    pub hook: Option<String>,
    #[serde(default)]
    pub post: Vec<String>,
    pub timeout: Option<u64>,
    pub health: Option<String>,
    pub health_timeout: Option<u64>,
    pub stop_grace: Option<u64>,
}
