//! The smallest Pingora proxy: every request goes to one upstream, nothing else is done.
//!
//! The load benchmark (`benches/load/run.sh`) runs it beside precond to tell what Pingora itself
//! costs from what precond adds. Same Pingora version, same thread count, same peer options as
//! precond's `pass` route.
//!
//! `cargo run --release --example bare_pingora -- LISTEN UPSTREAM [THREADS]`

use std::time::Duration;

use async_trait::async_trait;
use pingora::proxy::{http_proxy_service, ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::upstreams::peer::HttpPeer;
use pingora::Result;

struct Bare {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new(self.upstream.as_str(), false, String::new());
        peer.options.idle_timeout = Some(Duration::from_secs(4));
        Ok(Box::new(peer))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, upstream, rest @ ..] = &args[..] else {
        eprintln!("usage: bare_pingora LISTEN UPSTREAM [THREADS]");
        std::process::exit(2);
    };
    let threads = rest.first().and_then(|t| t.parse().ok()).unwrap_or(2);
    let conf = ServerConf {
        threads,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut service = http_proxy_service(
        &server.configuration,
        Bare {
            upstream: upstream.clone(),
        },
    );
    service.add_tcp(listen);
    server.add_service(service);
    server.run_forever();
}
