//! Compiles `proto/` with protox, so a machine with only cargo builds the contracts.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    // tonic-prost-build prints no rerun-if-changed of its own.
    println!("cargo:rerun-if-changed={}", root.display());
    let files = [
        "pim/events/v1/events.proto",
        "pim/assignment/v1/assignment.proto",
        "pim/activation/v1/activation.proto",
        "pim/approval/v1/approval.proto",
        "pim/notification/v1/notification.proto",
        "pim/audit/v1/audit.proto",
        "pim/audit/v1/alerts.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    let fds = protox::compile(files, [&root])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("pim_descriptor.bin"), fds.encode_to_vec())?;
    let mut config = tonic_prost_build::Config::new();
    // `prost::Name` gives every message its type url, for packing event payloads into `Any`.
    config.enable_type_names();
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds_with_config(fds, config)?;
    Ok(())
}
