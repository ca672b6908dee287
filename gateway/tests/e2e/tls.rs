//! Edge TLS with real clients: SNI selection, ALPN, TLS versions and mTLS with curl and
//! `openssl s_client`; HTTP/2 with a Rust client (hyper over tokio-rustls); certificate rotation
//! under continuous load (atomic rename and Kubernetes-style symlink swap) with zero failures.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::certs::{s_client, Pki};
use crate::support::*;

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// A CA, an ECDSA certificate for `a.test` + `*.wild.test` (the default) and an RSA one for
/// `b.test`, and a client certificate with a SPIFFE id.
struct Material {
    _dir: tempfile::TempDir,
    pki: Pki,
    a: (PathBuf, PathBuf),
    b: (PathBuf, PathBuf),
    client: (PathBuf, PathBuf),
}

fn material() -> Material {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "edge");
    let a = pki.server("a", "a.test", &["a.test", "*.wild.test"], false);
    let b = pki.server("b", "b.test", &["b.test"], true);
    let client = pki.client(
        "client",
        "billing",
        "Example",
        "spiffe://example.org/ns/prod/sa/billing",
    );
    Material {
        _dir: dir,
        pki,
        a,
        b,
        client,
    }
}

fn listener_yaml(m: &Material, extra_tls: &str, routes: &str) -> String {
    format!(
        r#"
workers: 1
listeners:
  - name: edge
    address: "127.0.0.1:{{PORT}}"
    tls:
      certificates:
        - {{ cert: "{}", key: "{}", server_names: ["a.test", "*.wild.test"] }}
        - {{ cert: "{}", key: "{}", server_names: ["b.test"] }}{extra_tls}
{routes}
"#,
        p(&m.a.0),
        p(&m.a.1),
        p(&m.b.0),
        p(&m.b.1)
    )
}

const DIRECT: &str = r#"    routes:
      - match: { path_prefix: "/" }
        direct_response: { status: 200, body: "hello tls\n" }"#;

fn resolve(host: &str, port: u16) -> String {
    format!("{host}:{port}:127.0.0.1")
}

#[test]
fn sni_picks_the_certificate_and_alpn_the_protocol() {
    let m = material();
    let gw = Gateway::start(&listener_yaml(&m, "", DIRECT));
    let ca = p(&m.pki.ca_path());
    let subject = |args: &[&str]| {
        let mut all = vec!["-CAfile", ca.as_str(), "-alpn", "h2,http/1.1"];
        all.extend_from_slice(args);
        let (_, out) = s_client(gw.port, &all);
        assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
        out
    };
    let out = subject(&["-servername", "b.test"]);
    assert!(
        out.contains("CN = b.test") || out.contains("CN=b.test"),
        "{out}"
    );
    assert!(
        out.contains("Server public key is 2048 bit"),
        "RSA expected: {out}"
    );
    assert!(out.contains("ALPN protocol: h2"), "{out}");
    let out = subject(&["-servername", "a.test"]);
    assert!(
        out.contains("CN = a.test") || out.contains("CN=a.test"),
        "{out}"
    );
    assert!(
        out.contains("Server public key is 256 bit"),
        "ECDSA expected: {out}"
    );
    // Wildcard: one label under wild.test.
    let out = subject(&["-servername", "x.wild.test"]);
    assert!(
        out.contains("CN = a.test") || out.contains("CN=a.test"),
        "{out}"
    );
    // No SNI, or an unknown name: the first certificate.
    let out = subject(&["-noservername", "-verify_hostname", "a.test"]);
    assert!(
        out.contains("CN = a.test") || out.contains("CN=a.test"),
        "{out}"
    );
    // http/1.1 only when the client offers only that.
    let (_, out) = s_client(
        gw.port,
        &["-CAfile", &ca, "-servername", "b.test", "-alpn", "http/1.1"],
    );
    assert!(out.contains("ALPN protocol: http/1.1"), "{out}");
}

