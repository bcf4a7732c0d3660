//! The API server calls of kubernetes mode (kube, rustls with ring): the in-cluster client
//! from the service-account directory, and the rotation itself — find the workload through
//! the pod's owner references, try its restart patch as a dry run, patch the Secret with its
//! resourceVersion as the precondition (re-read and retried on 409, bounded), then patch the
//! pod-template annotations. Once the Secret holds the new token (already proven valid) it is
//! never rolled back: a restart refused or unconfirmed after that is reported in [`Applied`],
//! and the pod continues on the new token. The whole apply runs under one deadline
//! ([`APPLY_DEADLINE`]), since a server that drips its answer keeps each read alive.
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::ByteString;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::Client;
use rustls_pki_types::pem::PemObject;
use tether_protocol::Token;
use uuid::Uuid;
use zeroize::Zeroize;

use super::plan::{self, Owner, OwnerError, Workload, WorkloadKind, DELEGATE_TOKEN, UPGRADER_TOKEN};
use crate::config::KubeSettings;

/// How many times the Secret is re-read and patched again after a 409 Conflict.
pub const SECRET_ATTEMPTS: usize = 5;
/// Longest an API server's message is quoted in an error (bytes).
const MAX_MESSAGE: usize = 300;
/// Bounds of one API request.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest a whole kubernetes apply may take (every request and retry together): the
/// read timeout restarts on every byte, so a server dripping its answer would otherwise hold
/// a rotation without an ack forever.
pub const APPLY_DEADLINE: Duration = Duration::from_secs(60);

/// Why kubernetes mode cannot be set up, or a rotation was not applied. Never carries a
/// token: text from the API server is redacted, escaped and bounded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KubeError {
    /// The in-cluster configuration is incomplete.
    #[error("kubernetes mode unavailable: {0}")]
    Setup(String),
    /// The API server answered with an error status.
    #[error("cannot {action} {object}: {code} {reason}: {message}")]
    Api {
        /// What was attempted (`get`, `patch`, `dry-run patch`).
        action: &'static str,
        /// `resource/name` in the namespace.
        object: String,
        /// HTTP status.
        code: u16,
        /// The API's reason (`Forbidden`, `NotFound`, `Conflict`, …).
        reason: String,
        /// The API's message, redacted and bounded.
        message: String,
    },
    /// No answer, or not one that could be read.
    #[error("cannot {action} {object}: {detail}")]
    Unreachable {
        /// What was attempted.
        action: &'static str,
        /// `resource/name`.
        object: String,
        /// What went wrong (redacted, bounded).
        detail: String,
    },
    /// The Secret (or the workload) kept changing under the precondition.
    #[error("cannot patch {object}: its resourceVersion changed {attempts} times in a row (409 Conflict each time)")]
    Conflict {
        /// `secrets/name` or the workload.
        object: String,
        /// Attempts made.
        attempts: usize,
    },
    /// The Secret has no `DELEGATE_TOKEN`.
    #[error("{object} has no {key} key: it is not the delegate's Secret (set TETHER_K8S_SECRET)")]
    MissingKey {
        /// `secrets/name`.
        object: String,
        /// The missing key.
        key: &'static str,
    },
    /// The apply's overall deadline passed before the Secret write was sent.
    #[error("no complete answer from the API server within the {seconds} s deadline of a kubernetes apply (while {during})")]
    Deadline {
        /// The deadline in seconds.
        seconds: u64,
        /// The step that was under way.
        during: &'static str,
    },
    /// The pod's owners lead to no restartable workload.
    #[error(transparent)]
    Owner(#[from] OwnerError),
}

/// What a rotation did. Every outcome here leaves the pod on the new token: the Secret holds
/// it (or was sent it), and is never restored to the old one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The workload restarted.
    pub workload: Workload,
    /// The keys written, or none when the Secret already held the new token.
    pub keys_written: Vec<&'static str>,
    /// False when a sibling pod had already restarted the workload for this rotation, or
    /// when the restart is [`Unconfirmed`].
    pub restarted: bool,
    /// A step after the Secret write that was refused or whose answer did not arrive.
    pub unconfirmed: Option<Unconfirmed>,
}

