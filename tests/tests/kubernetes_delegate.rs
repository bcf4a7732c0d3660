//! The delegate's kubernetes mode end to end: the REAL manager and REAL `tether-delegate`
//! processes run as pods by the cluster simulator (`tether_tests::kube_sim`: an HTTPS API
//! server with resourceVersions, RBAC and patches, and a Deployment controller + kubelet; no
//! real API server can run here). A rotation writes the Secret and rolls the Deployment with
//! no moment without a live session; a re-created pod keeps the new token; a Role without
//! `patch` on the Secret fails the rotation and changes nothing; a concurrent change of the
//! Secret (409) is retried; a restart refused after the Secret write leaves the new token in
//! the Secret, acks `applied` and moves the pods' sessions onto it; a revoke stops every pod
//! with exit 78.
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use reqwest::Method;
use serde_json::Value;
use tether_protocol::Token;
use tether_tests::harness::api::Rotation;
use tether_tests::harness::{poll, Manager};
use tether_tests::kube_sim::{delegate_deployment, delegate_role, store, PodView, Rule, Simulator};

const SECRET: &str = "tether-delegate-account-token";
const DEPLOYMENT: &str = "tether-delegate";
const LIMIT: Duration = Duration::from_secs(60);
/// A rollout of two pods, one after the other: a new pod up and available (ready for
/// minReadySeconds, 1 s), an old one stopped, twice; generous for a loaded 2-core machine.
const ROLLOUT: Duration = Duration::from_secs(120);

/// The manager, the simulator, and two pods on the manager's default token.
struct Cluster {
    manager: Manager,
    sim: Simulator,
    token: Token,
}

impl Cluster {
    async fn up(rules: Option<Vec<Rule>>) -> Result<Self> {
        let manager = Manager::start(&[("TETHER_HEARTBEAT_SECS", "2")]).await?;
        let token = manager.default_token()?;
        let sim = Simulator::start(SECRET, DEPLOYMENT).await?;
        if let Some(rules) = rules {
            sim.set_rules(rules);
        }
        let value = token.expose().to_string();
        let address = format!("localhost:{}", manager.addr.port());
        sim.put_secret(
            SECRET,
            &[
                ("ACCOUNT_ID", manager.init.account_id.as_str()),
                ("DELEGATE_TOKEN", value.as_str()),
                ("UPGRADER_TOKEN", value.as_str()),
                ("MANAGER_HOST_AND_PORT", address.as_str()),
            ],
        );
        sim.put_deployment(delegate_deployment(DEPLOYMENT, SECRET, 2, &manager.init.ca_cert));
        let cluster = Self { manager, sim, token };
        cluster.wait_for_pods(cluster.token.id(), LIMIT).await?;
        Ok(cluster)
    }

    /// Waits until exactly two pods run, ready, not terminating, with `token_id`'s token, and
    /// the manager lists two sessions of the delegate on it; returns the pods.
    async fn wait_for_pods(&self, token_id: uuid::Uuid, limit: Duration) -> Result<Vec<PodView>> {
        poll::until(format!("two ready pods with sessions on token {token_id}"), limit, || async {
            let pods = self.sim.live_pods();
            let settled = pods.len() == 2
                && pods.iter().all(|p| {
                    p.running
                        // Available: ready for the Deployment's minReadySeconds (1 s).
                        && p.ready_for >= Duration::from_millis(1_500)
                        && !p.terminating
                        && p.delegate_token.as_deref().and_then(|t| Token::parse(t).ok()).map(|t| t.id())
                            == Some(token_id)
                });
            let sessions = self.manager.delegates().await?;
            let on_token = sessions.iter().filter(|d| d.name == DEPLOYMENT && d.token_id == token_id).count();
            if settled && on_token == 2 && sessions.iter().all(|d| d.token_id == token_id) {
                return Ok(Some(pods));
            }
            Err(anyhow::anyhow!("pods: {:?}; sessions on the token: {on_token}", summary(&pods)))
        })
        .await
        .with_context(|| self.logs())
    }

