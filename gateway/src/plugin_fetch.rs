//! Remote plugin code: fetched over HTTP(S), checked against its sha256, kept on disk by digest.
//!
//! Used by the config file's `url:` + `sha256:` plugins and by xDS (`vm_config.code.remote`,
//! `inline_bytes`). The cache is content addressed (`<dir>/<sha256>.wasm`): a restart or a re-push
//! of the same code does not fetch again, and gateways sharing the directory cannot corrupt each
//! other's files (each writes aside, then renames). A cached file is hashed again when used, so a
//! damaged file is fetched again rather than trusted.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Environment variable naming the directory remote plugin code is cached in.
pub const CODE_DIR_ENV: &str = "SLUICE_PLUGIN_CODE_DIR";
/// Used when the config does not say (the file's `url:` plugins; xDS without `http_uri.timeout`).
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Larger downloads are refused: no plugin module is this big, a wrong URL may be.
pub const MAX_CODE_SIZE: usize = 128 * 1024 * 1024;
/// Redirects followed before giving up (release hosts usually redirect once).
const MAX_REDIRECTS: usize = 5;

/// Why plugin code could not be had.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("`{0}` is not an http(s) URL")]
    BadUrl(String),
    #[error("sha256 `{0}` is not 64 hex characters")]
    BadDigest(String),
    #[error("fetching {url}: {message}")]
    Transport { url: String, message: String },
    #[error("fetching {url}: HTTP status {status}")]
    Status { url: String, status: u16 },
    #[error("fetching {url}: no answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("fetching {url}: more than {MAX_REDIRECTS} redirects")]
    Redirects { url: String },
    #[error("code from {url} has sha256 {got}, expected {want}")]
    Checksum {
        url: String,
        want: String,
        got: String,
    },
    #[error("plugin code cache {}: {source}", path.display())]
    Cache { path: PathBuf, source: io::Error },
}

/// The cache directory: `$SLUICE_PLUGIN_CODE_DIR`, else `code/` under the wasm module cache
/// (`$SLUICE_WASM_CACHE_DIR`), else `sluice-plugin-code` in the system temporary directory.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os(CODE_DIR_ENV) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os(sluice_wasm::cache::CACHE_DIR_ENV) {
        return PathBuf::from(d).join("code");
    }
    std::env::temp_dir().join("sluice-plugin-code")
}

fn normalize(sha256: &str) -> Result<String, FetchError> {
    let s = sha256.trim().to_ascii_lowercase();
    if s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(s)
    } else {
        Err(FetchError::BadDigest(sha256.to_string()))
    }
}

/// The cached file holding code with digest `sha256`, if present and intact.
pub fn cached(sha256: &str) -> Option<PathBuf> {
    cached_in(&cache_dir(), sha256)
}

fn cached_in(dir: &Path, sha256: &str) -> Option<PathBuf> {
    let sha = normalize(sha256).ok()?;
    let path = dir.join(format!("{sha}.wasm"));
    let bytes = std::fs::read(&path).ok()?;
    (sluice_wasm::cache::sha256_hex(&bytes) == sha).then_some(path)
}

/// Put `bytes` in the cache under their own digest (xDS `inline_bytes`) and return the path.
///
/// # Errors
/// The cache directory or file cannot be written.
pub fn store(bytes: &[u8]) -> Result<PathBuf, FetchError> {
    let sha = sluice_wasm::cache::sha256_hex(bytes);
    if let Some(p) = cached(&sha) {
        return Ok(p);
    }
    write(&cache_dir(), &sha, bytes)
}

fn write(dir: &Path, sha: &str, bytes: &[u8]) -> Result<PathBuf, FetchError> {
    let cache_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| FetchError::Cache { path, source }
    };
    std::fs::create_dir_all(dir).map_err(cache_err(dir))?;
    let path = dir.join(format!("{sha}.wasm"));
    // A unique name per writer: two gateways storing the same code never share a temp file.
    let tmp = dir.join(format!(
        ".{sha}.{}.{}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::write(&tmp, bytes).map_err(cache_err(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        cache_err(&path)(e)
    })?;
    Ok(path)
}

