//! Shared by the examples: plain HTTP over reqwest as a tower service, for the outbound side
//! that `IssueLayer` wraps.

use http::{Request, Response};
use tower::Service;

/// GETs each request's URI with its headers; answers with the status and the body as text.
pub(crate) fn http_get()
-> impl Service<Request<()>, Response = Response<String>, Error = reqwest::Error, Future = impl Send>
+ Clone
+ Send
+ 'static {
    let http = reqwest::Client::new();
    tower::service_fn(move |request: Request<()>| {
        let http = http.clone();
        async move {
            let answer = http
                .get(request.uri().to_string())
                .headers(request.headers().clone())
                .send()
                .await?;
            let status = answer.status();
            let body = answer.text().await?;
            Ok(Response::builder()
                .status(status)
                .body(body)
                .unwrap_or_default())
        }
    })
}
