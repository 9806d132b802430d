//! The server: one TCP port on 127.0.0.1 that speaks HTTPS (and plain HTTP, detected from the
//! first byte, for the managed-identity endpoint), request dispatch to the vault, Entra,
//! managed-identity and admin handlers, fault injection, counters and request logging.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};

use crate::admin::{FaultAction, Faults};
use crate::clock::Clock;
use crate::entra::Entra;
use crate::store::Store;
use crate::tls::TlsMaterial;
use crate::vault::VaultRoute;
use crate::{EmulatorBuilder, EmulatorHandle, Error};

/// Largest request body accepted.
const MAX_BODY: usize = 4 * 1024 * 1024;

/// State shared by every connection of one emulator.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) port: u16,
    pub(crate) authority_url: url::Url,
    pub(crate) tenant_id: String,
    pub(crate) accept_any_token: bool,
    pub(crate) token_lifetime: i64,
    pub(crate) clock: Clock,
    pub(crate) store: Mutex<Store>,
    pub(crate) state_dir: Option<PathBuf>,
    pub(crate) entra: Entra,
    pub(crate) faults: Faults,
    pub(crate) counters: Mutex<BTreeMap<String, u64>>,
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    /// Parses a URL this emulator built; falls back to the authority URL for a malformed one
    /// (a vault name with characters a host cannot hold).
    pub(crate) fn url(&self, s: &str) -> url::Url {
        url::Url::parse(s).unwrap_or_else(|_| self.authority_url.clone())
    }

    pub(crate) fn vault_resource(&self) -> String {
        format!("https://vault.localhost:{}", self.port)
    }

    pub(crate) fn authority(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    pub(crate) fn issuer(&self, tenant: &str) -> String {
        format!(
            "{}/{}/v2.0",
            self.authority(),
            self.entra.tenant_for(tenant, &self.tenant_id)
        )
    }

    pub(crate) fn token_endpoint(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/token", self.authority())
    }

    /// Saves the store to the state directory, if there is one.
    pub(crate) fn persist(&self, store: &Store) {
        if let Some(dir) = &self.state_dir
            && let Err(e) = store.save(dir)
        {
            tracing::warn!(error = %e, "could not save the emulator state");
        }
    }

    fn count(&self, operation: &str) {
        *lock(&self.counters)
            .entry(operation.to_string())
            .or_default() += 1;
    }
}

/// A parsed request, body collected.
#[derive(Debug)]
pub(crate) struct Req {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) query: Vec<(String, String)>,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) peer: SocketAddr,
    pub(crate) tls: bool,
}

impl Req {
    pub(crate) fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `Host` header, lowercased (`name.vault.localhost:port`).
    pub(crate) fn host(&self, port: u16) -> String {
        self.header("host")
            .map(str::to_ascii_lowercase)
            .unwrap_or_else(|| format!("localhost:{port}"))
    }

    /// `https://{host}` (or `http://` for plain connections).
    pub(crate) fn base_url(&self, port: u16) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.host(port))
    }
}

/// The response type every handler returns.
pub(crate) type Resp = http::Response<Full<Bytes>>;

/// A JSON response.
pub(crate) fn json_response(status: StatusCode, value: &Value) -> Resp {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut resp = http::Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

/// A Key Vault shaped error: `{"error":{"code","message"}}`.
pub(crate) fn error_response(status: StatusCode, code: &str, message: &str) -> Resp {
    json_response(
        status,
        &serde_json::json!({"error": {"code": code, "message": message}}),
    )
}

/// Which part of the emulator a request is for.
enum Route {
    Admin,
    Vault(String, VaultRoute),
    Entra(crate::entra::EntraRoute),
    NotFound,
}

impl Route {
    fn operation(&self) -> &'static str {
        match self {
            Route::Admin => "admin",
            Route::Vault(_, r) => r.operation(),
            Route::Entra(r) => r.operation(),
            Route::NotFound => "unknown",
        }
    }
}

/// The vault addressed by a `Host` header: `name.vault.localhost[:port]` → `name`; plain
/// `localhost`, `vault.localhost` or an IP → `default`.
pub(crate) fn vault_from_host(host: &str) -> Option<String> {
    let host = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.split(':').next().unwrap_or("")
    };
    let host = host.trim_end_matches('.');
    if let Some(name) = host.strip_suffix(".vault.localhost") {
        if !name.is_empty() && !name.contains('.') {
            return Some(name.to_string());
        }
        return None;
    }
    if host == "localhost" || host == "vault.localhost" || host.parse::<std::net::IpAddr>().is_ok()
    {
        return Some("default".to_string());
    }
    None
}

fn classify(req: &Req, port: u16) -> Route {
    let segments: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
    if segments.first() == Some(&"_admin") {
        return Route::Admin;
    }
    let host = req.host(port);
    let vault_host = host
        .split(':')
        .next()
        .unwrap_or("")
        .ends_with(".vault.localhost");
    if vault_host
        || matches!(
            segments.first(),
            Some(&("keys" | "certificates" | "secrets"))
        )
    {
        if let (Some(vault), Some(route)) = (
            vault_from_host(&host),
            VaultRoute::parse(&req.method, &segments),
        ) {
            return Route::Vault(vault, route);
        }
        return Route::NotFound;
    }
    match crate::entra::EntraRoute::parse(&req.method, &segments) {
        Some(r) => Route::Entra(r),
        None => Route::NotFound,
    }
}

