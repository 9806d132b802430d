//! JWK and JWKS parsing on arbitrary bytes: `Jwk`, `JwkSet`, `JwkSet::parse_lenient` (remote
//! JWKS) and `StaticKeys::with_jwk_json` (key files).
//!
//! Properties:
//! - no panic;
//! - a JWK that parses serializes and parses back to itself, and parses into a verifying key
//!   exactly when its round-tripped form does, with the same type, pinned algorithm,
//!   algorithms and thumbprint; a symmetric key never parses; a pinned key allows only its
//!   algorithm, which fits its type;
//! - `parse_lenient` fails exactly when the document is not a JSON object with one `keys`
//!   member, an array (as documented; `serde` alone would also read a struct from an array, by position);
//!   otherwise every entry is kept or skipped (once, in order), a kept key is a JSON object,
//!   for signatures, and parses on its own, and the kept keys, published again, are all kept;
//! - `with_jwk_json` takes only a JWK or a JWK Set (JSON objects, the set's keys too), and
//!   loads one version per key given, each with its JWK's kid (or thumbprint) and a key that
//!   allows the version's signing algorithm.
#![no_main]

use futures_util::FutureExt as _;
use keyroll_core::{Jwk, JwkSet, KeySource as _, StaticKeys, VerifyingKey};
use keyroll_fuzz::reference;
use libfuzzer_sys::fuzz_target;

fn same_key(a: &VerifyingKey, b: &VerifyingKey) {
    assert_eq!(a.key_type(), b.key_type());
    assert_eq!(a.pinned_algorithm(), b.pinned_algorithm());
    assert!(a.algorithms().eq(b.algorithms()));
}

/// Checks one JWK that `serde_json` read; returns its verifying key if it has one.
fn check_jwk(jwk: &Jwk) -> Option<VerifyingKey> {
    let text = serde_json::to_vec(jwk).expect("a JWK serializes");
    let again: Jwk = serde_json::from_slice(&text).expect("a serialized JWK parses");
    assert_eq!(&again, jwk, "a JWK round-trips");
    assert_eq!(again.thumbprint(), jwk.thumbprint());
    let key = VerifyingKey::from_jwk(jwk);
    match (&key, VerifyingKey::from_jwk(&again)) {
        (Ok(key), Ok(other)) => same_key(key, &other),
        (Err(_), Err(_)) => {}
        (key, other) => panic!("the round trip changes the key: {key:?} / {other:?}"),
    }
    let key = key.ok()?;
    assert_ne!(jwk.kty, "oct", "a symmetric key parsed");
    assert!(
        key.algorithms().next().is_some(),
        "a key that verifies nothing"
    );
    for alg in key.algorithms() {
        assert!(key.allows(alg));
        assert_eq!(
            alg.key_type(),
            key.key_type(),
            "{alg} on a {:?} key",
            key.key_type()
        );
    }
    if let Some(pinned) = key.pinned_algorithm() {
        assert_eq!(jwk.alg.as_deref(), Some(pinned.as_str()));
        assert!(key.algorithms().eq([pinned]), "a pinned key allows others");
    }
    Some(key)
}

fuzz_target!(|data: &[u8]| {
    if let Ok(jwk) = serde_json::from_slice::<Jwk>(data) {
        check_jwk(&jwk);
    }
    let set = serde_json::from_slice::<JwkSet>(data);
    if let Ok(set) = &set {
        let text = serde_json::to_vec(set).expect("a JWKS serializes");
        assert_eq!(
            &serde_json::from_slice::<JwkSet>(&text).expect("parses"),
            set
        );
    }

    // What the lenient parse must find: an object (as serde_json reads one, skipping what it
    // does not read) with one `keys` member, an array of JSON values.
    let value = serde_json::from_slice::<serde_json::Value>(data).ok();
    let entries: Option<Vec<serde_json::Value>> = std::str::from_utf8(data)
        .ok()
        .and_then(reference::object)
        .filter(|members| members.count("keys") == 1)
        .and_then(|members| {
            let (_, keys) = members.0.iter().find(|(name, _)| name == "keys")?;
            serde_json::from_str(keys.get()).ok()
        });
    match (JwkSet::parse_lenient(data), entries) {
        (Ok(parsed), Some(entries)) => {
            assert_eq!(parsed.keys.len() + parsed.skipped.len(), entries.len());
            let skipped: Vec<usize> = parsed.skipped.iter().map(|(at, _)| *at).collect();
            assert!(skipped.windows(2).all(|w| w[0] < w[1]), "{skipped:?}");
            let kept = (0..entries.len()).filter(|at| !skipped.contains(at));
            for ((jwk, key), at) in parsed.keys.iter().zip(kept) {
                assert!(entries[at].is_object(), "kept a key that is not an object");
                let alone: Jwk = serde_json::from_value(entries[at].clone()).expect("a kept key");
                assert_eq!(&alone, jwk, "the kept key is the entry");
                assert!(!jwk.is_not_for_signatures(), "kept an encryption key");
                same_key(key, &check_jwk(jwk).expect("a kept key parses"));
            }
            let again = JwkSet {
                keys: parsed.keys.iter().map(|(jwk, _)| jwk.clone()).collect(),
            };
            let reparsed = JwkSet::parse_lenient(&serde_json::to_vec(&again).expect("JWKS"))
                .expect("a published set parses");
            assert!(reparsed.skipped.is_empty(), "{:?}", reparsed.skipped);
            assert_eq!(reparsed.keys.len(), parsed.keys.len());
        }
        (Err(_), None) => {}
        // serde_json does not check the UTF-8 of the strings it skips: the reference is for
        // UTF-8 documents only.
        (Ok(parsed), None) if std::str::from_utf8(data).is_err() => {
            for (jwk, key) in &parsed.keys {
                assert!(!jwk.is_not_for_signatures(), "kept an encryption key");
                same_key(key, &check_jwk(jwk).expect("a kept key parses"));
            }
        }
        (Ok(parsed), None) => panic!("parsed a JWKS that is not an object with keys: {parsed:?}"),
        (Err(error), Some(_)) => panic!("refused an object with a keys array: {error}"),
    }

    if let Ok(keys) = StaticKeys::new().with_jwk_json(data) {
        let value = value
            .as_ref()
            .expect("loaded keys from a text that is not JSON");
        assert!(
            value.is_object(),
            "loaded keys from a JSON value that is no object"
        );
        if let Some(keys) = value.get("keys") {
            let all_objects = keys
                .as_array()
                .is_some_and(|k| k.iter().all(|k| k.is_object()));
            assert!(
                all_objects,
                "loaded a JWK Set whose keys are not all objects"
            );
        }
        let parse = |value: &serde_json::Value| -> Jwk {
            serde_json::from_value(value.clone()).expect("a loaded JWK parses alone")
        };
        let jwks: Vec<Jwk> = match value.get("keys").and_then(|keys| keys.as_array()) {
            Some(keys) => keys.iter().map(parse).collect(),
            None => vec![parse(value)],
        };
        let loaded = keys
            .load()
            .now_or_never()
            .expect("static keys load at once")
            .expect("static keys load");
        assert_eq!(loaded.versions.len(), jwks.len());
        for (version, jwk) in loaded.versions.iter().zip(&jwks) {
            let kid = jwk.kid.clone().unwrap_or_else(|| jwk.thumbprint());
            assert_eq!(version.kid, kid);
            assert!(version.allows(version.signing_algorithm()));
            same_key(
                version.verifying_key(),
                &check_jwk(jwk).expect("a loaded key parses"),
            );
        }
    }
});
