//! [`Version`]: which write of a key a value came from.

use std::fmt;

/// The version of a key's value: every write of a value (`set`, `set_with_ttl`, `incr`,
/// `add`, `replace`, `set_if_version`, `set_many`) gives the key a new version, greater than
/// every version the cache has handed out before, also after the key was removed and stored
/// again and after `clear`. Changing only a key's TTL (`expire`, `persist`) keeps its version:
/// the value did not change.
///
/// A version is what [`UpCache::set_if_version`](crate::UpCache::set_if_version) compares:
/// read a value with [`UpCache::get_versioned`](crate::UpCache::get_versioned), compute, and
/// write back only if nobody wrote in between. Versions of different keys are comparable (one
/// counter for the whole cache), so `a < b` means `a` was handed out first. A new server starts
/// its counter from the wall clock, above the versions of an earlier server on the machine,
/// so a version kept across a server restart does not match a key of the new server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(u64);

impl Version {
    /// The version with this number (as [`Version::get`] returned it, or as the wire carries it).
    pub const fn new(n: u64) -> Self {
        Version(n)
    }

    /// Its number.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<Version> for u64 {
    fn from(v: Version) -> u64 {
        v.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_and_shows_its_number() {
        let (a, b) = (Version::new(3), Version::new(10));
        assert!(a < b);
        assert_eq!((a.get(), u64::from(b)), (3, 10));
        assert_eq!(b.to_string(), "10");
    }
}
