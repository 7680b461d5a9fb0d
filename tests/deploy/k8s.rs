//! `deploy/k8s/`: valid against the Kubernetes schemas (`kubernetes-validate`), listed by the
//! kustomization, and in agreement with the code: one Deployment, Service, PodDisruptionBudget,
//! HorizontalPodAutoscaler and migration Job per service, on the service's port, running the one
//! image, probed, limited and unprivileged, configured with keys PIM reads and secrets by
//! reference.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    process::Command,
};

use pim_config::ServiceName;
use serde_yaml_ng::Value;

use crate::{
    Env, SECRET_KEYS, assert_none, at, python_tool, read, repo, scalar, seq, serve_problems,
    str_at, yaml_documents,
};

/// The image every container runs (deploy/Dockerfile); overlays set its registry and tag.
const IMAGE: &str = "pim";

/// Kubernetes versions the manifests must be valid for: the oldest we support, and the newest
/// kubernetes-validate knows.
const KUBERNETES_VERSIONS: &[Option<&str>] = &[Some("1.29.0"), None];

fn dir() -> PathBuf {
    repo().join("deploy/k8s")
}

/// The manifests: every YAML file of deploy/k8s except the kustomization.
fn manifest_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(dir())
        .expect("deploy/k8s exists")
        .map(|entry| {
            entry
                .expect("deploy/k8s is readable")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".yaml") && name != "kustomization.yaml")
        .collect();
    files.sort();
    files
}

struct Resource {
    file: String,
    kind: String,
    name: String,
    value: Value,
}

impl Resource {
    fn what(&self) -> String {
        format!("{} {} ({})", self.kind, self.name, self.file)
    }
}

fn resources() -> Vec<Resource> {
    manifest_files()
        .into_iter()
        .flat_map(|file| {
            let text = read(&dir().join(&file));
            yaml_documents(&text, &file)
                .into_iter()
                .map(move |value| Resource {
                    file: file.clone(),
                    kind: str_at(&value, &["kind"]).unwrap_or_default().to_owned(),
                    name: str_at(&value, &["metadata", "name"])
                        .unwrap_or_default()
                        .to_owned(),
                    value,
                })
        })
        .collect()
}

fn find<'a>(resources: &'a [Resource], kind: &str, name: &str) -> Option<&'a Resource> {
    resources.iter().find(|r| r.kind == kind && r.name == name)
}

fn labels(value: &Value, path: &[&str]) -> BTreeMap<String, String> {
    at(value, path)
        .and_then(Value::as_mapping)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), scalar(v)?)))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether every label of `selector` is on `labels`.
fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn strings(value: &Value, path: &[&str]) -> Vec<String> {
    seq(value, path).iter().filter_map(scalar).collect()
}

fn config_map_data(resources: &[Resource], name: &str) -> Option<Env> {
    let map = find(resources, "ConfigMap", name)?;
    Some(labels(&map.value, &["data"]))
}

/// A container's environment as the process sees it. A value from a Secret becomes a
/// placeholder naming the Secret and key: the manifests hold references, never values.
fn container_env(resources: &[Resource], container: &Value, what: &str) -> (Env, Vec<String>) {
    let mut env = Env::new();
    let mut problems = Vec::new();
    for source in seq(container, &["envFrom"]) {
        if let Some(name) = str_at(source, &["configMapRef", "name"]) {
            match config_map_data(resources, name) {
                Some(data) => env.extend(data),
                None => problems.push(format!("{what}: ConfigMap {name} is not in the base")),
            }
        } else if source.get("secretRef").is_some() {
            problems.push(format!(
                "{what}: envFrom a whole Secret hides which keys it sets; name each one"
            ));
        }
    }
    for variable in seq(container, &["env"]) {
        let key = str_at(variable, &["name"]).unwrap_or_default().to_owned();
        if let Some(value) = variable.get("value") {
            if SECRET_KEYS.contains(&key.as_str()) {
                problems.push(format!(
                    "{what}: {key} is a literal; it must come from a Secret"
                ));
            }
            env.insert(key, scalar(value).unwrap_or_default());
        } else if let Some(reference) = at(variable, &["valueFrom", "secretKeyRef"]) {
            let secret = str_at(reference, &["name"]).unwrap_or_default();
            let item = str_at(reference, &["key"]).unwrap_or_default();
            env.insert(key, format!("secret:{secret}/{item}"));
        } else {
            problems.push(format!(
                "{what}: {key} has neither a value nor a secretKeyRef"
            ));
        }
    }
    for key in SECRET_KEYS {
        if let Some(value) = env.get(*key)
            && !value.starts_with("secret:")
            && !value.is_empty()
        {
            problems.push(format!(
                "{what}: {key} is set in a ConfigMap or literal, not from a Secret"
            ));
        }
    }
    (env, problems)
}

