//! The server: one TCP port on 127.0.0.1 that speaks HTTPS (and plain HTTP, detected from the
//! first byte, for the managed-identity endpoint), hands each request to the vault or the
//! service router, logs it, and drops the connection for an injected outage.
//!
//! ```no_run
//! # async fn demo() -> Result<(), keyroll_emulator::Error> {
//! let emu = keyroll_emulator::Emulator::builder().port(0).start().await?;
//! println!("serving on 127.0.0.1:{}", emu.port());
//! emu.shutdown().await;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt as _;

use crate::clock::Clock;
use crate::faults::{DropConnection, Faults};
use crate::identity::Identity;
use crate::identity::directory::{App, Directory, FederatedCredential};
use crate::identity::workload::KubernetesIssuer;
use crate::limits::Limiter;
use crate::router::Routers;
use crate::store::Store;
use crate::tls::TlsMaterial;
use crate::{EmulatorBuilder, EmulatorHandle, Error};

/// State shared by every connection of one emulator.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) port: u16,
    pub(crate) token_lifetime: i64,
    pub(crate) clock: Clock,
    pub(crate) store: Mutex<Store>,
    pub(crate) state_dir: Option<PathBuf>,
    pub(crate) identity: Identity,
    pub(crate) faults: Faults,
    pub(crate) limiter: Limiter,
    pub(crate) counters: Mutex<BTreeMap<String, u64>>,
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether a request came over TLS.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scheme(pub(crate) bool);

impl Scheme {
    pub(crate) fn name(self) -> &'static str {
        if self.0 { "https" } else { "http" }
    }
}

/// The peer of a connection (the admin API answers loopback peers only).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub(crate) SocketAddr);

impl Shared {
    pub(crate) fn vault_resource(&self) -> String {
        format!("https://vault.localhost:{}", self.port)
    }

    /// `https://localhost:{port}`: the Entra authority.
    pub(crate) fn authority(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    /// The tenant every vault belongs to (the default tenant).
    pub(crate) fn vault_tenant(&self) -> String {
        self.identity.directory().default_tenant.clone()
    }

    /// Saves the store to the state directory, if there is one.
    pub(crate) fn persist(&self, store: &Store) {
        if let Some(dir) = &self.state_dir
            && let Err(e) = store.save(dir)
        {
            tracing::warn!(error = %e, "could not save the emulator state");
        }
    }

    pub(crate) fn count(&self, operation: &str) {
        *lock(&self.counters)
            .entry(operation.to_string())
            .or_default() += 1;
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

fn log(method: &http::Method, path: &str, status: &dyn std::fmt::Display, start: Instant) {
    tracing::info!(
        %method,
        path = %path,
        status = %status,
        latency_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
        "request"
    );
}

async fn serve_request(
    routers: Routers,
    peer: SocketAddr,
    tls: bool,
    mut request: http::Request<Incoming>,
) -> Result<axum::response::Response, std::io::Error> {
    let start = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let host = request
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
        .to_ascii_lowercase();
    request.extensions_mut().insert(Scheme(tls));
    request.extensions_mut().insert(Peer(peer));
    let router = routers.pick(&host, &path);
    let resp = match router.oneshot(request.map(axum::body::Body::new)).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    };
    if resp.extensions().get::<DropConnection>().is_some() {
        log(
            &method,
            &path,
            &"connection dropped (injected outage)",
            start,
        );
        return Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "injected outage",
        ));
    }
    log(&method, &path, &resp.status().as_u16(), start);
    Ok(resp)
}

async fn serve_connection(
    routers: Routers,
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
        let routers = routers.clone();
        hyper::service::service_fn(move |req| serve_request(routers.clone(), peer, tls_flag, req))
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
        .unwrap_or_else(crate::identity::directory::random_guid);
    store.tenant_id = Some(tenant_id.clone());
    if store.entra_keys.is_empty() {
        store.entra_keys.push(crate::crypto::KeyMaterial::generate(
            crate::crypto::KeySpec::RSA_2048,
        )?);
    }
    let kubernetes_key = match &store.kubernetes_key {
        Some(k) => k.clone(),
        None => {
            let k = crate::crypto::KeyMaterial::generate(crate::crypto::KeySpec::RSA_2048)?;
            store.kubernetes_key = Some(k.clone());
            k
        }
    };

    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, b.port))).await?;
    let port = listener.local_addr()?.port();
    let authority = format!("https://localhost:{port}");
    let mut directory = Directory::new(tenant_id, &format!("https://vault.localhost:{port}"));
    for t in &b.tenants {
        directory.add_tenant(t)?;
    }
    for app in b.apps.iter().cloned() {
        directory.add_app(app)?;
    }
    for (client_id, subject) in &b.workloads {
        directory.add_app(
            App::new(client_id).federated_credential(FederatedCredential::new(
                format!("{authority}/{}", crate::identity::workload::ISSUER_PATH),
                subject,
            )),
        )?;
    }
    for api in b.apis.iter().cloned() {
        directory.add_api(api)?;
    }
    for mi in b.user_identities.iter().cloned() {
        directory.add_user_identity(mi)?;
    }
    let identity = Identity::new(
        directory,
        b.identity_header
            .clone()
            .unwrap_or_else(crate::store::new_version),
        &store.entra_keys,
        KubernetesIssuer::new(&authority, &kubernetes_key)?,
        b.permissive,
    )?;
    let lifetime = b.token_lifetime.unwrap_or(Duration::from_secs(3599));
    let shared = Arc::new(Shared {
        port,
        token_lifetime: i64::try_from(lifetime.as_secs()).unwrap_or(3599).max(1),
        clock: Clock::default(),
        store: Mutex::new(store),
        state_dir,
        identity,
        faults: Faults::default(),
        limiter: Limiter::new(b.vault_limits.clone()),
        counters: Mutex::new(BTreeMap::new()),
    });
    shared.persist(&lock(&shared.store));
    for (namespace, name, path) in &b.token_files {
        crate::Admin::new(shared.clone()).write_service_account_token(path, namespace, name)?;
    }
    let routers = Routers::new(&shared);

    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop_rx.changed() => break,
                accepted = listener.accept() => {
                    let Ok((stream, peer)) = accepted else { continue };
                    let routers = routers.clone();
                    let acceptor = acceptor.clone();
                    let mut conn_stop = stop_rx.clone();
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = serve_connection(routers, acceptor, stream, peer) => {}
                            _ = conn_stop.changed() => {}
                        }
                    });
                }
            }
        }
    });

    let http_client = crate::tls::localhost_http_client(&tls_material.ca_pem)?;
    let tenant_id = shared.vault_tenant();
    let authority_url = url::Url::parse(&format!("{}/", shared.authority()))
        .map_err(|e| Error::State(e.to_string()))?;
    Ok(EmulatorHandle {
        shared,
        tenant_id,
        authority_url,
        ca_pem: tls_material.ca_pem,
        ca_path,
        http_client,
        stop: Some(stop_tx),
        task: Some(task),
        _temp_dir: temp_dir,
    })
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