/// A step that failed or went unanswered once the Secret write had been sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unconfirmed {
    /// The Secret holds the new token; the rolling restart was refused or its answer lost
    /// (the reason: redacted, bounded).
    Restart(String),
    /// The Secret write was sent but its answer did not arrive (the reason); it may have
    /// landed, so it is not undone, and no restart was requested.
    SecretWrite(String),
}

/// The in-cluster API of this delegate's pod: its namespace, Secret and pod name.
#[derive(Clone)]
pub struct Cluster {
    client: Client,
    namespace: String,
    secret: String,
    pod: String,
    deadline: Duration,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("namespace", &self.namespace)
            .field("secret", &self.secret)
            .field("pod", &self.pod)
            .finish_non_exhaustive()
    }
}

fn read_file(dir: &Path, name: &str) -> Result<Vec<u8>, KubeError> {
    let path = dir.join(name);
    std::fs::read(&path)
        .map_err(|err| KubeError::Setup(format!("cannot read {}: {}", path.display(), err.kind())))
}

impl Cluster {
    /// The client of the API server at `KUBERNETES_SERVICE_HOST:PORT`, trusting the
    /// service-account `ca.crt` and authenticating with its `token` (re-read as the kubelet
    /// rotates it), in the namespace of its `namespace` file. No request is made here.
    pub fn connect(settings: &KubeSettings) -> Result<Self, KubeError> {
        let host = settings
            .service_host
            .as_deref()
            .ok_or_else(|| KubeError::Setup("KUBERNETES_SERVICE_HOST is not set (not in a pod?)".into()))?;
        let dir = &settings.serviceaccount_dir;
        let token = dir.join("token");
        if !token.is_file() {
            return Err(KubeError::Setup(format!("no service-account token at {}", token.display())));
        }
        let namespace = String::from_utf8_lossy(&read_file(dir, "namespace")?).trim().to_owned();
        if !crate::config::is_object_name(&namespace) {
            return Err(KubeError::Setup(format!(
                "{} does not hold a namespace name",
                dir.join("namespace").display()
            )));
        }
        let ca = read_file(dir, "ca.crt")?;
        let roots = rustls_pki_types::CertificateDer::pem_slice_iter(&ca)
            .map(|c| c.map(|c| c.to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| KubeError::Setup(format!("{} is not valid PEM", dir.join("ca.crt").display())))?;
        if roots.is_empty() {
            return Err(KubeError::Setup(format!("{} holds no certificate", dir.join("ca.crt").display())));
        }
        let authority = if host.contains(':') {
            format!("[{host}]:{}", settings.service_port)
        } else {
            format!("{host}:{}", settings.service_port)
        };
        let url = format!("https://{authority}")
            .parse()
            .map_err(|_| KubeError::Setup("KUBERNETES_SERVICE_HOST is not a host name or address".into()))?;
        let mut config = kube::Config::new(url);
        config.default_namespace = namespace.clone();
        config.root_cert = Some(roots);
        config.connect_timeout = Some(CONNECT_TIMEOUT);
        config.read_timeout = Some(READ_TIMEOUT);
        config.write_timeout = Some(READ_TIMEOUT);
        config.auth_info.token_file = Some(token.display().to_string());
        let client = Client::try_from(config).map_err(|err| {
            KubeError::Setup(format!(
                "cannot build the API client: {}",
                plan::peer_text(&err.to_string(), MAX_MESSAGE)
            ))
        })?;
        Ok(Self {
            client,
            namespace,
            secret: settings.secret.clone(),
            pod: settings.pod_name.clone(),
            deadline: APPLY_DEADLINE,
        })
    }

    /// The same cluster with another overall apply deadline (tests use a short one).
    #[must_use]
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// `secrets/<name>` in the namespace, as errors name it.
    fn secret_object(&self) -> String {
        format!("secrets {}/{}", self.namespace, self.secret)
    }

    /// Applies rotation `rotation_id`: the Secret's `DELEGATE_TOKEN` (and `UPGRADER_TOKEN`
    /// when present) set to `token`, then the workload's rolling restart, all within the
    /// apply deadline. An error means the Secret write was never sent (or was refused) and
    /// the Secret is unchanged; once the write was sent, the outcome is an [`Applied`] (with
    /// [`Applied::unconfirmed`] saying what did not complete) and the Secret is never rolled
    /// back: the new token is proven, and a sibling pod or a landed restart may already use it.
    pub async fn apply(&self, rotation_id: Uuid, token: &Token) -> Result<Applied, KubeError> {
        let deadline = tokio::time::Instant::now() + self.deadline;
        let seconds = self.deadline.as_secs();
        let within = |during: &'static str| move |_| KubeError::Deadline { seconds, during };
        let workload = tokio::time::timeout_at(deadline, self.find_workload())
            .await
            .map_err(within("finding the workload"))??;
        let workloads = self.workloads(workload.kind);
        let object = format!("{} in {}", workload, self.namespace);
        let prepare = async {
            let current =
                workloads.get(&workload.name).await.map_err(|err| api_error("get", object.clone(), err))?;
            let already = restarted_by(&current, rotation_id);
            if !already {
                // Refused restarts (RBAC) are found before the Secret is touched.
                let restart =
                    plan::restart_patch(rotation_id, &plan::rfc3339(crate::state::unix_now()), None);
                workloads
                    .patch(&workload.name, &PatchParams::default().dry_run(), &Patch::Strategic(&restart))
                    .await
                    .map_err(|err| api_error("dry-run patch", object.clone(), err))?;
            }
            Ok::<_, KubeError>(already)
        };
        let already =
            tokio::time::timeout_at(deadline, prepare).await.map_err(within("checking the workload"))??;
        let sent = AtomicBool::new(false);
        let written = match tokio::time::timeout_at(deadline, self.write_secret(token, &sent)).await {
            Ok(Ok(written)) => written,
            Ok(Err(err)) if !sent.load(Ordering::SeqCst) => return Err(err),
            Err(_) if !sent.load(Ordering::SeqCst) => {
                return Err(KubeError::Deadline { seconds, during: "reading the Secret" })
            }
            unanswered => {
                let reason = match unanswered {
                    Ok(Err(err)) => err.to_string(),
                    _ => format!("no answer within the {seconds} s deadline of a kubernetes apply"),
                };
                tracing::warn!(secret = %self.secret_object(), %reason,
                    "the Secret write was sent but not confirmed; it is not undone and no restart is requested");
                return Ok(Applied {
                    workload,
                    keys_written: Vec::new(),
                    restarted: false,
                    unconfirmed: Some(Unconfirmed::SecretWrite(reason)),
                });
            }
        };
        let keys_written: Vec<&'static str> = written.unwrap_or_default();
        if already {
            return Ok(Applied { workload, keys_written, restarted: false, unconfirmed: None });
        }
        // From here on the Secret holds the new token: whatever the restart does, it stays.
        let restart =
            tokio::time::timeout_at(deadline, self.restart(&workloads, &workload, rotation_id)).await;
        let (restarted, unconfirmed) = match restart {
            Ok(Ok(restarted)) => (restarted, None),
            Ok(Err(err)) => (false, Some(Unconfirmed::Restart(err.to_string()))),
            Err(_) => (
                false,
                Some(Unconfirmed::Restart(format!(
                    "no answer to the restart of {object} within the {seconds} s deadline of a kubernetes apply"
                ))),
            ),
        };
        if let Some(Unconfirmed::Restart(reason)) = &unconfirmed {
            tracing::warn!(secret = %self.secret_object(), %workload, %reason,
                "the rolling restart was refused or unconfirmed after the Secret was written; the Secret keeps the new token");
        }
        Ok(Applied { workload, keys_written, restarted, unconfirmed })
    }

    /// Sets the restart annotations under the workload's resourceVersion, re-reading after a
    /// 409 (at most [`SECRET_ATTEMPTS`] times); `false` when it already carries this rotation
    /// (the other replica restarted it): one rollout per rotation, however many pods apply it.
    async fn restart(
        &self,
        workloads: &Api<DynamicObject>,
        workload: &Workload,
        rotation_id: Uuid,
    ) -> Result<bool, KubeError> {
        let object = format!("{} in {}", workload, self.namespace);
        for _ in 0..SECRET_ATTEMPTS {
            let current =
                workloads.get(&workload.name).await.map_err(|err| api_error("get", object.clone(), err))?;
            if restarted_by(&current, rotation_id) {
                return Ok(false);
            }
            let version = current.metadata.resource_version.clone();
            let restart = plan::restart_patch(
                rotation_id,
                &plan::rfc3339(crate::state::unix_now()),
                version.as_deref(),
            );
            match workloads.patch(&workload.name, &PatchParams::default(), &Patch::Strategic(&restart)).await
            {
                Ok(_) => return Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    tracing::info!(%workload, "the workload changed meanwhile (409 Conflict); reading it again");
                }
                Err(err) => return Err(api_error("patch", object, err)),
            }
        }
        Err(KubeError::Conflict { object, attempts: SECRET_ATTEMPTS })
    }

