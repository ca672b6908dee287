//! `sluice xdp bans [list | add IP [--ttl 10m] | remove IP] --admin 127.0.0.1:9901`: a thin
//! client of the admin API's `/xdp/bans` (plain HTTP/1.1, one request per connection).

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::config::units::Dur;

/// Arguments of `sluice xdp bans`.
#[derive(Debug, clap::Args)]
pub struct BansArgs {
    /// What to do (default: list).
    #[command(subcommand)]
    pub command: Option<BansCommand>,
    /// Address of the gateway's admin API.
    #[arg(long, default_value = crate::config::model::DEFAULT_ADMIN_ADDRESS, global = true)]
    pub admin: String,
}

/// `sluice xdp bans` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum BansCommand {
    /// List active bans.
    List,
    /// Ban an address.
    Add {
        /// The source address to drop.
        ip: IpAddr,
        /// How long (e.g. `90s`, `10m`); default: the gateway's xdp.ban_default_ttl.
        #[arg(long)]
        ttl: Option<Dur>,
    },
    /// Lift a ban.
    Remove {
        /// The banned address.
        ip: IpAddr,
    },
}

/// Run `sluice xdp bans ...`, printing the result.
///
/// # Errors
/// The admin API is unreachable or answered with an error.
pub fn cli_bans(args: BansArgs) -> anyhow::Result<()> {
    let (method, path, body) = match &args.command {
        None | Some(BansCommand::List) => ("GET", "/xdp/bans".to_string(), String::new()),
        Some(BansCommand::Add { ip, ttl }) => {
            let mut v = serde_json::json!({ "addr": ip });
            if let Some(ttl) = ttl {
                v["ttl"] = serde_json::Value::String(format!("{}ms", ttl.get().as_millis()));
            }
            ("POST", "/xdp/bans".to_string(), v.to_string())
        }
        Some(BansCommand::Remove { ip }) => {
            ("DELETE", format!("/xdp/bans?addr={ip}"), String::new())
        }
    };
    let (status, text) = request(&args.admin, method, &path, &body)?;
    if !(200..300).contains(&status) {
        bail!("admin API answered {status}: {}", text.trim());
    }
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("unexpected answer: {text}"))?;
    match value.get("bans").and_then(|b| b.as_array()) {
        Some(bans) if bans.is_empty() => println!("no active bans"),
        Some(bans) => {
            for b in bans {
                println!(
                    "{}\texpires in {}s",
                    b["addr"].as_str().unwrap_or("?"),
                    b["expires_in_secs"]
                );
            }
        }
        None => println!("{value}"),
    }
    Ok(())
}

fn request(admin: &str, method: &str, path: &str, body: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(admin)
        .with_context(|| format!("cannot reach the admin API at {admin}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP answer from the admin API")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("malformed HTTP status line from the admin API")?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    Ok((
        status,
        if chunked {
            dechunk(body)
        } else {
            body.to_string()
        },
    ))
}

/// Decode a chunked body (the admin server may stream its answer).
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        let (Some(chunk), Some(after)) = (rest.get(..n), rest.get(n..)) else {
            break;
        };
        if n == 0 {
            break;
        }
        out.push_str(chunk);
        body = after.trim_start_matches("\r\n");
    }
    out
}
