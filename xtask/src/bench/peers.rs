//! Starting the upstream and the peers: config written, process pinned, readiness proven by a
//! real request through to the upstream.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::cases::{Peer, PeerKind};
use super::process::{self, Proc};
use super::{configs, tools, LOAD_CORE, PEER_CORE};

/// Programs that run the peers.
pub struct Bins {
    pub nginx: PathBuf,
    pub haproxy: Option<PathBuf>,
    pub sluice: PathBuf,
}

/// Starts the upstream nginx on core 0 and waits until it answers.
pub fn start_upstream(
    tools: &tools::Tools,
    work: &Path,
    addr: SocketAddr,
    body_bytes: u32,
) -> anyhow::Result<Proc> {
    let dir = work.join("upstream");
    fs::create_dir_all(&dir)?;
    let conf = dir.join("nginx.conf");
    fs::write(&conf, configs::upstream_nginx(&dir, addr, body_bytes))?;
    let args = nginx_args(&dir, &conf);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut p = Proc::spawn_pinned(
        "upstream nginx",
        LOAD_CORE,
        &tools.nginx,
        &args,
        &dir.join("output.log"),
    )?;
    p.wait_ready(|| expect_ok(addr, None))?;
    eprintln!("bench: upstream nginx on {addr} (core {LOAD_CORE})");
    Ok(p)
}

fn nginx_args(dir: &Path, conf: &Path) -> Vec<String> {
    vec![
        "-p".into(),
        format!("{}/", dir.display()),
        "-c".into(),
        conf.display().to_string(),
        "-g".into(),
        "daemon off;".into(),
    ]
}

/// `GET /` must answer 200 (with `header`, if given).
fn expect_ok(addr: SocketAddr, header: Option<&str>) -> anyhow::Result<()> {
    let head = process::http_get(addr, "/")?;
    anyhow::ensure!(
        head.status == 200,
        "GET http://{addr}/ answered {} {:?}",
        head.status,
        head.body_start
    );
    if let Some(h) = header {
        anyhow::ensure!(
            head.has(h),
            "GET http://{addr}/ answered without the {h} header"
        );
    }
    Ok(())
}

/// `GET https://ADDR/` (certificate not checked: it is the bench's own) must answer 200.
fn expect_ok_tls(addr: SocketAddr) -> anyhow::Result<()> {
    let out = std::process::Command::new("curl")
        .args([
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
        ])
        .arg(format!("https://{addr}/"))
        .output()
        .context("running curl (apt-get install -y curl)")?;
    let code = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(code == "200", "GET https://{addr}/ answered {code:?}");
    Ok(())
}

fn is_refused(e: &anyhow::Error) -> bool {
    e.root_cause()
        .downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
}

/// Writes the peer's config, starts it pinned, and waits until it proxies correctly.
pub fn start_peer(peer: &Peer, bins: &Bins) -> anyhow::Result<Proc> {
    fs::create_dir_all(&peer.dir).with_context(|| format!("creating {}", peer.dir.display()))?;
    let conf = peer.dir.join(peer.config_file_name());
    fs::write(&conf, &peer.config).with_context(|| format!("writing {}", conf.display()))?;
    let conf_s = conf.display().to_string();
    let (program, args): (&Path, Vec<String>) = match &peer.kind {
        PeerKind::Nginx => (&bins.nginx, nginx_args(&peer.dir, &conf)),
        PeerKind::Haproxy => {
            let h = bins
                .haproxy
                .as_deref()
                .context("haproxy is not installed")?;
            (h, vec!["-db".into(), "-f".into(), conf_s])
        }
        PeerKind::Sluice { bin, .. } => (
            bin.as_deref().unwrap_or(&bins.sluice),
            vec!["run".into(), "-c".into(), conf_s],
        ),
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut p = Proc::spawn_pinned(
        &peer.name,
        PEER_CORE,
        program,
        &args,
        &peer.dir.join("output.log"),
    )?;
    let admin = match peer.kind {
        PeerKind::Sluice { admin, .. } => Some(admin),
        _ => None,
    };
    p.wait_ready(|| {
        if let Some(admin) = admin {
            match process::http_get(admin, "/ready") {
                Ok(head) => anyhow::ensure!(
                    head.status == 200,
                    "GET http://{admin}/ready answered {}",
                    head.status
                ),
                // A build without the admin server: readiness rests on the proxied GET / below,
                // which must answer 200 from the upstream anyway.
                Err(e) if is_refused(&e) => {}
                Err(e) => return Err(e),
            }
        }
        if peer.tls {
            return expect_ok_tls(peer.listen);
        }
        expect_ok(peer.listen, peer.expect_header)
    })?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::super::cases::{self, CaseCtx, Ports};
    use super::super::{procfs, WorkDir};
    use super::*;

    /// The nginx and HAProxy templates really proxy, started exactly as a run starts them.
    #[test]
    fn reference_peers_proxy_through_a_real_upstream() -> anyhow::Result<()> {
        let Ok(tools) = tools::check() else {
            eprintln!(
                "skipped: nginx or wrk not installed ({})",
                tools::INSTALL_HINT
            );
            return Ok(());
        };
        let work = WorkDir::create(false)?;
        let mut ports = Ports::default();
        let upstream_addr = ports.next()?;
        let ctx = CaseCtx {
            upstream: upstream_addr,
            work: work.path.clone(),
            haproxy: tools.haproxy.is_some(),
            plugin: None,
            plugin_root_id: None,
            raw_plugin: None,
            proxy_wasm_plugin: None,
            compare: None,
        };
        let case = cases::select("proxy")?[0];
        let case = (case.build)(&ctx, &mut ports)?;
        ports.release();
        let _upstream = start_upstream(&tools, &work.path, upstream_addr, 6)?;
        let bins = Bins {
            nginx: tools.nginx.clone(),
            haproxy: tools.haproxy.clone(),
            sluice: PathBuf::from("unused"),
        };
        let mut started = 0;
        for peer in case
            .peers
            .iter()
            .filter(|p| !matches!(p.kind, PeerKind::Sluice { .. }))
        {
            // start_peer waits until GET / through the peer answers 200.
            let mut p = start_peer(peer, &bins)?;
            if matches!(peer.kind, PeerKind::Nginx) {
                // The worker must be counted, not just the idle master.
                let tree = procfs::tree(p.pid());
                assert_eq!(tree.len(), 2, "nginx master + 1 worker, got {tree:?}");
            }
            assert!(procfs::peak_rss_kib(p.pid()) > 0, "{}", peer.name);
            p.check_running()?;
            started += 1;
        }
        // nginx, nginx+headers and nginx+headers-counter-id; haproxy and haproxy+headers when
        // installed.
        assert_eq!(started, 3 + 2 * usize::from(tools.haproxy.is_some()));
        Ok(())
    }

    #[test]
    fn a_closed_admin_port_reads_as_refused() -> anyhow::Result<()> {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        // The listener is dropped: nothing listens there now.
        let err = process::http_get(addr, "/ready").err();
        assert!(err.as_ref().is_some_and(is_refused), "{err:?}");
        assert!(!is_refused(&anyhow::anyhow!("GET / answered 503")));
        Ok(())
    }
}
