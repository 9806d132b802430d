//! What keyroll's fuzz targets share: the keys and the verifier they check tokens against
//! ([`setup`]), and what `serde_json` makes of the same JSON ([`reference`]), which the
//! targets hold keyroll's own reader to.

pub mod reference;
pub mod setup;

use base64::Engine as _;

/// base64url without padding, as JWS segments are written.
pub fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Strict base64url without padding (the reference for token segments): canonical trailing
/// bits, no padding, URL-safe alphabet only.
pub fn b64url_decode(text: &[u8]) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()
}
