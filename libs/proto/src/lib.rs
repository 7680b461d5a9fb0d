//! PIM's gRPC contracts, generated at build time from `proto/`. Nothing here is hand-written
//! except the module tree and the type-url helper.

#![allow(clippy::all, missing_docs)]

pub mod events {
    pub mod v1 {
        tonic::include_proto!("pim.events.v1");
    }
}
pub mod assignment {
    pub mod v1 {
        tonic::include_proto!("pim.assignment.v1");
    }
}
pub mod activation {
    pub mod v1 {
        tonic::include_proto!("pim.activation.v1");
    }
}
pub mod approval {
    pub mod v1 {
        tonic::include_proto!("pim.approval.v1");
    }
}
pub mod notification {
    pub mod v1 {
        tonic::include_proto!("pim.notification.v1");
    }
}
pub mod audit {
    pub mod v1 {
        tonic::include_proto!("pim.audit.v1");
    }
}

/// The encoded `FileDescriptorSet` of every PIM package, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/pim_descriptor.bin"));

pub use prost_types::{Any, Duration, Timestamp};

/// Packs a message into a `google.protobuf.Any` under its fully qualified name.
pub fn pack<M: prost::Name>(message: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: prost::Message::encode_to_vec(message),
    }
}

/// A `Timestamp` from milliseconds since the epoch, the form in which PIM stores instants.
pub fn timestamp_from_millis(millis: i64) -> Timestamp {
    Timestamp {
        seconds: millis.div_euclid(1000),
        nanos: (millis.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// Milliseconds since the epoch; sub-millisecond precision is dropped.
pub fn millis_from_timestamp(ts: &Timestamp) -> i64 {
    ts.seconds * 1000 + i64::from(ts.nanos) / 1_000_000
}
