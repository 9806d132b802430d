//! `keyroll`: a developer's command for vault-held keys. It gets Entra ID tokens with a
//! client assertion signed in Key Vault (no certificate ever leaves the vault), mints and
//! verifies service tokens, prints key sets, and runs the offline emulator
//! (feature `emulator`, on by default).

mod commands;
mod connection;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// keyroll: tokens from vault-held keys, with no certificate ever leaving the vault.
#[derive(Debug, Parser)]
#[command(name = "keyroll", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the offline Key Vault / Entra ID / managed-identity emulator; prints `READY {json}`.
    #[cfg(feature = "emulator")]
    Emulator(keyroll_emulator::ServeArgs),
    /// Get an Entra ID access token with a client assertion signed by a vault certificate.
    Token(commands::TokenArgs),
    /// Print a vault certificate's key id and thumbprints (to pass to `token --key-id --x5t`).
    KeyInfo(commands::KeyInfoArgs),
    /// Mint a self-signed service token with a vault key or certificate.
    Mint(commands::MintArgs),
    /// Verify a token against a JWKS, an OIDC issuer or a vault; prints its claims.
    Verify(commands::VerifyArgs),
    /// Print the validation key set of a vault key or certificate as JWKS.
    Jwks(commands::JwksArgs),
    /// Disable one version of a vault key or certificate (by kid or version id): emergency
    /// revocation; validators drop it at their next refresh.
    Revoke(commands::RevokeArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KEYROLL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(&error),
    };
    let result = runtime.block_on(async {
        match cli.command {
            #[cfg(feature = "emulator")]
            Command::Emulator(args) => keyroll_emulator::run(args).await.map_err(Into::into),
            Command::Token(args) => commands::token(args).await,
            Command::KeyInfo(args) => commands::key_info(args).await,
            Command::Mint(args) => commands::mint(args).await,
            Command::Verify(args) => commands::verify(args).await,
            Command::Jwks(args) => commands::jwks(args).await,
            Command::Revoke(args) => commands::revoke(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(error.as_ref()),
    }
}

/// Prints the error and its causes on one line, leaving out what a cause repeats.
fn fail(error: &dyn std::error::Error) -> ExitCode {
    eprintln!("keyroll: {}", one_line(error));
    ExitCode::FAILURE
}

fn one_line(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        cause = inner.source();
        let text = inner.to_string();
        let last_part = text.rsplit(": ").next().unwrap_or_default();
        if line.contains(&text) || line.contains(last_part) {
            continue;
        }
        let mut rest = text.as_str();
        while let Some((head, tail)) = rest.split_once(": ") {
            if !line.contains(head) {
                break;
            }
            rest = tail;
        }
        line.push_str(": ");
        line.push_str(rest);
    }
    line.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    #[test]
    fn a_thumbprint_may_start_with_a_hyphen() {
        let cli = super::Cli::try_parse_from([
            "keyroll",
            "token",
            "--vault",
            "https://v.vault.azure.net",
            "--tenant",
            "t",
            "--client-id",
            "c",
            "--certificate",
            "cert",
            "--scope",
            "s/.default",
            "--key-id",
            "https://v.vault.azure.net/keys/cert/0",
            "--x5t",
            "--DOlnVJzUOSbe0II8MnG_s-7BY",
        ]);
        assert!(cli.is_ok(), "{:?}", cli.err());
    }

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Layer(String, #[source] Option<Box<Layer>>);

    #[test]
    fn causes_join_without_repeating() {
        let inner = Layer(
            "vault v: keys/k: list failed (404 KeyNotFound): no such key".into(),
            None,
        );
        let middle = Layer(
            "vault v: keys/k: list failed: (404 KeyNotFound): no such key".into(),
            Some(Box::new(inner)),
        );
        let outer = Layer(
            "keys from vault v: keys/k are unavailable".into(),
            Some(Box::new(middle)),
        );
        assert_eq!(
            super::one_line(&outer),
            "keys from vault v: keys/k are unavailable: list failed: (404 KeyNotFound): no such key"
        );
    }
}
