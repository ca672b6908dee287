//! Header parsing that is safe for any packet: every read is preceded by a bounds check against
//! `data_end` that the verifier can follow, and every offset is bounded by construction.

use aya_ebpf::programs::XdpContext;
use sluice_xdp_common::{v4_words, words_are_v4, AddrWords};

/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_AUTH: u8 = 51;
const IPV6_DEST_OPTS: u8 = 60;

/// Extension headers walked before giving up on finding the L4 header.
pub const MAX_EXT_HEADERS: usize = 6;

/// What the parser found.
pub enum Parsed {
    /// Not IPv4 or IPv6.
    NotIp,
    /// The Ethernet or IP header is truncated or invalid.
    Malformed,
    /// An IP packet; L4 fields are valid only when `l4_ok`.
    Ip(Packet),
}

/// The fields the rules need.
pub struct Packet {
    /// Source address, IPv4 mapped into `::ffff:0:0/96`, as two words.
    pub src: AddrWords,
    /// The source is IPv4 (or an IPv4-mapped IPv6 address): only the IPv4 tables apply.
    pub v4: bool,
    /// IP protocol of the L4 header (after IPv6 extension headers).
    pub protocol: u8,
    /// False when the L4 header could not be located or read (truncated, unknown extension).
    pub l4_ok: bool,
    /// True for TCP/UDP with a readable header: `dst_port` is valid.
    pub has_ports: bool,
    /// Destination port, host byte order.
    pub dst_port: u16,
    /// TCP SYN without ACK.
    pub syn: bool,
}

/// A pointer to `N` readable bytes at `off`, or None when the packet is shorter.
#[inline(always)]
fn bytes_at<const N: usize>(ctx: &XdpContext, off: usize) -> Option<*const [u8; N]> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + N > end {
        return None;
    }
    Some((start + off) as *const [u8; N])
}

#[inline(always)]
fn read<const N: usize>(ctx: &XdpContext, off: usize) -> Option<[u8; N]> {
    let p = bytes_at::<N>(ctx, off)?;
    // SAFETY: bytes_at checked that N bytes at p lie inside the packet; [u8; N] has alignment 1.
    Some(unsafe { *p })
}

#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Parsed {
    let Some(eth) = read::<ETH_HLEN>(ctx, 0) else {
        return Parsed::Malformed;
    };
    let mut ethertype = u16::from_be_bytes([eth[12], eth[13]]);
    let mut l3 = ETH_HLEN;
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        let Some(tag) = read::<4>(ctx, ETH_HLEN) else {
            return Parsed::Malformed;
        };
        ethertype = u16::from_be_bytes([tag[2], tag[3]]);
        l3 = ETH_HLEN + 4;
    }
    match ethertype {
        ETH_P_IP => parse_v4(ctx, l3),
        ETH_P_IPV6 => parse_v6(ctx, l3),
        _ => Parsed::NotIp,
    }
}

#[inline(always)]
fn parse_v4(ctx: &XdpContext, l3: usize) -> Parsed {
    let Some(ip) = read::<20>(ctx, l3) else {
        return Parsed::Malformed;
    };
    let ihl = ((ip[0] & 0x0f) as usize) * 4;
    if ip[0] >> 4 != 4 || ihl < 20 {
        return Parsed::Malformed;
    }
    let v4 = u32::from_ne_bytes([ip[12], ip[13], ip[14], ip[15]]);
    let src = v4_words(v4);
    let frag_offset = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff;
    let mut pkt = Packet {
        src,
        v4: true,
        protocol: ip[9],
        l4_ok: false,
        has_ports: false,
        dst_port: 0,
        syn: false,
    };
    if frag_offset == 0 {
        // `ihl` is at most 60, so the offset stays bounded for the verifier.
        read_l4(ctx, l3 + ihl, &mut pkt);
    } else {
        // A non-first fragment carries no L4 header: address rules only.
        pkt.l4_ok = true;
    }
    Parsed::Ip(pkt)
}

#[inline(always)]
fn parse_v6(ctx: &XdpContext, l3: usize) -> Parsed {
    let Some(ip) = read::<40>(ctx, l3) else {
        return Parsed::Malformed;
    };
    if ip[0] >> 4 != 6 {
        return Parsed::Malformed;
    }
    let word = |at: usize| {
        u64::from_ne_bytes([
            ip[at],
            ip[at + 1],
            ip[at + 2],
            ip[at + 3],
            ip[at + 4],
            ip[at + 5],
            ip[at + 6],
            ip[at + 7],
        ])
    };
    let src = [word(8), word(16)];
    let mut pkt = Packet {
        src,
        v4: words_are_v4(&src),
        protocol: ip[6],
        l4_ok: false,
        has_ports: false,
        dst_port: 0,
        syn: false,
    };
    let mut off = l3 + 40;
    let mut next = ip[6];
    for _ in 0..MAX_EXT_HEADERS {
        let len = match next {
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS => {
                let Some(h) = read::<2>(ctx, off) else {
                    return Parsed::Ip(pkt);
                };
                next = h[0];
                (h[1] as usize + 1) * 8
            }
            IPV6_AUTH => {
                let Some(h) = read::<2>(ctx, off) else {
                    return Parsed::Ip(pkt);
                };
                next = h[0];
                (h[1] as usize + 2) * 4
            }
            IPV6_FRAGMENT => {
                let Some(h) = read::<8>(ctx, off) else {
                    return Parsed::Ip(pkt);
                };
                if u16::from_be_bytes([h[2], h[3]]) >> 3 != 0 {
                    // A non-first fragment carries no L4 header: address rules only.
                    pkt.protocol = h[0];
                    pkt.l4_ok = true;
                    return Parsed::Ip(pkt);
                }
                next = h[0];
                8
            }
            _ => break,
        };
        // Each step adds at most 2048 bytes, so `off` stays bounded across the loop.
        off += len;
    }
    pkt.protocol = next;
    if !matches!(
        next,
        IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS | IPV6_AUTH | IPV6_FRAGMENT
    ) {
        read_l4(ctx, off, &mut pkt);
    }
    Parsed::Ip(pkt)
}

#[inline(always)]
fn read_l4(ctx: &XdpContext, off: usize, pkt: &mut Packet) {
    match pkt.protocol {
        IPPROTO_TCP => {
            let Some(tcp) = read::<20>(ctx, off) else {
                return;
            };
            pkt.dst_port = u16::from_be_bytes([tcp[2], tcp[3]]);
            pkt.syn = tcp[13] & 0x12 == 0x02;
            pkt.has_ports = true;
        }
        IPPROTO_UDP => {
            let Some(udp) = read::<8>(ctx, off) else {
                return;
            };
            pkt.dst_port = u16::from_be_bytes([udp[2], udp[3]]);
            pkt.has_ports = true;
        }
        _ => {}
    }
    pkt.l4_ok = true;
}