#[test]
fn curl_speaks_h1_and_h2_and_the_versions_allowed() {
    let m = material();
    let gw = Gateway::start(&listener_yaml(&m, "", DIRECT));
    let ca = p(&m.pki.ca_path());
    let url = format!("https://b.test:{}/", gw.port);
    let r = resolve("b.test", gw.port);
    let run = |extra: &[&str]| {
        let mut args = vec!["--cacert", ca.as_str(), "--resolve", r.as_str()];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["-w", "|%{http_version}|%{ssl_verify_result}", url.as_str()]);
        curl(&args)
    };
    let (ok, out, err) = run(&["--http2"]);
    assert!(ok, "{err}\n{}", gw.log());
    assert_eq!(out, "hello tls\n|2|0");
    let (ok, out, err) = run(&["--http1.1"]);
    assert!(ok, "{err}");
    assert_eq!(out, "hello tls\n|1.1|0");
    let (ok, out, err) = run(&["--tlsv1.2", "--tls-max", "1.2"]);
    assert!(ok, "TLS 1.2 is allowed by default: {err}");
    assert!(out.starts_with("hello tls"));
    // The wrong CA is refused by the client: the chain really is the one we issued.
    let other = Pki::new(&m.pki.dir, "other");
    let (ok, _, _) = curl(&["--cacert", &p(&other.ca_path()), "--resolve", &r, &url]);
    assert!(!ok, "a certificate from another CA must not verify");

    let gw13 = Gateway::start(&listener_yaml(&m, "\n      min_version: \"1.3\"", DIRECT));
    let url13 = format!("https://b.test:{}/", gw13.port);
    let r13 = resolve("b.test", gw13.port);
    let (ok, _, err) = curl(&[
        "--cacert",
        &ca,
        "--resolve",
        &r13,
        "--tlsv1.2",
        "--tls-max",
        "1.2",
        &url13,
    ]);
    assert!(!ok, "TLS 1.2 must be refused with min_version 1.3");
    assert!(!err.is_empty());
    let (ok, out, err) = curl(&["--cacert", &ca, "--resolve", &r13, "--tlsv1.3", &url13]);
    assert!(ok && out == "hello tls\n", "{err}");
    let (ok, out) = s_client(gw13.port, &["-CAfile", &ca, "-tls1_2"]);
    assert!(!ok || !out.contains("Protocol  : TLSv1.2"), "{out}");
}