/// The `pod spec` of a Deployment or Job.
fn pod(resource: &Resource) -> &Value {
    at(&resource.value, &["spec", "template", "spec"]).unwrap_or(&Value::Null)
}

/// Checks every container of a pod for limits and an unprivileged security context.
fn unprivileged_and_limited(resource: &Resource) -> Vec<String> {
    let mut problems = Vec::new();
    let what = resource.what();
    let pod = pod(resource);
    if at(pod, &["securityContext", "runAsNonRoot"]) != Some(&Value::Bool(true)) {
        problems.push(format!("{what}: the pod does not set runAsNonRoot: true"));
    }
    if pod.get("automountServiceAccountToken") != Some(&Value::Bool(false)) {
        problems.push(format!(
            "{what}: mounts a service account token PIM never uses"
        ));
    }
    let containers = seq(pod, &["containers"]);
    if containers.is_empty() {
        problems.push(format!("{what}: no containers"));
    }
    for container in containers {
        let what = format!(
            "{what}, container {}",
            str_at(container, &["name"]).unwrap_or("?")
        );
        let image = str_at(container, &["image"]).unwrap_or_default();
        if image != IMAGE {
            problems.push(format!(
                "{what}: image {image:?}, not {IMAGE:?} (the kustomization sets the tag)"
            ));
        }
        for bound in ["requests", "limits"] {
            for resource in ["cpu", "memory"] {
                if at(container, &["resources", bound, resource]).is_none() {
                    problems.push(format!("{what}: no {resource} {bound}"));
                }
            }
        }
        let security = |key: &str| at(container, &["securityContext", key]);
        for (key, wanted) in [
            ("allowPrivilegeEscalation", false),
            ("readOnlyRootFilesystem", true),
            ("runAsNonRoot", true),
        ] {
            if security(key) != Some(&Value::Bool(wanted)) {
                problems.push(format!("{what}: securityContext.{key} is not {wanted}"));
            }
        }
        if strings(container, &["securityContext", "capabilities", "drop"]) != ["ALL"] {
            problems.push(format!("{what}: capabilities do not drop ALL"));
        }
    }
    problems
}

