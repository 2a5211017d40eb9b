//! The command layer: turns parsed options into calls on the library and a [`Report`], adding the
//! context an error message needs (what failed, on what).

use crate::cli::args::{
    BackupArgs, CheckArgs, Command, DrillArgs, ExportArgs, FindArgs, ForgetArgs, KeepArgs,
    ListArgs, PruneArgs, RestoreArgs, SelectArgs,
};
use crate::cli::location::{
    SourceLocation, StoreLocation, open_source, open_store, parse_source, parse_store,
};
use crate::error::{Classify, Context, Kind, Result, bad_input};
use crate::format::crypto::{self, Key};
use crate::format::envelope::{Stored, Summary};
use crate::format::load::{Selection, check_key_of};
use crate::format::manifest::Manifest;
use crate::format::repo;
use crate::model::TableFilter;
use crate::model::report::{Report, count, human_bytes};
use crate::ops::backup::{self, BackupOptions};
use crate::ops::prune::PruneOutcome;
use crate::ops::retention::KeepPolicy;

/// Runs `command`, with heartbeat pings around it when `heartbeat` names a URL (refused, before
/// anything is done, when it is not one d1r2 may ping).
pub(crate) async fn run(command: Command, heartbeat: Option<String>) -> Result<Report> {
    use crate::remote::heartbeat::{self, Signal};
    let heartbeat = match heartbeat.as_deref().map(str::trim) {
        Some(text) if !text.is_empty() => {
            crate::redact::register(text);
            Some(heartbeat::parse(text)?)
        }
        _ => None,
    };
    let name = command.name();
    if let Some(url) = &heartbeat {
        heartbeat::ping(
            url,
            Signal::Start,
            heartbeat::body(name, Signal::Start, None),
        )
        .await;
    }
    let result = audited_run(command).await;
    if let Some(url) = &heartbeat {
        let (signal, outcome) = match &result {
            Ok(report) => (Signal::Success, Ok(report)),
            Err(e) => (Signal::Fail, Err(e.exit_code())),
        };
        heartbeat::ping(url, signal, heartbeat::body(name, signal, Some(outcome))).await;
    }
    result
}

/// Runs `command` and appends its audit record.
async fn audited_run(command: Command) -> Result<Report> {
    let audited = audited(&command);
    let result = dispatch(command).await;
    // A refusal (bad input, exit 2) did nothing worth recording, and must not create files.
    let refused = result.as_ref().is_err_and(|e| e.kind() == Kind::BadInput);
    if let Some((operation, dests)) = audited
        && !refused
    {
        write_audit(operation, &dests, &result).await;
    }
    result
}

/// The operations the audit trail records, and the stores they touched.
fn audited(command: &Command) -> Option<(&'static str, Vec<String>)> {
    match command {
        Command::Backup(a) => Some(("backup", a.dest.clone())),
        Command::Restore(a) => Some(("restore", vec![a.select.from.clone()])),
        Command::Verify(a) => Some(("verify", vec![a.from.clone()])),
        Command::Prune(a) if !a.dry_run => Some(("prune", vec![a.from.clone()])),
        Command::Find(a) => Some(("find", vec![a.subject.from.clone()])),
        Command::Forget(a) => Some(("forget", vec![a.subject.from.clone()])),
        _ => None,
    }
}

/// Appends the audit record to each store that can be opened; a record that cannot be written
/// is a warning, never a change to the command's own outcome.
async fn write_audit(operation: &str, dests: &[String], result: &Result<Report>) {
    let env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
    let error = result.as_ref().err().map(audit_error);
    let outcome = match (result, &error) {
        (Ok(report), _) => Ok(report),
        (Err(_), Some(e)) => Err(e.as_str()),
        (Err(_), None) => unreachable!("an error has a line"),
    };
    let record = crate::ops::audit::record(operation, outcome, &env, chrono::Utc::now());
    for dest in dests {
        let Ok(location) = parse_store(dest) else {
            continue;
        };
        let Ok(store) = open_store(&location, false).await else {
            continue;
        };
        if let Err(e) = crate::ops::audit::append(store.as_ref(), &record).await {
            tracing::warn!("could not write the audit record to {dest}: {e}");
        }
    }
}

