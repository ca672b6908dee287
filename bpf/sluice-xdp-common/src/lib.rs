//! Map keys, values and constants shared by the Sluice XDP program and the gateway.
//!
//! Every address is stored as 16 bytes: IPv6 as is, IPv4 mapped into `::ffff:0:0/96`. One key
//! type then serves both families, and an IPv4 prefix `a.b.c.d/n` is the LPM prefix `96 + n`.
//! Everything here is `#[repr(C)]` with explicit padding so that both sides agree byte for byte.
#![no_std]
#![deny(missing_docs)]

/// An address in the 16-byte form used by every map (IPv4 mapped into `::ffff:0:0/96`).
pub type Addr = [u8; 16];

/// Prefix length added to an IPv4 prefix to address it inside the mapped range.
pub const V4_MAPPED_PREFIX: u32 = 96;

/// Maps whose names end in `_0`/`_1` are double buffered: the program reads the one selected by
/// [`DENY_ACTIVE`], userspace rewrites the other and then flips the index in one store. Exact
/// addresses are not duplicated: each [`EXACT`] entry carries its deny bits per buffer.
pub const DENY_ACTIVE: &str = "DENY_ACTIVE";
/// IPv4 deny prefixes up to /24 as a bitmap of every /24 (2^24 bits in [`V4_BITMAP_WORDS`] u64
/// words; /24 number `n` is bit `n % 64` of word `n / 64`), both buffers in one array: buffer
/// `i` is words `i * V4_BITMAP_WORDS ..` (see [`deny_v4_word`]). One map, not two, so that the
/// program's lookup has a single map at its call site and the verifier inlines it (a call site
/// that may see either of two maps stays a helper call).
pub const DENY_V4: &str = "DENY_V4";
/// IPv6 deny prefixes (LPM, key `lpm_trie::Key<Addr>`, value `u8`), buffer 0.
pub const DENY_LPM6_0: &str = "DENY_LPM6_0";
/// IPv6 deny prefixes, buffer 1.
pub const DENY_LPM6_1: &str = "DENY_LPM6_1";
/// Exact addresses: denied ones, the addresses of denied IPv4 /25-/31 prefixes (expanded, so
/// that an IPv4 packet never walks a trie) and banned ones, in one hash (key [`Addr`], value
/// [`Exact`]), so that a packet pays one lookup for all three.
pub const EXACT: &str = "EXACT";
/// One bit per value of [`exact_filter_bit`]: set for every key present in [`EXACT`] (userspace
/// sets it before inserting a key and clears it only after the last key with that bit is
/// deleted), so a clear bit proves a miss without the hash lookup (array of u64 words).
pub const EXACT_FILTER: &str = "EXACT_FILTER";
/// IPv4 allow prefixes up to /24 as a bitmap of every /24, laid out as one buffer of [`DENY_V4`].
pub const ALLOW_V4: &str = "ALLOW_V4";
/// IPv4 allow prefixes /25 to /32 (LPM, key `lpm_trie::Key<[u8; 4]>`, value `u8`).
pub const ALLOW_LPM4: &str = "ALLOW_LPM4";
/// IPv6 allow prefixes (LPM, key `lpm_trie::Key<Addr>`, value `u8`).
pub const ALLOW_LPM6: &str = "ALLOW_LPM6";
/// Per-source token buckets: an array of [`RateSet`]s indexed by [`rate_set`], two slots per
/// set, packets and TCP SYNs in one slot, so a SYN costs one array read and no helper call.
pub const RATE: &str = "RATE";
/// Settings read by the program (array of one [`Settings`]).
pub const SETTINGS: &str = "SETTINGS";
/// Redirect rules: an array of [`RedirectAction`] indexed by [`redirect_index`] (an array lookup
/// costs a few ns where a hash lookup costs tens).
pub const REDIRECT: &str = "REDIRECT";
/// Redirect targets (DEVMAP, index from [`RedirectAction::devmap_index`]).
pub const DEVMAP: &str = "DEVMAP";
/// Per-CPU counters, indexed by [`Reason`] (value [`Counter`]).
pub const COUNTERS: &str = "COUNTERS";

