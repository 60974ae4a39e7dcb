//! The `lakegate` command line.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use lakegate_core::identity::{DevIssuer, Principal, Verifier};
use lakegate_core::policy::{self, PolicyStore, RequestContext, Resource, TableName, TableOp};
use lakegate_net::drain::Signals;

use crate::config::Config;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod config;
mod lake_files;
mod runtime;

#[derive(Parser)]
#[command(name = "lakegate", version, about = "Identity-aware data access proxy")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (embedded defaults when no config is given).
    Serve {
        #[arg(long, env = "LAKEGATE_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long, env = "LAKEGATE_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Mint a token from the dev issuer (a key kept in the data directory).
    Token {
        #[arg(long)]
        sub: String,
        /// Comma-separated group names.
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// Attributes as key=value; repeatable.
        #[arg(long = "attr", value_parser = parse_key_value)]
        attrs: Vec<(String, String)>,
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        #[arg(long, env = "LAKEGATE_DATA_DIR", default_value = "./lakegate-data")]
        data_dir: PathBuf,
    },
    /// Mint S3 session credentials directly from the server keys in the data directory (tests, operators); the
    /// S3 front checks them like credentials from its STS endpoint.
    Credentials {
        #[arg(long)]
        sub: String,
        /// Comma-separated group names.
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// The role profile whose scope the credentials carry.
        #[arg(long, default_value = "lakegate")]
        role: String,
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        #[arg(long, env = "LAKEGATE_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long, env = "LAKEGATE_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Run as a sidecar: a loopback S3 endpoint that acts with the pod's identity token through a central
    /// Lakegate (for Spark's S3A and other S3 clients with dummy credentials).
    Sidecar(Box<lakegate_sidecar::cli::Args>),
    /// Validate and explain policies.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Parse and validate the schema, policies, catalog and entities of a policy directory.
    Validate {
        #[arg(default_value = "policies")]
        dir: PathBuf,
    },
    /// Show the decision for one request, the policies that made it and, for tables, the compiled filter.
    Explain {
        /// A token to validate (dev issuer or configured issuers).
        #[arg(long, conflicts_with = "principal")]
        token: Option<String>,
        /// A principal given directly, e.g. 'User::"alice"'.
        #[arg(long, required_unless_present = "token")]
        principal: Option<String>,
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        #[arg(long = "attr", value_parser = parse_key_value)]
        attrs: Vec<(String, String)>,
        #[arg(long)]
        action: String,
        /// s3://bucket/key or an entity such as 'Table::"sales.orders"'.
        #[arg(long)]
        resource: String,
        #[arg(long, default_value = "policies")]
        policies: PathBuf,
        #[arg(long, env = "LAKEGATE_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long, env = "LAKEGATE_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain of audit files; exit non-zero naming the first broken event.
    Verify {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected key=value, got {s:?}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config, data_dir } => serve(config, data_dir),
        Command::Token { sub, groups, attrs, ttl, data_dir } => token(&sub, &groups, attrs, ttl, &data_dir),
        Command::Credentials { sub, groups, role, ttl, config, data_dir } => {
            credentials(&sub, &groups, &role, ttl, config, data_dir)
        }
        Command::Sidecar(args) => {
            init_logging();
            lakegate_sidecar::cli::run(*args)
        }
        Command::Policy { command: PolicyCommand::Validate { dir } } => validate(&dir),
        Command::Policy {
            command:
                PolicyCommand::Explain { token, principal, groups, attrs, action, resource, policies, config, data_dir },
        } => explain(token, principal, groups, attrs, &action, &resource, &policies, config, data_dir),
        Command::Audit { command: AuditCommand::Verify { files } } => verify_audit(&files),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LAKEGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

fn serve(config: Option<PathBuf>, data_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    init_logging();
    let config = Config::load(config.as_deref(), data_dir.as_deref())?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let result = runtime.block_on(async {
        // Before anything listens: from here on SIGTERM drains instead of killing.
        let mut signals = Signals::install().context("installing the signal handlers")?;
        let running = runtime::start(&config).await?;
        let data = std::fs::canonicalize(&config.data_dir).unwrap_or(config.data_dir.clone());
        println!("lakegate {} is running", env!("CARGO_PKG_VERSION"));
        println!(
            "  control  http{}://{}   (POST /v1/authorize, /healthz, /readyz, /metrics)",
            if config.control.tls.is_some() { "s" } else { "" },
            running.control_addr
        );
        println!(
            "  s3 + sts http{}://{}   ({})",
            if config.s3.tls.is_some() { "s" } else { "" },
            running.s3_addr,
            running.s3_backend
        );
        println!(
            "  sql      postgresql://{}   (PostgreSQL wire; password = token{})",
            running.sql_addr,
            if config.sql.tls.is_some() { ", TLS" } else { "" }
        );
        println!("  data dir {}", data.display());
        println!("  policies {} (reloaded on change)", running.policy_dir.display());
        println!("  audit    {} (durability {})", running.gate.audit_file().display(), config.audit.sink.durability);
        println!(
            "  shutdown SIGTERM/SIGINT drain for up to {}; a second signal exits at once",
            humantime::format_duration(config.shutdown.grace)
        );
        if let Some(key) = &running.dev_issuer {
            println!();
            println!("  !! DEV TOKEN ISSUER ENABLED: anyone who can read {} can mint tokens. !!", key.display());
            println!("  !! Configure a real issuer ([[identity.issuers]]) to switch it off.          !!");
            println!(
                "  get a token:  lakegate token --data-dir {} --sub alice --groups analysts --attr region=EU",
                data.display()
            );
        }
        let signal = signals.recv().await.context("waiting for SIGTERM or SIGINT")?;
        tracing::info!(signal = signal.name(), "shutting down");
        let gate = running.gate.clone();
        tokio::spawn(async move {
            if let Some(second) = signals.recv().await {
                tracing::error!(signal = second.name(), "second signal: exiting now, requests in flight are cut");
                // Best effort: what is queued reaches the disk, records of requests still running do not.
                match tokio::time::timeout(FORCED_FLUSH_WAIT, gate.flush_audit()).await {
                    Ok(Ok(())) => tracing::info!("audit queue flushed"),
                    Ok(Err(e)) => tracing::error!(error = %e, "audit queue not flushed"),
                    Err(_) => tracing::error!("audit queue not flushed in time"),
                }
                std::process::exit(i32::from(second.exit_code()));
            }
        });
        running.shutdown(config.shutdown.grace).await?;
        Ok(ExitCode::SUCCESS)
    });
    // Tasks still parked (policy watcher, token refresh) must not hold the exit up.
    runtime.shutdown_timeout(RUNTIME_STOP_WAIT);
    result
}

/// How long a second signal's audit flush may take before the process exits anyway.
const FORCED_FLUSH_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// How long the runtime may take to stop its remaining tasks after a shutdown.
const RUNTIME_STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

fn token(
    sub: &str,
    groups: &[String],
    attrs: Vec<(String, String)>,
    ttl: std::time::Duration,
    data_dir: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    let issuer =
        DevIssuer::load_or_create(data_dir).with_context(|| format!("dev issuer key in {}", data_dir.display()))?;
    let attrs: BTreeMap<String, String> = attrs.into_iter().collect();
    let groups: Vec<String> = groups.iter().filter(|g| !g.is_empty()).cloned().collect();
    println!("{}", issuer.mint(sub, &groups, &attrs, ttl)?);
    Ok(ExitCode::SUCCESS)
}

fn credentials(
    sub: &str,
    groups: &[String],
    role: &str,
    ttl: std::time::Duration,
    config: Option<PathBuf>,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    use lakegate_core::credentials::{CredentialKind, KeyRing, SessionClaims, mint};
    let config = Config::load(config.as_deref(), data_dir.as_deref())?;
    let profile = config.sts.roles.iter().find(|r| r.name() == role).with_context(|| format!("no role {role:?}"))?;
    let ring = KeyRing::load_or_generate(&config.credentials_key_dir())?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX).max(1);
    let principal = Principal {
        issuer: lakegate_core::identity::OPERATOR_ISSUER.into(),
        subject: sub.to_owned(),
        groups: groups.iter().filter(|g| !g.is_empty()).cloned().collect(),
        attributes: BTreeMap::new(),
        token_id: None,
        expires_at: now.saturating_add(ttl),
        actors: Vec::new(),
    };
    let claims = SessionClaims {
        principal,
        scope: profile.scope(),
        role: Some(profile.name().to_owned()),
        session_name: Some("cli".into()),
        issued_at: now,
        expires_at: now.saturating_add(ttl),
        kind: CredentialKind::Sts,
        table: None,
    };
    let creds = mint(&ring, &claims)?;
    let out = serde_json::json!({
        "AccessKeyId": creds.access_key_id,
        "SecretAccessKey": creds.secret_access_key.expose(),
        "SessionToken": creds.session_token,
        "Expiration": creds.expiration_rfc3339(),
    });
    println!("{out}");
    Ok(ExitCode::SUCCESS)
}

fn validate(dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    match PolicyStore::load(dir) {
        Ok(store) => {
            println!("{}: {} policies, {} tables: valid", dir.display(), store.len(), store.catalog().tables.len());
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            for problem in &errors.0 {
                eprintln!("{problem}");
            }
            eprintln!("{}: {} problem(s)", dir.display(), errors.0.len());
            Ok(ExitCode::FAILURE)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn explain(
    token: Option<String>,
    principal: Option<String>,
    groups: Vec<String>,
    attrs: Vec<(String, String)>,
    action: &str,
    resource: &str,
    policies: &std::path::Path,
    config: Option<PathBuf>,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let store = PolicyStore::load(policies).map_err(|e| anyhow::anyhow!("{e}"))?;
    let principal = match (token, principal) {
        (Some(token), _) => {
            let config = Config::load(config.as_deref(), data_dir.as_deref())?;
            let dev =
                if config.dev_issuer_enabled() { Some(DevIssuer::load_or_create(&config.data_dir)?) } else { None };
            let verifier = Verifier::new(&config.identity, dev.as_ref())?;
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(verifier.verify(&token)).context("token")?
        }
        (None, Some(p)) => {
            let uid: cedar_policy::EntityUid = p.parse().map_err(|e| anyhow::anyhow!("--principal {p}: {e}"))?;
            if uid.type_name().to_string() != "User" {
                bail!("--principal must be a User::\"name\"");
            }
            Principal {
                issuer: "explain".into(),
                subject: uid.id().unescaped().to_owned(),
                groups,
                attributes: attrs.into_iter().collect(),
                token_id: None,
                expires_at: i64::MAX,
                actors: Vec::new(),
            }
        }
        (None, None) => bail!("give --token or --principal"),
    };
    let resource = Resource::parse(resource)?;
    let context = RequestContext { front: "explain", ..Default::default() };
    let decision = policy::decide_with(&store, &principal, action, &resource, &context)?;
    println!(
        "principal: User::{:?} groups={:?} attributes={:?}",
        principal.subject, principal.groups, principal.attributes
    );
    println!("decision:  {}", if decision.allowed { "ALLOW" } else { "DENY" });
    if decision.policies.is_empty() {
        println!("policies:  none ({})", if decision.allowed { "?" } else { "default deny: no permit holds" });
    }
    for p in &decision.policies {
        let origin = store.origin(&p.id).map(|o| format!("{}:{}", o.file.display(), o.line)).unwrap_or_default();
        println!("  {} {} ({origin})", p.effect, p.id);
        for (k, v) in &p.annotations {
            println!("      @{k}({v:?})");
        }
    }
    for e in &decision.errors {
        println!("  evaluation error: {e}");
    }
    if let Resource::Table { database, table } = &resource {
        let op = match action {
            "InsertTable" => TableOp::Insert,
            "UpdateTable" => TableOp::Update,
            "DeleteTable" => TableOp::Delete,
            _ => TableOp::Select,
        };
        let name = TableName { schema: database.clone(), name: table.clone() };
        let filter = policy::table_filter_with(&store, &principal, op, &name, &context)?;
        println!("compiled filter for {name} ({op:?}):");
        println!("  rows:        {}", describe_rows(&filter.permissive));
        for r in &filter.restrictive {
            println!("  restrictive: AND ({r})");
        }
        for c in &filter.columns {
            println!("  column {:<14} clear: {:?}  masked: {:?}", c.name, c.clear, c.masked);
        }
        println!("  principal values: {:?}", filter.principal);
    }
    Ok(ExitCode::SUCCESS)
}

fn describe_rows(permissive: &[Option<String>]) -> String {
    if permissive.is_empty() {
        return "none (table not visible)".into();
    }
    if permissive.iter().any(Option::is_none) {
        return "all".into();
    }
    permissive.iter().flatten().map(|f| format!("({f})")).collect::<Vec<_>>().join(" OR ")
}

fn verify_audit(files: &[PathBuf]) -> anyhow::Result<ExitCode> {
    match lakegate_core::audit::verify_files(files) {
        Ok(report) => {
            println!("audit chain intact: {report}");
            Ok(ExitCode::SUCCESS)
        }
        Err(broken) => {
            eprintln!("audit chain BROKEN: {broken}");
            Ok(ExitCode::FAILURE)
        }
    }
}
