//! jwks (under construction)
