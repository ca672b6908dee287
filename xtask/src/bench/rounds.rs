//! The interleaved rounds of one case, and the measurement of one round.

use super::cases::{Case, Peer};
use super::peers::{self, Bins};
use super::process::Proc;
use super::report::{CaseResult, PeerResult, Round};
use super::tls::Client;
use super::{procfs, signal, wrk, PEER_CORE};

/// How many rounds, and how long each part of a round lasts (seconds).
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    pub rounds: u32,
    pub warmup_s: u64,
    pub duration_s: u64,
}

/// One measured round: warm-up, then CPU time and wrk figures around the measured run.
fn measure(
    peer: &Peer,
    client: Client,
    proc: &mut Proc,
    load: &wrk::Load,
    schedule: Schedule,
    round: u32,
) -> anyhow::Result<Round> {
    let log = peer.dir.join(format!("wrk-{round}.log"));
    if schedule.warmup_s > 0 {
        load.run(client, peer.listen, schedule.warmup_s, &log)?;
    }
    proc.check_running()?;
    let before = procfs::cpu_time(proc.pid());
    let started = std::time::Instant::now();
    let report = load.run(client, peer.listen, schedule.duration_s, &log)?;
    let wall_seconds = started.elapsed().as_secs_f64();
    let after = procfs::cpu_time(proc.pid());
    proc.check_running()?;
    anyhow::ensure!(
        report.requests > 0,
        "no request completed (see {})",
        log.display()
    );
    Ok(Round {
        wrk: report,
        cpu_seconds: after.total - before.total,
        sys_seconds: after.sys - before.sys,
        peak_rss_kib: procfs::peak_rss_kib(proc.pid()),
        wall_seconds,
    })
}

/// Starts the case's peers, runs the interleaved rounds, stops the peers.
pub fn run_case(
    case: &Case,
    bins: &Bins,
    load: &wrk::Load,
    schedule: Schedule,
) -> anyhow::Result<CaseResult> {
    let mut results: Vec<PeerResult> = case
        .peers
        .iter()
        .map(|p| PeerResult {
            name: p.name.clone(),
            rounds: Vec::new(),
            failure: None,
        })
        .collect();
    let mut procs: Vec<Option<Proc>> = Vec::new();
    for (peer, result) in case.peers.iter().zip(&mut results) {
        signal::check()?;
        match peers::start_peer(peer, bins) {
            Ok(p) => {
                eprintln!(
                    "bench: {}/{} ready on {} (core {PEER_CORE})",
                    case.name, peer.name, peer.listen
                );
                procs.push(Some(p));
            }
            Err(e) => {
                signal::check()?;
                eprintln!("bench: {}/{} did not start: {e:#}", case.name, peer.name);
                result.failure = Some(format!("did not start: {e:#}"));
                procs.push(None);
            }
        }
    }
    for round in 1..=schedule.rounds {
        for ((peer, result), slot) in case.peers.iter().zip(&mut results).zip(&mut procs) {
            let Some(proc) = slot else { continue };
            eprintln!(
                "bench: {} round {round}/{}: {}",
                case.name, schedule.rounds, peer.name
            );
            match measure(peer, case.client, proc, load, schedule, round) {
                Ok(r) => {
                    eprintln!(
                        "bench:   {:.0} req/s, p99 {:.0} µs, {:.2} µs CPU/request, {:.0} % of its core, {} errors",
                        r.wrk.requests_per_second,
                        r.wrk.p99_us,
                        r.cpu_us_per_request(),
                        r.core_use() * 100.0,
                        r.wrk.errors
                    );
                    result.rounds.push(r);
                }
                Err(e) => {
                    signal::check()?;
                    eprintln!("bench: {}/{} dropped out: {e:#}", case.name, peer.name);
                    result.failure = Some(format!("round {round}: {e:#}"));
                    *slot = None;
                }
            }
        }
    }
    drop(procs);
    Ok(CaseResult {
        name: case.name,
        title: case.title,
        peers: results,
        ratios: case.ratios.clone(),
        notes: case.notes.clone(),
    })
}
