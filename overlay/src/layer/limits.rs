//! Resource bounds for applying a layer: a hostile layer must not be able to fill the disk, the
//! memory or the CPU of the host. Every bound is checked while the tar streams, before anything
//! it would cost is written.

use std::cell::{Cell, RefCell};
use std::io::{self, Read};

use crate::error::{Error, Result};

/// Bounds on what one layer may expand to. `Default` gives generous limits no real image reaches;
/// [`Limits::from_env`] lets an operator change them (`KILN_LAYER_MAX_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of the uncompressed tar stream and, separately, the sum of the apparent sizes of its
    /// files (also the bound on gzip/zstd bombs: decompression stops here).
    pub max_expanded_bytes: u64,
    /// Apparent size of any one file.
    pub max_file_bytes: u64,
    /// Tar headers in one layer (every entry counts: files, directories, links, whiteouts).
    pub max_entries: u64,
    /// Length in bytes of an entry's path or link target.
    pub max_path_bytes: u64,
    /// Bytes of PAX records and GNU long names/link names in front of one entry.
    pub max_header_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_expanded_bytes: 16 << 30,
            max_file_bytes: 8 << 30,
            max_entries: 500_000,
            max_path_bytes: 4096,
            max_header_bytes: 1 << 20,
        }
    }
}

/// One of the bounds in [`Limits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// [`Limits::max_expanded_bytes`].
    ExpandedBytes,
    /// [`Limits::max_file_bytes`].
    FileBytes,
    /// [`Limits::max_entries`].
    Entries,
    /// [`Limits::max_path_bytes`].
    PathBytes,
    /// [`Limits::max_header_bytes`].
    HeaderBytes,
}

impl Limit {
    /// Every limit, in the order of [`Limits`]' fields.
    pub const ALL: [Limit; 5] = [
        Limit::ExpandedBytes,
        Limit::FileBytes,
        Limit::Entries,
        Limit::PathBytes,
        Limit::HeaderBytes,
    ];

    /// The field's name (`max_entries`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Limit::ExpandedBytes => "max_expanded_bytes",
            Limit::FileBytes => "max_file_bytes",
            Limit::Entries => "max_entries",
            Limit::PathBytes => "max_path_bytes",
            Limit::HeaderBytes => "max_header_bytes",
        }
    }

    /// The environment variable [`Limits::from_env`] reads it from.
    pub fn env_var(self) -> &'static str {
        match self {
            Limit::ExpandedBytes => "KILN_LAYER_MAX_EXPANDED_BYTES",
            Limit::FileBytes => "KILN_LAYER_MAX_FILE_BYTES",
            Limit::Entries => "KILN_LAYER_MAX_ENTRIES",
            Limit::PathBytes => "KILN_LAYER_MAX_PATH_BYTES",
            Limit::HeaderBytes => "KILN_LAYER_MAX_HEADER_BYTES",
        }
    }

    fn field(self, limits: &mut Limits) -> &mut u64 {
        match self {
            Limit::ExpandedBytes => &mut limits.max_expanded_bytes,
            Limit::FileBytes => &mut limits.max_file_bytes,
            Limit::Entries => &mut limits.max_entries,
            Limit::PathBytes => &mut limits.max_path_bytes,
            Limit::HeaderBytes => &mut limits.max_header_bytes,
        }
    }

    /// This limit's value in `limits`.
    pub fn get(self, limits: &Limits) -> u64 {
        let mut copy = *limits;
        *self.field(&mut copy)
    }

    /// Errs with [`LimitExceeded`] when `value` is over this limit in `limits`.
    pub(crate) fn check(
        self,
        limits: &Limits,
        entry: &str,
        value: u64,
    ) -> Result<(), LimitExceeded> {
        let max = self.get(limits);
        if value > max {
            return Err(LimitExceeded {
                limit: self,
                entry: entry.to_string(),
                value,
                max,
            });
        }
        Ok(())
    }
}

/// A layer went over one of its [`Limits`]; names the limit, the entry and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "layer entry {entry:?}: {value} is over the limit {} = {max} (raise it with {})",
    limit.name(),
    limit.env_var()
)]
pub struct LimitExceeded {
    /// Which limit.
    pub limit: Limit,
    /// The entry being read when it was reached (or where in the stream).
    pub entry: String,
    /// The value that went over (bytes, entries or path length).
    pub value: u64,
    /// The limit's value.
    pub max: u64,
}

impl LimitExceeded {
    /// The limit error carried by an `io::Error` (as the metering readers return it), if any.
    pub(crate) fn from_io(e: &io::Error) -> Option<&LimitExceeded> {
        e.get_ref()?.downcast_ref::<LimitExceeded>()
    }
}

