//! Addressing: subnets with the cloud's reserved addresses, and MAC addresses.
//!
//! A [`Subnet`] follows the public cloud's rules for a virtual network's subnet:
//! the network address, `.1` (the default gateway, which vmnode puts on the
//! bridge), `.2` and `.3` (reserved for the platform's DNS in the cloud) and
//! the broadcast address are never handed out, so the first address a NIC can
//! get is `.4`. Like the cloud, subnets are between `/2` and `/29` long; a `/29`
//! leaves three usable addresses.
//!
//! A [`Mac`] is a 48-bit Ethernet address. The cloud gives NICs addresses under
//! Microsoft's `00-0D-3A` prefix and shows them upper case with dashes
//! ([`Mac::to_azure`]); Linux tools want lower case with colons
//! ([`Mac::to_colon`], also the [`Display`](std::fmt::Display) form).

use std::collections::HashSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use ipnetwork::Ipv4Network;
use rand::Rng;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Shortest prefix the cloud accepts for a subnet.
pub const MIN_PREFIX: u8 = 2;
/// Longest prefix the cloud accepts for a subnet (8 addresses, 3 usable).
pub const MAX_PREFIX: u8 = 29;
/// Offset of the first address handed to a NIC (`.4`).
pub const FIRST_ALLOCATABLE_OFFSET: u32 = 4;

/// Errors of this module.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddrError {
    /// The prefix is outside [`MIN_PREFIX`]..=[`MAX_PREFIX`].
    #[error("subnet prefix /{0} is outside /{MIN_PREFIX}../{MAX_PREFIX}")]
    PrefixOutOfRange(u8),
    /// Not a valid `a.b.c.d/len` string.
    #[error("invalid subnet {0:?}")]
    InvalidSubnet(String),
    /// Not a valid MAC address string.
    #[error("invalid MAC address {0:?}")]
    InvalidMac(String),
}

/// An IPv4 subnet of a virtual network, with host bits cleared.
///
/// `ipnetwork` keeps host bits (`10.1.0.7/24` stays `10.1.0.7/24`); a `Subnet`
/// always holds the network address (`10.1.0.0/24`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Subnet(Ipv4Network);

impl Subnet {
    /// The subnet containing `addr` with the given prefix length.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self, AddrError> {
        if !(MIN_PREFIX..=MAX_PREFIX).contains(&prefix) {
            return Err(AddrError::PrefixOutOfRange(prefix));
        }
        let mask = prefix_mask(prefix);
        let net = Ipv4Network::new(Ipv4Addr::from(u32::from(addr) & mask), prefix)
            .map_err(|_| AddrError::PrefixOutOfRange(prefix))?;
        Ok(Self(net))
    }

    /// Normalises an `ipnetwork` value (clears its host bits).
    pub fn from_network(net: Ipv4Network) -> Result<Self, AddrError> {
        Self::new(net.ip(), net.prefix())
    }

    /// The normalised network as an `ipnetwork` value.
    pub fn network(&self) -> Ipv4Network {
        self.0
    }

    /// The network address (`.0` of a `/24`).
    pub fn network_addr(&self) -> Ipv4Addr {
        self.0.network()
    }

    /// Prefix length.
    pub fn prefix(&self) -> u8 {
        self.0.prefix()
    }

    /// The netmask, e.g. `255.255.255.0`.
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(prefix_mask(self.prefix()))
    }

    /// The broadcast (last) address.
    pub fn broadcast(&self) -> Ipv4Addr {
        self.0.broadcast()
    }

    /// The default gateway, `.1`; vmnode assigns it to the bridge.
    pub fn gateway(&self) -> Ipv4Addr {
        self.offset(1)
    }

    /// The gateway with this subnet's prefix, e.g. `10.1.0.1/24`, as put on a bridge.
    pub fn gateway_cidr(&self) -> Ipv4Network {
        // Cannot fail: the prefix was validated when `self` was built.
        Ipv4Network::new(self.gateway(), self.prefix()).unwrap_or(self.0)
    }

    /// Whether `ip` is inside the subnet at all (reserved addresses included).
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.0.contains(ip)
    }

    /// Whether `ip` may be given to a NIC: inside the subnet and not reserved.
    pub fn contains_allocatable(&self, ip: Ipv4Addr) -> bool {
        self.contains(ip)
            && u32::from(ip) - u32::from(self.network_addr()) >= FIRST_ALLOCATABLE_OFFSET
            && ip != self.broadcast()
    }

    /// Number of addresses a NIC may get.
    pub fn allocatable_count(&self) -> u32 {
        // size = 2^(32-prefix) >= 8 since prefix <= 29; minus 4 at the start and 1 at the end.
        let size = 1u64 << (32 - u32::from(self.prefix()));
        u32::try_from(size - u64::from(FIRST_ALLOCATABLE_OFFSET) - 1).unwrap_or(u32::MAX)
    }

    /// The lowest allocatable address not in `used`, or `None` when the subnet is full.
    ///
    /// Addresses in `used` outside the subnet or reserved are ignored.
    pub fn allocate(&self, used: &HashSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        let first = u32::from(self.network_addr()) + FIRST_ALLOCATABLE_OFFSET;
        let last = u32::from(self.broadcast()) - 1;
        (first..=last)
            .map(Ipv4Addr::from)
            .find(|ip| !used.contains(ip))
    }

    fn offset(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network_addr()) + n)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network_addr(), self.prefix())
    }
}

