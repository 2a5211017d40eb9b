//! A local cloud for d1r2: fake D1, Cloudflare Lists, S3 and GitHub servers and an app backup
//! endpoint in one process, on fixed loopback ports (the fakes of d1r2's tests). Prints the
//! environment that points d1r2 at it, then serves until interrupted. docs/local-cloud.md says
//! how to use it.
//!
//! `cargo run --example local_cloud -- [--port-base 8780] [--d1 NAME=FILE.db ...] [--bucket NAME]`

mod cloud;
#[allow(
    dead_code,
    reason = "the local cloud runs the fakes; the tests' knobs stay unused"
)]
#[path = "../../tests/it/fakes/mod.rs"]
mod fakes;

use std::io::Write;
use std::path::PathBuf;

use clap::Parser;

/// The default first port: the Cloudflare API there, S3, GitHub and the app on the next three.
const PORT_BASE: u16 = 8780;

#[derive(Parser)]
#[command(about = "Fake D1, Cloudflare Lists, S3 and GitHub servers for trying d1r2 locally")]
struct Args {
    /// The Cloudflare API's port; S3, GitHub and the app endpoint take the next three
    /// (0: any free ports).
    #[arg(long, default_value_t = PORT_BASE)]
    port_base: u16,
    /// A D1 database to serve, a copy of a SQLite file; repeat for more (default: one named
    /// `app` with a few rows).
    #[arg(long = "d1", value_name = "NAME=FILE", value_parser = database)]
    databases: Vec<(String, PathBuf)>,
    /// The S3 bucket to create.
    #[arg(long, default_value = "backups")]
    bucket: String,
}

fn database(text: &str) -> Result<(String, PathBuf), String> {
    let (name, file) = text
        .split_once('=')
        .ok_or("expected NAME=FILE, e.g. app=app.db")?;
    let file = PathBuf::from(file);
    if !file.is_file() {
        return Err(format!("{}: no such file", file.display()));
    }
    Ok((name.to_string(), file))
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let cloud = cloud::LocalCloud::start(&cloud::Options {
        port_base: args.port_base,
        databases: args.databases,
        bucket: args.bucket,
    })
    .await;
    let mut out = std::io::stdout();
    let _ = write!(out, "{}", cloud.exports());
    let _ = out.flush();
    eprintln!(
        "local cloud up (objects under {}); Ctrl-C stops it",
        cloud.s3.root.path().display()
    );
    let _ = tokio::signal::ctrl_c().await;
}
