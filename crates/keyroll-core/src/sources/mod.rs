//! Key sources that need no cloud: a generated key ring, static files, and a remote JWKS.

#[cfg(feature = "jwks")]
pub mod jwks;
pub mod local_ring;
pub mod static_keys;
