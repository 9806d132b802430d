//! `IssueLayer` around a tonic `Channel`, calling a real tonic server on loopback guarded by
//! `ValidateLayer`. Messages are prost structs written by hand (no codegen); the calls go
//! through `tonic::client::Grpc`, as a generated client's do. The `401` floor is the token
//! cache's injected clock; nothing sleeps.
#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::error::Error as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use http::uri::PathAndQuery;
use keyroll_core::jwt::{Issuer, TokenTemplate, Validation};
use keyroll_core::{Algorithm, KeyCache, LocalKeyRing, ManualClock};
use keyroll_tower::issue::{
    AudiencePolicy, IssueError, IssueErrorKind, IssueLayer, SelfSigned, TokenCache,
};
use keyroll_tower::validate::{ValidateLayer, VerifiedClaims};
use tonic::transport::{Channel, Endpoint, Server, server::TcpIncoming};
use tonic::{Code, Status};
use tonic_prost::ProstCodec;
use tower::ServiceBuilder;
use tower::util::MapRequestLayer;

const ISSUER: &str = "https://orders.internal";
const AUDIENCE: &str = "api://billing";
const LIST: &str = "/billing.Invoices/List";

#[derive(Clone, PartialEq, prost::Message)]
struct ListInvoices {
    #[prost(string, tag = "1")]
    customer: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Invoices {
    /// The caller, as the server's validator saw it (the token's `sub`).
    #[prost(string, tag = "1")]
    caller: String,
    /// The token's `aud`.
    #[prost(string, tag = "2")]
    audience: String,
    #[prost(string, repeated, tag = "3")]
    ids: Vec<String>,
}

/// `billing.Invoices/List`: answers with the caller's claims; refuses with `UNAUTHENTICATED`
/// (as a server whose own check disagrees would) when the customer is `refuse`.
async fn list(request: tonic::Request<ListInvoices>) -> Result<tonic::Response<Invoices>, Status> {
    let claims = request
        .extensions()
        .get::<VerifiedClaims>()
        .ok_or_else(|| Status::internal("no claims"))?;
    let payload: serde_json::Value = claims.deserialize().unwrap();
    if request.get_ref().customer == "refuse" {
        return Err(Status::unauthenticated("token refused"));
    }
    Ok(tonic::Response::new(Invoices {
        caller: payload["sub"].as_str().unwrap_or_default().to_owned(),
        audience: payload["aud"].as_str().unwrap_or_default().to_owned(),
        ids: vec![format!("{}-1", request.get_ref().customer)],
    }))
}

/// A tonic server on loopback with `ValidateLayer` in front; counts the calls that reach it.
struct Billing {
    origin: String,
    reached: Arc<AtomicUsize>,
    validate: ValidateLayer,
}

async fn billing(keys: &KeyCache) -> Billing {
    let validate = ValidateLayer::builder()
        .issuer(Issuer::new(
            keys.clone(),
            Validation::new(ISSUER, [AUDIENCE]),
        ))
        .realm("billing")
        .build();
    let reached = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&reached);
    let service = tower::service_fn(|request: http::Request<tonic::body::Body>| async move {
        let mut grpc = tonic::server::Grpc::new(ProstCodec::<Invoices, ListInvoices>::default());
        let response = match request.uri().path() {
            LIST => grpc.unary(tower::service_fn(list), request).await,
            _ => Status::unimplemented("no such method").into_http(),
        };
        Ok::<_, Infallible>(response)
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let server = Server::builder()
        .layer(MapRequestLayer::new(
            move |request: http::Request<tonic::body::Body>| {
                counter.fetch_add(1, Ordering::SeqCst);
                request
            },
        ))
        .layer(validate.clone());
    tokio::spawn(server.serve_with_incoming(service, TcpIncoming::from(listener)));
    Billing {
        origin,
        reached,
        validate,
    }
}

/// orders' signing keys and its token cache (on a clock the test moves).
struct Orders {
    tokens: TokenCache<SelfSigned>,
    clock: Arc<ManualClock>,
}

fn orders() -> (KeyCache, Orders) {
    let keys = KeyCache::builder(LocalKeyRing::in_memory(Algorithm::ES256).unwrap()).build();
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let template = TokenTemplate::new(ISSUER).lifetime(Duration::from_secs(600));
    let tokens = TokenCache::builder(SelfSigned::new(keys.clone(), template))
        .clock(clock.clone())
        .build();
    (keys, Orders { tokens, clock })
}

async fn call<S>(grpc: &mut tonic::client::Grpc<S>, customer: &str) -> Result<Invoices, Status>
where
    S: tonic::client::GrpcService<tonic::body::Body>,
    S::Error: Into<keyroll_core::BoxError>,
    S::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <S::ResponseBody as http_body::Body>::Error: Into<keyroll_core::BoxError> + Send,
{
    grpc.ready()
        .await
        .map_err(|error| Status::unknown(error.into().to_string()))?;
    let request = tonic::Request::new(ListInvoices {
        customer: customer.to_owned(),
    });
    let codec = ProstCodec::<ListInvoices, Invoices>::default();
    let response = grpc
        .unary(request, PathAndQuery::from_static(LIST), codec)
        .await?;
    Ok(response.into_inner())
}

async fn connect(billing: &Billing) -> (Endpoint, Channel) {
    let endpoint = Endpoint::from_shared(billing.origin.clone()).unwrap();
    let channel = endpoint.connect().await.unwrap();
    (endpoint, channel)
}

#[tokio::test]
async fn a_grpc_call_carries_a_token_for_the_channel_endpoint() {
    let (keys, orders) = orders();
    let billing = billing(&keys).await;
    let (endpoint, channel) = connect(&billing).await;
    let policy = AudiencePolicy::origin()
        .map(&billing.origin, AUDIENCE)
        .for_endpoint(endpoint.uri())
        .unwrap();
    let issue = IssueLayer::with_cache(orders.tokens.clone()).audience(policy);
    let mut grpc = tonic::client::Grpc::new(ServiceBuilder::new().layer(issue).service(channel));

    for customer in ["acme", "globex"] {
        let invoices = call(&mut grpc, customer).await.unwrap();
        assert_eq!(
            invoices.caller, ISSUER,
            "the server saw the verified claims"
        );
        assert_eq!(invoices.audience, AUDIENCE);
        assert_eq!(invoices.ids, [format!("{customer}-1")]);
    }
    assert_eq!(billing.reached.load(Ordering::SeqCst), 2);
    assert_eq!(billing.validate.metrics().accepted, 2);
    assert_eq!(
        orders.tokens.metrics().fetches,
        1,
        "one token for both calls"
    );
}

#[tokio::test]
async fn without_the_endpoint_bound_a_call_fails_before_it_is_sent() {
    let (keys, orders) = orders();
    let billing = billing(&keys).await;
    let (endpoint, channel) = connect(&billing).await;
    // The origin is listed, but a channel's requests carry path-only URIs: no origin in them.
    let unbound = AudiencePolicy::origin().map(&billing.origin, AUDIENCE);
    let issue = IssueLayer::with_cache(orders.tokens.clone()).audience(unbound.clone());
    let mut grpc =
        tonic::client::Grpc::new(ServiceBuilder::new().layer(issue).service(channel.clone()));
    let status = call(&mut grpc, "acme").await.unwrap_err();
    assert_eq!(status.code(), Code::Unknown);
    let error = status
        .source()
        .and_then(|source| source.downcast_ref::<IssueError>())
        .expect("the IssueError below the status");
    assert_eq!(error.kind(), IssueErrorKind::NoAudience);
    assert_eq!(
        billing.reached.load(Ordering::SeqCst),
        0,
        "nothing was sent"
    );
    assert_eq!(orders.tokens.metrics().fetches, 0, "nothing was signed");

    // Binding to an endpoint nobody listed fails when the client is built.
    let other = Endpoint::from_static("http://127.0.0.1:1");
    let refused = unbound.for_endpoint(other.uri()).unwrap_err();
    assert_eq!(refused.kind(), IssueErrorKind::NoAudience);
    assert_eq!(refused.audience(), Some("http://127.0.0.1:1"));

    // Bound, the same channel gets through.
    let bound = unbound.for_endpoint(endpoint.uri()).unwrap();
    let issue = IssueLayer::with_cache(orders.tokens.clone()).audience(bound);
    let mut grpc = tonic::client::Grpc::new(ServiceBuilder::new().layer(issue).service(channel));
    assert_eq!(call(&mut grpc, "acme").await.unwrap().caller, ISSUER);
    assert_eq!(billing.reached.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn unauthenticated_drops_the_token_at_most_once_per_floor() {
    let (keys, orders) = orders();
    let billing = billing(&keys).await;
    let (endpoint, channel) = connect(&billing).await;
    let policy = AudiencePolicy::origin()
        .map(&billing.origin, AUDIENCE)
        .for_endpoint(endpoint.uri())
        .unwrap();
    let issue = IssueLayer::with_cache(orders.tokens.clone()).audience(policy);
    let mut grpc = tonic::client::Grpc::new(ServiceBuilder::new().layer(issue).service(channel));
    let floor = orders.tokens.config().min_age_to_invalidate;
    let metrics = |tokens: &TokenCache<SelfSigned>| {
        let m = tokens.metrics();
        (m.fetches, m.invalidations, m.invalidations_deferred)
    };

    // The server refuses (trailers-only UNAUTHENTICATED, HTTP 200): a young token is kept.
    for _ in 0..2 {
        let status = call(&mut grpc, "refuse").await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    assert_eq!(metrics(&orders.tokens), (1, 0, 2));

    // Successes never drop a token, however old.
    orders.clock.advance(floor);
    call(&mut grpc, "acme").await.unwrap();
    assert_eq!(metrics(&orders.tokens), (1, 0, 2));

    // Past the floor, a refusal drops it; the next call carries a new one.
    let status = call(&mut grpc, "refuse").await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(metrics(&orders.tokens), (1, 1, 2));
    call(&mut grpc, "acme").await.unwrap();
    assert_eq!(metrics(&orders.tokens), (2, 1, 2));
    assert_eq!(billing.validate.metrics().accepted, 5);
}
