//! The verifier on arbitrary bytes as a token, with its keys loaded (ES256 and RS256).
//!
//! Properties:
//! - no panic, and never a 503-style error: bad input is always `Invalid`;
//! - never accepts: nothing in the input can be validly signed (the keys are made afresh in
//!   each process);
//! - its reason is one the reference gives for these bytes ([`reference::verdict`]: strict
//!   base64url per the `base64` crate, JSON per `serde_json`, the issuers' rules), so it stops
//!   at the right stage: refused JSON is always `Malformed`, and only a token that passes every
//!   other check costs a signature check (`BadSignature`);
//! - each segment decodes as the `base64` crate decodes it.
#![no_main]

use keyroll_core::__fuzz;
use keyroll_core::jwt::VerifyError;
use keyroll_fuzz::{b64url_decode, reference, setup};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let fixture = setup::fixture();
    let reason = match fixture.verify(data) {
        Ok(verified) => panic!("accepted a token nobody signed: {verified:?}"),
        Err(VerifyError::Invalid(invalid)) => invalid.reason(),
        Err(other) => panic!("bad input must be refused as invalid, not with {other:?}"),
    };
    let expected = reference::verdict(data, None);
    match &expected {
        Err(reasons) => assert!(
            reasons.contains(&reason),
            "refused with {reason:?}, the reference says {reasons:?}"
        ),
        Ok(claims) => panic!("the reference accepts an unsigned token: {claims:?}"),
    }
    for segment in data.split(|&b| b == b'.').take(8) {
        assert_eq!(
            __fuzz::decode_segment(segment),
            b64url_decode(segment),
            "{:?}",
            String::from_utf8_lossy(segment)
        );
    }
});
