//! The response future of [`Issue`](super::Issue).
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use keyroll_tower::issue::{IssueError, IssueLayer, StaticToken};
//! use tower::{Layer, Service, service_fn};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let inner = service_fn(|_: Request<()>| async { Ok::<_, Infallible>(Response::new(())) });
//! let mut service = IssueLayer::new(StaticToken::new("t")).layer(inner);
//! // A relative URI has no origin, so no audience: the future fails and nothing is sent.
//! let future: keyroll_tower::issue::ResponseFuture<_> = service.call(Request::new(()));
//! let error = future.await.unwrap_err();
//! assert!(error.downcast_ref::<IssueError>().is_some());
//! # });
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{HeaderName, Response, StatusCode};
use keyroll_core::token::{CachedToken, IssueError};
use keyroll_core::{BoxError, BoxFuture};
use pin_project_lite::pin_project;

/// The fetch-then-call part of a request that found no usable cached token.
pub(crate) type Deferred<F> = BoxFuture<'static, Result<(F, Arc<CachedToken>), BoxError>>;

/// The header a gRPC server puts its status in (in the headers of a trailers-only response).
static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// Whether the downstream refused the credentials: HTTP `401`, or gRPC `UNAUTHENTICATED`
/// (status 16) in a trailers-only response, which is how a gRPC server that checks tokens
/// itself (a tonic interceptor) refuses a call. A status in trailers after a streamed body is
/// not seen here: servers refuse credentials before they stream.
fn refuses_credentials<B>(response: &Response<B>) -> bool {
    response.status() == StatusCode::UNAUTHORIZED
        || (!response.headers().is_empty()
            && response
                .headers()
                .get(&GRPC_STATUS)
                .is_some_and(|status| status.as_bytes() == b"16"))
}

pin_project! {
    /// Response future of [`Issue`](super::Issue): the inner service's future, preceded by a
    /// wait for a token when none was cached. A response that refuses the credentials (HTTP
    /// `401`, or gRPC `UNAUTHENTICATED` in a trailers-only response) drops the token it
    /// carried.
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
        token: Option<Arc<CachedToken>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Calling { #[pin] future: F },
        Fetching { deferred: Deferred<F> },
        Failed { error: Option<IssueError> },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn calling(future: F, token: Arc<CachedToken>) -> Self {
        ResponseFuture {
            state: State::Calling { future },
            token: Some(token),
        }
    }

    pub(crate) fn fetching(deferred: Deferred<F>) -> Self {
        ResponseFuture {
            state: State::Fetching { deferred },
            token: None,
        }
    }

    pub(crate) fn failed(error: IssueError) -> Self {
        ResponseFuture {
            state: State::Failed { error: Some(error) },
            token: None,
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<B>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { future } => {
                    let response = ready!(future.poll(cx)).map_err(Into::into)?;
                    if refuses_credentials(&response)
                        && let Some(token) = this.token.take()
                    {
                        token.rejected();
                    }
                    return Poll::Ready(Ok(response));
                }
                StateProj::Fetching { deferred } => {
                    let (future, token) = ready!(deferred.as_mut().poll(cx))?;
                    *this.token = Some(token);
                    this.state.set(State::Calling { future });
                }
                StateProj::Failed { error } => {
                    let error = error
                        .take()
                        .ok_or("ResponseFuture polled after completion")?;
                    return Poll::Ready(Err(error.into()));
                }
            }
        }
    }
}
