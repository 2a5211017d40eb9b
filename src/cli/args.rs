//! The command line. The action maps its inputs onto these same options, so the two cannot
//! drift apart.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::format::codec::Compression;
use crate::ops::firewall::FirewallOptions;
use crate::ops::totp::{Algorithm, TotpOptions, TotpShape};
use crate::ops::trigger::TriggerOptions;

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
    /// A dead man's switch: POST to URL/start before the work, URL on success, URL/fail on
    /// failure (healthchecks.io's convention). The URL is a secret and never printed; a ping that
    /// fails is a warning, never the command's failure.
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "D1R2_HEARTBEAT_URL",
        hide_env_values = true
    )]
    pub heartbeat_url: Option<String>,
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
    Totp(TotpArgs),
    /// Keep a Cloudflare IP list equal to GitHub's published ranges (for a WAF rule on
    /// `ip.src in $NAME`).
    Firewall(FirewallArgs),
    /// Fail when the newest backup is older than --max-age: a freshness check for a schedule of
    /// its own, so a backup job that stopped running is noticed.
    Check(CheckArgs),
    /// Call the application's backup endpoint with a fresh TOTP bearer code per attempt,
    /// retrying with exponential backoff.
    Trigger(TriggerArgs),
    /// Find a person's rows in the retained backups (an access request): one JSON line per row,
    /// `{backup, created, table, row}`.
    Find(FindArgs),
    /// Record an erasure (a request to be forgotten): every later restore, verify, export and
    /// drill of any backup removes the rows --where names.
    Forget(ForgetArgs),
}

impl Command {
    /// The command's name, as typed.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Backup(_) => "backup",
            Command::Restore(_) => "restore",
            Command::Verify(_) => "verify",
            Command::List(_) => "list",
            Command::Export(_) => "export",
            Command::Drill(_) => "drill",
            Command::Prune(_) => "prune",
            Command::Totp(_) => "totp",
            Command::Trigger(_) => "trigger",
            Command::Firewall(_) => "firewall",
            Command::Check(_) => "check",
            Command::Find(_) => "find",
            Command::Forget(_) => "forget",
        }
    }
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
    #[arg(long, value_delimiter = ',', value_name = "TABLE,...")]
    pub tables: Vec<String>,
    /// Never these tables.
    #[arg(long, value_delimiter = ',', value_name = "TABLE,...")]
    pub exclude_tables: Vec<String>,
    /// Never these columns (`table.column,...`): data minimisation. A primary key column, or a
    /// NOT NULL column without a DEFAULT, cannot be left out (the rows would not restore).
    #[arg(long, value_delimiter = ',', value_name = "TABLE.COLUMN,...")]
    pub exclude_columns: Vec<String>,
    /// How parts are compressed.
    #[arg(long, value_enum, default_value_t = CompressionArg::Gzip, value_name = "KIND")]
    pub compression: CompressionArg,
    /// Tables read at once.
    #[arg(long, default_value_t = 4, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,
    /// Readers of one large table keyed by its rowid, over ranges of its rowids, each taking one
    /// of the `--concurrency` slots: one reader already keeps D1 busy, more add compression
    /// threads and upload streams where cores are many, and each holds its own pages and upload
    /// buffer (about 15 MiB).
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=8))]
    pub table_readers: u16,
    /// Encrypt every part with AES-256-GCM, using the key in D1R2_ENCRYPTION_KEY (32 bytes, hex or
    /// base64), and seal the manifest: without the key it shows only the id, time, source kind,
    /// size and the key's fingerprint, never the key.
    #[arg(long)]
    pub encrypt: bool,
    /// A note stored in the manifest and shown by `list`. An encrypted backup seals it with the
    /// rest of its manifest unless --public-label is given.
    #[arg(long, value_name = "TEXT")]
    pub label: Option<String>,
    /// Keep an encrypted backup's --label readable without the key, so `list` shows it to anyone
    /// who can read the destination (a plain backup's label always is).
    #[arg(long, requires = "label")]
    pub public_label: bool,
    /// Only a backup that saw no write is kept: D1's Time Travel bookmark must not move between
    /// the first read and the last. One that saw writes is discarded and the backup runs again
    /// after a wait (full jitter, 2 s doubling to 30 s), up to --consistent-attempts; none quiet
    /// fails. `prefer` keeps the last attempt, marked, instead. Without it a backup that saw
    /// writes is kept and marked. A SQLite file is always one moment.
    #[arg(
        long,
        value_enum,
        num_args = 0..=1,
        default_missing_value = "true",
        value_name = "true|prefer"
    )]
    pub consistent: Option<ConsistentArg>,
    /// Backups tried in all under --consistent, the first included; each reads the whole
    /// database again (D1 bills the rows read).
    #[arg(long, default_value_t = crate::ops::backup::consistency::ATTEMPTS, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=20))]
    pub consistent_attempts: u32,
    /// A self-contained backup that shares nothing: its rows in parts of its own, rather than in
    /// chunks stored once under `chunks/` and shared with the destination's other backups.
    #[arg(long)]
    pub full: bool,
    /// The SQL a chunk holds on average, in bytes (at least a quarter, at most four times as
    /// much); smaller chunks share more between backups of scattered changes.
    #[arg(long, value_name = "BYTES", conflicts_with = "full",
          value_parser = clap::value_parser!(u32).range(4096..=(64 << 20)))]
    pub chunk_size: Option<u32>,
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
    /// Where the backups are: what a backup's --dest named.
    #[arg(long, value_name = "BACKUPS")]
    pub from: String,
    #[command(flatten)]
    pub keep: KeepArgs,
    /// Print the plan (keep or remove, and which rule keeps each) without deleting anything.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Args)]
