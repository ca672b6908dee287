//! `cargo xtask bench`: Sluice side by side with nginx and HAProxy, per docs/performance.md.
//!
//! Layout (shared/BENCHMARKS.md): the proxy under test alone on core 1; wrk and the upstream nginx
//! on core 0. Every peer of a case runs at once but only one is loaded at a time, in interleaved
//! rounds (A B C A B C …); each round is a warm-up then a measured wrk run, with the peer's CPU
//! time read from /proc before and after.

mod cases;
mod configs;
mod peers;
mod process;
mod procfs;
mod report;
mod rounds;
mod signal;
mod tls;
mod tools;
mod wrk;

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use cases::{Case, CaseCtx, PeerKind, Ports};
use peers::Bins;
use report::{CaseResult, RunInfo};
use rounds::Schedule;

/// The proxy under test runs here, alone.
const PEER_CORE: u32 = 1;
/// wrk and the upstream share this one.
const LOAD_CORE: u32 = 0;

/// Options of `cargo xtask bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Which case to run: `proxy`, `filters`, `tracing`, `access-log`, `tls-h1`, `tls-h2` or `all`.
    #[arg(long, default_value = "proxy")]
    case: String,
    /// Measured rounds per peer (the method asks for at least 3).
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Length of each measured run, in whole seconds (`5s`, `1m`).
    #[arg(long, default_value = "5s", value_parser = parse_seconds)]
    duration: u64,
    /// Unmeasured load before each measured run (`0s` for none).
    #[arg(long, default_value = "1s", value_parser = parse_seconds)]
    warmup: u64,
    /// Bytes of the upstream's response body: 6 (`hello\n`, the method's small response) unless
    /// a case should be seen at another size; at most 4000 (nginx serves it from its config).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=i64::from(configs::MAX_RESPONSE_BYTES)))]
    response_bytes: u32,
    /// wrk connections (keep-alive).
    #[arg(long, default_value_t = 64)]
    connections: u32,
    /// Where the markdown table and the raw JSON go (relative: to the workspace root).
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// Run only these peers (comma-separated names, e.g. `nginx,haproxy`); the others are noted.
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    peers: Option<Vec<String>>,
    /// Use the existing release binary (under `CARGO_TARGET_DIR` or target/) instead of building it.
    #[arg(long)]
    no_build: bool,
    /// Print the generated configs and exit.
    #[arg(long)]
    print_config: bool,
    /// The wasm plugin for the `filters` case (adds `x-bench: 1` from its config).
    #[arg(long, value_name = "PATH.wasm")]
    plugin: Option<PathBuf>,
    /// The plugin's proxy-wasm root id, if it needs one.
    #[arg(long)]
    plugin_root_id: Option<String>,
    /// The same work written against the raw ABI, no SDK (`target/plugins/raw_add_header.wasm`):
    /// a fourth `filters` peer, `sluice+rawwasm`, that splits the plugin's cost into the host's
    /// share and the SDK's.
    #[arg(long, value_name = "PATH.wasm")]
    raw_plugin: Option<PathBuf>,
    /// The same plugin built on the `proxy-wasm` crate (`target/plugins/pw_add_header.wasm`): a
    /// `filters` peer, `sluice+pwwasm`, that shows what that SDK's dispatch costs.
    #[arg(long, value_name = "PATH.wasm")]
    proxy_wasm_plugin: Option<PathBuf>,
    /// Also write each case's table into its marked section of docs/performance.md.
    #[arg(long)]
    write_docs: bool,
    /// Also run another build of the gateway in the `proxy` case, as peer NAME, with the same
    /// config (e.g. `sluice-pgo=target/pgo/sluice`); its ratios to nginx and to `sluice` are added.
    #[arg(long, value_name = "NAME=PATH", value_parser = parse_compare)]
    compare: Option<(String, PathBuf)>,
    /// Run this program as "sluice" (`PROGRAM run -c FILE`), e.g. a stand-in while developing.
    #[arg(long, hide = true)]
    sluice_bin: Option<PathBuf>,
    /// Keep the scratch directory (configs, logs) instead of deleting it.
    #[arg(long, hide = true)]
    keep_work: bool,
}

