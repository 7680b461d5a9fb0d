//! The typed settings of one service process, read from a [`Source`].

use std::{fmt, net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

use crate::{ConfigError, Source};

/// The five bounded contexts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceName {
    Assignment,
    Activation,
    Approval,
    Notification,
    Audit,
}

impl ServiceName {
    pub const ALL: [ServiceName; 5] = [
        ServiceName::Assignment,
        ServiceName::Activation,
        ServiceName::Approval,
        ServiceName::Notification,
        ServiceName::Audit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ServiceName::Assignment => "assignment",
            ServiceName::Activation => "activation",
            ServiceName::Approval => "approval",
            ServiceName::Notification => "notification",
            ServiceName::Audit => "audit",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            ServiceName::Assignment => 50051,
            ServiceName::Activation => 50052,
            ServiceName::Approval => 50053,
            ServiceName::Notification => 50054,
            ServiceName::Audit => 50055,
        }
    }

    /// `PIM_ASSIGNMENT_URL` and friends.
    pub fn url_key(self) -> String {
        format!("PIM_{}_URL", self.as_str().to_ascii_uppercase())
    }

    /// The database each service owns.
    pub fn database_name(self) -> String {
        format!("pim_{}", self.as_str())
    }

    /// The identity a service presents to its peers: `service:<name>`.
    pub fn subject(self) -> String {
        format!("service:{}", self.as_str())
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ServiceName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|n| n.as_str() == s)
            .ok_or_else(|| format!("unknown service {s:?}; expected one of assignment, activation, approval, notification, audit"))
    }
}

/// A secret value: usable, but never printed, so settings can be logged safely.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

#[derive(Debug, Clone)]
pub struct DbSettings {
    pub url: String,
    pub migrate_url: Option<String>,
    pub migrate_on_start: bool,
    pub pool_max: u32,
    pub pool_min: u32,
}

#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub issuer: String,
    pub audience: String,
    pub public_key_file: Option<PathBuf>,
    /// An identity provider's JWKS; with it, `public_key_file` verifies only service tokens.
    pub jwks_url: Option<String>,
    pub dev_mode: bool,
    pub dev_hs256_secret: Option<Secret>,
    pub service_signing_key_file: Option<PathBuf>,
}

/// TLS for gRPC, server side and towards peers.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// PEM certificate chain and key this service presents, as server and as client of peers.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// When set, clients must present a certificate signed by this CA (mTLS).
    pub client_ca_file: Option<PathBuf>,
    /// The CA that signs peers' certificates; peers are then called over TLS.
    pub peer_ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct GrpcSettings {
    pub listen: SocketAddr,
    pub tls: Option<TlsSettings>,
    pub timeout: Duration,
    pub concurrency_limit: usize,
    pub drain: Duration,
}

#[derive(Debug, Clone)]
pub struct EventSettings {
    /// `None` selects the in-process bus over the outbox tables (`pim dev`).
    pub redis_url: Option<String>,
    pub stream_prefix: String,
    pub max_attempts: u64,
    pub reclaim_idle: Duration,
    pub gap_grace: Duration,
    pub gap_check: Duration,
    pub relay_poll: Duration,
    pub replay_window: Duration,
    pub security_events_per_minute: u32,
}

/// How TLS is used towards the SMTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain SMTP: for a relay on the same host or network only.
    None,
    /// STARTTLS is required.
    StartTls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Tls,
}

#[derive(Debug, Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    /// Plain, or `enc:` and ciphertext sealed with the notification secret key.
    pub password: Option<Secret>,
    pub from: String,
    pub timeout: Duration,
}

/// The notification context's channels, retries and secrets.
#[derive(Debug, Clone)]
pub struct NotificationSettings {
    /// E-mail is sent only when an SMTP host is configured.
    pub smtp: Option<SmtpSettings>,
    /// 32 bytes, base64: encrypts webhook secrets (and `enc:` SMTP passwords) at rest.
    pub secret_key: Option<Secret>,
    pub max_attempts: u32,
    /// The first retry waits this long; each further one twice as long, with jitter.
    pub retry_base: Duration,
    pub poll: Duration,
    pub endpoint_concurrency: usize,
    pub webhook_timeout: Duration,
    pub webhook_allow_loopback: bool,
    pub webhook_allow_private: bool,
    /// A directory whose `<name>.txt` / `<name>.html` files replace the built-in templates.
    pub template_dir: Option<PathBuf>,
    /// How often the admins' digest goes out, counted from Monday 1970-01-05 08:00 UTC (so
    /// weekly means Mondays at 08:00 UTC); `None` turns it off.
    pub digest_interval: Option<Duration>,
}

