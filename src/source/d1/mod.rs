//! Cloudflare D1 over its REST API as a source.

mod wire;

pub use self::wire::*;
