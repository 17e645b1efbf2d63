//! Maps between places in a kiln.toml (byte offsets, line:column) and key paths (`services.web.port`).

use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// A 1-based line and column (in characters) in a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Line number, starting at 1.
    pub line: usize,
    /// Column number in characters, starting at 1.
    pub column: usize,
}

/// Turns a byte offset into a line and column (offsets past the end land on the last position).
pub fn position_of(text: &str, offset: usize) -> Position {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    Position { line, column }
}

/// A parsed document that keeps the span of every key and value, to name where a key is.
pub struct Locator<'i> {
    root: Option<Spanned<DeTable<'i>>>,
}

impl<'i> Locator<'i> {
    /// Parses `text` for locating; a document that does not parse locates nothing.
    pub fn new(text: &'i str) -> Self {
        Locator {
            root: DeTable::parse(text).ok(),
        }
    }

    /// The span of the deepest key along `path` that exists (the key itself, for a precise line).
    ///
    /// A key that is missing is located at its nearest existing parent (e.g. a missing `start` is
    /// reported at `[services.web]`); an empty path or an unparsable document gives `0..0`.
    pub fn key_span(&self, path: &[&str]) -> Range<usize> {
        let Some(root) = &self.root else {
            return 0..0;
        };
        let mut table = root.get_ref();
        let mut found = 0..0;
        for (depth, segment) in path.iter().enumerate() {
            let Some((key, value)) = table.iter().find(|(k, _)| k.get_ref() == segment) else {
                break;
            };
            found = key.span();
            match value.get_ref() {
                DeValue::Table(inner) => table = inner,
                _ => {
                    if depth + 1 < path.len() {
                        break;
                    }
                }
            }
        }
        found
    }

    /// The key path of the deepest key or value whose span holds `offset` (for serde's errors).
    ///
    /// Tables opened by a `[header]` span only their header, so every key is looked at, not
    /// only those under a parent that holds the offset.
    pub fn path_at(&self, offset: usize) -> Vec<String> {
        let mut best: Option<(Vec<String>, usize)> = None;
        if let Some(root) = &self.root {
            let mut path = Vec::new();
            visit(root.get_ref(), &mut path, &mut |path, key, value| {
                let width = [key, value]
                    .into_iter()
                    .filter(|span| span.contains(&offset))
                    .map(|span| span.len())
                    .min();
                let Some(width) = width else { return };
                let better = best.as_ref().is_none_or(|(p, w)| {
                    path.len() > p.len() || (path.len() == p.len() && width < *w)
                });
                if better {
                    best = Some((path.to_vec(), width));
                }
            });
        }
        best.map(|(path, _)| path).unwrap_or_default()
    }
}

/// What [`visit`] calls for each key: its path, the key's span and the value's span.
type KeyVisitor<'f> = dyn FnMut(&[String], Range<usize>, Range<usize>) + 'f;

/// Calls `f(path, key span, value span)` for every key of `table`, depth first.
fn visit(table: &DeTable<'_>, path: &mut Vec<String>, f: &mut KeyVisitor<'_>) {
    for (key, value) in table.iter() {
        path.push(key.get_ref().to_string());
        f(path, key.span(), value.span());
        if let DeValue::Table(inner) = value.get_ref() {
            visit(inner, path, f);
        }
        path.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "project = \"p\"\n\n[services.web]\nbase = \"python\"\nenv = { A = \"1\" }\n";

    #[test]
    fn offsets_become_lines_and_columns() {
        assert_eq!(position_of(DOC, 0), Position { line: 1, column: 1 });
        let at = DOC.find("base").unwrap_or(0);
        assert_eq!(position_of(DOC, at), Position { line: 4, column: 1 });
        let a = DOC.find("A =").unwrap_or(0);
        assert_eq!(position_of(DOC, a), Position { line: 5, column: 9 });
    }

    #[test]
    fn keys_are_found_and_missing_keys_fall_back_to_their_table() {
        let locator = Locator::new(DOC);
        let base = locator.key_span(&["services", "web", "base"]);
        assert_eq!(position_of(DOC, base.start).line, 4);
        let inline = locator.key_span(&["services", "web", "env", "A"]);
        assert_eq!(position_of(DOC, inline.start).line, 5);
        let missing = locator.key_span(&["services", "web", "start"]);
        assert_eq!(position_of(DOC, missing.start).line, 3);
    }

    #[test]
    fn an_offset_names_its_key_path() {
        let locator = Locator::new(DOC);
        let at = DOC.find("\"1\"").unwrap_or(0);
        assert_eq!(locator.path_at(at), ["services", "web", "env", "A"]);
    }
}
