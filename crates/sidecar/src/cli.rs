//! The sidecar's command line, shared by the `lakegate-sidecar` binary and `lakegate sidecar`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use lakegate_net::drain::{Drain, Outcome, Signals};

/// Options of the sidecar: where the token is, where the central Lakegate is, how to name the workload.
#[derive(clap::Args)]
pub struct Args {
    /// The identity token file (a projected service-account token, or a token a notebook exchanged); re-read
    /// when it changes.
    #[arg(long, env = "LAKEGATE_TOKEN_FILE")]
    pub token_file: PathBuf,
    /// The central Lakegate's S3 + STS endpoint, e.g. https://lakegate.data.svc:9000.
    #[arg(long, env = "LAKEGATE_UPSTREAM")]
    pub upstream: url::Url,
    /// Loopback address to serve S3 on.
    #[arg(long, default_value = "127.0.0.1:9100")]
    pub listen: std::net::SocketAddr,
    #[arg(long, default_value = crate::DEFAULT_ROLE_ARN)]
    pub role_arn: String,
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    /// RoleSessionName recorded in the central audit log (default: this host's name, i.e. the pod).
    #[arg(long)]
    pub session_name: Option<String>,
    /// Requested lifetime of the session credentials (the role profile bounds it).
    #[arg(long)]
    pub duration_seconds: Option<u32>,
    /// The central token endpoint (.../oauth2/token): exchange the token first, authenticated as this workload
    /// (client credentials, or its own token), so the audit names the workload as the actor.
    #[arg(long)]
    pub token_endpoint: Option<url::Url>,
    #[arg(long, requires_all = ["token_endpoint", "client_secret_file"], conflicts_with = "actor_token_file")]
    pub client_id: Option<String>,
    #[arg(long, requires = "client_id")]
    pub client_secret_file: Option<PathBuf>,
    /// The workload's own token (e.g. its projected service-account token) as the exchange's actor_token.
    #[arg(long, requires = "token_endpoint")]
    pub actor_token_file: Option<PathBuf>,
    /// CA certificate(s) for the central Lakegate (default: public web roots).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate for mutual TLS with the central Lakegate.
    #[arg(long, requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    #[arg(long, requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// How long requests in flight get to finish after SIGTERM or SIGINT (humantime, e.g. 25s).
    #[arg(long, env = "LAKEGATE_SHUTDOWN_GRACE", default_value = "25s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: std::time::Duration,
}

/// How long the runtime may take to stop its remaining tasks (the credential refresh) after the drain.
const RUNTIME_STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs the sidecar until SIGTERM or SIGINT, then drains its clients (see [`lakegate_net::drain`]).
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    use crate::{self as sidecar, ActorCredentials, ExchangeClient, SidecarConfig};
    let actor = match (args.client_id, args.client_secret_file, args.actor_token_file) {
        (Some(id), Some(file), None) => {
            let secret = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            Some(ActorCredentials::Client { id, secret: secret.trim().to_owned() })
        }
        (None, None, Some(file)) => Some(ActorCredentials::TokenFile(file)),
        _ => None,
    };
    let exchange = match (args.token_endpoint, actor) {
        (Some(token_endpoint), Some(actor)) => Some(ExchangeClient { token_endpoint, actor }),
        (Some(_), None) => bail!("--token-endpoint needs --client-id with --client-secret-file, or --actor-token-file"),
        (None, _) => None,
    };
    let session_name = args.session_name.unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .unwrap_or_default();
        sidecar::session_name_from(host.trim())
    });
    let config = SidecarConfig {
        listen: args.listen,
        upstream: args.upstream.clone(),
        token_file: args.token_file,
        role_arn: args.role_arn,
        region: args.region,
        session_name,
        duration_seconds: args.duration_seconds,
        exchange,
        ca_file: args.ca_file,
        client_identity: args.client_cert.zip(args.client_key),
        token_poll: std::time::Duration::from_secs(1),
    };
    let grace = args.shutdown_grace;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let result = runtime.block_on(async {
        let mut signals = Signals::install().context("installing the signal handlers")?;
        let drain = Drain::new();
        let (addr, _sidecar) = sidecar::start(config, drain.watch()).await?;
        println!("lakegate sidecar {} is running", env!("CARGO_PKG_VERSION"));
        println!("  s3       http://{addr}   (any credentials; path-style)");
        println!("  upstream {}", args.upstream);
        let signal = signals.recv().await.context("waiting for SIGTERM or SIGINT")?;
        tokio::spawn(async move {
            if let Some(second) = signals.recv().await {
                tracing::error!(signal = second.name(), "second signal: exiting now, requests in flight are cut");
                std::process::exit(i32::from(second.exit_code()));
            }
        });
        drain.start();
        tracing::info!(
            signal = signal.name(),
            grace = %humantime::format_duration(grace),
            in_flight = drain.in_flight(),
            "draining: the listener stopped accepting, waiting for requests in flight"
        );
        match drain.wait(grace).await {
            Outcome::Drained => tracing::info!("drained: no request in flight; stopped"),
            Outcome::GraceExpired { in_flight } => {
                tracing::warn!(in_flight, "grace period over: cutting the requests still in flight");
                drain.close();
            }
        }
        Ok(ExitCode::SUCCESS)
    });
    runtime.shutdown_timeout(RUNTIME_STOP_WAIT);
    result
}
