//! What leaves the process carries no secret, no stored value and no workflow command: an endpoint
//! that copies our requests into its error pages (a proxy, a misconfigured base URL) gets its
//! echo of tokens, SigV4 access key ids, TOTP codes and URL queries redacted in every exit; a
//! restore that fails while applying an encrypted backup names no value and no table; stored
//! labels and audit records start no workflow command and send no escape sequence.

use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use base64::Engine;

use crate::common;
use crate::common::cmd::{D1r2, Run};
use crate::fakes;

/// A random word of `prefix` and 32 hex digits.
fn random(prefix: &str) -> String {
    format!("{prefix}{:032x}", rand::random::<u128>())
}

/// The forms a secret is written in by whoever echoes it: as it is, percent-encoded, base64.
fn forms(secret: &str) -> Vec<String> {
    let mut encoded = String::new();
    for b in secret.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
    // The end of a base64 string depends on what follows; its start on this value alone.
    let b64 = b64[..b64.len() - 4].to_string();
    vec![secret.to_string(), encoded, b64]
}

/// Asserts that no form of any of `secrets` is in `text`, naming where it was.
#[track_caller]
fn assert_clean(where_: &str, text: &str, secrets: &[(&str, String)]) {
    for (name, secret) in secrets {
        for form in forms(secret) {
            assert!(
                !text.contains(&form),
                "{name} ({form}) leaked into {where_}:\n{text}"
            );
        }
    }
}

/// An endpoint that answers every request with 500 and an S3-style XML error whose message is
/// the request: method, URL and every header. Records what it saw.
#[derive(Clone, Default)]
struct Echo {
    seen: Arc<Mutex<Vec<String>>>,
}

impl Echo {
    async fn start(&self) -> String {
        let echo = self.clone();
        let app = Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap| {
            let echo = echo.clone();
            async move { echo.answer(method, uri, headers) }
        });
        format!("http://{}", fakes::serve(app).await)
    }

    fn answer(&self, method: Method, uri: Uri, headers: HeaderMap) -> axum::response::Response {
        let mut request = format!("{method} {uri}\n");
        for (name, value) in &headers {
            let value = value.to_str().unwrap_or("?");
            request.push_str(&format!("{name}: {value}\n"));
            // Some proxies show what they took from the header, without its scheme.
            if let Some((_, credential)) = value.split_once(' ') {
                request.push_str(&format!("{name} credential: {credential}\n"));
            }
        }
        self.seen.lock().unwrap().push(request.clone());
        let escaped = request
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code>\
             <Message>proxy refused {escaped}</Message><RequestId>1</RequestId></Error>"
        );
        // A bucket is refused at once (its SDK retries a 500 with backoff); anything else fails
        // as a broken server does, which is not the user's input.
        let status = if headers.contains_key("x-amz-date") {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        (status, [("content-type", "application/xml")], body).into_response()
    }

    fn saw(&self, text: &str) -> bool {
        self.seen.lock().unwrap().iter().any(|r| r.contains(text))
    }
}

/// Every file under `dir`, as text.
fn files_under(dir: &Path) -> String {
    let mut text = String::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                text.push_str(&String::from_utf8_lossy(&std::fs::read(&p).unwrap()));
                text.push('\n');
            }
        }
    }
    text
}