/// The name of the XDP program inside the object (used to find a stale attachment).
pub const PROGRAM_NAME: &str = "sluice_xdp";

/// Most exact addresses in one deny set, counting every address of a denied IPv4 /25-/31
/// prefix (userspace rejects a larger set).
pub const DENY_EXACT_MAX: u32 = 1 << 20;
/// Most bans held at once (userspace refuses a new ban beyond this; it never evicts).
pub const BANS_MAX: u32 = 1 << 20;
/// Capacity of [`EXACT`]: both deny buffers (disjoint in the worst case, during a switch) plus
/// every ban, so that neither kind can ever crowd out the other.
pub const EXACT_MAX: u32 = 2 * DENY_EXACT_MAX + BANS_MAX;
/// Words in each IPv4 /24 bitmap (2^24 bits = 2 MiB).
pub const V4_BITMAP_WORDS: u32 = 1 << 18;

/// The [`DENY_V4`] word of word `word` of deny buffer `index` (0 or 1).
#[inline(always)]
pub const fn deny_v4_word(index: u32, word: u32) -> u32 {
    (index << 18) | word
}
/// Capacity of each IPv6 prefix buffer.
pub const DENY_LPM_MAX: u32 = 1 << 18;
/// Capacity of each allow trie.
pub const ALLOW_LPM_MAX: u32 = 1 << 14;
/// log2 of the number of bits in [`EXACT_FILTER`] (2^26 bits = 8 MiB: about 3% of misses still
/// look the hash up with 2 million keys).
pub const EXACT_FILTER_BITS: u32 = 26;
/// Words in [`EXACT_FILTER`].
pub const EXACT_FILTER_WORDS: u32 = 1 << (EXACT_FILTER_BITS - 6);
/// log2 of the number of [`RateSet`]s.
pub const RATE_SET_BITS: u32 = 15;
/// Number of sources the rate limiters track at once (two slots in each of 2^15 sets).
pub const RATE_MAX: u32 = 2 << RATE_SET_BITS;
/// Entries in the redirect array: one per (TCP or UDP, destination port).
pub const REDIRECT_MAX: u32 = 2 << 16;

/// The [`REDIRECT`] slot of a protocol and destination port (port 0: the any-port rule); None
/// for protocols other than TCP and UDP.
pub const fn redirect_index(protocol: u8, dst_port: u16) -> Option<u32> {
    match protocol {
        6 => Some(dst_port as u32),
        17 => Some((1 << 16) | dst_port as u32),
        _ => None,
    }
}

/// An address as the program holds it: the 16 bytes of [`Addr`] read as two native-endian
/// words (same bytes in memory, 8-byte aligned, compared in two instructions).
pub type AddrWords = [u64; 2];

/// The words of an [`Addr`].
pub const fn addr_words(addr: &Addr) -> AddrWords {
    let mut hi = [0u8; 8];
    let mut lo = [0u8; 8];
    let mut i = 0;
    while i < 8 {
        hi[i] = addr[i];
        lo[i] = addr[8 + i];
        i += 1;
    }
    [u64::from_ne_bytes(hi), u64::from_ne_bytes(lo)]
}

/// The [`Addr`] of some words (inverse of [`addr_words`]).
pub const fn words_addr(words: &AddrWords) -> Addr {
    let hi = words[0].to_ne_bytes();
    let lo = words[1].to_ne_bytes();
    let mut addr = [0u8; 16];
    let mut i = 0;
    while i < 8 {
        addr[i] = hi[i];
        addr[8 + i] = lo[i];
        i += 1;
    }
    addr
}

/// The words of the IPv4-mapped form of an IPv4 address (its four octets in memory order,
/// as read by `u32::from_ne_bytes`).
#[inline(always)]
pub const fn v4_words(v4: u32) -> AddrWords {
    let o = v4.to_ne_bytes();
    [
        0,
        u64::from_ne_bytes([0, 0, 0xff, 0xff, o[0], o[1], o[2], o[3]]),
    ]
}