#[test]
fn mtls_requires_a_client_certificate_and_exposes_its_identity() {
    let m = material();
    let up = Upstream::start("origin");
    let routes = format!(
        r#"    filters:
      - name: headers
        config:
          request:
            set:
              - {{ name: x-peer-subject, value: "%DOWNSTREAM_PEER_SUBJECT%" }}
              - {{ name: x-peer-uri-san, value: "%DOWNSTREAM_PEER_URI_SAN%" }}
              - {{ name: x-tls-version, value: "%DOWNSTREAM_TLS_VERSION%" }}
              - {{ name: x-sni, value: "%REQUESTED_SERVER_NAME%" }}
    routes:
      - match: {{ path_prefix: "/" }}
        cluster: origin
clusters:
  - name: origin
    endpoints: ["{}"]"#,
        up.addr
    );
    let extra = format!("\n      client_ca: \"{}\"", p(&m.pki.ca_path()));
    let gw = Gateway::start(&listener_yaml(&m, &extra, &routes));
    let ca = p(&m.pki.ca_path());
    let url = format!("https://a.test:{}/who", gw.port);
    let r = resolve("a.test", gw.port);

    let (ok, _, _) = curl(&["--cacert", &ca, "--resolve", &r, &url]);
    assert!(!ok, "no client certificate must be refused");
    let stranger = Pki::new(&m.pki.dir, "stranger");
    let (sc, sk) = stranger.client("stranger", "mallory", "Evil", "spiffe://evil/x");
    let (ok, _, _) = curl(&[
        "--cacert",
        &ca,
        "--resolve",
        &r,
        "--cert",
        &p(&sc),
        "--key",
        &p(&sk),
        &url,
    ]);
    assert!(!ok, "a client certificate from another CA must be refused");

    let (ok, out, err) = curl(&[
        "--cacert",
        &ca,
        "--resolve",
        &r,
        "--cert",
        &p(&m.client.0),
        "--key",
        &p(&m.client.1),
        &url,
    ]);
    assert!(ok, "{err}\n{}", gw.log());
    let v: serde_json::Value = serde_json::from_str(&out).expect("echo json");
    let h = &v["headers"];
    // RFC 2253 order: the certificate's last RDN first (rcgen writes CN, then O).
    assert_eq!(h["x-peer-subject"][0], "O=Example,CN=billing", "{v}");
    assert_eq!(
        h["x-peer-uri-san"][0],
        "spiffe://example.org/ns/prod/sa/billing"
    );
    assert_eq!(h["x-tls-version"][0], "TLSv1.3");
    assert_eq!(h["x-sni"][0], "a.test");
    assert_eq!(h["x-forwarded-proto"][0], "https");

    // openssl: accepted with the certificate, and its handshake names our CA as acceptable.
    let (_, out) = s_client(
        gw.port,
        &[
            "-CAfile",
            &ca,
            "-servername",
            "a.test",
            "-cert",
            &p(&m.client.0),
            "-key",
            &p(&m.client.1),
        ],
    );
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    assert!(
        out.contains("edge test CA"),
        "acceptable client CA names: {out}"
    );
}

/// A rustls client config trusting `ca`, offering `alpn`.
fn client_config(ca: &Path, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).expect("ca") {
        roots.add(c.expect("ca pem")).expect("add ca");
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // Full handshakes only: a resumed session does not send the certificate again, and these
    // tests look at which certificate each new handshake gets.
    cfg.resumption = rustls::client::Resumption::disabled();
    Arc::new(cfg)
}

type ClientTls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn tls_connect(
    port: u16,
    sni: &str,
    cfg: &Arc<rustls::ClientConfig>,
) -> std::io::Result<ClientTls> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = ServerName::try_from(sni.to_string())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    tokio_rustls::TlsConnector::from(cfg.clone())
        .connect(name, tcp)
        .await
}

/// The CN of the certificate the server presented.
fn peer_cn(s: &ClientTls) -> String {
    let Some(leaf) = s.get_ref().1.peer_certificates().and_then(|c| c.first()) else {
        return String::new();
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf) else {
        return String::new();
    };
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .unwrap_or("");
    cn.to_string()
}

#[test]
fn h2_over_tls_multiplexes_with_a_rust_client() {
    let m = material();
    let up = Upstream::start("origin");
    let routes = format!(
        "    routes:\n      - match: {{ path_prefix: \"/\" }}\n        cluster: origin\nclusters:\n  - name: origin\n    endpoints: [\"{}\"]",
        up.addr
    );
    let gw = Gateway::start(&listener_yaml(&m, "", &routes));
    let cfg = client_config(&m.pki.ca_path(), &[b"h2"]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let tls = tls_connect(gw.port, "b.test", &cfg)
            .await
            .expect("handshake");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        assert_eq!(peer_cn(&tls), "b.test");
        let (tx, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            TokioIo::new(tls),
        )
        .await
        .expect("h2 handshake");
        tokio::spawn(conn);
        let mut calls = Vec::new();
        for i in 0..50 {
            let mut tx = tx.clone();
            calls.push(tokio::spawn(async move {
                let req = http::Request::get(format!("https://b.test/stream/{i}"))
                    .body(Empty::<Bytes>::new())
                    .expect("req");
                let resp = tx.send_request(req).await.expect("response");
                assert_eq!(resp.version(), http::Version::HTTP_2);
                let status = resp.status();
                let body = resp.into_body().collect().await.expect("body").to_bytes();
                (status, body)
            }));
        }
        for (i, c) in calls.into_iter().enumerate() {
            let (status, body) = c.await.expect("task");
            assert_eq!(status, 200);
            let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
            assert_eq!(v["uri"], format!("/stream/{i}"));
            assert_eq!(v["headers"]["x-forwarded-proto"][0], "https");
        }
    });
}

