//! How a process's telemetry is configured: PIM's own log keys and the standard `OTEL_*`
//! variables (service name, resource attributes, sampling, export interval), read through one
//! lookup so tests and `pim dev` can set them without touching the process environment.

use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::KeyValue;
use opentelemetry_sdk::{Resource, trace::Sampler};

/// How to set up telemetry for a process.
#[derive(Debug, Clone)]
pub struct TelemetryOptions {
    /// `service.name` of the process (`OTEL_SERVICE_NAME`); in a process hosting several
    /// contexts, of the spans no context claims.
    pub service_name: String,
    pub log_filter: String,
    pub log_json: bool,
    pub trace_filter: String,
    /// OTLP/gRPC endpoint; `None` turns span and metric export off.
    pub otlp_endpoint: Option<String>,
    /// `OTEL_RESOURCE_ATTRIBUTES`, such as `service.version` and `deployment.environment`.
    pub resource_attributes: Vec<(String, String)>,
    /// `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`.
    pub sampling: Sampling,
    /// `OTEL_METRIC_EXPORT_INTERVAL`.
    pub metric_interval: Duration,
    /// The contexts hosted in this process when there are several (`pim dev`, tests): each
    /// one's spans are exported under its own `service.name`, `pim-<context>`.
    pub contexts: Vec<String>,
}

impl TelemetryOptions {
    /// Options for `service_name` with PIM's defaults: JSON logs at `info`, spans at `info`,
    /// export off.
    pub fn new(service_name: impl Into<String>) -> Self {
        Self {
            service_name: service_name.into(),
            log_filter: "info".into(),
            log_json: true,
            trace_filter: "info".into(),
            otlp_endpoint: None,
            resource_attributes: Vec::new(),
            sampling: Sampling::default(),
            metric_interval: Duration::from_secs(60),
            contexts: Vec::new(),
        }
    }

    /// Reads `PIM_LOG`, `PIM_LOG_FORMAT`, `PIM_TRACE_FILTER` and the standard `OTEL_*`
    /// variables through `var`; `default_service` names the process unless
    /// `OTEL_SERVICE_NAME` does.
    pub fn from_vars(
        default_service: &str,
        var: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Self> {
        let set = |key: &str| var(key).filter(|v| !v.trim().is_empty());
        let mut options = Self::new(set("OTEL_SERVICE_NAME").unwrap_or(default_service.into()));
        if let Some(filter) = set("PIM_LOG") {
            options.log_filter = filter;
        }
        options.log_json = match set("PIM_LOG_FORMAT").as_deref() {
            None | Some("json") => true,
            Some("pretty") => false,
            Some(other) => anyhow::bail!("PIM_LOG_FORMAT {other:?}: expected json or pretty"),
        };
        if let Some(filter) = set("PIM_TRACE_FILTER") {
            options.trace_filter = filter;
        }
        options.otlp_endpoint = set("OTEL_EXPORTER_OTLP_ENDPOINT");
        if let Some(attributes) = set("OTEL_RESOURCE_ATTRIBUTES") {
            options.resource_attributes = parse_resource_attributes(&attributes)?;
        }
        if let Some(sampler) = set("OTEL_TRACES_SAMPLER") {
            options.sampling =
                Sampling::parse(&sampler, set("OTEL_TRACES_SAMPLER_ARG").as_deref())?;
        }
        if let Some(interval) = set("OTEL_METRIC_EXPORT_INTERVAL") {
            let millis: u64 = interval
                .trim()
                .parse()
                .context("OTEL_METRIC_EXPORT_INTERVAL: milliseconds")?;
            options.metric_interval = Duration::from_millis(millis.max(100));
        }
        Ok(options)
    }

    /// The resource of spans and metrics exported under `service_name`: the name, PIM's
    /// version unless `OTEL_RESOURCE_ATTRIBUTES` names one, then those attributes.
    pub(crate) fn resource(&self, service_name: &str) -> Resource {
        let attributes = self
            .resource_attributes
            .iter()
            .filter(|(key, _)| key != "service.name")
            .map(|(key, value)| KeyValue::new(key.clone(), value.clone()));
        Resource::builder_empty()
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .with_attributes(attributes)
            .with_service_name(service_name.to_owned())
            .build()
    }
}

/// `key=value,key=value`, values percent-encoded as the specification says.
fn parse_resource_attributes(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    text.split(',')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| {
            let (key, value) = pair
                .split_once('=')
                .with_context(|| format!("OTEL_RESOURCE_ATTRIBUTES: {pair:?} is not key=value"))?;
            Ok((key.trim().to_owned(), percent_decode(value.trim())))
        })
        .collect()
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Which traces are recorded, as `OTEL_TRACES_SAMPLER` names them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
    /// Follow the caller's decision; decide roots with the inner choice.
    ParentBased(Root),
}

