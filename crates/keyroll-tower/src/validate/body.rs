//! The response body of the validator's services: the inner service's body, or the small JSON
//! body of a refusal.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// The inner service's response body, or the JSON body of a refusal.
    ///
    /// Using a body of its own (rather than requiring `B: Default` and sending refusals empty)
    /// lets the layer wrap any service whose body yields [`Bytes`] (axum, hyper, tonic) and
    /// still send the RFC 6750 JSON error body.
    #[derive(Debug)]
    pub struct ValidateBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Full { data: Option<Bytes> },
    }
}

impl<B> ValidateBody<B> {
    /// Wraps the inner service's body.
    pub fn new(body: B) -> Self {
        ValidateBody {
            kind: Kind::Inner { body },
        }
    }

    /// A body holding `data` (a refusal's JSON).
    pub fn full(data: Bytes) -> Self {
        ValidateBody {
            kind: Kind::Full {
                data: (!data.is_empty()).then_some(data),
            },
        }
    }

    /// The inner body, if this is not a refusal.
    pub fn into_inner(self) -> Option<B> {
        match self.kind {
            Kind::Inner { body } => Some(body),
            Kind::Full { .. } => None,
        }
    }
}

impl<B: Body<Data = Bytes>> Body for ValidateBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Full { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

/// Turns a refusal into a response with a [`ValidateBody`].
pub(crate) fn refusal<B>(response: http::Response<Bytes>) -> http::Response<ValidateBody<B>> {
    response.map(ValidateBody::full)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt as _, Full};

    #[tokio::test]
    async fn both_kinds_stream_their_bytes() {
        let inner = ValidateBody::new(Full::new(Bytes::from_static(b"inner")));
        assert_eq!(inner.collect().await.unwrap().to_bytes(), "inner");
        let full = ValidateBody::<Full<Bytes>>::full(Bytes::from_static(b"{}"));
        assert_eq!(full.size_hint().exact(), Some(2));
        assert!(!full.is_end_stream());
        assert_eq!(full.collect().await.unwrap().to_bytes(), "{}");
        assert!(ValidateBody::<Full<Bytes>>::full(Bytes::new()).is_end_stream());
    }
}
