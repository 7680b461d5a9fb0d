//! The cross-service end-to-end suite: real PostgreSQL, real Redis, real gRPC on loopback.

// Tests may unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used)]

mod access;
mod announcements;
mod authorization;
mod bad_input;
mod bus;
mod changes;
mod cli;
mod dev;
mod directory;
mod holders;
mod internal;
mod jwks;
mod mtls;
mod policies;
mod roles;
mod schedules;
mod skeleton;
mod support;
