//! [`ResponseFuture`], the future of [`Validate`](super::Validate).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;
use tracing::Span;

use super::body::{ValidateBody, refusal};
use super::extract::VerifiedClaims;
use super::layer::Shared;
use super::response::Failure;

pub(crate) type VerifyFuture =
    Pin<Box<dyn Future<Output = Result<VerifiedClaims, Failure>> + Send + 'static>>;

pin_project! {
    /// The response future of [`Validate`](super::Validate): verifies the token, then calls the
    /// inner service, or answers the refusal.
    pub struct ResponseFuture<F, S, ReqBody> {
        #[pin]
        state: State<F, S, ReqBody>,
        span: Span,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, S, ReqBody> {
        Verifying {
            verify: VerifyFuture,
            // Boxed: only a request that waits for keys carries these, so the usual call
            // returns (and moves) a small future.
            waiting: Option<Box<Waiting<S, ReqBody>>>,
        },
        Calling {
            #[pin]
            future: F,
        },
        Refused {
            response: Option<Response<Bytes>>,
        },
    }
}

/// What a request that waits for keys needs once they came.
struct Waiting<S, ReqBody> {
    request: Request<ReqBody>,
    service: S,
    shared: Arc<Shared>,
}

impl<F, S, ReqBody> std::fmt::Debug for ResponseFuture<F, S, ReqBody> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Verifying { .. } => "verifying",
            State::Calling { .. } => "calling",
            State::Refused { .. } => "refused",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<F, S, ReqBody> ResponseFuture<F, S, ReqBody> {
    /// A refusal, decided in the call: counted, recorded and its response built there.
    pub(crate) fn refused(failure: &Failure, shared: &Shared, span: Span) -> Self {
        let response = refuse(failure, shared, &span);
        ResponseFuture {
            state: State::Refused {
                response: Some(response),
            },
            span,
        }
    }

    pub(crate) fn calling(future: F, span: Span) -> Self {
        ResponseFuture {
            state: State::Calling { future },
            span,
        }
    }

    pub(crate) fn verifying(
        verify: VerifyFuture,
        request: Request<ReqBody>,
        service: S,
        shared: Arc<Shared>,
        span: Span,
    ) -> Self {
        ResponseFuture {
            state: State::Verifying {
                verify,
                waiting: Some(Box::new(Waiting {
                    request,
                    service,
                    shared,
                })),
            },
            span,
        }
    }
}

impl<F, S, ReqBody, ResBody, E> Future for ResponseFuture<F, S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>, Error = E, Future = F>,
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<ValidateBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Verifying { verify, waiting } => {
                    let result = {
                        let _entered = this.span.enter();
                        ready!(verify.as_mut().poll(cx))
                    };
                    let Some(waiting) = waiting.take() else {
                        panic!("ResponseFuture polled after completion");
                    };
                    let Waiting {
                        mut request,
                        mut service,
                        shared,
                    } = *waiting;
                    match result {
                        Ok(claims) => {
                            record_accepted(this.span, &claims, false);
                            shared.counters.accepted(false);
                            request.extensions_mut().insert(claims);
                            let future = {
                                let _entered = this.span.enter();
                                service.call(request)
                            };
                            this.state.set(State::Calling { future });
                        }
                        Err(failure) => {
                            let response = refuse(&failure, &shared, this.span);
                            return Poll::Ready(Ok(refusal(response)));
                        }
                    }
                }
                StateProj::Calling { future } => {
                    let _entered = this.span.enter();
                    let response = ready!(future.poll(cx))?;
                    return Poll::Ready(Ok(response.map(ValidateBody::new)));
                }
                StateProj::Refused { response } => {
                    let Some(response) = response.take() else {
                        panic!("ResponseFuture polled after completion");
                    };
                    return Poll::Ready(Ok(refusal(response)));
                }
            }
        }
    }
}

/// Records an acceptance on the request's span. (Each record looks its field up by name:
/// skipped when nothing listens.)
pub(crate) fn record_accepted(span: &Span, claims: &VerifiedClaims, cache_hit: bool) {
    if span.is_disabled() {
        return;
    }
    span.record("outcome", "accepted");
    if cache_hit {
        span.record("reason", "cache_hit");
    }
    span.record("issuer", claims.issuer());
}

/// Counts and records a refusal, and builds its response.
fn refuse(failure: &Failure, shared: &Shared, span: &Span) -> Response<Bytes> {
    shared.counters.refused(failure);
    let outcome = if matches!(failure, Failure::Unavailable(_)) {
        "unavailable"
    } else {
        "rejected"
    };
    if !span.is_disabled() {
        span.record("outcome", outcome);
        span.record("reason", failure.label());
    }
    if outcome == "unavailable" {
        tracing::warn!(parent: span, "refused with 503: the issuer's keys are unavailable");
    } else {
        tracing::debug!(parent: span, reason = failure.label(), "token refused");
    }
    shared.responses.response(failure)
}