/// A step of the action in `dir`, with `env` and `inputs`; its runner files are `dir`/output and
/// `dir`/summary.
async fn step(dir: &Path, env: &[(&str, String)], inputs: &[(&str, String)]) -> Run {
    let mut cmd = D1r2::new();
    cmd.current_dir(dir)
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_OUTPUT", dir.join("output"))
        .env("GITHUB_STEP_SUMMARY", dir.join("summary"))
        .env("D1R2_API_MAX_ATTEMPTS", "1")
        .env("AWS_MAX_ATTEMPTS", "1")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(env.iter().map(|(k, v)| (k, v)));
    for (name, value) in inputs {
        cmd.env(format!("INPUT_{}", name.to_uppercase()), value);
    }
    cmd.run_async().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_an_endpoint_echoes_never_leave_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::create_db(
        &d.join("app.db"),
        "CREATE TABLE t(a); INSERT INTO t VALUES (1);",
    );
    let echo = Echo::default();
    let echo_url = echo.start().await;
    let github = fakes::github::FakeGitHub::start().await;
    let event = d.join("event.json");
    std::fs::write(&event, r#"{"pull_request": {"head": {"sha": "0123abcd"}}}"#).unwrap();
    let query_secret = random("q/+=");
    let header_secret = random("h");
    let secrets: Vec<(&str, String)> = vec![
        ("CLOUDFLARE_API_TOKEN", random("cf-")),
        (
            "GITHUB_TOKEN",
            format!("ghs_{}%0A{}", random(""), random("")),
        ),
        ("AWS_ACCESS_KEY_ID", random("AKID")),
        ("AWS_SECRET_ACCESS_KEY", random("aws/")),
        (
            "TOTP_SECRET",
            "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP".to_string(),
        ),
        (
            "D1R2_ENCRYPTION_KEY",
            format!(
                "{:032x}{:032x}",
                rand::random::<u128>(),
                rand::random::<u128>()
            ),
        ),
    ];
    let mut env: Vec<(&str, String)> = secrets.clone();
    env.extend([
        ("CLOUDFLARE_ACCOUNT_ID", "acc".to_string()),
        ("CLOUDFLARE_API_BASE_URL", echo_url.clone()),
        ("AWS_ENDPOINT_URL_S3", echo_url.clone()),
        ("GITHUB_API_URL", github.url.clone()),
        ("GITHUB_REPOSITORY", "acme/app".to_string()),
        ("GITHUB_SHA", "0123abcd".to_string()),
        ("GITHUB_EVENT_PATH", event.display().to_string()),
    ]);
    let dest = d.join("store");
    // A store that exists: the failed backup's audit record goes there.
    std::fs::create_dir(&dest).unwrap();
    let runs = [
        // D1 behind the echo: the API token comes back in the error page.
        vec![
            ("command", "backup".to_string()),
            ("source", "d1://db".to_string()),
            ("dest", dest.display().to_string()),
            ("report-check", "true".to_string()),
        ],
        // A bucket behind the echo: SigV4's Credential= names the access key id. The local
        // store beside it gets the audit record of the failure.
        vec![
            ("command", "backup".to_string()),
            ("source", d.join("app.db").display().to_string()),
            ("dest", format!("{}\ns3://bucket/p", dest.display())),
            ("report-check", "true".to_string()),
        ],
        // The app's endpoint behind the echo: the code, the query and a header come back.
        vec![
            ("command", "trigger".to_string()),
            (
                "url",
                format!("{echo_url}/hook?key={}", urlencode(&query_secret)),
            ),
            ("header", format!("X-Api-Key: {header_secret}")),
            ("max-attempts", "1".to_string()),
        ],
    ];
    // Credentials d1r2 never read: the AWS SDK's from a profile file. Only their shape gives
    // them away.
    let profile_key_id = random("AKPROFILE");
    let credentials = d.join("credentials");
    std::fs::write(
        &credentials,
        format!(
            "[default]\naws_access_key_id = {profile_key_id}\naws_secret_access_key = {}\n",
            random("")
        ),
    )
    .unwrap();
    let mut profile_env: Vec<(&str, String)> = env
        .iter()
        .filter(|(k, _)| !k.starts_with("AWS_ACCESS") && !k.starts_with("AWS_SECRET"))
        .cloned()
        .collect();
    profile_env.push((
        "AWS_SHARED_CREDENTIALS_FILE",
        credentials.display().to_string(),
    ));
    let from_profile = vec![
        ("command", "backup".to_string()),
        ("source", d.join("app.db").display().to_string()),
        ("dest", "s3://bucket/q".to_string()),
    ];
    let runs = runs.into_iter().map(|inputs| (&env, inputs));
    let mut printed = String::new();
    for (env, inputs) in runs.chain([(&profile_env, from_profile)]) {
        let out = step(d, env, &inputs).await;
        assert_ne!(out.code(), Some(0), "{out}");
        // The secrets are registered with the runner, each escaped as the toolkit escapes it.
        let token = &secrets[1].1;
        assert!(
            out.stdout
                .contains(&format!("::add-mask::{}\n", token.replace('%', "%25"))),
            "{out}"
        );
        let without_masks: Vec<&str> = out
            .stdout
            .lines()
            .filter(|l| !l.starts_with("::add-mask::"))
            .collect();
        assert!(
            out.stderr.contains("[redacted]") || without_masks.join("\n").contains("[redacted]"),
            "{out}"
        );
        printed.push_str(&without_masks.join("\n"));
        printed.push_str(&out.stderr);
    }
    // The echo did see what it must not give back.
    assert!(echo.saw(&secrets[0].1), "the token reached the echo");
    assert!(echo.saw(&format!("Credential={}", secrets[2].1)));
    assert!(echo.saw(&header_secret));
    assert!(echo.saw(&format!("Credential={profile_key_id}")));
    // The TOTP codes the trigger sent.
    let codes: Vec<String> = echo
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.starts_with("POST /hook"))
        .filter_map(|r| r.split("authorization: Bearer ").nth(1))
        .map(|rest| rest.chars().take_while(char::is_ascii_digit).collect())
        .collect();
    assert!(
        !codes.is_empty() && codes.iter().all(|c| c.len() == 6),
        "{codes:?}"
    );
    let mut all_secrets = secrets.clone();
    all_secrets.extend(codes.into_iter().map(|c| ("a TOTP code", c)));
    all_secrets.push(("a profile's key id", profile_key_id));
    all_secrets.push(("query", query_secret));
    all_secrets.push(("header", header_secret));
    assert_clean("stdout and stderr", &printed, &all_secrets);
    let outputs = std::fs::read_to_string(d.join("output")).unwrap();
    assert!(outputs.contains("[redacted]"), "{outputs}");
    assert_clean("GITHUB_OUTPUT", &outputs, &all_secrets);
    assert_clean(
        "GITHUB_STEP_SUMMARY",
        &std::fs::read_to_string(d.join("summary")).unwrap(),
        &all_secrets,
    );
    let audit = files_under(&dest.join("audit"));
    assert!(audit.contains("[redacted]"), "{audit}");
    assert_clean("the audit record", &audit, &all_secrets);
    let check_runs: Vec<String> = github.seen().iter().map(|s| s.body.to_string()).collect();
    assert_eq!(check_runs.len(), 2, "{check_runs:?}");
    assert_clean("the check runs", &check_runs.join("\n"), &all_secrets);
}

