//! The verified identity of whoever made a request.

/// A verified caller. Handlers receive it in the request extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's `sub`: a principal id, or `service:<name>` for PIM's own services.
    pub subject: String,
    pub kind: CallerKind,
    /// Authentication methods; contains `mfa` when MFA was done.
    pub amr: Vec<String>,
    /// When the person authenticated, in seconds since the epoch.
    pub auth_time: Option<i64>,
    /// Authentication context class references satisfied.
    pub acrs: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerKind {
    /// A person or a registered service principal.
    Principal,
    /// One of PIM's own services, by name.
    Service(String),
}

impl Caller {
    pub fn from_subject(
        subject: String,
        amr: Vec<String>,
        auth_time: Option<i64>,
        acrs: Vec<String>,
    ) -> Self {
        let kind = match subject.strip_prefix("service:") {
            Some(name) => CallerKind::Service(name.to_owned()),
            None => CallerKind::Principal,
        };
        Self {
            subject,
            kind,
            amr,
            auth_time,
            acrs,
        }
    }

    /// The service name when the caller is one of PIM's services.
    pub fn service(&self) -> Option<&str> {
        match &self.kind {
            CallerKind::Service(name) => Some(name),
            CallerKind::Principal => None,
        }
    }

    pub fn did_mfa(&self) -> bool {
        self.amr.iter().any(|m| m == "mfa")
    }
}
