//! Printing an error with its causes, for the places that keep an error as text.

use std::error::Error;

/// `error: cause: cause of the cause…` — every message in the chain once, as `{e:#}` prints
/// an anyhow error.
pub fn chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cause_appears_once_in_order() {
        let err = crate::fs::FsError::io(
            "reading",
            "/x",
            std::io::Error::from(std::io::ErrorKind::NotFound),
        );
        assert_eq!(chain(&err), "reading /x: entity not found");
    }
}