/// True when the words hold an IPv4-mapped address.
#[inline(always)]
pub const fn words_are_v4(words: &AddrWords) -> bool {
    let b = words[1].to_ne_bytes();
    words[0] == 0 && b[0] == 0 && b[1] == 0 && b[2] == 0xff && b[3] == 0xff
}

/// The IPv4 address inside mapped words (octets in memory order, as [`v4_words`] takes it).
#[inline(always)]
pub const fn words_v4(words: &AddrWords) -> u32 {
    let b = words[1].to_ne_bytes();
    u32::from_ne_bytes([b[4], b[5], b[6], b[7]])
}

/// The keyed hash of a source: multiply-add-shift hashing of the address's four 32-bit words
/// with the random 64-bit key in [`Settings::seed`] (Thorup's strongly universal family: for
/// any two distinct addresses chosen without knowing the key, the chance that the top `l` bits
/// agree is 2^-l). [`rate_set`] and [`exact_filter_bit`] take its top bits. Used by the program
/// and by userspace alike.
#[inline(always)]
pub const fn addr_hash(seed: &[u64; 5], src: &AddrWords) -> u64 {
    seed[0]
        .wrapping_mul(src[0] & 0xffff_ffff)
        .wrapping_add(seed[1].wrapping_mul(src[0] >> 32))
        .wrapping_add(seed[2].wrapping_mul(src[1] & 0xffff_ffff))
        .wrapping_add(seed[3].wrapping_mul(src[1] >> 32))
        .wrapping_add(seed[4])
}

/// The [`RATE`] set of a source with hash `h` ([`addr_hash`]).
#[inline(always)]
pub const fn rate_set(h: u64) -> u32 {
    (h >> (64 - RATE_SET_BITS)) as u32
}

/// The [`EXACT_FILTER`] bit of a source with hash `h` ([`addr_hash`]).
#[inline(always)]
pub const fn exact_filter_bit(h: u64) -> u32 {
    (h >> (64 - EXACT_FILTER_BITS)) as u32
}
/// Capacity of the redirect device map.
pub const DEVMAP_MAX: u32 = 64;

/// One token, in the fixed-point unit of [`Bucket::tokens`] (tokens are counted in nano-tokens so
/// that refill needs no division on the packet path).
pub const TOKEN: u64 = 1_000_000_000;

/// An [`EXACT`] entry: present while the address is denied by either deny buffer or banned.
/// Only userspace writes these (the program never deletes), so an update never races a delete.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exact {
    /// Ban expiry in `bpf_ktime_get_ns` nanoseconds (CLOCK_MONOTONIC); 0: not banned.
    pub ban_expiry_ns: u64,
    /// Bit `i` ([`EXACT_DENY`] `<< i`): denied as an address by deny buffer `i`; bit `2 + i`
    /// ([`EXACT_PREFIX`] `<< i`): inside an IPv4 /25-/31 prefix denied by buffer `i`.
    pub deny: u32,
    /// Always zero.
    pub pad: u32,
}

impl Exact {
    /// True when the entry no longer says anything (then it is deleted).
    pub const fn is_empty(&self) -> bool {
        self.ban_expiry_ns == 0 && self.deny == 0
    }
}

/// [`Exact::deny`] bit (shifted left by the buffer index): the address itself is denied.
pub const EXACT_DENY: u32 = 1;
/// [`Exact::deny`] bit (shifted left by the buffer index): the address lies in a denied IPv4
/// /25-/31 prefix (counted as `deny_prefix`, after `deny_exact` and `ban`).
pub const EXACT_PREFIX: u32 = 4;

/// A token bucket for one source.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    /// Tokens left, in units of 1/[`TOKEN`].
    pub tokens: u64,
    /// Clock reading (`bpf_ktime_get_ns`, or `bpf_ktime_get_coarse_ns` under
    /// [`FLAG_COARSE_CLOCK`]) of the last refill; 0 in a slot never used.
    pub last_ns: u64,
}

/// The packet and SYN buckets of one source, in a [`RateSet`] slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateSlot {
    /// The source ([`AddrWords`]); stored in full so that a colliding source is told apart.
    pub addr: AddrWords,
    /// Every packet.
    pub packets: Bucket,
    /// TCP SYNs without ACK.
    pub syns: Bucket,
}

