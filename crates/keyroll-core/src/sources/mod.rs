//! Key sources that need no cloud: a generated key ring, static files, and a remote JWKS.

pub mod jwks;
pub mod local_ring;
pub mod static_keys;
