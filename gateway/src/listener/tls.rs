//! Downstream TLS: the rustls server config of a listener (certificates chosen by SNI, ALPN,
//! minimum version, optional client certificate verification, session tickets), the handshake,
//! and the peer identity that filters and plugins read.
//!
//! The config is built once per snapshot from the files on disk, so a reload (the watcher sees a
//! certificate file change, including Kubernetes' `..data` symlink swap) swaps certificates
//! atomically: new handshakes use the new snapshot's config, open connections keep theirs, and a
//! certificate or key that does not load fails the snapshot build, keeping the old one.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ProducesTickets, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::model::ListenerTlsConfig;

/// Why a listener's TLS config could not be built. The message names the file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM item.
    #[error("{what} `{path}`: {reason}")]
    File {
        what: &'static str,
        path: String,
        reason: String,
    },
    /// rustls refused the assembled config (key type, key/certificate mismatch, CA).
    #[error("{0}")]
    Rustls(String),
}

/// The crypto provider used everywhere (ring: builds with a C compiler only, no cmake/nasm).
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// A listener's TLS settings ready for handshakes. Immutable; part of the snapshot.
pub struct ListenerTls {
    acceptor: TlsAcceptor,
    /// Whether client certificates are required (`client_ca`).
    pub mtls: bool,
}

impl std::fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerTls")
            .field("mtls", &self.mtls)
            .finish_non_exhaustive()
    }
}

/// What the TLS handshake established, for filters (`RequestInfo::tls`) and plugins
/// (`connection.*` properties, named as in Envoy).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1.2` or `TLSv1.3`.
    pub version: &'static str,
    /// The server name the client asked for (SNI), if any.
    pub sni: Option<String>,
    /// The negotiated ALPN protocol (`h2`, `http/1.1`), if any.
    pub alpn: Option<String>,
    /// Whether the client presented a certificate that was verified against `client_ca`.
    pub mtls: bool,
    /// The client certificate's subject, RFC 2253 (`CN=client,O=Example`), as Envoy gives it.
    pub subject: Option<String>,
    /// URI SANs of the client certificate (a SPIFFE id is one of these).
    pub uri_sans: Vec<String>,
    /// DNS SANs of the client certificate.
    pub dns_sans: Vec<String>,
}

impl ListenerTls {
    /// Load certificates, keys and the client CA, and assemble the rustls config.
    /// `http1`/`http2` decide the ALPN protocols offered (h2 first).
    ///
    /// # Errors
    /// A file that cannot be read or parsed, a key that does not match its certificate, an
    /// unsupported key type, or a bad client CA.
    pub fn build(
        cfg: &ListenerTlsConfig,
        base_dir: &Path,
        listener: &str,
        http1: bool,
        http2: bool,
    ) -> Result<ListenerTls, TlsError> {
        let provider = provider();
        let resolver = SniResolver::load(cfg, base_dir, &provider)?;
        let versions: &[&'static rustls::SupportedProtocolVersion] =
            match cfg.min_version.as_deref() {
                Some("1.3") => &[&rustls::version::TLS13],
                _ => &[&rustls::version::TLS13, &rustls::version::TLS12],
            };
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
        let mut ca_bytes = Vec::new();
        let builder = match &cfg.client_ca {
            Some(ca) => {
                let path = crate::filter::resolve_path(base_dir, ca);
                ca_bytes = read(&path, "client CA file")?;
                let roots = root_store(&ca_bytes, &path)?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| TlsError::Rustls(format!("client_ca `{ca}`: {e}")))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(Arc::new(resolver));
        if http2 {
            config.alpn_protocols.push(b"h2".to_vec());
        }
        if http1 {
            config.alpn_protocols.push(b"http/1.1".to_vec());
        }
        config.ticketer = ticketer(listener, &ca_bytes)?;
        Ok(ListenerTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            mtls: cfg.client_ca.is_some(),
        })
    }

    /// Run the handshake on `stream` within `timeout`.
    ///
    /// # Errors
    /// The handshake failed (bad client certificate, no common version or cipher) or timed out.
    pub async fn accept(
        &self,
        stream: TcpStream,
        timeout: Duration,
    ) -> io::Result<(ConnIo, Arc<TlsInfo>)> {
        let tls = match tokio::time::timeout(timeout, self.acceptor.accept(stream)).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "TLS handshake did not finish within the header read timeout",
                ))
            }
        };
        let info = Arc::new(tls_info(tls.get_ref().1));
        Ok((MaybeTls::Tls(Box::new(tls)), info))
    }
}

