//! The axum-core extractors (feature `axum`, on by default): [`VerifiedClaims`], [`Claims<T>`]
//! and [`RawClaims`] as handler arguments (also as `Option<…>`), and [`ClaimsRejection`] as a
//! response.
//!
//! ```
//! use keyroll_tower::validate::{Claims, VerifiedClaims};
//!
//! #[derive(serde::Deserialize)]
//! struct Caller { sub: String }
//!
//! async fn handler(Claims(caller): Claims<Caller>, verified: Option<VerifiedClaims>) -> String {
//!     format!("{} via {:?}", caller.sub, verified.map(|v| v.issuer().to_owned()))
//! }
//! let _app: axum::Router = axum::Router::new().route("/", axum::routing::get(handler));
//! ```

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::request::Parts;
use serde::de::DeserializeOwned;

use super::extract::{Claims, ClaimsRejection, RawClaims, VerifiedClaims};

impl IntoResponse for ClaimsRejection {
    fn into_response(self) -> Response {
        self.to_response().map(axum_core::body::Body::from)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for VerifiedClaims {
    type Rejection = ClaimsRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        VerifiedClaims::from_parts(parts).ok_or_else(ClaimsRejection::missing)
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for VerifiedClaims {
    type Rejection = ClaimsRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(VerifiedClaims::from_parts(parts))
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Claims<T> {
    type Rejection = ClaimsRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let claims = VerifiedClaims::from_parts(parts).ok_or_else(ClaimsRejection::missing)?;
        claims.deserialize().map(Claims)
    }
}

impl<S: Send + Sync, T: DeserializeOwned> OptionalFromRequestParts<S> for Claims<T> {
    type Rejection = ClaimsRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        match VerifiedClaims::from_parts(parts) {
            None => Ok(None),
            Some(claims) => claims.deserialize().map(|t| Some(Claims(t))),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RawClaims {
    type Rejection = ClaimsRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let claims = VerifiedClaims::from_parts(parts).ok_or_else(ClaimsRejection::missing)?;
        claims.raw().map(RawClaims)
    }
}