pub struct SelectArgs {
    /// Where the backups are: what a backup's --dest named.
    #[arg(long, value_name = "BACKUPS")]
    pub from: String,
    /// A backup id, or `latest`.
    #[arg(long, default_value = "latest", value_name = "ID")]
    pub backup: String,
    /// The newest backup started at or before this time: RFC 3339 (2026-11-24T22:15:00Z, any
    /// offset) or a date (2026-11-24, its start in UTC). Instead of --backup.
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    /// The database to restore into: d1://DATABASE (applied as one unit through D1's import
    /// API), sqlite:PATH or a path.
    #[arg(long, value_name = "TARGET")]
    pub to: String,
    /// Only these tables (the target's other tables are kept).
    #[arg(long, value_delimiter = ',', value_name = "TABLE,...")]
    pub tables: Vec<String>,
    /// Replace a target that already holds data.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Where the backups are: what a backup's --dest named.
    #[arg(long, value_name = "BACKUPS")]
    pub from: String,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// Also show what each backup alone holds (what removing it would free), and the totals.
    #[arg(long)]
    pub stats: bool,
    /// Show the audit trail (every backup, restore, verify and prune) instead of the backups.
    #[arg(long)]
    pub audit: bool,
}

#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Where the backups are.
    #[arg(long, value_name = "DEST")]
    pub from: String,
    /// How old the newest backup may be: 26h, 90m, 2d, 1d 12h.
    #[arg(long, value_name = "DURATION")]
    pub max_age: String,
    /// Also verify the newest backup, as `d1r2 verify` does.
    #[arg(long)]
    pub verify: bool,
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

/// The rows a data subject's request is about: `find`'s and `forget`'s shared flags.
#[derive(Debug, Clone, Args)]
pub struct SubjectArgs {
    /// Where the backups are: what a backup's --dest named.
    #[arg(long, value_name = "BACKUPS")]
    pub from: String,
    /// The table holding the person's rows.
    #[arg(long, value_name = "NAME")]
    pub table: String,
    /// A SQLite condition on one row of the table, naming the person's rows (`email =
    /// 'a@example.com'`): no subquery, no `;`, no comment.
    #[arg(long = "where", value_name = "SQL")]
    pub predicate: String,
    /// Also the rows of tables whose foreign keys point at those rows (and at theirs, up to 8
    /// tables away).
    #[arg(long)]
    pub related: bool,
}

#[derive(Debug, Clone, Args)]
pub struct FindArgs {
    #[command(flatten)]
    pub subject: SubjectArgs,
    /// One backup id, or `all` (every retained backup).
    #[arg(long, default_value = "all", value_name = "ID|all")]
    pub backup: String,
    /// Write the lines to this file instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct ForgetArgs {
    #[command(flatten)]
    pub subject: SubjectArgs,
    /// Why (a ticket, a request): kept in the erasure record, sealed when the backups are
    /// encrypted; never in the audit trail.
    #[arg(long, value_name = "TEXT")]
    pub reason: String,
    /// Also rewrite each retained backup that holds the rows without them, keeping its id and
    /// time (only the parts or chunks holding them change; prune collects the old chunks).
    #[arg(long)]
    pub rewrite: bool,
}