/// A failure as an audit record tells it. The record is stored in plain beside the backups, so
/// for an encrypted backup, whose table names are as private as its rows, it says only which
/// command failed on what (the command's own context), never the cause, which may name a table.
fn audit_error(err: &crate::error::Error) -> String {
    if !crate::redact::names_withheld() {
        return crate::redact::text(&err.one_line());
    }
    let what = err
        .outermost_context()
        .map_or_else(String::new, |c| format!("{}: ", crate::redact::text(&c)));
    format!(
        "{what}failed (exit {}); the backup is encrypted, so the cause is only in the job's log",
        err.exit_code()
    )
}

async fn dispatch(command: Command) -> Result<Report> {
    match command {
        Command::Backup(args) => backup(args).await,
        Command::Restore(args) => restore(args).await,
        Command::Verify(args) => verify(args).await,
        Command::List(args) => list(args).await,
        Command::Export(args) => export(args).await,
        Command::Drill(args) => drill(args).await,
        Command::Prune(args) => prune(args).await,
        Command::Check(args) => check(args).await,
        Command::Totp(args) => {
            crate::ops::totp::run(&args.into(), std::env::var("TOTP_SECRET").ok().as_deref())
        }
        Command::Firewall(args) => {
            crate::ops::firewall::run(&args.into(), &std::env::vars().collect()).await
        }
        Command::Trigger(args) => {
            crate::ops::trigger::run(&args.into(), std::env::var("TOTP_SECRET").ok().as_deref())
                .await
        }
        Command::Find(args) => find(args).await,
        Command::Forget(args) => forget(args).await,
    }
}

/// The key in the environment, if any. A key that is set but malformed is an error even when it
/// would not be needed, so a typo is found on the first run rather than at restore time.
fn key_from_env() -> Result<Option<Key>> {
    match std::env::var(crypto::KEY_ENV) {
        Ok(text) if !text.trim().is_empty() => Ok(Some(
            Key::parse(&text).map_err(|e| bad_input(e.to_string()))?,
        )),
        _ => Ok(None),
    }
}

/// The manifest of `stored`, opened with the key in the environment, and that key: the key is
/// checked against the backup's fingerprint (missing or wrong: bad input), then the manifest is
/// authenticated (altered: the operation fails), all before any part is read or anything is
/// written. A plain backup read with a key set is refused as an altered one is: nothing proves
/// who wrote it. `None` for a backup that is not encrypted.
fn open_manifest(stored: Stored) -> Result<(Manifest, Option<Key>)> {
    let key = key_from_env()?;
    check_key_of(stored.id(), stored.encryption(), key.as_ref())?;
    let manifest = stored.open(key.as_ref())?;
    if manifest.is_sealed() {
        crate::redact::withhold_names();
    }
    Ok((manifest, key))
}

/// Every backup of `store` (or the one `id` names), opened with the key in the environment,
/// oldest first, and that key.
async fn opened_backups(
    store: &dyn crate::store::Store,
    id: Option<&str>,
) -> Result<(Vec<Manifest>, Option<Key>)> {
    let stored = match id {
        Some(id) => vec![repo::resolve(store, id).await?],
        None => repo::manifests(store).await?,
    };
    let mut opened = Vec::new();
    let mut key = key_from_env()?;
    for one in stored {
        let (manifest, k) = open_manifest(one)?;
        opened.push(manifest);
        key = k;
    }
    Ok((opened, key))
}