/// `5s`, `1m`, `7` → seconds.
fn parse_seconds(s: &str) -> Result<u64, String> {
    let (num, mult) = match s.strip_suffix('s') {
        Some(n) => (n, 1),
        None => match s.strip_suffix('m') {
            Some(n) => (n, 60),
            None => (s, 1),
        },
    };
    num.parse::<u64>()
        .map(|n| n * mult)
        .map_err(|_| format!("{s:?}: want whole seconds or minutes, like 5s or 1m"))
}

/// `NAME=PATH` → (NAME, PATH); NAME must not clash with a built-in peer.
fn parse_compare(s: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: want NAME=PATH, like sluice-pgo=target/pgo/sluice"))?;
    if name.is_empty() || path.is_empty() {
        return Err(format!(
            "{s:?}: want NAME=PATH, like sluice-pgo=target/pgo/sluice"
        ));
    }
    if ["nginx", "haproxy", "sluice"].contains(&name) {
        return Err(format!("{name:?} is a built-in peer: pick another name"));
    }
    Ok((name.to_string(), PathBuf::from(path)))
}

/// The workspace root (this crate lives in `ROOT/xtask`).
fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Runs the benchmark.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    signal::install();
    anyhow::ensure!(args.rounds >= 1, "--rounds must be at least 1");
    anyhow::ensure!(args.duration >= 1, "--duration must be at least 1s");
    anyhow::ensure!(args.connections >= 1, "--connections must be at least 1");
    if args.rounds < 3 || args.duration < 4 {
        eprintln!("bench: note: below the method's minimum (3 rounds of 4 s); fine for a smoke test, not for docs");
    }
    let root = workspace_root();
    let defs = cases::select(&args.case)?;
    if args.print_config {
        return print_configs(&args, &defs);
    }

    let tools = tools::check()?;
    let load_before = tools::load_average();
    if std::thread::available_parallelism().map_or(0, |n| n.get()) < 2 {
        eprintln!(
            "bench: warning: fewer than 2 cores available; pinning to cores 0 and 1 may fail"
        );
    }

    let work = WorkDir::create(args.keep_work)?;
    let mut ports = Ports::default();
    let upstream_addr = ports.next()?;
    let ctx = CaseCtx {
        upstream: upstream_addr,
        work: work.path.clone(),
        haproxy: tools.haproxy.is_some(),
        plugin: args.plugin.clone(),
        plugin_root_id: args.plugin_root_id.clone(),
        raw_plugin: args.raw_plugin.clone(),
        proxy_wasm_plugin: args.proxy_wasm_plugin.clone(),
        compare: args.compare.clone(),
    };
    let mut cases = defs
        .iter()
        .map(|d| (d.build)(&ctx, &mut ports))
        .collect::<anyhow::Result<Vec<Case>>>()?;
    if let Some(only) = &args.peers {
        for case in &mut cases {
            case.retain_peers(only);
        }
    }
    let needs_sluice = cases
        .iter()
        .flat_map(|c| &c.peers)
        .any(|p| matches!(p.kind, PeerKind::Sluice { .. }));
    let sluice = match &args.sluice_bin {
        Some(bin) => bin.clone(),
        None if args.no_build || !needs_sluice => tools::release_binary(&root),
        None => tools::build_sluice(&root)?,
    };
    anyhow::ensure!(
        !needs_sluice || sluice.exists() || args.sluice_bin.is_some(),
        "{} does not exist: drop --no-build to build it",
        sluice.display()
    );
    if let Some((name, bin)) = &args.compare {
        anyhow::ensure!(
            bin.exists(),
            "--compare {name}: {} does not exist",
            bin.display()
        );
    }
    ports.release();
    if cases.iter().any(|c| c.client != tls::Client::Wrk) {
        tls::make_cert(&work.path)?;
    }

    let upstream = peers::start_upstream(&tools, &work.path, upstream_addr, args.response_bytes)?;
    let load = wrk::Load {
        wrk: tools.wrk.clone(),
        connections: args.connections,
        threads: 1,
        core: LOAD_CORE,
        h2load: tools::find("h2load"),
    };
    let schedule = Schedule {
        rounds: args.rounds,
        warmup_s: args.warmup,
        duration_s: args.duration,
    };
    let bins = Bins {
        nginx: tools.nginx.clone(),
        haproxy: tools.haproxy.clone(),
        sluice,
    };
    let mut results = Vec::new();
    for case in &cases {
        results.push(rounds::run_case(case, &bins, &load, schedule)?);
    }
    drop(upstream);

    let (date, stamp) = report::now_utc();
    let mut versions = vec![
        tools::version(&tools.nginx, &["-v"]),
        tools::version(&tools.wrk, &["-v"]),
    ];
    if let Some(h) = &tools.haproxy {
        versions.push(tools::version(h, &["-v"]));
    }
    let info = RunInfo {
        command: std::iter::once("cargo xtask".to_string())
            .chain(std::env::args().skip(1))
            .collect::<Vec<_>>()
            .join(" "),
        date,
        revision: tools::git_revision(&root),
        machine: tools::machine(),
        load_before,
        load_after: tools::load_average(),
        versions,
        rounds: args.rounds,
        duration_s: args.duration,
        warmup_s: args.warmup,
        connections: args.connections,
        response_bytes: args.response_bytes,
    };
    write_results(&root, &args, &info, &results, &stamp)
}

