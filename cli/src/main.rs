//! `pim`: run one context, all five, migrations, health checks and dev tokens.

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use pim_cli::{
    admin::{AdminCommand, Output},
    dev::{self, BOOTSTRAP_ADMIN, DevOptions},
};
use pim_clock::SystemClock;
use pim_config::{ServiceName, Settings, Source};
use pim_host::HostDeps;
use pim_telemetry::TelemetryOptions;

#[derive(Parser)]
#[command(
    name = "pim",
    version,
    about = "Privileged Identity Management: just-in-time, approved, audited access"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// The assignment service, for the people-facing commands.
    #[arg(
        long,
        global = true,
        env = "PIM_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    url: String,
    /// Bearer token for the people-facing commands (`pim token` mints one for `pim dev`).
    #[arg(long, global = true, env = "PIM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[arg(long, global = true, value_enum, default_value = "table")]
    output: Output,
}

#[derive(Subcommand)]
enum Command {
    /// Ask or change the assignment service: check, roles, assign, policy.
    #[command(flatten)]
    Admin(AdminCommand),
    /// Serve one context, configured by PIM_* environment variables.
    Serve {
        /// assignment, activation, approval, notification or audit
        service: ServiceName,
    },
    /// All five contexts in one process: SQLite files and an in-process bus unless told otherwise.
    Dev {
        #[arg(long, default_value = ".pim-dev")]
        data_dir: PathBuf,
        /// A PostgreSQL server URL; each context gets database pim_<service> on it.
        #[arg(long, requires = "redis_url")]
        database_url: Option<String>,
        #[arg(long, requires = "database_url")]
        redis_url: Option<String>,
        #[arg(long, default_value_t = 50051)]
        base_port: u16,
    },
    /// Apply a context's migrations with the owner URL (PIM_MIGRATE_DATABASE_URL, else PIM_DATABASE_URL).
    Migrate { service: ServiceName },
    /// Exit 0 when the gRPC health check at the address answers SERVING.
    Health {
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        addr: String,
    },
    /// Measure the baseline RPC and the event pipeline against real PostgreSQL and Redis.
    Bench {
        /// TLS is off by default: on loopback it only adds crypto to both sides of the same cores.
        #[arg(
            long,
            default_value = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
        )]
        database_url: String,
        #[arg(long, default_value = "redis://127.0.0.1:6379")]
        redis_url: String,
        /// Events (and baseline calls) in the throughput runs.
        #[arg(long, default_value_t = 20_000)]
        events: usize,
        /// Offered rate of the latency run, in events per second.
        #[arg(long, default_value_t = 1_000)]
        rate: u64,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Concurrent producer transactions in the throughput run.
        #[arg(long, default_value_t = 32)]
        producers: usize,
        /// Consumers in the one consumer group.
        #[arg(long, default_value_t = 8)]
        consumers: usize,
    },
    /// Print a dev-mode token for a principal, signed with the `pim dev` secret.
    Token {
        principal: String,
        #[arg(long)]
        mfa: bool,
        #[arg(long, default_value = ".pim-dev")]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 12 * 3600)]
        ttl_secs: i64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Admin(command) => {
            let token = cli
                .token
                .context("a token is needed: --token or PIM_TOKEN (for pim dev: `pim token <principal> --mfa`)")?;
            let client =
                pim_client::PimClient::connect(&cli.url, pim_client::Credentials::Token(token))?;
            let now = pim_clock::Clock::now_millis(&SystemClock);
            print!(
                "{}",
                pim_cli::admin::run(command, &client, cli.output, now).await?
            );
            Ok(())
        }
        Command::Serve { service } => serve(service).await,
        Command::Dev {
            data_dir,
            database_url,
            redis_url,
            base_port,
        } => {
            run_dev(DevOptions {
                data_dir,
                database_url,
                redis_url,
                base_port,
                clock: None,
            })
            .await
        }
        Command::Migrate { service } => {
            let source = Source::from_env()?;
            let url: String = match source.optional("PIM_MIGRATE_DATABASE_URL")? {
                Some(url) => url,
                None => source.required("PIM_DATABASE_URL")?,
            };
            pim_cli::migrate_service(service, &url).await?;
            println!("{service}: migrations applied to {}", pim_db::redact(&url));
            Ok(())
        }
        Command::Health { addr } => health(&addr).await,
        Command::Bench {
            database_url,
            redis_url,
            events,
            rate,
            seconds,
            producers,
            consumers,
        } => {
            pim_cli::bench::run(pim_cli::bench::BenchOptions {
                database_url,
                redis_url,
                events,
                rate,
                seconds,
                producers,
                consumers,
            })
            .await
        }
        Command::Token {
            principal,
            mfa,
            data_dir,
            ttl_secs,
        } => {
            let secret = dev::dev_secret(&data_dir)?;
            let signer = pim_auth::TokenSigner::hs256(
                secret.as_bytes(),
                "pim",
                "pim",
                Arc::new(SystemClock),
            );
            let mut claims = signer.claims(&principal, ttl_secs);
            if mfa {
                claims.amr.push("mfa".into());
            }
            println!("{}", signer.sign(&claims)?);
            Ok(())
        }
    }
}

