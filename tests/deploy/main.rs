//! The deployment files against the code. There is no Docker engine or cluster here, so these
//! tests read `docker-compose.yml` and `deploy/k8s/` and hold them to what `pim_config` reads:
//! each service's environment must load with `Settings::load` and satisfy `pim serve`, every
//! `PIM_*` key must be one the code knows, and names, ports and images must agree with
//! `ServiceName`. The files are also validated against their schemas with tools from PyPI:
//! the manifests with `kubernetes-validate`, the compose file with `check-jsonschema`'s copy of
//! the Compose Specification. `.ci/run` installs both.

mod compose;
mod k8s;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use pim_config::{REFERENCE, ServiceName, Settings, Source};
use serde_yaml_ng::Value;

/// A service's environment: key to value, as the process would see it.
type Env = BTreeMap<String, String>;

/// Keys outside `pim_config::REFERENCE` that the OpenTelemetry SDK itself reads.
const OTEL_SDK_KEYS: &[&str] = &[
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
];

/// Keys holding secrets: they come from a secret store, never as literals in a manifest.
const SECRET_KEYS: &[&str] = &[
    "PIM_DATABASE_URL",
    "PIM_MIGRATE_DATABASE_URL",
    "PIM_REDIS_URL",
    "PIM_AUTH_DEV_HS256_SECRET",
    "PIM_NOTIFICATION_SECRET_KEY",
    "PIM_SMTP_PASSWORD",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository")
        .to_path_buf()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Every YAML document in `text`, with `<<` merge keys applied.
fn yaml_documents(text: &str, what: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|document| {
            let mut value = <Value as serde::Deserialize>::deserialize(document)
                .unwrap_or_else(|e| panic!("{what} is not valid YAML: {e}"));
            value
                .apply_merge()
                .unwrap_or_else(|e| panic!("{what}: merge keys: {e}"));
            value
        })
        .filter(|value| !value.is_null())
        .collect()
}

/// A scalar as the string a process would get in its environment.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some(String::new()),
        _ => None,
    }
}

fn str_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    at(value, path).and_then(Value::as_str)
}

fn at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |value, key| value.get(*key))
}

fn seq<'a>(value: &'a Value, path: &[&str]) -> &'a [Value] {
    at(value, path)
        .and_then(Value::as_sequence)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Whether PIM reads `key`: a key of `REFERENCE` (with `<SERVICE>` spelled out for each
/// service), or one the OpenTelemetry SDK reads.
fn known_key(key: &str) -> bool {
    OTEL_SDK_KEYS.contains(&key)
        || REFERENCE.iter().any(|doc| {
            if doc.key.contains("<SERVICE>") {
                ServiceName::ALL.iter().any(|service| {
                    doc.key
                        .replace("<SERVICE>", &service.as_str().to_ascii_uppercase())
                        == key
                })
            } else {
                doc.key == key
            }
        })
}

/// The doc line of a `REFERENCE` key.
fn doc_of(key: &str) -> &'static str {
    REFERENCE
        .iter()
        .find(|doc| doc.key == key)
        .map(|doc| doc.doc)
        .unwrap_or_default()
}

/// The one service a key is meant for, if any. Audit's keys say so in their docs; the
/// notification context's are its SMTP, secret, delivery, webhook, template and digest keys.
fn owner_of(key: &str) -> Option<ServiceName> {
    if ServiceName::ALL.iter().any(|s| s.url_key() == key) {
        return None;
    }
    if doc_of(key).starts_with("Audit only") || key.starts_with("PIM_AUDIT_") {
        return Some(ServiceName::Audit);
    }
    let notification = [
        "PIM_SMTP_",
        "PIM_NOTIFICATION_",
        "PIM_DELIVERY_",
        "PIM_WEBHOOK_",
        "PIM_DIGEST_",
    ];
    notification
        .iter()
        .any(|p| key.starts_with(p))
        .then_some(ServiceName::Notification)
}