impl FromStr for Subnet {
    type Err = AddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let net: Ipv4Network = s
            .parse()
            .map_err(|_| AddrError::InvalidSubnet(s.to_string()))?;
        // ipnetwork accepts a bare address as a /32; a subnet needs an explicit prefix.
        if !s.contains('/') {
            return Err(AddrError::InvalidSubnet(s.to_string()));
        }
        Self::from_network(net)
    }
}

impl Serialize for Subnet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Subnet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The netmask of a prefix length as a host-order integer (`0` for `/0`).
pub fn prefix_mask(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p if p >= 32 => u32::MAX,
        p => u32::MAX << (32 - u32::from(p)),
    }
}

/// A 48-bit Ethernet (MAC) address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac([u8; 6]);

impl Mac {
    /// Microsoft's OUI, under which the cloud gives out NIC MAC addresses.
    pub const AZURE_OUI: [u8; 3] = [0x00, 0x0D, 0x3A];

    /// A MAC from its six octets.
    pub const fn new(octets: [u8; 6]) -> Self {
        Self(octets)
    }

    /// The six octets.
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// A random address under [`Mac::AZURE_OUI`].
    pub fn random_azure() -> Self {
        Self::random_azure_with(&mut rand::thread_rng())
    }

    /// A random address under [`Mac::AZURE_OUI`] drawn from `rng`.
    pub fn random_azure_with<R: Rng + ?Sized>(rng: &mut R) -> Self {
        let tail: [u8; 3] = rng.gen();
        Self::with_azure_tail(tail)
    }

    /// A stable address under [`Mac::AZURE_OUI`] derived from `key` (for
    /// example a NIC id): the same key always gives the same MAC, on any
    /// machine and any build.
    pub fn azure_for_key(key: &str) -> Self {
        let h = stable_hash(key.as_bytes()).to_be_bytes();
        Self::with_azure_tail([h[0], h[1], h[2]])
    }

    fn with_azure_tail(tail: [u8; 3]) -> Self {
        let [a, b, c] = Self::AZURE_OUI;
        Self([a, b, c, tail[0], tail[1], tail[2]])
    }

    /// Whether the address is under [`Mac::AZURE_OUI`].
    pub fn is_azure(&self) -> bool {
        self.0[..3] == Self::AZURE_OUI
    }

    /// Whether this is a unicast address (group bit clear).
    pub fn is_unicast(&self) -> bool {
        self.0[0] & 0x01 == 0
    }

    /// Lower case with colons, as Linux tools use: `00:0d:3a:12:34:56`.
    pub fn to_colon(&self) -> String {
        self.join(':', false)
    }

    /// Upper case with dashes, as the cloud shows it: `00-0D-3A-12-34-56`.
    pub fn to_azure(&self) -> String {
        self.join('-', true)
    }

    fn join(&self, sep: char, upper: bool) -> String {
        let mut out = String::with_capacity(17);
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(sep);
            }
            if upper {
                out.push_str(&format!("{b:02X}"));
            } else {
                out.push_str(&format!("{b:02x}"));
            }
        }
        out
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_colon())
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mac({})", self.to_colon())
    }
}

impl From<[u8; 6]> for Mac {
    fn from(octets: [u8; 6]) -> Self {
        Self(octets)
    }
}