    fn workloads(&self, kind: WorkloadKind) -> Api<DynamicObject> {
        let resource = match kind {
            WorkloadKind::Deployment => ApiResource::erase::<Deployment>(&()),
            WorkloadKind::StatefulSet => ApiResource::erase::<StatefulSet>(&()),
            WorkloadKind::DaemonSet => ApiResource::erase::<DaemonSet>(&()),
        };
        Api::namespaced_with(self.client.clone(), &self.namespace, &resource)
    }

    /// Pod → (ReplicaSet →) Deployment, StatefulSet or DaemonSet, through the controlling
    /// owner references (metadata reads only).
    pub async fn find_workload(&self) -> Result<Workload, KubeError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let object = format!("pods {}/{}", self.namespace, self.pod);
        let pod = pods.get_metadata(&self.pod).await.map_err(|err| api_error("get", object.clone(), err))?;
        let refs = pod.metadata.owner_references.unwrap_or_default();
        match plan::owner(&object, &refs, true)? {
            Owner::Workload(workload) => Ok(workload),
            Owner::ReplicaSet(name) => {
                let sets: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &self.namespace);
                let object = format!("replicasets {}/{}", self.namespace, name);
                let set =
                    sets.get_metadata(&name).await.map_err(|err| api_error("get", object.clone(), err))?;
                let refs = set.metadata.owner_references.unwrap_or_default();
                match plan::owner(&object, &refs, false)? {
                    Owner::Workload(workload) => Ok(workload),
                    Owner::ReplicaSet(_) => {
                        Err(KubeError::Setup(format!("{object} is owned by a ReplicaSet")))
                    }
                }
            }
        }
    }

    /// Writes the token keys under the resourceVersion precondition, re-reading after each
    /// 409 (at most [`SECRET_ATTEMPTS`] times). `None` when the Secret already holds the
    /// token (a sibling pod wrote it), else the keys written. `sent` is set while a write is
    /// on its way and cleared when the API answered that it refused it (the Secret is
    /// unchanged); it stays set when the answer was lost (the write may have landed).
    async fn write_secret(
        &self,
        token: &Token,
        sent: &AtomicBool,
    ) -> Result<Option<Vec<&'static str>>, KubeError> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let object = self.secret_object();
        let value = token.expose();
        for _ in 0..SECRET_ATTEMPTS {
            let secret =
                secrets.get(&self.secret).await.map_err(|err| api_error("get", object.clone(), err))?;
            let resource_version = secret.metadata.resource_version.clone().unwrap_or_default();
            let mut data = secret.data.unwrap_or_default();
            let mut previous: Vec<(&'static str, ByteString)> = Vec::new();
            for key in [DELEGATE_TOKEN, UPGRADER_TOKEN] {
                if let Some(old) = data.remove(key) {
                    previous.push((key, old));
                }
            }
            wipe(&mut data);
            if !previous.iter().any(|(k, _)| *k == DELEGATE_TOKEN) {
                return Err(KubeError::MissingKey { object, key: DELEGATE_TOKEN });
            }
            if previous.iter().all(|(_, old)| old.0.trim_ascii() == value.as_bytes()) {
                wipe_pairs(&mut previous);
                return Ok(None);
            }
            let values: Vec<(&str, &[u8])> = previous.iter().map(|(k, _)| (*k, value.as_bytes())).collect();
            let mut patch = plan::secret_patch(&resource_version, &values);
            sent.store(true, Ordering::SeqCst);
            let result = secrets.patch(&self.secret, &PatchParams::default(), &Patch::Merge(&patch)).await;
            patch.take();
            if matches!(result, Err(kube::Error::Api(_))) {
                // The API answered: the write was refused, nothing changed.
                sent.store(false, Ordering::SeqCst);
            }
            let keys: Vec<&'static str> = previous.iter().map(|(k, _)| *k).collect();
            match result {
                Ok(mut patched) => {
                    if let Some(data) = patched.data.as_mut() {
                        wipe(data);
                    }
                    wipe_pairs(&mut previous);
                    return Ok(Some(keys));
                }
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    wipe_pairs(&mut previous);
                    tracing::info!(secret = %object, "the Secret changed meanwhile (409 Conflict); reading it again");
                }
                Err(err) => {
                    wipe_pairs(&mut previous);
                    return Err(api_error("patch", object, err));
                }
            }
        }
        Err(KubeError::Conflict { object, attempts: SECRET_ATTEMPTS })
    }
}