/// TLS clients opening a new connection per request (each a handshake) plus one long-lived
/// connection, recording failures and the certificate names they were served.
struct TlsLoad {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    seen: Arc<Mutex<Vec<String>>>,
    errors: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TlsLoad {
    fn start(port: u16, cfg: Arc<rustls::ClientConfig>, conns: usize) -> TlsLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let (s, o, sn, e) = (stop.clone(), ok.clone(), seen.clone(), errors.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("rt");
            rt.block_on(async move {
                let mut tasks = Vec::new();
                for i in 0..conns {
                    let (s, o, sn, e, cfg) =
                        (s.clone(), o.clone(), sn.clone(), e.clone(), cfg.clone());
                    // Task 0 keeps one connection for the whole run: rotation must not touch it.
                    let keep = i == 0;
                    tasks.push(tokio::spawn(async move {
                        let mut held: Option<
                            hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
                        > = None;
                        while !s.load(Ordering::Relaxed) {
                            let result = one_request(port, &cfg, keep, &mut held).await;
                            match result {
                                Ok(cn) => {
                                    o.fetch_add(1, Ordering::Relaxed);
                                    if let Some(cn) = cn {
                                        let mut v = sn.lock().expect("seen");
                                        if v.last() != Some(&cn) {
                                            v.push(cn);
                                        }
                                    }
                                }
                                Err(err) => e.lock().expect("errors").push(err),
                            }
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }));
                }
                for t in tasks {
                    let _ = t.await;
                }
            });
        });
        TlsLoad {
            stop,
            ok,
            seen,
            errors,
            thread: Some(thread),
        }
    }

    fn last_seen(&self) -> Option<String> {
        self.seen.lock().expect("seen").last().cloned()
    }

    fn stop(mut self) -> (u64, Vec<String>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let seen = self.seen.lock().expect("seen").clone();
        let errors = self.errors.lock().expect("errors").clone();
        (self.ok.load(Ordering::Relaxed), seen, errors)
    }
}

/// One GET on a new connection (returning the certificate CN), or on the held one.
async fn one_request(
    port: u16,
    cfg: &Arc<rustls::ClientConfig>,
    keep: bool,
    held: &mut Option<hyper::client::conn::http1::SendRequest<Empty<Bytes>>>,
) -> Result<Option<String>, String> {
    let mut cn = None;
    let mut tx = match held.take() {
        Some(tx) => tx,
        None => {
            let tls = tls_connect(port, "a.test", cfg)
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            cn = Some(peer_cn(&tls));
            let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|e| format!("http handshake: {e}"))?;
            tokio::spawn(conn);
            tx
        }
    };
    let req = http::Request::get("/")
        .header("host", "a.test")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(20), tx.send_request(req))
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| format!("request: {e}"))?;
    let status = resp.status();
    let _ = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("status {status}"));
    }
    if keep {
        *held = Some(tx);
        // The held connection reports what it saw at its handshake only.
        return Ok(cn.map(|c| format!("held:{c}")));
    }
    Ok(cn)
}

/// Kubernetes' secret volume layout: `tls.crt -> ..data/tls.crt`, `..data -> ..<generation>`.
fn k8s_generation(pki: &Pki, live: &Path, generation: &str) {
    let gen_dir = live.join(format!("..{generation}"));
    std::fs::create_dir_all(&gen_dir).expect("gen dir");
    let (crt, key) = pki.server(generation, generation, &["a.test"], false);
    std::fs::rename(crt, gen_dir.join("tls.crt")).expect("mv crt");
    std::fs::rename(key, gen_dir.join("tls.key")).expect("mv key");
    let tmp = live.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..{generation}"), &tmp).expect("symlink");
    std::fs::rename(&tmp, live.join("..data")).expect("swap ..data");
}