    fn logs(&self) -> String {
        self.sim
            .pods()
            .iter()
            .map(|p| {
                format!(
                    "--- pod {} (exits {:?}, config error {:?}):\n{}",
                    p.name, p.exits, p.config_error, p.log
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The one detail the rotation recorded for the delegate with `outcome`.
    async fn detail(&self, rotation: &Rotation, outcome: &str) -> Result<String> {
        let doc = self
            .manager
            .wait_for_outcome(rotation.rotation_id, outcome, LIMIT)
            .await
            .with_context(|| self.logs())?;
        let delegates = doc["delegates"].as_array().context("no delegates")?;
        let found = delegates.iter().find(|d| d["outcome"] == outcome).context("no such outcome")?;
        Ok(found["detail"].as_str().unwrap_or_default().to_owned())
    }

    async fn token_state(&self, id: uuid::Uuid) -> Result<String> {
        let path = format!("/api/v1/accounts/{}/tokens/{id}", self.manager.init.account_id);
        let (status, body) = self.manager.api(Method::GET, &path, None).await?;
        if !status.is_success() {
            bail!("GET token: {status}: {body}");
        }
        Ok(body["state"].as_str().unwrap_or_default().to_owned())
    }

    /// Rotates and waits until the Deployment has rolled onto two pods with the new token,
    /// the old ones gone, the old token revoked; polls the manager's session list every
    /// 50 ms meanwhile and fails if it ever lacks a session of the delegate.
    async fn rotate_and_roll(&self) -> Result<Rotation> {
        let done = AtomicBool::new(false);
        let watch = async {
            let (mut polls, mut gaps, mut errors) = (0u32, Vec::new(), 0u32);
            // Bounded: ROLLOUT plus margin at 50 ms.
            while !done.load(Ordering::Relaxed) && polls < 4_000 {
                match self.manager.delegates().await {
                    Ok(sessions) => {
                        if !sessions.iter().any(|d| d.name == DEPLOYMENT) {
                            gaps.push(polls);
                        }
                    }
                    Err(_) => errors += 1,
                }
                polls += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (polls, gaps, errors)
        };
        let flow = async {
            let result = self.rotate_flow().await;
            done.store(true, Ordering::Relaxed);
            result
        };
        let ((polls, gaps, errors), rotation) = tokio::join!(watch, flow);
        let rotation = rotation?;
        assert!(polls >= 10, "the session list was polled only {polls} times");
        assert!(errors <= polls / 10, "{errors} of {polls} polls of the session list failed");
        assert!(gaps.is_empty(), "no live delegate session at polls {gaps:?} of {polls}\n{}", self.logs());
        Ok(rotation)
    }

    async fn rotate_flow(&self) -> Result<Rotation> {
        let before: Vec<String> = self.sim.live_pods().into_iter().map(|p| p.name).collect();
        let rotation = self.manager.rotate(self.token.id(), 300).await?;
        let detail = self.detail(&rotation, "applied").await?;
        assert!(detail.contains("rolling"), "{detail}");
        let new_id = rotation.token_id;
        let pods = self.wait_for_pods(new_id, ROLLOUT).await?;
        for pod in &pods {
            assert!(!before.contains(&pod.name), "pod {} was not replaced", pod.name);
        }
        let gone: Vec<PodView> = self.sim.pods().into_iter().filter(|p| before.contains(&p.name)).collect();
        assert_eq!(gone.len(), 2);
        for pod in &gone {
            assert!(pod.deleted, "old pod {} still there", pod.name);
            assert_eq!(pod.exits, [0], "old pod {} did not stop cleanly on SIGTERM:\n{}", pod.name, pod.log);
        }
        assert_eq!(self.sim.secret_value(SECRET, "DELEGATE_TOKEN").as_deref(), Some(rotation.token.as_str()));
        assert_eq!(self.sim.secret_value(SECRET, "UPGRADER_TOKEN").as_deref(), Some(rotation.token.as_str()));
        let deployment = self.sim.object("deployments", DEPLOYMENT).context("deployment")?;
        let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(annotations["tether.dev/rotation-id"], rotation.rotation_id.to_string());
        assert!(
            annotations["tether.dev/restarted-at"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{annotations}"
        );
        // Two pods applied the rotation; the Deployment was restarted once.
        assert_eq!(deployment["metadata"]["generation"], 2, "{deployment}");
        poll::until("the old token to be revoked", LIMIT, || async {
            Ok((self.token_state(self.token.id()).await? == "revoked").then_some(()))
        })
        .await?;
        Ok(rotation)
    }

    /// No pod's log holds either token in any encoding (the Secret's base64 included).
    fn assert_no_secret_in_logs(&self, tokens: &[&Token]) {
        let mut needles = Vec::new();
        for token in tokens {
            needles.extend(tether_tests::secrets::token_needles(token));
            needles.push(store::base64(token.expose().as_bytes()));
        }
        let mut leaks = Vec::new();
        for pod in self.sim.pods() {
            leaks.extend(tether_tests::secrets::find_needles(&pod.name, &pod.log, &needles));
        }
        assert!(leaks.is_empty(), "secrets in pod logs: {leaks:?}");
    }
}

fn summary(pods: &[PodView]) -> Vec<String> {
    pods.iter()
        .map(|p| {
            let token =
                p.delegate_token.as_deref().and_then(|t| Token::parse(t).ok()).map(|t| t.id().to_string());
            format!(
                "{} running={} ready_for={:?} terminating={} exits={:?} token={token:?} error={:?}",
                p.name, p.running, p.ready_for, p.terminating, p.exits, p.config_error
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_rolls_both_pods_onto_the_successor_with_no_moment_offline() -> Result<()> {
    let cluster = Cluster::up(None).await?;
    let rotation = cluster.rotate_and_roll().await?;
    let new = Token::parse(&rotation.token)?;
    // The API calls: metadata reads of the pod and its ReplicaSet, the Deployment read and its
    // dry run, the Secret read and patch, the restart patch.
    let requests = cluster.sim.requests();
    for expected in
        ["GET pods/", "GET replicasets/", "GET deployments/", "PATCH deployments/", "PATCH secrets/"]
    {
        assert!(requests.iter().any(|r| r.starts_with(expected)), "no {expected}: {requests:#?}");
    }
    assert!(requests.iter().all(|r| !r.ends_with("-> 403") && !r.ends_with("-> 401")), "{requests:#?}");
    // Kubernetes mode was chosen by detecting the pod (the simulator leaves the mode `auto`).
    for pod in cluster.sim.pods() {
        assert!(pod.log.contains("mode=\"kubernetes\""), "pod {}:\n{}", pod.name, pod.log);
    }
    cluster.assert_no_secret_in_logs(&[&cluster.token, &new]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_created_again_after_a_rotation_read_the_new_token_from_the_secret() -> Result<()> {
    let cluster = Cluster::up(None).await?;
    let rotation = cluster.rotate_and_roll().await?;
    let rolled: Vec<String> = cluster.sim.live_pods().into_iter().map(|p| p.name).collect();
    // A re-apply: every pod deleted, the ReplicaSet creates them again from the Secret.
    cluster.sim.delete_pods();
    poll::until("the deleted pods to be gone", LIMIT, || async {
        let live = cluster.sim.live_pods();
        Ok(live.iter().all(|p| !rolled.contains(&p.name)).then_some(()))
    })
    .await
    .with_context(|| cluster.logs())?;
    let pods = cluster.wait_for_pods(rotation.token_id, ROLLOUT).await?;
    assert!(pods.iter().all(|p| !rolled.contains(&p.name)), "the pods were not created again");
    assert_eq!(cluster.token_state(cluster.token.id()).await?, "revoked");
    assert!(
        cluster.sim.pods().iter().all(|p| !p.exits.contains(&78)),
        "a pod stopped on a revoked token:\n{}",
        cluster.logs()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_without_patch_on_the_secret_fails_the_rotation_and_changes_nothing() -> Result<()> {
    let mut rules = delegate_role(SECRET, DEPLOYMENT);
    rules[0] = Rule::new("", "secrets", &["get"], &[SECRET]);
    let cluster = Cluster::up(Some(rules)).await?;
    let pods_before = cluster.sim.live_pods();
    let snapshot = || ["secrets", "deployments", "replicasets", "pods"].map(|r| cluster.sim.list(r));
    let objects_before = snapshot();

    let rotation = cluster.manager.rotate(cluster.token.id(), 300).await?;
    let detail = cluster.detail(&rotation, "failed").await?;
    for part in [
        "kubernetes",
        "cannot patch secrets tether/tether-delegate-account-token",
        "403",
        "Forbidden",
        "cannot patch resource \"secrets\"",
        "the Secret was not changed",
    ] {
        assert!(detail.contains(part), "the detail does not say {part:?}: {detail}");
    }
    // Both delegates answer, failed; nothing moved.
    poll::until("both delegates to ack failed", LIMIT, || async {
        let doc: Value = cluster.manager.rotation(rotation.rotation_id).await?;
        let failed = doc["delegates"]
            .as_array()
            .map_or(0, |ds| ds.iter().filter(|d| d["outcome"] == "failed").count());
        Ok((failed == 2).then_some(()))
    })
    .await?;
    // The simulator's objects, resourceVersions included, are as they were.
    assert_eq!(snapshot(), objects_before, "the cluster's objects changed");
    assert_eq!(
        cluster.sim.secret_value(SECRET, "DELEGATE_TOKEN").as_deref(),
        Some(cluster.token.expose().as_str())
    );
    let pods_after = cluster.sim.live_pods();
    assert_eq!(
        pods_after.iter().map(|p| (&p.name, p.running, p.ready)).collect::<Vec<_>>(),
        pods_before.iter().map(|p| (&p.name, true, true)).collect::<Vec<_>>(),
        "the old pods must keep running"
    );
    assert!(pods_after.iter().all(|p| p.exits.is_empty()));
    // Still on the old token, which stays valid until the grace window ends.
    let sessions = cluster.manager.delegates().await?;
    assert_eq!(
        sessions.iter().filter(|d| d.name == DEPLOYMENT && d.token_id == cluster.token.id()).count(),
        2
    );
    assert_ne!(cluster.token_state(cluster.token.id()).await?, "revoked");
    let requests = cluster.sim.requests();
    assert!(
        requests.iter().any(|r| r.starts_with("PATCH secrets/") && r.ends_with("-> 403")),
        "{requests:#?}"
    );
    cluster.assert_no_secret_in_logs(&[&cluster.token, &Token::parse(&rotation.token)?]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_refused_after_the_secret_write_keeps_the_new_token_and_moves_the_pods() -> Result<()> {
    let cluster = Cluster::up(None).await?;
    let pods_before = cluster.sim.live_pods();
    cluster.sim.refuse_workload_patches(true);
    let rotation = cluster.manager.rotate(cluster.token.id(), 300).await?;
    let detail = cluster.detail(&rotation, "applied").await?;
    for part in [
        "the Secret holds the new token",
        "rolling restart was refused or unconfirmed",
        "500 InternalError",
        "this pod continues on the new token",
        "pick it up from the Secret when they restart",
    ] {
        assert!(detail.contains(part), "the detail does not say {part:?}: {detail}");
    }
    poll::until("both delegates to ack applied", LIMIT, || async {
        let doc: Value = cluster.manager.rotation(rotation.rotation_id).await?;
        let applied = doc["delegates"]
            .as_array()
            .map_or(0, |ds| ds.iter().filter(|d| d["outcome"] == "applied").count());
        Ok((applied == 2).then_some(()))
    })
    .await?;
    // Never rolled back: the Secret holds the new token, and both pods (not replaced) moved.
    assert_eq!(cluster.sim.secret_value(SECRET, "DELEGATE_TOKEN").as_deref(), Some(rotation.token.as_str()));
    poll::until("both pods' sessions on the new token", LIMIT, || async {
        let sessions = cluster.manager.delegates().await?;
        let moved =
            sessions.iter().filter(|d| d.name == DEPLOYMENT && d.token_id == rotation.token_id).count();
        Ok((moved == 2).then_some(()))
    })
    .await
    .with_context(|| cluster.logs())?;
    let names = |pods: Vec<PodView>| pods.into_iter().map(|p| p.name).collect::<Vec<_>>();
    assert_eq!(names(cluster.sim.live_pods()), names(pods_before), "no pod was replaced");
    let requests = cluster.sim.requests();
    // Both pods race to apply: one write lands, and the other pod's write may be refused with
    // 409 (the Secret changed under it), after which it finds the new token already there.
    // A restore would be a second write that lands.
    let secret_writes =
        requests.iter().filter(|r| r.starts_with("PATCH secrets/") && r.ends_with("-> 200")).count();
    assert_eq!(secret_writes, 1, "one write and no restore: {requests:#?}");
    // Pods created again read the new token from the Secret.
    cluster.sim.refuse_workload_patches(false);
    cluster.sim.delete_pods();
    cluster.wait_for_pods(rotation.token_id, ROLLOUT).await?;
    cluster.assert_no_secret_in_logs(&[&cluster.token, &Token::parse(&rotation.token)?]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_change_of_the_secret_is_retried_and_the_rotation_applied() -> Result<()> {
    let cluster = Cluster::up(None).await?;
    cluster.sim.concurrent_secret_writes(1);
    let rotation = cluster.rotate_and_roll().await?;
    let requests = cluster.sim.requests();
    let patches: Vec<&String> = requests.iter().filter(|r| r.starts_with("PATCH secrets/")).collect();
    assert_eq!(patches.first().map(|r| r.ends_with("-> 409")), Some(true), "{patches:#?}");
    assert!(patches.iter().any(|r| r.ends_with("-> 200")), "{patches:#?}");
    // The other writer's change is kept beside the token.
    let secret = cluster.sim.object("secrets", SECRET).context("secret")?;
    assert!(secret["metadata"]["annotations"]["sim.tether.dev/concurrent-write"].is_string(), "{secret}");
    assert_eq!(cluster.sim.secret_value(SECRET, "DELEGATE_TOKEN").as_deref(), Some(rotation.token.as_str()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_stops_every_pod_with_exit_78() -> Result<()> {
    let cluster = Cluster::up(None).await?;
    let pods = cluster.sim.live_pods();
    cluster.manager.revoke(cluster.token.id()).await?;
    let stopped = poll::until("every pod's container to exit", LIMIT, || async {
        let now = cluster.sim.live_pods();
        let all = pods.iter().all(|p| now.iter().any(|n| n.name == p.name && !n.exits.is_empty()));
        Ok(all.then_some(now))
    })
    .await
    .with_context(|| cluster.logs())?;
    for pod in &stopped {
        assert_eq!(pod.exits.first(), Some(&78), "pod {}:\n{}", pod.name, pod.log);
        assert!(pod.log.contains("was revoked"), "pod {} does not say why:\n{}", pod.name, pod.log);
    }
    Ok(())
}
