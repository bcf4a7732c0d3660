//! The simulator's HTTPS API server (axum over rustls, a CA generated per run, on
//! 127.0.0.1 port 0): GET and PATCH of one named object under
//! `/api/v1/namespaces/{ns}/{pods|secrets}/{name}` and
//! `/apis/apps/v1/namespaces/{ns}/{deployments|replicasets|statefulsets|daemonsets}/{name}`,
//! nothing else (404).
//! Bearer service-account token (401 otherwise), RBAC per request, metadata-only answers for
//! `Accept: …;as=PartialObjectMetadata`, merge and strategic-merge patch content types (415
//! for others), `?dryRun=All`. Fault: the answers of one kind of request dripped forever
//! ([`super::Simulator::drip`]).
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};

use super::store::{status, ApiError, Store, NAMESPACE};

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct Shared {
    /// The object store.
    pub store: Arc<Mutex<Store>>,
    /// The service account's bearer token.
    pub token: Arc<str>,
}

/// A throwaway CA and a server certificate for 127.0.0.1 and localhost signed by it; the
/// server configuration and the CA's PEM (the pods' `ca.crt`).
pub fn tls() -> Result<(rustls::ServerConfig, String)> {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "tether cluster simulator CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key)?;
    let key = rcgen::KeyPair::generate()?;
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
    let cert = params.signed_by(&key, &ca)?;
    let chain = vec![CertificateDer::from(cert.der().to_vec())];
    let key = PrivateKeyDer::try_from(key.serialize_der()).map_err(anyhow::Error::msg)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok((config, ca.pem()))
}

/// Serves the API on 127.0.0.1 port 0; returns the bound address and the server task.
pub async fn serve(
    shared: Shared,
    config: rustls::ServerConfig,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let app = Router::new()
        .route("/api/v1/namespaces/{ns}/{resource}/{name}", any(core))
        .route("/apis/apps/v1/namespaces/{ns}/{resource}/{name}", any(apps))
        .fallback(|| async {
            error(status(404, "NotFound", "the server could not find the requested resource".into()))
        })
        .with_state(shared);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding the simulator")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let tls = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(config));
    let server = axum_server::from_tcp(listener)?.acceptor(axum_server::tls_rustls::RustlsAcceptor::new(tls));
    let task = tokio::spawn(async move {
        let _ = server.serve(app.into_make_service()).await;
    });
    Ok((addr, task))
}

fn error(err: ApiError) -> Response {
    let code = StatusCode::from_u16(err.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, axum::Json(err.body)).into_response()
}

/// A request as the handlers see it.
struct Call {
    method: Method,
    group: &'static str,
    ns: String,
    resource: String,
    name: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Bytes,
}

async fn core(
    State(shared): State<Shared>,
    method: Method,
    Path((ns, resource, name)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(&shared, Call { method, group: "", ns, resource, name, query, headers, body })
}

async fn apps(
    State(shared): State<Shared>,
    method: Method,
    Path((ns, resource, name)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(&shared, Call { method, group: "apps", ns, resource, name, query, headers, body })
}

fn handle(shared: &Shared, call: Call) -> Response {
    let mut store = shared.store.lock().unwrap_or_else(PoisonError::into_inner);
    let verb = call.method.as_str().to_owned();
    let what = format!("{verb} {}/{}", call.resource, call.name);
    let result = answer(shared, &mut store, &call);
    let code = match &result {
        Ok(_) => 200,
        Err(err) => err.code,
    };
    let dry_run = call.query.as_deref().is_some_and(|q| q.split('&').any(|p| p == "dryRun=All"));
    let kind = format!("{verb} {}{}", call.resource, if dry_run { "?dryRun" } else { "" });
    if store.drip.as_deref() == Some(kind.as_str()) {
        store.requests.push(format!("{what} -> {code} (dripped)"));
        return drip();
    }
    store.requests.push(format!("{what} -> {code}"));
    match result {
        Ok(body) => (StatusCode::OK, axum::Json(body)).into_response(),
        Err(err) => error(err),
    }
}

/// A 200 whose JSON body never completes: one space every 200 ms (bounded at an hour).
fn drip() -> Response {
    let bytes = futures_util::stream::unfold(0_u32, |sent| async move {
        if sent >= 18_000 {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        Some((Ok::<_, std::io::Error>(Bytes::from_static(b" ")), sent + 1))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(axum::body::Body::from_stream(bytes))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn answer(shared: &Shared, store: &mut Store, call: &Call) -> Result<Value, ApiError> {
    let bearer = call
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer != Some(&*shared.token) {
        return Err(status(401, "Unauthorized", "Unauthorized".into()));
    }
    let known = match call.group {
        "" => ["pods", "secrets"].contains(&call.resource.as_str()),
        _ => ["deployments", "replicasets", "statefulsets", "daemonsets"].contains(&call.resource.as_str()),
    };
    if !known {
        return Err(status(404, "NotFound", "the server could not find the requested resource".into()));
    }
    if call.ns != NAMESPACE {
        // The Role binds in its own namespace only.
        store.authorize("", "namespaces-outside-the-role", "get", &call.ns)?;
    }
    let (group, resource, name) = (call.group, call.resource.as_str(), call.name.as_str());
    if call.method == Method::GET {
        let object = store.read(group, resource, name)?;
        let accept = call.headers.get("accept").and_then(|v| v.to_str().ok()).unwrap_or_default();
        if accept.contains("as=PartialObjectMetadata") {
            return Ok(json!({
                "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": object["metadata"],
            }));
        }
        return Ok(object);
    }
    if call.method == Method::PATCH {
        let content_type = call.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
        if !matches!(content_type, "application/merge-patch+json" | "application/strategic-merge-patch+json")
        {
            return Err(status(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/strategic-merge-patch+json (got {content_type})")));
        }
        let patch: Value = serde_json::from_slice(&call.body)
            .map_err(|e| status(400, "BadRequest", format!("error decoding patch: {e}")))?;
        let dry_run = call.query.as_deref().is_some_and(|q| q.split('&').any(|p| p == "dryRun=All"));
        return store.patch(group, resource, name, &patch, dry_run);
    }
    Err(status(405, "MethodNotAllowed", format!("{} is not supported by the simulator", call.method)))
}
