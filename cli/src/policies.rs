//! `pim policy show|set|export|import`: role management policies, one at a time or as one
//! document (YAML or JSON, in protobuf's JSON mapping) that an organization keeps in version
//! control. The document is converted with the contracts' own descriptors, so every field the
//! service knows round-trips, and an unknown field is an error rather than silently dropped.

use std::path::PathBuf;

use clap::{Subcommand, ValueEnum};
use pim_client::PimClient;
use pim_proto::assignment::v1::{
    ExportPoliciesRequest, GetEffectivePolicyRequest, ImportPoliciesRequest, PolicyDocument,
    PolicyRules, SetPolicyRequest,
};
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};
use serde_json::json;

use crate::admin::{Output, readable, role_id, table};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Yaml,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// The effective policy of ROLE at SCOPE, rule by rule with its source.
    Show { role: String, scope: String },
    /// Set the policy of ROLE at SCOPE from FILE: its rules (`PolicyRules`), YAML or JSON.
    Set {
        role: String,
        scope: String,
        file: PathBuf,
        /// Answer exactly as the real call would, and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Every policy set at any scope, as one document on standard output.
    Export {
        #[arg(long, value_enum, default_value = "yaml")]
        format: Format,
    },
    /// Set every policy FILE names (YAML or JSON), validated whole before anything changes.
    Import {
        file: PathBuf,
        /// Validate and count the changes, and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

pub(crate) async fn run(
    command: PolicyCommand,
    client: &PimClient,
    output: Output,
) -> anyhow::Result<String> {
    match command {
        PolicyCommand::Show { role, scope } => show(client, role, scope, output).await,
        PolicyCommand::Set {
            role,
            scope,
            file,
            dry_run,
        } => {
            let rules: PolicyRules = parse(&std::fs::read_to_string(&file)?, "PolicyRules")?;
            let role_id = role_id(client, &role).await?;
            let policy = client
                .assignment()
                .set_policy(SetPolicyRequest {
                    role_id,
                    scope,
                    rules: Some(rules),
                    validate_only: dry_run,
                    ..Default::default()
                })
                .await
                .map_err(readable)?
                .into_inner()
                .policy
                .unwrap_or_default();
            Ok(summary(
                output,
                dry_run,
                &[("role", policy.role_id), ("scope", policy.scope)],
                policy.version,
            ))
        }
        PolicyCommand::Export { format } => {
            let document = client
                .assignment()
                .export_policies(ExportPoliciesRequest {})
                .await
                .map_err(readable)?
                .into_inner()
                .document
                .unwrap_or_default();
            render(&document, "PolicyDocument", format)
        }
        PolicyCommand::Import { file, dry_run } => {
            let document: PolicyDocument =
                parse(&std::fs::read_to_string(&file)?, "PolicyDocument")?;
            let answer = client
                .assignment()
                .import_policies(ImportPoliciesRequest {
                    document: Some(document),
                    validate_only: dry_run,
                })
                .await
                .map_err(readable)?
                .into_inner();
            Ok(summary(
                output,
                dry_run,
                &[
                    ("changed", answer.changed.to_string()),
                    ("unchanged", answer.unchanged.to_string()),
                ],
                answer.revision,
            ))
        }
    }
}

fn summary(output: Output, dry_run: bool, fields: &[(&str, String)], revision: i64) -> String {
    match output {
        Output::Json => {
            let mut value = json!({"dry_run": dry_run, "revision": revision});
            for (k, v) in fields {
                value[*k] = json!(v);
            }
            value.to_string() + "\n"
        }
        Output::Table => {
            let mut header: Vec<String> = fields.iter().map(|(k, _)| k.to_uppercase()).collect();
            header.push("REVISION".into());
            let mut row: Vec<String> = fields.iter().map(|(_, v)| v.clone()).collect();
            row.push(if dry_run {
                "(dry run: nothing written)".to_owned()
            } else {
                revision.to_string()
            });
            let header: Vec<&str> = header.iter().map(String::as_str).collect();
            table(&header, &[row])
        }
    }
}

fn descriptor(name: &str) -> anyhow::Result<MessageDescriptor> {
    let pool = DescriptorPool::decode(pim_proto::FILE_DESCRIPTOR_SET)?;
    pool.get_message_by_name(&format!("pim.assignment.v1.{name}"))
        .ok_or_else(|| anyhow::anyhow!("the contracts have no message {name}"))
}

/// `message` in protobuf's JSON mapping, as YAML or pretty JSON.
pub fn render<M: prost::Message>(
    message: &M,
    name: &str,
    format: Format,
) -> anyhow::Result<String> {
    let dynamic = DynamicMessage::decode(descriptor(name)?, message.encode_to_vec().as_slice())?;
    let value = serde_json::to_value(&dynamic)?;
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(&value)? + "\n",
        Format::Yaml => serde_yaml_ng::to_string(&value)?,
    })
}

