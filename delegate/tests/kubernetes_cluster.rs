//! Kubernetes mode's API calls (`Cluster::apply`) against the cluster simulator's API server
//! (`tether_tests::kube_sim`; no pods run here, the objects are put in place): the Secret and
//! the restart on success, idempotent for a repeat; and each failure with its precise reason
//! and the Secret as it was — Secret not found, a key missing, RBAC 403 on the restart (found
//! by the dry run, before the Secret is written), a conflict that keeps failing, the API
//! server unreachable, an owner reference with a name that is no object name. Once the Secret
//! write was sent it is never undone: a restart refused or unanswered after it is an
//! `Applied` that says so. An API server dripping its answers is cut off by the deadline.
use std::time::{Duration, Instant};

use serde_json::json;
use tether_delegate::config::KubeSettings;
use tether_delegate::kubernetes::cluster::{Cluster, KubeError, Unconfirmed, SECRET_ATTEMPTS};
use tether_protocol::Token;
use tether_tests::kube_sim::{delegate_role, Rule, Simulator};
use uuid::Uuid;

const SECRET: &str = "delegate-token";
const DEPLOYMENT: &str = "delegate";
const POD: &str = "delegate-5f7c9-x2x4q";

fn token(byte: u8) -> Token {
    Token::from_parts(Uuid::new_v4(), [byte; 32])
}

/// The simulator with a Deployment, its ReplicaSet and a pod of it (not run), and the Secret
/// holding `old`.
async fn cluster(old: &Token) -> Simulator {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = Simulator::start(SECRET, DEPLOYMENT).await.unwrap();
    let deployment = sim.put_object(
        "deployments",
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": DEPLOYMENT},
               "spec": {"replicas": 0, "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": []}}}}),
    );
    let set = sim.put_object(
        "replicasets",
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "delegate-5f7c9",
               "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": DEPLOYMENT,
                                    "uid": deployment["metadata"]["uid"], "controller": true}]}}),
    );
    sim.put_object(
        "pods",
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": POD,
               "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "delegate-5f7c9",
                                    "uid": set["metadata"]["uid"], "controller": true}]}}),
    );
    sim.put_secret(SECRET, &[("DELEGATE_TOKEN", old.expose().as_str()), ("ACCOUNT_ID", "acme")]);
    sim
}

fn settings_of(sim: &Simulator, port: u16) -> KubeSettings {
    KubeSettings {
        service_host: Some("127.0.0.1".into()),
        service_port: port,
        serviceaccount_dir: sim.serviceaccount_dir(),
        secret: SECRET.into(),
        pod_name: POD.into(),
    }
}

async fn apply(
    sim: &Simulator,
    rotation: Uuid,
    new: &Token,
) -> Result<tether_delegate::kubernetes::cluster::Applied, KubeError> {
    let cluster = Cluster::connect(&settings_of(sim, sim.addr.port())).unwrap();
    tokio::time::timeout(Duration::from_secs(60), cluster.apply(rotation, new)).await.expect("apply hangs")
}

