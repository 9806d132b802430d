//! Property tests: random bytes and random mutations of valid tokens never panic and never
//! get anything but 401.
#![allow(clippy::unwrap_used)]

mod validate_support;

use std::sync::LazyLock;

use http::{HeaderValue, Request, StatusCode, header::AUTHORIZATION};
use proptest::prelude::*;
use validate_support::*;

struct World {
    runtime: tokio::runtime::Runtime,
    fixture: Fixture,
    tokens: Vec<String>,
}

static WORLD: LazyLock<World> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let fixture = Fixture::new();
    let tokens = vec![fixture.token("ec"), fixture.token("rsa")];
    // Load the keys once, and check the unmutated tokens pass.
    for token in &tokens {
        assert_eq!(
            runtime.block_on(fixture.bearer(token)).status,
            StatusCode::OK
        );
    }
    World {
        runtime,
        fixture,
        tokens,
    }
});

/// Sends one `Authorization` value; `None` if it cannot be a header value at all.
fn status_for(value: &[u8]) -> Option<StatusCode> {
    let value = HeaderValue::from_bytes(value).ok()?;
    let world = &*WORLD;
    let request = Request::builder()
        .header(AUTHORIZATION, value)
        .body(())
        .unwrap();
    let answer = world.runtime.block_on(send(&world.fixture.layer, request));
    assert!(
        answer
            .challenge()
            .unwrap()
            .starts_with("Bearer realm=\"billing\"")
    );
    Some(answer.status)
}

#[derive(Debug, Clone)]
enum Mutation {
    Replace(usize, u8),
    Insert(usize, u8),
    Delete(usize, usize),
    Truncate(usize),
    SwapSegments(usize, usize),
    Append(Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let byte = prop_oneof![
        any::<u8>(),
        prop::sample::select(b".-_=+/ AZaz09{}\"".to_vec())
    ];
    prop_oneof![
        (any::<usize>(), byte.clone()).prop_map(|(i, b)| Mutation::Replace(i, b)),
        (any::<usize>(), byte.clone()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), 1usize..40).prop_map(|(i, n)| Mutation::Delete(i, n)),
        any::<usize>().prop_map(Mutation::Truncate),
        (0usize..3, 0usize..3).prop_map(|(a, b)| Mutation::SwapSegments(a, b)),
        prop::collection::vec(byte, 1..20).prop_map(Mutation::Append),
    ]
}

fn apply(token: &str, mutations: &[Mutation]) -> Vec<u8> {
    let mut bytes = token.as_bytes().to_vec();
    for m in mutations {
        let len = bytes.len().max(1);
        match m {
            Mutation::Replace(i, b) if !bytes.is_empty() => bytes[i % len] = *b,
            Mutation::Insert(i, b) => bytes.insert(i % (bytes.len() + 1), *b),
            Mutation::Delete(i, n) if !bytes.is_empty() => {
                let start = i % len;
                let end = (start + n).min(bytes.len());
                bytes.drain(start..end);
            }
            Mutation::Truncate(i) => bytes.truncate(i % len),
            Mutation::SwapSegments(a, b) => {
                let mut segments: Vec<Vec<u8>> =
                    bytes.split(|&c| c == b'.').map(<[u8]>::to_vec).collect();
                let n = segments.len();
                segments.swap(a % n, b % n);
                bytes = segments.join(&b'.');
            }
            Mutation::Append(tail) => bytes.extend_from_slice(tail),
            _ => {}
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_get_401(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let mut value = b"Bearer ".to_vec();
        value.extend_from_slice(&bytes);
        if let Some(status) = status_for(&value) {
            prop_assert_eq!(status, StatusCode::UNAUTHORIZED);
        }
        // The same bytes as the whole header value (any scheme, or none).
        if let Some(status) = status_for(&bytes) {
            prop_assert_eq!(status, StatusCode::UNAUTHORIZED);
        }
    }

    #[test]
    fn random_dotted_base64_gets_401(segments in prop::collection::vec("[A-Za-z0-9_-]{0,120}", 0..7)) {
        let value = format!("Bearer {}", segments.join("."));
        if let Some(status) = status_for(value.as_bytes()) {
            prop_assert_eq!(status, StatusCode::UNAUTHORIZED);
        }
    }

    #[test]
    fn mutated_tokens_get_401(which in 0usize..2, mutations in prop::collection::vec(mutation(), 1..4)) {
        let token = &WORLD.tokens[which];
        let mutated = apply(token, &mutations);
        // Surrounding spaces are not part of the token: such a mutation is no mutation.
        prop_assume!(mutated.trim_ascii() != token.as_bytes());
        let mut value = b"Bearer ".to_vec();
        value.extend_from_slice(&mutated);
        if let Some(status) = status_for(&value) {
            prop_assert_eq!(status, StatusCode::UNAUTHORIZED);
        }
    }
}
