//! Build logs: the output of a service's run steps, stored under the store at
//! `build/logs/<project>/<service>/<commit>.log` and streamed to the progress display as it comes.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::error::{io_err, StepFailure};
use super::progress::Progress;

/// How many of a step's last lines an error shows.
const TAIL_LINES: usize = 20;

/// Where the build logs of a store live.
pub fn logs_dir(store_root: &Path) -> PathBuf {
    store_root.join("build").join("logs")
}

/// The log file of one service build at one commit.
pub fn log_path(store_root: &Path, project: &str, service: &str, commit: &str) -> PathBuf {
    logs_dir(store_root)
        .join(project)
        .join(service)
        .join(format!("{commit}.log"))
}

/// The log of one service build, open for appending.
pub(crate) struct BuildLog {
    path: PathBuf,
    file: File,
}

impl BuildLog {
    /// Creates (truncates) the log at `path`, making its folders.
    pub(crate) fn create(path: PathBuf) -> Result<BuildLog, StepFailure> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        }
        File::create(&path).map_err(io_err("create build log", &path))?;
        let file = File::options()
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io_err("open build log", &path))?;
        Ok(BuildLog { path, file })
    }

    /// Appends a line written by kiln itself (a step header, an error).
    pub(crate) fn note(&mut self, line: &str) -> Result<(), StepFailure> {
        writeln!(self.file, "{line}").map_err(io_err("write", &self.path))
    }
}

/// The view of one step on the build log: reads what the step appended, line by line.
pub(crate) struct StepLog<'a> {
    log: &'a mut BuildLog,
    progress: &'a mut dyn Progress,
    service: &'a str,
    step: &'static str,
    command: String,
    offset: u64,
    partial: Vec<u8>,
    tail: VecDeque<String>,
}

impl<'a> StepLog<'a> {
    /// Starts step `step` of `service`: writes its header and reads from there on.
    pub(crate) fn start(
        log: &'a mut BuildLog,
        progress: &'a mut dyn Progress,
        service: &'a str,
        step: &'static str,
        command: String,
    ) -> Result<StepLog<'a>, StepFailure> {
        log.note(&format!("--- {service}: {step}: {command}"))?;
        let offset = log
            .file
            .seek(SeekFrom::End(0))
            .map_err(io_err("seek", &log.path))?;
        Ok(StepLog {
            log,
            progress,
            service,
            step,
            command,
            offset,
            partial: Vec::new(),
            tail: VecDeque::new(),
        })
    }

    /// The host file the step's processes append to.
    pub(crate) fn host_path(&self) -> &Path {
        &self.log.path
    }

    /// The step's commands, as shown in errors.
    pub(crate) fn command(&self) -> &str {
        &self.command
    }

    /// Reads what was appended since the last call and hands each complete line on.
    pub(crate) fn pump(&mut self) {
        let mut buf = Vec::new();
        let read = self
            .log
            .file
            .seek(SeekFrom::Start(self.offset))
            .and_then(|_| (&self.log.file).read_to_end(&mut buf));
        if read.is_err() || buf.is_empty() {
            return;
        }
        self.offset += buf.len() as u64;
        self.partial.extend_from_slice(&buf);
        while let Some(nl) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=nl).collect();
            self.line(&line[..line.len() - 1]);
        }
    }

    /// Tells the progress display that the step is still running.
    pub(crate) fn tick(&mut self) {
        self.progress.tick();
    }

    /// Hands on a last line without a newline.
    pub(crate) fn finish(&mut self) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.line(&line);
            let _ = writeln!(self.log.file);
        }
    }

    fn line(&mut self, bytes: &[u8]) {
        let line = String::from_utf8_lossy(bytes).into_owned();
        self.progress.output(self.service, self.step, &line);
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }

    /// The step's last lines.
    pub(crate) fn tail(&self) -> Vec<String> {
        self.tail.iter().cloned().collect()
    }
}