/// Handles one request; `Err` closes the connection (an injected outage).
async fn handle(shared: Arc<Shared>, req: Req) -> Result<Resp, FaultAction> {
    let route = classify(&req, shared.port);
    if let Route::Admin = route {
        if !req.peer.ip().is_loopback() {
            return Ok(error_response(
                StatusCode::FORBIDDEN,
                "Forbidden",
                "The admin API answers loopback clients only.",
            ));
        }
        return Ok(crate::admin::handle_http(&shared, &req));
    }
    let operation = route.operation();
    let vault_name = match &route {
        Route::Vault(v, _) => Some(v.as_str()),
        _ => None,
    };
    if let Some(action) = shared.faults.take(operation, vault_name) {
        match action {
            FaultAction::Delay(d) => tokio::time::sleep(d).await,
            FaultAction::Respond(resp) => {
                shared.count(operation);
                return Ok(resp);
            }
            FaultAction::Drop => {
                shared.count(operation);
                return Err(FaultAction::Drop);
            }
        }
    }
    let resp = match route {
        Route::Vault(vault, vroute) => match crate::vault::authorize(&shared, &req) {
            Err(challenge) => challenge,
            Ok(()) => {
                shared.count(operation);
                crate::vault::handle(&shared, &req, &vault, vroute)
            }
        },
        Route::Entra(eroute) => {
            shared.count(operation);
            crate::entra::handle(&shared, &req, eroute)
        }
        Route::NotFound | Route::Admin => error_response(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("The requested resource {} was not found.", req.path),
        ),
    };
    Ok(resp)
}

async fn serve_request(
    shared: Arc<Shared>,
    peer: SocketAddr,
    tls: bool,
    request: http::Request<Incoming>,
) -> Result<Resp, std::io::Error> {
    let start = Instant::now();
    let (parts, body) = request.into_parts();
    let method = parts.method.clone();
    let path = parts.uri.path().to_string();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            let resp = error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "BadParameter",
                "The request body is too large or could not be read.",
            );
            log(&method, &path, resp.status(), start);
            return Ok(resp);
        }
    };
    let query = parts
        .uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let req = Req {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query,
        headers: parts.headers,
        body,
        peer,
        tls,
    };
    match handle(shared, req).await {
        Ok(resp) => {
            log(&method, &path, resp.status(), start);
            Ok(resp)
        }
        Err(_) => {
            tracing::info!(%method, path = %path, status = "connection dropped (injected outage)", latency_ms = start.elapsed().as_millis() as u64, "request");
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "injected outage",
            ))
        }
    }
}

fn log(method: &Method, path: &str, status: StatusCode, start: Instant) {
    tracing::info!(
        %method,
        path = %path,
        status = status.as_u16(),
        latency_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
        "request"
    );
}

async fn serve_connection(
    shared: Arc<Shared>,
    tls: tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
) {
    let mut first = [0u8; 1];
    let is_tls = match stream.peek(&mut first).await {
        Ok(1) => first[0] == 0x16,
        _ => return,
    };
    let service = |tls_flag: bool| {
        let shared = shared.clone();
        hyper::service::service_fn(move |req| serve_request(shared.clone(), peer, tls_flag, req))
    };
    let builder = hyper::server::conn::http1::Builder::new();
    if is_tls {
        match tls.accept(stream).await {
            Ok(s) => {
                let _ = builder
                    .serve_connection(TokioIo::new(s), service(true))
                    .await;
            }
            Err(e) => tracing::debug!(error = %e, "TLS handshake failed"),
        }
    } else {
        let _ = builder
            .serve_connection(TokioIo::new(stream), service(false))
            .await;
    }
}

