//! The operations, each written against the `Source` and `Store` seams and the backup format:
//! backup, restore (to a file or to D1), verify, export, drill, prune with its retention policy
//! and audit trail, and the two that do not touch a backup: firewall and trigger (with totp).

pub(crate) mod audit;
pub(crate) mod backup;
pub(crate) mod check;
pub(crate) mod drill;
pub(crate) mod erase;
pub(crate) mod erasures;
pub(crate) mod export;
pub(crate) mod find;
pub(crate) mod firewall;
pub(crate) mod forget;
pub(crate) mod import;
pub(crate) mod prune;
pub(crate) mod restore;
pub(crate) mod retention;
pub(crate) mod rewrite;
pub(crate) mod scratch;
pub(crate) mod totp;
pub(crate) mod trigger;
pub(crate) mod verify;
