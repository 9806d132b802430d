//! Round trip over loopback HTTP: a hyper client with `IssueLayer` calls a hyper server with
//! `ValidateLayer` (its own key cache over the same key ring, as another replica would have)
//! through ten rotations, under paused tokio time.

#![allow(clippy::unwrap_used)]

mod issue_support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use issue_support::{Fixture, FixtureConfig, ISSUER, settle};
use keyroll_core::jwt::{Issuer, Validation};
use keyroll_core::{KeyCache, KeyCacheConfig, RotationPolicy};
use keyroll_tower::issue::{AudiencePolicy, IssueLayer, TokenCacheConfig};
use keyroll_tower::validate::{ValidateLayer, VerifiedClaims};
use tower::{Service, ServiceBuilder, ServiceExt};

const AUDIENCE: &str = "api://billing";

/// A billing server on loopback that answers each valid call with the kid that signed it.
async fn billing_server(keys: KeyCache) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let validate = ValidateLayer::builder()
        .issuer(Issuer::new(keys, Validation::new(ISSUER, [AUDIENCE])))
        .realm("billing")
        .build();
    let service = ServiceBuilder::new().layer(validate).service_fn(
        |request: Request<hyper::body::Incoming>| async move {
            let claims = request.extensions().get::<VerifiedClaims>().unwrap();
            let kid = Bytes::from(claims.kid().to_owned());
            Ok::<_, Infallible>(Response::new(Full::new(kid)))
        },
    );
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let service = service.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |request| service.clone().oneshot(request));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    format!("http://{address}")
}

#[tokio::test(start_paused = true)]
async fn ten_rotations_without_a_failed_call_and_the_kid_changes_on_schedule() {
    let rotate_every = Duration::from_secs(600);
    let propagation = Duration::from_secs(120);
    let lifetime = Duration::from_secs(60);
    let step = Duration::from_secs(5);
    let key_refresh = Duration::from_secs(30);
    let fixture = Fixture::new(FixtureConfig {
        lifetime,
        rotate_every,
        propagation,
        key_refresh,
        tokens: TokenCacheConfig::default().refresh_jitter(0.0),
    });
    // The server's own cache over the same ring (the vault), on the same clock.
    let server_keys = KeyCache::builder(replica_source(&fixture))
        .config(
            KeyCacheConfig::default()
                .refresh_interval(key_refresh)
                .refresh_jitter(0.0)
                .policy(RotationPolicy::default().propagation(propagation)),
        )
        .clock(fixture.clock.clone())
        .build();
    let origin = billing_server(server_keys).await;

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut client = ServiceBuilder::new()
        .layer(
            IssueLayer::with_cache(fixture.tokens.clone()).audience(
                AudiencePolicy::origin()
                    .map(origin.clone(), AUDIENCE)
                    .only_mapped(true),
            ),
        )
        .service(client);

    let start = fixture.now();
    let end = start + rotate_every * 10 + Duration::from_secs(400);
    let mut created: HashMap<String, SystemTime> = HashMap::new();
    let mut uses: Vec<(SystemTime, String)> = Vec::new();
    while fixture.now() < end {
        let request = Request::get(format!("{origin}/invoices"))
            .body(Empty::new())
            .unwrap();
        let response = client.ready().await.unwrap().call(request).await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "call at {:?}",
            fixture.now()
        );
        let body = response.into_body().collect().await.unwrap().to_bytes();
        uses.push((fixture.now(), String::from_utf8(body.to_vec()).unwrap()));
        for version in fixture.keys.snapshot().unwrap().versions() {
            created
                .entry(version.kid.clone())
                .or_insert(version.created);
        }
        tokio::time::advance(step).await;
        settle().await;
    }

    // The kid in use changes ten times, never back, each time once the new version has been
    // published for the propagation window, and within one token refresh after that.
    let mut switches = Vec::new();
    for pair in uses.windows(2) {
        if pair[0].1 != pair[1].1 {
            switches.push(pair[1].clone());
        }
    }
    assert_eq!(switches.len(), 10, "{switches:?}");
    let mut kids: Vec<&String> = uses.iter().map(|(_, kid)| kid).collect();
    kids.dedup();
    assert_eq!(kids.len(), 11, "a kid came back");
    for (at, kid) in &switches {
        let published_for = at.duration_since(created[kid]).unwrap();
        assert!(
            published_for >= propagation && published_for <= propagation + lifetime,
            "kid {kid} first used {published_for:?} after it was created"
        );
    }
    // Signing stayed near one per token lifetime (80 % refresh), never per request.
    let signs = fixture.controls.signs();
    let budget = (end.duration_since(start).unwrap().as_secs() / 48 + 12) as usize;
    assert!(signs <= budget, "{signs} signs for {} calls", uses.len());
}

/// A second key source over the fixture's ring (another replica reading the same vault).
fn replica_source(fixture: &Fixture) -> issue_support::Controlled {
    issue_support::Controlled {
        ring: fixture.ring.clone(),
        controls: fixture.controls.clone(),
    }
}