/// A document in protobuf's JSON mapping, written as YAML or JSON (YAML reads both). Unknown
/// fields are refused, so a typo never silently drops a rule.
pub fn parse<M: prost::Message + Default>(text: &str, name: &str) -> anyhow::Result<M> {
    let value: serde_json::Value =
        serde_yaml_ng::from_str(text).map_err(|e| anyhow::anyhow!("not YAML or JSON: {e}"))?;
    let dynamic = DynamicMessage::deserialize(descriptor(name)?, value)
        .map_err(|e| anyhow::anyhow!("not a {name}: {e}"))?;
    Ok(M::decode(dynamic.encode_to_vec().as_slice())?)
}

async fn show(
    client: &PimClient,
    role: String,
    scope: String,
    output: Output,
) -> anyhow::Result<String> {
    let role_id = role_id(client, &role).await?;
    let effective = client
        .assignment()
        .get_effective_policy(GetEffectivePolicyRequest { role_id, scope })
        .await
        .map_err(readable)?
        .into_inner();
    let rules = effective.rules.unwrap_or_default();
    let hours = |r: &Option<pim_proto::assignment::v1::ExpirationRule>| {
        r.as_ref()
            .and_then(|r| r.maximum_duration.as_ref())
            .map(|d| d.seconds / 3600)
            .unwrap_or_default()
    };
    let enablement = rules.activation_enablement.unwrap_or_default();
    let approval = rules.approval.clone().unwrap_or_default();
    let values = [
        (
            "Expiration_EndUser_Assignment",
            format!("max {} h", hours(&rules.activation_expiration)),
        ),
        (
            "Enablement_EndUser_Assignment",
            format!(
                "mfa={} justification={} ticket={}",
                enablement.mfa_required,
                enablement.justification_required,
                enablement.ticket_required
            ),
        ),
        (
            "Approval_EndUser_Assignment",
            format!(
                "required={} stages={}",
                approval.required,
                approval.stages.len()
            ),
        ),
        (
            "Expiration_Admin_Eligibility",
            format!("max {} d", hours(&rules.admin_eligibility_expiration) / 24),
        ),
        (
            "Expiration_Admin_Assignment",
            format!("max {} d", hours(&rules.admin_assignment_expiration) / 24),
        ),
    ];
    let source = |id: &str| {
        effective
            .sources
            .iter()
            .find(|s| s.rule_id == id)
            .map(|s| {
                if s.scope.is_empty() {
                    "organization default".to_owned()
                } else {
                    format!("{} v{}", s.scope, s.version)
                }
            })
            .unwrap_or_default()
    };
    Ok(match output {
        Output::Json => {
            let list: Vec<_> = values
                .iter()
                .map(|(id, v)| json!({"rule": id, "value": v, "source": source(id)}))
                .collect();
            json!({"version": effective.version, "rules": list}).to_string() + "\n"
        }
        Output::Table => table(
            &["RULE", "VALUE", "SOURCE"],
            &values
                .iter()
                .map(|(id, v)| vec![(*id).to_owned(), v.clone(), source(id)])
                .collect::<Vec<_>>(),
        ),
    })
}
