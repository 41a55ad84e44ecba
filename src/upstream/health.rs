//! Active health checks of an upstream's servers (`health_check = "tcp" | "http"`), built on
//! `pingora-load-balancing`'s checks and run by the pool's background service.
//!
//! Owns: [`checker`] (the configured check, with its thresholds and timeouts) and the observer
//! that logs every change of a server's health.
//!
//! Invariants: a server leaves the selection after `fall` consecutive failed checks and comes
//! back after `rise` consecutive successes; an `http` check passes on a 2xx answer only.

use async_trait::async_trait;
use pingora::lb::health_check::{HealthCheck, HealthObserve, HttpHealthCheck, TcpHealthCheck};
use pingora::lb::Backend;
use pingora::prelude::*;
use tracing::{info, warn};

use crate::config::{HealthCheck as Settings, HealthProbe};

/// Logs health changes of one upstream's servers.
struct Observer {
    upstream: String,
}

#[async_trait]
impl HealthObserve for Observer {
    async fn observe(&self, target: &Backend, healthy: bool) {
        if healthy {
            info!(upstream = %self.upstream, server = %target.addr, "server healthy again: back in the selection");
        } else {
            warn!(upstream = %self.upstream, server = %target.addr, "server unhealthy: out of the selection");
        }
    }
}

/// The health check `settings` describe (`None` for `health_check = "none"`).
/// `host` is the `Host` header of an `http` check (the first server as written); `tls` (SNI
/// name and CAs) makes an `http` check speak TLS, verified as requests are.
pub(super) fn checker(
    upstream: &str,
    host: &str,
    settings: &Settings,
    tls: Option<(&str, Option<super::tls::Cas>)>,
) -> Option<Box<dyn HealthCheck + Send + Sync + 'static>> {
    let observer = || {
        Some(Box::new(Observer {
            upstream: upstream.to_string(),
        }) as Box<dyn HealthObserve + Send + Sync>)
    };
    match &settings.probe {
        HealthProbe::None => None,
        HealthProbe::Tcp => {
            let mut c = TcpHealthCheck::new();
            c.consecutive_success = settings.rise;
            c.consecutive_failure = settings.fall;
            c.peer_template.options.connection_timeout = Some(settings.timeout);
            c.peer_template.options.total_connection_timeout = Some(settings.timeout);
            c.health_changed_callback = observer();
            Some(c)
        }
        HealthProbe::Http { path } => {
            let mut c = HttpHealthCheck::new(host, tls.is_some());
            if let Some((sni, cas)) = tls {
                c.peer_template.sni = sni.to_string();
                c.peer_template.options.ca = cas;
            }
            let mut req = RequestHeader::build("GET", path.as_bytes(), None).ok()?;
            req.insert_header("Host", host).ok()?;
            req.insert_header("User-Agent", "precond-health-check")
                .ok()?;
            c.req = req;
            c.consecutive_success = settings.rise;
            c.consecutive_failure = settings.fall;
            c.peer_template.options.connection_timeout = Some(settings.timeout);
            c.peer_template.options.total_connection_timeout = Some(settings.timeout);
            c.peer_template.options.read_timeout = Some(settings.timeout);
            c.peer_template.options.write_timeout = Some(settings.timeout);
            c.validator = Some(Box::new(|resp: &ResponseHeader| {
                if resp.status.is_success() {
                    Ok(())
                } else {
                    Error::e_explain(
                        ErrorType::CustomCode("health check status", resp.status.as_u16()),
                        "a health check answer must be 2xx",
                    )
                }
            }));
            c.health_changed_callback = observer();
            Some(Box::new(c))
        }
    }
}
