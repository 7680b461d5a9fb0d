//! The built-in role catalog. Entra's roles keep their public template ids, so scripts and
//! policies written for Entra read the same here. Built-in roles cannot be changed or deleted.

/// One built-in role: id, display name, description, privileged.
pub struct BuiltInRole {
    pub id: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub privileged: bool,
}

const fn role(
    id: &'static str,
    name: &'static str,
    description: &'static str,
    privileged: bool,
) -> BuiltInRole {
    BuiltInRole {
        id,
        name,
        description,
        privileged,
    }
}

/// The roles the deployment guides name. "Privileged" follows Entra's PRIVILEGED label and
/// Azure's privileged administrator roles.
pub const BUILT_IN: &[BuiltInRole] = &[
    role(
        "62e90394-69f5-4237-9190-012177145e10",
        "Global Administrator",
        "Can manage all aspects of the directory and of PIM.",
        true,
    ),
    role(
        "e8611ab8-c189-46e8-94e1-60213ab1f814",
        "Privileged Role Administrator",
        "Can manage role assignments and role settings in PIM.",
        true,
    ),
    role(
        "194ae4cb-b126-40b2-bd5b-6091b380977d",
        "Security Administrator",
        "Can read security information and manage security configuration.",
        true,
    ),
    role(
        "5d6b6bb7-de71-4623-b4af-96380a352509",
        "Security Reader",
        "Can read security information and reports.",
        true,
    ),
    role(
        "f2ef992c-3afb-46b9-b7cf-a126ee74c451",
        "Global Reader",
        "Can read everything a Global Administrator can, but change nothing.",
        true,
    ),
    role(
        "fe930be7-5e62-47db-91af-98c3a49a38b1",
        "User Administrator",
        "Can manage users and groups.",
        true,
    ),
    role(
        "29232cdf-9323-42fd-ade2-1d097af3e4de",
        "Exchange Administrator",
        "Can manage the Exchange product.",
        false,
    ),
    role(
        "f28a1f50-f6e7-4571-818b-6a12f2af6b6c",
        "SharePoint Administrator",
        "Can manage SharePoint.",
        false,
    ),
    role(
        "3a2c62db-5318-420d-8d74-23affee5d9d5",
        "Intune Administrator",
        "Can manage Intune.",
        true,
    ),
    role(
        "729827e3-9c14-49f7-bb1b-9608f156bbb8",
        "Helpdesk Administrator",
        "Can reset passwords for non-administrators.",
        true,
    ),
    role(
        "b0f54661-2d74-4c50-afa3-1ec803f12efe",
        "Billing Administrator",
        "Can manage billing and subscriptions.",
        false,
    ),
    role(
        "9b895d92-2cd3-44c7-9d02-a6ac2d5ea5c3",
        "Application Administrator",
        "Can manage applications and their credentials.",
        true,
    ),
    role(
        "c4e39bd9-1100-46d3-8c65-fb160da0071f",
        "Authentication Administrator",
        "Can manage authentication methods of non-administrators.",
        true,
    ),
    role(
        "17315797-102d-40b4-93e0-432062caca18",
        "Compliance Administrator",
        "Can manage compliance configuration and reports.",
        false,
    ),
    role(
        "69091246-20e8-4a56-aa4d-066075b2a7a8",
        "Teams Administrator",
        "Can manage the Teams service.",
        false,
    ),
    role(
        "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
        "Owner",
        "Full access to resources, including assigning roles.",
        true,
    ),
    role(
        "b24988ac-6180-42a0-ab88-20f7382dd24c",
        "Contributor",
        "Full access to resources, without assigning roles.",
        true,
    ),
    role(
        "acdd72a7-3385-48ef-bd42-f606fba81ae7",
        "Reader",
        "Can view resources.",
        false,
    ),
    role(
        "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9",
        "User Access Administrator",
        "Can manage user access to resources.",
        true,
    ),
    role(
        "9980e02c-c2be-4d73-94e8-173b1dc7cf3c",
        "Virtual Machine Contributor",
        "Can manage virtual machines, not access to them.",
        false,
    ),
    role(
        "pim-group-member",
        "Group Member",
        "Membership of the group at /groups/{id} (PIM for Groups).",
        false,
    ),
    role(
        "pim-group-owner",
        "Group Owner",
        "Ownership of the group at /groups/{id} (PIM for Groups).",
        true,
    ),
    role(
        "pim-access-checker",
        "Access Checker",
        "A backend service that may call CheckAccess for other principals.",
        false,
    ),
];

/// A permission string: two or more `/`-separated segments of `[A-Za-z0-9._*-]`, such as
/// `microsoft.directory/users/password/update` or `resource/action`.
pub fn valid_permission(permission: &str) -> bool {
    let segments: Vec<&str> = permission.split('/').collect();
    segments.len() >= 2
        && permission.len() <= 256
        && segments.iter().all(|s| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._*-".contains(&b))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn built_in(id: &str) -> Option<&'static BuiltInRole> {
        BUILT_IN.iter().find(|r| r.id == id)
    }

    #[test]
    fn the_catalog_names_each_role_once_and_shares_ids_with_the_client() {
        let mut ids: Vec<_> = BUILT_IN.iter().map(|r| r.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), BUILT_IN.len());
        for id in pim_client::roles::READERS {
            assert!(built_in(id).is_some(), "{id}");
        }
        assert!(built_in(pim_client::roles::ACCESS_CHECKER).is_some());
        assert!(
            built_in(pim_client::roles::PRIVILEGED_ROLE_ADMINISTRATOR)
                .is_some_and(|r| r.privileged)
        );
    }

    #[test]
    fn permissions_are_paths_of_safe_segments() {
        assert!(valid_permission("resource/action"));
        assert!(valid_permission(
            "microsoft.directory/users/password/update"
        ));
        assert!(valid_permission("storage/*"));
        for bad in ["", "action", "a//b", "/a/b", "a/b c", "a/b/"] {
            assert!(!valid_permission(bad), "{bad:?}");
        }
    }
}