/// `--consistent`: what a backup that saw writes is worth; `true` (the bare flag, or the action's
/// `consistent: true`) requires one that saw none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConsistentArg {
    #[value(name = "true", alias = "require")]
    Require,
    Prefer,
    #[value(name = "false")]
    Mark,
}

impl From<Option<ConsistentArg>> for crate::ops::backup::Consistency {
    fn from(arg: Option<ConsistentArg>) -> Self {
        use crate::ops::backup::Consistency;
        match arg {
            Some(ConsistentArg::Require) => Consistency::Require,
            Some(ConsistentArg::Prefer) => Consistency::Prefer,
            Some(ConsistentArg::Mark) | None => Consistency::Mark,
        }
    }
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AlgorithmArg {
    Sha1,
    Sha256,
    Sha512,
}

/// The shape of the codes, shared by `totp` and `trigger`; unset values come from an
/// `otpauth://` secret, then RFC 6238's defaults.
#[derive(Debug, Clone, Default, Args)]
pub struct TotpShapeArgs {
    /// Digits in the code (default 6, or the URI's).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(6..=10))]
    pub digits: Option<u8>,
    /// Seconds a code is valid (default 30, or the URI's).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub period: Option<u64>,
    /// HMAC algorithm (default sha1, or the URI's).
    #[arg(long, value_enum, value_name = "HASH")]
    pub algorithm: Option<AlgorithmArg>,
}

#[derive(Debug, Clone, Args)]
pub struct TotpArgs {
    #[command(flatten)]
    pub shape: TotpShapeArgs,
    /// Unix time to compute the code for, for reproducible output (default: now).
    #[arg(long, value_name = "UNIX_TIME")]
    pub at: Option<u64>,
}

#[derive(Debug, Clone, Args)]
pub struct TriggerArgs {
    /// The endpoint to call, e.g. https://app.example.com/api/backup.
    #[arg(long, value_name = "URL")]
    pub url: String,
    /// HTTP method.
    #[arg(long, default_value = "POST", value_name = "METHOD")]
    pub method: String,
    /// A JSON body, sent as application/json.
    #[arg(long, value_name = "JSON")]
    pub body: Option<String>,
    /// An extra header, `Name: value`; repeat (or one per line in the action) for more.
    #[arg(long = "header", value_name = "NAME: VALUE", value_delimiter = '\n')]
    pub headers: Vec<String>,
    /// Attempts in all, the first included.
    #[arg(long, default_value_t = 5, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: u32,
    /// Ceiling of the first retry's delay, in seconds; each later one doubles (full jitter).
    #[arg(long, default_value_t = 2.0, value_name = "SECS")]
    pub initial_delay: f64,
    /// No delay between attempts is longer, in seconds.
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    pub max_delay: f64,
    /// No attempt starts after this many seconds.
    #[arg(long, default_value_t = 600.0, value_name = "SECS")]
    pub deadline: f64,
    /// Seconds an attempt may take.
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    pub timeout: f64,
    /// Never send a code with fewer seconds than this left in its period; wait for the next.
    #[arg(long, default_value_t = 2, value_name = "SECS")]
    pub min_validity: u64,
    #[command(flatten)]
    pub totp: TotpShapeArgs,
}

#[derive(Debug, Clone, Args)]
pub struct FirewallArgs {
    /// The Cloudflare account-level IP list to keep (created when missing).
    #[arg(long, value_name = "NAME")]
    pub list: String,
    /// GitHub /meta sections to allow: hooks, web, api, git, packages, pages, importer, actions,
    /// actions_macos, dependabot, copilot.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "actions",
        value_name = "SECTION,..."
    )]
    pub sections: Vec<String>,
    /// Leave IPv6 ranges out.
    #[arg(long)]
    pub no_ipv6: bool,
    /// Print the diff and every guard's verdict, and change nothing (exit 0 even when the change
    /// would be refused).
    #[arg(long)]
    pub dry_run: bool,
    /// Apply even an empty set, fewer than --min-entries, or a large removal.
    #[arg(long)]
    pub force: bool,
    /// Refuse to apply fewer ranges than this.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub min_entries: usize,
    /// Refuse a change that stops allowing more than this share of the addresses the list allows
    /// today, in either family (IPv4 counted in addresses, IPv6 in /64 networks), 0 to 1.
    #[arg(long, default_value_t = 0.5, value_name = "RATIO")]
    pub max_removal_ratio: f64,
    /// The account's list item limit (10,000 on most plans), shared by all its custom lists:
    /// more, with the other lists' items, is refused before any change.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub max_items: usize,
    /// The comment stored with every item.
    #[arg(
        long,
        default_value = "GitHub ranges, kept by d1r2",
        value_name = "TEXT"
    )]
    pub comment: String,
    /// Also keep a WAF custom rule with this expression, which must use `$NAME` (for example
    /// `(http.request.uri.path eq "/api/backup" and not ip.src in $github_actions)`), in the
    /// zone's custom rules; created or updated, found again by its description.
    #[arg(long, value_name = "EXPRESSION", requires = "zone")]
    pub rule: Option<String>,
    /// The zone id for --rule.
    #[arg(long, value_name = "ZONE_ID")]
    pub zone: Option<String>,
    /// The rule's action.
    #[arg(long, default_value = "block", value_name = "ACTION", value_parser = ["block", "managed_challenge", "js_challenge", "challenge", "log"])]
    pub rule_action: String,
}