/// How a parent-based sampler decides traces that start here.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Root {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
}

impl Default for Sampling {
    fn default() -> Self {
        Self::ParentBased(Root::AlwaysOn)
    }
}

impl Sampling {
    pub fn parse(sampler: &str, arg: Option<&str>) -> anyhow::Result<Self> {
        let ratio = || -> anyhow::Result<f64> {
            let Some(arg) = arg else { return Ok(1.0) };
            let ratio: f64 = arg
                .trim()
                .parse()
                .context("OTEL_TRACES_SAMPLER_ARG: a ratio from 0 to 1")?;
            anyhow::ensure!(
                (0.0..=1.0).contains(&ratio),
                "OTEL_TRACES_SAMPLER_ARG {ratio}: a ratio from 0 to 1"
            );
            Ok(ratio)
        };
        Ok(match sampler.trim() {
            "always_on" => Self::AlwaysOn,
            "always_off" => Self::AlwaysOff,
            "traceidratio" => Self::Ratio(ratio()?),
            "parentbased_always_on" => Self::ParentBased(Root::AlwaysOn),
            "parentbased_always_off" => Self::ParentBased(Root::AlwaysOff),
            "parentbased_traceidratio" => Self::ParentBased(Root::Ratio(ratio()?)),
            other => anyhow::bail!(
                "OTEL_TRACES_SAMPLER {other:?}: expected always_on, always_off, traceidratio, \
                 parentbased_always_on, parentbased_always_off or parentbased_traceidratio"
            ),
        })
    }

    pub(crate) fn sampler(self) -> Sampler {
        let root = |root: Root| match root {
            Root::AlwaysOn => Sampler::AlwaysOn,
            Root::AlwaysOff => Sampler::AlwaysOff,
            Root::Ratio(r) => Sampler::TraceIdRatioBased(r),
        };
        match self {
            Self::AlwaysOn => Sampler::AlwaysOn,
            Self::AlwaysOff => Sampler::AlwaysOff,
            Self::Ratio(r) => Sampler::TraceIdRatioBased(r),
            Self::ParentBased(r) => Sampler::ParentBased(Box::new(root(r))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |key| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    }

    #[test]
    fn the_standard_variables_set_the_resource_and_the_sampler() {
        let options = TelemetryOptions::from_vars(
            "pim-audit",
            vars(&[
                ("OTEL_SERVICE_NAME", "audit-eu"),
                (
                    "OTEL_RESOURCE_ATTRIBUTES",
                    "deployment.environment=prod,service.version=9.9,team=sec%2Cops",
                ),
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
                ("OTEL_METRIC_EXPORT_INTERVAL", "5000"),
            ]),
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(options.service_name, "audit-eu");
        assert_eq!(options.sampling, Sampling::ParentBased(Root::Ratio(0.25)));
        assert_eq!(options.metric_interval, Duration::from_secs(5));
        let resource = options.resource(&options.service_name);
        let get = |key: &'static str| resource.get(&key.into()).map(|v| v.to_string());
        assert_eq!(get("service.name").as_deref(), Some("audit-eu"));
        assert_eq!(get("service.version").as_deref(), Some("9.9"));
        assert_eq!(get("deployment.environment").as_deref(), Some("prod"));
        assert_eq!(get("team").as_deref(), Some("sec,ops"));
    }

    #[test]
    fn defaults_are_json_logs_parent_based_sampling_and_no_export() {
        let options =
            TelemetryOptions::from_vars("pim-audit", vars(&[])).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(options.service_name, "pim-audit");
        assert!(options.log_json);
        assert_eq!(options.otlp_endpoint, None);
        assert_eq!(options.sampling, Sampling::ParentBased(Root::AlwaysOn));
        let version = options
            .resource("pim-audit")
            .get(&"service.version".into())
            .map(|v| v.to_string());
        assert_eq!(version.as_deref(), Some(env!("CARGO_PKG_VERSION")));
    }

    #[test]
    fn a_bad_sampler_or_ratio_is_refused() {
        assert!(Sampling::parse("sometimes", None).is_err());
        assert!(Sampling::parse("traceidratio", Some("2")).is_err());
        assert_eq!(
            Sampling::parse("traceidratio", None).ok(),
            Some(Sampling::Ratio(1.0))
        );
    }
}