impl FromStr for Mac {
    type Err = AddrError;

    /// Accepts `00:0d:3a:12:34:56`, `00-0D-3A-12-34-56` (any case) and `000D3A123456`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || AddrError::InvalidMac(s.to_string());
        let parts: Vec<&str> = if s.contains(':') {
            s.split(':').collect()
        } else if s.contains('-') {
            s.split('-').collect()
        } else if s.len() == 12 && s.is_ascii() {
            (0..6).map(|i| &s[2 * i..2 * i + 2]).collect()
        } else {
            return Err(bad());
        };
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut octets = [0u8; 6];
        for (o, p) in octets.iter_mut().zip(parts) {
            if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        Ok(Self(octets))
    }
}

impl Serialize for Mac {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_colon())
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// 64-bit FNV-1a: a hash that is the same on every machine, build and Rust
/// release (unlike `std`'s `DefaultHasher`), for names and addresses that
/// must not change across upgrades.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn subnet_normalises_host_bits() {
        let s: Subnet = "10.1.0.77/24".parse().unwrap();
        assert_eq!(s.network_addr(), ip("10.1.0.0"));
        assert_eq!(s.to_string(), "10.1.0.0/24");
        assert_eq!(s.network().ip(), ip("10.1.0.0"));
        let from_net = Subnet::from_network("10.1.0.77/24".parse().unwrap()).unwrap();
        assert_eq!(from_net, s);
    }

    #[test]
    fn subnet_basic_addresses() {
        let s: Subnet = "10.1.0.0/24".parse().unwrap();
        assert_eq!(s.gateway(), ip("10.1.0.1"));
        assert_eq!(s.gateway_cidr().to_string(), "10.1.0.1/24");
        assert_eq!(s.netmask(), ip("255.255.255.0"));
        assert_eq!(s.broadcast(), ip("10.1.0.255"));
        assert_eq!(s.allocatable_count(), 251);
    }

    #[test]
    fn subnet_prefix_limits() {
        assert_eq!(
            "10.0.0.0/30".parse::<Subnet>(),
            Err(AddrError::PrefixOutOfRange(30))
        );
        assert_eq!(
            "0.0.0.0/1".parse::<Subnet>(),
            Err(AddrError::PrefixOutOfRange(1))
        );
        assert!("10.0.0.0".parse::<Subnet>().is_err());
        assert!("10.0.0.0/33".parse::<Subnet>().is_err());
        assert!("nonsense".parse::<Subnet>().is_err());
        assert!("10.0.0.0/29".parse::<Subnet>().is_ok());
        assert!("64.0.0.0/2".parse::<Subnet>().is_ok());
    }

    #[test]
    fn reserved_addresses_are_not_allocatable() {
        let s: Subnet = "10.1.0.0/24".parse().unwrap();
        for r in ["10.1.0.0", "10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.255"] {
            assert!(!s.contains_allocatable(ip(r)), "{r}");
        }
        assert!(s.contains_allocatable(ip("10.1.0.4")));
        assert!(s.contains_allocatable(ip("10.1.0.254")));
        assert!(!s.contains_allocatable(ip("10.1.1.4")));
        assert!(!s.contains_allocatable(ip("10.0.255.255")));
    }

    #[test]
    fn allocate_lowest_free_then_full() {
        let s: Subnet = "192.168.7.8/29".parse().unwrap();
        assert_eq!(s.network_addr(), ip("192.168.7.8"));
        let mut used = HashSet::new();
        assert_eq!(s.allocate(&used), Some(ip("192.168.7.12")));
        used.insert(ip("192.168.7.12"));
        used.insert(ip("192.168.7.14"));
        assert_eq!(s.allocate(&used), Some(ip("192.168.7.13")));
        used.insert(ip("192.168.7.13"));
        assert_eq!(s.allocate(&used), None, "only .12-.14 are usable in a /29");
        assert_eq!(s.allocatable_count(), 3);
    }

    #[test]
    fn allocate_randomized_never_reserved_or_used() {
        let mut rng = StdRng::seed_from_u64(0x5eed);
        for _ in 0..300 {
            let prefix = rng.gen_range(24..=MAX_PREFIX);
            let s = Subnet::new(Ipv4Addr::from(rng.gen::<u32>()), prefix).unwrap();
            let size = 1u32 << (32 - u32::from(prefix));
            let base = u32::from(s.network_addr());
            // A random mix of addresses in the subnet (reserved ones too) and outside it.
            let mut used: HashSet<Ipv4Addr> = (0..rng.gen_range(0..size + 8))
                .map(|_| {
                    if rng.gen_bool(0.9) {
                        Ipv4Addr::from(base + rng.gen_range(0..size))
                    } else {
                        Ipv4Addr::from(rng.gen::<u32>())
                    }
                })
                .collect();
            // Lowest free: nothing allocatable below the first answer is free.
            if let Some(first) = s.allocate(&used) {
                for lower in (base + 4)..u32::from(first) {
                    assert!(used.contains(&Ipv4Addr::from(lower)), "{first} in {s}");
                }
            }
            // Fill the subnet completely, checking every answer. Nothing is
            // freed, so lowest-first answers strictly increase.
            let mut handed = 0;
            let mut previous = None;
            while let Some(a) = s.allocate(&used) {
                assert!(s.contains_allocatable(a), "{a} in {s}");
                assert!(!used.contains(&a), "{a} was already used in {s}");
                let off = u32::from(a) - base;
                assert!(off >= 4 && off < size - 1, "{a} is reserved in {s}");
                assert!(previous < Some(a), "{a} after {previous:?} in {s}");
                previous = Some(a);
                used.insert(a);
                handed += 1;
                assert!(handed <= s.allocatable_count());
            }
            let in_use = (4..size - 1)
                .filter(|o| used.contains(&Ipv4Addr::from(base + o)))
                .count();
            assert_eq!(in_use as u32, s.allocatable_count(), "{s} not filled");
        }
    }

    #[test]
    fn subnet_serde_roundtrip() {
        let s: Subnet = "10.2.3.4/16".parse().unwrap();
        let j = serde_json::to_string(&s).unwrap();
        assert_eq!(j, "\"10.2.0.0/16\"");
        assert_eq!(serde_json::from_str::<Subnet>(&j).unwrap(), s);
    }

    #[test]
    fn mac_formats_and_parses() {
        let m = Mac::new([0x00, 0x0d, 0x3a, 0x12, 0xab, 0xef]);
        assert_eq!(m.to_colon(), "00:0d:3a:12:ab:ef");
        assert_eq!(m.to_azure(), "00-0D-3A-12-AB-EF");
        assert_eq!(m.to_string(), "00:0d:3a:12:ab:ef");
        for s in [
            "00:0d:3a:12:ab:ef",
            "00:0D:3A:12:AB:EF",
            "00-0D-3A-12-AB-EF",
            "00-0d-3a-12-ab-ef",
            "000D3A12ABEF",
        ] {
            assert_eq!(s.parse::<Mac>().unwrap(), m, "{s}");
        }
        for bad in [
            "",
            "00:0d:3a:12:ab",
            "00:0d:3a:12:ab:ef:01",
            "00:0d:3a:12:ab:eg",
            "0:0d:3a:12:ab:ef0",
            "00:0d-3a:12:ab:ef",
            "+0:0d:3a:12:ab:ef",
            "000D3A12ABE",
            "ééééééé",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad:?} parsed");
        }
        let j = serde_json::to_string(&m).unwrap();
        assert_eq!(j, "\"00:0d:3a:12:ab:ef\"");
        assert_eq!(
            serde_json::from_str::<Mac>("\"00-0D-3A-12-AB-EF\"").unwrap(),
            m
        );
    }

    #[test]
    fn mac_random_and_stable() {
        let a = Mac::random_azure();
        assert!(a.is_azure() && a.is_unicast());
        assert!(a.to_azure().starts_with("00-0D-3A-"));
        let mut rng = StdRng::seed_from_u64(1);
        let distinct: HashSet<Mac> = (0..64).map(|_| Mac::random_azure_with(&mut rng)).collect();
        assert!(distinct.len() > 60);
        let k = Mac::azure_for_key("nic-0001");
        assert_eq!(k, Mac::azure_for_key("nic-0001"));
        assert_ne!(k, Mac::azure_for_key("nic-0002"));
        assert!(k.is_azure());
    }

    #[test]
    fn stable_hash_is_fnv1a() {
        // Reference values of 64-bit FNV-1a.
        assert_eq!(stable_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
