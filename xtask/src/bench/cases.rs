//! The benchmark cases. A case is a name, a title, the peers it runs side by side (each a
//! generated config) and the ratios it reports. Add a case by writing a `fn(&CaseCtx, &mut Ports)
//! -> anyhow::Result<Case>` and listing it in [`CASES`].

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::{json, Value};

use super::configs::{self, SluiceSpec};
use super::tls::{self, Client};

/// The response header the `filters` case adds; the harness checks that it is really there.
pub const BENCH_HEADER: &str = "x-bench";

/// How a peer is started.
#[derive(Clone, Debug)]
pub enum PeerKind {
    /// `nginx -p DIR -c DIR/nginx.conf -g 'daemon off;'`.
    Nginx,
    /// `haproxy -db -f DIR/haproxy.cfg`.
    Haproxy,
    /// `sluice run -c DIR/sluice.yaml`, ready when `GET http://ADMIN/ready` answers 200.
    Sluice {
        /// The admin address written into the config.
        admin: SocketAddr,
        /// Another build of the gateway to run instead of the one under test (`--compare`).
        bin: Option<PathBuf>,
    },
}

/// One proxy under test, with its generated config.
#[derive(Clone, Debug)]
pub struct Peer {
    /// Row name in the report (`nginx`, `sluice+wasm`).
    pub name: String,
    pub kind: PeerKind,
    /// Where wrk sends its load.
    pub listen: SocketAddr,
    /// The peer's own directory: its config, pid file, temp files and log.
    pub dir: PathBuf,
    /// The config file's contents.
    pub config: String,
    /// A response header that must be present for the peer to count as correctly configured.
    pub expect_header: Option<&'static str>,
    /// Whether the peer terminates TLS (its readiness check then goes over https).
    pub tls: bool,
}

impl Peer {
    /// The config file's name inside [`Peer::dir`].
    pub fn config_file_name(&self) -> &'static str {
        match self.kind {
            PeerKind::Nginx => "nginx.conf",
            PeerKind::Haproxy => "haproxy.cfg",
            PeerKind::Sluice { .. } => "sluice.yaml",
        }
    }
}

/// A set of peers measured side by side.
#[derive(Debug)]
pub struct Case {
    pub name: &'static str,
    /// One line saying what is compared, for the report.
    pub title: &'static str,
    pub peers: Vec<Peer>,
    /// `(subject, reference)` peer names: the report shows subject/reference for each figure.
    pub ratios: Vec<(String, String)>,
    /// Peers left out and why.
    pub notes: Vec<String>,
    /// The load generator.
    pub client: Client,
}

impl Case {
    /// Keeps only the peers named in `only`, noting the others.
    pub fn retain_peers(&mut self, only: &[String]) {
        let (kept, dropped): (Vec<Peer>, Vec<Peer>) =
            self.peers.drain(..).partition(|p| only.contains(&p.name));
        self.peers = kept;
        self.notes.extend(
            dropped
                .into_iter()
                .map(|p| format!("{}: not selected (--peers)", p.name)),
        );
    }
}

/// What the cases are built from.
#[derive(Debug)]
pub struct CaseCtx {
    pub upstream: SocketAddr,
    /// The scratch directory; each peer gets `WORK/CASE/PEER/`.
    pub work: PathBuf,
    /// Whether HAProxy is installed.
    pub haproxy: bool,
    /// The wasm plugin for the `filters` case (`--plugin`).
    pub plugin: Option<PathBuf>,
    /// Its proxy-wasm root id (`--plugin-root-id`).
    pub plugin_root_id: Option<String>,
    /// The same work against the raw ABI, for the `filters` case (`--raw-plugin`).
    pub raw_plugin: Option<PathBuf>,
    /// The plugin built on the `proxy-wasm` crate, for the `filters` case (`--proxy-wasm-plugin`).
    pub proxy_wasm_plugin: Option<PathBuf>,
    /// Another gateway build run beside `sluice` in the `proxy` case (`--compare NAME=PATH`).
    pub compare: Option<(String, PathBuf)>,
}

impl CaseCtx {
    fn dir(&self, case: &str, peer: &str) -> PathBuf {
        self.work.join(case).join(peer.replace('+', "-"))
    }

    fn sluice(
        &self,
        ports: &mut Ports,
        case: &str,
        name: &str,
        spec: &SluiceSpec,
    ) -> anyhow::Result<Peer> {
        let (listen, admin) = (ports.next()?, ports.next()?);
        Ok(Peer {
            name: name.to_string(),
            kind: PeerKind::Sluice { admin, bin: None },
            listen,
            dir: self.dir(case, name),
            config: configs::sluice(spec, listen, admin, self.upstream),
            expect_header: None,
            tls: spec.tls.is_some(),
        })
    }
}