fn telemetry(service: &str, source: &Source) -> anyhow::Result<pim_telemetry::TelemetryGuard> {
    pim_telemetry::init(&TelemetryOptions {
        service_name: source.get("OTEL_SERVICE_NAME", format!("pim-{service}"))?,
        log_filter: source.get("PIM_LOG", "info".to_owned())?,
        log_json: source.get("PIM_LOG_FORMAT", "json".to_owned())? == "json",
        trace_filter: source.get("PIM_TRACE_FILTER", "info".to_owned())?,
        otlp_endpoint: source.optional("OTEL_EXPORTER_OTLP_ENDPOINT")?,
    })
}

async fn serve(service: ServiceName) -> anyhow::Result<()> {
    let source = Source::from_env()?;
    let settings = Settings::load(service, &source)?;
    let guard = telemetry(service.as_str(), &source)?;
    let running = pim_cli::start_service(
        settings,
        HostDeps {
            clock: Arc::new(SystemClock),
            listener: None,
            local_bus: None,
        },
    )
    .await?;
    shutdown_signal().await;
    running.shutdown().await;
    guard.shutdown();
    Ok(())
}

async fn run_dev(options: DevOptions) -> anyhow::Result<()> {
    let mut source = Source::from_env()?;
    if source.raw("PIM_LOG").is_none() {
        source.set("PIM_LOG", "warn");
    }
    if source.raw("PIM_LOG_FORMAT").is_none() {
        source.set("PIM_LOG_FORMAT", "pretty");
    }
    let guard = telemetry("dev", &source)?;
    let data_dir = options.data_dir.clone();
    let system = dev::start(options).await?;
    println!("PIM is running (all five services in one process).\n");
    for service in ServiceName::ALL {
        println!("  {:<13} {}", service.as_str(), system.url(service));
    }
    let mut claims = system.signer.claims(BOOTSTRAP_ADMIN, 12 * 3600);
    claims.amr.push("mfa".into());
    println!(
        "\nBootstrap admin {BOOTSTRAP_ADMIN:?} holds Global Administrator at /. Its token (12 h):\n"
    );
    println!("  {}\n", system.signer.sign(&claims)?);
    println!(
        "More tokens: cargo run -p pim -- token <principal> [--mfa] --data-dir {}",
        data_dir.display()
    );
    println!(
        "Try:\n  export PIM_TOKEN=<the token above> PIM_URL={}\n  cargo run -q -p pim -- roles --privileged\n  \
         cargo run -q -p pim -- check admin \"Global Administrator\" /\n  \
         grpcurl -plaintext {} list\n",
        system.url(ServiceName::Assignment),
        system
            .url(ServiceName::Assignment)
            .trim_start_matches("http://")
    );
    shutdown_signal().await;
    system.shutdown().await;
    guard.shutdown();
    Ok(())
}

async fn health(addr: &str) -> anyhow::Result<()> {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let channel = tonic::transport::Endpoint::from_shared(addr.to_owned())?
        .timeout(Duration::from_secs(3))
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?
        .into_inner()
        .status();
    anyhow::ensure!(status == ServingStatus::Serving, "{addr} is {status:?}");
    println!("{addr} SERVING");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "waiting for Ctrl-C failed");
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => tracing::error!(error = %e, "installing the SIGTERM handler failed"),
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