impl RateSlot {
    /// When a bucket of this slot was last refilled (0: never used).
    #[inline(always)]
    pub const fn last_used(&self) -> u64 {
        if self.packets.last_ns > self.syns.last_ns {
            self.packets.last_ns
        } else {
            self.syns.last_ns
        }
    }
}

/// Two slots for the sources whose [`rate_set`] is this set's index (2-way set associative).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateSet {
    /// The slots; a new source replaces the one refilled least recently.
    pub slots: [RateSlot; 2],
}

/// Program settings; a rate of 0 disables that limiter.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// `FLAG_*` bits: which optional tables hold entries (lookups in empty tables are skipped).
    pub flags: u64,
    /// Packets per second per source.
    pub rate_pps: u64,
    /// Bucket size for packets, in [`TOKEN`] units.
    pub rate_burst: u64,
    /// TCP SYNs per second per source.
    pub syn_pps: u64,
    /// Bucket size for SYNs, in [`TOKEN`] units.
    pub syn_burst: u64,
    /// Key of [`rate_set`]: random per load, so that nobody can aim sources at one set.
    pub seed: [u64; 5],
}

/// [`Settings::flags`]: the IPv4 allow bitmap ([`ALLOW_V4`]) has bits set.
pub const FLAG_ALLOW_V4: u64 = 1;
/// [`Settings::flags`]: bans have been added.
pub const FLAG_BANS: u64 = 2;
/// [`Settings::flags`]: redirect rules exist.
pub const FLAG_REDIRECT: u64 = 4;
/// [`Settings::flags`]: the IPv4 allow trie ([`ALLOW_LPM4`]) holds entries.
pub const FLAG_ALLOW_LPM4: u64 = 8;
/// [`Settings::flags`]: the IPv6 allow trie ([`ALLOW_LPM6`]) holds entries.
pub const FLAG_ALLOW_LPM6: u64 = 16;
/// [`Settings::flags`]: the token buckets read `bpf_ktime_get_coarse_ns` (set by userspace
/// only when every limiter's burst is at least two ticks of refill; see docs/xdp.md).
pub const FLAG_COARSE_CLOCK: u64 = 32;
/// [`Settings::flags`]: a TCP any-port redirect rule exists (otherwise its slot is not read).
pub const FLAG_REDIRECT_ANY_TCP: u64 = 64;
/// [`Settings::flags`]: a UDP any-port redirect rule exists.
pub const FLAG_REDIRECT_ANY_UDP: u64 = 128;

/// The [`DENY_ACTIVE`] word: bit 0 is the buffer the program reads; the flag bits say which of
/// that buffer's tables hold entries, so that index and flags switch in one store.
pub const DENY_INDEX: u32 = 1;
/// [`DENY_ACTIVE`] word: the active IPv4 /24 bitmap has bits set.
pub const DENY_HAS_V4: u32 = 2;
/// [`DENY_ACTIVE`] word: the active deny set holds exact addresses (expanded prefixes
/// included).
pub const DENY_HAS_EXACT: u32 = 4;
/// [`DENY_ACTIVE`] word: the active IPv6 prefix trie holds entries.
pub const DENY_HAS_LPM6: u32 = 16;

/// Key of a redirect rule: IP protocol number and destination port (0: any port).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RedirectKey {
    /// IP protocol (6 TCP, 17 UDP).
    pub protocol: u8,
    /// Always zero.
    pub pad: u8,
    /// Destination port in host byte order; 0 matches any port.
    pub dst_port: u16,
}

/// What a redirect rule does.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RedirectAction {
    /// [`REDIRECT_DEVMAP`] or [`REDIRECT_TX`].
    pub kind: u32,
    /// Index in the [`DEVMAP`] when `kind` is [`REDIRECT_DEVMAP`].
    pub devmap_index: u32,
}

/// Redirect to another interface through the device map.
pub const REDIRECT_DEVMAP: u32 = 1;
/// Send the packet back out of the interface it came in on.
pub const REDIRECT_TX: u32 = 2;