/// `find`: the rows of every retained backup (or one) that `--where` names, as JSON lines on
/// standard output or in `--out`; the report says how many, in how many backups.
async fn find(args: FindArgs) -> Result<Report> {
    use std::io::Write;
    // A job's log is read by everyone with access to the repository: rows go to a file there.
    if args.out.is_none() && std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true") {
        return Err(bad_input(
            "find in GitHub Actions writes the rows it finds to a file, never to the log: set out (--out FILE)",
        ));
    }
    let store = open_store(&parse_store(&args.subject.from)?, false).await?;
    let one = (args.backup != "all").then_some(args.backup.as_str());
    let (backups, key) = opened_backups(store.as_ref(), one).await?;
    let request = crate::ops::find::FindRequest {
        table: args.subject.table.clone(),
        predicate: args.subject.predicate.clone(),
        related: args.subject.related,
    };
    if let Some(newest) = backups.last() {
        let mut schema =
            crate::format::load::load_schema(store.clone(), newest, key.as_ref()).await?;
        crate::ops::find::check_request(&mut schema, &request)?;
    }
    let mut out: Box<dyn Write + Send> = match &args.out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::stdout()),
    };
    let mut searched = crate::ops::find::Searched::default();
    for manifest in &backups {
        crate::ops::find::search(
            store.clone(),
            manifest,
            key.as_ref(),
            &request,
            &mut searched,
            &mut |manifest, table, row| {
                writeln!(out, "{}", crate::ops::find::line(manifest, table, row))?;
                Ok(())
            },
        )
        .await
        .with_context(|| format!("searching backup {}", manifest.id))?;
    }
    out.flush()?;
    let mut report = Report::new("find");
    report
        .output("rows", searched.rows)
        .output("backups", searched.backups_with_rows)
        .row("Backups searched", backups.len())
        .row("Backups with rows", searched.backups_with_rows)
        .row("Rows", count(searched.rows));
    if searched.chunks_reused > 0 {
        report.row(
            "Chunks answered from an earlier backup",
            searched.chunks_reused,
        );
    }
    Ok(report)
}

/// `forget`: records the erasure, then reports its id and the rows it names in how many
/// backups (the audit record keeps the counts, never the predicate).
async fn forget(args: ForgetArgs) -> Result<Report> {
    let store = open_store(&parse_store(&args.subject.from)?, false).await?;
    let (backups, key) = opened_backups(store.as_ref(), None).await?;
    let request = crate::format::erasure::Request {
        table: args.subject.table.clone(),
        predicate: args.subject.predicate.clone(),
        related: args.subject.related,
        reason: args.reason.clone(),
    };
    let actor = std::env::var("GITHUB_ACTOR").ok().filter(|a| !a.is_empty());
    let outcome = crate::ops::forget::forget(
        store,
        &backups,
        key.as_ref(),
        (request, args.rewrite),
        (actor, chrono::Utc::now()),
    )
    .await
    .with_context(|| format!("recording an erasure in {}", args.subject.from))?;
    let mut report = Report::new("forget");
    report.sealed = key.is_some();
    report
        .output("erasure-id", &outcome.erasure.id)
        .row("Erasure", &outcome.erasure.id);
    match outcome.counted {
        Some((rows, with)) => {
            report
                .output("rows", rows)
                .output("backups", with)
                .row("Rows it names", count(rows))
                .row("Backups holding them", with);
        }
        None => {
            report.row("Rows it names", "not counted (see the warning)");
        }
    }
    if let Some((rows, backups)) = outcome.rewritten {
        report.output("rewritten", backups).row(
            "Rewritten",
            format!("{} rows removed from {backups} backups", count(rows)),
        );
    }
    report.row(
        "Result",
        "recorded: every later restore, verify, export and drill removes these rows",
    );
    Ok(report)
}

/// The backup `--backup` or `--at` names. `--at` with an id is refused: they would disagree.
/// `latest`, the default (which the action always passes), gives way to `--at`.
async fn select(store: &dyn crate::store::Store, args: &SelectArgs) -> Result<Stored> {
    let Some(at) = &args.at else {
        return Ok(repo::resolve(store, &args.backup).await?);
    };
    let time = repo::parse_at(at).ok_or_else(|| {
        bad_input(format!(
            "--at {at:?}: expected an RFC 3339 time (2026-11-24T22:15:00Z) or a date (2026-11-24)"
        ))
    })?;
    if args.backup != "latest" {
        return Err(bad_input(format!(
            "--at and --backup {} name a backup each; give one",
            args.backup
        )));
    }
    Ok(repo::resolve_at(store, time).await?)
}

/// The policy of the --keep-* flags; `None` when none is given, or only zeros (rules off).
fn keep_policy(keep: &KeepArgs) -> Result<Option<KeepPolicy>> {
    let within = keep
        .keep_within
        .as_deref()
        .map(crate::ops::retention::parse_within)
        .transpose()
        .map_err(bad_input)?;
    let policy = KeepPolicy {
        last: keep.keep_last,
        hourly: keep.keep_hourly,
        daily: keep.keep_daily,
        weekly: keep.keep_weekly,
        monthly: keep.keep_monthly,
        yearly: keep.keep_yearly,
        within,
    };
    Ok((!policy.is_empty()).then_some(policy))
}