/// The code at `url` with digest `sha256`, from the cache or fetched (within `timeout`),
/// checked and cached. Returns the cached file.
///
/// # Errors
/// A bad URL or digest, a transport error, a non-200 status, a timeout, a digest mismatch, or
/// an unwritable cache.
pub async fn fetch(url: &str, sha256: &str, timeout: Duration) -> Result<PathBuf, FetchError> {
    fetch_in(cache_dir(), url, sha256, timeout).await
}

async fn fetch_in(
    dir: PathBuf,
    url: &str,
    sha256: &str,
    timeout: Duration,
) -> Result<PathBuf, FetchError> {
    let sha = normalize(sha256)?;
    if let Some(p) = cached_in(&dir, &sha) {
        return Ok(p);
    }
    let body = tokio::time::timeout(timeout, download(url))
        .await
        .map_err(|_| FetchError::Timeout {
            url: url.to_string(),
            timeout,
        })??;
    let got = sluice_wasm::cache::sha256_hex(&body);
    if got != sha {
        return Err(FetchError::Checksum {
            url: url.to_string(),
            want: sha,
            got,
        });
    }
    let at = dir.clone();
    tokio::task::spawn_blocking(move || write(&dir, &sha, &body))
        .await
        .map_err(|e| FetchError::Cache {
            path: at,
            source: io::Error::other(e.to_string()),
        })?
}

/// [`fetch`] from synchronous code (the snapshot builder): runs on a thread of its own with its
/// own runtime, so it works inside and outside a tokio runtime alike.
///
/// # Errors
/// As [`fetch`].
pub fn fetch_blocking(url: &str, sha256: &str, timeout: Duration) -> Result<PathBuf, FetchError> {
    if let Some(p) = cached(sha256) {
        return Ok(p);
    }
    let (u, s) = (url.to_string(), sha256.to_string());
    let transport = |message: String| FetchError::Transport {
        url: url.to_string(),
        message,
    };
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| transport(format!("no runtime: {e}")))?;
                rt.block_on(fetch(&u, &s, timeout))
            })
            .join()
            .map_err(|_| transport("the fetch thread panicked".into()))?
    })
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// GET `url`, following redirects, and return the body (at most [`MAX_CODE_SIZE`]).
async fn download(url: &str) -> Result<Bytes, FetchError> {
    let mut current = url.to_string();
    for _ in 0..=MAX_REDIRECTS {
        let transport = |message: String| FetchError::Transport {
            url: current.clone(),
            message,
        };
        let uri: http::Uri = current
            .parse()
            .map_err(|_| FetchError::BadUrl(current.clone()))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(FetchError::BadUrl(current.clone())),
        };
        let (Some(host), Some(authority)) = (uri.host(), uri.authority()) else {
            return Err(FetchError::BadUrl(current.clone()));
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(|e| transport(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = if https {
            Box::new(tls(tcp, host).await.map_err(transport)?)
        } else {
            Box::new(tcp)
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| transport(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let req = http::Request::get(path)
            .header(http::header::HOST, authority.as_str())
            .header(http::header::USER_AGENT, "sluice")
            .body(Empty::<Bytes>::new())
            .map_err(|e| transport(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| transport(e.to_string()))?;
        let status = resp.status();
        if status.is_redirection() {
            let location = resp
                .headers()
                .get(http::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| transport(format!("{status} without a Location")))?;
            current = resolve_location(&uri, location);
            continue;
        }
        if status != http::StatusCode::OK {
            return Err(FetchError::Status {
                url: current,
                status: status.as_u16(),
            });
        }
        let body = Limited::new(resp.into_body(), MAX_CODE_SIZE)
            .collect()
            .await
            .map_err(|e| transport(e.to_string()))?;
        return Ok(body.to_bytes());
    }
    Err(FetchError::Redirects {
        url: url.to_string(),
    })
}

/// A Location header made absolute against the URL that answered with it.
fn resolve_location(base: &http::Uri, location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    let scheme = base.scheme_str().unwrap_or("http");
    let authority = base.authority().map_or("", |a| a.as_str());
    if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else {
        let dir = base.path().rsplit_once('/').map_or("", |(d, _)| d);
        format!("{scheme}://{authority}{dir}/{location}")
    }
}

async fn tls(
    tcp: TcpStream,
    host: &str,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let config = rustls::ClientConfig::builder_with_provider(crate::listener::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| format!("`{host}` is not a server name: {e}"))?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))
}

#[cfg(test)]
mod tests;