/// Binds the port and spawns the accept loop.
pub(crate) async fn start(b: EmulatorBuilder) -> Result<EmulatorHandle, Error> {
    let temp_dir = match &b.state_dir {
        Some(_) => None,
        None => Some(
            tempfile::Builder::new()
                .prefix("keyroll-emulator-")
                .tempdir()?,
        ),
    };
    let state_dir = b.state_dir.clone();
    let files_dir = state_dir
        .clone()
        .or_else(|| temp_dir.as_ref().map(|t| t.path().to_path_buf()))
        .ok_or_else(|| Error::State("no directory for the CA file".into()))?;
    std::fs::create_dir_all(&files_dir)?;
    let tls_material = TlsMaterial::load_or_generate(state_dir.as_deref())?;
    let ca_path = files_dir.join("ca.pem");
    if state_dir.is_none() {
        std::fs::write(&ca_path, tls_material.ca_pem.as_bytes())?;
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(tls_material.server_config()?);

    let mut store = Store::load(state_dir.as_deref())?;
    let tenant_id = b
        .tenant_id
        .clone()
        .or_else(|| store.tenant_id.clone())
        .unwrap_or_else(crate::entra::random_guid);
    store.tenant_id = Some(tenant_id.clone());
    if store.entra_keys.is_empty() {
        store.entra_keys.push(crate::crypto::KeyMaterial::generate(
            crate::crypto::KeySpec::RSA_2048,
        )?);
    }

    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, b.port))).await?;
    let port = listener.local_addr()?.port();
    let entra = Entra::new(&b, &store.entra_keys)?;
    let lifetime = b.token_lifetime.unwrap_or(Duration::from_secs(3599));
    let authority_url = url::Url::parse(&format!("https://localhost:{port}/"))
        .map_err(|e| Error::State(e.to_string()))?;
    let shared = Arc::new(Shared {
        port,
        authority_url,
        tenant_id,
        accept_any_token: b.accept_any_token,
        token_lifetime: i64::try_from(lifetime.as_secs()).unwrap_or(3599).max(1),
        clock: Clock::default(),
        store: Mutex::new(store),
        state_dir,
        entra,
        faults: Faults::default(),
        counters: Mutex::new(BTreeMap::new()),
    });
    shared.persist(&lock(&shared.store));

    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let loop_shared = shared.clone();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop_rx.changed() => break,
                accepted = listener.accept() => {
                    let Ok((stream, peer)) = accepted else { continue };
                    let shared = loop_shared.clone();
                    let acceptor = acceptor.clone();
                    let mut conn_stop = stop_rx.clone();
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = serve_connection(shared, acceptor, stream, peer) => {}
                            _ = conn_stop.changed() => {}
                        }
                    });
                }
            }
        }
    });

    let http_client = crate::tls::localhost_http_client(&tls_material.ca_pem)?;
    Ok(EmulatorHandle {
        shared,
        ca_pem: tls_material.ca_pem,
        ca_path,
        http_client,
        stop: Some(stop_tx),
        task: Some(task),
        _temp_dir: temp_dir,
    })
}

/// Command-line options of `keyroll-emulator` (and `keyroll emulator`).
#[derive(Debug, Clone, Default, clap::Args)]
#[non_exhaustive]
pub struct ServeArgs {
    /// TCP port on 127.0.0.1 (0 = ephemeral).
    #[arg(long, default_value_t = 0, env = "KEYROLL_EMULATOR_PORT")]
    pub port: u16,
    /// Directory that keeps the CA, the Entra signing keys and the vaults across restarts.
    #[arg(long, env = "KEYROLL_EMULATOR_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Accept any bearer token at the vault.
    #[arg(long)]
    pub accept_any_token: bool,
    /// Register an Entra confidential client: `CLIENT_ID=SECRET` (repeatable).
    #[arg(long = "client-secret", value_name = "CLIENT_ID=SECRET")]
    pub client_secrets: Vec<String>,
    /// The managed-identity endpoint's `X-IDENTITY-HEADER` secret (random when absent).
    #[arg(long, env = "KEYROLL_EMULATOR_IDENTITY_HEADER")]
    pub identity_header: Option<String>,
    /// The default tenant id (random when absent, kept in the state directory).
    #[arg(long)]
    pub tenant_id: Option<String>,
}

impl ServeArgs {
    /// The builder these options describe.
    pub fn builder(&self) -> Result<EmulatorBuilder, Error> {
        let mut b = crate::Emulator::builder()
            .port(self.port)
            .accept_any_token(self.accept_any_token);
        if let Some(dir) = &self.state_dir {
            b = b.state_dir(dir);
        }
        for pair in &self.client_secrets {
            let Some((id, secret)) = pair.split_once('=') else {
                return Err(Error::Refused {
                    code: "BadParameter".into(),
                    message: format!("--client-secret wants CLIENT_ID=SECRET, got {pair:?}"),
                });
            };
            b = b.client_secret(id, secret);
        }
        if let Some(h) = &self.identity_header {
            b = b.managed_identity(h);
        }
        if let Some(t) = &self.tenant_id {
            b = b.tenant_id(t);
        }
        Ok(b)
    }
}

/// Starts the emulator, prints one line `READY {json}` on stdout (the facts of
/// [`EmulatorHandle::ready_json`]) and serves until Ctrl-C.
pub async fn run(args: ServeArgs) -> Result<(), Error> {
    let emu = args.builder()?.start().await?;
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        writeln!(out, "READY {}", emu.ready_json())?;
        out.flush()?;
    }
    tokio::signal::ctrl_c().await?;
    emu.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vault_names_come_from_the_host() {
        assert_eq!(
            vault_from_host("myvault.vault.localhost:8443").as_deref(),
            Some("myvault")
        );
        assert_eq!(
            vault_from_host("127.0.0.1:8443").as_deref(),
            Some("default")
        );
        assert_eq!(vault_from_host("[::1]:8443").as_deref(), Some("default"));
        assert_eq!(vault_from_host("a.b.vault.localhost:1"), None);
        assert_eq!(vault_from_host("example.com"), None);
    }
}
