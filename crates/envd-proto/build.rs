//! Compiles the envd `.proto` files with protox (a pure-Rust protobuf
//! compiler), so building needs no `protoc` on the machine, then hands the
//! descriptor set to connectrpc-build for message types and service traits.

use std::path::PathBuf;

use prost::Message;

const PROTOS: [&str; 2] = ["process/process.proto", "filesystem/filesystem.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    for proto in PROTOS {
        println!("cargo:rerun-if-changed=proto/{proto}");
    }
    let descriptors = protox::Compiler::new(["proto"])?
        .include_imports(true)
        .include_source_info(true)
        .open_files(PROTOS)?
        .file_descriptor_set();
    let set_path = out_dir.join("envd_descriptor.bin");
    std::fs::write(&set_path, descriptors.encode_to_vec())?;
    connectrpc_build::Config::new()
        .files(&PROTOS)
        .descriptor_set(&set_path)
        .include_file("_connectrpc.rs")
        .compile()?;
    Ok(())
}
