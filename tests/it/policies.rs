//! Role management policies: inheritance rule by rule with its sources, validation when set,
//! and enforcement on activation and on admin assignment, writing nothing when refused.

use pim_config::ServiceName;
use pim_proto::{
    Duration,
    activation::v1::{RequestStatus, Ticket},
    assignment::v1::{
        ApprovalRule, ApprovalStage, Approver, CreateEligibilityScheduleRequest, EnablementRule,
        ExpirationRule, GetEffectivePolicyRequest, GetPolicyRequest, PolicyRules, SetPolicyRequest,
        approver::Subject,
    },
};
use pim_testkit::{ADMIN, Harness};
use tonic::{Code, Status};
use tonic_types::StatusExt as _;

use crate::{
    bad_input::count,
    support::{ROLE, SCOPE, activation, make_eligible, reason},
};

fn hours(n: i64) -> Option<Duration> {
    Some(Duration {
        seconds: n * 3600,
        nanos: 0,
    })
}

fn rule_of(status: &Status) -> String {
    status
        .get_error_details()
        .error_info()
        .and_then(|i| i.metadata.get("rule").cloned())
        .unwrap_or_default()
}

async fn set(h: &Harness, scope: &str, rules: PolicyRules) -> Result<i64, Status> {
    h.client(ServiceName::Assignment, &h.mfa_token(ADMIN))
        .assignment()
        .set_policy(SetPolicyRequest {
            role_id: ROLE.into(),
            scope: scope.into(),
            rules: Some(rules),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().policy.unwrap().version)
}

fn approval_by(user: &str, quorum: u32) -> PolicyRules {
    PolicyRules {
        approval: Some(ApprovalRule {
            required: true,
            stages: vec![ApprovalStage {
                approvers: vec![Approver {
                    subject: Some(Subject::UserId(user.into())),
                }],
                quorum,
                timeout: hours(24),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_rule_is_inherited_from_the_nearest_scope_and_says_where_it_came_from()
-> anyhow::Result<()> {
    let h = Harness::start().await?;
    let root = set(
        &h,
        "/",
        PolicyRules {
            activation_expiration: Some(ExpirationRule {
                permanent_allowed: false,
                maximum_duration: hours(2),
            }),
            ..Default::default()
        },
    )
    .await?;
    let unit = set(&h, SCOPE, approval_by("approver-1", 1)).await?;
    assert!(unit > root, "versions only grow");

    let mut reader = h
        .client(ServiceName::Assignment, &h.token("anyone"))
        .assignment();
    let effective = reader
        .get_effective_policy(GetEffectivePolicyRequest {
            role_id: ROLE.into(),
            scope: format!("{SCOPE}/groups/g1"),
        })
        .await?
        .into_inner();
    assert_eq!(effective.version, unit);
    let rules = effective.rules.unwrap();
    assert_eq!(
        rules.activation_expiration.unwrap().maximum_duration,
        hours(2)
    );
    assert!(rules.approval.unwrap().required);
    let source = |id: &str| {
        effective
            .sources
            .iter()
            .find(|s| s.rule_id == id)
            .unwrap()
            .clone()
    };
    assert_eq!(
        (
            source("Expiration_EndUser_Assignment").scope.as_str(),
            source("Expiration_EndUser_Assignment").version
        ),
        ("/", root)
    );
    assert_eq!(source("Approval_EndUser_Assignment").scope, SCOPE);
    assert_eq!(
        source("Enablement_EndUser_Assignment").scope,
        "",
        "the organization default"
    );
    let exact = reader
        .get_policy(GetPolicyRequest {
            role_id: ROLE.into(),
            scope: SCOPE.into(),
        })
        .await?
        .into_inner();
    assert_eq!(exact.policy.unwrap().version, unit);

    // A quorum the approvers cannot meet is refused, and so is a non-administrator.
    let status = set(&h, SCOPE, approval_by("approver-1", 2))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = h
        .client(ServiceName::Assignment, &h.mfa_token("mallory"))
        .assignment()
        .set_policy(SetPolicyRequest {
            role_id: ROLE.into(),
            scope: "/".into(),
            rules: Some(PolicyRules::default()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activation_enforces_duration_ticket_mfa_and_approval_and_writes_nothing_when_refused()
-> anyhow::Result<()> {
    let h = Harness::start().await?;
    make_eligible(&h, "alice", "eligible").await?;
    set(
        &h,
        "/",
        PolicyRules {
            activation_expiration: Some(ExpirationRule {
                permanent_allowed: false,
                maximum_duration: hours(1),
            }),
            activation_enablement: Some(EnablementRule {
                mfa_required: true,
                justification_required: true,
                ticket_required: true,
            }),
            ..Default::default()
        },
    )
    .await?;
    let with_mfa = h.client(ServiceName::Activation, &h.mfa_token("alice"));
    let without_mfa = h.client(ServiceName::Activation, &h.token("alice"));
    let ticket = Some(Ticket {
        system: "jira".into(),
        number: "OPS-1".into(),
    });

    let too_long = with_mfa
        .activation()
        .submit(pim_proto::activation::v1::SubmitRequest {
            ticket: ticket.clone(),
            ..activation("long", 61)
        })
        .await
        .unwrap_err();
    assert_eq!(
        (reason(&too_long).as_str(), rule_of(&too_long).as_str()),
        ("POLICY_VIOLATION", "Expiration_EndUser_Assignment")
    );
    let no_ticket = with_mfa
        .activation()
        .submit(activation("no-ticket", 30))
        .await
        .unwrap_err();
    assert_eq!(rule_of(&no_ticket), "Enablement_EndUser_Assignment");
    let no_mfa = without_mfa
        .activation()
        .submit(pim_proto::activation::v1::SubmitRequest {
            ticket: ticket.clone(),
            ..activation("no-mfa", 30)
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&no_mfa), "MFA_REQUIRED");
    let activation_db = h.service(ServiceName::Activation).db().clone();
    assert_eq!(
        count(&activation_db, "SELECT COUNT(*) AS n FROM requests").await?,
        0
    );
    assert_eq!(
        count(&activation_db, "SELECT COUNT(*) AS n FROM outbox").await?,
        0
    );

    let granted = with_mfa
        .activation()
        .submit(pim_proto::activation::v1::SubmitRequest {
            ticket: ticket.clone(),
            ..activation("ok", 30)
        })
        .await?
        .into_inner()
        .request
        .unwrap();
    assert_eq!(granted.status(), RequestStatus::Provisioned);
    assert!(
        granted.policy_version > 0,
        "the policy version is recorded on the request"
    );

    // While that activation is live, a second one of the same role and scope is refused, and
    // the refusal carries the live request.
    let status = with_mfa
        .activation()
        .submit(pim_proto::activation::v1::SubmitRequest {
            ticket,
            ..activation("second", 30)
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::AlreadyExists);
    assert_eq!(
        status
            .get_error_details()
            .resource_info()
            .map(|r| r.resource_name.clone()),
        Some(granted.id.clone())
    );
    assert_eq!(
        count(&activation_db, "SELECT COUNT(*) AS n FROM requests").await?,
        1
    );
    h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_assignments_follow_the_expiration_rules() -> anyhow::Result<()> {
    let h = Harness::start().await?;
    set(
        &h,
        "/",
        PolicyRules {
            admin_eligibility_expiration: Some(ExpirationRule {
                permanent_allowed: false,
                maximum_duration: hours(24 * 30),
            }),
            ..Default::default()
        },
    )
    .await?;
    let mut admin = h
        .client(ServiceName::Assignment, &h.mfa_token(ADMIN))
        .assignment();
    let permanent = admin
        .create_eligibility_schedule(CreateEligibilityScheduleRequest {
            request_id: "forever".into(),
            principal_id: "alice".into(),
            role_id: ROLE.into(),
            scope: SCOPE.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (reason(&permanent).as_str(), rule_of(&permanent).as_str()),
        ("POLICY_VIOLATION", "Expiration_Admin_Eligibility")
    );
    let now = pim_clock::Clock::now_millis(h.clock.as_ref());
    admin
        .create_eligibility_schedule(CreateEligibilityScheduleRequest {
            request_id: "thirty-days".into(),
            principal_id: "alice".into(),
            role_id: ROLE.into(),
            scope: SCOPE.into(),
            end_time: Some(pim_proto::timestamp_from_millis(now + 30 * 86_400_000)),
            ..Default::default()
        })
        .await?;
    h.stop().await;
    Ok(())
}
