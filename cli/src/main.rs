//! `pim`: run one context, all five, migrations, health checks and dev tokens.

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use pim_cli::{
    admin::{AdminCommand, Output},
    alerts::AlertCommand,
    approvals::ApprovalCommand,
    audit::AuditCommand,
    bench::Suite,
    dev::{self, BOOTSTRAP_ADMIN, DevOptions},
    requests::RequestCommand,
    reviews::ReviewCommand,
    webhooks::{DeliveryCommand, WebhookCommand},
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
    /// The assignment service: for check, roles, assign, policy, and role names elsewhere.
    #[arg(
        long,
        global = true,
        env = "PIM_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    url: String,
    /// The approval service, for `pim approvals`, `pim approval show`, `pim approve`, `pim deny`,
    /// `pim reviews` and `pim review`.
    #[arg(
        long,
        global = true,
        env = "PIM_APPROVAL_URL",
        default_value = "http://127.0.0.1:50053"
    )]
    approval_url: String,
    /// The activation service, for `pim activate`, `deactivate`, `extend`, `renew`, `requests`,
    /// `request show` and `cancel`.
    #[arg(
        long,
        global = true,
        env = "PIM_ACTIVATION_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    activation_url: String,
    /// The audit service, for `pim audit` and `pim alerts`.
    #[arg(
        long,
        global = true,
        env = "PIM_AUDIT_URL",
        default_value = "http://127.0.0.1:50055"
    )]
    audit_url: String,
    /// The notification service, for `pim webhooks` and `pim deliveries`.
    #[arg(
        long,
        global = true,
        env = "PIM_NOTIFICATION_URL",
        default_value = "http://127.0.0.1:50054"
    )]
    notification_url: String,
    /// Bearer token for the people-facing commands (`pim token` mints one for `pim dev`).
    #[arg(long, global = true, env = "PIM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[arg(long, global = true, value_enum, default_value = "table")]
    output: Output,
}

