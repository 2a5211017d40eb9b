//! What a command tells the world when it is done.
//!
//! Every command returns a [`Report`]: named outputs (the action's job outputs, with the same
//! kebab-case names) and rows for a short Markdown summary. The CLI prints it as plain lines; the
//! action writes it to `$GITHUB_OUTPUT` and `$GITHUB_STEP_SUMMARY`. Keeping one structure for both
//! means the two can never disagree about what happened.

use std::collections::BTreeMap;

/// A command that failed but still has outputs to give (the attempts made, the last HTTP status):
/// the action writes them with `status=failure`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct Failure {
    pub report: Report,
    pub message: String,
}

impl crate::error::Classify for Failure {
    fn kind(&self) -> crate::error::Kind {
        crate::error::Kind::Failed
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Report {
    /// The command that ran, e.g. `backup`.
    pub command: String,
    /// Job outputs by name (`backup-id`, `bytes`, ...). Values may span several lines.
    pub outputs: BTreeMap<String, String>,
    /// Outputs that are secrets: masked before anything is printed, never shown in summaries.
    pub secret_outputs: Vec<String>,
    /// Label/value rows for the human summary, in display order.
    pub rows: Vec<(String, String)>,
    /// Free text printed after the rows (a plan, a diff, a listing).
    pub detail: String,
    /// The outputs describe a backup whose manifest is sealed: the audit trail, stored beside
    /// the backup in plain, records none of what the seal hides (its row count).
    pub sealed: bool,
}

impl Report {
    pub(crate) fn new(command: &str) -> Self {
        let mut report = Report {
            command: command.to_string(),
            ..Report::default()
        };
        report.output("status", "success");
        report
    }

    /// Sets a job output.
    pub(crate) fn output(&mut self, name: &str, value: impl ToString) -> &mut Self {
        self.outputs.insert(name.to_string(), value.to_string());
        self
    }

    /// Adds a row to the human summary.
    pub(crate) fn row(&mut self, label: &str, value: impl ToString) -> &mut Self {
        self.rows.push((label.to_string(), value.to_string()));
        self
    }

    /// The report as it may leave the process: every output, row and the detail through
    /// [`crate::redact::text`]. Secret outputs stay as they are: they are the command's result
    /// (a TOTP code), masked in the log and never in a summary.
    pub(crate) fn redacted(&self) -> Report {
        let text = crate::redact::text;
        Report {
            command: self.command.clone(),
            outputs: self
                .outputs
                .iter()
                .map(|(name, value)| {
                    let secret = self.secret_outputs.contains(name);
                    (
                        name.clone(),
                        if secret { value.clone() } else { text(value) },
                    )
                })
                .collect(),
            secret_outputs: self.secret_outputs.clone(),
            rows: self
                .rows
                .iter()
                .map(|(label, value)| (text(label), text(value)))
                .collect(),
            detail: text(&self.detail),
            sealed: self.sealed,
        }
    }

    /// Plain text for a terminal: the rows aligned, then the detail.
    pub(crate) fn to_text(&self) -> String {
        let width = self.rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
        let mut text = String::new();
        for (label, value) in &self.rows {
            text.push_str(&format!("{label:<width$}  {value}\n"));
        }
        if !self.detail.is_empty() {
            text.push_str(&self.detail);
            if !self.detail.ends_with('\n') {
                text.push('\n');
            }
        }
        text
    }
}

/// A count as people read it, in the one format every human-facing line uses: thousands
/// separated by commas (`1,234,567`). Machine outputs (job outputs, JSON) keep plain numbers.
pub(crate) fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `n` things, counted and spelled for the number: `1 row`, `0 rows`, `1,234 rows`.
pub(crate) fn counted(n: u64, one: &str, many: &str) -> String {
    format!("{} {}", count(n), if n == 1 { one } else { many })
}

/// Human-readable byte count (`1.2 MiB`).
pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The step summary: a heading and a two-column Markdown table, secrets left out.
pub(crate) fn summary_markdown(report: &Report) -> String {
    let mut md = format!("### d1r2 {}: {}\n", report.command, status(report));
    // A report without rows (list's is all detail) gets no table rather than an empty one.
    if !report.rows.is_empty() {
        md.push_str("\n| | |\n|---|---|\n");
    }
    for (label, value) in &report.rows {
        md.push_str(&format!("| {} | {} |\n", cell(label), cell(value)));
    }
    if !report.detail.is_empty() {
        let fence = fence(&report.detail);
        md.push_str(&format!(
            "\n{fence}\n{}\n{fence}\n",
            report.detail.trim_end()
        ));
    }
    md
}

/// A code fence longer than any run of backticks in `text`: the detail quotes stored text (a
/// label), which must not close the block and be read as Markdown or HTML.
fn fence(text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    "`".repeat(longest.max(2) + 1)
}

fn status(report: &Report) -> &str {
    report
        .outputs
        .get("status")
        .map(String::as_str)
        .unwrap_or("success")
}

/// A table cell: `|` escaped, HTML's `<` and `&` written as entities (a cell may quote stored
/// text, which must not become markup), line ends as `<br>`.
fn cell(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('|', "\\|")
        .replace('\n', "<br>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_table() {
        for (n, want, rows) in [
            (0, "0", "0 rows"),
            (1, "1", "1 row"),
            (2, "2", "2 rows"),
            (999, "999", "999 rows"),
            (1000, "1,000", "1,000 rows"),
            (1_234_567, "1,234,567", "1,234,567 rows"),
            (
                u64::MAX,
                "18,446,744,073,709,551,615",
                "18,446,744,073,709,551,615 rows",
            ),
        ] {
            assert_eq!(count(n), want);
            assert_eq!(counted(n, "row", "rows"), rows);
        }
        assert_eq!(counted(1, "table", "tables"), "1 table");
    }

    #[test]
    fn human_bytes_table() {
        for (bytes, text) in [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (1536, "1.5 KiB"),
            (5 * 1024 * 1024, "5.0 MiB"),
        ] {
            assert_eq!(human_bytes(bytes), text);
        }
    }

    #[test]
    fn stored_text_stays_text_in_the_summary() {
        let mut r = Report::new("list");
        r.row("Label", "a|b <img src=x> & c\nd");
        r.detail = "x ```` y\n```\n# heading".into();
        let md = summary_markdown(&r);
        assert!(
            md.contains("| Label | a\\|b &lt;img src=x> &amp; c<br>d |"),
            "{md}"
        );
        assert!(
            md.ends_with("\n`````\nx ```` y\n```\n# heading\n`````\n"),
            "{md}"
        );
        r.detail = "plain".into();
        assert!(summary_markdown(&r).ends_with("\n```\nplain\n```\n"));
    }

    #[test]
    fn a_summary_has_a_table_only_for_rows() {
        let mut r = Report::new("list");
        r.detail = "ID  CREATED".into();
        let md = summary_markdown(&r);
        assert_eq!(md, "### d1r2 list: success\n\n```\nID  CREATED\n```\n");
        r.row("Backups", 2);
        let md = summary_markdown(&r);
        assert!(
            md.starts_with("### d1r2 list: success\n\n| | |\n|---|---|\n| Backups | 2 |\n"),
            "{md}"
        );
    }

    #[test]
    fn text_aligns_rows() {
        let mut r = Report::new("backup");
        r.row("id", "x").row("tables", 3);
        assert_eq!(r.to_text(), "id      x\ntables  3\n");
        assert_eq!(r.outputs["status"], "success");
    }
}
