//! Routing: axum routers for the vaults (chosen by a `*.vault.localhost` host or a
//! `/keys`, `/certificates`, `/secrets` path), for the identity services and for the admin
//! API, and the layers every operation passes, outermost first:
//!
//! 1. its name ([`Operation`]), for counters, faults and limits;
//! 2. the counter (every request but the vault's 401 challenges);
//! 3. injected faults ([`crate::faults`]);
//! 4. for vault operations, authentication ([`crate::vault::auth`]) and the service limits
//!    ([`crate::limits`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), keyroll_emulator::Error> {
//! let emu = keyroll_emulator::Emulator::builder().start().await?;
//! assert_eq!(emu.admin().counter("keys.sign"), 0);
//! # Ok(()) }
//! ```

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::Response;
use axum::routing::MethodRouter;
use http::StatusCode;

use crate::server::Shared;
use crate::vault::auth::Challenged;
use crate::vault::error_response;

/// The operation a route serves (`keys.sign`), and whether it is a vault operation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Operation {
    pub(crate) name: &'static str,
    pub(crate) vault: bool,
}

async fn count(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let name = req.extensions().get::<Operation>().map(|o| o.name);
    let resp = next.run(req).await;
    if let Some(name) = name
        && resp.extensions().get::<Challenged>().is_none()
    {
        shared.count(name);
    }
    resp
}

async fn name(operation: Operation, mut req: Request, next: Next) -> Response {
    req.extensions_mut().insert(operation);
    next.run(req).await
}

fn named(
    shared: &Arc<Shared>,
    operation: Operation,
    route: MethodRouter<Arc<Shared>>,
) -> MethodRouter<Arc<Shared>> {
    route
        .layer(from_fn_with_state(shared.clone(), crate::faults::inject))
        .layer(from_fn_with_state(shared.clone(), count))
        .layer(axum::middleware::from_fn(move |req, next| {
            name(operation, req, next)
        }))
}

/// A vault route: named, counted, open to faults, authenticated and limited.
pub(crate) fn vault_operation(
    shared: &Arc<Shared>,
    name: &'static str,
    route: MethodRouter<Arc<Shared>>,
) -> MethodRouter<Arc<Shared>> {
    let route = route
        .layer(from_fn_with_state(shared.clone(), crate::limits::enforce))
        .layer(from_fn_with_state(
            shared.clone(),
            crate::vault::auth::authorize,
        ));
    named(shared, Operation { name, vault: true }, route)
}

/// An identity route: named, counted and open to faults.
pub(crate) fn service_operation(
    shared: &Arc<Shared>,
    name: &'static str,
    route: MethodRouter<Arc<Shared>>,
) -> MethodRouter<Arc<Shared>> {
    named(shared, Operation { name, vault: false }, route)
}

async fn not_found(req: Request) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("The requested resource {} was not found.", req.uri().path()),
    )
}

async fn method_not_allowed(req: Request) -> Response {
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        &format!(
            "The method {} is not supported on {} by the emulator.",
            req.method(),
            req.uri().path()
        ),
    )
}

/// The two routers: vaults, and everything else (identity and admin).
#[derive(Debug, Clone)]
pub(crate) struct Routers {
    pub(crate) vault: Router,
    pub(crate) service: Router,
}

impl Routers {
    pub(crate) fn new(shared: &Arc<Shared>) -> Routers {
        let vault = crate::vault::routes(shared)
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .with_state(shared.clone());
        let service = crate::identity::routes(shared)
            .nest("/_admin", crate::admin::http::routes(shared))
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .with_state(shared.clone());
        Routers { vault, service }
    }

    /// The router for a request: a vault host, or a Key Vault path on a bare host, goes to
    /// the vaults.
    pub(crate) fn pick(&self, host: &str, path: &str) -> Router {
        let vault_host = host
            .split(':')
            .next()
            .unwrap_or("")
            .ends_with(".vault.localhost");
        let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
        let vault_path = matches!(first, "keys" | "certificates" | "secrets");
        if first != "_admin" && (vault_host || vault_path) {
            self.vault.clone()
        } else {
            self.service.clone()
        }
    }
}