/// A case's name and how to build it.
pub struct CaseDef {
    pub name: &'static str,
    pub build: fn(&CaseCtx, &mut Ports) -> anyhow::Result<Case>,
}

/// Every case, in the order `--case all` runs them.
pub const CASES: &[CaseDef] = &[
    CaseDef {
        name: "proxy",
        build: proxy,
    },
    CaseDef {
        name: "filters",
        build: filters,
    },
    CaseDef {
        name: "tracing",
        build: tracing,
    },
    CaseDef {
        name: "access-log",
        build: access_log,
    },
    CaseDef {
        name: "tls-h1",
        build: tls_h1,
    },
    CaseDef {
        name: "tls-h2",
        build: tls_h2,
    },
];

/// TLS termination with HTTP/1.1 clients (wrk over https): Sluice against nginx, same cert.
fn tls_h1(ctx: &CaseCtx, ports: &mut Ports) -> anyhow::Result<Case> {
    tls_case(
        ctx,
        ports,
        "tls-h1",
        Client::WrkTls,
        "TLS termination (ECDSA P-256), HTTP/1.1 clients (wrk over https), h1 upstream",
    )
}

/// TLS termination with h2 clients (h2load, 10 streams per connection): Sluice against nginx.
fn tls_h2(ctx: &CaseCtx, ports: &mut Ports) -> anyhow::Result<Case> {
    tls_case(ctx, ports, "tls-h2", Client::H2load, "TLS termination (ECDSA P-256), h2 clients (h2load -m10; latency columns are mean and max), h1 upstream")
}

fn tls_case(
    ctx: &CaseCtx,
    ports: &mut Ports,
    name: &'static str,
    client: Client,
    title: &'static str,
) -> anyhow::Result<Case> {
    let (crt, key) = tls::cert_paths(&ctx.work);
    let listen = ports.next()?;
    let dir = ctx.dir(name, "nginx");
    let nginx = Peer {
        name: "nginx".into(),
        kind: PeerKind::Nginx,
        listen,
        config: configs::proxy_nginx_tls(&dir, listen, ctx.upstream, &crt, &key),
        dir,
        expect_header: None,
        tls: true,
    };
    let spec = SluiceSpec {
        tls: Some((crt, key)),
        ..SluiceSpec::default()
    };
    let sluice = ctx.sluice(ports, name, "sluice", &spec)?;
    Ok(Case {
        name,
        title,
        peers: vec![nginx, sluice],
        ratios: vec![("sluice".into(), "nginx".into())],
        notes: Vec::new(),
        client,
    })
}

/// Plain reverse proxying: Sluice against nginx and HAProxy.
fn proxy(ctx: &CaseCtx, ports: &mut Ports) -> anyhow::Result<Case> {
    const NAME: &str = "proxy";
    let mut peers = Vec::new();
    let mut notes = Vec::new();
    let up = ctx.upstream;
    peers.push(reference(
        ctx,
        ports,
        NAME,
        "nginx",
        PeerKind::Nginx,
        |d, l| configs::proxy_nginx(d, l, up),
    )?);
    // nginx setting the request headers Sluice sets (see docs/performance.md): with its own
    // random request id, and with a counter for one.
    for (name, id) in [
        ("nginx+headers", configs::NginxRequestId::Random),
        ("nginx+headers-counter-id", configs::NginxRequestId::Counter),
    ] {
        peers.push(reference(
            ctx,
            ports,
            NAME,
            name,
            PeerKind::Nginx,
            |d, l| configs::proxy_nginx_headers(d, l, up, id),
        )?);
    }
    if ctx.haproxy {
        peers.push(reference(
            ctx,
            ports,
            NAME,
            "haproxy",
            PeerKind::Haproxy,
            |d, l| configs::haproxy(d, l, up),
        )?);
        peers.push(reference(
            ctx,
            ports,
            NAME,
            "haproxy+headers",
            PeerKind::Haproxy,
            |d, l| configs::haproxy_headers(d, l, up),
        )?);
    } else {
        notes.push("haproxy: skipped, not installed (`apt-get install -y haproxy`)".into());
    }
    peers.push(ctx.sluice(ports, NAME, "sluice", &SluiceSpec::default())?);
    let mut ratios = vec![
        ("sluice".into(), "nginx".into()),
        ("sluice".into(), "nginx+headers".into()),
        ("sluice".into(), "nginx+headers-counter-id".into()),
        ("sluice".into(), "haproxy".into()),
        ("sluice".into(), "haproxy+headers".into()),
        // Not the question, but it checks the setup against the reference points (≈ 0.98).
        ("haproxy".into(), "nginx".into()),
    ];
    if let Some((name, bin)) = &ctx.compare {
        let mut peer = ctx.sluice(ports, NAME, name, &SluiceSpec::default())?;
        if let PeerKind::Sluice { admin, .. } = peer.kind {
            peer.kind = PeerKind::Sluice {
                admin,
                bin: Some(bin.clone()),
            };
        }
        peers.push(peer);
        ratios.push((name.clone(), "nginx".into()));
        ratios.push((name.clone(), "sluice".into()));
    }
    Ok(Case {
        name: NAME,
        title: "reverse proxy, small response, keep-alive on both sides",
        peers,
        ratios,
        notes,
        client: Client::Wrk,
    })
}

