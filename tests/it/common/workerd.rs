//! Cloudflare's own D1 engine, as `wrangler dev --local` runs it in workerd, behind the REST API
//! d1r2 speaks: tests/workerd/worker.js answers every request through the D1 binding.
//!
//! Each `Workerd` is one `wrangler dev` process with its own port, configuration and persisted
//! state in a temporary folder, killed (with its workerd) when dropped. The tool is the locked
//! `wrangler` of tests/workerd; `scripts/test` installs it (`npm ci`), and a test that finds it
//! missing fails and says how to install it rather than passing without it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use d1r2::CloudflareApi as Api;
use d1r2::RetryPolicy;
use d1r2::source::d1::D1Source;
use sha2::{Digest, Sha256};

pub const TOKEN: &str = "workerd-test-token-7d2a";
pub const ACCOUNT: &str = "fedcba9876543210fedcba9876543210";

/// How long `wrangler dev` may take to answer (it takes a few seconds on an idle machine).
const START_TIMEOUT: Duration = Duration::from_secs(90);

pub struct Workerd {
    /// The API base, as `CLOUDFLARE_API_BASE_URL`.
    pub url: String,
    /// `http://127.0.0.1:<port>`, where the Worker answers.
    pub origin: String,
    dir: tempfile::TempDir,
    databases: Vec<(String, String)>,
    child: Option<Child>,
}

/// The folder of the locked wrangler and the Workers.
pub fn package() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/workerd")
}

fn wrangler() -> PathBuf {
    let bin = package().join("node_modules/wrangler/bin/wrangler.js");
    assert!(
        bin.exists(),
        "wrangler is not installed in {}: run `npm ci --prefix tests/workerd` (./scripts/test does), with node 20 or later",
        package().display()
    );
    bin
}

fn quick() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 8,
        initial_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(50),
        deadline: Duration::from_secs(60),
    }
}

