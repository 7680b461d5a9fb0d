//! Rules of the assignment context, free of I/O.

pub mod access;
pub mod change;
pub mod policy;
pub mod roles;
pub mod scope;
