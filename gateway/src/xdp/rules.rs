//! Address rules as the program stores them: CIDRs from config and deny files, parsed into
//! 16-byte keys (IPv4 mapped into `::ffff:0:0/96`). Pure data; no kernel involved.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use sluice_xdp_common::{v4_mapped, Addr, V4_MAPPED_PREFIX};

/// A rule that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// A CIDR or address that does not parse.
    #[error(
        "{place}: `{text}` is not an address or CIDR; write e.g. `192.0.2.0/24` or `2001:db8::1`"
    )]
    BadCidr {
        /// Where it was written (config key or file:line).
        place: String,
        /// What was written.
        text: String,
    },
    /// A deny file that cannot be read.
    #[error("cannot read deny file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The key form of an address.
pub fn addr_key(addr: IpAddr) -> Addr {
    match addr {
        IpAddr::V4(v4) => v4_mapped(v4.octets()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4_mapped(v4.octets()),
            None => v6.octets(),
        },
    }
}

/// The address a key stands for (IPv4 for mapped keys).
pub fn key_addr(key: &Addr) -> IpAddr {
    let v6 = std::net::Ipv6Addr::from(*key);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// A prefix in key form: the LPM prefix length counts the mapped /96 for IPv4.
pub fn net_key(net: IpNet) -> (Addr, u32) {
    let net = net.trunc();
    match net {
        IpNet::V4(n) => (
            v4_mapped(n.addr().octets()),
            V4_MAPPED_PREFIX + u32::from(n.prefix_len()),
        ),
        IpNet::V6(n) => (n.addr().octets(), u32::from(n.prefix_len())),
    }
}

/// Parse `text` as a CIDR or a bare address (a host prefix).
pub fn parse_net(text: &str, place: &str) -> Result<IpNet, RuleError> {
    let t = text.trim();
    if let Ok(net) = t.parse::<IpNet>() {
        return Ok(net);
    }
    t.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| RuleError::BadCidr {
            place: place.to_string(),
            text: t.to_string(),
        })
}

/// A whole deny set: host entries go to the exact hash (scales to millions), the rest to the
/// LPM trie.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DenySet {
    /// Prefixes shorter than a host, in key form.
    pub prefixes: BTreeSet<(Addr, u32)>,
    /// Single addresses, in key form.
    pub exact: BTreeSet<Addr>,
}

impl DenySet {
    /// Add one network.
    pub fn insert(&mut self, net: IpNet) {
        let (key, len) = net_key(net);
        if len == 128 {
            self.exact.insert(key);
        } else {
            self.prefixes.insert((key, len));
        }
    }

    /// Add CIDRs written in the config under `place`.
    ///
    /// # Errors
    /// The first entry that does not parse.
    pub fn extend_from_config(&mut self, cidrs: &[String], place: &str) -> Result<(), RuleError> {
        for (i, c) in cidrs.iter().enumerate() {
            self.insert(parse_net(c, &format!("{place}[{i}]"))?);
        }
        Ok(())
    }

    /// Add every line of a deny file: one CIDR or address per line, `#` starts a comment.
    ///
    /// # Errors
    /// The file cannot be read, or a line does not parse (reported with its line number).
    pub fn extend_from_file(&mut self, path: &Path) -> Result<(), RuleError> {
        let text = std::fs::read_to_string(path).map_err(|source| RuleError::File {
            path: path.to_path_buf(),
            source,
        })?;
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            self.insert(parse_net(line, &format!("{}:{}", path.display(), n + 1))?);
        }
        Ok(())
    }

    /// Entries in total.
    pub fn len(&self) -> usize {
        self.prefixes.len() + self.exact.len()
    }

    /// True when nothing is denied.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_prefixes_live_in_the_mapped_range() {
        let (key, len) = net_key("192.0.2.77/24".parse().unwrap());
        assert_eq!(len, 120);
        assert_eq!(&key[10..], &[0xff, 0xff, 192, 0, 2, 0]);
        assert_eq!(key_addr(&key), "192.0.2.0".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn hosts_go_to_the_exact_set_and_files_report_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deny.txt");
        std::fs::write(
            &path,
            "# comment\n198.18.0.1\n2001:db8::/32 # docs\n\n10.0.0.0/8\n",
        )
        .unwrap();
        let mut set = DenySet::default();
        set.extend_from_file(&path).unwrap();
        assert_eq!(set.exact.len(), 1);
        assert_eq!(set.prefixes.len(), 2);
        std::fs::write(&path, "198.18.0.1\nnot-an-ip\n").unwrap();
        let err = DenySet::default().extend_from_file(&path).unwrap_err();
        assert!(err.to_string().contains("deny.txt:2"), "{err}");
    }

    #[test]
    fn mapped_v6_addresses_are_keyed_as_v4() {
        let a: IpAddr = "::ffff:198.18.0.9".parse().unwrap();
        let b: IpAddr = "198.18.0.9".parse().unwrap();
        assert_eq!(addr_key(a), addr_key(b));
    }
}