fn tls_info(conn: &rustls::ServerConnection) -> TlsInfo {
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "",
    };
    let mut info = TlsInfo {
        version,
        sni: conn.server_name().map(str::to_string),
        alpn: conn
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
        ..TlsInfo::default()
    };
    // rustls only completes the handshake with a certificate its verifier accepted.
    if let Some(leaf) = conn.peer_certificates().and_then(<[_]>::first) {
        info.mtls = true;
        peer_identity(leaf, &mut info);
    }
    info
}

/// Subject and SANs of a verified client certificate.
fn peer_identity(der: &CertificateDer<'_>, info: &mut TlsInfo) {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return;
    };
    info.subject = Some(rfc2253(cert.subject()));
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(u) => info.uri_sans.push((*u).to_string()),
                GeneralName::DNSName(d) => info.dns_sans.push((*d).to_string()),
                _ => {}
            }
        }
    }
}

/// A distinguished name the way Envoy prints it: RFC 2253, most specific RDN first, no spaces.
fn rfc2253(name: &x509_parser::x509::X509Name<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let rdns: Vec<_> = name.iter().collect();
    let mut parts = Vec::with_capacity(rdns.len());
    for rdn in rdns.into_iter().rev() {
        let attrs: Vec<String> = rdn
            .iter()
            .map(|a| {
                let key = x509_parser::objects::oid2abbrev(a.attr_type(), registry)
                    .map(str::to_string)
                    .unwrap_or_else(|_| a.attr_type().to_id_string());
                let value = a.as_str().unwrap_or("");
                format!("{key}={}", escape_dn(value))
            })
            .collect();
        parts.push(attrs.join("+"));
    }
    parts.join(",")
}

fn escape_dn(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for (i, c) in v.chars().enumerate() {
        let edge = (i == 0 && (c == ' ' || c == '#')) || (i + 1 == v.len() && c == ' ');
        if edge || matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Certificates by server name: exact names, then `*.suffix` wildcards (one label), else the
/// first certificate (clients without SNI, or an unknown name).
#[derive(Debug)]
struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl SniResolver {
    fn load(
        cfg: &ListenerTlsConfig,
        base_dir: &Path,
        provider: &CryptoProvider,
    ) -> Result<SniResolver, TlsError> {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        let mut default = None;
        for c in &cfg.certificates {
            let mut key = certified_key(&c.cert, &c.key, base_dir, provider)?;
            if let Some(ocsp) = &c.ocsp {
                let path = crate::filter::resolve_path(base_dir, ocsp);
                key.ocsp = Some(ocsp_response(&path)?);
            }
            let key = Arc::new(key);
            for name in &c.server_names {
                let name = name.to_ascii_lowercase();
                // The first certificate naming a host wins, as the first route does.
                match name.strip_prefix("*.") {
                    Some(suffix) => wildcard.entry(suffix.to_string()),
                    None => exact.entry(name),
                }
                .or_insert_with(|| key.clone());
            }
            default.get_or_insert(key);
        }
        let default = default.ok_or_else(|| {
            TlsError::Rustls("TLS needs at least one certificate under `certificates:`".into())
        })?;
        Ok(SniResolver {
            exact,
            wildcard,
            default,
        })
    }

    fn find(&self, sni: &str) -> Option<&Arc<CertifiedKey>> {
        let sni = sni.to_ascii_lowercase();
        if let Some(k) = self.exact.get(&sni) {
            return Some(k);
        }
        let (_, parent) = sni.split_once('.')?;
        self.wildcard.get(parent)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let found = hello.server_name().and_then(|n| self.find(n));
        Some(found.unwrap_or(&self.default).clone())
    }
}

fn certified_key(
    cert: &str,
    key: &str,
    base_dir: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let cert_path = crate::filter::resolve_path(base_dir, cert);
    let key_path = crate::filter::resolve_path(base_dir, key);
    let cert_pem = read(&cert_path, "certificate file")?;
    let key_pem = read(&key_path, "private key file")?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| file_error("certificate file", &cert_path, e.to_string()))?;
    if chain.is_empty() {
        return Err(file_error(
            "certificate file",
            &cert_path,
            "no PEM certificate found; expected `-----BEGIN CERTIFICATE-----`".into(),
        ));
    }
    let der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        file_error(
            "private key file",
            &key_path,
            format!("no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
        )
    })?;
    CertifiedKey::from_der(chain, der, provider).map_err(|e| {
        TlsError::Rustls(format!(
            "certificate `{}` with key `{}`: {e}; check that the key belongs to the certificate",
            cert_path.display(),
            key_path.display()
        ))
    })
}

