//! Progress reporting: an indicatif bar on a terminal, plain lines on stderr otherwise.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// How a build reports progress.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    tty: bool,
    quiet: bool,
}

impl Progress {
    /// Bars when stderr is a terminal, plain lines otherwise.
    pub fn auto() -> Self {
        Self {
            tty: std::io::stderr().is_terminal(),
            quiet: false,
        }
    }

    /// Says nothing.
    pub fn quiet() -> Self {
        Self {
            tty: false,
            quiet: true,
        }
    }

    /// A plain message line.
    pub fn line(&self, msg: &str) {
        if !self.quiet {
            eprintln!("{msg}");
        }
    }

    /// A task measured in bytes (downloads).
    pub fn bytes(&self, what: &str, total: u64) -> Task {
        self.task(
            what,
            total,
            "{prefix} [{bar:30}] {bytes}/{total_bytes} {msg}",
        )
    }

    /// A task measured in items (packages unpacked).
    pub fn items(&self, what: &str, total: u64) -> Task {
        self.task(what, total, "{prefix} [{bar:30}] {pos}/{len} {msg}")
    }

    fn task(&self, what: &str, total: u64, template: &str) -> Task {
        let bar = (self.tty && !self.quiet).then(|| {
            let b = ProgressBar::new(total).with_prefix(what.to_string());
            if let Ok(style) = ProgressStyle::with_template(template) {
                b.set_style(style.progress_chars("=> "));
            }
            b
        });
        Task {
            bar,
            what: what.to_string(),
            plain: !self.tty && !self.quiet,
        }
    }
}

/// One running task.
pub struct Task {
    bar: Option<ProgressBar>,
    what: String,
    plain: bool,
}

impl Task {
    /// Advances by `n` units, naming the item just done.
    pub fn advance(&self, n: u64, item: &str) {
        if let Some(b) = &self.bar {
            b.inc(n);
            b.set_message(item.to_string());
        } else if self.plain {
            eprintln!("{} {item}", self.what);
        }
    }

    /// Ends the task.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
