//! `tessera-injector`: parses the configuration (the environment is read there only),
//! initialises telemetry, binds the HTTPS port and hands over to [`tessera_injector::run`]
//! until SIGTERM or SIGINT.

use std::process::ExitCode;
use std::sync::Arc;

use tessera_injector::tls::ReloadingCert;
use tessera_injector::{ConfigError, EXIT_CONFIG, InjectorConfig};

/// Prefix of every error this program prints, the issuer's style (`tessera-issuer: error:`).
const ERROR_PREFIX: &str = "tessera-injector: error:";

fn main() -> ExitCode {
    let config = match InjectorConfig::from_env() {
        Ok(config) => config,
        Err(error) => {
            let code = error.exit_code();
            match error {
                ConfigError::Cli(error) if !error.use_stderr() => {
                    let _ = error.print();
                }
                ConfigError::Cli(error) => {
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
    // The certificate is checked before anything is bound, like the flags.
    let cert = match ReloadingCert::load(&config.serve.tls_cert_file, &config.serve.tls_key_file) {
        Ok(cert) => Arc::new(cert),
        Err(error) => {
            eprintln!("{ERROR_PREFIX} {error}");
            return ExitCode::from(u8::try_from(EXIT_CONFIG).unwrap_or(1));
        }
    };
    runtime.block_on(serve(config, cert))
}

async fn serve(config: InjectorConfig, cert: Arc<ReloadingCert>) -> ExitCode {
    let _telemetry = tessera_common::telemetry::init(
        "tessera-injector",
        config.otlp_endpoint.as_deref(),
        config.log_json,
    );
    let listen = config.serve.listen;
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%listen, %error, "cannot bind");
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        // Tests read the bound address from this line (`--listen 127.0.0.1:0`).
        Ok(addr) => tracing::info!(%addr, "serving the webhook over https"),
        Err(error) => tracing::warn!(%listen, %error, "serving, address unknown"),
    }
    match tessera_injector::run(
        config,
        cert,
        listener,
        tessera_injector::termination_signal(),
    )
    .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "injector failed");
            ExitCode::FAILURE
        }
    }
}