/// Adds a prune's outcome to a report: outputs `kept`, `removed`, `removed-ids`.
fn report_prune(report: &mut Report, outcomes: &[(String, PruneOutcome)]) {
    let kept: usize = outcomes.iter().map(|(_, o)| o.kept().count()).sum();
    let removed: Vec<String> = outcomes
        .iter()
        .flat_map(|(_, o)| o.removed().map(|d| d.id.clone()))
        .collect();
    let orphans: usize = outcomes.iter().map(|(_, o)| o.orphans.len()).sum();
    let aborted: usize = outcomes.iter().map(|(_, o)| o.aborted_uploads).sum();
    report
        .output("kept", kept)
        .output("removed", removed.len())
        .output("removed-ids", removed.join("\n"));
    let dry = outcomes.iter().any(|(_, o)| o.dry_run);
    report.row("Kept", kept).row(
        if dry { "Would remove" } else { "Removed" },
        if removed.is_empty() {
            "none".to_string()
        } else {
            removed.join(", ")
        },
    );
    if orphans > 0 {
        report.row(
            if dry {
                "Unfinished backups to clean"
            } else {
                "Unfinished backups cleaned"
            },
            orphans,
        );
    }
    if aborted > 0 {
        report.row("Stale uploads aborted", aborted);
    }
    for (dest, outcome) in outcomes {
        if outcomes.len() > 1 {
            report.detail.push_str(&format!("{dest}:\n"));
        }
        report.detail.push_str(&outcome.table());
    }
}

async fn backup(args: BackupArgs) -> Result<Report> {
    if args.encrypt {
        crate::redact::withhold_names();
    }
    let policy = keep_policy(&args.keep)?;
    match (&policy, args.prune) {
        (None, true) => {
            return Err(bad_input(
                "--prune needs a retention policy: add --keep-daily 7 or other --keep-* rules",
            ));
        }
        (Some(_), false) => {
            return Err(bad_input(
                "--keep-* rules apply with --prune (or with `d1r2 prune`); add --prune",
            ));
        }
        _ => {}
    }
    let source_location = parse_source(&args.source)?;
    let dests = args
        .dest
        .iter()
        .map(|dest| Ok((dest.clone(), parse_store(dest)?)))
        .collect::<Result<Vec<_>>>()?;
    let open = |(dest, location): (String, StoreLocation)| async move {
        open_store(&location, true)
            .await
            .with_context(|| format!("opening {dest}"))
    };
    // A bucket's client is set up (TLS roots, SDK configuration: about as long as D1 takes to
    // look the database up) while the source opens; a local folder is made only once it has.
    let opening: Vec<_> = dests
        .iter()
        .map(|dest| {
            let remote = !matches!(dest.1, StoreLocation::Local(_));
            remote.then(|| tokio::spawn(open(dest.clone())))
        })
        .collect();
    let source = open_source(&source_location)
        .await
        .with_context(|| format!("opening {}", args.source))?;
    let mut stores = Vec::new();
    for (dest, opening) in dests.into_iter().zip(opening) {
        stores.push(match opening {
            Some(opening) => opening.await.context("opening the stores")??,
            None => open(dest).await?,
        });
    }
    let encryption =
        if args.encrypt {
            Some(key_from_env()?.ok_or_else(|| {
                bad_input(format!("--encrypt needs a key: set {}", crypto::KEY_ENV))
            })?)
        } else {
            None
        };
    let options = BackupOptions {
        filter: TableFilter {
            include: args.tables.clone(),
            exclude: args.exclude_tables.clone(),
            exclude_columns: TableFilter::parse_columns(&args.exclude_columns)?,
        },
        compression: args.compression.into(),
        encryption,
        concurrency: args.concurrency as usize,
        table_readers: args.table_readers as usize,
        label: args.label.clone(),
        public_label: args.public_label,
        consistency: args.consistent.into(),
        consistent_attempts: args.consistent_attempts,
        chunk_bytes: (!args.full).then(|| {
            args.chunk_size
                .map_or(crate::format::chunk::DEFAULT_CHUNK_BYTES, |b| b as usize)
        }),
        ..BackupOptions::default()
    };
    let outcome = backup::run(source.as_ref(), &stores, &options)
        .await
        .with_context(|| format!("backing up {}", args.source))?;
    let m = &outcome.manifest;
    let mut report = Report::new("backup");
    report.sealed = m.is_sealed();
    report
        .output("backup-id", &m.id)
        .output(
            "backup-key",
            format!("{}/{}", m.id, crate::format::manifest::MANIFEST_NAME),
        )
        .output("bytes", m.total_bytes())
        .output("rows", m.total_rows())
        .output("tables", m.tables.len())
        .output("sha256", &outcome.manifest_sha256)
        .output("duration-ms", outcome.duration.as_millis())
        .output("consistent", consistent_output(m.source.consistent()));
    report
        .row("Backup", &m.id)
        .row("Source", &args.source)
        .row("Destinations", args.dest.join(", "))
        .row("Tables", count(m.tables.len() as u64))
        .row("Rows", count(m.total_rows()))
        .row("Stored", human_bytes(m.total_bytes()))
        .row(
            "Duration",
            format!("{:.1} s", outcome.duration.as_secs_f64()),
        )
        .row("Consistent", consistency_line(&m.source));
    if outcome.attempts > 1 {
        let discarded = outcome.attempts - 1;
        report.row(
            "Attempts",
            format!(
                "{} ({discarded} saw writes and {} discarded)",
                outcome.attempts,
                if discarded == 1 { "was" } else { "were" }
            ),
        );
    }
    if let Some(policy) = policy {
        let mut outcomes = Vec::new();
        for (dest, store) in args.dest.iter().zip(&stores) {
            let outcome =
                crate::ops::prune::prune(store.as_ref(), &policy, false, chrono::Utc::now())
                    .await
                    .with_context(|| format!("backup {} done, but pruning {dest} failed", m.id))?;
            outcomes.push((dest.clone(), outcome));
        }
        report_prune(&mut report, &outcomes);
    }
    Ok(report)
}

