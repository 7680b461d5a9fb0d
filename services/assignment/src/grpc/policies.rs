//! Handlers of role management policies. Anyone authenticated may read the effective rules
//! (requestors need them to know what activation asks); administrators at the scope set them.

use std::collections::HashMap;

use pim_grpc::{ApiError, caller};
use pim_proto::assignment::v1::{
    ExportPoliciesRequest, ExportPoliciesResponse, GetEffectivePolicyRequest,
    GetEffectivePolicyResponse, GetPolicyRequest, GetPolicyResponse, ImportPoliciesRequest,
    ImportPoliciesResponse, PolicyDocument, PolicyEntry, PolicyRules, SetPolicyRequest,
    SetPolicyResponse, approver::Subject,
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

    pub(super) async fn handle_export_policies(
        &self,
        request: Request<ExportPoliciesRequest>,
    ) -> Reply<ExportPoliciesResponse> {
        let caller = caller(&request)?;
        // Readers at `/`, Privileged Role Administrators at `/`, and PIM's services.
        self.require_directory_reader(&caller, "").await?;
        let (policies, revision) = self
            .store
            .all_policies()
            .await
            .map_err(AssignmentError::from)?;
        let policies = policies
            .into_iter()
            .map(|p| PolicyEntry {
                role_id: p.role_id,
                scope: p.scope,
                rules: p.rules,
            })
            .collect();
        Ok(Response::new(ExportPoliciesResponse {
            document: Some(PolicyDocument { policies }),
            revision,
        }))
    }

    /// Validates the whole document first (every entry as SetPolicy would, no (role, scope)
    /// twice, roles that exist), then the caller's rights at every scope it names, and only
    /// then writes, in one transaction.
    pub(super) async fn handle_import_policies(
        &self,
        request: Request<ImportPoliciesRequest>,
    ) -> Reply<ImportPoliciesResponse> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let entries = req.document.unwrap_or_default().policies;
        let mut violations = Vec::new();
        let mut scopes = Vec::with_capacity(entries.len());
        let mut normalized = Vec::with_capacity(entries.len());
        let mut seen = std::collections::HashSet::new();
        for (i, entry) in entries.iter().enumerate() {
            let at = format!("document.policies[{i}]");
            if entry.role_id.is_empty() {
                violations.push((format!("{at}.role_id"), "is required".to_owned()));
            } else if self
                .store
                .role(&entry.role_id)
                .await
                .map_err(AssignmentError::from)?
                .is_none()
            {
                violations.push((
                    format!("{at}.role_id"),
                    format!("no role {}", entry.role_id),
                ));
            }
            let scope = match Scope::parse(&entry.scope) {
                Ok(scope) => scope,
                Err(problem) => {
                    violations.push((format!("{at}.scope"), problem.to_string()));
                    continue;
                }
            };
            if !seen.insert((entry.role_id.clone(), scope.to_string())) {
                violations.push((
                    at.clone(),
                    format!("{} at {scope} is named twice", entry.role_id),
                ));
            }
            let rules = entry.rules.clone().unwrap_or_default();
            let members = self.members_of_named_groups(&rules).await?;
            violations.extend(
                policy::validate(&rules, &|group: &str| {
                    members.get(group).cloned().unwrap_or_default()
                })
                .into_iter()
                .map(|(field, problem)| (format!("{at}.{field}"), problem)),
            );
            normalized.push(PolicyEntry {
                scope: scope.to_string(),
                rules: Some(rules),
                ..entry.clone()
            });
            scopes.push(scope);
        }
        if !violations.is_empty() {
            return Err(ApiError::InvalidArgument(violations).into());
        }
        for scope in &scopes {
            self.require_admin_at(
                &caller,
                scope,
                "/pim.assignment.v1.AssignmentService/ImportPolicies",
            )
            .await?;
        }
        let (changed, unchanged, revision) = self
            .store
            .import_policies(
                &self.ctx.outbox,
                &normalized,
                &caller.subject,
                self.ctx.clock.now_millis(),
                !req.validate_only,
            )
            .await
            .map_err(AssignmentError::from)?;
        self.ctx.outbox.wake();
        Ok(Response::new(ImportPoliciesResponse {
            changed,
            unchanged,
            revision,
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
