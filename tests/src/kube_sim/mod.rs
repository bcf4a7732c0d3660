//! A Kubernetes **cluster simulator** for the delegate's kubernetes mode: no API server or
//! kubelet can run on the test machines, so this stands in for one namespace of a cluster —
//! just what the delegate uses, with the semantics that matter (see `kubernetes/README.md`
//! for what it does not model):
//!
//! - [`api`]: an HTTPS API server (axum + rustls, its own CA, 127.0.0.1 port 0) for GET and
//!   PATCH of pods, Secrets, ReplicaSets and Deployments by name, with bearer service-account
//!   authentication and RBAC;
//! - [`store`]: the objects with resourceVersions, the merge patch, the precondition (409),
//!   dry runs, RBAC rules by `resourceNames` (403), and fault injection (a concurrent writer);
//! - [`kubelet`]: a Deployment controller and kubelet that run REAL `tether-delegate`
//!   processes as pods, env from the Secret, rolled with `maxUnavailable: 0`.
//!
//! Everything is torn down on drop (the pods' processes are stopped, then killed).
pub mod api;
pub mod kubelet;
pub mod store;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use serde_json::{json, Value};

pub use kubelet::PodView;
pub use store::{delegate_role, Rule, NAMESPACE};

use kubelet::{Kubelet, Node, Request};
use store::{base64, unbase64, Store};

/// The service account the pods run as.
pub const SERVICE_ACCOUNT: &str = "tether-delegate";

