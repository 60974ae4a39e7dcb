//! `lakegate-sidecar`: the pod-local S3 endpoint alone, without the central service's SQL engine or policy
//! engine (see the crate docs).

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(name = "lakegate-sidecar", version, about = "Loopback S3 endpoint acting with a pod's identity token")]
struct Cli {
    #[command(flatten)]
    args: lakegate_sidecar::cli::Args,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("LAKEGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    match lakegate_sidecar::cli::run(cli.args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