impl From<AlgorithmArg> for Algorithm {
    fn from(arg: AlgorithmArg) -> Self {
        match arg {
            AlgorithmArg::Sha1 => Algorithm::Sha1,
            AlgorithmArg::Sha256 => Algorithm::Sha256,
            AlgorithmArg::Sha512 => Algorithm::Sha512,
        }
    }
}

impl From<TotpShapeArgs> for TotpShape {
    fn from(args: TotpShapeArgs) -> Self {
        TotpShape {
            digits: args.digits,
            period: args.period,
            algorithm: args.algorithm.map(Algorithm::from),
        }
    }
}

impl From<TotpArgs> for TotpOptions {
    fn from(args: TotpArgs) -> Self {
        TotpOptions {
            shape: args.shape.into(),
            at: args.at,
        }
    }
}

impl From<TriggerArgs> for TriggerOptions {
    fn from(args: TriggerArgs) -> Self {
        TriggerOptions {
            url: args.url,
            method: args.method,
            body: args.body,
            headers: args.headers,
            max_attempts: args.max_attempts,
            initial_delay: args.initial_delay,
            max_delay: args.max_delay,
            deadline: args.deadline,
            timeout: args.timeout,
            min_validity: args.min_validity,
            totp: args.totp.into(),
        }
    }
}

impl From<FirewallArgs> for FirewallOptions {
    fn from(args: FirewallArgs) -> Self {
        FirewallOptions {
            list: args.list,
            sections: args.sections,
            no_ipv6: args.no_ipv6,
            dry_run: args.dry_run,
            force: args.force,
            min_entries: args.min_entries,
            max_removal_ratio: args.max_removal_ratio,
            max_items: args.max_items,
            comment: args.comment,
            rule: args.rule,
            zone: args.zone,
            rule_action: args.rule_action,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// Every value a flag takes is named for what it is (`<N>`, `<TABLE,...>`), not left to
    /// clap's spelling of the field (`<CONCURRENCY>`, `<EXCLUDE_TABLES>`) unless that is what it
    /// is; the locations say which side of a backup they are.
    #[test]
    fn every_value_is_named() {
        let cli = Cli::command();
        let field_named_well = ["url", "method", "dest"];
        for command in cli.get_subcommands() {
            for arg in command.get_arguments() {
                if !arg.get_action().takes_values() {
                    continue;
                }
                let id = arg.get_id().as_str();
                let clap_default = id.to_uppercase();
                let names = arg.get_value_names().unwrap_or_default();
                assert!(
                    names.iter().all(|n| *n != clap_default.as_str())
                        || field_named_well.contains(&id),
                    "{} --{id}: <{clap_default}> says nothing the flag does not",
                    command.get_name(),
                );
            }
        }
        for (command, flag, want) in [
            ("backup", "source", "SRC"),
            ("backup", "dest", "DEST"),
            ("restore", "from", "BACKUPS"),
            ("restore", "to", "TARGET"),
            ("verify", "from", "BACKUPS"),
            ("list", "from", "BACKUPS"),
            ("export", "from", "BACKUPS"),
            ("prune", "from", "BACKUPS"),
            ("drill", "from", "BACKUPS"),
        ] {
            let sub = cli.find_subcommand(command).expect(command);
            let arg = sub
                .get_arguments()
                .find(|a| a.get_id() == flag)
                .expect(flag);
            assert_eq!(
                arg.get_value_names().unwrap_or_default(),
                [want],
                "{command} --{flag}"
            );
        }
    }
}
