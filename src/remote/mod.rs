//! Clients of the remote services: the Cloudflare API, GitHub check runs, and the one retry
//! policy they share.

pub mod checks;
pub mod cloudflare;
pub mod http;
pub mod retry;
