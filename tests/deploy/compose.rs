//! `docker-compose.yml`: every PIM service gets the settings it needs and nothing PIM does not
//! read, ports are unique, everything has a health check that its dependants wait for, and the
//! state lives in named volumes.

use std::collections::{BTreeMap, BTreeSet};

use pim_config::ServiceName;
use serde_yaml_ng::Value;

use crate::{
    Env, assert_none, at, base64_len, known_key, python_tool, read, repo, scalar, seq,
    serve_problems, str_at, yaml_documents,
};

/// Variables that only the compose file reads (interpolation, health checks, the PostgreSQL
/// container), never PIM. Each is documented in the file's header and in docs/operations.md.
const COMPOSE_ONLY: &[&str] = &[
    "PIM_PORT",
    "PIM_DEV_SECRET",
    "PIM_POSTGRES_PASSWORD",
    "PIM_ASSIGNMENT_DB_PASSWORD",
    "PIM_ACTIVATION_DB_PASSWORD",
    "PIM_APPROVAL_DB_PASSWORD",
    "PIM_NOTIFICATION_DB_PASSWORD",
    "PIM_AUDIT_DB_PASSWORD",
];

/// Services whose image cannot run a health check, and why.
const NO_HEALTH_CHECK: &[(&str, &str)] = &[(
    "otel-collector",
    "the collector image is FROM scratch: no shell or HTTP client to probe with",
)];

/// Settings every PIM service must get, and get alike.
const SHARED: &[&str] = &[
    "PIM_REDIS_URL",
    "PIM_ASSIGNMENT_URL",
    "PIM_ACTIVATION_URL",
    "PIM_APPROVAL_URL",
    "PIM_NOTIFICATION_URL",
    "PIM_AUDIT_URL",
    "PIM_AUTH_DEV_MODE",
    "PIM_AUTH_DEV_HS256_SECRET",
    "PIM_AUTH_ISSUER",
    "PIM_AUTH_AUDIENCE",
    "PIM_BREAK_GLASS_PRINCIPALS",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

struct Compose {
    text: String,
    services: BTreeMap<String, Value>,
    volumes: BTreeSet<String>,
}

impl Compose {
    fn load() -> Self {
        let text = read(&repo().join("docker-compose.yml"));
        let document = yaml_documents(&text, "docker-compose.yml")
            .into_iter()
            .next()
            .expect("docker-compose.yml has a document");
        let names = |key: &str| -> Vec<(String, Value)> {
            document
                .get(key)
                .and_then(Value::as_mapping)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.clone())))
                        .collect()
                })
                .unwrap_or_default()
        };
        Self {
            services: names("services").into_iter().collect(),
            volumes: names("volumes").into_iter().map(|(k, _)| k).collect(),
            text,
        }
    }

    fn service(&self, name: &str) -> &Value {
        self.services
            .get(name)
            .unwrap_or_else(|| panic!("docker-compose.yml has no service {name}"))
    }

    /// A service's environment after interpolation, with no variable set on the host: what
    /// `docker compose up` gives on a clean machine.
    fn env(&self, name: &str) -> Env {
        let mut env = Env::new();
        match self.service(name).get("environment") {
            Some(Value::Mapping(map)) => {
                for (key, value) in map {
                    let key = key.as_str().expect("environment keys are strings");
                    let value =
                        scalar(value).unwrap_or_else(|| panic!("{name}: {key} is not a scalar"));
                    env.insert(key.to_owned(), interpolate(&value).0);
                }
            }
            Some(Value::Sequence(list)) => {
                for item in list {
                    let item = item.as_str().expect("environment entries are strings");
                    let (key, value) = item.split_once('=').unwrap_or((item, ""));
                    env.insert(key.to_owned(), interpolate(value).0);
                }
            }
            _ => {}
        }
        env
    }

    /// The ports a service publishes, as `(host_ip, host_port, container_port)`.
    fn ports(&self, name: &str) -> Vec<(String, u16, u16)> {
        seq(self.service(name), &["ports"])
            .iter()
            .map(|port| {
                let spec = scalar(port).expect("ports are short-syntax strings");
                let parts: Vec<&str> = spec.split(':').collect();
                let number = |s: &str| -> u16 {
                    s.parse()
                        .unwrap_or_else(|_| panic!("{name}: port {spec:?} is not a number"))
                };
                match parts.as_slice() {
                    [ip, host, container] => (ip.to_string(), number(host), number(container)),
                    [host, container] => ("0.0.0.0".into(), number(host), number(container)),
                    _ => panic!("{name}: port {spec:?} is not ip:host:container"),
                }
            })
            .collect()
    }
}

