//! Creates the quick start's demo database: a small app schema with the awkward cases d1r2 exists
//! for (big integers, BLOBs, full-text search, AUTOINCREMENT, triggers), so the first backup a
//! user runs shows them surviving. Usage: `demo_db PATH`. A binary of the package rather than an
//! example, so that `scripts/demo` builds it with the release build CI and the container image
//! make (an example would pull the test-only dependencies in, with other features, and the next
//! `cargo build --release --bin d1r2` would compile most of the tree again).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: demo_db PATH (the SQLite file to create)")?;
    let _ = std::fs::remove_file(&path);
    let conn = rusqlite::Connection::open(&path)?;
    conn.execute_batch(include_str!("../../tests/fixtures/edge.sql"))?;
    println!("created {path}");
    Ok(())
}
