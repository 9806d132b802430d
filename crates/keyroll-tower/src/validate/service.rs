//! [`Validate`], the service [`ValidateLayer`](super::ValidateLayer) builds.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::body::ValidateBody;
use super::future::{ResponseFuture, VerifyFuture};
use super::layer::Shared;
use super::metrics::ValidateMetrics;

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
        let shared = Arc::clone(&self.shared);
        let found = match shared.sources.find(request.headers()) {
            Ok(found) => found,
            Err(failure) => return ResponseFuture::refused(failure, shared, span),
        };
        if let Some(cache) = &shared.cache
            && let Some(claims) = cache.get(found.as_str())
        {
            span.record("outcome", "accepted");
            span.record("reason", "cache_hit");
            span.record("issuer", claims.issuer());
            shared.counters.accepted(true);
            request.extensions_mut().insert(claims);
            // This service was polled ready: call it now.
            let future = span.in_scope(|| self.inner.call(request));
            return ResponseFuture::calling(future, shared, span);
        }
        // The usual case: keys loaded and the token's key known. Verified (or refused) here,
        // with no boxed future and no swap of the inner service.
        if let Some(result) = shared.verifier.verify_now(found.as_str()) {
            return match result {
                Ok(verified) => {
                    let claims = shared.accept(found.as_str(), verified);
                    span.record("outcome", "accepted");
                    span.record("issuer", claims.issuer());
                    shared.counters.accepted(false);
                    request.extensions_mut().insert(claims);
                    let future = span.in_scope(|| self.inner.call(request));
                    ResponseFuture::calling(future, shared, span)
                }
                Err(error) => ResponseFuture::refused(error.into(), shared, span),
            };
        }
        let verify: VerifyFuture = {
            let shared = Arc::clone(&shared);
            Box::pin(async move {
                let token = found.as_str();
                match shared.verifier.verify(token).await {
                    Ok(verified) => Ok(shared.accept(token, verified)),
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
