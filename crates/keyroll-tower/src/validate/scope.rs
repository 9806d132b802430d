//! [`RequireScopeLayer`]: 403 `insufficient_scope` unless the verified token grants a scope.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::body::{ValidateBody, refusal};
use super::extract::VerifiedClaims;
use super::response::{Failure, sanitize};

/// Requires scopes (`scope`/`scp`) or app roles (`roles`) of the token that a
/// [`ValidateLayer`](super::ValidateLayer) placed outside this layer verified.
///
/// A request whose token lacks them gets 403 with
/// `WWW-Authenticate: Bearer realm="…", error="insufficient_scope", scope="…"`; a request
/// without verified claims (the layer is not behind a `ValidateLayer`) gets 401.
#[derive(Clone, Debug)]
pub struct RequireScopeLayer {
    rule: Arc<ScopeRule>,
}

#[derive(Debug)]
struct ScopeRule {
    scopes: Vec<String>,
    all: bool,
    challenge: String,
}

impl RequireScopeLayer {
    /// Requires at least one of `scopes`.
    pub fn any<T: Into<String>>(scopes: impl IntoIterator<Item = T>) -> Self {
        RequireScopeLayer::new(scopes, false)
    }

    /// Requires every one of `scopes`.
    pub fn all<T: Into<String>>(scopes: impl IntoIterator<Item = T>) -> Self {
        RequireScopeLayer::new(scopes, true)
    }

    fn new<T: Into<String>>(scopes: impl IntoIterator<Item = T>, all: bool) -> Self {
        let scopes: Vec<String> = scopes.into_iter().map(Into::into).collect();
        let challenge = sanitize(&scopes.join(" "));
        RequireScopeLayer {
            rule: Arc::new(ScopeRule {
                scopes,
                all,
                challenge,
            }),
        }
    }
}

impl ScopeRule {
    fn allows(&self, claims: &VerifiedClaims) -> bool {
        if self.all {
            self.scopes.iter().all(|s| claims.has_scope(s))
        } else {
            self.scopes.is_empty() || self.scopes.iter().any(|s| claims.has_scope(s))
        }
    }
}

impl<S> Layer<S> for RequireScopeLayer {
    type Service = RequireScope<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireScope {
            inner,
            rule: Arc::clone(&self.rule),
        }
    }
}

/// The service [`RequireScopeLayer`] builds.
#[derive(Clone, Debug)]
pub struct RequireScope<S> {
    inner: S,
    rule: Arc<ScopeRule>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequireScope<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ValidateBody<ResBody>>;
    type Error = S::Error;
    type Future = ScopeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let refused = match request.extensions().get::<VerifiedClaims>() {
            Some(claims) if self.rule.allows(claims) => None,
            Some(claims) => {
                tracing::debug!(required = %self.rule.challenge, "token lacks a required scope");
                Some(
                    Failure::InsufficientScope(self.rule.challenge.clone())
                        .to_response(claims.realm()),
                )
            }
            None => Some(Failure::Missing.to_response(super::DEFAULT_REALM)),
        };
        match refused {
            None => ScopeFuture {
                kind: Kind::Inner {
                    future: self.inner.call(request),
                },
            },
            Some(response) => ScopeFuture {
                kind: Kind::Refused {
                    response: Some(response),
                },
            },
        }
    }
}

pin_project! {
    /// The response future of [`RequireScope`].
    #[derive(Debug)]
    pub struct ScopeFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F> {
        Inner {
            #[pin]
            future: F,
        },
        Refused {
            response: Option<Response<Bytes>>,
        },
    }
}

impl<F, B, E> Future for ScopeFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ValidateBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future } => {
                let response = ready!(future.poll(cx))?;
                Poll::Ready(Ok(response.map(ValidateBody::new)))
            }
            KindProj::Refused { response } => {
                let Some(response) = response.take() else {
                    panic!("ScopeFuture polled after completion");
                };
                Poll::Ready(Ok(refusal(response)))
            }
        }
    }
}
