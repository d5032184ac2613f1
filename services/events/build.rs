//! Generates the `uaprof.events.v1` messages into `OUT_DIR` (messages only: Kafka carries
//! them, there is no service). `protoc` comes from `protoc-bin-vendored`, as in content-rpc.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let proto = proto_root.join("uaprof/events/v1/events.proto");
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        // Document bodies become `Bytes` without a copy.
        .bytes(".uaprof.events.v1.PutDocument.content")
        .compile_with_config(config, &[proto], &[proto_root])?;
    Ok(())
}