fn wait_for_cert(load: &TlsLoad, want: &str, gw: &Gateway) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if load.last_seen().as_deref() == Some(want) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "new handshakes never got `{want}` (last: {:?}); log:\n{}",
        load.last_seen(),
        gw.log()
    );
}

#[test]
fn certificates_rotate_under_load_with_zero_failures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "rot");
    let live = dir.path().join("live");
    std::fs::create_dir_all(&live).expect("live");
    k8s_generation(&pki, &live, "gen-1");
    for f in ["tls.crt", "tls.key"] {
        std::os::unix::fs::symlink(format!("..data/{f}"), live.join(f)).expect("link");
    }
    let yaml = format!(
        r#"
workers: 2
listeners:
  - name: edge
    address: "127.0.0.1:{{PORT}}"
    tls:
      certificates:
        - {{ cert: "{}", key: "{}", server_names: ["a.test"] }}
{DIRECT}
"#,
        p(&live.join("tls.crt")),
        p(&live.join("tls.key"))
    );
    let gw = Gateway::start(&yaml);
    let cfg = client_config(&pki.ca_path(), &[b"http/1.1"]);
    let load = TlsLoad::start(gw.port, cfg, 4);
    wait_for_cert(&load, "gen-1", &gw);

    // 1. Kubernetes-style: a new generation directory, then `..data` swapped atomically.
    k8s_generation(&pki, &live, "gen-2");
    wait_for_cert(&load, "gen-2", &gw);

    // 2. Editors and deploy tools: the files themselves replaced by rename (key first, so the
    //    pair is never mismatched on disk for long; a mismatch in between is rejected anyway).
    let (crt, key) = pki.server("gen-3", "gen-3", &["a.test"], true);
    std::fs::rename(key, live.join("tls.key")).expect("mv key");
    std::fs::rename(crt, live.join("tls.crt")).expect("mv crt");
    wait_for_cert(&load, "gen-3", &gw);

    // 3. A broken certificate is rejected with an error; gen-3 keeps being served.
    let rejected = || gw.log().matches("reload rejected").count();
    let rejected_before = rejected();
    let bad = dir.path().join("bad.crt");
    std::fs::write(
        &bad,
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    )
    .expect("bad");
    std::fs::rename(&bad, live.join("tls.crt")).expect("mv bad");
    let deadline = Instant::now() + Duration::from_secs(30);
    while rejected() == rejected_before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(rejected() > rejected_before, "log:\n{}", gw.log());
    let before = load.ok.load(Ordering::Relaxed);
    while load.ok.load(Ordering::Relaxed) < before + 20 {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(load.last_seen().as_deref(), Some("gen-3"));

    let (ok, seen, errors) = load.stop();
    assert!(errors.is_empty(), "failed requests: {errors:?}");
    assert!(ok > 100, "too few requests: {ok}");
    // The held connection saw gen-1 at its handshake and was never replaced.
    assert_eq!(
        seen.iter().filter(|s| s.starts_with("held:")).count(),
        1,
        "{seen:?}"
    );
}

/// Keys in PKCS#8 and SEC1/PKCS#1 forms both load (openssl writes traditional forms).
#[test]
fn traditional_key_formats_load() {
    let m = material();
    let sec1 = m.pki.dir.join("a-sec1.key");
    let out = std::process::Command::new("openssl")
        .args(["ec", "-in", &p(&m.a.1), "-out", &p(&sec1)])
        .output()
        .expect("openssl");
    assert!(out.status.success());
    let pem = std::fs::read(&sec1).expect("read");
    assert!(PrivateKeyDer::from_pem_slice(&pem).is_ok());
    let yaml = listener_yaml(&m, "", DIRECT).replace(&p(&m.a.1), &p(&sec1));
    let gw = Gateway::start(&yaml);
    let (ok, out, err) = curl(&[
        "--cacert",
        &p(&m.pki.ca_path()),
        "--resolve",
        &resolve("a.test", gw.port),
        &format!("https://a.test:{}/", gw.port),
    ]);
    assert!(ok && out == "hello tls\n", "{err}");
}

