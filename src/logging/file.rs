//! The daily log files: `server-YYYY-MM-DD.log` in the log folder, one per UTC day, and the
//! deletion of the expired ones. Used only by the file's writer thread (and once at start), so
//! nothing here runs on a task that routes messages.
//!
//! A line goes to the file of the date in its own timestamp, so a line logged at 23:59:59.999
//! that reaches the writer after midnight still lands in that day's file. Files only move
//! forward: a line dated before the open file's day (two threads racing over midnight) goes to
//! the open file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::json::{Date, LINE_START};

const PREFIX: &str = "server-";
const SUFFIX: &str = ".log";

/// The file name of `date`'s log.
pub(crate) fn file_name(date: Date) -> String {
    format!("{PREFIX}{date}{SUFFIX}")
}

/// The date of a log file's name, if it is exactly one of ours.
fn date_of_file_name(name: &str) -> Option<Date> {
    let date = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    Date::parse(date.as_bytes())
}

/// The UTC date a JSON line starts with, if it does.
fn date_of_line(line: &[u8]) -> Option<Date> {
    let rest = line.strip_prefix(LINE_START)?;
    Date::parse(rest.get(..10)?)
}

/// Writes lines to the file of their day; the writer thread's output.
#[derive(Debug)]
pub(crate) struct DailyFiles {
    folder: PathBuf,
    /// Days kept, today's included; 0 keeps every file.
    retention_days: u32,
    /// The open file and its day. `None` after a failed open: lines are dropped and counted
    /// until the next day's file opens (each batch tries again).
    current: Option<(Date, File)>,
    /// The day of the file lines go to, open or not.
    day: Date,
    dropped: Arc<AtomicUsize>,
}

impl DailyFiles {
    /// Creates the folder if missing, deletes expired files and opens `today`'s. An error here
    /// is for start-up to report: the folder cannot be created or the file cannot be opened.
    pub(crate) fn open(
        folder: &Path,
        retention_days: u32,
        today: Date,
        dropped: Arc<AtomicUsize>,
    ) -> io::Result<Self> {
        let file = open_day(folder, today)?;
        remove_expired(folder, today, retention_days);
        Ok(Self {
            folder: folder.to_owned(),
            retention_days,
            current: Some((today, file)),
            day: today,
            dropped,
        })
    }

    /// Moves to `date`'s file and deletes what has expired by then.
    fn rotate(&mut self, date: Date) {
        self.day = date;
        self.current = open_day(&self.folder, date).ok().map(|file| (date, file));
        remove_expired(&self.folder, date, self.retention_days);
    }

    /// Writes whole lines; a line of a later day first moves to that day's file.
    fn write_lines(&mut self, bytes: &[u8]) {
        let mut run = 0;
        let mut at = 0;
        while at < bytes.len() {
            let end = bytes[at..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(bytes.len(), |i| at + i + 1);
            if let Some(date) = date_of_line(&bytes[at..end]) {
                if date > self.day {
                    self.write_run(&bytes[run..at]);
                    self.rotate(date);
                    run = at;
                }
            }
            at = end;
        }
        self.write_run(&bytes[run..]);
    }

    /// Writes lines of the current day, or counts them as dropped if that fails.
    fn write_run(&mut self, run: &[u8]) {
        if run.is_empty() {
            return;
        }
        if self.current.is_none() {
            // The day's file failed to open: try again, once per batch at most.
            self.current = open_day(&self.folder, self.day)
                .ok()
                .map(|file| (self.day, file));
        }
        let written = match &mut self.current {
            Some((_, file)) => file.write_all(run).is_ok(),
            None => false,
        };
        if !written {
            let lines = run.iter().filter(|&&b| b == b'\n').count().max(1);
            self.dropped.fetch_add(lines, Ordering::Relaxed);
        }
    }
}

impl io::Write for DailyFiles {
    /// The writer thread hands over whole lines, a batch at a time.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_lines(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // Each batch goes straight to the file with `write`; there is no buffer of ours.
        Ok(())
    }
}

fn open_day(folder: &Path, date: Date) -> io::Result<File> {
    fs::create_dir_all(folder)?;
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(folder.join(file_name(date)))
}

/// Deletes the log files dated `retention_days` or more days before `today` (so that many
/// days are kept, today's included). Only regular files named exactly `server-YYYY-MM-DD.log`
/// are touched; errors are ignored (the next rotation tries again).
pub(crate) fn remove_expired(folder: &Path, today: Date, retention_days: u32) {
    if retention_days == 0 {
        return;
    }
    let oldest_kept = today.minus_days(retention_days - 1);
    let Ok(entries) = fs::read_dir(folder) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(date) = name.to_str().and_then(date_of_file_name) else {
            continue;
        };
        if date < oldest_kept && entry.file_type().is_ok_and(|t| t.is_file()) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_exact_names_are_log_files() {
        let date = Date::parse(b"2026-11-30").unwrap();
        assert_eq!(file_name(date), "server-2026-11-30.log");
        assert_eq!(date_of_file_name("server-2026-11-30.log"), Some(date));
        for other in [
            "server-2026-11-30.log.gz",
            "server-2026-11-30.txt",
            "server-2026-02-30.log",
            "server-26-11-30.log",
            "Server-2026-11-30.log",
            "xserver-2026-11-30.log",
            "server-2026-11-30-1.log",
            "server-2026-1-30.log",
        ] {
            assert_eq!(date_of_file_name(other), None, "{other}");
        }
    }

    #[test]
    fn a_line_carries_its_date_at_the_start() {
        assert_eq!(
            date_of_line(b"{\"timestamp\":\"2026-11-30T23:59:59.999Z\",\"level\":\"info\"}\n"),
            Date::parse(b"2026-11-30")
        );
        assert_eq!(date_of_line(b"2026-11-30T23:59:59.999Z INFO x\n"), None);
        assert_eq!(date_of_line(b"{\"timestamp\":\"2026\n"), None);
    }
}
