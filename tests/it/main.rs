//! The integration tests, in one binary: the tree is linked once, not once per file, and the
//! helpers in `common` and the fakes in `fakes` are shared modules rather than copies.

/// The local cloud of examples/local_cloud, which `local_cloud` starts in-process.
#[path = "../../examples/local_cloud/cloud.rs"]
mod cloud;
mod common;
mod fakes;

mod action;
mod app_endpoint;
mod architecture;
mod bucket_errors;
mod checks;
mod chunks;
mod cli;
mod consistency;
mod d1;
mod destinations;
mod encryption;
mod faults;
mod firewall;
mod forget;
mod freshness;
mod heartbeat;
mod local_cloud;
mod point_in_time;
mod prune;
mod redaction;
mod restore_target;
mod roundtrip;
mod runner;
mod secrets;
mod shared_store;
mod source_conformance;
mod store_conformance;
mod trigger;
