//! Upstream TLS (a cluster's `tls:`): the rustls client config (CA from `tls.ca`, else the
//! Mozilla roots from `webpki-roots`; ALPN `h2` for HTTP/2 clusters, `http/1.1` otherwise;
//! session resumption on) and the handshake on a freshly connected socket.
//!
//! The server name sent (SNI) and verified is `tls.server_name`, else the endpoint's host as
//! written in `endpoints:`.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::config::model::{Protocol, UpstreamTlsConfig};
use crate::listener::tls::{provider, read, root_store, MaybeTls};

/// An upstream connection: plain TCP or TLS.
pub(crate) type UpstreamIo = MaybeTls<TlsStream<TcpStream>>;

/// A cluster's TLS client settings. Built once per snapshot; shared by every worker.
pub struct UpstreamTls {
    /// Identity of these settings (never 0): connections are pooled per endpoint and id.
    pub(crate) id: u64,
    connector: TlsConnector,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl UpstreamTls {
    /// Build from the cluster's `tls:`; `tls.ca` must already be resolved against the config
    /// directory (relative paths are taken from the current directory).
    ///
    /// # Errors
    /// A message for `sluice check`: an unreadable CA file or a bad server name.
    pub fn build(cfg: &UpstreamTlsConfig, protocol: Protocol) -> Result<UpstreamTls, String> {
        let mut id = Sha256::new();
        id.update(cfg.server_name.as_deref().unwrap_or("").as_bytes());
        id.update([0, protocol as u8]);
        let roots = match &cfg.ca {
            Some(ca) => {
                let path = Path::new(ca);
                let pem = read(path, "CA file").map_err(|e| e.to_string())?;
                id.update(&pem);
                root_store(&pem, path).map_err(|e| e.to_string())?
            }
            None => RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            },
        };
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = match protocol {
            Protocol::Http2 => vec![b"h2".to_vec()],
            Protocol::Http1 => vec![b"http/1.1".to_vec()],
        };
        let server_name = match &cfg.server_name {
            Some(n) => Some(ServerName::try_from(n.clone()).map_err(|e| {
                format!("tls.server_name `{n}` is not a DNS name or IP address: {e}")
            })?),
            None => None,
        };
        let id = u64::from_le_bytes(id.finalize()[..8].try_into().unwrap_or([1; 8])).max(1);
        Ok(UpstreamTls {
            id,
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }

    /// The TLS handshake on `tcp` to the endpoint written as `authority` (`host:port`).
    ///
    /// # Errors
    /// The handshake failed: certificate not trusted or not for the name, no common version.
    pub(crate) async fn connect(&self, tcp: TcpStream, authority: &str) -> io::Result<UpstreamIo> {
        let name = match &self.server_name {
            Some(n) => n.clone(),
            None => ServerName::try_from(host_of(authority).to_string())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
        };
        let tls = self.connector.connect(name, tcp).await?;
        Ok(MaybeTls::Tls(Box::new(tls)))
    }
}

/// The host of `host:port`, `[v6]:port` or a bare host.
fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn host_of_strips_the_port() {
        assert_eq!(host_of("api.internal:443"), "api.internal");
        assert_eq!(host_of("[::1]:8443"), "::1");
        assert_eq!(host_of("10.0.0.1:9000"), "10.0.0.1");
        assert_eq!(host_of("bare"), "bare");
    }
}