/// The `consistent` output: `true`, `false`, or `unknown` when the source gave no bookmark.
fn consistent_output(consistent: Option<bool>) -> &'static str {
    match consistent {
        Some(true) => "true",
        Some(false) => "false",
        None => "unknown",
    }
}

/// The summary's line on whether a backup is one moment of its source; for one that saw writes,
/// the bookmark that restores the database, exactly, to the moment the backup started.
fn consistency_line(source: &crate::model::SourceInfo) -> String {
    match (source.consistent(), &source.bookmark) {
        (Some(true), _) if source.kind == "sqlite" => {
            "yes (read in one SQLite transaction)".to_string()
        }
        (Some(true), _) => {
            "yes (no write while it read: the Time Travel bookmark did not move)".to_string()
        }
        (Some(false), Some(bookmark)) => format!(
            "no: writes landed while it read, so tables may be of different moments; for the exact state at its start, `wrangler d1 time-travel restore {} --bookmark={bookmark}` (in place, within Time Travel's retention)",
            source.name.as_deref().unwrap_or("DATABASE")
        ),
        (Some(false), None) | (None, _) => "unknown: D1 gave no Time Travel bookmark".to_string(),
    }
}

async fn prune(args: PruneArgs) -> Result<Report> {
    let policy =
        keep_policy(&args.keep)?.ok_or_else(|| bad_input(crate::ops::retention::NO_RULE))?;
    let store = open_store(&parse_store(&args.from)?, false).await?;
    let outcome =
        crate::ops::prune::prune(store.as_ref(), &policy, args.dry_run, chrono::Utc::now())
            .await
            .with_context(|| format!("pruning {}", args.from))?;
    let mut report = Report::new("prune");
    report.row("Store", &args.from);
    if args.dry_run {
        report.row("Mode", "dry run: nothing deleted");
    }
    report_prune(&mut report, &[(args.from.clone(), outcome)]);
    Ok(report)
}