/// The OCSP response in `path`, checked just enough to catch the wrong file: one DER
/// `OCSPResponse` SEQUENCE filling the file, whose `responseStatus` is `successful` (RFC 6960
/// §4.2.1). A PEM file, a request or an error response ("tryLater", "unauthorized") is refused
/// rather than stapled, since clients would reject the handshake or ignore it.
fn ocsp_response(path: &Path) -> Result<Vec<u8>, TlsError> {
    let der = read(path, "OCSP response file")?;
    let bad = |why: &str| {
        file_error(
            "OCSP response file",
            path,
            format!("{why}; expected a DER OCSP response, e.g. from `openssl ocsp -respout`"),
        )
    };
    if der.first() != Some(&0x30) {
        return Err(bad(
            "not a DER SEQUENCE (a PEM file must be converted to DER)",
        ));
    }
    // Definite-length header: short form, or long form with 1-4 length bytes.
    let (len, header) = match der.get(1) {
        Some(&l) if l < 0x80 => (usize::from(l), 2),
        Some(&l) if (0x81..=0x84).contains(&l) => {
            let n = usize::from(l & 0x7f);
            let bytes = der.get(2..2 + n).ok_or_else(|| bad("truncated"))?;
            let len = bytes
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (len, 2 + n)
        }
        _ => return Err(bad("unsupported length encoding")),
    };
    if header + len != der.len() {
        return Err(bad("the length does not match the file size"));
    }
    // responseStatus ENUMERATED comes first.
    match der.get(header..header + 3) {
        Some([0x0a, 0x01, 0]) => Ok(der),
        Some([0x0a, 0x01, status]) => Err(bad(&format!(
            "the responder answered status {status} (not `successful`)"
        ))),
        _ => Err(bad("no responseStatus")),
    }
}

pub(crate) fn root_store(pem: &[u8], path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| file_error("CA file", path, e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| file_error("CA file", path, e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(file_error(
            "CA file",
            path,
            "no PEM certificate found".into(),
        ));
    }
    Ok(roots)
}

/// Read a whole file, for certificate material.
pub(crate) fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| file_error(what, path, e.to_string()))
}

fn file_error(what: &'static str, path: &Path, reason: String) -> TlsError {
    TlsError::File {
        what,
        path: path.display().to_string(),
        reason,
    }
}

/// Session-ticket keys, one rotating ticketer per listener identity, shared by successive
/// snapshots so that a reload (a route edit, a certificate rotation) does not end resumption.
/// The identity includes the client CA: a session established under one client-certificate
/// policy must not resume under another.
fn ticketer(listener: &str, client_ca: &[u8]) -> Result<Arc<dyn ProducesTickets>, TlsError> {
    type Map = HashMap<[u8; 32], Weak<dyn ProducesTickets>>;
    static TICKETERS: OnceLock<Mutex<Map>> = OnceLock::new();
    let mut h = Sha256::new();
    h.update(listener.as_bytes());
    h.update([0]);
    h.update(client_ca);
    let mut id = [0u8; 32];
    id.copy_from_slice(&h.finalize());
    // Control path only (snapshot builds); a poisoned lock only means a build panicked.
    let mut map = match TICKETERS.get_or_init(Mutex::default).lock() {
        Ok(m) => m,
        Err(p) => p.into_inner(),
    };
    if let Some(t) = map.get(&id).and_then(Weak::upgrade) {
        return Ok(t);
    }
    let t = rustls::crypto::ring::Ticketer::new().map_err(|e| TlsError::Rustls(e.to_string()))?;
    map.retain(|_, w| w.strong_count() > 0);
    map.insert(id, Arc::downgrade(&t));
    Ok(t)
}