/// Whether `workload`'s pod template already carries rotation `rotation_id`.
fn restarted_by(workload: &DynamicObject, rotation_id: Uuid) -> bool {
    plan::template_annotation(&workload.data, plan::ANNOTATION_ROTATION_ID)
        == Some(rotation_id.to_string().as_str())
}

fn wipe(data: &mut std::collections::BTreeMap<String, ByteString>) {
    for value in data.values_mut() {
        value.0.zeroize();
    }
}

fn wipe_pairs(pairs: &mut [(&'static str, ByteString)]) {
    for (_, value) in pairs.iter_mut() {
        value.0.zeroize();
    }
}

/// A kube error as a [`KubeError`]: the API's status, reason and (redacted, bounded) message;
/// for anything else what went wrong, without echoing a body (a serde error may quote one).
fn api_error(action: &'static str, object: String, err: kube::Error) -> KubeError {
    match err {
        kube::Error::Api(status) => KubeError::Api {
            action,
            object,
            code: status.code,
            reason: plan::peer_text(&status.reason, 64),
            message: plan::peer_text(&status.message, MAX_MESSAGE),
        },
        kube::Error::SerdeError(_) | kube::Error::FromUtf8(_) => KubeError::Unreachable {
            action,
            object,
            detail: "the API server's answer is not the expected JSON".into(),
        },
        other => {
            KubeError::Unreachable { action, object, detail: plan::peer_text(&chain(&other), MAX_MESSAGE) }
        }
    }
}

/// An error and its sources (at most 6), `: `-separated: "ServiceError: client error
/// (Connect): tcp connect error: Connection refused (os error 111)".
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    for _ in 0..6 {
        let Some(next) = source else { break };
        let part = next.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = next.source();
    }
    text
}
