//! The command line and the GitHub Action: parsing arguments and `INPUT_*`, running a command
//! against the layers below, and turning its result into exit codes, job outputs and summaries.

pub mod action;
pub mod args;
pub mod commands;
pub mod location;
pub mod process;
