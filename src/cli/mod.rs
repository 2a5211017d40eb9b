//! The command line and the GitHub Action: parsing arguments and `INPUT_*`, running a command
//! against the layers below, and turning its result into exit codes, job outputs and summaries.

pub(crate) mod action;
pub(crate) mod args;
pub(crate) mod commands;
pub(crate) mod location;
pub(crate) mod process;