/// Prints the markdown and writes it and the JSON under `--out` (and into the docs if asked).
fn write_results(
    root: &Path,
    args: &BenchArgs,
    info: &RunInfo,
    results: &[CaseResult],
    stamp: &str,
) -> anyhow::Result<()> {
    let markdown: String = results.iter().map(|c| c.markdown(info) + "\n").collect();
    println!("{markdown}");
    let out = root.join(&args.out);
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let md_path = out.join(format!("bench-{stamp}.md"));
    let json_path = out.join(format!("bench-{stamp}.json"));
    fs::write(&md_path, &markdown).with_context(|| format!("writing {}", md_path.display()))?;
    let json = serde_json::to_string_pretty(&report::run_json(info, results))?;
    fs::write(&json_path, json + "\n")
        .with_context(|| format!("writing {}", json_path.display()))?;
    eprintln!(
        "bench: wrote {} and {}",
        md_path.display(),
        json_path.display()
    );
    if args.write_docs {
        let doc = root.join("docs/performance.md");
        report::update_doc(&doc, info, results)?;
        eprintln!("bench: updated {}", doc.display());
    }
    Ok(())
}

/// `--print-config`: every generated config, with the ports a run would use now.
fn print_configs(args: &BenchArgs, defs: &[&cases::CaseDef]) -> anyhow::Result<()> {
    let work = std::env::temp_dir().join("sluice-bench-EXAMPLE");
    let mut ports = Ports::default();
    let upstream = ports.next()?;
    let ctx = CaseCtx {
        upstream,
        work: work.clone(),
        haproxy: tools::find("haproxy").is_some(),
        plugin: args.plugin.clone(),
        plugin_root_id: args.plugin_root_id.clone(),
        raw_plugin: args.raw_plugin.clone(),
        proxy_wasm_plugin: args.proxy_wasm_plugin.clone(),
        compare: args.compare.clone(),
    };
    let up_dir = work.join("upstream");
    println!(
        "# ==== upstream: {}/nginx.conf (core {LOAD_CORE})\n",
        up_dir.display()
    );
    println!(
        "{}",
        configs::upstream_nginx(&up_dir, upstream, args.response_bytes)
    );
    for def in defs {
        let mut case = (def.build)(&ctx, &mut ports)?;
        if let Some(only) = &args.peers {
            case.retain_peers(only);
        }
        for p in &case.peers {
            println!(
                "# ==== {}/{}: {}/{} (core {PEER_CORE})\n",
                case.name,
                p.name,
                p.dir.display(),
                p.config_file_name()
            );
            println!("{}", p.config);
        }
        for n in &case.notes {
            println!("# ==== {}: {n}\n", case.name);
        }
    }
    Ok(())
}

/// The scratch directory; deleted on drop unless kept.
struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl WorkDir {
    fn create(keep: bool) -> anyhow::Result<WorkDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path =
            std::env::temp_dir().join(format!("sluice-bench-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(WorkDir { path, keep })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("bench: kept {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_whole_seconds() {
        assert_eq!(parse_seconds("5s"), Ok(5));
        assert_eq!(parse_seconds("1m"), Ok(60));
        assert_eq!(parse_seconds("7"), Ok(7));
        assert!(parse_seconds("500ms").is_err());
        assert!(parse_seconds("fast").is_err());
    }
}