async fn restore(args: RestoreArgs) -> Result<Report> {
    let to = parse_source(&args.to)?;
    if let SourceLocation::Sqlite(path) = &to {
        crate::ops::scratch::check_folder(path)?;
    }
    let store = open_store(&parse_store(&args.select.from)?, false).await?;
    let (manifest, key) = open_manifest(select(store.as_ref(), &args.select).await?)?;
    let started = std::time::Instant::now();
    let selection = Selection {
        tables: args.tables.clone(),
    };
    let mut report = Report::new("restore");
    report.sealed = manifest.is_sealed();
    let outcome = match to {
        SourceLocation::Sqlite(path) => crate::ops::restore::restore_to_file(
            store,
            &manifest,
            &selection,
            key.as_ref(),
            &path,
            args.force,
        )
        .await
        .with_context(|| format!("restoring backup {} into {}", manifest.id, path.display()))?,
        SourceLocation::D1(database) => {
            let api = crate::remote::cloudflare::Api::from_env(&crate::cli::location::env_var)?;
            let target = crate::source::d1::D1Source::connect(api, &database).await?;
            let (outcome, imported) = crate::ops::import::restore_to_d1(
                store,
                &manifest,
                &selection,
                key.as_ref(),
                &target,
                args.force,
            )
            .await
            .with_context(|| format!("restoring backup {} into {}", manifest.id, args.to))?;
            if let Some(bookmark) = &imported.final_bookmark {
                report.output("bookmark", bookmark);
                report.row("D1 bookmark after", bookmark);
            }
            outcome
        }
    };
    report
        .output("backup-id", &manifest.id)
        .output("rows", outcome.rows)
        .output("tables", outcome.tables)
        .output("duration-ms", started.elapsed().as_millis());
    report
        .row("Backup", &manifest.id)
        .row("Restored into", &args.to)
        .row("Tables", count(outcome.tables as u64))
        .row("Rows", count(outcome.rows));
    report_erasures(&mut report, &outcome.erasures);
    Ok(report)
}

/// Adds the recorded erasures a read applied to a report: outputs `erasures` (how many applied)
/// and `erased-rows` (the rows they removed, when counted), and a row each, those that do not
/// apply to the backup's schema with why.
fn report_erasures(report: &mut Report, erasures: &[crate::ops::erasures::ErasureOutcome]) {
    let applied: Vec<_> = erasures
        .iter()
        .filter(|e| e.not_applied.is_none())
        .collect();
    report.output("erasures", applied.len());
    let counted: Option<u64> = applied.iter().map(|e| e.rows).sum();
    if let Some(rows) = counted {
        report.output("erased-rows", rows);
    }
    for e in erasures {
        let did = match (&e.not_applied, e.rows) {
            (Some(why), _) => format!("does not apply: {why}"),
            (None, Some(rows)) => format!("{} removed", count(rows)),
            (None, None) => "applied".to_string(),
        };
        report.row(&format!("Erasure {}", e.id), did);
    }
}

async fn verify(args: SelectArgs) -> Result<Report> {
    let store = open_store(&parse_store(&args.from)?, false).await?;
    let (manifest, key) = open_manifest(select(store.as_ref(), &args).await?)?;
    let started = std::time::Instant::now();
    let outcome = crate::ops::verify::verify(store, &manifest, key.as_ref())
        .await
        .with_context(|| format!("verifying backup {}", manifest.id))?;
    let mut report = Report::new("verify");
    report.sealed = manifest.is_sealed();
    report
        .output("backup-id", &manifest.id)
        .output("rows", outcome.rows)
        .output("tables", outcome.tables)
        .output("bytes", outcome.bytes)
        .output("duration-ms", started.elapsed().as_millis());
    report
        .row("Backup", &manifest.id)
        .row(
            "Result",
            "ok: digests, integrity check and row counts match",
        )
        .row("Tables", count(outcome.tables as u64))
        .row("Rows", count(outcome.rows))
        .row("Stored", human_bytes(outcome.bytes));
    if outcome.foreign_key_violations > 0 {
        report.row("Foreign key violations", outcome.foreign_key_violations);
    }
    report_erasures(&mut report, &outcome.erasures);
    Ok(report)
}