/// A running simulator: API server, store and kubelet.
#[derive(Debug)]
pub struct Simulator {
    /// The API server's address.
    pub addr: SocketAddr,
    store: Arc<Mutex<Store>>,
    views: Arc<Mutex<Vec<PodView>>>,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    kubelet: Option<JoinHandle<()>>,
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(kubelet) = self.kubelet.take() {
            let _ = kubelet.join();
        }
        self.server.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Simulator {
    /// Starts the API server and the kubelet, with the delegate's Role for a Secret and a
    /// Deployment of these names. Call from a multi-threaded tokio runtime.
    pub async fn start(secret: &str, deployment: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let (tls, ca_pem) = api::tls()?;
        let token: String = {
            use rand::Rng;
            let mut rng = rand::thread_rng();
            (0..40).map(|_| char::from(rng.sample(rand::distributions::Alphanumeric))).collect()
        };
        let serviceaccount_dir = dir.path().join("serviceaccount");
        std::fs::create_dir_all(&serviceaccount_dir)?;
        std::fs::write(serviceaccount_dir.join("token"), &token)?;
        std::fs::write(serviceaccount_dir.join("namespace"), NAMESPACE)?;
        std::fs::write(serviceaccount_dir.join("ca.crt"), &ca_pem)?;
        let subject = format!("system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}");
        let store = Arc::new(Mutex::new(Store::new(delegate_role(secret, deployment), subject)));
        let shared = api::Shared { store: store.clone(), token: token.into() };
        let (addr, server) = api::serve(shared, tls).await.context("starting the simulator's API server")?;
        let node = Node { api_port: addr.port(), serviceaccount_dir, root: dir.path().join("pods") };
        let views = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let kubelet = Kubelet::new(store.clone(), node, views.clone(), requests.clone());
        let flag = stop.clone();
        let kubelet =
            std::thread::Builder::new().name("kube-sim-kubelet".into()).spawn(move || kubelet.run(&flag))?;
        Ok(Self { addr, store, views, requests, stop, kubelet: Some(kubelet), server, _dir: dir })
    }

    /// Creates or replaces a Secret with these values (stored base64 under `data`).
    pub fn put_secret(&self, name: &str, values: &[(&str, &str)]) {
        let data: serde_json::Map<String, Value> =
            values.iter().map(|(k, v)| ((*k).to_owned(), json!(base64(v.as_bytes())))).collect();
        let object = json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": name }, "type": "Opaque", "data": data });
        lock(&self.store).put("secrets", object);
    }

    /// Creates or replaces any object as `resource` (plural), e.g. a pod with owner
    /// references the kubelet does not run.
    pub fn put_object(&self, resource: &str, object: Value) -> Value {
        lock(&self.store).put(resource, object)
    }

    /// The service-account directory (token, namespace, ca.crt) pods get.
    pub fn serviceaccount_dir(&self) -> std::path::PathBuf {
        self._dir.path().join("serviceaccount")
    }

    /// Refuses every patch of a Deployment that is not a dry run (500), as a failure after
    /// the Secret was written.
    pub fn refuse_workload_patches(&self, refuse: bool) {
        lock(&self.store).refuse_workload_patches = refuse;
    }

    /// Creates or replaces a ConfigMap.
    pub fn put_config_map(&self, name: &str, data: Value) {
        let object =
            json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": name }, "data": data });
        lock(&self.store).put("configmaps", object);
    }

    /// Creates or replaces a Deployment (the kubelet rolls it).
    pub fn put_deployment(&self, deployment: Value) {
        lock(&self.store).put("deployments", deployment);
    }

    /// A Secret's value of `key`, decoded.
    pub fn secret_value(&self, name: &str, key: &str) -> Option<String> {
        let secret = lock(&self.store).get("secrets", name)?;
        String::from_utf8(unbase64(secret["data"][key].as_str()?)?).ok()
    }

    /// An object as stored.
    pub fn object(&self, resource: &str, name: &str) -> Option<Value> {
        lock(&self.store).get(resource, name)
    }

    /// Every object of `resource` (plural), as stored.
    pub fn list(&self, resource: &str) -> Vec<Value> {
        lock(&self.store).list(resource)
    }

    /// Replaces the delegate's RBAC rules.
    pub fn set_rules(&self, rules: Vec<Rule>) {
        lock(&self.store).rules = rules;
    }

    /// Drips the answers of requests of this kind (`GET pods`, `PATCH secrets`, `PATCH
    /// deployments`, `PATCH deployments?dryRun`), after carrying them out; `None` stops it.
    pub fn drip(&self, kind: Option<&str>) {
        lock(&self.store).drip = kind.map(str::to_owned);
    }

    /// Makes another client change the Secret just before each of the next `n` Secret patches.
    pub fn concurrent_secret_writes(&self, n: usize) {
        lock(&self.store).concurrent_secret_writes = n;
    }

    /// Every API request so far (`VERB resource/name -> code`).
    pub fn requests(&self) -> Vec<String> {
        lock(&self.store).requests.clone()
    }

    /// Every pod, current and deleted.
    pub fn pods(&self) -> Vec<PodView> {
        lock(&self.views).clone()
    }

    /// The pods not deleted.
    pub fn live_pods(&self) -> Vec<PodView> {
        self.pods().into_iter().filter(|p| !p.deleted).collect()
    }

    /// Deletes every pod (gracefully); their ReplicaSet recreates them, with the environment
    /// read from the Secret as it is now.
    pub fn delete_pods(&self) {
        lock(&self.requests).push(Request::DeletePods);
    }
}

/// The delegate's Deployment as in `kubernetes/deployment.yaml`, for the simulator: `replicas`
/// pods named `name`, env from Secret `secret` (Harness's names), the apply mode left to
/// `auto` (so kubernetes mode is chosen by detecting the pod, unlike the manifest), the state
/// directory on an emptyDir, the manager's CA at `ca_path` on the host, exec probes.
pub fn delegate_deployment(name: &str, secret: &str, replicas: u32, ca_path: &std::path::Path) -> Value {
    let from_secret =
        |key: &str| json!({ "name": key, "valueFrom": { "secretKeyRef": { "name": secret, "key": key } } });
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": name, "labels": { "app.kubernetes.io/name": name } },
        "spec": {
            "replicas": replicas,
            "minReadySeconds": 1,
            "selector": { "matchLabels": { "app.kubernetes.io/name": name } },
            "strategy": { "type": "RollingUpdate", "rollingUpdate": { "maxUnavailable": 0, "maxSurge": 1 } },
            "template": {
                "metadata": { "labels": { "app.kubernetes.io/name": name } },
                "spec": {
                    "serviceAccountName": SERVICE_ACCOUNT,
                    "terminationGracePeriodSeconds": 15,
                    "containers": [{
                        "name": "delegate",
                        "image": "tether-delegate:latest",
                        "args": ["run"],
                        "env": [
                            from_secret("ACCOUNT_ID"),
                            from_secret("DELEGATE_TOKEN"),
                            from_secret("MANAGER_HOST_AND_PORT"),
                            { "name": "DELEGATE_NAME", "value": name },
                            { "name": "MANAGER_CA_CERT", "value": ca_path.display().to_string() },
                            { "name": "TETHER_K8S_SECRET", "value": secret },
                            { "name": "TETHER_K8S_POD_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
                            { "name": "TETHER_STATE_DIR", "value": "/run/tether" },
                            { "name": "TETHER_FATAL_BACKOFF_SECS", "value": "60" },
                            { "name": "RUST_LOG", "value": "trace" },
                        ],
                        "readinessProbe": { "exec": { "command": ["/tether-delegate", "health"] } },
                        "volumeMounts": [{ "name": "state", "mountPath": "/run/tether" }],
                    }],
                    "volumes": [{ "name": "state", "emptyDir": { "medium": "Memory" } }],
                },
            },
        },
    })
}
