//! Pushes a directory as a single-layer linux/amd64 image, for test suites
//! that need an image in a registry (see scripts/with-test-registry.sh):
//!
//!   cargo run -q -p hearth-oci --example push_image -- \
//!     --registry 127.0.0.1:5000 --name app:1 --rootfs DIR \
//!     [--compression gzip|zstd|none] [--env K=V ...] [--workdir /x] [--user u]
//!
//! Prints the pushed reference and manifest digest.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use hearth_oci::push::{PushRequest, push_rootfs};
use hearth_oci::{Compression, Credentials, ImageConfig};

#[derive(Parser)]
#[command(about = "Push a directory as a single-layer linux/amd64 image")]
struct Args {
    /// host:port of the registry; loopback ones are plain HTTP.
    #[arg(long)]
    registry: String,
    /// Repository and tag, e.g. `app:1`.
    #[arg(long)]
    name: String,
    /// The directory that becomes the image's `/`.
    #[arg(long)]
    rootfs: PathBuf,
    #[arg(long, value_enum, default_value_t = CompressionArg::Gzip)]
    compression: CompressionArg,
    /// An environment variable of the image config, `K=V`; repeatable.
    #[arg(long = "env")]
    env: Vec<String>,
    #[arg(long)]
    workdir: Option<String>,
    #[arg(long)]
    user: Option<String>,
    /// A login for a registry that wants one (with `--password`).
    #[arg(long, requires = "password")]
    username: Option<String>,
    #[arg(long, requires = "username")]
    password: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum CompressionArg {
    Gzip,
    Zstd,
    None,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(bad) = args.env.iter().find(|kv| !kv.contains('=')) {
        eprintln!("push_image: --env {bad}: expected K=V");
        return ExitCode::from(2);
    }
    let config = ImageConfig {
        env: args.env.clone(),
        working_dir: args.workdir.clone(),
        user: args.user.clone(),
        ..ImageConfig::default()
    };
    let reference = format!("{}/{}", args.registry, args.name);
    let credentials = args
        .username
        .clone()
        .zip(args.password.clone())
        .map(|(username, password)| Credentials { username, password });
    let request = PushRequest {
        reference: &reference,
        rootfs: &args.rootfs,
        compression: match args.compression {
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::Zstd => Compression::Zstd,
            CompressionArg::None => Compression::None,
        },
        config: &config,
        architecture: "amd64",
        credentials: credentials.as_ref(),
        insecure_registries: &[],
    };
    match push_rootfs(&request).await {
        Ok(pushed) => {
            println!("{} {}", pushed.reference, pushed.manifest_digest);
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("push_image: {err}");
            ExitCode::FAILURE
        }
    }
}
