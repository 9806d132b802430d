//! A gRPC client that attaches tokens, against a gRPC server that checks them, offline: tonic on
//! both sides, `IssueLayer` around the client's `Channel`, `ValidateLayer` in front of the
//! server, one local key ring (a Key Vault source in production) for both.
//!
//! A channel's requests carry path-only URIs (it adds its endpoint's authority itself), so the
//! audience policy is bound to the channel's endpoint with `AudiencePolicy::for_endpoint`.
//! Messages are prost structs written by hand here; generated clients work the same way
//! (`BillingClient::new(channel)` over the layered channel).
//!
//! ```sh
//! cargo run --example grpc_client
//! ```

use std::convert::Infallible;
use std::time::Duration;

use http::uri::PathAndQuery;
use keyroll_core::jwt::{Issuer, TokenTemplate, Validation};
use keyroll_core::{Algorithm, KeyCache, LocalKeyRing};
use keyroll_tower::issue::{AudiencePolicy, IssueLayer, SelfSigned};
use keyroll_tower::validate::{ValidateLayer, VerifiedClaims};
use tonic::transport::{Endpoint, Server, server::TcpIncoming};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;
use tower::{BoxError, ServiceBuilder};

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
    #[prost(string, repeated, tag = "1")]
    ids: Vec<String>,
    #[prost(string, tag = "2")]
    caller: String,
}

/// billing's one method: the caller comes from the token `ValidateLayer` verified.
async fn list(request: Request<ListInvoices>) -> Result<Response<Invoices>, Status> {
    let caller = request
        .extensions()
        .get::<VerifiedClaims>()
        .and_then(|claims| claims.registered().sub.clone())
        .ok_or_else(|| Status::unauthenticated("no verified caller"))?;
    let customer = &request.get_ref().customer;
    let ids = (1..=2).map(|n| format!("{customer}-{n}")).collect();
    Ok(Response::new(Invoices { ids, caller }))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let keys = KeyCache::builder(LocalKeyRing::in_memory(Algorithm::ES256)?).build();

    // ── billing: a tonic server behind ValidateLayer ──────────────────────────────────────
    let validate = ValidateLayer::builder()
        .issuer(Issuer::new(
            keys.clone(),
            Validation::new(ISSUER, [AUDIENCE]),
        ))
        .realm("billing")
        .build();
    let billing = tower::service_fn(|request: http::Request<tonic::body::Body>| async move {
        let mut grpc = tonic::server::Grpc::new(ProstCodec::<Invoices, ListInvoices>::default());
        Ok::<_, Infallible>(match request.uri().path() {
            LIST => grpc.unary(tower::service_fn(list), request).await,
            _ => Status::unimplemented("no such method").into_http(),
        })
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let billing_origin = format!("http://{}", listener.local_addr()?);
    let server = Server::builder().layer(validate.clone());
    tokio::spawn(server.serve_with_incoming(billing, TcpIncoming::from(listener)));

    // ── orders: a channel to billing, with IssueLayer bound to the channel's endpoint ─────
    let endpoint = Endpoint::from_shared(billing_origin.clone())?;
    let channel = endpoint.connect().await?;
    let policy = AudiencePolicy::origin()
        .map(&billing_origin, AUDIENCE)
        .for_endpoint(endpoint.uri())?;
    let template = TokenTemplate::new(ISSUER).lifetime(Duration::from_secs(600));
    let issue = IssueLayer::new(SelfSigned::new(keys.clone(), template)).audience(policy);
    let tokens = issue.cache().clone();
    let mut client = tonic::client::Grpc::new(ServiceBuilder::new().layer(issue).service(channel));

    for customer in ["acme", "globex", "initech"] {
        client.ready().await?;
        let request = Request::new(ListInvoices {
            customer: customer.to_owned(),
        });
        let codec = ProstCodec::<ListInvoices, Invoices>::default();
        let invoices = client
            .unary(request, PathAndQuery::from_static(LIST), codec)
            .await?
            .into_inner();
        println!(
            "{customer}: {:?} (billing saw caller {})",
            invoices.ids, invoices.caller
        );
    }
    let metrics = validate.metrics();
    println!(
        "billing accepted {} calls, refused {}; orders signed {} token(s) for {AUDIENCE}",
        metrics.accepted,
        metrics.rejected_total(),
        tokens.metrics().fetches
    );
    if metrics.accepted != 3 {
        eprintln!("FAILED: billing refused calls");
        std::process::exit(1);
    }
    Ok(())
}
