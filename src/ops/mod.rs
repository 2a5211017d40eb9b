//! The operations, each written against the `Source` and `Store` seams and the backup format:
//! backup, restore (to a file or to D1), verify, export, drill, prune with its retention policy
//! and audit trail, and the two that do not touch a backup: firewall and trigger (with totp).

pub mod audit;
pub mod backup;
pub mod drill;
pub mod export;
pub mod firewall;
pub mod import;
pub mod prune;
pub mod restore;
pub mod retention;
pub mod totp;
pub mod trigger;
pub mod verify;