#[test]
fn every_manifest_is_valid_against_the_kubernetes_schemas() {
    let command = python_tool("kubernetes-validate", "kubernetes_validate");
    let files = manifest_files();
    assert!(!files.is_empty(), "deploy/k8s has no manifests");
    for version in KUBERNETES_VERSIONS {
        let mut run = Command::new(&command[0]);
        run.args(&command[1..]).args(["--strict", "--quiet"]);
        if let Some(version) = version {
            run.args(["--kubernetes-version", version]);
        }
        let output = run
            .args(&files)
            .current_dir(dir())
            .output()
            .expect("running kubernetes-validate");
        assert!(
            output.status.success(),
            "kubernetes-validate (Kubernetes {}) rejects deploy/k8s:\n{}{}",
            version.unwrap_or("latest"),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn the_kustomization_lists_every_manifest_and_sets_the_one_image() {
    let text = read(&dir().join("kustomization.yaml"));
    let kustomization = yaml_documents(&text, "kustomization.yaml")
        .into_iter()
        .next()
        .expect("kustomization.yaml has a document");
    let mut problems = Vec::new();
    let listed: BTreeSet<String> = strings(&kustomization, &["resources"])
        .into_iter()
        .collect();
    let present: BTreeSet<String> = manifest_files().into_iter().collect();
    for missing in present.difference(&listed) {
        problems.push(format!(
            "{missing} is in deploy/k8s but not in kustomization.yaml"
        ));
    }
    for absent in listed.difference(&present) {
        problems.push(format!(
            "kustomization.yaml lists {absent}, which does not exist"
        ));
    }
    let images: Vec<&str> = seq(&kustomization, &["images"])
        .iter()
        .filter_map(|i| str_at(i, &["name"]))
        .collect();
    if images != [IMAGE] {
        problems.push(format!(
            "kustomization.yaml sets images {images:?}, not just {IMAGE:?}"
        ));
    }
    if resources().iter().any(|r| r.kind == "Secret") {
        problems.push("the base holds a Secret: it must name Secrets, never carry them".into());
    }
    assert_none(problems, "kustomization");

    // Where kubectl is installed, build the base as an operator would.
    match Command::new("kubectl")
        .args(["kustomize"])
        .arg(dir())
        .output()
    {
        Ok(output) => {
            assert!(
                output.status.success(),
                "kubectl kustomize deploy/k8s fails:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
            let built = String::from_utf8_lossy(&output.stdout);
            for service in ServiceName::ALL {
                assert!(
                    built.contains(&format!("name: pim-{service}")),
                    "the built base lacks pim-{service}"
                );
            }
        }
        Err(_) => eprintln!("kubectl is not installed: `kubectl kustomize` was not tried"),
    }
}

#[test]
fn deployments_are_probed_limited_and_unprivileged_and_so_are_the_jobs() {
    let resources = resources();
    let mut problems = Vec::new();
    for resource in resources
        .iter()
        .filter(|r| r.kind == "Deployment" || r.kind == "Job")
    {
        problems.extend(unprivileged_and_limited(resource));
    }
    for deployment in resources.iter().filter(|r| r.kind == "Deployment") {
        let what = deployment.what();
        for container in seq(pod(deployment), &["containers"]) {
            let ports: Vec<i64> = seq(container, &["ports"])
                .iter()
                .filter_map(|p| p.get("containerPort").and_then(Value::as_i64))
                .collect();
            match at(container, &["readinessProbe", "grpc", "port"]).and_then(Value::as_i64) {
                Some(port) if ports.contains(&port) => {}
                other => problems.push(format!("{what}: readiness is not a gRPC health probe on the container port ({other:?}, ports {ports:?})")),
            }
            if container.get("livenessProbe").is_none() {
                problems.push(format!("{what}: no liveness probe"));
            }
        }
    }
    assert_none(problems, "pod hardening and probes");
}

#[test]
fn each_service_has_its_deployment_service_budget_autoscaler_and_migration_on_its_port() {
    let resources = resources();
    let mut problems = Vec::new();
    let shared = config_map_data(&resources, "pim-config").unwrap_or_default();
    for service in ServiceName::ALL {
        let name = format!("pim-{service}");
        let port = i64::from(service.default_port());
        let Some(deployment) = find(&resources, "Deployment", &name) else {
            problems.push(format!("no Deployment {name}"));
            continue;
        };
        let what = deployment.what();
        let pod_labels = labels(
            &deployment.value,
            &["spec", "template", "metadata", "labels"],
        );
        if !selects(
            &labels(&deployment.value, &["spec", "selector", "matchLabels"]),
            &pod_labels,
        ) {
            problems.push(format!("{what}: its selector does not select its own pods"));
        }
        let containers = seq(pod(deployment), &["containers"]);
        let container = containers.first().unwrap_or(&Value::Null);
        if strings(container, &["args"]) != ["serve", service.as_str()] {
            problems.push(format!("{what}: does not run `pim serve {service}`"));
        }
        let grpc = seq(container, &["ports"])
            .iter()
            .find(|p| str_at(p, &["name"]) == Some("grpc"))
            .and_then(|p| p.get("containerPort"))
            .and_then(Value::as_i64);
        if grpc != Some(port) {
            problems.push(format!(
                "{what}: container port grpc is {grpc:?}, not {service}'s {port}"
            ));
        }

        match find(&resources, "Service", &name) {
            None => problems.push(format!("no Service {name}")),
            Some(svc) => {
                if !selects(&labels(&svc.value, &["spec", "selector"]), &pod_labels) {
                    problems.push(format!(
                        "{}: does not select the pods of {what}",
                        svc.what()
                    ));
                }
                let ports = seq(&svc.value, &["spec", "ports"]);
                let right = ports.iter().any(|p| {
                    p.get("port").and_then(Value::as_i64) == Some(port)
                        && match p.get("targetPort") {
                            Some(Value::String(name)) => name == "grpc",
                            Some(Value::Number(n)) => n.as_i64() == Some(port),
                            _ => false,
                        }
                });
                if !right {
                    problems.push(format!(
                        "{}: does not expose {port} to the grpc container port",
                        svc.what()
                    ));
                }
            }
        }
        match find(&resources, "PodDisruptionBudget", &name) {
            None => problems.push(format!("no PodDisruptionBudget {name}")),
            Some(pdb) => {
                if !selects(
                    &labels(&pdb.value, &["spec", "selector", "matchLabels"]),
                    &pod_labels,
                ) {
                    problems.push(format!(
                        "{}: does not select the pods of {what}",
                        pdb.what()
                    ));
                }
            }
        }
        match find(&resources, "HorizontalPodAutoscaler", &name) {
            None => problems.push(format!("no HorizontalPodAutoscaler {name}")),
            Some(hpa) => {
                let target = (
                    str_at(&hpa.value, &["spec", "scaleTargetRef", "kind"]),
                    str_at(&hpa.value, &["spec", "scaleTargetRef", "name"]),
                );
                if target != (Some("Deployment"), Some(name.as_str())) {
                    problems.push(format!(
                        "{}: scales {target:?}, not Deployment {name}",
                        hpa.what()
                    ));
                }
                // One pod may be disrupted while another still serves.
                let min = at(&hpa.value, &["spec", "minReplicas"]).and_then(Value::as_i64);
                if min.unwrap_or(1) < 2 {
                    problems.push(format!(
                        "{}: minReplicas below 2 leaves the budget nothing to keep",
                        hpa.what()
                    ));
                }
                if at(&deployment.value, &["spec", "replicas"]).is_some() {
                    problems.push(format!(
                        "{what}: sets replicas, which fights the autoscaler"
                    ));
                }
            }
        }
        let job_name = format!("pim-migrate-{service}");
        match find(&resources, "Job", &job_name) {
            None => problems.push(format!("no migration Job {job_name}")),
            Some(job) => {
                let container = seq(pod(job), &["containers"])
                    .first()
                    .cloned()
                    .unwrap_or_default();
                if strings(&container, &["args"]) != ["migrate", service.as_str()] {
                    problems.push(format!(
                        "{}: does not run `pim migrate {service}`",
                        job.what()
                    ));
                }
                let (env, env_problems) = container_env(&resources, &container, &job.what());
                problems.extend(env_problems);
                let owner = format!("secret:{name}-db/migrate-database-url");
                if env.get("PIM_MIGRATE_DATABASE_URL") != Some(&owner) {
                    problems.push(format!(
                        "{}: PIM_MIGRATE_DATABASE_URL is not the owner URL from {owner}",
                        job.what()
                    ));
                }
            }
        }
        let url = format!("http://{name}:{port}");
        if shared.get(&service.url_key()) != Some(&url) {
            problems.push(format!(
                "ConfigMap pim-config: {} is not {url}, the Service",
                service.url_key()
            ));
        }
    }
    let kinds: BTreeSet<&str> = resources.iter().map(|r| r.kind.as_str()).collect();
    for kind in [
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "Job",
    ] {
        let count = resources.iter().filter(|r| r.kind == kind).count();
        if count != ServiceName::ALL.len() {
            problems.push(format!("{count} {kind}s, not one per service"));
        }
    }
    if !kinds.contains("ConfigMap") {
        problems.push("no ConfigMap of shared settings".into());
    }
    assert_none(problems, "services, ports and images");
}

#[test]
fn every_service_loads_its_settings_from_its_manifest_with_secrets_by_reference() {
    let resources = resources();
    let mut problems = Vec::new();
    let shared = config_map_data(&resources, "pim-config").unwrap_or_default();
    for key in [
        "PIM_BREAK_GLASS_PRINCIPALS",
        "PIM_AUTH_ISSUER",
        "PIM_AUTH_AUDIENCE",
    ] {
        if !shared.contains_key(key) {
            problems.push(format!(
                "ConfigMap pim-config lacks {key}, which every service reads"
            ));
        }
    }
    for map in resources.iter().filter(|r| r.kind == "ConfigMap") {
        for key in labels(&map.value, &["data"]).keys() {
            if SECRET_KEYS.contains(&key.as_str()) {
                problems.push(format!("{}: holds {key}, a secret", map.what()));
            }
        }
    }
    if shared.get("PIM_MIGRATE_ON_START").map(String::as_str) != Some("false") {
        problems.push(
            "ConfigMap pim-config: PIM_MIGRATE_ON_START is not false, yet the Jobs migrate".into(),
        );
    }
    for service in ServiceName::ALL {
        let Some(deployment) = find(&resources, "Deployment", &format!("pim-{service}")) else {
            continue;
        };
        let what = deployment.what();
        let pod = pod(deployment);
        let Some(container) = seq(pod, &["containers"]).first() else {
            continue;
        };
        let (env, env_problems) = container_env(&resources, container, &what);
        problems.extend(env_problems);
        problems.extend(serve_problems(service, &env, &what, &[]));
        if env.get("PIM_AUTH_DEV_MODE").is_some_and(|v| v == "true") {
            problems.push(format!("{what}: dev mode is on"));
        }
        if env.get("OTEL_SERVICE_NAME") != Some(&format!("pim-{service}")) {
            problems.push(format!("{what}: OTEL_SERVICE_NAME is not pim-{service}"));
        }
        // Every file PIM is told to read lies in a mounted volume.
        let volumes: BTreeSet<&str> = seq(pod, &["volumes"])
            .iter()
            .filter_map(|v| str_at(v, &["name"]))
            .collect();
        let mounts: Vec<(&str, &str)> = seq(container, &["volumeMounts"])
            .iter()
            .filter_map(|m| Some((str_at(m, &["name"])?, str_at(m, &["mountPath"])?)))
            .collect();
        for (name, _) in &mounts {
            if !volumes.contains(name) {
                problems.push(format!(
                    "{what}: mounts volume {name}, which the pod does not have"
                ));
            }
        }
        for (key, path) in env
            .iter()
            .filter(|(k, v)| k.ends_with("_FILE") && !v.is_empty())
        {
            let mounted = mounts.iter().any(|(_, dir)| {
                path.strip_prefix(dir)
                    .is_some_and(|rest| rest.starts_with('/'))
            });
            if !mounted {
                problems.push(format!("{what}: {key}={path} is not in a mounted volume"));
            }
        }
        if service == ServiceName::Notification
            && env
                .get("PIM_NOTIFICATION_SECRET_KEY")
                .is_none_or(|v| !v.starts_with("secret:"))
        {
            problems.push(format!(
                "{what}: PIM_NOTIFICATION_SECRET_KEY does not come from a Secret"
            ));
        }
        if service == ServiceName::Audit && !env.contains_key("PIM_AUDIT_SIGNING_KEY_FILE") {
            problems.push(format!(
                "{what}: no PIM_AUDIT_SIGNING_KEY_FILE: each pod would sign with a key of its own"
            ));
        }
    }
    assert_none(problems, "the manifests do not start PIM");
}

#[test]
fn pods_run_the_image_as_its_own_user_through_its_entry_point() {
    let dockerfile = read(&repo().join("deploy/Dockerfile"));
    let instruction = |name: &str| -> Vec<String> {
        dockerfile
            .lines()
            .filter_map(|l| l.strip_prefix(name))
            .map(|rest| rest.trim().to_owned())
            .collect()
    };
    let mut problems = Vec::new();
    let user = instruction("USER ").last().cloned().unwrap_or_default();
    let uid: Option<i64> = user.split(':').next().and_then(|u| u.parse().ok());
    if uid.is_none_or(|uid| uid == 0) {
        problems.push(format!(
            "deploy/Dockerfile runs as {user:?}, not a numeric non-root user"
        ));
    }
    if instruction("ENTRYPOINT ").last().map(String::as_str) != Some(r#"["pim"]"#) {
        problems.push("deploy/Dockerfile's entry point is not pim".into());
    }
    let exposed: Vec<String> = instruction("EXPOSE ")
        .iter()
        .flat_map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    for service in ServiceName::ALL {
        if !exposed.contains(&service.default_port().to_string()) {
            problems.push(format!(
                "deploy/Dockerfile does not EXPOSE {service}'s port"
            ));
        }
    }
    for resource in resources()
        .iter()
        .filter(|r| r.kind == "Deployment" || r.kind == "Job")
    {
        let pod = pod(resource);
        if at(pod, &["securityContext", "runAsUser"]).and_then(Value::as_i64) != uid {
            problems.push(format!(
                "{}: runAsUser is not the image's user {user}",
                resource.what()
            ));
        }
        for container in seq(pod, &["containers"]) {
            if container.get("command").is_some() {
                problems.push(format!(
                    "{}: overrides the entry point; give `args` only",
                    resource.what()
                ));
            }
        }
    }
    assert_none(problems, "image and pods");
}