fn urlencode(text: &str) -> String {
    forms(text)[1].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_url_with_credentials_is_refused_unsent() {
    let dir = tempfile::tempdir().unwrap();
    let echo = Echo::default();
    let echo_url = echo.start().await;
    let password = random("pw");
    let url = echo_url.replace("http://", &format!("http://user:{password}@"));
    let out = D1r2::new()
        .current_dir(dir.path())
        .env("TOTP_SECRET", "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP")
        .args(["trigger", "--url", &url, "--max-attempts", "1"])
        .run_async()
        .await;
    out.fails_with(2);
    assert!(out.stderr.contains("credentials"), "{out}");
    assert!(!out.stderr.contains(&password), "{out}");
    assert!(echo.seen.lock().unwrap().is_empty(), "a request was sent");
}

/// A database of one randomly named table whose values all start with `marker`, large enough
/// (4 MB) that a restore writes to its file before the end (SQLite's cache holds 2 MB).
fn private_database(path: &Path, table: &str, marker: &str) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(&format!(
        "CREATE TABLE \"{table}\"(id INTEGER PRIMARY KEY, ssn TEXT, note TEXT);"
    ))
    .unwrap();
    let tx = conn.unchecked_transaction().unwrap();
    for _ in 0..8000 {
        let value = format!("{marker}{:032x}", rand::random::<u128>());
        let note = format!("{marker}{}", "x".repeat(400));
        tx.execute(
            &format!("INSERT INTO \"{table}\"(ssn, note) VALUES (?1, ?2)"),
            [&value, &note],
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

/// Limits the files `cmd` writes to `bytes` each, with `SIGXFSZ` ignored, so a write past it
/// fails with EFBIG as on a full disk, whatever the filesystem.
#[cfg(target_env = "gnu")]
fn file_size_limit(cmd: &mut D1r2, bytes: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec only async-signal-safe calls are made (signal, setrlimit).
    unsafe {
        cmd.cmd().pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Restores the newest backup of `from` into `dir`/restored.db as an action step whose files
/// cannot grow past 256 KiB, and returns what the step printed and wrote: stdout, stderr, the
/// output and summary files.
#[cfg(target_env = "gnu")]
async fn restore_on_a_full_disk(dir: &Path, from: &str, env: &[(&'static str, String)]) -> String {
    let mut cmd = D1r2::new();
    cmd.current_dir(dir)
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_OUTPUT", dir.join("output"))
        .env("GITHUB_STEP_SUMMARY", dir.join("summary"))
        .env("INPUT_COMMAND", "restore")
        .env("INPUT_FROM", from)
        .env("INPUT_TO", dir.join("restored.db"))
        .envs(env.iter().map(|(k, v)| (k, v)));
    file_size_limit(&mut cmd, 256 * 1024);
    let out = cmd.run_async().await;
    out.fails_with(1);
    // It failed while applying the backup, where a statement and its values are at hand.
    assert!(out.stdout.contains("applying part"), "{out}");
    assert!(out.stdout.contains("statement"), "{out}");
    assert!(out.stdout.contains("disk"), "{out}");
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    format!(
        "{}\n{}\n{}\n{}",
        out.stdout,
        out.stderr,
        read("output"),
        read("summary")
    )
}

/// A restore that fails while applying a backup prints and stores none of its values, from a
/// folder and from a bucket; for an encrypted backup no exit names its table either, and the
/// audit record, stored in plain, carries no cause.
#[cfg(target_env = "gnu")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_failing_midway_prints_no_stored_value() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let table = random("patients_");
    let marker = random("SSN-").to_uppercase();
    private_database(&d.join("app.db"), &table, &marker);
    let key = format!(
        "{:032x}{:032x}",
        rand::random::<u128>(),
        rand::random::<u128>()
    );
    let s3 = fakes::s3::FakeS3::start(&["bucket"]).await;
    for (encrypted, dest) in [
        (true, d.join("sealed").display().to_string()),
        (false, d.join("plain").display().to_string()),
        (true, "s3://bucket/sealed".to_string()),
        (false, "s3://bucket/plain".to_string()),
    ] {
        let mut s3_env = s3.env();
        if encrypted {
            s3_env.push(("D1R2_ENCRYPTION_KEY", key.clone()));
        }
        let mut backup = D1r2::new();
        backup
            .args(["backup", "--source"])
            .arg(d.join("app.db"))
            .args(["--dest", &dest])
            .envs(s3_env.iter().map(|(k, v)| (k, v)));
        if encrypted {
            backup.arg("--encrypt");
        }
        backup.run_async().await.success();
        let step = tempfile::tempdir().unwrap();
        let shown = restore_on_a_full_disk(step.path(), &dest, &s3_env).await;
        assert!(
            !shown.contains(&marker),
            "{dest}: a value was shown:\n{shown}"
        );
        assert!(
            !encrypted || !shown.contains(&table),
            "{dest}: the table was named:\n{shown}"
        );
        let audit = match dest.strip_prefix("s3://bucket/") {
            Some(prefix) => files_under(&s3.root.path().join("bucket").join(prefix).join("audit")),
            None => files_under(&Path::new(&dest).join("audit")),
        };
        assert!(audit.contains("\"failure\""), "{dest}: {audit}");
        assert!(
            !audit.contains(&marker),
            "{dest}: a value was stored:\n{audit}"
        );
        assert!(
            !encrypted || !audit.contains(&table),
            "{dest}: the table was named:\n{audit}"
        );
    }
}

/// A backup of an encrypted backup that fails reading a table leaves an audit record, stored in
/// plain beside the backups, that names no table; a plain backup's names it (the same failure,
/// so the record is not merely empty). In a folder and in a bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_encrypted_backup_names_no_table_in_its_audit_record() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let table = random("t_");
    let db = d.join("app.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(&format!(
        "CREATE TABLE \"{table}\"(id INTEGER PRIMARY KEY, v TEXT);\
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)\
         INSERT INTO \"{table}\"(v) SELECT printf('%.300c', 'x') FROM n;"
    ))
    .unwrap();
    drop(conn);
    // The table's pages turned to noise; the schema on page 1 stays readable.
    let mut bytes = std::fs::read(&db).unwrap();
    let len = bytes.len();
    for b in &mut bytes[len - 40 * 4096..len - 10 * 4096] {
        *b = rand::random();
    }
    std::fs::write(&db, bytes).unwrap();
    let s3 = fakes::s3::FakeS3::start(&["bucket"]).await;
    let key = format!("{:064x}", rand::random::<u128>());
    for (encrypted, dest, audit) in [
        (
            true,
            d.join("sealed").display().to_string(),
            d.join("sealed/audit"),
        ),
        (
            false,
            d.join("plain").display().to_string(),
            d.join("plain/audit"),
        ),
        (
            true,
            "s3://bucket/sealed".into(),
            s3.root.path().join("bucket/sealed/audit"),
        ),
        (
            false,
            "s3://bucket/plain".into(),
            s3.root.path().join("bucket/plain/audit"),
        ),
    ] {
        let mut cmd = D1r2::new();
        cmd.args(["backup", "--source"])
            .arg(&db)
            .args(["--dest", &dest])
            .env("D1R2_ENCRYPTION_KEY", &key)
            .envs(s3.env());
        if encrypted {
            cmd.arg("--encrypt");
        }
        let out = cmd.run_async().await;
        out.fails_with(1);
        assert!(
            out.stderr.contains(&table),
            "the failure is reading the table\n{out}"
        );
        let records = files_under(&audit);
        assert!(records.contains("\"failure\""), "{dest}: {records}");
        assert_eq!(records.contains(&table), !encrypted, "{dest}: {records}");
    }
}

/// The lines of `text` as the runner reads them (a lone CR ends a line too) that it would take
/// for a workflow command, but the ones d1r2 itself prints.
fn commands_in(text: &str) -> Vec<String> {
    const OURS: [&str; 3] = ["::add-mask::", "::group::", "::endgroup::"];
    text.split(['\n', '\r'])
        .filter(|line| {
            let line = line.trim_start();
            (line.starts_with("::") && !OURS.iter().any(|o| line.starts_with(o)))
                || line.contains("##[")
        })
        .map(str::to_string)
        .collect()
}

/// Plants stored text that would act on a runner or a terminal: a label in the manifest of the
/// backup in `store` (a folder: on disk, or a bucket's folder in the fake S3's root) and an audit
/// record beside it. Returns words of it that `list` must still show.
fn plant(store: &Path) -> Vec<String> {
    let (a, b, c) = (random("label"), random("tok"), random("actor"));
    let backup = std::fs::read_dir(store)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("manifest.json").exists())
        .unwrap();
    let path = backup.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    manifest["label"] = format!(
        "{a}\n::set-output name=x::{b}\r::warning::{b}\n  ::stop-commands::{b}\n\
         \u{1b}[2J\u{1b}]0;{b}\u{7}\u{9b}31m ##[error]{b}\u{202e}"
    )
    .into();
    std::fs::write(&path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    std::fs::create_dir_all(store.join("audit")).unwrap();
    let record = serde_json::json!({
        "time": "2026-12-01T00:00:00Z",
        "operation": "backup",
        "outcome": "failure",
        "error": format!("::stop-commands::{b}\n::error::{b}\r\t::add-mask::x"),
        "actor": format!("\u{1b}[31m{c}"),
        "tool": "d1r2",
    });
    std::fs::write(
        store.join("audit/20261201T000000.000Z-backup-00000001.json"),
        serde_json::to_vec(&record).unwrap(),
    )
    .unwrap();
    vec![a, c]
}

/// `list` and `list --audit` of stored text that would start workflow commands or act on a
/// terminal: as an action step no line starts a command, in a terminal no escape sequence is
/// sent, and `--json` gives the text back exactly. From a folder and from a bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_text_starts_no_workflow_command_and_sends_no_escape() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::create_db(
        &d.join("app.db"),
        "CREATE TABLE t(a); INSERT INTO t VALUES (1);",
    );
    let s3 = fakes::s3::FakeS3::start(&["bucket"]).await;
    for (from, folder) in [
        (d.join("store").display().to_string(), d.join("store")),
        ("s3://bucket/p".to_string(), s3.root.path().join("bucket/p")),
    ] {
        D1r2::new()
            .args(["backup", "--source"])
            .arg(d.join("app.db"))
            .args(["--dest", &from])
            .envs(s3.env())
            .run_async()
            .await
            .success();
        let words = plant(&folder);
        for audit in [false, true] {
            let flag = if audit { "true" } else { "false" };
            let inputs = [
                ("command", "list".to_string()),
                ("from", from.clone()),
                ("audit", flag.into()),
            ];
            let out = step(d, &s3.env(), &inputs).await;
            out.success();
            let shown = format!("{}\n{}", out.stdout, out.stderr);
            assert_eq!(commands_in(&shown), Vec::<String>::new(), "{out}");
            let word = &words[usize::from(audit)];
            assert!(out.stdout.contains(word.as_str()), "{out}");
            let mut cli = D1r2::new();
            cli.args(["list", "--from", &from])
                .env_remove("GITHUB_ACTIONS")
                .envs(s3.env());
            if audit {
                cli.arg("--audit");
            }
            let out = cli.run_async().await;
            out.success();
            let out = format!("{}\n{}", out.stdout, out.stderr);
            assert!(
                !out.contains(['\u{1b}', '\u{9b}', '\u{7}', '\r', '\u{202e}']),
                "{out:?}"
            );
            assert!(out.contains(word.as_str()), "{out}");
            // In a workflow's `run:` step: the command line, in GitHub Actions.
            let mut run_step = D1r2::new();
            run_step
                .args(["list", "--from", &from])
                .env("GITHUB_ACTIONS", "true")
                .envs(s3.env());
            if audit {
                run_step.arg("--audit");
            }
            let out = run_step.run_async().await;
            out.success();
            let shown = format!("{}\n{}", out.stdout, out.stderr);
            assert_eq!(commands_in(&shown), Vec::<String>::new(), "{out}");
            assert!(shown.contains(word.as_str()), "{out}");
        }
        let out = D1r2::new()
            .args(["list", "--json", "--from", &from])
            .envs(s3.env())
            .run_async()
            .await;
        out.success();
        assert!(
            !out.stdout.contains(['\u{1b}', '\u{9b}', '\u{202e}']),
            "{out}"
        );
        let listed: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert!(
            listed[0]["label"].as_str().unwrap().contains("\u{1b}[2J"),
            "{listed}"
        );
        // As an action step too, less the lines of the step's own commands.
        let inputs = [
            ("command", "list".to_string()),
            ("from", from.clone()),
            ("json", "true".into()),
        ];
        let out = step(d, &s3.env(), &inputs).await;
        out.success();
        let json: Vec<&str> = out
            .stdout
            .lines()
            .filter(|l| !l.starts_with("::"))
            .collect();
        let listed: serde_json::Value = serde_json::from_str(&json.join("\n")).unwrap();
        assert!(
            listed[0]["label"].as_str().unwrap().contains("\u{9b}"),
            "{listed}"
        );
    }
}

/// An endpoint URL the user configured with credentials in it (`user:password@`), which a
/// parse error quotes, is shown without them, on the command line and in an action step's
/// outputs and summary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_an_endpoint_url_are_not_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let password = random("pw");
    // Unparseable URLs (an unclosed IPv6 host), so each error quotes the setting whole.
    let url = format!("http://user:{password}@[::1");
    let runs: [(&str, Vec<(&str, String)>); 2] = [
        (
            "firewall",
            vec![("list", "l".into()), ("dry-run", "true".into())],
        ),
        ("list", vec![("from", "s3://b/p".into())]),
    ];
    let env = [
        ("GITHUB_API_URL", url.clone()),
        ("AWS_ENDPOINT_URL_S3", url.clone()),
        ("AWS_ACCESS_KEY_ID", random("")),
        ("AWS_SECRET_ACCESS_KEY", random("")),
        ("CLOUDFLARE_API_TOKEN", random("")),
        ("CLOUDFLARE_ACCOUNT_ID", "a".into()),
    ];
    for (command, options) in runs {
        let mut cli = D1r2::new();
        cli.current_dir(d).arg(command).envs(env.clone());
        for (name, value) in &options {
            cli.arg(format!("--{name}"));
            if value != "true" {
                cli.arg(value);
            }
        }
        let out = cli.run_async().await;
        out.fails_with(1);
        assert!(out.stderr.contains("[redacted]@"), "{out}");
        assert!(!out.stderr.contains(&password), "{out}");
        let mut inputs = options.clone();
        inputs.push(("command", command.to_string()));
        let out = step(d, &env, &inputs).await;
        out.fails_with(1);
        let written = format!(
            "{}\n{}\n{}\n{}",
            out.stdout,
            out.stderr,
            std::fs::read_to_string(d.join("output")).unwrap(),
            std::fs::read_to_string(d.join("summary")).unwrap()
        );
        assert!(written.contains("[redacted]@"), "{written}");
        assert!(!written.contains(&password), "{written}");
    }
}