/// A plain-HTTP reference peer (nginx or HAProxy) named `name` in `case`, on the next port, with
/// the config `config(dir, listen)` makes.
fn reference(
    ctx: &CaseCtx,
    ports: &mut Ports,
    case: &str,
    name: &str,
    kind: PeerKind,
    config: impl FnOnce(&Path, SocketAddr) -> String,
) -> anyhow::Result<Peer> {
    let listen = ports.next()?;
    let dir = ctx.dir(case, name);
    Ok(Peer {
        name: name.into(),
        kind,
        listen,
        config: config(&dir, listen),
        dir,
        expect_header: None,
        tls: false,
    })
}

/// The cost of one response header added by nothing, a native filter, or a wasm plugin.
fn filters(ctx: &CaseCtx, ports: &mut Ports) -> anyhow::Result<Case> {
    const NAME: &str = "filters";
    let mut notes = Vec::new();
    let mut peers = vec![ctx.sluice(ports, NAME, "sluice", &SluiceSpec::default())?];

    let native = SluiceSpec {
        filters: vec![native_add_header()],
        ..SluiceSpec::default()
    };
    let mut peer = ctx.sluice(ports, NAME, "sluice+headers", &native)?;
    peer.expect_header = Some(BENCH_HEADER);
    peers.push(peer);

    match &ctx.plugin {
        Some(wasm) => peers.push(add_header_peer(
            ctx,
            ports,
            wasm,
            "sluice+wasm",
            "--plugin",
        )?),
        None => notes.push("sluice+wasm: skipped, no `--plugin PATH.wasm` given".into()),
    }
    let mut ratios = vec![
        ("sluice+headers".into(), "sluice".into()),
        ("sluice+wasm".into(), "sluice".into()),
        ("sluice+wasm".into(), "sluice+headers".into()),
    ];
    if let Some(raw) = &ctx.raw_plugin {
        let raw = raw
            .canonicalize()
            .with_context(|| format!("--raw-plugin {}", raw.display()))?;
        let spec = SluiceSpec {
            filters: vec![json!({ "plugin": "raw-add-header" })],
            plugins: vec![json!({ "name": "raw-add-header", "wasm": raw.display().to_string() })],
            telemetry: None,
            tls: None,
        };
        let mut peer = ctx.sluice(ports, NAME, "sluice+rawwasm", &spec)?;
        peer.expect_header = Some(BENCH_HEADER);
        peers.push(peer);
        ratios.push(("sluice+rawwasm".into(), "sluice".into()));
    }
    if let Some(wasm) = &ctx.proxy_wasm_plugin {
        let flag = "--proxy-wasm-plugin";
        peers.push(add_header_peer(ctx, ports, wasm, "sluice+pwwasm", flag)?);
        ratios.push(("sluice+pwwasm".into(), "sluice".into()));
    }
    Ok(Case {
        name: NAME,
        title: "Sluice with no filter, a native `headers` filter, and a wasm plugin adding one response header",
        peers,
        ratios,
        notes,
        client: Client::Wrk,
    })
}