/// Compose's `${VAR}`, `${VAR:-default}`, `${VAR-default}` and `$$`, with no variable set.
/// Returns the result and the names of the variables it referred to.
fn interpolate(text: &str) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
        } else if let Some(braced) = rest.strip_prefix('{') {
            let end = braced
                .find('}')
                .unwrap_or_else(|| panic!("unclosed ${{ in {text:?}"));
            let expression = &braced[..end];
            let name_end = expression
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(expression.len());
            names.push(expression[..name_end].to_owned());
            let operator = &expression[name_end..];
            if let Some(default) = operator
                .strip_prefix(":-")
                .or_else(|| operator.strip_prefix('-'))
            {
                out.push_str(default);
            }
            rest = &braced[end + 1..];
        } else {
            let name_end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            names.push(rest[..name_end].to_owned());
            rest = &rest[name_end..];
        }
    }
    out.push_str(rest);
    (out, names)
}

fn name(service: ServiceName) -> &'static str {
    service.as_str()
}

/// `postgres://user:password@host:port/database` in its parts.
fn database_url(url: &str) -> Option<(&str, &str, &str, &str)> {
    let rest = url.strip_prefix("postgres://")?;
    let (credentials, rest) = rest.split_once('@')?;
    let (user, password) = credentials.split_once(':')?;
    let (host, database) = rest.split_once('/')?;
    let host = host.split(':').next()?;
    Some((user, password, host, database.split('?').next()?))
}

/// The host and port of a `scheme://host:port` URL.
fn host_port(url: &str) -> Option<(&str, u16)> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let (host, port) = authority.rsplit_once(':')?;
    Some((host, port.parse().ok()?))
}

