//! Docker engine calls over the mounted socket (bollard, version negotiated): find and confirm
//! the own container, create and start the successor, roll it back, and — in the successor —
//! take over: stop and remove the old container, then rename to the canonical name.
use std::path::Path;

use bollard::errors::Error as BollardError;
use bollard::models::{ContainerInspectResponse, NetworkConnectRequest};
use bollard::query_parameters::{
    CreateContainerOptions, RemoveContainerOptions, RenameContainerOptions, StopContainerOptions,
};
use bollard::Docker;
use tether_protocol::Token;

use super::container_id::{self, short_id, IdSource};
use super::successor::{self, LABEL_CANONICAL_NAME, LABEL_REPLACES};

/// Seconds the old container gets to stop gracefully.
pub const STOP_TIMEOUT_SECS: i32 = 10;

/// What went wrong talking to the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DockerError {
    /// No socket at the configured path.
    #[error("no Docker socket at {0}")]
    NoSocket(String),
    /// No candidate id was confirmed by an inspect.
    #[error("cannot find this delegate's own container (set TETHER_CONTAINER_ID)")]
    NotInContainer,
    /// The successor spec could not be built.
    #[error(transparent)]
    Spec(#[from] successor::SpecError),
    /// An engine call failed.
    #[error("Docker engine: {0}")]
    Engine(#[from] BollardError),
}

/// A connection to the engine that runs this delegate's container.
#[derive(Debug, Clone)]
pub struct DockerHost {
    docker: Docker,
    own_id: String,
}

fn is_not_found(err: &BollardError) -> bool {
    matches!(err, BollardError::DockerResponseServerError { status_code: 404, .. })
}

fn is_not_modified(err: &BollardError) -> bool {
    matches!(err, BollardError::DockerResponseServerError { status_code: 304, .. })
}

impl DockerHost {
    /// Connects to the engine at `socket` and finds the own container: `override_id`, then
    /// `/proc/self/mountinfo`, `/proc/self/cgroup`, `hostname`; each candidate is confirmed
    /// with an inspect.
    pub async fn discover(
        socket: &Path,
        override_id: Option<&str>,
        hostname: Option<&str>,
    ) -> Result<Self, DockerError> {
        if !socket.exists() {
            return Err(DockerError::NoSocket(socket.display().to_string()));
        }
        let docker = Docker::connect_with_unix(&socket.to_string_lossy(), 30, bollard::API_DEFAULT_VERSION)?
            .negotiate_version()
            .await?;
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok();
        let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok();
        let candidates =
            container_id::candidates(override_id, mountinfo.as_deref(), cgroup.as_deref(), hostname);
        for (candidate, source) in candidates {
            match docker.inspect_container(&candidate, None).await {
                Ok(inspect) => {
                    let Some(id) = inspect.id else { continue };
                    let confirmed = match source {
                        IdSource::Override | IdSource::Hostname => id.starts_with(&candidate),
                        IdSource::Mountinfo | IdSource::Cgroup => id == candidate,
                    };
                    if confirmed {
                        tracing::debug!(container = %short_id(&id), ?source, "own container found");
                        return Ok(Self { docker, own_id: id });
                    }
                }
                Err(err) if is_not_found(&err) => continue,
                Err(err) => return Err(err.into()),
            }
        }
        Err(DockerError::NotInContainer)
    }

    /// The own container id (64 hex).
    pub fn own_id(&self) -> &str {
        &self.own_id
    }

    /// Inspects the own container.
    pub async fn inspect_self(&self) -> Result<ContainerInspectResponse, DockerError> {
        Ok(self.docker.inspect_container(&self.own_id, None).await?)
    }

    /// Creates, wires and starts the successor carrying `token`; returns its id. On failure
    /// after create, the half-made successor is removed.
    pub async fn start_successor(&self, token: &Token) -> Result<String, DockerError> {
        let inspect = self.inspect_self().await?;
        let spec = successor::successor_spec(&inspect, &token.expose())?;
        // A leftover from an earlier attempt would block the name.
        self.remove_quietly(&spec.name).await;
        let options =
            CreateContainerOptions { name: Some(spec.name.clone()), ..CreateContainerOptions::default() };
        let created = self.docker.create_container(Some(options), spec.body).await?;
        let id = created.id;
        let wired = async {
            for (network, endpoint) in spec.extra_networks {
                let request =
                    NetworkConnectRequest { container: id.clone(), endpoint_config: Some(endpoint) };
                self.docker.connect_network(&network, request).await?;
            }
            self.docker.start_container(&id, None).await
        };
        if let Err(err) = wired.await {
            self.remove_quietly(&id).await;
            return Err(err.into());
        }
        Ok(id)
    }

    /// Force-removes a container, ignoring "not found"; logs other failures.
    pub async fn remove_quietly(&self, id: &str) {
        let options = RemoveContainerOptions { force: true, ..RemoveContainerOptions::default() };
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => {}
            Err(err) if is_not_found(&err) => {}
            Err(err) => tracing::warn!(container = %id, error = %err, "could not remove container"),
        }
    }

    /// In a successor, after it authenticated: stops and removes the container it replaces and
    /// renames itself to the canonical name. Returns the replaced id, or `None` when this
    /// container replaces nothing (or already took over).
    pub async fn take_over(&self) -> Result<Option<String>, DockerError> {
        let inspect = self.inspect_self().await?;
        let labels = inspect.config.as_ref().and_then(|c| c.labels.clone()).unwrap_or_default();
        let (Some(old_id), Some(canonical)) = (labels.get(LABEL_REPLACES), labels.get(LABEL_CANONICAL_NAME))
        else {
            return Ok(None);
        };
        let current_name = inspect.name.as_deref().unwrap_or_default().trim_start_matches('/');
        if current_name == canonical || *old_id == self.own_id {
            return Ok(None);
        }
        let stop = StopContainerOptions { t: Some(STOP_TIMEOUT_SECS), signal: None };
        match self.docker.stop_container(old_id, Some(stop)).await {
            Ok(()) => {}
            Err(err) if is_not_found(&err) || is_not_modified(&err) => {}
            Err(err) => return Err(err.into()),
        }
        let remove = RemoveContainerOptions { force: true, ..RemoveContainerOptions::default() };
        match self.docker.remove_container(old_id, Some(remove)).await {
            Ok(()) => {}
            Err(err) if is_not_found(&err) => {}
            Err(err) => return Err(err.into()),
        }
        let rename = RenameContainerOptions { name: canonical.clone() };
        self.docker.rename_container(&self.own_id, rename).await?;
        Ok(Some(old_id.clone()))
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixListener;

    use super::*;

    /// A Docker engine on a Unix socket that answers `/version` and, for any container, an
    /// inspect whose `Id` is `id`.
    async fn fake_engine(dir: &Path, id: &'static str) -> std::path::PathBuf {
        let socket = dir.join("docker.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    loop {
                        let Ok(n) = stream.read(&mut buf).await else { return };
                        if n == 0 {
                            return;
                        }
                        request.extend_from_slice(buf.get(..n).unwrap_or_default());
                        let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                        let head =
                            String::from_utf8_lossy(request.get(..end).unwrap_or_default()).into_owned();
                        request.drain(..end + 4);
                        let body = if head.contains("/version ") {
                            r#"{"ApiVersion":"1.41","Version":"20.10.0"}"#.to_owned()
                        } else {
                            serde_json::json!({ "Id": id, "Name": "/x" }).to_string()
                        };
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if stream.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        socket
    }

    #[tokio::test]
    async fn an_engine_answering_a_short_or_odd_id_does_not_panic_discovery() {
        // The debug line that shortens the id is evaluated only when debug is enabled.
        let subscriber =
            tracing_subscriber::fmt().with_max_level(tracing::Level::TRACE).with_test_writer().finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        for (id, candidate) in [("abc", "abc"), ("aaaaaaaaaaaé-container", "aaaa")] {
            let dir = tempfile::tempdir().unwrap();
            let socket = fake_engine(dir.path(), id).await;
            let host = DockerHost::discover(&socket, Some(candidate), None).await.unwrap();
            assert_eq!(host.own_id(), id);
        }
    }
}