#[derive(Subcommand)]
enum Command {
    /// Ask or change the assignment service: check, roles, assign, policy, principal, assignments,
    /// convert.
    #[command(flatten)]
    Admin(AdminCommand),
    /// Decide approval cases: approvals, approval show, approve, deny.
    #[command(flatten)]
    Approvals(ApprovalCommand),
    /// Request roles just in time: activate, deactivate, extend, renew, requests, request show,
    /// cancel.
    #[command(flatten)]
    Requests(RequestCommand),
    /// Access reviews: reviews create, list, show, items, results; review decide,
    /// accept-recommendations.
    #[command(flatten)]
    Reviews(ReviewCommand),
    /// Read, export and verify the audit trail: audit list, show, export, verify, key.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Security alerts: alerts list, show, configure, dismiss, remediate, refresh.
    Alerts {
        #[command(subcommand)]
        command: AlertCommand,
    },
    /// Webhook subscriptions: create, list, rotate-secret, disable, test, seal-secret.
    Webhooks {
        #[command(subcommand)]
        command: WebhookCommand,
    },
    /// Notification deliveries: list (with attempts), retry, stats.
    Deliveries {
        #[command(subcommand)]
        command: DeliveryCommand,
    },
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
    /// Measure the baseline RPC, then the event pipeline, the approval service, the activation
    /// service or access reviews, against real PostgreSQL and Redis.
    Bench {
        /// What to measure after the baseline.
        #[arg(long, value_enum, default_value = "pipeline")]
        suite: Suite,
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
        /// Offered rate of the approval run's decisions, per second (for --seconds).
        #[arg(long, default_value_t = 200)]
        decide_rate: u64,
        /// Open cases seeded for the approval run's ListAwaitingMe.
        #[arg(long, default_value_t = 100_000)]
        cases: usize,
        /// How many of those cases await the measured approver.
        #[arg(long, default_value_t = 50)]
        awaiting: usize,
        /// Offered rate of the activation run's submissions, per second (for --seconds).
        #[arg(long, default_value_t = 100)]
        activation_rate: u64,
        /// Activations of the activation run's sustained-throughput part.
        #[arg(long, default_value_t = 3_000)]
        activations: usize,
        /// Submissions in flight in that part.
        #[arg(long, default_value_t = 32)]
        in_flight: usize,
        /// Approvals measured from Decide to access.
        #[arg(long, default_value_t = 200)]
        approvals: usize,
        /// Assignments under the review whose instance start is measured.
        #[arg(long, default_value_t = 100_000)]
        review_assignments: usize,
        /// Denials applied at the end of the second review.
        #[arg(long, default_value_t = 10_000)]
        review_denials: usize,
        /// Records of the large audit log (loaded with COPY) that the query, export and
        /// verification runs read.
        #[arg(long, default_value_t = 10_000_000)]
        audit_records: usize,
        /// Events of the audit ingest run.
        #[arg(long, default_value_t = 50_000)]
        audit_events: usize,
        /// Offered rate of the notification latency run, events per second (for --seconds).
        #[arg(long, default_value_t = 50)]
        notification_rate: u64,
        /// Webhook subscriptions of the notification fan-out run.
        #[arg(long, default_value_t = 50)]
        fanout_subscriptions: usize,
        /// Events of the fan-out run; each is delivered to every subscription.
        #[arg(long, default_value_t = 100)]
        fanout_events: usize,
        /// Schedules of the access run's data set; users, groups and scopes scale with it.
        #[arg(long, default_value_t = 1_000_000)]
        access_schedules: usize,
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
            let client = pim_client::PimClient::connect(&cli.url, person(cli.token)?)?;
            let now = pim_clock::Clock::now_millis(&SystemClock);
            print!(
                "{}",
                pim_cli::admin::run(command, &client, cli.output, now).await?
            );
            Ok(())
        }
        Command::Approvals(command) => {
            let credentials = person(cli.token)?;
            let approval = pim_client::PimClient::connect(&cli.approval_url, credentials.clone())?;
            let assignment = pim_client::PimClient::connect(&cli.url, credentials)?;
            let now = pim_clock::Clock::now_millis(&SystemClock);
            let rendered =
                pim_cli::approvals::run(command, &approval, &assignment, cli.output, now).await?;
            print!("{}", rendered.text);
            match rendered.failure() {
                Some(failure) => Err(anyhow::anyhow!(failure)),
                None => Ok(()),
            }
        }
        Command::Requests(command) => {
            let credentials = person(cli.token)?;
            let activation =
                pim_client::PimClient::connect(&cli.activation_url, credentials.clone())?;
            let assignment = pim_client::PimClient::connect(&cli.url, credentials)?;
            let now = pim_clock::Clock::now_millis(&SystemClock);
            let rendered =
                pim_cli::requests::run(command, &activation, &assignment, cli.output, now).await?;
            print!("{}", rendered.text);
            match rendered.failure() {
                Some(failure) => Err(anyhow::anyhow!(failure)),
                None => Ok(()),
            }
        }
        Command::Reviews(command) => {
            let credentials = person(cli.token)?;
            let approval = pim_client::PimClient::connect(&cli.approval_url, credentials.clone())?;
            let assignment = pim_client::PimClient::connect(&cli.url, credentials)?;
            let rendered =
                pim_cli::reviews::run(command, &approval, &assignment, cli.output).await?;
            print!("{}", rendered.text);
            match rendered.failure() {
                Some(failure) => Err(anyhow::anyhow!(failure)),
                None => Ok(()),
            }
        }
        Command::Audit { command } => {
            let audit = pim_client::PimClient::connect(&cli.audit_url, person(cli.token)?)?;
            let rendered = pim_cli::audit::run(command, &audit, cli.output).await?;
            print!("{}", rendered.text);
            match rendered.failed {
                true => Err(anyhow::anyhow!("the audit trail does not verify")),
                false => Ok(()),
            }
        }
        Command::Alerts { command } => {
            let audit = pim_client::PimClient::connect(&cli.audit_url, person(cli.token)?)?;
            print!(
                "{}",
                pim_cli::alerts::run(command, &audit, cli.output).await?
            );
            Ok(())
        }
        Command::Webhooks { command } => {
            let client = match &command {
                // Sealing is offline: no token, no call.
                WebhookCommand::SealSecret { .. } => pim_client::PimClient::connect(
                    &cli.notification_url,
                    pim_client::Credentials::Token(String::new()),
                )?,
                _ => pim_client::PimClient::connect(&cli.notification_url, person(cli.token)?)?,
            };
            print!(
                "{}",
                pim_cli::webhooks::run_webhooks(command, &client, cli.output).await?
            );
            Ok(())
        }
        Command::Deliveries { command } => {
            let client = pim_client::PimClient::connect(&cli.notification_url, person(cli.token)?)?;
            let rendered = pim_cli::webhooks::run_deliveries(command, &client, cli.output).await?;
            print!("{}", rendered.text);
            match rendered.failed {
                true => Err(anyhow::anyhow!("some deliveries were not retried")),
                false => Ok(()),
            }
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
            suite,
            database_url,
            redis_url,
            events,
            rate,
            seconds,
            producers,
            consumers,
            decide_rate,
            cases,
            awaiting,
            activation_rate,
            activations,
            in_flight,
            approvals,
            review_assignments,
            review_denials,
            audit_records,
            audit_events,
            notification_rate,
            fanout_subscriptions,
            fanout_events,
            access_schedules,
        } => {
            pim_cli::bench::run(pim_cli::bench::BenchOptions {
                suite,
                database_url,
                redis_url,
                events,
                rate,
                seconds,
                producers,
                consumers,
                decide_rate,
                cases,
                awaiting,
                activation_rate,
                activations,
                in_flight,
                approvals,
                review_assignments,
                review_denials,
                audit_records,
                audit_events,
                notification_rate,
                fanout_subscriptions,
                fanout_events,
                access_schedules,
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

/// A person's credentials for the people-facing commands.
fn person(token: Option<String>) -> anyhow::Result<pim_client::Credentials> {
    let token = token.context(
        "a token is needed: --token or PIM_TOKEN (for pim dev: `pim token <principal> --mfa`)",
    )?;
    Ok(pim_client::Credentials::Token(token))
}

/// Telemetry of a process hosting `contexts`: `pim serve` one, named `pim-<context>`; `pim dev`
/// all five, each exporting its spans under its own name.
fn telemetry(
    contexts: &[ServiceName],
    source: &Source,
) -> anyhow::Result<pim_telemetry::TelemetryGuard> {
    let name = match contexts {
        [one] => format!("pim-{one}"),
        _ => "pim-dev".to_owned(),
    };
    let mut options = TelemetryOptions::from_vars(&name, |key| source.raw(key).map(str::to_owned))?;
    if contexts.len() > 1 {
        options.contexts = contexts.iter().map(|c| c.as_str().to_owned()).collect();
    }
    pim_telemetry::init(&options)
}

async fn serve(service: ServiceName) -> anyhow::Result<()> {
    let source = Source::from_env()?;
    let settings = Settings::load(service, &source)?;
    let guard = telemetry(&[service], &source)?;
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
    let guard = telemetry(&ServiceName::ALL, &source)?;
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
