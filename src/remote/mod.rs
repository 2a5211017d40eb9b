//! Clients of the remote services: the Cloudflare API, GitHub check runs, heartbeat pings, and
//! the one retry policy they share.

pub(crate) mod checks;
pub(crate) mod cloudflare;
pub(crate) mod heartbeat;
pub(crate) mod http;
pub(crate) mod retry;