/// A `filters` peer running `wasm`, an add-header plugin (the first-party one or a build of it
/// on another SDK), configured to add the benchmark's response header.
fn add_header_peer(
    ctx: &CaseCtx,
    ports: &mut Ports,
    wasm: &Path,
    peer: &str,
    flag: &str,
) -> anyhow::Result<Peer> {
    let wasm = wasm
        .canonicalize()
        .with_context(|| format!("{flag} {}", wasm.display()))?;
    let mut plugin = json!({
        "name": "add-header",
        "wasm": wasm.display().to_string(),
        // The native filter's operation: an add (`proxy_add_header_map_value`), not the
        // plugin's default set, which first looks for the name among the fields.
        "config": {
            "response": [ { "name": BENCH_HEADER, "value": "1", "action": "add" } ],
        },
    });
    if let (Some(root_id), Some(map)) = (&ctx.plugin_root_id, plugin.as_object_mut()) {
        map.insert("root_id".into(), Value::from(root_id.as_str()));
    }
    let spec = SluiceSpec {
        filters: vec![json!({ "plugin": "add-header" })],
        plugins: vec![plugin],
        telemetry: None,
        tls: None,
    };
    let mut peer = ctx.sluice(ports, "filters", peer, &spec)?;
    peer.expect_header = Some(BENCH_HEADER);
    Ok(peer)
}

/// The cost of a JSON access log written to a file: Sluice and nginx each without and with one
/// (nginx with the same fields where it has them, buffered as Sluice's writer buffers).
fn access_log(ctx: &CaseCtx, ports: &mut Ports) -> anyhow::Result<Case> {
    const NAME: &str = "access-log";
    let mut peers = Vec::new();
    for (name, logged) in [("nginx", false), ("nginx+log", true)] {
        let listen = ports.next()?;
        let dir = ctx.dir(NAME, name);
        let config = if logged {
            configs::proxy_nginx_access_log(&dir, listen, ctx.upstream)
        } else {
            configs::proxy_nginx(&dir, listen, ctx.upstream)
        };
        peers.push(Peer {
            name: name.into(),
            kind: PeerKind::Nginx,
            listen,
            config,
            dir,
            expect_header: None,
            tls: false,
        });
    }
    peers.push(ctx.sluice(ports, NAME, "sluice", &SluiceSpec::default())?);
    let log_path = ctx.dir(NAME, "sluice+log").join("access.log");
    let spec = SluiceSpec {
        telemetry: Some(json!({
            "access_log": { "path": log_path.display().to_string(), "format": "json" },
        })),
        ..SluiceSpec::default()
    };
    peers.push(ctx.sluice(ports, NAME, "sluice+log", &spec)?);
    Ok(Case {
        name: NAME,
        title: "Sluice and nginx without and with a JSON access log written to a file",
        peers,
        ratios: vec![
            ("sluice+log".into(), "sluice".into()),
            ("nginx+log".into(), "nginx".into()),
            ("sluice+log".into(), "nginx+log".into()),
        ],
        notes: Vec::new(),
        client: Client::Wrk,
    })
}

/// The cost of OpenTelemetry tracing: off, 1% and 100% of requests sampled. Spans go over
/// OTLP/HTTP to the bench upstream (nginx answers any POST with 200), so batching, encoding and
/// sending are all paid for, on the proxy's core, as in production.
fn tracing(ctx: &CaseCtx, ports: &mut Ports) -> anyhow::Result<Case> {
    const NAME: &str = "tracing";
    let mut peers = vec![ctx.sluice(ports, NAME, "sluice", &SluiceSpec::default())?];
    for (name, ratio) in [("sluice+trace1%", 0.01), ("sluice+trace100%", 1.0)] {
        let spec = SluiceSpec {
            telemetry: Some(json!({
                "tracing": {
                    "otlp_endpoint": format!("http://{}", ctx.upstream),
                    "protocol": "http/protobuf",
                    "sample_ratio": ratio,
                },
            })),
            ..SluiceSpec::default()
        };
        peers.push(ctx.sluice(ports, NAME, name, &spec)?);
    }
    Ok(Case {
        name: NAME,
        title: "Sluice with tracing off, 1% and 100% of requests sampled (OTLP/HTTP export)",
        peers,
        ratios: vec![
            ("sluice+trace1%".into(), "sluice".into()),
            ("sluice+trace100%".into(), "sluice".into()),
        ],
        notes: Vec::new(),
        client: Client::Wrk,
    })
}

/// The native `headers` filter adding [`BENCH_HEADER`] to every response. Its config schema belongs
/// to the filter (gateway/src/filter/); this is the one place to keep in step with it.
fn native_add_header() -> Value {
    json!({
        "name": "headers",
        "config": { "response": { "add": [ { "name": BENCH_HEADER, "value": "1" } ] } },
    })
}

/// Hands out distinct free loopback ports: each stays bound until [`Ports::release`], so two
/// requests cannot get the same port.
#[derive(Debug, Default)]
pub struct Ports {
    held: Vec<TcpListener>,
}

