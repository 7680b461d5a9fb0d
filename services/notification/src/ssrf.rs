//! The guard against server-side request forgery: webhook URLs must be http(s) and must not
//! reach loopback, link-local, private or other non-public addresses unless configuration
//! allows it. It is checked when a subscription is created and again on every connection, after
//! DNS resolution, so a name that later resolves to a private address is refused as well.

use std::{
    future::Future,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    task::{Context, Poll},
};

use hyper_util::client::legacy::connect::dns::Name;

/// Which non-public addresses webhooks may reach.
#[derive(Debug, Clone, Copy, Default)]
pub struct AddressPolicy {
    pub allow_loopback: bool,
    pub allow_private: bool,
}

impl AddressPolicy {
    /// Why `ip` may not be reached, if it may not.
    pub fn refusal(&self, ip: IpAddr) -> Option<&'static str> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        if ip.is_loopback() {
            return (!self.allow_loopback).then_some("points at a loopback address");
        }
        if ip.is_unspecified() || ip.is_multicast() {
            return Some("points at an address that is not a host");
        }
        let private = match ip {
            IpAddr::V4(v4) => {
                let [a, b, ..] = v4.octets();
                v4.is_private()
                    || v4.is_link_local()
                    || v4.is_broadcast()
                    || v4.is_documentation()
                    // shared address space (RFC 6598) and "this network"
                    || (a == 100 && (64..128).contains(&b))
                    || a == 0
                    || a >= 240
            }
            IpAddr::V6(v6) => {
                let first = v6.segments()[0];
                // unique local fc00::/7 and link-local fe80::/10
                (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
            }
        };
        (private && !self.allow_private)
            .then_some("points at a private, link-local or reserved address")
    }

    /// Checks a subscription URL; the message says what is wrong.
    pub fn check_url(&self, raw: &str) -> Result<url::Url, String> {
        let url = url::Url::parse(raw).map_err(|e| format!("is not a URL: {e}"))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err("must be an http:// or https:// URL".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not carry credentials".into());
        }
        let refusal = match url.host() {
            None => return Err("must name a host".into()),
            Some(url::Host::Ipv4(ip)) => self.refusal(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.refusal(IpAddr::V6(ip)),
            Some(url::Host::Domain(name)) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                let local = name == "localhost" || name.ends_with(".localhost");
                (local && !self.allow_loopback).then_some("points at a loopback address")
            }
        };
        match refusal {
            Some(why) => Err(format!(
                "{why}; such URLs are refused unless configuration allows them"
            )),
            None => Ok(url),
        }
    }
}

/// A DNS resolver for the webhook client that drops every address the policy refuses.
#[derive(Clone)]
pub struct GuardedResolver {
    pub policy: AddressPolicy,
}

type Resolving =
    Pin<Box<dyn Future<Output = Result<std::vec::IntoIter<SocketAddr>, std::io::Error>> + Send>>;

impl tower::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Resolving;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = self.policy;
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|addr| policy.refusal(addr.ip()).is_none())
                .collect();
            if allowed.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!("{name} resolves only to addresses webhooks may not reach"),
                ));
            }
            Ok(allowed.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_ranges_are_refused_unless_allowed() {
        let strict = AddressPolicy::default();
        for url in [
            "http://127.0.0.1:8080/hook",
            "http://localhost/hook",
            "http://10.1.2.3/hook",
            "http://192.168.0.10/hook",
            "http://172.16.5.5/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/hook",
            "http://[fd00::1]/hook",
            "http://[::ffff:10.0.0.1]/hook",
            "http://0.0.0.0/hook",
        ] {
            assert!(strict.check_url(url).is_err(), "{url} passed");
        }
        assert!(strict.check_url("https://hooks.example.com/pim").is_ok());
        assert!(strict.check_url("ftp://hooks.example.com/").is_err());
        assert!(
            strict
                .check_url("https://user:pw@hooks.example.com/")
                .is_err()
        );
        let loopback = AddressPolicy {
            allow_loopback: true,
            allow_private: false,
        };
        assert!(loopback.check_url("http://127.0.0.1:8080/hook").is_ok());
        assert!(loopback.check_url("http://10.0.0.1/hook").is_err());
    }
}