#[test]
fn the_file_is_valid_against_the_compose_specification() {
    let command = python_tool("check-jsonschema", "check_jsonschema");
    let output = std::process::Command::new(&command[0])
        .args(&command[1..])
        .args([
            "--builtin-schema",
            "vendor.compose-spec",
            "docker-compose.yml",
        ])
        .current_dir(repo())
        .output()
        .expect("running check-jsonschema");
    assert!(
        output.status.success(),
        "docker-compose.yml does not follow the Compose Specification:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn every_pim_service_loads_its_settings_from_the_compose_environment() {
    let compose = Compose::load();
    let init_sql = read(&repo().join("deploy/postgres/init.sql"));
    let postgres = compose.env("postgres");
    let mut problems = Vec::new();
    for service in ServiceName::ALL {
        let name = name(service);
        let what = format!("docker-compose.yml, service {name}");
        let definition = compose.service(name);
        let env = compose.env(name);
        problems.extend(serve_problems(service, &env, &what, COMPOSE_ONLY));

        let command: Vec<String> = seq(definition, &["command"])
            .iter()
            .filter_map(scalar)
            .collect();
        if command != ["serve", name] {
            problems.push(format!("{what}: command is {command:?}, not serve {name}"));
        }
        let port = service.default_port();
        if env.get("PIM_PORT") != Some(&port.to_string()) {
            problems.push(format!(
                "{what}: PIM_PORT (probed by the health check) is not {port}"
            ));
        }
        if !compose.ports(name).iter().any(|p| p.2 == port) {
            problems.push(format!("{what}: gRPC port {port} is not published"));
        }
        if env.get("OTEL_SERVICE_NAME") != Some(&format!("pim-{name}")) {
            problems.push(format!("{what}: OTEL_SERVICE_NAME is not pim-{name}"));
        }

        // Its own database, as its own role, with the password init.sql gave that role.
        let database = service.database_name();
        match env.get("PIM_DATABASE_URL").and_then(|u| database_url(u)) {
            None => problems.push(format!(
                "{what}: PIM_DATABASE_URL is not a postgres:// URL with credentials"
            )),
            Some((user, password, host, db)) => {
                if user != database || db != database {
                    problems.push(format!(
                        "{what}: connects as {user} to {db}, not as {database} to {database}"
                    ));
                }
                if !compose.services.contains_key(host) {
                    problems.push(format!(
                        "{what}: database host {host} is not a compose service"
                    ));
                }
                let password_key = format!("PIM_{}_DB_PASSWORD", name.to_ascii_uppercase());
                if postgres.get(&password_key).map(String::as_str) != Some(password) {
                    problems.push(format!("{what}: its database password differs from {password_key} of the postgres service, which init.sql uses"));
                }
            }
        }
        for statement in [
            format!("CREATE ROLE {database} LOGIN"),
            format!("CREATE DATABASE {database} OWNER {database}"),
            format!(
                "\\getenv {name}_password PIM_{}_DB_PASSWORD",
                name.to_ascii_uppercase()
            ),
        ] {
            if !init_sql.contains(&statement) {
                problems.push(format!("deploy/postgres/init.sql lacks `{statement}`"));
            }
        }
    }
    assert_none(problems, "the compose environment does not start PIM");
}

#[test]
fn shared_settings_reach_every_service_alike_and_point_at_compose_services() {
    let compose = Compose::load();
    let envs: Vec<(ServiceName, Env)> = ServiceName::ALL
        .into_iter()
        .map(|s| (s, compose.env(name(s))))
        .collect();
    let mut problems = Vec::new();
    for key in SHARED {
        let values: BTreeSet<Option<&String>> = envs.iter().map(|(_, env)| env.get(*key)).collect();
        if values.len() != 1 || values.contains(&None) {
            problems.push(format!(
                "{key} is not set alike on all five services: {values:?}"
            ));
        }
    }
    let env = &envs[0].1;
    if env
        .get("PIM_BREAK_GLASS_PRINCIPALS")
        .is_none_or(String::is_empty)
    {
        problems.push("PIM_BREAK_GLASS_PRINCIPALS is empty: nobody could administer PIM".into());
    }
    for peer in ServiceName::ALL {
        let url = env.get(&peer.url_key()).cloned().unwrap_or_default();
        if host_port(&url) != Some((name(peer), peer.default_port())) {
            problems.push(format!(
                "{} is {url:?}, not http://{}:{}",
                peer.url_key(),
                name(peer),
                peer.default_port()
            ));
        }
    }
    for (key, wanted) in [
        ("PIM_REDIS_URL", "redis"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "otel-collector"),
    ] {
        let url = env.get(key).cloned().unwrap_or_default();
        match host_port(&url) {
            Some((host, _)) if host == wanted && compose.services.contains_key(host) => {}
            _ => problems.push(format!("{key} is {url:?}: not the {wanted} service")),
        }
    }
    assert_none(problems, "shared settings");
}

#[test]
fn notification_mails_the_catcher_and_seals_secrets_with_a_32_byte_key() {
    let compose = Compose::load();
    let env = compose.env("notification");
    let mut problems = Vec::new();
    let expect = [
        ("PIM_SMTP_HOST", "mailpit"),
        ("PIM_SMTP_PORT", "1025"),
        ("PIM_SMTP_TLS", "none"),
    ];
    for (key, value) in expect {
        if env.get(key).map(String::as_str) != Some(value) {
            problems.push(format!(
                "notification: {key} is {:?}, not {value}",
                env.get(key)
            ));
        }
    }
    if env
        .get("PIM_SMTP_FROM")
        .is_none_or(|from| !from.contains('@'))
    {
        problems.push("notification: PIM_SMTP_FROM is not an address".into());
    }
    match env
        .get("PIM_NOTIFICATION_SECRET_KEY")
        .map(|k| base64_len(k))
    {
        Some(Some(32)) => {}
        other => problems.push(format!(
            "notification: PIM_NOTIFICATION_SECRET_KEY is not base64 of 32 bytes ({other:?})"
        )),
    }
    if !compose.ports("mailpit").iter().any(|p| p.2 == 8025) {
        problems.push("mailpit: its web UI (8025) is not published".into());
    }
    assert_none(problems, "mail");
}

#[test]
fn the_collector_sends_traces_to_jaeger_and_exposes_metrics_to_prometheus() {
    let compose = Compose::load();
    let text = read(&repo().join("deploy/otel-collector.yaml"));
    let collector = yaml_documents(&text, "deploy/otel-collector.yaml")
        .into_iter()
        .next()
        .expect("deploy/otel-collector.yaml has a document");
    let mut problems = Vec::new();
    let pipeline = |signal: &str, part: &str| -> Vec<String> {
        seq(&collector, &["service", "pipelines", signal, part])
            .iter()
            .filter_map(scalar)
            .collect()
    };
    for signal in ["traces", "metrics"] {
        if !pipeline(signal, "receivers").contains(&"otlp".to_owned()) {
            problems.push(format!("the {signal} pipeline does not receive OTLP"));
        }
    }
    let traces_to_jaeger = pipeline("traces", "exporters")
        .iter()
        .any(|e| str_at(&collector, &["exporters", e, "endpoint"]) == Some("jaeger:4317"));
    if !traces_to_jaeger {
        problems.push("traces are not exported to jaeger:4317".into());
    }
    let prometheus = pipeline("metrics", "exporters")
        .iter()
        .find_map(|e| {
            str_at(&collector, &["exporters", e, "endpoint"])
                .filter(|_| e.starts_with("prometheus"))
        })
        .and_then(|endpoint| endpoint.rsplit(':').next()?.parse::<u16>().ok());
    match prometheus {
        None => problems.push("metrics are not exported in the Prometheus format".into()),
        Some(port) if !compose.ports("otel-collector").iter().any(|p| p.2 == port) => problems
            .push(format!(
                "the collector's Prometheus port {port} is not published"
            )),
        Some(_) => {}
    }
    let grpc = str_at(
        &collector,
        &["receivers", "otlp", "protocols", "grpc", "endpoint"],
    );
    if grpc != Some("0.0.0.0:4317") {
        problems.push(format!(
            "the OTLP receiver listens on {grpc:?}, not 0.0.0.0:4317 where the services send"
        ));
    }
    if !compose.ports("jaeger").iter().any(|p| p.2 == 16686) {
        problems.push("jaeger: its UI (16686) is not published".into());
    }
    assert_none(problems, "traces and metrics");
}

#[test]
fn every_pim_variable_in_the_file_is_one_the_code_reads_or_a_documented_compose_variable() {
    let compose = Compose::load();
    let operations = read(&repo().join("docs/operations.md"));
    let mut problems = Vec::new();
    // Interpolated variables, anywhere in the file (comments excepted).
    let mut referenced = BTreeSet::new();
    for line in compose.text.lines() {
        let code = line.split(" #").next().unwrap_or_default();
        if code.trim_start().starts_with('#') {
            continue;
        }
        referenced.extend(interpolate(code).1);
    }
    // Environment keys of every container.
    for name in compose.services.keys() {
        referenced.extend(compose.env(name).into_keys());
    }
    for key in referenced.iter().filter(|k| k.starts_with("PIM_")) {
        if known_key(key) {
            continue;
        }
        if !COMPOSE_ONLY.contains(&key.as_str()) {
            problems.push(format!(
                "{key} is neither in pim_config::REFERENCE nor a documented compose-only variable"
            ));
        }
    }
    let header: String = compose
        .text
        .lines()
        .take_while(|l| l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    for key in COMPOSE_ONLY {
        // The five database passwords are documented once, as PIM_<SERVICE>_DB_PASSWORD.
        let spelled = match key.ends_with("_DB_PASSWORD") {
            true => "PIM_<SERVICE>_DB_PASSWORD",
            false => key,
        };
        if !operations.contains(spelled) {
            problems.push(format!(
                "{key}: a compose-only variable docs/operations.md does not mention ({spelled})"
            ));
        }
        if !header.contains(spelled) {
            problems.push(format!("{key}: a compose-only variable docker-compose.yml's header does not describe ({spelled})"));
        }
    }
    assert_none(problems, "configuration keys");
}

#[test]
fn published_ports_are_unique_and_bound_to_loopback() {
    let compose = Compose::load();
    let mut seen: BTreeMap<u16, String> = BTreeMap::new();
    let mut problems = Vec::new();
    for name in compose.services.keys() {
        for (ip, host, _) in compose.ports(name) {
            if ip != "127.0.0.1" {
                problems.push(format!("{name}: port {host} is published on {ip}, not on 127.0.0.1 (the stack uses a shared dev secret)"));
            }
            if let Some(other) = seen.insert(host, name.clone()) {
                problems.push(format!(
                    "host port {host} is published by both {other} and {name}"
                ));
            }
        }
    }
    assert_none(problems, "published ports");
}

#[test]
fn every_service_has_a_health_check_and_its_dependants_wait_for_it() {
    let compose = Compose::load();
    let mut problems = Vec::new();
    let healthy = |name: &str| compose.service(name).get("healthcheck").is_some();
    for (name, definition) in &compose.services {
        let exempt = NO_HEALTH_CHECK.iter().any(|(n, _)| n == name);
        match (definition.get("healthcheck"), exempt) {
            (None, false) => problems.push(format!("{name} has no health check")),
            (Some(_), true) => problems.push(format!(
                "{name} has a health check now: drop it from NO_HEALTH_CHECK"
            )),
            (Some(check), false) => {
                let test: Vec<String> = seq(check, &["test"]).iter().filter_map(scalar).collect();
                if test.is_empty() || test[0] == "NONE" {
                    problems.push(format!("{name}: its health check runs nothing"));
                }
                if ServiceName::ALL.iter().any(|s| s.as_str() == name)
                    && !test
                        .iter()
                        .any(|t| t.contains("pim health") && t.contains("PIM_PORT"))
                {
                    problems.push(format!(
                        "{name}: the health check is not `pim health` on PIM_PORT"
                    ));
                }
            }
            (None, true) => {}
        }
        match definition.get("depends_on") {
            None => {}
            Some(Value::Mapping(dependencies)) => {
                for (dependency, how) in dependencies {
                    let dependency = dependency.as_str().unwrap_or_default();
                    if !compose.services.contains_key(dependency) {
                        problems.push(format!(
                            "{name} depends on {dependency}, which is not a service"
                        ));
                        continue;
                    }
                    let wanted = if healthy(dependency) {
                        "service_healthy"
                    } else {
                        "service_started"
                    };
                    let condition = str_at(how, &["condition"]).unwrap_or("(none)");
                    if condition != wanted {
                        problems.push(format!(
                            "{name} waits for {dependency} with {condition}, not {wanted}"
                        ));
                    }
                }
            }
            Some(_) => problems.push(format!(
                "{name}: depends_on is a list; conditions need the long form"
            )),
        }
    }
    for service in ServiceName::ALL {
        for dependency in ["postgres", "redis"] {
            if at(compose.service(name(service)), &["depends_on", dependency]).is_none() {
                problems.push(format!("{} does not wait for {dependency}", name(service)));
            }
        }
    }
    if at(compose.service("notification"), &["depends_on", "mailpit"]).is_none() {
        problems.push("notification does not wait for mailpit".into());
    }
    assert_none(problems, "health checks");
}

#[test]
fn state_lives_in_named_volumes_and_redis_keeps_an_append_only_file() {
    let compose = Compose::load();
    let mut problems = Vec::new();
    for (name, path) in [("postgres", "/var/lib/postgresql/data"), ("redis", "/data")] {
        let named = seq(compose.service(name), &["volumes"])
            .iter()
            .filter_map(Value::as_str)
            .filter_map(|v| v.split_once(':'))
            .any(|(source, target)| {
                target.split(':').next() == Some(path) && compose.volumes.contains(source)
            });
        if !named {
            problems.push(format!(
                "{name}: {path} is not a named volume declared under volumes:"
            ));
        }
    }
    let redis: Vec<String> = seq(compose.service("redis"), &["command"])
        .iter()
        .filter_map(scalar)
        .collect();
    if !redis
        .windows(2)
        .any(|w| w[0] == "--appendonly" && w[1] == "yes")
    {
        problems.push(format!("redis runs {redis:?}, without --appendonly yes"));
    }
    let init = seq(compose.service("postgres"), &["volumes"])
        .iter()
        .filter_map(Value::as_str)
        .any(|v| v.starts_with("./deploy/postgres/init.sql:/docker-entrypoint-initdb.d/"));
    if !init {
        problems.push("postgres does not run deploy/postgres/init.sql on first start".into());
    }
    assert_none(problems, "state");
}

#[test]
fn interpolation_follows_compose() {
    assert_eq!(
        interpolate("a${X:-b}c${Y-d}$${Z}$W"),
        (
            "abcd${Z}".to_owned(),
            vec!["X".to_owned(), "Y".to_owned(), "W".to_owned()]
        )
    );
}
