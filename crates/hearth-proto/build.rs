//! Compiles the orchestrator's `.proto` with protox (pure Rust, no `protoc`)
//! and generates tonic clients and servers from the descriptor set.

const PROTO: &str = "hearth/orchestrator/v1/orchestrator.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/{PROTO}");
    let descriptors = protox::Compiler::new(["proto"])?
        .include_imports(true)
        .include_source_info(true)
        .open_files([PROTO])?
        .file_descriptor_set();
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
