//! The simulator's Deployment controller and kubelet, in one thread ticking every 50 ms:
//! a ReplicaSet per pod-template hash (owned by the Deployment), pods owned by it that run the
//! REAL `tether-delegate` binary with the container's environment resolved at each container
//! start (literal values, `secretKeyRef` from the Secret, `fieldRef` of the pod's name and
//! namespace; volume mount paths mapped to per-pod directories) plus what the kubelet adds
//! (`KUBERNETES_SERVICE_HOST`/`PORT`, `HOSTNAME`, and `TETHER_K8S_SERVICEACCOUNT_DIR` for the
//! mounted service-account directory). Readiness is the container's exec readiness probe
//! (`tether-delegate health`) run with that environment. A pod-template change rolls like a
//! Deployment with `maxSurge: 1, maxUnavailable: 0`: start a new pod, wait until it has been
//! ready for `minReadySeconds`, then stop an old one (SIGTERM, SIGKILL after the grace
//! period). A container that exits is restarted after a CrashLoopBackOff delay (10 s,
//! doubling), its exit codes recorded.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::store::{unbase64, Store, NAMESPACE};
use crate::harness::process::{binary, Proc};

/// How often the loop runs.
pub const TICK: Duration = Duration::from_millis(50);
/// Probe interval of a pod not yet ready, and of a ready one (faster than the manifest's
/// periods, to keep tests short).
const PROBE_NOT_READY: Duration = Duration::from_millis(200);
const PROBE_READY: Duration = Duration::from_millis(1000);
/// The longest a simulator runs.
pub const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// The first CrashLoopBackOff delay (doubling up to 5 min, as the kubelet does).
const CRASH_BACKOFF: Duration = Duration::from_secs(10);

/// What tests can see of a pod.
#[derive(Debug, Clone)]
pub struct PodView {
    /// Pod name.
    pub name: String,
    /// Its ReplicaSet (the Deployment name and the template hash).
    pub replica_set: String,
    /// Whether its container runs now.
    pub running: bool,
    /// Whether its readiness probe passes.
    pub ready: bool,
    /// How long it has been ready (available once this reaches `minReadySeconds`).
    pub ready_for: std::time::Duration,
    /// Whether it is being stopped.
    pub terminating: bool,
    /// Whether it was stopped and deleted.
    pub deleted: bool,
    /// Exit codes of its containers so far (restarts follow each).
    pub exits: Vec<i32>,
    /// `DELEGATE_TOKEN` as its current (or last) container got it.
    pub delegate_token: Option<String>,
    /// Why the container cannot start (`CreateContainerConfigError`), if so.
    pub config_error: Option<String>,
    /// The logs of all its containers.
    pub log: String,
}

/// Requests from the test to the kubelet.
#[derive(Debug, Clone)]
pub enum Request {
    /// Delete every pod (gracefully); the ReplicaSets recreate them from the current Secret.
    DeletePods,
}

#[derive(Debug)]
enum Phase {
    /// The container runs.
    Running,
    /// Waiting to (re)start the container at this time.
    Waiting(Instant),
    /// SIGTERM sent at this time.
    Terminating(Instant),
}

#[derive(Debug)]
struct Pod {
    name: String,
    replica_set: String,
    hash: String,
    deployment: String,
    dir: PathBuf,
    proc: Option<Proc>,
    phase: Phase,
    ready_since: Option<Instant>,
    last_probe: Option<Instant>,
    exits: Vec<i32>,
    env: Vec<(String, String)>,
    config_error: Option<String>,
    earlier_logs: Vec<String>,
}

impl Pod {
    fn log(&self) -> String {
        let mut logs = self.earlier_logs.clone();
        if let Some(proc) = &self.proc {
            logs.push(proc.log());
        }
        logs.join("\n")
    }

    fn view(&self) -> PodView {
        PodView {
            name: self.name.clone(),
            replica_set: self.replica_set.clone(),
            running: matches!(self.phase, Phase::Running),
            ready: self.ready_since.is_some(),
            ready_for: self.ready_since.map(|at| at.elapsed()).unwrap_or_default(),
            terminating: matches!(self.phase, Phase::Terminating(_)),
            deleted: false,
            exits: self.exits.clone(),
            delegate_token: self.env.iter().find(|(k, _)| k == "DELEGATE_TOKEN").map(|(_, v)| v.clone()),
            config_error: self.config_error.clone(),
            log: self.log(),
        }
    }
}

/// Where the kubelet's pods live and what they get.
#[derive(Debug, Clone)]
pub struct Node {
    /// The API server's port (on 127.0.0.1).
    pub api_port: u16,
    /// The service-account directory (token, namespace, ca.crt).
    pub serviceaccount_dir: PathBuf,
    /// Directory for the pods' volumes.
    pub root: PathBuf,
}

