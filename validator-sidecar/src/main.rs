//! `tessera-sidecar`: parses the configuration (the environment is read there only),
//! initialises telemetry, binds the listeners and hands over to [`tessera_sidecar::run`]
//! until SIGTERM or SIGINT.

use std::process::ExitCode;

use tessera_sidecar::{Listeners, SidecarConfig};

/// Prefix of every error this program prints, the issuer's style (`tessera-issuer: error:`).
const ERROR_PREFIX: &str = "tessera-sidecar: error:";

fn main() -> ExitCode {
    let config = match SidecarConfig::from_env() {
        Ok(config) => config,
        Err(error) => {
            let code = error.exit_code();
            match error {
                tessera_sidecar::ConfigError::Cli(error) if !error.use_stderr() => {
                    let _ = error.print();
                }
                tessera_sidecar::ConfigError::Cli(error) => {
                    let rendered = error.render().to_string();
                    let message = rendered.strip_prefix("error: ").unwrap_or(&rendered);
                    eprint!("{ERROR_PREFIX} {message}");
                }
                error => eprintln!("{ERROR_PREFIX} {error}"),
            }
            return ExitCode::from(u8::try_from(code).unwrap_or(1));
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{ERROR_PREFIX} cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(config))
}

async fn serve(config: SidecarConfig) -> ExitCode {
    let _telemetry = tessera_common::telemetry::init(
        "tessera-sidecar",
        config.telemetry.otlp_endpoint.as_deref(),
        config.telemetry.log_json,
    );
    if config.telemetry.used_deprecated_log_format {
        tracing::warn!(
            "TESSERA_LOG_FORMAT is deprecated; set TESSERA_LOG_JSON=true (the issuer's name) instead"
        );
    }
    let listeners = match Listeners::bind(&config.serve).await {
        Ok(listeners) => listeners,
        Err(error) => {
            tracing::error!(%error, "cannot bind");
            return ExitCode::FAILURE;
        }
    };
    match tessera_sidecar::run(config, listeners, tessera_sidecar::termination_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "sidecar failed");
            ExitCode::FAILURE
        }
    }
}