impl Ports {
    /// A free `127.0.0.1` port.
    pub fn next(&mut self) -> anyhow::Result<SocketAddr> {
        let l = TcpListener::bind("127.0.0.1:0").context("binding a free loopback port")?;
        let addr = l.local_addr()?;
        self.held.push(l);
        Ok(addr)
    }

    /// Frees every port handed out, so that the peers can bind them.
    pub fn release(&mut self) {
        self.held.clear();
    }
}

/// The case definitions selected by `--case` (`all` or one name).
pub fn select(name: &str) -> anyhow::Result<Vec<&'static CaseDef>> {
    if name == "all" {
        return Ok(CASES.iter().collect());
    }
    match CASES.iter().find(|c| c.name == name) {
        Some(c) => Ok(vec![c]),
        None => {
            let names: Vec<_> = CASES.iter().map(|c| c.name).collect();
            anyhow::bail!("unknown case {name:?}; known: {} or all", names.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn ctx(haproxy: bool, plugin: Option<PathBuf>) -> CaseCtx {
        CaseCtx {
            upstream: SocketAddr::from(([127, 0, 0, 1], 9)),
            work: PathBuf::from("/tmp/w"),
            haproxy,
            plugin,
            plugin_root_id: Some("add_header".into()),
            raw_plugin: None,
            proxy_wasm_plugin: None,
            compare: None,
        }
    }

    #[test]
    fn every_case_builds_with_distinct_ports() -> anyhow::Result<()> {
        let wasm =
            std::env::temp_dir().join(format!("xtask-case-test-{}.wasm", std::process::id()));
        std::fs::write(&wasm, b"\0asm")?;
        let ctx = ctx(true, Some(wasm.clone()));
        let mut ports = Ports::default();
        let mut seen = std::collections::HashSet::new();
        for def in CASES {
            let case = (def.build)(&ctx, &mut ports)?;
            assert_eq!(case.name, def.name);
            for p in &case.peers {
                assert!(seen.insert(p.listen), "port reused: {}", p.listen);
                if let PeerKind::Sluice { admin, .. } = p.kind {
                    assert!(seen.insert(admin), "port reused: {admin}");
                }
            }
            for (a, b) in &case.ratios {
                assert!(
                    case.peers.iter().any(|p| &p.name == a) || !case.notes.is_empty(),
                    "{a}"
                );
                assert!(case.peers.iter().any(|p| &p.name == b), "{b}");
            }
        }
        std::fs::remove_file(wasm)?;
        Ok(())
    }

    #[test]
    fn missing_optional_peers_become_notes() -> anyhow::Result<()> {
        let mut ports = Ports::default();
        let proxy = proxy(&ctx(false, None), &mut ports)?;
        assert!(proxy.peers.iter().all(|p| p.name != "haproxy"));
        assert_eq!(proxy.notes.len(), 1);
        let filters = filters(&ctx(false, None), &mut ports)?;
        assert_eq!(filters.peers.len(), 2);
        assert!(filters.notes[0].contains("--plugin"));
        Ok(())
    }

    #[test]
    fn compare_adds_a_second_gateway_build_to_the_proxy_case() -> anyhow::Result<()> {
        let mut ctx = ctx(false, None);
        ctx.compare = Some(("sluice-pgo".into(), PathBuf::from("/opt/pgo/sluice")));
        let case = proxy(&ctx, &mut Ports::default())?;
        let pgo = case
            .peers
            .iter()
            .find(|p| p.name == "sluice-pgo")
            .context("no sluice-pgo peer")?;
        assert!(
            matches!(&pgo.kind, PeerKind::Sluice { bin: Some(b), .. } if b == Path::new("/opt/pgo/sluice"))
        );
        assert!(case
            .ratios
            .contains(&("sluice-pgo".into(), "sluice".into())));
        Ok(())
    }

    #[test]
    fn retain_peers_keeps_the_named_and_notes_the_rest() -> anyhow::Result<()> {
        let mut case = proxy(&ctx(true, None), &mut Ports::default())?;
        case.retain_peers(&["nginx".to_string(), "haproxy".to_string()]);
        let names: Vec<&str> = case.peers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["nginx", "haproxy"]);
        assert_eq!(
            case.notes,
            [
                "nginx+headers: not selected (--peers)",
                "nginx+headers-counter-id: not selected (--peers)",
                "haproxy+headers: not selected (--peers)",
                "sluice: not selected (--peers)"
            ]
        );
        Ok(())
    }

    #[test]
    fn select_knows_all_and_rejects_unknown() {
        assert_eq!(select("all").map(|v| v.len()).ok(), Some(CASES.len()));
        assert!(select("nope").is_err());
    }
}
