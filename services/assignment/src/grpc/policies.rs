//! Handlers of role management policies. Anyone authenticated may read the effective rules
//! (requestors need them to know what activation asks); administrators at the scope set them.

use std::collections::HashMap;

use pim_grpc::{ApiError, caller};
use pim_proto::assignment::v1::{
    GetEffectivePolicyRequest, GetEffectivePolicyResponse, GetPolicyRequest, GetPolicyResponse,
    PolicyRules, SetPolicyRequest, SetPolicyResponse, approver::Subject,
};
use tonic::{Request, Response, Status};

use super::{AssignmentApi, Result, validate_target_role};
use crate::{
    domain::{policy, scope::Scope},
    error::AssignmentError,
};

type Reply<T> = std::result::Result<Response<T>, Status>;

impl AssignmentApi {
    /// The effective rules of `role` at `scope`, their sources, and the version to record.
    pub(super) async fn effective_policy(
        &self,
        role: &str,
        scope: &Scope,
    ) -> Result<GetEffectivePolicyResponse> {
        let layers = self
            .store
            .policy_layers(role, &scope.with_ancestors())
            .await?;
        let (rules, sources, version) = policy::effective(&layers);
        Ok(GetEffectivePolicyResponse {
            rules: Some(rules),
            sources,
            version,
        })
    }

    pub(super) async fn handle_get_effective_policy(
        &self,
        request: Request<GetEffectivePolicyRequest>,
    ) -> Reply<GetEffectivePolicyResponse> {
        caller(&request)?;
        let req = request.into_inner();
        let scope = validate_target_role(&req.role_id, &req.scope)?;
        self.require_role(&req.role_id).await?;
        Ok(Response::new(
            self.effective_policy(&req.role_id, &scope).await?,
        ))
    }

    pub(super) async fn handle_get_policy(
        &self,
        request: Request<GetPolicyRequest>,
    ) -> Reply<GetPolicyResponse> {
        caller(&request)?;
        let req = request.into_inner();
        let scope = validate_target_role(&req.role_id, &req.scope)?;
        let policy = self
            .store
            .policy(&req.role_id, scope.as_str())
            .await
            .map_err(AssignmentError::from)?
            .ok_or_else(|| {
                AssignmentError::NotFound(format!("policy of {} at {scope}", req.role_id))
            })?;
        Ok(Response::new(GetPolicyResponse {
            policy: Some(policy),
        }))
    }

    pub(super) async fn handle_set_policy(
        &self,
        request: Request<SetPolicyRequest>,
    ) -> Reply<SetPolicyResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let scope = validate_target_role(&req.role_id, &req.scope)?;
        let rules = req.rules.unwrap_or_default();
        let members = self.members_of_named_groups(&rules).await?;
        let violations = policy::validate(&rules, &|group: &str| {
            members.get(group).cloned().unwrap_or_default()
        });
        if !violations.is_empty() {
            return Err(ApiError::InvalidArgument(violations).into());
        }
        self.require_admin_at(
            &caller,
            &scope,
            "/pim.assignment.v1.AssignmentService/SetPolicy",
        )
        .await?;
        self.require_role(&req.role_id).await?;
        let policy = self
            .store
            .set_policy(
                &self.ctx.outbox,
                &req.role_id,
                scope.as_str(),
                rules,
                req.expected_version,
                &caller.subject,
                self.ctx.clock.now_millis(),
                !req.validate_only,
            )
            .await?;
        self.ctx.outbox.wake();
        Ok(Response::new(SetPolicyResponse {
            policy: Some(policy),
        }))
    }

    async fn require_role(&self, role: &str) -> Result<()> {
        match self.store.role(role).await? {
            Some(_) => Ok(()),
            None => Err(AssignmentError::NotFound(format!("role {role}"))),
        }
    }

    /// The members of every group a policy's approvers name, from the directory.
    async fn members_of_named_groups(
        &self,
        rules: &PolicyRules,
    ) -> Result<HashMap<String, Vec<String>>> {
        let mut members = HashMap::new();
        let stages = rules.approval.iter().flat_map(|a| a.stages.iter());
        for approver in stages.flat_map(|s| s.approvers.iter()) {
            if let Some(Subject::GroupId(group)) = &approver.subject
                && !members.contains_key(group)
            {
                let ids = self
                    .store
                    .members_of(group)
                    .await?
                    .into_iter()
                    .map(|p| p.id)
                    .collect();
                members.insert(group.clone(), ids);
            }
        }
        Ok(members)
    }
}
