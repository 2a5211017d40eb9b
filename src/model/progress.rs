//! A progress line for long backups and restores when stderr is a terminal: rows and bytes so
//! far, redrawn in place. The pipeline only bumps two counters; nothing is drawn in action mode
//! or when stderr is a file or a pipe, so logs stay plain. A log line written while the progress
//! line is shown first erases it ([`log`]), so the two never share a line; the next redraw puts
//! the progress line back under it.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::model::report::{count, counted};

static ROWS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

/// Whether the progress line is on the terminal now; held while anything writes to stderr
/// through this module, so a redraw and a log line never interleave.
static SHOWN: Mutex<bool> = Mutex::new(false);

/// Erases the line the cursor is on.
const ERASE: &str = "\r\x1b[K";

/// Counts rows and bytes moved: a backup counts rows read and bytes stored; restore, verify and
/// export count bytes of SQL as they are decoded and a part's rows once the part checked out.
pub(crate) fn add(rows: u64, bytes: u64) {
    ROWS.fetch_add(rows, Ordering::Relaxed);
    BYTES.fetch_add(bytes, Ordering::Relaxed);
}

/// What the bytes of a progress line are.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Bytes {
    /// A backup's: compressed (and encrypted) as stored.
    Stored,
    /// A restore's, verify's or export's: the SQL decoded from the parts.
    Sql,
}

/// The line: `backup: 1,234,567 rows · 12.3 MiB stored · 4 s` (rows left out while there are
/// none).
pub(crate) fn line(label: &str, rows: u64, bytes: u64, what: Bytes, elapsed: Duration) -> String {
    let mut parts = vec![format!("{label}:")];
    if rows > 0 {
        parts.push(format!("{} ·", counted(rows, "row", "rows")));
    }
    let what = match what {
        Bytes::Stored => "stored",
        Bytes::Sql => "of SQL",
    };
    parts.push(format!(
        "{:.1} MiB {what} · {} s",
        bytes as f64 / (1024.0 * 1024.0),
        count(elapsed.as_secs())
    ));
    parts.join(" ")
}

/// A log line as it goes to stderr: after an erase of the progress line when one is shown.
pub(crate) fn log_text(shown: bool, text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + ERASE.len());
    if shown {
        out.extend_from_slice(ERASE.as_bytes());
    }
    out.extend_from_slice(text);
    out
}

/// Writes a log line to stderr on a line of its own; the progress line, if shown, is erased
/// first and redrawn by its next tick.
pub(crate) fn log(text: &[u8]) -> std::io::Result<()> {
    let mut shown = SHOWN.lock().unwrap_or_else(|e| e.into_inner());
    let mut err = std::io::stderr().lock();
    err.write_all(&log_text(*shown, text))?;
    *shown = false;
    err.flush()
}

/// The drawing thread; dropping it erases the line.
pub(crate) struct Display {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Starts drawing `label`'s progress on stderr.
pub(crate) fn show(label: &'static str, what: Bytes) -> Display {
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let started = Instant::now();
    let thread = std::thread::spawn(move || {
        while !stopping.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(250));
            let text = line(
                label,
                ROWS.load(Ordering::Relaxed),
                BYTES.load(Ordering::Relaxed),
                what,
                started.elapsed(),
            );
            let mut shown = SHOWN.lock().unwrap_or_else(|e| e.into_inner());
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "{ERASE}{text}");
            let _ = err.flush();
            *shown = true;
        }
        let mut shown = SHOWN.lock().unwrap_or_else(|e| e.into_inner());
        if *shown {
            let _ = write!(std::io::stderr().lock(), "{ERASE}");
        }
        *shown = false;
    });
    Display {
        stop,
        thread: Some(thread),
    }
}

impl Drop for Display {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_table() {
        for (label, rows, bytes, what, secs, want) in [
            (
                "backup",
                0,
                0,
                Bytes::Stored,
                0,
                "backup: 0.0 MiB stored · 0 s",
            ),
            (
                "backup",
                1,
                1024 * 1024,
                Bytes::Stored,
                3,
                "backup: 1 row · 1.0 MiB stored · 3 s",
            ),
            (
                "backup",
                1_234_567,
                5 * 1024 * 1024 / 2,
                Bytes::Stored,
                61,
                "backup: 1,234,567 rows · 2.5 MiB stored · 61 s",
            ),
            (
                "verify",
                999,
                0,
                Bytes::Sql,
                1,
                "verify: 999 rows · 0.0 MiB of SQL · 1 s",
            ),
            (
                "restore",
                1000,
                0,
                Bytes::Sql,
                4321,
                "restore: 1,000 rows · 0.0 MiB of SQL · 4,321 s",
            ),
            (
                "export",
                0,
                0,
                Bytes::Sql,
                2,
                "export: 0.0 MiB of SQL · 2 s",
            ),
        ] {
            assert_eq!(
                line(label, rows, bytes, what, Duration::from_secs(secs)),
                want
            );
        }
    }

    #[test]
    fn log_lines_start_on_a_line_of_their_own() {
        for (shown, text, want) in [
            (false, " INFO x\n", " INFO x\n"),
            (true, " INFO x\n", "\r\x1b[K INFO x\n"),
            (true, "", "\r\x1b[K"),
        ] {
            assert_eq!(
                log_text(shown, text.as_bytes()),
                want.as_bytes(),
                "{shown} {text:?}"
            );
        }
    }
}
