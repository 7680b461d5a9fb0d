//! Policies as one document: export → import round trip through the CLI's YAML, a whole
//! document validated before anything changes, and who may export and import.

use pim_cli::{
    admin::{AdminCommand, Output, run},
    policies::{Format, PolicyCommand, parse, render},
};
use pim_config::ServiceName;
use pim_proto::{
    Duration,
    assignment::v1::{
        ApprovalRule, ApprovalStage, Approver, EnablementRule, ExpirationRule,
        ExportPoliciesRequest, ImportPoliciesRequest, PolicyDocument, PolicyEntry, PolicyRules,
        SetPolicyRequest, approver::Subject,
    },
};
use pim_testkit::{ADMIN, Harness};
use tonic::Code;

use crate::{
    bad_input::count,
    support::{ROLE, SCOPE, field_violations},
};

fn strict_rules() -> PolicyRules {
    PolicyRules {
        activation_expiration: Some(ExpirationRule {
            maximum_duration: Some(Duration {
                seconds: 2 * 3600,
                nanos: 0,
            }),
            ..Default::default()
        }),
        activation_enablement: Some(EnablementRule {
            mfa_required: true,
            justification_required: true,
            ticket_required: true,
        }),
        approval: Some(ApprovalRule {
            required: true,
            stages: vec![ApprovalStage {
                approvers: vec![
                    Approver {
                        subject: Some(Subject::UserId("bob".into())),
                    },
                    Approver {
                        subject: Some(Subject::UserId("carol".into())),
                    },
                ],
                quorum: 2,
                timeout: Some(Duration {
                    seconds: 4 * 3600,
                    nanos: 0,
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn policy_rows(h: &Harness) -> anyhow::Result<i64> {
    count(
        h.service(ServiceName::Assignment).db(),
        "SELECT COUNT(*) AS n FROM policies",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exported_document_imports_back_to_the_same_policies() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let admin = h.client(ServiceName::Assignment, &h.mfa_token(ADMIN));
    admin
        .assignment()
        .set_policy(SetPolicyRequest {
            role_id: ROLE.into(),
            scope: SCOPE.into(),
            rules: Some(strict_rules()),
            ..Default::default()
        })
        .await?;
    let exported = admin
        .assignment()
        .export_policies(ExportPoliciesRequest {})
        .await?
        .into_inner()
        .document
        .unwrap_or_default();
    assert_eq!(exported.policies.len(), 1);
    assert_eq!(exported.policies[0].rules, Some(strict_rules()));

    // Through the CLI, as a person keeps it in version control.
    let yaml = run(
        AdminCommand::Policy {
            command: PolicyCommand::Export {
                format: Format::Yaml,
            },
        },
        &admin,
        Output::Table,
        0,
    )
    .await?;
    assert!(yaml.contains("quorum: 2"), "{yaml}");
    assert!(yaml.contains("maximumDuration: 7200s"), "{yaml}");
    let read_back: PolicyDocument = parse(&yaml, "PolicyDocument")?;
    assert_eq!(read_back, exported, "YAML keeps every rule");
    let json = render(&exported, "PolicyDocument", Format::Json)?;
    assert_eq!(parse::<PolicyDocument>(&json, "PolicyDocument")?, exported);
    assert!(
        parse::<PolicyDocument>(
            "policies: [{roleId: x, scope: /, rulez: {}}]",
            "PolicyDocument"
        )
        .is_err(),
        "a misspelt field is an error, not a dropped rule"
    );

    // One policy's rules from a file, as `pim policy set` reads them.
    let rules_file = std::env::temp_dir().join(format!("pim-rules-{}.yaml", uuid::Uuid::new_v4()));
    std::fs::write(
        &rules_file,
        render(&strict_rules(), "PolicyRules", Format::Yaml)?,
    )?;
    let set = run(
        AdminCommand::Policy {
            command: PolicyCommand::Set {
                role: "Security Administrator".into(),
                scope: "/".into(),
                file: rules_file.clone(),
                dry_run: true,
            },
        },
        &admin,
        Output::Table,
        0,
    )
    .await?;
    assert!(set.contains("(dry run: nothing written)"), "{set}");
    assert_eq!(policy_rows(&h).await?, 1, "the dry run set nothing");
    std::fs::remove_file(&rules_file)?;

    // Importing what is already there changes nothing.
    let file = std::env::temp_dir().join(format!("pim-policies-{}.yaml", uuid::Uuid::new_v4()));
    std::fs::write(&file, &yaml)?;
    let same = run(
        AdminCommand::Policy {
            command: PolicyCommand::Import {
                file: file.clone(),
                dry_run: false,
            },
        },
        &admin,
        Output::Json,
        0,
    )
    .await?;
    let same: serde_json::Value = serde_json::from_str(&same)?;
    assert_eq!(
        (&same["changed"], &same["unchanged"]),
        (&"0".into(), &"1".into())
    );

    // The same document, edited: the quorum goes to 1 and a second scope is added.
    let mut edited = exported.clone();
    if let Some(stage) = edited.policies[0]
        .rules
        .as_mut()
        .and_then(|r| r.approval.as_mut())
        .and_then(|a| a.stages.first_mut())
    {
        stage.quorum = 1;
    }
    edited.policies.push(PolicyEntry {
        role_id: ROLE.into(),
        scope: "/".into(),
        rules: Some(strict_rules()),
    });
    let dry = admin
        .assignment()
        .import_policies(ImportPoliciesRequest {
            document: Some(edited.clone()),
            validate_only: true,
        })
        .await?
        .into_inner();
    assert_eq!((dry.changed, dry.unchanged), (2, 0));
    assert_eq!(policy_rows(&h).await?, 1, "a dry run writes nothing");
    let applied = admin
        .assignment()
        .import_policies(ImportPoliciesRequest {
            document: Some(edited.clone()),
            validate_only: false,
        })
        .await?
        .into_inner();
    assert_eq!((applied.changed, applied.unchanged), (2, 0));
    let now = admin
        .assignment()
        .export_policies(ExportPoliciesRequest {})
        .await?
        .into_inner();
    assert_eq!(now.revision, applied.revision);
    let mut expected = edited.policies.clone();
    expected.sort_by(|a, b| a.scope.cmp(&b.scope));
    assert_eq!(now.document.unwrap_or_default().policies, expected);
    assert_eq!(
        count(
            h.service(ServiceName::Assignment).db(),
            "SELECT COUNT(*) AS n FROM outbox WHERE event_type = 'assignment.policy_updated'",
        )
        .await?,
        3,
        "one event per policy set: the first SetPolicy, then the two imported"
    );
    std::fs::remove_file(&file)?;
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_entry_refuses_the_whole_document_and_only_admins_import() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    let admin = h.client(ServiceName::Assignment, &h.mfa_token(ADMIN));
    let mut unmeetable = strict_rules();
    if let Some(stage) = unmeetable
        .approval
        .as_mut()
        .and_then(|a| a.stages.first_mut())
    {
        stage.quorum = 3; // two approvers named
    }
    let document = PolicyDocument {
        policies: vec![
            PolicyEntry {
                role_id: ROLE.into(),
                scope: "/".into(),
                rules: Some(strict_rules()),
            },
            PolicyEntry {
                role_id: ROLE.into(),
                scope: SCOPE.into(),
                rules: Some(unmeetable),
            },
            PolicyEntry {
                role_id: "no-such-role".into(),
                scope: "not-a-scope".into(),
                rules: None,
            },
            PolicyEntry {
                role_id: ROLE.into(),
                scope: "/".into(),
                rules: None,
            },
        ],
    };
    let refused = admin
        .assignment()
        .import_policies(ImportPoliciesRequest {
            document: Some(document),
            validate_only: false,
        })
        .await
        .expect_err("an unmeetable quorum, an unknown role, a bad scope, a duplicate");
    assert_eq!(refused.code(), Code::InvalidArgument);
    let fields = field_violations(&refused);
    for field in [
        "document.policies[1].rules.approval.stages[0].quorum",
        "document.policies[2].role_id",
        "document.policies[2].scope",
        "document.policies[3]",
    ] {
        assert!(fields.iter().any(|f| f == field), "{field} in {fields:?}");
    }
    assert_eq!(policy_rows(&h).await?, 0, "nothing of the document is set");

    // Who may export and import is in docs/authorization.md's matrix; a plain user may not.
    let good = PolicyDocument {
        policies: vec![PolicyEntry {
            role_id: ROLE.into(),
            scope: SCOPE.into(),
            rules: Some(strict_rules()),
        }],
    };
    let plain = h.client(ServiceName::Assignment, &h.mfa_token("plain"));
    let import = plain
        .assignment()
        .import_policies(ImportPoliciesRequest {
            document: Some(good),
            validate_only: false,
        })
        .await
        .expect_err("only admins at every scope named import");
    assert_eq!(import.code(), Code::PermissionDenied);
    assert_eq!(policy_rows(&h).await?, 0);
    h.stop().await;
    Ok(())
}