/// The audit context's chain: its checkpoint key, how often it signs, how long it keeps records.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// Ed25519 PKCS#8 PEM private key that signs checkpoints.
    pub signing_key_file: Option<PathBuf>,
    pub checkpoint_interval: Duration,
    /// `None` keeps every record.
    pub retention_days: Option<u32>,
    /// Hex public keys of earlier signing keys, trusted for the checkpoints they signed.
    pub previous_public_keys: Vec<String>,
    /// Security alerts that start disabled, until an admin configures them.
    pub alerts_disabled: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    pub log_filter: String,
    pub log_json: bool,
    pub trace_filter: String,
    pub otlp_endpoint: Option<String>,
}

/// Everything one service process needs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub service: ServiceName,
    pub db: DbSettings,
    pub auth: AuthSettings,
    pub grpc: GrpcSettings,
    pub events: EventSettings,
    pub telemetry: TelemetrySettings,
    pub notification: NotificationSettings,
    pub audit: AuditSettings,
    /// Where each peer is reached, indexed like [`ServiceName::ALL`].
    pub peer_urls: Vec<(ServiceName, String)>,
    pub break_glass_principals: Vec<String>,
    /// How often timers look for due announcements (expiry reminders, escalations).
    pub timer_interval: Duration,
    /// How recent a sign-in with MFA must be where a policy requires MFA.
    pub mfa_max_age: Duration,
    /// How long a request may sit between two states before the reconciler finishes it.
    pub reconcile_after: Duration,
    /// Named points where a service stops a flow as if it crashed there: for crash tests.
    pub fault_points: Vec<String>,
}

impl Settings {
    pub fn load(service: ServiceName, source: &Source) -> Result<Self, ConfigError> {
        let millis =
            |key: &str, default: u64| source.get::<u64>(key, default).map(Duration::from_millis);
        let listen = match source.raw("PIM_LISTEN_ADDR") {
            Some(_) => source.required("PIM_LISTEN_ADDR")?,
            None => SocketAddr::from(([0, 0, 0, 0], service.default_port())),
        };
        let log_format: String = source.get("PIM_LOG_FORMAT", "json".to_owned())?;
        if log_format != "json" && log_format != "pretty" {
            return Err(ConfigError::Invalid {
                key: "PIM_LOG_FORMAT".into(),
                message: format!("{log_format:?}: expected json or pretty"),
            });
        }
        let auth = AuthSettings {
            issuer: source.get("PIM_AUTH_ISSUER", "pim".to_owned())?,
            audience: source.get("PIM_AUTH_AUDIENCE", "pim".to_owned())?,
            public_key_file: source.optional("PIM_AUTH_PUBLIC_KEY_FILE")?,
            jwks_url: source.optional("PIM_AUTH_JWKS_URL")?,
            dev_mode: source.get("PIM_AUTH_DEV_MODE", false)?,
            dev_hs256_secret: source.optional("PIM_AUTH_DEV_HS256_SECRET")?,
            service_signing_key_file: source.optional("PIM_SERVICE_SIGNING_KEY_FILE")?,
        };
        if auth.dev_hs256_secret.is_some() && !auth.dev_mode {
            return Err(ConfigError::Invalid {
                key: "PIM_AUTH_DEV_HS256_SECRET".into(),
                message: "HS256 is accepted only with PIM_AUTH_DEV_MODE=true".into(),
            });
        }
        if auth.public_key_file.is_none()
            && auth.jwks_url.is_none()
            && auth.dev_hs256_secret.is_none()
        {
            return Err(ConfigError::Missing {
                key: "PIM_AUTH_PUBLIC_KEY_FILE".into(),
            });
        }
        Ok(Self {
            service,
            db: DbSettings {
                url: source.required("PIM_DATABASE_URL")?,
                migrate_url: source.optional("PIM_MIGRATE_DATABASE_URL")?,
                migrate_on_start: source.get("PIM_MIGRATE_ON_START", true)?,
                pool_max: source.get("PIM_DB_POOL_MAX", 10)?,
                pool_min: source.get("PIM_DB_POOL_MIN", 1)?,
            },
            auth,
            grpc: GrpcSettings {
                listen,
                tls: tls(source)?,
                timeout: millis("PIM_GRPC_TIMEOUT_MS", 10_000)?,
                concurrency_limit: source.get("PIM_GRPC_CONCURRENCY_LIMIT", 512)?,
                drain: Duration::from_secs(source.get("PIM_SHUTDOWN_DRAIN_SECS", 30)?),
            },
            events: EventSettings {
                redis_url: source.optional("PIM_REDIS_URL")?,
                stream_prefix: source.get("PIM_STREAM_PREFIX", "pim:".to_owned())?,
                max_attempts: source.get("PIM_EVENTS_MAX_ATTEMPTS", 5)?,
                reclaim_idle: millis("PIM_EVENTS_RECLAIM_IDLE_MS", 30_000)?,
                gap_grace: millis("PIM_EVENTS_GAP_GRACE_MS", 10_000)?,
                gap_check: millis("PIM_EVENTS_GAP_CHECK_MS", 2_000)?,
                relay_poll: millis("PIM_EVENTS_RELAY_POLL_MS", 20)?,
                replay_window: Duration::from_secs(
                    86_400 * source.get::<u64>("PIM_EVENTS_REPLAY_WINDOW_DAYS", 7)?,
                ),
                security_events_per_minute: source.get("PIM_SECURITY_EVENTS_PER_MINUTE", 60)?,
            },
            telemetry: TelemetrySettings {
                log_filter: source.get("PIM_LOG", "info".to_owned())?,
                log_json: log_format == "json",
                trace_filter: source.get("PIM_TRACE_FILTER", "info".to_owned())?,
                otlp_endpoint: source.optional("OTEL_EXPORTER_OTLP_ENDPOINT")?,
            },
            notification: notification(source)?,
            audit: AuditSettings {
                signing_key_file: source.optional("PIM_AUDIT_SIGNING_KEY_FILE")?,
                checkpoint_interval: Duration::from_secs(
                    source.get("PIM_AUDIT_CHECKPOINT_INTERVAL_SECS", 300)?,
                ),
                retention_days: match source.get::<u32>("PIM_AUDIT_RETENTION_DAYS", 0)? {
                    0 => None,
                    days => Some(days),
                },
                previous_public_keys: list(source, "PIM_AUDIT_PREVIOUS_PUBLIC_KEYS"),
                alerts_disabled: list(source, "PIM_ALERTS_DISABLED"),
            },
            peer_urls: ServiceName::ALL
                .into_iter()
                .map(|peer| {
                    let default = format!("http://127.0.0.1:{}", peer.default_port());
                    source.get(&peer.url_key(), default).map(|url| (peer, url))
                })
                .collect::<Result<_, _>>()?,
            timer_interval: millis("PIM_TIMER_INTERVAL_MS", 1_000)?,
            mfa_max_age: Duration::from_secs(source.get("PIM_MFA_MAX_AGE_SECS", 900)?),
            reconcile_after: millis("PIM_RECONCILE_AFTER_MS", 5_000)?,
            fault_points: list(source, "PIM_FAULT_POINTS"),
            break_glass_principals: list(source, "PIM_BREAK_GLASS_PRINCIPALS"),
        })
    }