/// What is wrong with `env` as the environment of `pim serve <service>`: what
/// `Settings::load` refuses, and what the host refuses at start (no Redis URL, no key to sign
/// service tokens with), and keys PIM does not read (`also_allowed` excepted).
fn serve_problems(
    service: ServiceName,
    env: &Env,
    what: &str,
    also_allowed: &[&str],
) -> Vec<String> {
    let mut problems = Vec::new();
    let source = Source::from_pairs(env.iter().map(|(k, v)| (k.clone(), v.clone())));
    let settings = match Settings::load(service, &source) {
        Ok(settings) => settings,
        Err(e) => return vec![format!("{what}: Settings::load refuses it: {e}")],
    };
    if settings.events.redis_url.is_none() {
        problems.push(format!(
            "{what}: PIM_REDIS_URL is unset; `pim serve` requires it"
        ));
    }
    let auth = &settings.auth;
    if auth.service_signing_key_file.is_none()
        && !(auth.dev_mode && auth.dev_hs256_secret.is_some())
    {
        problems.push(format!(
            "{what}: nothing signs service tokens for peers: set PIM_SERVICE_SIGNING_KEY_FILE"
        ));
    }
    if settings.grpc.listen.port() != service.default_port() {
        problems.push(format!(
            "{what}: listens on {}, not on {}'s port {}",
            settings.grpc.listen,
            service,
            service.default_port()
        ));
    }
    for key in env.keys() {
        let foreign = key.starts_with("PIM_") || key.starts_with("OTEL_");
        if foreign && !known_key(key) && !also_allowed.contains(&key.as_str()) {
            problems.push(format!(
                "{what}: {key} is not a key PIM reads (pim_config::REFERENCE)"
            ));
        }
        if let Some(owner) = owner_of(key)
            && owner != service
        {
            problems.push(format!("{what}: {key} is for the {owner} service only"));
        }
    }
    problems
}

/// How to run a validator from PyPI: its command, or `python3 -m` its module. Panics with the
/// install hint when neither works, since CI installs them (`.ci/run`).
fn python_tool(command: &str, module: &str) -> Vec<String> {
    let works = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if works(command, &[]) {
        return vec![command.to_owned()];
    }
    if works("python3", &["-m", module]) {
        return vec!["python3".into(), "-m".into(), module.to_owned()];
    }
    panic!("{command} is not installed: `pip install {command}` (.ci/run does)");
}

/// The decoded length of standard base64, or `None` when it is not base64.
fn base64_len(text: &str) -> Option<usize> {
    let body = text.trim_end_matches('=');
    let padding = text.len() - body.len();
    let alphabet = |c: char| c.is_ascii_alphanumeric() || c == '+' || c == '/';
    if !text.len().is_multiple_of(4) || padding > 2 || !body.chars().all(alphabet) {
        return None;
    }
    Some(text.len() / 4 * 3 - padding)
}

/// Fails with every problem at once, so one run shows the whole list.
#[track_caller]
fn assert_none(problems: Vec<String>, what: &str) {
    assert!(
        problems.is_empty(),
        "{what}:\n  - {}",
        problems.join("\n  - ")
    );
}

#[test]
fn base64_lengths_are_read_correctly() {
    assert_eq!(
        base64_len("cGltLWxvY2FsLW9ubHktbm90aWZpY2F0aW9uLWtleSE="),
        Some(32)
    );
    assert_eq!(base64_len("YWJj"), Some(3));
    assert_eq!(base64_len("not base64!"), None);
}

#[test]
fn reference_keys_are_recognised_with_services_spelled_out() {
    assert!(known_key("PIM_NOTIFICATION_URL"));
    assert!(known_key("PIM_DATABASE_URL"));
    assert!(!known_key("PIM_DATABASE_URI"));
    assert_eq!(owner_of("PIM_SMTP_HOST"), Some(ServiceName::Notification));
    assert_eq!(owner_of("PIM_NOTIFICATION_URL"), None);
    assert_eq!(owner_of("PIM_AUDIT_URL"), None);
    assert_eq!(
        owner_of("PIM_AUDIT_RETENTION_DAYS"),
        Some(ServiceName::Audit)
    );
}
