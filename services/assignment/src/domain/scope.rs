//! Scopes are hierarchical paths (`/`, `/administrativeUnits/{id}`, `/subscriptions/{id}/…`);
//! an assignment at a scope applies to every descendant.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope(String);

impl Scope {
    /// Validates the syntax: absolute, no empty segments, no trailing slash, printable ASCII.
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        if raw == "/" {
            return Ok(Self(raw.to_owned()));
        }
        if !raw.starts_with('/') {
            return Err("must start with /");
        }
        if raw.ends_with('/') {
            return Err("must not end with /");
        }
        if raw.len() > 1024 {
            return Err("must be at most 1024 characters");
        }
        for segment in raw[1..].split('/') {
            if segment.is_empty() {
                return Err("must not contain empty segments");
            }
            if segment == "." || segment == ".." {
                return Err("must not contain . or .. segments");
            }
            if !segment.bytes().all(|b| b.is_ascii_graphic()) {
                return Err("must contain printable ASCII only");
            }
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `ancestor` is this scope or one of its ancestors: one of `with_ancestors`,
    /// decided without building them.
    pub fn is_within(&self, ancestor: &str) -> bool {
        let path = self.0.as_str();
        ancestor == "/"
            || path == ancestor
            || (path.starts_with(ancestor) && path.as_bytes().get(ancestor.len()) == Some(&b'/'))
    }

    /// This scope and every ancestor, root first.
    pub fn with_ancestors(&self) -> Vec<String> {
        let mut scopes = vec!["/".to_owned()];
        if self.0 == "/" {
            return scopes;
        }
        let mut path = String::new();
        for segment in self.0[1..].split('/') {
            path.push('/');
            path.push_str(segment);
            scopes.push(path.clone());
        }
        scopes
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestors_run_from_the_root() {
        let scope = Scope::parse("/subscriptions/s1/resourceGroups/rg").unwrap();
        assert_eq!(
            scope.with_ancestors(),
            [
                "/",
                "/subscriptions",
                "/subscriptions/s1",
                "/subscriptions/s1/resourceGroups",
                "/subscriptions/s1/resourceGroups/rg"
            ]
        );
        assert_eq!(Scope::parse("/").unwrap().with_ancestors(), ["/"]);
    }

    #[test]
    fn within_is_the_scope_or_an_ancestor() {
        let candidates = [
            "/", "/a", "/a/b", "/a/b/c", "/a/b/c/d", "/ab", "/a/bc", "/a/b/cd", "/x", "/a/b/c/",
        ];
        for raw in ["/", "/a", "/a/b/c", "/a/b/c/d", "/x/y", "/ab/c"] {
            let scope = Scope::parse(raw).unwrap();
            let ancestors = scope.with_ancestors();
            for candidate in candidates {
                assert_eq!(
                    scope.is_within(candidate),
                    ancestors.iter().any(|a| a == candidate),
                    "{candidate} within {raw}"
                );
            }
        }
    }

    #[test]
    fn malformed_scopes_are_refused() {
        for bad in ["", "groups/g1", "/groups/", "//x", "/a/../b", "/a b"] {
            assert!(Scope::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