/// The id of the `n`-th database of a configuration (D1 ids are UUIDs).
fn uuid(n: usize) -> String {
    format!("{:08x}-0000-4000-8000-{:012x}", n + 1, n + 1)
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    block[..key.len()].copy_from_slice(key);
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// The SQLite file miniflare keeps a D1 database in: named by the Durable Object id of the
/// database id, which workerd derives as `idFromName` does (HMAC-SHA256 under the SHA-256 of the
/// object class's unique key, then a MAC of the first half).
fn object_file(state: &Path, database_id: &str) -> PathBuf {
    let key = Sha256::digest(b"miniflare-D1DatabaseObject");
    let name = hmac_sha256(&key, database_id.as_bytes());
    let mac = hmac_sha256(&key, &name[..16]);
    let id = format!("{}{}", hex::encode(&name[..16]), hex::encode(&mac[..16]));
    state.join(format!("v3/d1/miniflare-D1DatabaseObject/{id}.sqlite"))
}

/// A string as TOML writes it (JSON's escapes are TOML's).
pub fn toml_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// SQL as a D1 database can hold it: the lines naming `_cf_` tables (D1's own, which D1 refuses
/// to let anyone create or write) left out.
pub fn as_d1_holds(sql: &str) -> String {
    sql.lines()
        .filter(|line| !line.contains("_cf_"))
        .map(|line| format!("{line}\n"))
        .collect()
}

impl Workerd {
    /// The configuration of databases `names` in a fresh folder, without starting anything:
    /// enough for `wrangler d1 execute --local`.
    pub fn configure(names: &[&str]) -> Workerd {
        let dir = tempfile::tempdir().unwrap();
        let databases: Vec<(String, String)> = names
            .iter()
            .enumerate()
            .map(|(n, name)| (name.to_string(), uuid(n)))
            .collect();
        let listed: Vec<serde_json::Value> = databases
            .iter()
            .enumerate()
            .map(|(n, (name, id))| serde_json::json!({"binding": format!("DB{n}"), "name": name, "uuid": id}))
            .collect();
        let mut config = format!(
            "name = \"d1r2-tests\"\nmain = {main}\ncompatibility_date = \"2025-01-01\"\n\n[vars]\nTOKEN = \"{TOKEN}\"\nACCOUNT = \"{ACCOUNT}\"\nDATABASES = {list}\n",
            main = toml_string(&package().join("worker.js").to_string_lossy()),
            list = toml_string(&serde_json::Value::Array(listed).to_string()),
        );
        for (n, (name, id)) in databases.iter().enumerate() {
            config.push_str(&format!(
                "\n[[d1_databases]]\nbinding = \"DB{n}\"\ndatabase_name = {}\ndatabase_id = \"{id}\"\n",
                toml_string(name)
            ));
        }
        std::fs::write(dir.path().join("wrangler.toml"), config).unwrap();
        Workerd {
            url: String::new(),
            origin: String::new(),
            dir,
            databases,
            child: None,
        }
    }

    /// `wrangler dev --local` serving databases `names` (empty), answering once this returns.
    pub fn start(names: &[&str]) -> Workerd {
        let mut w = Workerd::configure(names);
        w.launch();
        w.url = format!("{}/client/v4", w.origin);
        w
    }

    /// `wrangler dev --local` with the configuration `config` (TOML, its `main` an absolute
    /// path), whose Worker must answer `GET /health` with 200; answering once this returns.
    pub fn start_with(config: &str) -> Workerd {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("wrangler.toml"), config).unwrap();
        let mut w = Workerd {
            url: String::new(),
            origin: String::new(),
            dir,
            databases: Vec::new(),
            child: None,
        };
        w.launch();
        w
    }

    /// Starts `wrangler dev` with this folder's configuration on a free port and waits for
    /// `GET /health` to answer 200.
    fn launch(&mut self) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(self.dir.path().join("wrangler.log")).unwrap();
        let mut command = self.wrangler_command(&[
            "dev",
            "--local",
            "--ip",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--inspector-port",
            "0",
        ]);
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // Its own process group, so that dropping it ends workerd too.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        self.child = Some(
            command
                .spawn()
                .expect("starting wrangler dev (is node installed?)"),
        );
        let started = Instant::now();
        while !healthy(port) {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("wrangler dev ended ({status}):\n{}", self.log());
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "wrangler dev did not answer:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self.origin = format!("http://127.0.0.1:{port}");
    }

    /// Wrangler with the configuration and state of this folder, offline: no metrics, no update
    /// check, nothing written outside the folder.
    fn wrangler_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("node");
        command
            .arg(wrangler())
            .args(args)
            .arg("--config")
            .arg(self.dir.path().join("wrangler.toml"))
            .arg("--persist-to")
            .arg(self.state())
            .current_dir(self.dir.path())
            .env("WRANGLER_SEND_METRICS", "false")
            .env("WRANGLER_LOG", "warn")
            .env("CI", "true")
            .env("HOME", self.dir.path())
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env_remove("CLOUDFLARE_API_TOKEN")
            .env_remove("CLOUDFLARE_ACCOUNT_ID");
        command
    }

    /// The persisted state's folder, as `--persist-to` takes it.
    fn state(&self) -> PathBuf {
        self.dir.path().join(".wrangler/state")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("wrangler.log")).unwrap_or_default()
    }

    /// The id of the database named or identified by `database`.
    pub fn id(&self, database: &str) -> String {
        self.databases
            .iter()
            .find(|(name, id)| name == database || id == database)
            .unwrap_or_else(|| panic!("no database {database} configured"))
            .1
            .clone()
    }

    pub fn api(&self) -> Api {
        Api::new(&self.url, TOKEN, ACCOUNT, quick())
    }

    /// Fills database `name` with `sql` through D1's import API (one transaction, foreign keys
    /// checked at its end), as `wrangler d1 execute --file` fills a remote database.
    pub async fn load(&self, name: &str, sql: &str) {
        let file = self.dir.path().join(format!("{name}-load.sql"));
        let body = format!("PRAGMA defer_foreign_keys=TRUE;\n{sql}");
        std::fs::write(&file, &body).unwrap();
        let etag = hex::encode(md5::Md5::digest(body.as_bytes()));
        D1Source::connect(self.api(), &self.id(name))
            .await
            .unwrap()
            .import(&file, body.len() as u64, &etag)
            .await
            .unwrap_or_else(|e| panic!("loading {name} into workerd's D1: {e}"));
    }

    /// Runs `sql` on database `name` (as the application would), through D1.
    pub async fn execute(&self, name: &str, sql: &str) {
        let path = self
            .api()
            .account_path(&format!("d1/database/{}/raw", self.id(name)));
        let _: serde_json::Value = self
            .api()
            .result(
                reqwest::Method::POST,
                &path,
                Some(&serde_json::json!({ "sql": sql })),
                "executing",
            )
            .await
            .unwrap();
    }

    /// Applies the SQL file at `file` to database `name` with the stock
    /// `wrangler d1 execute --local --file`, as a user restores an export by hand.
    pub fn execute_file(&self, name: &str, file: &Path) -> std::process::Output {
        self.wrangler_command(&[
            "d1",
            "execute",
            name,
            "--local",
            "--yes",
            "--file",
            &file.to_string_lossy(),
        ])
        .output()
        .expect("running wrangler d1 execute")
    }

    /// Applies the migrations in `folder` to database `name` with the stock
    /// `wrangler d1 migrations apply --local` (the folder copied to where the configuration says
    /// migrations are, its default `migrations/`).
    pub fn migrations_apply(&self, name: &str, folder: &Path) -> std::process::Output {
        let to = self.dir.path().join("migrations");
        let _ = std::fs::remove_dir_all(&to);
        std::fs::create_dir_all(&to).unwrap();
        for entry in std::fs::read_dir(folder).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
        self.wrangler_command(&["d1", "migrations", "apply", name, "--local"])
            .output()
            .expect("running wrangler d1 migrations apply")
    }

    /// Copies database `name` (or id) as D1 holds it into the SQLite file `to`, to compare cell
    /// by cell.
    /// D1 keeps it in a SQLite file in WAL mode, which a second reader may read while workerd
    /// runs.
    pub fn save(&self, name: &str, to: &Path) {
        let file = object_file(&self.state(), &self.id(name));
        assert!(
            file.exists(),
            "workerd has no file for {name}: {}",
            file.display()
        );
        let from = rusqlite::Connection::open_with_flags(
            &file,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        let mut out = rusqlite::Connection::open(to).unwrap();
        rusqlite::backup::Backup::new(&from, &mut out)
            .unwrap()
            .run_to_completion(1000, Duration::ZERO, None)
            .unwrap();
    }
}

impl Drop for Workerd {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // SAFETY: a plain kill(2) of the process group this struct started.
            unsafe {
                libc::kill(-(child.id() as i32), libc::SIGKILL);
            }
            let _ = child.wait();
        }
    }
}

/// Whether the Worker answers on `port`.
fn healthy(port: u16) -> bool {
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}
