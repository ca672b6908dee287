//! Foreign functions plugins may call with `proxy_call_foreign_function`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use sluice_wasm::{ForeignFunctions, Status};

use crate::services::Services;

/// The gateway's foreign functions: `sluice.ban_source`.
pub(crate) struct GatewayForeign {
    pub services: Arc<Services>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BanArgs {
    ip: String,
    #[serde(default)]
    ttl_seconds: Option<u64>,
}

/// Parse `sluice.ban_source` arguments: an IP string, or `{"ip": "...", "ttl_seconds": N}`.
pub(crate) fn parse_ban(args: &[u8]) -> Result<(IpAddr, Option<Duration>), Status> {
    let text = std::str::from_utf8(args)
        .map_err(|_| Status::BadArgument)?
        .trim();
    let (ip, ttl) = if text.starts_with('{') {
        let a: BanArgs = serde_json::from_str(text).map_err(|_| Status::ParseFailure)?;
        (a.ip, a.ttl_seconds.map(Duration::from_secs))
    } else {
        (text.to_string(), None)
    };
    let ip = ip.parse::<IpAddr>().map_err(|_| Status::BadArgument)?;
    Ok((ip, ttl))
}

impl ForeignFunctions for GatewayForeign {
    fn call(&self, plugin: &str, name: &str, args: &[u8]) -> Result<Vec<u8>, Status> {
        match name {
            "sluice.ban_source" => {
                let (ip, ttl) = parse_ban(args)?;
                let enforced = self.services.bans.ban(ip, ttl, &format!("plugin {plugin}"));
                // "1" when the kernel fast path enforces the ban, "0" when it is only logged.
                Ok(if enforced {
                    b"1".to_vec()
                } else {
                    b"0".to_vec()
                })
            }
            _ => Err(Status::NotFound),
        }
    }
}

/// Foreign functions of the throwaway VM that checks a plugin at load time: nothing happens.
pub(crate) struct CheckOnlyForeign;

impl ForeignFunctions for CheckOnlyForeign {
    fn call(&self, _plugin: &str, name: &str, args: &[u8]) -> Result<Vec<u8>, Status> {
        match name {
            "sluice.ban_source" => parse_ban(args).map(|_| b"0".to_vec()),
            _ => Err(Status::NotFound),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ban_arguments() {
        assert_eq!(
            parse_ban(b"192.0.2.7"),
            Ok(("192.0.2.7".parse().unwrap_or(IpAddr::from([0; 4])), None))
        );
        let (ip, ttl) = parse_ban(br#"{"ip": "2001:db8::1", "ttl_seconds": 30}"#)
            .unwrap_or((IpAddr::from([0; 4]), None));
        assert_eq!(ip.to_string(), "2001:db8::1");
        assert_eq!(ttl, Some(Duration::from_secs(30)));
        assert_eq!(parse_ban(b"not-an-ip"), Err(Status::BadArgument));
        assert_eq!(parse_ban(b"{\"ip\": 5}"), Err(Status::ParseFailure));
    }
}