async fn list(args: ListArgs) -> Result<Report> {
    let store = open_store(&parse_store(&args.from)?, false).await?;
    if args.audit {
        let records = crate::ops::audit::read(store.as_ref()).await?;
        let mut report = Report::new("list");
        report.row("Audit records", records.len());
        report.detail = if args.json {
            serde_json::to_string_pretty(&records)?
        } else {
            crate::ops::audit::table(&records)
        };
        return Ok(report);
    }
    let key = key_from_env()?;
    let stored = repo::manifests(store.as_ref()).await?;
    let listing = match args.json || args.stats {
        true => store.list("").await?,
        false => Vec::new(),
    };
    let own = repo::own_bytes(&stored, &listing);
    let summaries: Vec<Summary> = stored
        .into_iter()
        .map(|stored| summarize(stored, key.as_ref()))
        .collect();
    let mut report = Report::new("list");
    report.output("backups", summaries.len());
    if let Some(latest) = summaries.last() {
        report.output("backup-id", &latest.id);
    }
    if args.json {
        let items: Vec<serde_json::Value> = summaries
            .iter()
            .zip(&own)
            .map(|(m, own)| {
                serde_json::json!({
                    "id": m.id,
                    "created": m.created,
                    "label": m.label,
                    "source": m.source,
                    "tables": m.tables,
                    "rows": m.rows,
                    "bytes": m.bytes,
                    "own_bytes": own,
                    "compression": m.compression,
                    "encrypted": m.encrypted,
                    "consistent": m.source.consistent(),
                })
            })
            .collect();
        report.detail = serde_json::to_string_pretty(&items)?;
    } else {
        let own_column = |bytes: Option<&u64>| match (args.stats, bytes) {
            (true, Some(b)) => format!("{:>10}  ", human_bytes(*b)),
            (true, None) => format!("{:>10}  ", "OWN"),
            (false, _) => String::new(),
        };
        let mut text = format!(
            "{:<20}  {:>6}  {:>12}  {:>10}  {}{:<9}  {:<10}  LABEL\n",
            "ID",
            "TABLES",
            "ROWS",
            "SIZE",
            own_column(None),
            "ENCRYPTED",
            "CONSISTENT"
        );
        let known = |n: Option<String>| n.unwrap_or_else(|| "-".to_string());
        for (i, m) in summaries.iter().enumerate() {
            text.push_str(&format!(
                "{:<20}  {:>6}  {:>12}  {:>10}  {}{:<9}  {:<10}  {}\n",
                m.id,
                known(m.tables.map(|n| count(n as u64))),
                known(m.rows.map(count)),
                human_bytes(m.bytes),
                own_column(own.get(i)),
                if m.encrypted { "yes" } else { "no" },
                known(
                    m.source
                        .consistent()
                        .map(|c| if c { "yes" } else { "no" }.to_string())
                ),
                m.label.as_deref().unwrap_or("")
            ));
        }
        if args.stats {
            text.push_str(&stored_totals(
                summaries.iter().map(|m| m.bytes).sum(),
                &listing,
            ));
        }
        report.detail = text;
    }
    Ok(report)
}

/// The line under `list --stats`: what the backups name in all, against what the store holds,
/// chunks stored once for every backup that names them.
fn stored_totals(named: u64, listing: &[crate::store::ObjectMeta]) -> String {
    format!(
        "\n{} named by the backups, {} stored\n",
        human_bytes(named),
        human_bytes(repo::stored_bytes(listing))
    )
}

/// What `list` shows of a backup: its sealed details too when `key` is the backup's key and
/// opens them; a manifest that does not open is listed by its public header, with a warning.
fn summarize(stored: Stored, key: Option<&Key>) -> Summary {
    let public = stored.summary();
    let ours = stored
        .encryption()
        .zip(key)
        .is_some_and(|(info, key)| info.key_fingerprint == key.fingerprint());
    if !ours {
        return public;
    }
    match stored.open(key) {
        Ok(manifest) => Summary::from(&manifest),
        Err(e) => {
            tracing::warn!("{e}");
            public
        }
    }
}

async fn export(args: ExportArgs) -> Result<Report> {
    crate::ops::scratch::check_folder(&args.out)?;
    let store = open_store(&parse_store(&args.select.from)?, false).await?;
    let (manifest, key) = open_manifest(select(store.as_ref(), &args.select).await?)?;
    let outcome = crate::ops::export::export(store, &manifest, key.as_ref(), &args.out)
        .await
        .with_context(|| format!("exporting backup {} to {}", manifest.id, args.out.display()))?;
    let mut report = Report::new("export");
    report
        .output("backup-id", &manifest.id)
        .output("bytes", outcome.bytes);
    report
        .row("Backup", &manifest.id)
        .row("Written", args.out.display())
        .row("Size", human_bytes(outcome.bytes));
    report_erasures(&mut report, &outcome.erasures);
    if outcome.erasures.iter().any(|e| e.not_applied.is_none()) {
        report
            .output("erased-rows", outcome.erased_rows)
            .row("Rows left out", count(outcome.erased_rows));
    }
    Ok(report)
}