    pub fn peer_url(&self, peer: ServiceName) -> &str {
        self.peer_urls
            .iter()
            .find(|(name, _)| *name == peer)
            .map(|(_, url)| url.as_str())
            .unwrap_or_default()
    }
}

/// A comma-separated list; empty when unset.
fn list(source: &Source, key: &str) -> Vec<String> {
    source
        .raw(key)
        .map(|raw| {
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

fn notification(source: &Source) -> Result<NotificationSettings, ConfigError> {
    let millis =
        |key: &str, default: u64| source.get::<u64>(key, default).map(Duration::from_millis);
    let smtp = match source.optional::<String>("PIM_SMTP_HOST")? {
        None => None,
        Some(host) => {
            let mode: String = source.get("PIM_SMTP_TLS", "starttls".to_owned())?;
            let tls = match mode.as_str() {
                "none" => SmtpTls::None,
                "starttls" => SmtpTls::StartTls,
                "tls" => SmtpTls::Tls,
                other => {
                    return Err(ConfigError::Invalid {
                        key: "PIM_SMTP_TLS".into(),
                        message: format!("{other:?}: expected none, starttls or tls"),
                    });
                }
            };
            let default_port = match tls {
                SmtpTls::None => 25,
                SmtpTls::StartTls => 587,
                SmtpTls::Tls => 465,
            };
            Some(SmtpSettings {
                host,
                port: source.get("PIM_SMTP_PORT", default_port)?,
                tls,
                username: source.optional("PIM_SMTP_USERNAME")?,
                password: source.optional("PIM_SMTP_PASSWORD")?,
                from: source.get("PIM_SMTP_FROM", "PIM <pim@localhost>".to_owned())?,
                timeout: millis("PIM_SMTP_TIMEOUT_MS", 10_000)?,
            })
        }
    };
    let max_attempts: u32 = source.get("PIM_DELIVERY_MAX_ATTEMPTS", 8)?;
    if max_attempts == 0 {
        return Err(ConfigError::Invalid {
            key: "PIM_DELIVERY_MAX_ATTEMPTS".into(),
            message: "must be at least 1".into(),
        });
    }
    Ok(NotificationSettings {
        smtp,
        secret_key: source.optional("PIM_NOTIFICATION_SECRET_KEY")?,
        max_attempts,
        retry_base: millis("PIM_DELIVERY_RETRY_BASE_MS", 180_000)?,
        poll: millis("PIM_DELIVERY_POLL_MS", 1_000)?,
        endpoint_concurrency: source.get("PIM_DELIVERY_ENDPOINT_CONCURRENCY", 4)?,
        webhook_timeout: millis("PIM_WEBHOOK_TIMEOUT_MS", 10_000)?,
        webhook_allow_loopback: source.get("PIM_WEBHOOK_ALLOW_LOOPBACK", false)?,
        webhook_allow_private: source.get("PIM_WEBHOOK_ALLOW_PRIVATE", false)?,
        template_dir: source.optional("PIM_NOTIFICATION_TEMPLATE_DIR")?,
        digest_interval: match source.get::<u64>("PIM_DIGEST_INTERVAL_HOURS", 168)? {
            0 => None,
            hours => Some(Duration::from_secs(hours * 3600)),
        },
    })
}

fn tls(source: &Source) -> Result<Option<TlsSettings>, ConfigError> {
    let cert: Option<PathBuf> = source.optional("PIM_TLS_CERT_FILE")?;
    let key: Option<PathBuf> = source.optional("PIM_TLS_KEY_FILE")?;
    match (cert, key) {
        (None, None) => {
            if source.raw("PIM_TLS_CLIENT_CA_FILE").is_some() {
                return Err(ConfigError::Invalid {
                    key: "PIM_TLS_CLIENT_CA_FILE".into(),
                    message: "client certificates need server TLS: set PIM_TLS_CERT_FILE and PIM_TLS_KEY_FILE".into(),
                });
            }
            Ok(None)
        }
        (Some(cert_file), Some(key_file)) => Ok(Some(TlsSettings {
            cert_file,
            key_file,
            client_ca_file: source.optional("PIM_TLS_CLIENT_CA_FILE")?,
            peer_ca_file: source.optional("PIM_TLS_PEER_CA_FILE")?,
        })),
        (Some(_), None) => Err(ConfigError::Missing {
            key: "PIM_TLS_KEY_FILE".into(),
        }),
        (None, Some(_)) => Err(ConfigError::Missing {
            key: "PIM_TLS_CERT_FILE".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_a_tls_configuration_is_refused_by_name() {
        let mut source = minimal();
        source.set("PIM_TLS_CERT_FILE", "/tls/cert.pem");
        let err = Settings::load(ServiceName::Assignment, &source).unwrap_err();
        assert!(err.to_string().contains("PIM_TLS_KEY_FILE"), "{err}");
    }

    fn minimal() -> Source {
        Source::from_pairs([
            ("PIM_DATABASE_URL", "postgres://localhost/pim_assignment"),
            ("PIM_AUTH_PUBLIC_KEY_FILE", "/keys/pub.pem"),
        ])
    }

    #[test]
    fn defaults_give_the_documented_ports() {
        let settings = Settings::load(ServiceName::Audit, &minimal()).unwrap();
        assert_eq!(settings.grpc.listen.port(), 50055);
        assert_eq!(
            settings.peer_url(ServiceName::Assignment),
            "http://127.0.0.1:50051"
        );
        assert_eq!(settings.db.pool_max, 10);
    }

    #[test]
    fn secrets_never_print() {
        let mut source = minimal();
        source.set("PIM_AUTH_DEV_MODE", "true");
        source.set("PIM_AUTH_DEV_HS256_SECRET", "hunter2-secret");
        let settings = Settings::load(ServiceName::Assignment, &source).unwrap();
        assert!(!format!("{settings:?}").contains("hunter2"));
        assert_eq!(
            settings.auth.dev_hs256_secret.unwrap().expose(),
            "hunter2-secret"
        );
    }

    #[test]
    fn hs256_needs_dev_mode() {
        let mut source = minimal();
        source.set("PIM_AUTH_DEV_HS256_SECRET", "s3cret");
        let err = Settings::load(ServiceName::Assignment, &source).unwrap_err();
        assert!(
            err.to_string().contains("PIM_AUTH_DEV_HS256_SECRET"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_database_url_is_named() {
        let source = Source::from_pairs([("PIM_AUTH_PUBLIC_KEY_FILE", "/k")]);
        let err = Settings::load(ServiceName::Assignment, &source).unwrap_err();
        assert!(err.to_string().contains("PIM_DATABASE_URL"), "{err}");
    }
}