/// A downstream connection: plain TCP or TLS over TCP.
pub type ConnIo = MaybeTls<TlsStream<TcpStream>>;

/// A TCP connection, with or without TLS on top (downstream or upstream TLS stream type `T`).
pub enum MaybeTls<T> {
    /// Cleartext.
    Plain(TcpStream),
    /// TLS (boxed: the TLS state is large and most of it is not touched per poll).
    Tls(Box<T>),
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for MaybeTls<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => super::plain_io::poll_read(s, cx, buf),
            MaybeTls::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for MaybeTls<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => super::plain_io::poll_write(s, cx, buf),
            MaybeTls::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => super::plain_io::poll_write_vectored(s, cx, bufs),
            MaybeTls::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(s) => s.is_write_vectored(),
            MaybeTls::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(cn: &str) -> Arc<CertifiedKey> {
        let kp = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec![cn.to_string()])
            .expect("params")
            .self_signed(&kp)
            .expect("cert");
        let der = PrivateKeyDer::try_from(kp.serialize_der()).expect("der");
        Arc::new(
            CertifiedKey::from_der(vec![cert.der().clone()], der, &provider()).expect("certified"),
        )
    }

    #[test]
    fn sni_prefers_exact_then_one_label_wildcards_then_the_default() {
        let (a, b, d) = (key("a.test"), key("b.test"), key("d.test"));
        let r = SniResolver {
            exact: HashMap::from([("a.example.com".to_string(), a.clone())]),
            wildcard: HashMap::from([("example.com".to_string(), b.clone())]),
            default: d,
        };
        assert!(Arc::ptr_eq(r.find("a.example.com").expect("exact"), &a));
        assert!(Arc::ptr_eq(r.find("A.Example.COM").expect("case"), &a));
        assert!(Arc::ptr_eq(r.find("x.example.com").expect("wildcard"), &b));
        assert!(r.find("example.com").is_none());
        assert!(r.find("x.y.example.com").is_none());
    }

    #[test]
    fn peer_identity_reads_subject_and_sans() {
        let kp = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["svc.internal".to_string()]).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "billing");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example, Inc");
        params.subject_alt_names.push(rcgen::SanType::URI(
            "spiffe://example.org/sa/billing".try_into().expect("uri"),
        ));
        let cert = params.self_signed(&kp).expect("cert");
        let mut info = TlsInfo::default();
        peer_identity(cert.der(), &mut info);
        assert_eq!(info.subject.as_deref(), Some("O=Example\\, Inc,CN=billing"));
        assert_eq!(info.uri_sans, ["spiffe://example.org/sa/billing"]);
        assert_eq!(info.dns_sans, ["svc.internal"]);
    }

    #[test]
    fn dn_escaping_follows_rfc2253() {
        assert_eq!(escape_dn("a,b"), "a\\,b");
        assert_eq!(escape_dn(" x "), "\\ x\\ ");
        assert_eq!(escape_dn("plain"), "plain");
    }

    #[test]
    fn ocsp_files_are_checked_before_stapling() {
        let dir = tempfile::tempdir().expect("tempdir");
        let check = |bytes: &[u8]| {
            let path = dir.path().join("r.der");
            std::fs::write(&path, bytes).expect("write");
            ocsp_response(&path).map_err(|e| e.to_string())
        };
        // successful (0) with a body; long-form length.
        let mut long = vec![0x30, 0x81, 0x83, 0x0a, 0x01, 0x00, 0xa0, 0x7e];
        long.extend(std::iter::repeat_n(0u8, 0x7e));
        assert!(check(&long).is_ok());
        assert!(check(&[0x30, 0x03, 0x0a, 0x01, 0x00]).is_ok());
        let e = check(&[0x30, 0x03, 0x0a, 0x01, 0x03]).expect_err("tryLater");
        assert!(e.contains("status 3"), "{e}");
        let e = check(b"-----BEGIN").expect_err("pem");
        assert!(e.contains("PEM"), "{e}");
        let e = check(&[0x30, 0x05, 0x0a, 0x01, 0x00]).expect_err("short");
        assert!(e.contains("length"), "{e}");
        assert!(check(&[0x30, 0x82, 0x01]).is_err());
        assert!(check(&[]).is_err());
    }
}
