//! Parsed headers of verified tokens, reused: every token one key version signs carries the
//! same header, so its base64 decode and JSON parse need not run again.
//!
//! Only headers of tokens whose signature verified are remembered (so junk cannot fill the
//! cache), at most [`CAPACITY`] (oldest out first), keyed by the exact encoded header; reading
//! takes no lock.

use std::borrow::Cow;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::token::Header;
use crate::algorithm::Algorithm;

/// How many distinct headers are remembered (a few per key version in the set is plenty).
pub(crate) const CAPACITY: usize = 32;

#[derive(Debug, Default)]
pub(crate) struct HeaderCache {
    entries: ArcSwap<Vec<Entry>>,
}

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    encoded: Box<[u8]>,
    algorithm: Algorithm,
    kid: Option<Box<str>>,
    x5t: Option<Box<str>>,
    typ: Option<Box<str>>,
}

impl Entry {
    /// Whether this is the entry for `encoded`.
    pub(crate) fn is(&self, encoded: &[u8]) -> bool {
        &*self.encoded == encoded
    }

    /// The header, as [`parse_header`](super::token::parse_header) would give it.
    pub(crate) fn header(&self) -> Header<'_> {
        fn borrow(value: &Option<Box<str>>) -> Option<Cow<'_, str>> {
            value.as_deref().map(Cow::Borrowed)
        }
        Header {
            algorithm: self.algorithm,
            kid: borrow(&self.kid),
            x5t: borrow(&self.x5t),
            typ: borrow(&self.typ),
        }
    }
}

impl HeaderCache {
    /// The remembered headers.
    pub(crate) fn entries(&self) -> arc_swap::Guard<Arc<Vec<Entry>>> {
        self.entries.load()
    }

    /// Remembers the header of a token whose signature verified.
    pub(crate) fn remember(&self, encoded: &[u8], header: &Header<'_>) {
        let current = self.entries.load();
        if current.iter().any(|e| e.is(encoded)) {
            return;
        }
        let owned = |value: &Option<Cow<'_, str>>| value.as_deref().map(Box::from);
        let mut entries = Vec::clone(&current);
        // Oldest first out: after many rotations the headers of retired keys make room.
        if entries.len() >= CAPACITY {
            entries.remove(0);
        }
        entries.push(Entry {
            encoded: encoded.into(),
            algorithm: header.algorithm,
            kid: owned(&header.kid),
            x5t: owned(&header.x5t),
            typ: owned(&header.typ),
        });
        // A concurrent insert may be lost: harmless, the header is parsed once more.
        self.entries.store(Arc::new(entries));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kid: &str) -> Header<'_> {
        Header {
            algorithm: Algorithm::ES256,
            kid: Some(Cow::Borrowed(kid)),
            x5t: None,
            typ: None,
        }
    }

    #[test]
    fn keeps_the_newest_headers() {
        let cache = HeaderCache::default();
        let names: Vec<String> = (0..CAPACITY + 5).map(|i| format!("h{i}")).collect();
        for name in &names {
            cache.remember(name.as_bytes(), &header(name));
            cache.remember(name.as_bytes(), &header(name));
        }
        let entries = cache.entries();
        assert_eq!(entries.len(), CAPACITY);
        assert!(!entries.iter().any(|e| e.is(b"h0")));
        assert!(entries.iter().any(|e| e.is(names[CAPACITY + 4].as_bytes())));
    }
}