/// An HTTPS upstream on 127.0.0.1:0 with a certificate for `up.internal`, speaking HTTP/1.1 and
/// h2 per ALPN, answering `sni=<name> alpn=<proto> version=<HTTP version>`.
fn tls_upstream(pki: &Pki) -> (std::net::SocketAddr, tokio::runtime::Runtime) {
    let (crt, key) = pki.server("upstream", "up.internal", &["up.internal"], false);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&crt)
        .expect("crt")
        .collect::<Result<_, _>>()
        .expect("pem");
    let key = PrivateKeyDer::from_pem_file(&key).expect("key");
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .expect("server config");
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("rt");
    let addr = rt.block_on(async move {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((tcp, _)) = l.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let conn = tls.get_ref().1;
                    let sni = conn.server_name().unwrap_or("").to_string();
                    let alpn =
                        String::from_utf8_lossy(conn.alpn_protocol().unwrap_or(b"")).into_owned();
                    let svc = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let body = format!("sni={sni} alpn={alpn} version={:?}", req.version());
                            async move {
                                Ok::<_, std::convert::Infallible>(http::Response::new(full(body)))
                            }
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
                });
            }
        });
        addr
    });
    (addr, rt)
}

#[test]
fn upstream_tls_with_sni_custom_ca_and_h2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "internal");
    let (addr, _rt) = tls_upstream(&pki);
    let ca = p(&pki.ca_path());
    let yaml = format!(
        r#"
workers: 1
listeners:
  - name: plain
    address: "127.0.0.1:{{PORT}}"
    routes:
      - {{ match: {{ path_prefix: "/h1" }}, cluster: h1 }}
      - {{ match: {{ path_prefix: "/h2" }}, cluster: h2 }}
      - {{ match: {{ path_prefix: "/wrong" }}, cluster: wrong }}
clusters:
  - name: h1
    endpoints: ["{addr}"]
    tls: {{ server_name: up.internal, ca: "{ca}" }}
    health_check: {{ path: /healthz, interval: 1s, timeout: 1s }}
  - name: h2
    protocol: http2
    endpoints: ["{addr}"]
    tls: {{ server_name: up.internal, ca: "{ca}" }}
  - name: wrong
    endpoints: ["{addr}"]
    tls: {{ server_name: other.internal, ca: "{ca}" }}
"#
    );
    let gw = Gateway::start(&yaml);
    // Health checks run over TLS too: the endpoint stays healthy across a few rounds.
    std::thread::sleep(Duration::from_millis(2500));
    let r = get(&gw, "/h1");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), gw.log());
    assert_eq!(r.text(), "sni=up.internal alpn=http/1.1 version=HTTP/1.1");
    let r = get(&gw, "/h2");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "sni=up.internal alpn=h2 version=HTTP/2.0");
    // A name the certificate is not for fails verification: the gateway answers 503.
    let r = get(&gw, "/wrong");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(gw.log().contains("TLS handshake") || r.text().contains("upstream"));
}

