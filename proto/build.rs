//! Compiles every `.proto` under `skywire/` into tonic/prost code plus one file-descriptor set.
//!
//! protoc comes from `protoc-bin-vendored`; set `$PROTOC` to use another one. The test-only
//! `skywire/testing` package is compiled only with the `testing` feature.

use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-env-changed=PROTOC");
    println!("cargo:rerun-if-changed=skywire");

    let testing = std::env::var_os("CARGO_FEATURE_TESTING").is_some();
    let mut protos = Vec::new();
    collect_protos(Path::new("skywire"), &mut protos)?;
    protos.retain(|p| testing || !p.starts_with("skywire/testing"));
    protos.sort();

    let protoc = match std::env::var_os("PROTOC") {
        Some(path) => PathBuf::from(path),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    // `prost::Name` on every message: the strict codec tells requests by their name.
    config.enable_type_names();

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("skywire_descriptor.bin"))
        .codec_path("crate::codec::StrictCodec")
        .compile_with_config(config, &protos, &[PathBuf::from(".")])?;
    Ok(())
}

/// Every `*.proto` file below `dir`, recursively.
fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