/// The controller and kubelet loop.
#[derive(Debug)]
pub struct Kubelet {
    store: Arc<Mutex<Store>>,
    node: Node,
    pods: BTreeMap<String, Pod>,
    views: Arc<Mutex<Vec<PodView>>>,
    requests: Arc<Mutex<Vec<Request>>>,
    next_pod: u64,
    gone: Vec<PodView>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The hash naming a pod template's ReplicaSet (10 hex digits).
pub fn template_hash(template: &Value) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    template.to_string().hash(&mut hasher);
    format!("{:010x}", hasher.finish() & 0xff_ffff_ffff)
}

impl Kubelet {
    /// A kubelet for `node`, publishing pod views and taking requests.
    pub fn new(
        store: Arc<Mutex<Store>>,
        node: Node,
        views: Arc<Mutex<Vec<PodView>>>,
        requests: Arc<Mutex<Vec<Request>>>,
    ) -> Self {
        Self { store, node, pods: BTreeMap::new(), views, requests, next_pod: 0, gone: Vec::new() }
    }

    /// Runs until `stop` (or [`MAX_LIFETIME`], should a test leak the simulator); every pod
    /// process is stopped when it returns (and killed on drop).
    pub fn run(mut self, stop: &AtomicBool) {
        let started = Instant::now();
        while !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_LIFETIME {
            self.tick();
            std::thread::sleep(TICK);
        }
        for pod in self.pods.values_mut() {
            if let Some(proc) = pod.proc.as_mut() {
                let _ = proc.terminate();
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline
            && self.pods.values_mut().any(|p| p.proc.as_mut().is_some_and(Proc::running))
        {
            std::thread::sleep(TICK);
        }
    }

    fn tick(&mut self) {
        let requests: Vec<Request> = std::mem::take(&mut *lock(&self.requests));
        for request in requests {
            match request {
                Request::DeletePods => {
                    let names: Vec<String> = self.pods.keys().cloned().collect();
                    for name in names {
                        self.stop_pod(&name);
                    }
                }
            }
        }
        self.containers();
        let deployments = lock(&self.store).list("deployments");
        for deployment in deployments {
            self.reconcile(&deployment);
        }
        let views = self.gone.iter().cloned().chain(self.pods.values().map(Pod::view)).collect();
        *lock(&self.views) = views;
    }

    /// Container state: exits, restarts after the back-off, readiness probes, the end of a
    /// termination.
    fn containers(&mut self) {
        let names: Vec<String> = self.pods.keys().cloned().collect();
        for name in names {
            let Some(pod) = self.pods.get_mut(&name) else { continue };
            let exited = pod.proc.as_mut().and_then(Proc::exited);
            match pod.phase {
                Phase::Terminating(since) => {
                    if exited.is_some() || pod.proc.is_none() {
                        if let Some(code) = exited.map(exit_code) {
                            pod.exits.push(code);
                        }
                        self.remove_pod(&name);
                    } else if since.elapsed() > Duration::from_secs(15) {
                        if let Some(proc) = pod.proc.as_mut() {
                            let _ = proc.kill9();
                        }
                    }
                }
                Phase::Running => {
                    if let Some(status) = exited {
                        pod.exits.push(exit_code(status));
                        pod.ready_since = None;
                        let restarts = u32::try_from(pod.exits.len()).unwrap_or(u32::MAX).min(6);
                        let delay = (CRASH_BACKOFF * 2u32.pow(restarts.saturating_sub(1)))
                            .min(Duration::from_secs(300));
                        pod.phase = Phase::Waiting(Instant::now() + delay);
                    } else {
                        self.probe(&name);
                    }
                }
                Phase::Waiting(at) => {
                    if Instant::now() >= at {
                        self.start_container(&name);
                    }
                }
            }
        }
    }

    fn probe(&mut self, name: &str) {
        let Some(pod) = self.pods.get_mut(name) else { return };
        let every = if pod.ready_since.is_some() { PROBE_READY } else { PROBE_NOT_READY };
        if pod.last_probe.is_some_and(|at| at.elapsed() < every) {
            return;
        }
        pod.last_probe = Some(Instant::now());
        let Ok(bin) = binary("tether-delegate") else { return };
        let mut command = Command::new(bin);
        command.env_clear().arg("health").envs(pod.env.iter().map(|(k, v)| (k, v)));
        let healthy = crate::harness::process::run_within(&mut command, Duration::from_secs(5))
            .is_ok_and(|o| o.status.success());
        match (healthy, pod.ready_since) {
            (true, None) => pod.ready_since = Some(Instant::now()),
            (false, Some(_)) => pod.ready_since = None,
            _ => {}
        }
    }

    /// A Deployment: its current ReplicaSet, then one step of the rolling update.
    fn reconcile(&mut self, deployment: &Value) {
        let name = deployment["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let spec = &deployment["spec"];
        let template = &spec["template"];
        let desired = usize::try_from(spec["replicas"].as_u64().unwrap_or(1)).unwrap_or(1);
        let min_ready = Duration::from_secs(spec["minReadySeconds"].as_u64().unwrap_or(0));
        let hash = template_hash(template);
        let replica_set = format!("{name}-{hash}");
        self.ensure_replica_set(deployment, &replica_set, desired);
        let mine: Vec<&Pod> = self
            .pods
            .values()
            .filter(|p| p.deployment == name && !matches!(p.phase, Phase::Terminating(_)))
            .collect();
        let current = mine.iter().filter(|p| p.hash == hash).count();
        let available = |p: &&&Pod| p.ready_since.is_some_and(|at| at.elapsed() >= min_ready);
        let available_total = mine.iter().filter(available).count();
        let old: Vec<(String, bool)> =
            mine.iter().filter(|p| p.hash != hash).map(|p| (p.name.clone(), available(&p))).collect();
        // Surge: one pod above the desired count.
        if current < desired && mine.len() < desired + 1 {
            self.create_pod(&name, &replica_set, &hash, template);
            return;
        }
        // Scale down old pods, never below `desired` available (maxUnavailable 0); pods that
        // are not available go first.
        let victim = old
            .iter()
            .find(|(_, a)| !a)
            .or_else(|| old.iter().find(|(_, a)| *a && available_total > desired));
        if let Some((victim, _)) = victim {
            let victim = victim.clone();
            self.stop_pod(&victim);
            return;
        }
        if old.is_empty() && current > desired {
            if let Some(extra) = mine.iter().find(|p| p.hash == hash).map(|p| p.name.clone()) {
                self.stop_pod(&extra);
            }
        }
    }

    fn ensure_replica_set(&mut self, deployment: &Value, name: &str, replicas: usize) {
        let mut store = lock(&self.store);
        if store.get("replicasets", name).is_some() {
            return;
        }
        let owner = json!([{
            "apiVersion": "apps/v1", "kind": "Deployment", "controller": true, "blockOwnerDeletion": true,
            "name": deployment["metadata"]["name"], "uid": deployment["metadata"]["uid"],
        }]);
        store.put(
            "replicasets",
            json!({
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": { "name": name, "ownerReferences": owner, "labels": deployment["spec"]["template"]["metadata"]["labels"] },
                "spec": { "replicas": replicas, "template": deployment["spec"]["template"] },
            }),
        );
    }

    fn create_pod(&mut self, deployment: &str, replica_set: &str, hash: &str, template: &Value) {
        self.next_pod += 1;
        let name = format!("{replica_set}-{:05x}", self.next_pod);
        let dir = self.node.root.join(&name);
        let rs_uid =
            lock(&self.store).get("replicasets", replica_set).map(|rs| rs["metadata"]["uid"].clone());
        let owner = json!([{
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "controller": true, "blockOwnerDeletion": true,
            "name": replica_set, "uid": rs_uid,
        }]);
        lock(&self.store).put(
            "pods",
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": { "name": name, "ownerReferences": owner, "labels": template["metadata"]["labels"] },
                "spec": template["spec"],
                "status": { "phase": "Pending" },
            }),
        );
        let pod = Pod {
            name: name.clone(),
            replica_set: replica_set.to_owned(),
            hash: hash.to_owned(),
            deployment: deployment.to_owned(),
            dir,
            proc: None,
            phase: Phase::Waiting(Instant::now()),
            ready_since: None,
            last_probe: None,
            exits: Vec::new(),
            env: Vec::new(),
            config_error: None,
            earlier_logs: Vec::new(),
        };
        self.pods.insert(name.clone(), pod);
        self.start_container(&name);
    }

    /// Starts (or restarts) a pod's container with its environment resolved now.
    fn start_container(&mut self, name: &str) {
        let Some(template) = lock(&self.store).get("pods", name).map(|p| p["spec"].clone()) else { return };
        let Some(pod) = self.pods.get_mut(name) else { return };
        let env = {
            let store = lock(&self.store);
            resolve_env(&store, &template, name, &pod.dir, &self.node)
        };
        let env = match env {
            Ok(env) => env,
            Err(reason) => {
                pod.config_error = Some(reason);
                pod.phase = Phase::Waiting(Instant::now() + Duration::from_secs(1));
                return;
            }
        };
        pod.config_error = None;
        let args: Vec<String> = template["containers"][0]["args"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        if let Some(old) = pod.proc.take() {
            pod.earlier_logs.push(old.log());
        }
        let Ok(bin) = binary("tether-delegate") else { return };
        let mut command = Command::new(bin);
        command.env_clear().args(&args).envs(env.iter().map(|(k, v)| (k, v)));
        match Proc::spawn(name, command) {
            Ok(proc) => {
                pod.proc = Some(proc);
                pod.phase = Phase::Running;
            }
            Err(err) => {
                pod.config_error = Some(format!("cannot start: {err:#}"));
                pod.phase = Phase::Waiting(Instant::now() + Duration::from_secs(1));
            }
        }
        pod.env = env;
        pod.ready_since = None;
        pod.last_probe = None;
        let mut store = lock(&self.store);
        if let Some(mut object) = store.get("pods", name) {
            object["status"]["phase"] = json!("Running");
            store.put("pods", object);
        }
    }

    fn stop_pod(&mut self, name: &str) {
        let Some(pod) = self.pods.get_mut(name) else { return };
        if matches!(pod.phase, Phase::Terminating(_)) {
            return;
        }
        pod.ready_since = None;
        if let Some(proc) = pod.proc.as_mut() {
            if proc.running() {
                let _ = proc.terminate();
            }
        }
        pod.phase = Phase::Terminating(Instant::now());
    }

    fn remove_pod(&mut self, name: &str) {
        if let Some(pod) = self.pods.remove(name) {
            let mut view = pod.view();
            view.deleted = true;
            view.running = false;
            lock(&self.store).remove("pods", name);
            self.gone.push(view);
            let _ = std::fs::remove_dir_all(&pod.dir);
        }
    }
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// The container's environment as the kubelet builds it at a container start, with volume
/// mount paths mapped to directories of the pod; `Err` is a CreateContainerConfigError.
fn resolve_env(
    store: &Store,
    spec: &Value,
    pod: &str,
    dir: &Path,
    node: &Node,
) -> Result<Vec<(String, String)>, String> {
    let container = &spec["containers"][0];
    // Volumes: emptyDir (a fresh directory of the pod) and configMap (its data as files).
    let mut mounts: Vec<(String, PathBuf)> = Vec::new();
    for mount in container["volumeMounts"].as_array().into_iter().flatten() {
        let volume_name = mount["name"].as_str().unwrap_or_default();
        let path = mount["mountPath"].as_str().unwrap_or_default().to_owned();
        let host = dir.join("volumes").join(volume_name);
        std::fs::create_dir_all(&host).map_err(|e| format!("volume {volume_name}: {e}"))?;
        let volume = spec["volumes"].as_array().into_iter().flatten().find(|v| v["name"] == volume_name);
        if let Some(config_map) = volume.and_then(|v| v["configMap"]["name"].as_str()) {
            let object =
                store.get("configmaps", config_map).ok_or(format!("configmap \"{config_map}\" not found"))?;
            for (file, text) in object["data"].as_object().into_iter().flatten() {
                std::fs::write(host.join(file), text.as_str().unwrap_or_default())
                    .map_err(|e| e.to_string())?;
            }
        }
        mounts.push((path, host));
    }
    let remap = |value: &str| -> String {
        for (path, host) in &mounts {
            if let Some(rest) = value.strip_prefix(path.as_str()) {
                return format!("{}{rest}", host.display());
            }
        }
        value.to_owned()
    };
    let mut env = vec![
        ("KUBERNETES_SERVICE_HOST".to_owned(), "127.0.0.1".to_owned()),
        ("KUBERNETES_SERVICE_PORT".to_owned(), node.api_port.to_string()),
        ("HOSTNAME".to_owned(), pod.to_owned()),
        ("TETHER_K8S_SERVICEACCOUNT_DIR".to_owned(), node.serviceaccount_dir.display().to_string()),
    ];
    for var in container["env"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().unwrap_or_default().to_owned();
        let value = if let Some(value) = var["value"].as_str() {
            remap(value)
        } else if let Some(from) = var["valueFrom"]["secretKeyRef"].as_object() {
            let secret = from["name"].as_str().unwrap_or_default();
            let key = from["key"].as_str().unwrap_or_default();
            let object = store.get("secrets", secret).ok_or(format!("secret \"{secret}\" not found"))?;
            let encoded = object["data"][key]
                .as_str()
                .ok_or(format!("couldn't find key {key} in Secret {NAMESPACE}/{secret}"))?;
            let bytes = unbase64(encoded).ok_or(format!("Secret {secret} key {key} is not base64"))?;
            String::from_utf8(bytes).map_err(|_| format!("Secret {secret} key {key} is not UTF-8"))?
        } else if let Some(path) = var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            match path {
                "metadata.name" => pod.to_owned(),
                "metadata.namespace" => NAMESPACE.to_owned(),
                other => return Err(format!("fieldRef {other} is not simulated")),
            }
        } else {
            String::new()
        };
        env.push((name, value));
    }
    Ok(env)
}