/// Packets and bytes seen for one reason on one CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    /// Packets.
    pub packets: u64,
    /// Bytes (of the packet as seen by XDP).
    pub bytes: u64,
}

/// Why the program returned what it did; the index into [`COUNTERS`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Passed: no rule matched.
    PassDefault = 0,
    /// Passed: the source is on the allow list.
    PassAllow = 1,
    /// Passed: not IPv4/IPv6 (ARP, LLDP, ...).
    PassNotIp = 2,
    /// Passed: truncated or malformed headers; left to the kernel, which drops what it must.
    PassMalformed = 3,
    /// Dropped: source in a denied prefix.
    DropDenyPrefix = 4,
    /// Dropped: source is an exact denied address.
    DropDenyExact = 5,
    /// Dropped: source is banned (not yet expired).
    DropBan = 6,
    /// Dropped: source over its packet rate.
    DropRateLimit = 7,
    /// Dropped: source over its TCP SYN rate.
    DropSynRateLimit = 8,
    /// Redirected to another interface.
    Redirect = 9,
    /// Sent back out of the ingress interface (XDP_TX).
    Tx = 10,
    /// A redirect rule matched but the target was missing: passed instead.
    PassRedirectFailed = 11,
}

/// Number of [`Reason`]s (size of the counter array).
pub const REASON_COUNT: u32 = 12;

impl Reason {
    /// All reasons, in index order.
    pub const ALL: [Reason; REASON_COUNT as usize] = [
        Reason::PassDefault,
        Reason::PassAllow,
        Reason::PassNotIp,
        Reason::PassMalformed,
        Reason::DropDenyPrefix,
        Reason::DropDenyExact,
        Reason::DropBan,
        Reason::DropRateLimit,
        Reason::DropSynRateLimit,
        Reason::Redirect,
        Reason::Tx,
        Reason::PassRedirectFailed,
    ];

    /// The verdict label: `pass`, `drop`, `redirect` or `tx`.
    pub const fn verdict(self) -> &'static str {
        match self {
            Reason::PassDefault
            | Reason::PassAllow
            | Reason::PassNotIp
            | Reason::PassMalformed
            | Reason::PassRedirectFailed => "pass",
            Reason::DropDenyPrefix
            | Reason::DropDenyExact
            | Reason::DropBan
            | Reason::DropRateLimit
            | Reason::DropSynRateLimit => "drop",
            Reason::Redirect => "redirect",
            Reason::Tx => "tx",
        }
    }

    /// The reason label.
    pub const fn label(self) -> &'static str {
        match self {
            Reason::PassDefault => "default",
            Reason::PassAllow => "allow",
            Reason::PassNotIp => "not_ip",
            Reason::PassMalformed => "malformed",
            Reason::DropDenyPrefix => "deny_prefix",
            Reason::DropDenyExact => "deny_exact",
            Reason::DropBan => "ban",
            Reason::DropRateLimit => "rate_limit",
            Reason::DropSynRateLimit => "syn_rate_limit",
            Reason::Redirect => "redirect",
            Reason::Tx => "tx",
            Reason::PassRedirectFailed => "redirect_failed",
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: each type is #[repr(C)], Copy, made only of integers, with no implicit padding
    // (field sizes add up to the struct size), so any byte pattern is a valid value.
    unsafe impl aya::Pod for super::Bucket {}
    // SAFETY: as above (two u64 words and two buckets).
    unsafe impl aya::Pod for super::RateSlot {}
    // SAFETY: as above (two slots).
    unsafe impl aya::Pod for super::RateSet {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Settings {}
    // SAFETY: as above (u8 + u8 + u16).
    unsafe impl aya::Pod for super::RedirectKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RedirectAction {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Counter {}
    // SAFETY: as above (u64 + u32 + u32).
    unsafe impl aya::Pod for super::Exact {}
}

/// Map an IPv4 address (network byte order octets) into the 16-byte key form.
pub const fn v4_mapped(octets: [u8; 4]) -> Addr {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, octets[0], octets[1], octets[2], octets[3],
    ]
}