#[test]
fn ocsp_responses_are_stapled_and_refreshed() {
    let m = material();
    let ocsp = m.pki.dir.join("a.ocsp");
    m.pki.ocsp_response(&m.a.0, false, &ocsp);
    let yaml = listener_yaml(&m, "", DIRECT).replace(
        &format!("key: \"{}\",", p(&m.a.1)),
        &format!("key: \"{}\", ocsp: \"{}\",", p(&m.a.1), p(&ocsp)),
    );
    assert!(yaml.contains("ocsp:"), "{yaml}");
    let gw = Gateway::start(&yaml);
    let status = |name: &str| {
        s_client(
            gw.port,
            &[
                "-servername",
                name,
                "-status",
                "-CAfile",
                &p(&m.pki.ca_path()),
            ],
        )
        .1
    };
    let out = status("a.test");
    assert!(out.contains("OCSP Response Status: successful"), "{out}");
    assert!(out.contains("Cert Status: good"), "{out}");
    // The other certificate has no response configured: nothing is stapled.
    let out = status("b.test");
    assert!(out.contains("OCSP response: no response sent"), "{out}");
    // A fresh response replacing the file (atomic rename) is stapled to new handshakes.
    let next = m.pki.dir.join("a.ocsp.new");
    m.pki.ocsp_response(&m.a.0, true, &next);
    std::fs::rename(&next, &ocsp).expect("rename");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = status("a.test");
        if out.contains("Cert Status: revoked") {
            break;
        }
        assert!(Instant::now() < deadline, "never re-stapled: {out}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // A file that is not an OCSP response is refused; the last good one stays stapled.
    std::fs::write(&ocsp, b"-----BEGIN OCSP RESPONSE-----\n").expect("write");
    std::thread::sleep(Duration::from_millis(300));
    let (_, out, _) = curl(&[
        "-X",
        "POST",
        "-w",
        " %{http_code}",
        &gw.admin_url("/reload"),
    ]);
    assert!(out.ends_with(" 500"), "{out}");
    assert!(out.contains("OCSP response file"), "{out}");
    let out = status("a.test");
    assert!(out.contains("Cert Status: revoked"), "{out}");
}

#[test]
fn a_key_renamed_before_its_certificate_is_not_a_reported_failure() {
    let m = material();
    let gw = Gateway::start(&listener_yaml(&m, "", DIRECT));
    let served_cn = || {
        let (_, out) = s_client(gw.port, &["-servername", "a.test"]);
        out.lines()
            .find(|l| l.starts_with("subject="))
            .unwrap_or_default()
            .to_string()
    };
    let config = || {
        let (_, out, _) = curl(&[&gw.admin_url("/config")]);
        serde_json::from_str::<serde_json::Value>(&out).expect("json")
    };
    // A rotation made of two renames, 100 ms apart: the watcher sees a key without its
    // certificate in between, and must neither report it nor keep the old pair.
    let (crt, key) = m
        .pki
        .server("a2", "a2.test", &["a.test", "*.wild.test"], false);
    std::fs::rename(&key, &m.a.1).expect("mv key");
    std::thread::sleep(Duration::from_millis(100));
    std::fs::rename(&crt, &m.a.0).expect("mv crt");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !served_cn().contains("a2.test") {
        assert!(Instant::now() < deadline, "never rotated: {}", gw.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(config()["last_error"].is_null(), "{}", config());
    // A success clears last_error, so the counter is what shows the moment in between was not
    // reported as a failure.
    let failures = || {
        let (_, metrics, _) = curl(&[&gw.admin_url("/metrics")]);
        metrics
            .lines()
            .find(|l| l.starts_with("sluice_config_reload_failures_total"))
            .map(|l| l.rsplit(' ').next().unwrap_or_default().to_string())
            .unwrap_or_default()
    };
    assert_eq!(failures(), "0", "{}", gw.log());
    // A key that stays without its certificate is reported, and the last good pair serves.
    let (_crt, key) = m.pki.server("a3", "a3.test", &["a.test"], false);
    std::fs::rename(&key, &m.a.1).expect("mv key");
    let deadline = Instant::now() + Duration::from_secs(20);
    while config()["last_error"].is_null() {
        assert!(Instant::now() < deadline, "never reported: {}", gw.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let error = config()["last_error"].to_string();
    assert!(error.contains("key"), "{error}");
    assert_eq!(failures(), "1", "reported once");
    assert!(served_cn().contains("a2.test"));
}
