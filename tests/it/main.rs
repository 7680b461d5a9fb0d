//! The cross-service end-to-end suite: real PostgreSQL, real Redis, real gRPC on loopback.

mod bad_input;
mod bus;
mod dev;
mod skeleton;
mod support;
