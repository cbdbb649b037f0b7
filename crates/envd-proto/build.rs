//! Compiles the envd `.proto` files with protox (a pure-Rust protobuf
//! compiler), so building needs no `protoc` on the machine, then hands the
//! descriptor set to connectrpc-build for message types and service traits.
//!
//! Cargo re-runs this script only when one of its inputs changes, and every
//! input is named below. connectrpc-build's own re-run directives are turned
//! off: with a precompiled descriptor set it asks cargo to watch that set,
//! which this script writes on every run, so cargo would find it newer than
//! the run and rebuild envd-proto (and envd) on every build.

use std::path::PathBuf;

use prost::Message;

const PROTOS: [&str; 2] = ["process/process.proto", "filesystem/filesystem.proto"];
/// The variable buffa's code generator reads (`buffa_codegen::ELEMENT_MEMORY_LIMIT_ENV`,
/// not a dependency of ours); connectrpc-build would have watched it.
const BUFFA_MEMORY_LIMIT_ENV: &str = "BUFFA_ELEMENT_MEMORY_LIMIT";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // The whole directory: an import added to a .proto is an input too.
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-env-changed={BUFFA_MEMORY_LIMIT_ENV}");
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
        .emit_rerun_directives(false)
        .compile()?;
    Ok(())
}
