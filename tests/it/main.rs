//! The cross-service end-to-end suite: real PostgreSQL, real Redis, real gRPC on loopback.

// Tests may unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used)]

mod access;
mod activation;
mod alerts;
mod announcements;
mod approval;
mod audit;
mod authorization;
mod bad_input;
mod bus;
mod changes;
mod cli;
mod cli_approvals;
mod cli_requests;
mod dev;
mod directory;
mod discovery;
mod group_membership;
mod holders;
mod internal;
mod jwks;
mod mtls;
mod notification;
mod policies;
mod policy_documents;
mod redaction;
mod replicas;
mod reviews;
mod roles;
mod schedules;
mod skeleton;
mod support;
