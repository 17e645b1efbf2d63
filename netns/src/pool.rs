//! The IPv4 pool links are addressed from, carved into /31 blocks.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::PlanError;

/// An IPv4 CIDR block handed out one /31 per link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    /// First address of the block.
    base: Ipv4Addr,
    /// Prefix length, at most 31.
    prefix: u8,
}

impl Pool {
    /// The pool used when the caller sets none: 10.199.0.0/16.
    pub const DEFAULT: Pool = Pool {
        base: Ipv4Addr::new(10, 199, 0, 0),
        prefix: 16,
    };

    /// How many /31 blocks the pool holds.
    pub fn capacity(&self) -> u64 {
        1u64 << (31 - u32::from(self.prefix))
    }

    /// The two addresses of block `slot` (the even one first).
    pub(crate) fn pair(&self, slot: u64) -> (Ipv4Addr, Ipv4Addr) {
        // Slots are below capacity, so the sum stays inside the block and below 2^32.
        let even = u32::from(self.base).wrapping_add((slot as u32).wrapping_mul(2));
        (Ipv4Addr::from(even), Ipv4Addr::from(even | 1))
    }

    /// The block holding `ip`, if it is inside the pool.
    pub(crate) fn slot_of(&self, ip: Ipv4Addr) -> Option<u64> {
        let offset = u32::from(ip).checked_sub(u32::from(self.base))?;
        let slot = u64::from(offset / 2);
        (slot < self.capacity()).then_some(slot)
    }
}

impl Default for Pool {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Display for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

impl FromStr for Pool {
    type Err = PlanError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why| PlanError::InvalidPool {
            pool: s.to_string(),
            why,
        };
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| bad("expected ADDRESS/PREFIX"))?;
        let base: Ipv4Addr = addr.parse().map_err(|_| bad("not an IPv4 address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| bad("prefix is not a number"))?;
        if prefix > 31 {
            return Err(bad("prefix longer than /31 holds no /31 block"));
        }
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        if u32::from(base) & !mask != 0 {
            return Err(bad("address has bits set beyond the prefix"));
        }
        Ok(Self { base, prefix })
    }
}

impl Serialize for Pool {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Pool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_carves() {
        let p: Pool = "10.199.4.0/30".parse().unwrap();
        assert_eq!(p.capacity(), 2);
        assert_eq!(
            p.pair(1),
            (Ipv4Addr::new(10, 199, 4, 2), Ipv4Addr::new(10, 199, 4, 3))
        );
        assert_eq!(p.slot_of(Ipv4Addr::new(10, 199, 4, 3)), Some(1));
        assert_eq!(p.slot_of(Ipv4Addr::new(10, 199, 4, 4)), None);
        assert_eq!(Pool::default().to_string(), "10.199.0.0/16");
        for bad in ["10.0.0.1/24", "10.0.0.0", "10.0.0.0/32", "x/8"] {
            assert!(bad.parse::<Pool>().is_err(), "{bad}");
        }
    }
}
