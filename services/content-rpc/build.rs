//! Generates the `uaprof.content.v1` messages, client and server into `OUT_DIR`.
//!
//! `protoc` comes from `protoc-bin-vendored` and is handed to prost through its config (not
//! through the `PROTOC` environment variable), so the build needs no system protobuf compiler
//! and does not depend on what the build machine has installed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let proto = proto_root.join("uaprof/content/v1/content.proto");

    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);

    tonic_prost_build::configure()
        // Document bodies are `Bytes` in the store: share them instead of copying per reply.
        .bytes(".uaprof.content.v1.DocumentReply.content")
        .compile_with_config(config, &[proto], &[proto_root])?;
    Ok(())
}
