//! [`ReadinessService`]: the readiness endpoint, `GET /readyz`.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use tower_service::Service;

use super::Readiness;

/// The default readiness path.
pub const DEFAULT_READINESS_PATH: &str = "/readyz";

/// Answers `GET` (and `HEAD`) at its path (default [`DEFAULT_READINESS_PATH`]) with `200`
/// while the [`Readiness`] handle is ready or degraded and `503` otherwise, a JSON body per
/// source (see the [module docs](super)) and `Cache-Control: no-store`; another method:
/// `405`; another path: `404`. Each call runs [`Readiness::check`], which never waits on a
/// source. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ReadinessService {
    readiness: Readiness,
    path: Arc<str>,
}

impl ReadinessService {
    /// Serves `readiness` at [`DEFAULT_READINESS_PATH`].
    pub fn new(readiness: Readiness) -> Self {
        ReadinessService {
            readiness,
            path: DEFAULT_READINESS_PATH.into(),
        }
    }

    /// Serves it at `path` instead (as mounted: axum's `route_service` passes the full path).
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into().into();
        self
    }

    fn respond(&self, method: &Method) -> Response<Full<Bytes>> {
        let report = self.readiness.check();
        let status = if report.is_ready() {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        let body = Bytes::from(report.to_json());
        let length = body.len();
        let body = if method == Method::HEAD {
            Bytes::new()
        } else {
            body
        };
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

impl<B> Service<Request<B>> for ReadinessService {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Response<Full<Bytes>>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if request.uri().path() != &*self.path {
            return ready(Ok(plain(StatusCode::NOT_FOUND, "not found\n")));
        }
        let method = request.method();
        if method != Method::GET && method != Method::HEAD {
            let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return ready(Ok(response));
        }
        ready(Ok(self.respond(method)))
    }
}
