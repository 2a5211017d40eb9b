//! In-process fakes of the services d1r2 talks to, speaking their real wire protocols.
#![allow(dead_code)]

pub mod d1;
pub mod github;
pub mod lists;
pub mod s3;
