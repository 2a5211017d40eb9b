//! The command line. The action maps its inputs onto these same options, so the two cannot
//! drift apart.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::format::codec::Compression;

#[derive(Debug, Parser)]
#[command(
    name = "d1r2",
    version,
    about = "Lossless, streaming backups of Cloudflare D1 (or any SQLite database) to R2, S3 or a folder"
)]
pub struct Cli {
    /// More logging (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Back up a database to one or more destinations.
    Backup(BackupArgs),
    /// Restore a backup into a database.
    Restore(RestoreArgs),
    /// Check a backup: digests, a load into scratch SQLite, integrity and row counts.
    Verify(SelectArgs),
    /// List the backups in a destination.
    List(ListArgs),
    /// Write a backup as one plain SQL file.
    Export(ExportArgs),
    /// Remove the backups a retention policy does not keep (restic's `forget` rules), and what
    /// crashed backups left behind.
    Prune(PruneArgs),
    /// Restore drill for pull requests: restore a backup into scratch SQLite and apply pending
    /// migrations, reporting the first that fails.
    Drill(DrillArgs),
    /// Print the current TOTP code for TOTP_SECRET (RFC 6238).
    Totp(crate::ops::totp::TotpArgs),
    /// Keep a Cloudflare IP list equal to GitHub's published ranges (for a WAF rule on
    /// `ip.src in $NAME`).
    Firewall(crate::ops::firewall::FirewallArgs),
    /// Call the application's backup endpoint with a fresh TOTP bearer code per attempt,
    /// retrying with exponential backoff.
    Trigger(crate::ops::trigger::TriggerArgs),
}

#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    /// d1://DATABASE, sqlite:PATH or a path to a SQLite file.
    #[arg(long, value_name = "SRC")]
    pub source: String,
    /// r2://BUCKET/PREFIX, s3://BUCKET/PREFIX, file:DIR or a directory; repeat to write the same
    /// backup to several places.
    #[arg(long, value_name = "DEST", required = true)]
    pub dest: Vec<String>,
    /// Only these tables.
    #[arg(long, value_delimiter = ',')]
    pub tables: Vec<String>,
    /// Never these tables.
    #[arg(long, value_delimiter = ',')]
    pub exclude_tables: Vec<String>,
    /// Never these columns (`table.column,...`): data minimisation. A primary key column, or a
    /// NOT NULL column without a DEFAULT, cannot be left out (the rows would not restore).
    #[arg(long, value_delimiter = ',')]
    pub exclude_columns: Vec<String>,
    #[arg(long, value_enum, default_value_t = CompressionArg::Gzip)]
    pub compression: CompressionArg,
    /// Tables read at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,
    /// Readers of one large table keyed by its rowid, over ranges of its rowids, each taking one
    /// of the `--concurrency` slots: one reader already keeps D1 busy, more add compression
    /// threads and upload streams where cores are many, and each holds its own pages and upload
    /// buffer (about 15 MiB).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=8))]
    pub table_readers: u16,
    /// Encrypt every part with AES-256-GCM, using the key in D1R2_ENCRYPTION_KEY (32 bytes, hex or
    /// base64), and seal the manifest: without the key it shows only the id, time, source kind,
    /// size and the key's fingerprint, never the key.
    #[arg(long)]
    pub encrypt: bool,
    /// A note stored in the manifest and shown by `list`. An encrypted backup seals it with the
    /// rest of its manifest unless --public-label is given.
    #[arg(long)]
    pub label: Option<String>,
    /// Keep an encrypted backup's --label readable without the key, so `list` shows it to anyone
    /// who can read the destination (a plain backup's label always is).
    #[arg(long, requires = "label")]
    pub public_label: bool,
    /// After a successful backup, prune each destination with the --keep-* rules.
    #[arg(long)]
    pub prune: bool,
    #[command(flatten)]
    pub keep: KeepArgs,
}

/// A retention policy, as restic's `forget` spells it. Buckets are UTC hours, days, ISO weeks,
/// months and years; the newest backup in each of the last N buckets that have one is kept.
#[derive(Debug, Clone, Default, Args)]
pub struct KeepArgs {
    /// Keep the N newest backups.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Keep the newest backup of each of the last N hours that have one.
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<u32>,
    /// Keep the newest backup of each of the last N days that have one.
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// Keep the newest backup of each of the last N ISO weeks that have one.
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest backup of each of the last N months that have one.
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// Keep the newest backup of each of the last N years that have one.
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<u32>,
    /// Keep every backup within this span of the newest one (e.g. 7d, 12h, 1y6m, 2y5m7d3h).
    #[arg(long, value_name = "SPAN")]
    pub keep_within: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct PruneArgs {
    /// Where the backups are.
    #[arg(long, value_name = "DEST")]
    pub from: String,
    #[command(flatten)]
    pub keep: KeepArgs,
    /// Print the plan (keep or remove, and which rule keeps each) without deleting anything.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Args)]
pub struct SelectArgs {
    /// Where the backups are.
    #[arg(long, value_name = "DEST")]
    pub from: String,
    /// A backup id, or `latest`.
    #[arg(long, default_value = "latest", value_name = "ID")]
    pub backup: String,
}

#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    /// The database to restore into: d1://DATABASE (applied as one unit through D1's import
    /// API), sqlite:PATH or a path.
    #[arg(long, value_name = "SRC")]
    pub to: String,
    /// Only these tables (the target's other tables are kept).
    #[arg(long, value_delimiter = ',')]
    pub tables: Vec<String>,
    /// Replace a target that already holds data.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    #[arg(long, value_name = "DEST")]
    pub from: String,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// Show the audit trail (every backup, restore, verify and prune) instead of the backups.
    #[arg(long)]
    pub audit: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    /// The SQL file to write.
    #[arg(long, value_name = "FILE.sql")]
    pub out: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct DrillArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    /// The migrations directory (wrangler's `migrations/`).
    #[arg(long, value_name = "DIR")]
    pub migrations: PathBuf,
}

/// `--compression`: the format's [`Compression`] spelled for the command line, so the format
/// itself does not depend on clap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CompressionArg {
    Gzip,
    None,
}

impl From<CompressionArg> for Compression {
    fn from(arg: CompressionArg) -> Self {
        match arg {
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::None => Compression::None,
        }
    }
}
