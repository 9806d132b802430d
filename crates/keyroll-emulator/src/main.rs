//! `keyroll-emulator`: serves an offline Key Vault, Entra ID and managed-identity endpoint,
//! prints one line `READY {json}` on stdout, and serves until Ctrl-C.

use clap::Parser;

/// Command line of the `keyroll-emulator` binary.
#[derive(Debug, Parser)]
#[command(
    name = "keyroll-emulator",
    version,
    about = "Offline Azure Key Vault, Entra ID and managed-identity emulator"
)]
struct Cli {
    #[command(flatten)]
    serve: keyroll_emulator::ServeArgs,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keyroll-emulator: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(keyroll_emulator::run(cli.serve)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyroll-emulator: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
