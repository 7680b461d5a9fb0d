//! Typed configuration from the environment, with an optional `KEY=VALUE` file named by
//! `PIM_CONFIG_FILE` underneath it. Every key has a documented default; a bad value fails
//! start-up with a message that names the key. The reference table in the README is generated
//! from [`REFERENCE`], so the documentation and the code cannot drift apart.

mod settings;
mod source;

pub use settings::{
    AuditSettings, AuthSettings, DbSettings, EventSettings, GrpcSettings, NotificationSettings,
    Secret, ServiceName, Settings, SmtpSettings, SmtpTls, TelemetrySettings, TlsSettings,
};
pub use source::{ConfigError, Source};

/// One configuration key: its name, its default (empty when it has none) and what it does.
pub struct KeyDoc {
    pub key: &'static str,
    pub default: &'static str,
    pub doc: &'static str,
}

/// Every key PIM reads. `<SERVICE>` stands for ASSIGNMENT, ACTIVATION, APPROVAL, NOTIFICATION or AUDIT.
pub const REFERENCE: &[KeyDoc] = &[
    KeyDoc {
        key: "PIM_CONFIG_FILE",
        default: "",
        doc: "Optional file of KEY=VALUE lines; the environment overrides it.",
    },
    KeyDoc {
        key: "PIM_LISTEN_ADDR",
        default: "0.0.0.0:<port>",
        doc: "gRPC listen address. Ports default to 50051-50055 (assignment, activation, approval, notification, audit).",
    },
    KeyDoc {
        key: "PIM_DATABASE_URL",
        default: "",
        doc: "PostgreSQL (or sqlite:) URL of this service's own database. Required for `pim serve`.",
    },
    KeyDoc {
        key: "PIM_MIGRATE_DATABASE_URL",
        default: "PIM_DATABASE_URL",
        doc: "Owner URL used by `pim migrate`, so the runtime role need not own the tables.",
    },
    KeyDoc {
        key: "PIM_MIGRATE_ON_START",
        default: "true",
        doc: "Run this service's migrations at start.",
    },
    KeyDoc {
        key: "PIM_DB_POOL_MAX",
        default: "10",
        doc: "Maximum database connections per service.",
    },
    KeyDoc {
        key: "PIM_DB_POOL_MIN",
        default: "1",
        doc: "Connections kept open per service.",
    },
    KeyDoc {
        key: "PIM_REDIS_URL",
        default: "",
        doc: "Redis URL for the event streams. Required for `pim serve`.",
    },
    KeyDoc {
        key: "PIM_STREAM_PREFIX",
        default: "pim:",
        doc: "Prefix of every Redis key PIM writes.",
    },
    KeyDoc {
        key: "PIM_<SERVICE>_URL",
        default: "http://127.0.0.1:<port>",
        doc: "Where peers reach each service.",
    },
    KeyDoc {
        key: "PIM_AUTH_ISSUER",
        default: "pim",
        doc: "Expected `iss` of every bearer token.",
    },
    KeyDoc {
        key: "PIM_AUTH_AUDIENCE",
        default: "pim",
        doc: "Expected `aud` of every bearer token.",
    },
    KeyDoc {
        key: "PIM_AUTH_PUBLIC_KEY_FILE",
        default: "",
        doc: "PEM public key (RSA for RS256, EC P-256 for ES256) that verifies tokens.",
    },
    KeyDoc {
        key: "PIM_AUTH_JWKS_URL",
        default: "",
        doc: "An identity provider's JWKS (http://; cached, refreshed every 5 minutes and on an unknown kid). With it, PIM_AUTH_PUBLIC_KEY_FILE verifies only PIM's own service tokens.",
    },
    KeyDoc {
        key: "PIM_AUTH_DEV_HS256_SECRET",
        default: "",
        doc: "Dev mode only: a shared HS256 secret. Refused unless PIM_AUTH_DEV_MODE=true.",
    },
    KeyDoc {
        key: "PIM_AUTH_DEV_MODE",
        default: "false",
        doc: "Allows HS256 tokens. Set by `pim dev`; never in production.",
    },
    KeyDoc {
        key: "PIM_SERVICE_SIGNING_KEY_FILE",
        default: "",
        doc: "PEM private key with which this service signs its own service tokens for peers.",
    },
    KeyDoc {
        key: "PIM_BREAK_GLASS_PRINCIPALS",
        default: "",
        doc: "Comma-separated principal ids given permanent Global Administrator at / on first start.",
    },
    KeyDoc {
        key: "PIM_TLS_CERT_FILE",
        default: "",
        doc: "PEM certificate chain this service presents; with PIM_TLS_KEY_FILE it turns on gRPC TLS.",
    },
    KeyDoc {
        key: "PIM_TLS_KEY_FILE",
        default: "",
        doc: "PEM private key of PIM_TLS_CERT_FILE.",
    },
    KeyDoc {
        key: "PIM_TLS_CLIENT_CA_FILE",
        default: "",
        doc: "Require client certificates signed by this CA (mTLS).",
    },
    KeyDoc {
        key: "PIM_TLS_PEER_CA_FILE",
        default: "",
        doc: "CA of the peers' certificates; peers are called over TLS, presenting PIM_TLS_CERT_FILE.",
    },
    KeyDoc {
        key: "PIM_GRPC_TIMEOUT_MS",
        default: "10000",
        doc: "Per-request server timeout.",
    },
    KeyDoc {
        key: "PIM_GRPC_CONCURRENCY_LIMIT",
        default: "512",
        doc: "Requests in flight per process; beyond it requests are shed with RESOURCE_EXHAUSTED.",
    },
    KeyDoc {
        key: "PIM_SHUTDOWN_DRAIN_SECS",
        default: "30",
        doc: "How long shutdown waits for in-flight work.",
    },
    KeyDoc {
        key: "PIM_EVENTS_MAX_ATTEMPTS",
        default: "5",
        doc: "Deliveries of one stream entry before it is dead-lettered.",
    },
    KeyDoc {
        key: "PIM_EVENTS_RECLAIM_IDLE_MS",
        default: "30000",
        doc: "Idle time after which another consumer reclaims a pending entry (XAUTOCLAIM).",
    },
    KeyDoc {
        key: "PIM_EVENTS_GAP_GRACE_MS",
        default: "10000",
        doc: "How old a missing sequence must be before it counts as a gap and is replayed.",
    },
    KeyDoc {
        key: "PIM_EVENTS_GAP_CHECK_MS",
        default: "2000",
        doc: "How often consumers look for gaps.",
    },
    KeyDoc {
        key: "PIM_EVENTS_RELAY_POLL_MS",
        default: "20",
        doc: "How often the outbox relay looks for new rows when not woken.",
    },
    KeyDoc {
        key: "PIM_EVENTS_REPLAY_WINDOW_DAYS",
        default: "7",
        doc: "How long published outbox rows are kept for replay.",
    },
    KeyDoc {
        key: "PIM_SECURITY_EVENTS_PER_MINUTE",
        default: "60",
        doc: "Denials stored one by one per minute; beyond it they are counted and summarised.",
    },
    KeyDoc {
        key: "PIM_TIMER_INTERVAL_MS",
        default: "1000",
        doc: "How often timers look for due announcements; what is due is judged by the clock.",
    },
    KeyDoc {
        key: "PIM_MFA_MAX_AGE_SECS",
        default: "900",
        doc: "How recent (by `auth_time`) a sign-in with MFA must be where a role's policy requires MFA.",
    },
    KeyDoc {
        key: "PIM_RECONCILE_AFTER_MS",
        default: "5000",
        doc: "How long an activation request may sit between two states (after a crash, say) before the reconciler finishes it.",
    },
    KeyDoc {
        key: "PIM_AUDIT_SIGNING_KEY_FILE",
        default: "",
        doc: "Audit only: Ed25519 PKCS#8 PEM private key that signs checkpoints. Without it, dev mode derives one from the dev secret and otherwise each process signs with a random key of its own (checkpoints of earlier processes then fail verification).",
    },
    KeyDoc {
        key: "PIM_AUDIT_PREVIOUS_PUBLIC_KEYS",
        default: "",
        doc: "Audit only: comma-separated hex Ed25519 public keys of earlier signing keys, still trusted for the checkpoints they signed (key rotation).",
    },
    KeyDoc {
        key: "PIM_AUDIT_CHECKPOINT_INTERVAL_SECS",
        default: "300",
        doc: "Audit only: how often a signed checkpoint of the chain head is made when new records arrived; judged by the clock.",
    },
    KeyDoc {
        key: "PIM_AUDIT_RETENTION_DAYS",
        default: "0",
        doc: "Audit only: purge records older than this many days, keeping a signed checkpoint at the cut; 0 keeps everything.",
    },
    KeyDoc {
        key: "PIM_ALERTS_DISABLED",
        default: "",
        doc: "Audit only: comma-separated security alert ids (docs/alerts.md) that are disabled until an admin configures them; every alert is enabled otherwise.",
    },
    KeyDoc {
        key: "PIM_FAULT_POINTS",
        default: "",
        doc: "Testing only: comma-separated points where a flow stops as if the process crashed there. Never set in production.",
    },
    KeyDoc {
        key: "PIM_SMTP_HOST",
        default: "",
        doc: "SMTP server for notification e-mail; e-mail is off when unset.",
    },
    KeyDoc {
        key: "PIM_SMTP_PORT",
        default: "25 / 587 / 465",
        doc: "SMTP port; the default follows PIM_SMTP_TLS (none, starttls, tls).",
    },
    KeyDoc {
        key: "PIM_SMTP_TLS",
        default: "starttls",
        doc: "`none`, `starttls` (required) or `tls` (SMTPS).",
    },
    KeyDoc {
        key: "PIM_SMTP_USERNAME",
        default: "",
        doc: "SMTP user; authentication is used when set.",
    },
    KeyDoc {
        key: "PIM_SMTP_PASSWORD",
        default: "",
        doc: "SMTP password: plain, or `enc:` and the value sealed with PIM_NOTIFICATION_SECRET_KEY (`pim webhooks seal-secret`).",
    },
    KeyDoc {
        key: "PIM_SMTP_FROM",
        default: "PIM <pim@localhost>",
        doc: "Sender of notification e-mail.",
    },
    KeyDoc {
        key: "PIM_SMTP_TIMEOUT_MS",
        default: "10000",
        doc: "Timeout of one SMTP conversation.",
    },
    KeyDoc {
        key: "PIM_NOTIFICATION_SECRET_KEY",
        default: "",
        doc: "Base64 of 32 bytes: encrypts webhook secrets at rest (AES-256-GCM). Required for webhooks outside dev mode.",
    },
    KeyDoc {
        key: "PIM_DELIVERY_MAX_ATTEMPTS",
        default: "8",
        doc: "Attempts of one delivery before it is dead-lettered.",
    },
    KeyDoc {
        key: "PIM_DELIVERY_RETRY_BASE_MS",
        default: "180000",
        doc: "Wait before the first retry; each further retry waits twice as long, with ±20% jitter (8 attempts span about 6 hours).",
    },
    KeyDoc {
        key: "PIM_DELIVERY_POLL_MS",
        default: "1000",
        doc: "How often delivery workers look for due retries when not woken.",
    },
    KeyDoc {
        key: "PIM_DELIVERY_ENDPOINT_CONCURRENCY",
        default: "4",
        doc: "Deliveries in flight per webhook host or mail domain, so one slow receiver cannot hold up the others.",
    },
    KeyDoc {
        key: "PIM_WEBHOOK_TIMEOUT_MS",
        default: "10000",
        doc: "Timeout of one webhook request.",
    },
    KeyDoc {
        key: "PIM_WEBHOOK_ALLOW_LOOPBACK",
        default: "false",
        doc: "Allow webhook URLs on loopback addresses (tests, local receivers).",
    },
    KeyDoc {
        key: "PIM_WEBHOOK_ALLOW_PRIVATE",
        default: "false",
        doc: "Allow webhook URLs on private, link-local and other non-public addresses.",
    },
    KeyDoc {
        key: "PIM_NOTIFICATION_TEMPLATE_DIR",
        default: "",
        doc: "Directory of templates (`<event type>.txt` / `.html`) that replace the built-in ones.",
    },
    KeyDoc {
        key: "PIM_DIGEST_INTERVAL_HOURS",
        default: "168",
        doc: "Cadence of the admins' digest of activations, assignments and pending approvals, counted from Mondays 08:00 UTC (168: weekly); 0 turns it off.",
    },
    KeyDoc {
        key: "PIM_LOG",
        default: "info",
        doc: "Log filter (tracing EnvFilter syntax).",
    },
    KeyDoc {
        key: "PIM_LOG_FORMAT",
        default: "json",
        doc: "`json` or `pretty`.",
    },
    KeyDoc {
        key: "PIM_TRACE_FILTER",
        default: "info",
        doc: "Filter of spans exported over OTLP.",
    },
    KeyDoc {
        key: "OTEL_EXPORTER_OTLP_ENDPOINT",
        default: "",
        doc: "OTLP/gRPC endpoint; tracing export is off when unset.",
    },
    KeyDoc {
        key: "OTEL_SERVICE_NAME",
        default: "pim-<service>",
        doc: "service.name of exported spans.",
    },
];

#[cfg(test)]
mod tests {
    #[test]
    fn the_readme_documents_every_key() {
        let readme = include_str!("../../../README.md");
        for key in super::REFERENCE {
            assert!(
                readme.contains(&format!("| `{}` |", key.key)),
                "README.md lacks {}",
                key.key
            );
        }
    }
}
