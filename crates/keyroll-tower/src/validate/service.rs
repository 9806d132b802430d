//! [`Validate`], the service [`ValidateLayer`](super::ValidateLayer) builds.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderMap, Request, Response};
use tower_service::Service;

use super::body::ValidateBody;
use super::extract::VerifiedClaims;
use super::future::{ResponseFuture, VerifyFuture, record_accepted};
use super::layer::Shared;
use super::metrics::ValidateMetrics;
use super::response::Failure;

/// Validates the bearer token of each request before passing it to `S`; refusals become
/// RFC 6750 responses (so `Error = S::Error`). See the [module docs](super).
#[derive(Clone, Debug)]
pub struct Validate<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Validate<S> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Shared>) -> Self {
        Validate { inner, shared }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The counters (shared by every service from the same layer).
    pub fn metrics(&self) -> ValidateMetrics {
        self.shared.counters.snapshot()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Validate<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
{
    type Response = Response<ValidateBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let span = tracing::debug_span!(
            "keyroll.validate",
            outcome = tracing::field::Empty,
            reason = tracing::field::Empty,
            issuer = tracing::field::Empty,
        );
        let shared = &*self.shared;
        match check_now(shared, request.headers()) {
            Checked::Accepted { claims, cache_hit } => {
                record_accepted(&span, &claims, cache_hit);
                shared.counters.accepted(cache_hit);
                request.extensions_mut().insert(claims);
                // This service was polled ready: call it now.
                let future = span.in_scope(|| self.inner.call(request));
                ResponseFuture::calling(future, span)
            }
            Checked::Refused(failure) => ResponseFuture::refused(&failure, shared, span),
            Checked::KeysNeeded(token) => {
                let shared = Arc::clone(&self.shared);
                let verify: VerifyFuture = {
                    let shared = Arc::clone(&shared);
                    Box::pin(async move {
                        match shared.verifier.verify(&token).await {
                            Ok(verified) => Ok(shared.accept(&token, verified)),
                            Err(error) => Err(error.into()),
                        }
                    })
                };
                // The ready service goes with this request; `self` keeps a fresh clone, to be
                // polled ready before its next call.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::verifying(verify, request, inner, shared, span)
            }
        }
    }
}

/// What the checks that need no waiting concluded.
enum Checked {
    Accepted {
        claims: VerifiedClaims,
        cache_hit: bool,
    },
    Refused(Failure),
    /// The issuer's keys must load or refresh first: the token, copied out of the request.
    KeysNeeded(Box<[u8]>),
}

/// Finds the token and checks it without waiting, while it still borrows from the request's
/// headers: the usual case (keys loaded, the token's key known) verifies here, with no copy of
/// the token, no boxed future and no swap of the inner service.
fn check_now(shared: &Shared, headers: &HeaderMap) -> Checked {
    let token = match shared.sources.find(headers) {
        Ok(token) => token,
        Err(failure) => return Checked::Refused(failure),
    };
    if let Some(cache) = &shared.cache
        && let Some(claims) = cache.get(token)
    {
        return Checked::Accepted {
            claims,
            cache_hit: true,
        };
    }
    match shared.verifier.verify_now(token) {
        Some(Ok(verified)) => Checked::Accepted {
            claims: shared.accept(token, verified),
            cache_hit: false,
        },
        Some(Err(error)) => Checked::Refused(error.into()),
        None => Checked::KeysNeeded(token.into()),
    }
}