fn assert_no_token(text: &str, tokens: &[&Token]) {
    for t in tokens {
        assert!(!text.contains(&t.expose()[4..]), "a token leaked: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_writes_the_secret_and_restarts_the_deployment_once() {
    let (old, new) = (token(1), token(2));
    let sim = cluster(&old).await;
    let rotation = Uuid::new_v4();
    let applied = apply(&sim, rotation, &new).await.unwrap();
    assert_eq!(applied.workload.to_string(), "deployments/delegate");
    assert_eq!(applied.keys_written, ["DELEGATE_TOKEN"], "no UPGRADER_TOKEN key: not added");
    assert!(applied.restarted);
    assert_eq!(sim.secret_value(SECRET, "DELEGATE_TOKEN").as_deref(), Some(new.expose().as_str()));
    assert_eq!(sim.secret_value(SECRET, "UPGRADER_TOKEN"), None);
    assert_eq!(sim.secret_value(SECRET, "ACCOUNT_ID").as_deref(), Some("acme"), "other keys kept");
    let deployment = sim.object("deployments", DEPLOYMENT).unwrap();
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["annotations"]["tether.dev/rotation-id"],
        rotation.to_string()
    );
    assert_eq!(deployment["metadata"]["generation"], 2);
    // The other replica, or a repeat: nothing written, no second restart.
    let again = apply(&sim, rotation, &new).await.unwrap();
    assert!(again.keys_written.is_empty() && !again.restarted, "{again:?}");
    assert_eq!(sim.object("deployments", DEPLOYMENT).unwrap()["metadata"]["generation"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_of_a_stateful_set_restarts_the_stateful_set() {
    let (old, new) = (token(1), token(2));
    let sim = cluster(&old).await;
    let set = sim.put_object(
        "statefulsets",
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "delegate-sts"},
               "spec": {"replicas": 1, "template": {"metadata": {}, "spec": {"containers": []}}}}),
    );
    sim.put_object(
        "pods",
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "delegate-sts-0",
               "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "delegate-sts",
                                    "uid": set["metadata"]["uid"], "controller": true}]}}),
    );
    let mut rules = delegate_role(SECRET, DEPLOYMENT);
    rules.push(Rule::new("apps", "statefulsets", &["get", "patch"], &["delegate-sts"]));
    sim.set_rules(rules);
    let mut settings = settings_of(&sim, sim.addr.port());
    settings.pod_name = "delegate-sts-0".into();
    let rotation = Uuid::new_v4();
    let applied = Cluster::connect(&settings).unwrap().apply(rotation, &new).await.unwrap();
    assert_eq!(applied.workload.to_string(), "statefulsets/delegate-sts");
    let set = sim.object("statefulsets", "delegate-sts").unwrap();
    assert_eq!(
        set["spec"]["template"]["metadata"]["annotations"]["tether.dev/rotation-id"],
        rotation.to_string()
    );
    assert_eq!(
        sim.object("deployments", DEPLOYMENT).unwrap()["metadata"]["generation"],
        1,
        "the Deployment is not touched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrader_token_is_rewritten_with_the_delegate_token() {
    let (old, new) = (token(1), token(2));
    let sim = cluster(&old).await;
    sim.put_secret(
        SECRET,
        &[("DELEGATE_TOKEN", old.expose().as_str()), ("UPGRADER_TOKEN", old.expose().as_str())],
    );
    let applied = apply(&sim, Uuid::new_v4(), &new).await.unwrap();
    assert_eq!(applied.keys_written, ["DELEGATE_TOKEN", "UPGRADER_TOKEN"]);
    assert_eq!(sim.secret_value(SECRET, "UPGRADER_TOKEN").as_deref(), Some(new.expose().as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_name_the_reason_and_leave_the_secret_as_it_was() {
    let (old, new) = (token(1), token(2));
    let sim = cluster(&old).await;
    let secret = sim.object("secrets", SECRET);

    // RBAC: no patch on the Deployment; the dry run finds it before the Secret is written.
    let mut rules = delegate_role(SECRET, DEPLOYMENT);
    rules[1] = Rule::new("apps", "deployments", &["get"], &[DEPLOYMENT]);
    sim.set_rules(rules);
    let err = apply(&sim, Uuid::new_v4(), &new).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("cannot dry-run patch deployments/delegate in tether: 403 Forbidden"), "{text}");
    assert!(text.contains("cannot patch resource \"deployments\""), "{text}");
    assert_eq!(sim.object("secrets", SECRET), secret, "the Secret changed");
    sim.set_rules(delegate_role(SECRET, DEPLOYMENT));

    // A conflict that keeps failing.
    sim.concurrent_secret_writes(1_000);
    let err = apply(&sim, Uuid::new_v4(), &new).await.unwrap_err();
    assert!(matches!(err, KubeError::Conflict { attempts: SECRET_ATTEMPTS, .. }), "{err}");
    assert!(err.to_string().contains("409 Conflict"), "{err}");
    sim.concurrent_secret_writes(0);
    assert_eq!(sim.secret_value(SECRET, "DELEGATE_TOKEN").as_deref(), Some(old.expose().as_str()));

    // A key missing, then the Secret missing.
    sim.put_secret(SECRET, &[("ACCOUNT_ID", "acme")]);
    let err = apply(&sim, Uuid::new_v4(), &new).await.unwrap_err();
    assert!(matches!(err, KubeError::MissingKey { .. }), "{err}");
    let mut settings = settings_of(&sim, sim.addr.port());
    settings.secret = "absent".into();
    sim.set_rules(delegate_role("absent", DEPLOYMENT));
    let err = Cluster::connect(&settings).unwrap().apply(Uuid::new_v4(), &new).await.unwrap_err();
    assert!(err.to_string().contains("cannot get secrets tether/absent: 404 NotFound"), "{err}");

    // A service-account token the API server does not accept.
    let wrong = tempfile::tempdir().unwrap();
    for file in ["namespace", "ca.crt"] {
        std::fs::copy(sim.serviceaccount_dir().join(file), wrong.path().join(file)).unwrap();
    }
    std::fs::write(wrong.path().join("token"), "not-the-service-account-token").unwrap();
    let mut unknown = settings_of(&sim, sim.addr.port());
    unknown.serviceaccount_dir = wrong.path().to_path_buf();
    let err = Cluster::connect(&unknown).unwrap().apply(Uuid::new_v4(), &new).await.unwrap_err();
    assert!(err.to_string().contains("401 Unauthorized"), "{err}");

    // The API server unreachable.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let err =
        Cluster::connect(&settings_of(&sim, closed)).unwrap().apply(Uuid::new_v4(), &new).await.unwrap_err();
    assert!(matches!(err, KubeError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains("cannot get pods tether/"), "{err}");
    assert_no_token(&format!("{:?}", sim.requests()), &[&old, &new]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_refused_after_the_secret_write_keeps_the_new_token_in_the_secret() {
    let (old, new) = (token(1), token(2));
    let sim = cluster(&old).await;
    sim.refuse_workload_patches(true);
    let applied = apply(&sim, Uuid::new_v4(), &new).await.expect("applied: the Secret holds the new token");
    assert_eq!(applied.keys_written, ["DELEGATE_TOKEN"]);
    assert!(!applied.restarted);
    let Some(Unconfirmed::Restart(reason)) = &applied.unconfirmed else { panic!("{applied:?}") };
    assert!(reason.contains("cannot patch deployments/delegate in tether: 500 InternalError"), "{reason}");
    assert_no_token(reason, &[&old, &new]);
    assert_eq!(
        sim.secret_value(SECRET, "DELEGATE_TOKEN").as_deref(),
        Some(new.expose().as_str()),
        "the Secret is never rolled back to the old token"
    );
    let secret_patches = sim.requests().iter().filter(|r| r.starts_with("PATCH secrets/")).count();
    assert_eq!(secret_patches, 1, "one write, no restore: {:?}", sim.requests());
}

async fn apply_with_deadline(
    sim: &Simulator,
    rotation: Uuid,
    new: &Token,
) -> (Result<tether_delegate::kubernetes::cluster::Applied, KubeError>, Duration) {
    let cluster =
        Cluster::connect(&settings_of(sim, sim.addr.port())).unwrap().with_deadline(Duration::from_secs(2));
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(30), cluster.apply(rotation, new))
        .await
        .expect("apply hangs");
    (result, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dripping_api_server_is_cut_off_by_the_apply_deadline() {
    let (old, new) = (token(1), token(2));
    let sim = cluster(&old).await;

    // Before the Secret write: failed, the Secret unchanged.
    for kind in ["GET pods", "PATCH deployments?dryRun", "GET secrets"] {
        sim.drip(Some(kind));
        let (result, took) = apply_with_deadline(&sim, Uuid::new_v4(), &new).await;
        let err = result.expect_err(kind);
        assert!(matches!(err, KubeError::Deadline { seconds: 2, .. }), "{kind}: {err}");
        assert!(err.to_string().contains("2 s deadline"), "{err}");
        assert!(took < Duration::from_secs(10), "{kind}: took {took:?}");
        assert_eq!(
            sim.secret_value(SECRET, "DELEGATE_TOKEN").as_deref(),
            Some(old.expose().as_str()),
            "{kind}"
        );
    }

    // The Secret write's answer dripped (it landed): applied, not undone, no restart.
    sim.drip(Some("PATCH secrets"));
    let (result, took) = apply_with_deadline(&sim, Uuid::new_v4(), &new).await;
    let applied = result.expect("applied once the Secret write was sent");
    assert!(
        matches!(&applied.unconfirmed, Some(Unconfirmed::SecretWrite(r)) if r.contains("deadline")),
        "{applied:?}"
    );
    assert!(!applied.restarted && took < Duration::from_secs(10), "{applied:?} {took:?}");
    assert_eq!(sim.secret_value(SECRET, "DELEGATE_TOKEN").as_deref(), Some(new.expose().as_str()));
    assert_eq!(sim.object("deployments", DEPLOYMENT).unwrap()["metadata"]["generation"], 1, "no restart");

    // The restart's answer dripped (it landed): applied, the Secret keeps the new token.
    sim.put_secret(SECRET, &[("DELEGATE_TOKEN", old.expose().as_str())]);
    sim.drip(Some("PATCH deployments"));
    let rotation = Uuid::new_v4();
    let (result, took) = apply_with_deadline(&sim, rotation, &new).await;
    let applied = result.expect("applied: the Secret holds the new token");
    assert!(
        matches!(&applied.unconfirmed, Some(Unconfirmed::Restart(r)) if r.contains("deadline")),
        "{applied:?}"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_eq!(sim.secret_value(SECRET, "DELEGATE_TOKEN").as_deref(), Some(new.expose().as_str()));
    assert_no_token(&format!("{:?} {:?}", applied, sim.requests()), &[&old, &new]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_names_that_are_not_object_names_are_refused_before_any_request() {
    let (old, new) = (token(1), token(2));
    let sim = cluster(&old).await;
    for name in ["tether-delegate?dryRun=All&x=", "../../.."] {
        sim.put_object(
            "pods",
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": POD,
                   "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": name,
                                        "uid": "u", "controller": true}]}}),
        );
        let before = sim.requests().len();
        let err = apply(&sim, Uuid::new_v4(), &new).await.unwrap_err();
        assert!(err.to_string().contains("not a valid Kubernetes object name"), "{err}");
        assert_eq!(sim.requests().len(), before + 1, "only the pod was read: {:?}", sim.requests());
    }
    assert_eq!(sim.secret_value(SECRET, "DELEGATE_TOKEN").as_deref(), Some(old.expose().as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_service_account_directory_is_a_setup_error() {
    let dir = tempfile::tempdir().unwrap();
    let settings = KubeSettings {
        service_host: Some("127.0.0.1".into()),
        service_port: 443,
        serviceaccount_dir: dir.path().to_path_buf(),
        secret: SECRET.into(),
        pod_name: POD.into(),
    };
    let err = Cluster::connect(&settings).unwrap_err().to_string();
    assert!(err.contains("no service-account token"), "{err}");
    std::fs::write(dir.path().join("token"), "t").unwrap();
    std::fs::write(dir.path().join("namespace"), "tether").unwrap();
    std::fs::write(dir.path().join("ca.crt"), "not pem").unwrap();
    let err = Cluster::connect(&settings).unwrap_err().to_string();
    assert!(err.contains("ca.crt"), "{err}");
}
