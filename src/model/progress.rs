//! A progress line for long backups and restores when stderr is a terminal: rows and bytes so
//! far, redrawn in place. The pipeline only bumps two counters; nothing is drawn in action mode
//! or when stderr is a file or a pipe, so logs stay plain.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

static ROWS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

/// Counts rows read (backup) and bytes moved (backup: stored; restore, verify, export: SQL read).
pub(crate) fn add(rows: u64, bytes: u64) {
    ROWS.fetch_add(rows, Ordering::Relaxed);
    BYTES.fetch_add(bytes, Ordering::Relaxed);
}

/// The line: `backup: 1,234,567 rows · 12.3 MiB · 4 s` (rows left out while there are none).
pub(crate) fn line(label: &str, rows: u64, bytes: u64, elapsed: Duration) -> String {
    let mut parts = vec![format!("{label}:")];
    if rows > 0 {
        parts.push(format!("{} rows ·", thousands(rows)));
    }
    parts.push(format!(
        "{:.1} MiB · {} s",
        bytes as f64 / (1024.0 * 1024.0),
        elapsed.as_secs()
    ));
    parts.join(" ")
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The drawing thread; dropping it erases the line.
pub(crate) struct Display {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Starts drawing `label`'s progress on stderr.
pub(crate) fn show(label: &'static str) -> Display {
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
                started.elapsed(),
            );
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r{text}\x1b[K");
            let _ = err.flush();
        }
        let _ = write!(std::io::stderr().lock(), "\r\x1b[K");
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
        for (rows, bytes, secs, want) in [
            (0, 0, 0, "backup: 0.0 MiB · 0 s"),
            (1, 1024 * 1024, 3, "backup: 1 rows · 1.0 MiB · 3 s"),
            (
                1_234_567,
                5 * 1024 * 1024 / 2,
                61,
                "backup: 1,234,567 rows · 2.5 MiB · 61 s",
            ),
            (999, 0, 1, "backup: 999 rows · 0.0 MiB · 1 s"),
            (1000, 0, 1, "backup: 1,000 rows · 0.0 MiB · 1 s"),
        ] {
            assert_eq!(line("backup", rows, bytes, Duration::from_secs(secs)), want);
        }
    }
}
