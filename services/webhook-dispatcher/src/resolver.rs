//! A DNS resolver for tenant callbacks that drops loopback and private addresses (unless the
//! operator allows them), so a callback host cannot be pointed at the cluster's insides, even
//! by changing its DNS after it was checked.

use std::net::SocketAddr;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// The guarded resolver.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    /// Allow private and loopback addresses (development).
    pub allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| allow_private || patchbay_platform::http::is_public_ip(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!("{host} resolves to no public address").into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}
