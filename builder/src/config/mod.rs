//! kiln.toml: the schema (serde, strict), its validation, and errors that name file, line and key.

mod error;
mod locate;
mod model;
mod schema;
mod size;
mod validate;

pub use error::{ConfigError, ConfigErrors, Problem};
pub use locate::{position_of, Position};
pub use model::{
    is_registry_reference, App, Build, Deploy, Endpoint, Flavor, ImageService, Mount,
    PackageManager, ProjectConfig, Registry, Relationship, Route, Security, Service, ServiceKind,
    APP_ROOT, DEFAULT_HEALTH_TIMEOUT_SECS, DEFAULT_HOOK_TIMEOUT_SECS, DEFAULT_STOP_GRACE_SECS,
};
pub use size::parse_size;

use locate::Locator;
use schema::RawProject;

/// The file name of a project's configuration, at the root of its repository.
pub const CONFIG_FILE: &str = "kiln.toml";

/// Parses and validates the text of a kiln.toml; `file` is how errors name it.
pub fn parse(file: &str, text: &str) -> Result<ProjectConfig, ConfigErrors> {
    let locator = Locator::new(text);
    let raw: RawProject = toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        let key = dotted(&locator.path_at(offset));
        let problem = if toml::de::DeTable::parse(text).is_err() {
            Problem::Syntax(e.message().trim().to_string())
        } else {
            Problem::Schema(e.message().trim().to_string())
        };
        ConfigErrors(vec![located(file, text, offset, key, problem)])
    })?;
    validate::validate(raw).map_err(|found| {
        let mut errors: Vec<ConfigError> = found
            .into_iter()
            .map(|(path, problem)| {
                let parts: Vec<&str> = path.iter().map(String::as_str).collect();
                let offset = locator.key_span(&parts).start;
                located(file, text, offset, dotted(&path), problem)
            })
            .collect();
        errors.sort_by_key(|e| (e.line, e.column));
        ConfigErrors(errors)
    })
}

fn located(file: &str, text: &str, offset: usize, key: String, problem: Problem) -> ConfigError {
    let Position { line, column } = position_of(text, offset);
    ConfigError {
        file: file.to_string(),
        line,
        column,
        key,
        problem,
    }
}

/// A key path as TOML writes it: `services.web.mounts."/app/data"`.
fn dotted(path: &[String]) -> String {
    let parts: Vec<String> = path
        .iter()
        .map(|part| {
            let bare = !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if bare {
                part.clone()
            } else {
                format!("{part:?}")
            }
        })
        .collect();
    parts.join(".")
}