/// `check`: the newest backup's id and age as outputs; a store whose newest backup is too old,
/// or that has none, fails (exit 1) with those outputs still written. With `--verify` the newest
/// backup is also verified, its figures added.
async fn check(args: CheckArgs) -> Result<Report> {
    use crate::ops::check::{self, Freshness};
    let max_age = check::parse_max_age(&args.max_age).map_err(bad_input)?;
    let store = open_store(&parse_store(&args.from)?, false).await?;
    let freshness = check::check(store.as_ref(), max_age, chrono::Utc::now())
        .await
        .with_context(|| format!("checking {}", args.from))?;
    let mut report = Report::new("check");
    report
        .row("Store", &args.from)
        .row("Max age", check::human_age(max_age));
    let (id, age, fresh) = match freshness {
        Freshness::Empty => {
            let message = format!(
                "no backup in {}: the backup job has never written one here, or its backups were removed",
                args.from
            );
            report.row("Newest backup", "none");
            return Err(crate::model::report::Failure { report, message }.into());
        }
        Freshness::Fresh { id, age } => (id, age, true),
        Freshness::Stale { id, age } => (id, age, false),
    };
    report
        .output("newest-id", &id)
        .output("age-seconds", age.as_secs())
        .row("Newest backup", &id)
        .row("Age", check::human_age(age));
    if !fresh {
        let message = format!(
            "the newest backup in {}, {id}, is {} old, older than --max-age {}: the backup job has not succeeded since",
            args.from,
            check::human_age(age),
            check::human_age(max_age)
        );
        return Err(crate::model::report::Failure { report, message }.into());
    }
    if args.verify {
        let verified = verify(SelectArgs {
            from: args.from.clone(),
            backup: id.clone(),
            at: None,
        })
        .await
        .with_context(|| format!("the newest backup in {}, {id}, is fresh", args.from))?;
        report.sealed = verified.sealed;
        for name in ["rows", "tables", "bytes"] {
            if let Some(value) = verified.outputs.get(name) {
                report.output(name, value);
            }
        }
        report.rows.extend(
            verified
                .rows
                .into_iter()
                .filter(|(label, _)| label != "Backup"),
        );
    }
    Ok(report)
}

async fn drill(args: DrillArgs) -> Result<Report> {
    let store = open_store(&parse_store(&args.select.from)?, false).await?;
    let (manifest, key) = open_manifest(select(store.as_ref(), &args.select).await?)?;
    let started = std::time::Instant::now();
    let outcome =
        crate::ops::drill::drill(store, &manifest, key.as_ref(), &args.migrations).await?;
    let mut report = Report::new("drill");
    report
        .output("backup-id", &manifest.id)
        .output("migrations-applied", outcome.applied.len())
        .output("duration-ms", started.elapsed().as_millis());
    report
        .row("Backup", &manifest.id)
        .row("Already applied", outcome.already.len())
        .row("Applied", outcome.applied.join(", "));
    if outcome.old_violations > 0 {
        report.row(
            "Warning",
            format!(
                "{} rows of the backup already violate foreign keys, the first {} (D1 keeps them; no migration is blamed for them)",
                outcome.old_violations,
                outcome.old_sample.as_deref().unwrap_or_default()
            ),
        );
    }
    if let Some(f) = outcome.failure.as_ref().filter(|f| f.statement == 0) {
        return Err(DrillFailed(format!(
            "migration {} is not applied: {}",
            f.migration, f.error
        ))
        .into());
    }
    if let Some(f) = &outcome.failure {
        return Err(DrillFailed(format!(
            "migration {} fails at statement {} on the data of backup {}: {}",
            f.migration, f.statement, manifest.id, f.error
        ))
        .into());
    }
    report.row(
        "Result",
        "every pending migration applies to the restored data",
    );
    report_erasures(&mut report, &outcome.erasures);
    Ok(report)
}

/// A migration that does not apply to the backed-up data: the operation failed (exit 1).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct DrillFailed(String);

impl Classify for DrillFailed {
    fn kind(&self) -> Kind {
        Kind::Failed
    }
}
