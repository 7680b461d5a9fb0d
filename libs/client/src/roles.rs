//! Well-known role ids. Entra's built-in roles keep their public template ids, so policies and
//! scripts written for Entra read the same here.

pub const GLOBAL_ADMINISTRATOR: &str = "62e90394-69f5-4237-9190-012177145e10";
pub const PRIVILEGED_ROLE_ADMINISTRATOR: &str = "e8611ab8-c189-46e8-94e1-60213ab1f814";
pub const SECURITY_ADMINISTRATOR: &str = "194ae4cb-b126-40b2-bd5b-6091b380977d";
pub const SECURITY_READER: &str = "5d6b6bb7-de71-4623-b4af-96380a352509";
pub const GLOBAL_READER: &str = "f2ef992c-3afb-46b9-b7cf-a126ee74c451";
/// Membership of the group at `/groups/{id}` (PIM for Groups): an activated or active
/// assignment of it makes the holder a member for its window.
pub const GROUP_MEMBER: &str = "pim-group-member";
/// PIM's own role for backend services that call `CheckAccess` for others.
pub const ACCESS_CHECKER: &str = "pim-access-checker";

/// Roles that may read the audit trail and other PIM-wide state.
pub const READERS: [&str; 4] = [
    GLOBAL_ADMINISTRATOR,
    GLOBAL_READER,
    SECURITY_READER,
    SECURITY_ADMINISTRATOR,
];

/// Roles that may see and manage every approval case: PIM's administrators.
pub const ADMINS: [&str; 2] = [GLOBAL_ADMINISTRATOR, PRIVILEGED_ROLE_ADMINISTRATOR];
