//! Every metric keyroll records through the [`metrics`](https://docs.rs/metrics) facade
//! (feature `metrics`, off by default): names, types, labels, meaning, and when each is recorded.
//!
//! ```
//! use keyroll_core::{Algorithm, KeyCache, KeyRef, LocalKeyRing};
//! use metrics_util::debugging::{DebugValue, DebuggingRecorder};
//!
//! # #[cfg(feature = "metrics")]
//! tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//!     // Any recorder: metrics-exporter-prometheus in production, a test recorder here.
//!     let recorder = DebuggingRecorder::new();
//!     let snapshotter = recorder.snapshotter();
//!     let _recording = metrics::set_default_local_recorder(&recorder);
//!
//!     let ring = LocalKeyRing::in_memory(Algorithm::ES256).unwrap();
//!     let keys = KeyCache::builder(ring).name("orders").build();
//!     keys.ready().await.unwrap(); // a load: recorded when it ends
//!     // A kid miss (counted, recorded at the publish below), and the refresh it starts.
//!     keys.find(KeyRef::Kid("no-such-kid")).await.unwrap();
//!     keyroll_core::metrics::publish();
//!
//!     let recorded: Vec<(String, Vec<String>, DebugValue)> = snapshotter
//!         .snapshot()
//!         .into_vec()
//!         .into_iter()
//!         .map(|(key, _, _, value)| {
//!             let (name, labels) = key.key().clone().into_parts();
//!             let labels = labels.iter().map(|l| format!("{}={}", l.key(), l.value())).collect();
//!             (name.as_str().to_owned(), labels, value)
//!         })
//!         .collect();
//!     let find = |name: &str, labels: &[&str]| {
//!         recorded.iter().find(|(n, l, _)| n == name && labels.iter().all(|x| l.iter().any(|y| y == x)))
//!     };
//!     assert!(matches!(
//!         find("keyroll_key_loads_total", &["source=orders", "outcome=ok"]),
//!         Some((_, _, DebugValue::Counter(2)))
//!     ));
//!     assert!(matches!(
//!         find("keyroll_key_kid_misses_total", &["source=orders"]),
//!         Some((_, _, DebugValue::Counter(1)))
//!     ));
//! });
//! ```
//!
//! # Names
//!
//! Names follow Prometheus conventions: the prefix `keyroll_`, `_total` on counters, base
//! units (`_seconds`). Labels are bounded: names you give at build (a cache's
//! [`name`](crate::KeyCacheBuilder::name), a token cache's
//! [`name`](crate::token::TokenCacheBuilder::name), a validator's name, a vault host), an
//! outcome, a reason, an operation, a status class. Never a kid, a token, an audience or a
//! subject.
//!
//! Key caches ([`KeyCache`](crate::KeyCache)); `source` is the cache's name (default: its
//! source's [`name`](crate::KeySource::name), such as `vault.example/keys/signing` or a JWKS URL):
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `keyroll_key_loads_total` | counter | `source`, `outcome` | source loads by how they ended: `ok`, `error` (failed, timed out or panicked), `throttled` (the source answered 429), `empty` (it listed no usable key) |
//! | `keyroll_key_load_duration_seconds` | histogram | `source` | how long each load took (on the cache's clock; panicked loads are not timed) |
//! | `keyroll_key_kid_misses_total` | counter | `source` | lookups of a kid the current set did not have |
//! | `keyroll_key_kid_refreshes_total` | counter | `source` | refreshes those misses started (at most one per cooldown) |
//! | `keyroll_key_negative_cache_hits_total` | counter | `source` | misses answered from the negative cache, with no refresh |
//! | `keyroll_key_signs_total` | counter | `source`, `outcome` | signs with the active version: `ok`, `error`, `held` (refused without asking the source, which was found down) |
//! | `keyroll_key_sign_duration_seconds` | histogram | `source` | how long each sign the source was asked for took (a vault `sign` for a remote key) |
//! | `keyroll_key_bad_signatures_total` | counter | `source` | remote signatures that did not verify with the listed key |
//! | `keyroll_key_versions_retired_early_total` | counter | `source` | versions that stopped validating while tokens they signed here were alive |
//! | `keyroll_key_tokens_orphaned_total` | counter | `source` | those versions' live tokens |
//! | `keyroll_key_set_versions` | gauge | `source` | versions in the current set |
//! | `keyroll_key_set_age_seconds` | gauge | `source` | age of the current set: since the source last answered (not set before the first load) |
//! | `keyroll_key_set_stale` | gauge | `source` | 1 while the cache serves a set past its refresh point because refreshing it failed (stale-if-error), else 0 |
//! | `keyroll_key_set_stale_seconds` | gauge | `source` | while stale, how long past its refresh point the set is; else 0 |
//! | `keyroll_key_set_unavailable` | gauge | `source` | 1 while no set can be served (past `max_stale`, or never loaded and the load failed): the validator answers 503 |
//! | `keyroll_key_consecutive_failures` | gauge | `source` | failed loads since the last good one |
//!
//! Token caches ([`TokenCache`](crate::TokenCache), the one in every `IssueLayer`); `source` is
//! the cache's name (default: its source's [`name`](crate::TokenSource::name): a
//! [`SelfSigned`](crate::SelfSigned) source's key cache name, `static`, `from_fn`,
//! `entra <scopes>` for keyroll-azure's `EntraTokens`, else the source's type name):
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `keyroll_token_fetches_total` | counter | `source`, `outcome` | token source calls (first fetches and renewals) by how they ended: `ok`, `error`, `throttled` |
//! | `keyroll_token_fetch_duration_seconds` | histogram | `source` | how long each call took (on the cache's clock) |
//! | `keyroll_token_renewals_total` | counter | `source` | renewals ahead of expiry started (each is one fetch) |
//! | `keyroll_token_invalidations_total` | counter | `source` | tokens dropped (`invalidate`, a downstream 401) |
//! | `keyroll_token_invalidations_deferred_total` | counter | `source` | downstream 401s that kept a token younger than `min_age_to_invalidate` |
//! | `keyroll_token_cooldown_rejections_total` | counter | `source` | callers failed at once during a failure's backoff |
//! | `keyroll_token_audiences` | gauge | `source` | audiences with a usable token |
//!
//! Validators (keyroll-tower's `ValidateLayer`, feature `metrics` there); `validator` is the
//! layer's name (default: its realm):
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `keyroll_validations_total` | counter | `validator`, `outcome`, `reason` | requests validated: `accepted` (`reason` `verified`, or `cache_hit` for the verified-token cache), `rejected` (`reason` the refusal's label: `missing_token`, `expired`, `bad_signature`, `unknown_key`, …, as in the `keyroll.validate` span), `unavailable` (`reason` `keys_unavailable`: 503) |
//! | `keyroll_validator_token_cache_entries` | gauge | `validator` | entries of the verified-token cache (counted at publish) |
//!
//! Azure (keyroll-azure, feature `metrics` there); `target` is the vault host
//! (`myvault.vault.azure.net`) or `entra` for Entra ID tokens (`EntraTokens`):
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `keyroll_azure_requests_total` | counter | `target`, `operation`, `status` | requests, one per attempt (no retries: see keyroll-azure): `operation` `list`, `get`, `get_secret`, `sign`, `update`, `token`; `status` `2xx`, `4xx`, `5xx`, `none` (no answer: cut off, refused), `error` (no usable answer otherwise) |
//! | `keyroll_azure_request_duration_seconds` | histogram | `target`, `operation` | how long each request took (sign latency: `operation="sign"`) |
//! | `keyroll_azure_throttled_total` | counter | `target`, `operation` | answers with 429 |
//! | `keyroll_azure_retry_after_seconds` | histogram | `target`, `operation` | the `Retry-After` of each failed answer that had one (its count: how many were seen) |
//!
//! # When each is recorded: the hot path stays as it was
//!
//! Events that happen at the refresh rate, not per request (loads, token fetches, signs,
//! Azure requests) are recorded when they end. Everything counted per request (validations,
//! kid misses and negative-cache hits, which a flood of bad tokens drives) is counted in the
//! same plain atomics as the snapshot structs ([`CacheMetrics`](crate::CacheMetrics),
//! [`TokenCacheMetrics`](crate::token::TokenCacheMetrics), keyroll-tower's
//! `ValidateMetrics`), and `publish` records what they counted since the last publish, with
//! the gauges: no registry lookup and no new shared write per request. So:
//!
//! - run `publish` before each scrape, or spawn `publish_every` (every 5 to 15 s suits a
//!   Prometheus scrape interval) next to the exporter;
//! - any recorder works, installed before or after the caches are built: events look the
//!   current recorder up when they happen, and the first publish records everything counted
//!   until then;
//! - components sharing a name add up (two caches both named `orders` count as one); what a
//!   dropped component counted stays (it publishes its counters when it goes), while its
//!   gauges keep their last values.
//!
//! Histograms are the recorder's business: with metrics-exporter-prometheus, give `_seconds`
//! histograms buckets (`set_buckets_for_metric(Matcher::Suffix("_seconds".into()), …)`), else
//! it renders them as summaries.

#[cfg(feature = "metrics")]
mod publish;

#[cfg(feature = "metrics")]
pub use self::publish::{CounterDeltas, Publish, describe, publish, publish_every, register};

/// Counter: key source loads, by `source` and `outcome` (`ok`, `error`, `throttled`, `empty`).
pub const KEY_LOADS: &str = "keyroll_key_loads_total";
/// Histogram: how long key source loads took, by `source`.
pub const KEY_LOAD_DURATION: &str = "keyroll_key_load_duration_seconds";
/// Counter: lookups of a kid the current set did not have, by `source`.
pub const KEY_KID_MISSES: &str = "keyroll_key_kid_misses_total";
/// Counter: refreshes started by unknown kids, by `source`.
pub const KEY_KID_REFRESHES: &str = "keyroll_key_kid_refreshes_total";
/// Counter: unknown kids answered from the negative cache, by `source`.
pub const KEY_NEGATIVE_CACHE_HITS: &str = "keyroll_key_negative_cache_hits_total";
/// Counter: signs with the active version, by `source` and `outcome` (`ok`, `error`, `held`).
pub const KEY_SIGNS: &str = "keyroll_key_signs_total";
/// Histogram: how long the signs the source was asked for took, by `source`.
pub const KEY_SIGN_DURATION: &str = "keyroll_key_sign_duration_seconds";
/// Counter: remote signatures that did not verify, by `source`.
pub const KEY_BAD_SIGNATURES: &str = "keyroll_key_bad_signatures_total";
/// Counter: versions retired while their tokens lived, by `source`.
pub const KEY_VERSIONS_RETIRED_EARLY: &str = "keyroll_key_versions_retired_early_total";
/// Counter: live tokens of versions retired early, by `source`.
pub const KEY_TOKENS_ORPHANED: &str = "keyroll_key_tokens_orphaned_total";
/// Gauge: versions in the current set, by `source`.
pub const KEY_SET_VERSIONS: &str = "keyroll_key_set_versions";
/// Gauge: age of the current set in seconds, by `source`.
pub const KEY_SET_AGE: &str = "keyroll_key_set_age_seconds";
/// Gauge: 1 while a set past its refresh point is served because refreshing failed, by `source`.
pub const KEY_SET_STALE: &str = "keyroll_key_set_stale";
/// Gauge: seconds the served set is past its refresh point while stale (else 0), by `source`.
pub const KEY_SET_STALE_SECONDS: &str = "keyroll_key_set_stale_seconds";
/// Gauge: 1 while no set can be served, by `source`.
pub const KEY_SET_UNAVAILABLE: &str = "keyroll_key_set_unavailable";
/// Gauge: failed loads since the last good one, by `source`.
pub const KEY_CONSECUTIVE_FAILURES: &str = "keyroll_key_consecutive_failures";

/// Counter: token source calls, by `source` and `outcome` (`ok`, `error`, `throttled`).
pub const TOKEN_FETCHES: &str = "keyroll_token_fetches_total";
/// Histogram: how long token source calls took, by `source`.
pub const TOKEN_FETCH_DURATION: &str = "keyroll_token_fetch_duration_seconds";
/// Counter: renewals ahead of expiry started, by `source`.
pub const TOKEN_RENEWALS: &str = "keyroll_token_renewals_total";
/// Counter: cached tokens dropped, by `source`.
pub const TOKEN_INVALIDATIONS: &str = "keyroll_token_invalidations_total";
/// Counter: downstream 401s that kept a young token, by `source`.
pub const TOKEN_INVALIDATIONS_DEFERRED: &str = "keyroll_token_invalidations_deferred_total";
/// Counter: callers failed at once during a failure's backoff, by `source`.
pub const TOKEN_COOLDOWN_REJECTIONS: &str = "keyroll_token_cooldown_rejections_total";
/// Gauge: audiences with a usable token, by `source`.
pub const TOKEN_AUDIENCES: &str = "keyroll_token_audiences";

/// Counter: validated requests, by `validator`, `outcome` and `reason`.
pub const VALIDATIONS: &str = "keyroll_validations_total";
/// Gauge: entries of a validator's verified-token cache, by `validator`.
pub const VALIDATOR_TOKEN_CACHE_ENTRIES: &str = "keyroll_validator_token_cache_entries";

/// Counter: Azure requests, by `target`, `operation` and `status`.
pub const AZURE_REQUESTS: &str = "keyroll_azure_requests_total";
/// Histogram: how long Azure requests took, by `target` and `operation`.
pub const AZURE_REQUEST_DURATION: &str = "keyroll_azure_request_duration_seconds";
/// Counter: Azure answers with 429, by `target` and `operation`.
pub const AZURE_THROTTLED: &str = "keyroll_azure_throttled_total";
/// Histogram: `Retry-After` of failed Azure answers, by `target` and `operation`.
pub const AZURE_RETRY_AFTER: &str = "keyroll_azure_retry_after_seconds";

/// Label: a key or token cache's name.
pub const LABEL_SOURCE: &str = "source";
/// Label: how a load, fetch, sign or validation ended.
pub const LABEL_OUTCOME: &str = "outcome";
/// Label: why a validation was refused (or how it was accepted).
pub const LABEL_REASON: &str = "reason";
/// Label: a validator's name.
pub const LABEL_VALIDATOR: &str = "validator";
/// Label: a vault host, or `entra`.
pub const LABEL_TARGET: &str = "target";
/// Label: an Azure request's operation.
pub const LABEL_OPERATION: &str = "operation";
/// Label: an Azure answer's status class.
pub const LABEL_STATUS: &str = "status";