impl From<LimitExceeded> for io::Error {
    fn from(e: LimitExceeded) -> Self {
        io::Error::other(e)
    }
}

impl Limits {
    /// The defaults, with each `KILN_LAYER_MAX_*` variable that is set replacing its limit.
    /// Values are byte or entry counts, with an optional binary suffix (`k`, `m`, `g`, `t`).
    pub fn from_env() -> Result<Self> {
        let mut limits = Limits::default();
        for limit in Limit::ALL {
            let var = limit.env_var();
            let Some(raw) = std::env::var_os(var) else {
                continue;
            };
            let text = raw.to_string_lossy();
            *limit.field(&mut limits) = parse_size(&text).ok_or_else(|| Error::BadLimit {
                var,
                value: text.to_string(),
            })?;
        }
        Ok(limits)
    }
}

/// `123`, `64k`, `16G`, ... (binary multiples) → the number; `None` when it is not one.
fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let (digits, shift) = match t.char_indices().last()? {
        (i, 'k' | 'K') => (&t[..i], 10),
        (i, 'm' | 'M') => (&t[..i], 20),
        (i, 'g' | 'G') => (&t[..i], 30),
        (i, 't' | 'T') => (&t[..i], 40),
        _ => (t, 0),
    };
    let n: u64 = digits.parse().ok()?;
    n.checked_mul(1u64 << shift)
}

/// Where the applier is in the stream, shared with the [`Metered`] reader under the tar parser.
pub(crate) struct Meter<'l> {
    limits: &'l Limits,
    /// Bytes of tar read so far.
    read: Cell<u64>,
    /// While the tar parser reads headers (PAX, GNU long names): where that started.
    headers_from: Cell<Option<u64>>,
    /// The last entry seen, for messages.
    entry: RefCell<String>,
}

/// Room for what the parser reads between entries besides PAX/GNU payloads: the padding of the
/// previous entry and a few 512-byte headers.
const HEADER_SLACK: u64 = 8 << 10;

impl<'l> Meter<'l> {
    pub(crate) fn new(limits: &'l Limits) -> Self {
        Self {
            limits,
            read: Cell::new(0),
            headers_from: Cell::new(None),
            entry: RefCell::new(String::from("(start of layer)")),
        }
    }

    /// The tar parser is about to read the next entry's headers.
    pub(crate) fn headers_begin(&self) {
        self.headers_from.set(Some(self.read.get()));
    }

    /// The tar parser has returned the next entry.
    pub(crate) fn headers_end(&self) {
        self.headers_from.set(None);
    }

    /// Records the entry now being applied (named by later stream errors).
    pub(crate) fn set_entry(&self, name: &str) {
        let mut e = self.entry.borrow_mut();
        e.clear();
        e.push_str(name);
    }

    fn count(&self, n: usize) -> io::Result<()> {
        let read = self.read.get() + n as u64;
        self.read.set(read);
        if let Some(from) = self.headers_from.get() {
            let value = read - from;
            if value > self.limits.max_header_bytes.saturating_add(HEADER_SLACK) {
                let after = format!("headers after {}", self.entry.borrow());
                Limit::HeaderBytes.check(self.limits, &after, value)?;
            }
        }
        Limit::ExpandedBytes.check(self.limits, &self.entry.borrow(), read)?;
        Ok(())
    }
}

/// A reader that counts what the tar parser reads against the [`Meter`]'s limits.
pub(crate) struct Metered<'m, 'l, R> {
    pub(crate) inner: R,
    pub(crate) meter: &'m Meter<'l>,
}

impl<R: Read> Read for Metered<'_, '_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.meter.count(n)?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes_and_junk_is_refused() {
        assert_eq!(parse_size("123"), Some(123));
        assert_eq!(parse_size(" 64k"), Some(64 << 10));
        assert_eq!(parse_size("16G"), Some(16 << 30));
        assert_eq!(parse_size("1t"), Some(1 << 40));
        for bad in [
            "",
            "k",
            "-1",
            "1.5G",
            "abc",
            "99999999999999999999",
            "20000000T",
        ] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_check_names_the_limit_the_entry_and_the_value() {
        let limits = Limits {
            max_entries: 10,
            ..Limits::default()
        };
        assert!(Limit::Entries.check(&limits, "a", 10).is_ok());
        let e = Limit::Entries.check(&limits, "a/b", 11).unwrap_err();
        let msg = e.to_string();
        for part in [
            "\"a/b\"",
            "11",
            "max_entries = 10",
            "KILN_LAYER_MAX_ENTRIES",
        ] {
            assert!(msg.contains(part), "{msg}");
        }
        let io: io::Error = e.clone().into();
        assert_eq!(LimitExceeded::from_io(&io), Some(&e));
    }
}
