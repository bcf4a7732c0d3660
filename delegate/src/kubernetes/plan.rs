//! The decisions of kubernetes mode that need no API server: which owner reference leads to
//! the workload, the patch bodies (the Secret's `data` with its resourceVersion as the
//! precondition; the pod-template annotations of a rolling restart), the restart timestamp,
//! and the redaction of anything token-like from text an API server sent back.
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::ByteString;
use serde_json::{json, Map, Value};
use uuid::Uuid;

/// Pod-template annotation holding the time of the restart (RFC 3339), like `kubectl rollout
/// restart`'s `kubectl.kubernetes.io/restartedAt`.
pub const ANNOTATION_RESTARTED_AT: &str = "tether.dev/restarted-at";
/// Pod-template annotation holding the rotation that restarted the workload; a sibling pod
/// that finds it already set does not restart the workload a second time.
pub const ANNOTATION_ROTATION_ID: &str = "tether.dev/rotation-id";
/// The Secret's token keys, as in Harness's manifest: `DELEGATE_TOKEN` must exist,
/// `UPGRADER_TOKEN` is rewritten when present.
pub const DELEGATE_TOKEN: &str = "DELEGATE_TOKEN";
/// See [`DELEGATE_TOKEN`].
pub const UPGRADER_TOKEN: &str = "UPGRADER_TOKEN";

/// The kinds of workload a rotation restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkloadKind {
    /// apps/v1 Deployment (the pod's owner is a ReplicaSet owned by it).
    Deployment,
    /// apps/v1 StatefulSet.
    StatefulSet,
    /// apps/v1 DaemonSet.
    DaemonSet,
}

impl WorkloadKind {
    /// The kind as written in an owner reference.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Deployment => "Deployment",
            Self::StatefulSet => "StatefulSet",
            Self::DaemonSet => "DaemonSet",
        }
    }

    /// The resource (plural, lower case) in the API path and in RBAC rules.
    pub fn plural(self) -> &'static str {
        match self {
            Self::Deployment => "deployments",
            Self::StatefulSet => "statefulsets",
            Self::DaemonSet => "daemonsets",
        }
    }
}

/// The workload to restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// Its kind.
    pub kind: WorkloadKind,
    /// Its name.
    pub name: String,
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind.plural(), self.name)
    }
}

/// Where an owner reference leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// A workload this mode restarts.
    Workload(Workload),
    /// A ReplicaSet: its own owner is the Deployment.
    ReplicaSet(String),
}

/// Why no workload was found in the owner references.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OwnerError {
    /// No owner at all: a bare pod, which nothing would recreate.
    #[error("{0} has no owner (a bare pod): run the delegate as a Deployment, StatefulSet or DaemonSet")]
    None(String),
    /// An owner reference whose name is not a Kubernetes object name (a DNS-1123 subdomain):
    /// it would go into a request path, so it is refused before any request.
    #[error("{object} has an owner reference {kind}/{name} whose name is not a valid Kubernetes object name (lowercase letters, digits, '-' and '.', at most 253, starting and ending with a letter or digit)")]
    InvalidName {
        /// The object whose owner it is.
        object: String,
        /// The owner's kind (bounded, escaped).
        kind: String,
        /// The owner's name (bounded, escaped).
        name: String,
    },
    /// An owner of a kind this mode does not restart.
    #[error("{object} is owned by {kind}/{name}, not by a Deployment, StatefulSet or DaemonSet")]
    Unsupported {
        /// The object whose owner it is.
        object: String,
        /// The owner's kind (bounded, escaped).
        kind: String,
        /// The owner's name (bounded, escaped).
        name: String,
    },
}

/// The controlling owner of `object` (the reference with `controller: true`, else the only
/// one), as a workload or a ReplicaSet to follow. `replica_set_allowed` is false for the
/// ReplicaSet's own owners (a ReplicaSet owned by a ReplicaSet is not a Deployment). A name
/// that is not a valid object name is refused ([`OwnerError::InvalidName`]): it is used in
/// request paths.
pub fn owner(object: &str, refs: &[OwnerReference], replica_set_allowed: bool) -> Result<Owner, OwnerError> {
    let controller = refs.iter().find(|r| r.controller == Some(true)).or(match refs {
        [only] => Some(only),
        _ => None,
    });
    let Some(r) = controller else { return Err(OwnerError::None(object.to_owned())) };
    if !crate::config::is_object_name(&r.name) {
        return Err(OwnerError::InvalidName {
            object: object.to_owned(),
            kind: peer_text(&r.kind, 64),
            name: peer_text(&r.name, 64),
        });
    }
    let apps = r.api_version == "apps/v1";
    let workload = |kind| Owner::Workload(Workload { kind, name: r.name.clone() });
    match r.kind.as_str() {
        "ReplicaSet" if apps && replica_set_allowed => Ok(Owner::ReplicaSet(r.name.clone())),
        "Deployment" if apps && !replica_set_allowed => Ok(workload(WorkloadKind::Deployment)),
        "StatefulSet" if apps && replica_set_allowed => Ok(workload(WorkloadKind::StatefulSet)),
        "DaemonSet" if apps && replica_set_allowed => Ok(workload(WorkloadKind::DaemonSet)),
        _ => Err(OwnerError::Unsupported {
            object: object.to_owned(),
            kind: peer_text(&r.kind, 64),
            name: peer_text(&r.name, 253),
        }),
    }
}

/// The merge patch of the Secret: `values` under `data` (base64, as the API stores it), with
/// `resource_version` as the precondition (a stale one is answered 409 Conflict).
pub fn secret_patch(resource_version: &str, values: &[(&str, &[u8])]) -> Value {
    let mut data = Map::new();
    for (key, bytes) in values {
        let encoded = serde_json::to_value(ByteString(bytes.to_vec())).unwrap_or(Value::Null);
        data.insert((*key).to_owned(), encoded);
    }
    json!({ "metadata": { "resourceVersion": resource_version }, "data": data })
}

/// The strategic merge patch of a rolling restart: the pod-template annotations
/// [`ANNOTATION_RESTARTED_AT`] and [`ANNOTATION_ROTATION_ID`], with the workload's
/// `resource_version` as the precondition when given.
pub fn restart_patch(rotation_id: Uuid, restarted_at: &str, resource_version: Option<&str>) -> Value {
    let mut patch = json!({ "spec": { "template": { "metadata": { "annotations": {
        ANNOTATION_RESTARTED_AT: restarted_at,
        ANNOTATION_ROTATION_ID: rotation_id.to_string(),
    } } } } });
    if let (Some(version), Some(map)) = (resource_version, patch.as_object_mut()) {
        map.insert("metadata".into(), json!({ "resourceVersion": version }));
    }
    patch
}

/// The pod-template annotation `key` of a workload object (as JSON).
pub fn template_annotation<'a>(workload: &'a Value, key: &str) -> Option<&'a str> {
    workload.get("spec")?.get("template")?.get("metadata")?.get("annotations")?.get(key)?.as_str()
}

pub use tether_protocol::utc::rfc3339;

/// Text an API server sent back, as it may appear in a log line or an ack detail: anything
/// token-like removed ([`redact`]), control characters escaped, at most `max` bytes.
pub fn peer_text(text: &str, max: usize) -> String {
    let redacted = redact(text);
    let escaped = tether_protocol::text::escape_control(&redacted).into_owned();
    let bounded = tether_protocol::text::bounded(&escaped, max);
    if bounded.len() < escaped.len() {
        format!("{bounded}…")
    } else {
        bounded.to_owned()
    }
}

/// The token prefix, and the start of any base64 text of a value that begins with it (as a
/// Secret's `data` holds it).
const TOKEN_MARKERS: [&str; 2] = [tether_protocol::token::PREFIX, "dGR0X"];

/// `text` with every run of token characters that starts with a token marker replaced by
/// `<redacted>`: an API server's error may quote an object it was sent or holds.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        let next = TOKEN_MARKERS.iter().filter_map(|m| rest.find(m)).min();
        let Some(at) = next else {
            out.push_str(rest);
            break;
        };
        let (before, from) = rest.split_at(at);
        out.push_str(before);
        out.push_str("<redacted>");
        let end = from
            .char_indices()
            .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+' | '/' | '=')))
            .map_or(from.len(), |(i, _)| i);
        rest = from.split_at(end).1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner_ref(kind: &str, name: &str, controller: Option<bool>) -> OwnerReference {
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            name: name.into(),
            uid: "u".into(),
            controller,
            block_owner_deletion: None,
        }
    }

    #[test]
    fn owners_lead_from_the_pod_to_its_workload() {
        let rs = [owner_ref("ReplicaSet", "d-5f7", Some(true))];
        assert_eq!(owner("pods/p", &rs, true), Ok(Owner::ReplicaSet("d-5f7".into())));
        let deploy = [owner_ref("Deployment", "d", Some(true))];
        let expected = Workload { kind: WorkloadKind::Deployment, name: "d".into() };
        assert_eq!(owner("replicasets/d-5f7", &deploy, false), Ok(Owner::Workload(expected)));
        for kind in [WorkloadKind::StatefulSet, WorkloadKind::DaemonSet] {
            let refs = [owner_ref(kind.kind(), "s", None)];
            let expected = Workload { kind, name: "s".into() };
            assert_eq!(owner("pods/p", &refs, true), Ok(Owner::Workload(expected)));
        }
        // The controller wins over other owners.
        let mixed = [owner_ref("ConfigMap", "x", None), owner_ref("ReplicaSet", "r", Some(true))];
        assert_eq!(owner("pods/p", &mixed, true), Ok(Owner::ReplicaSet("r".into())));
    }

    #[test]
    fn pods_without_a_supported_owner_are_refused_with_the_reason() {
        assert!(matches!(owner("pods/p", &[], true), Err(OwnerError::None(_))));
        let job = [owner_ref("Job", "j", Some(true))];
        let err = owner("pods/p", &job, true).unwrap_err().to_string();
        assert!(err.contains("Job/j") && err.contains("not by a Deployment"), "{err}");
        // A Deployment cannot own a pod directly, and a ReplicaSet must be owned by one.
        assert!(owner("pods/p", &[owner_ref("Deployment", "d", Some(true))], true).is_err());
        assert!(owner("replicasets/r", &[owner_ref("ReplicaSet", "r2", Some(true))], false).is_err());
        assert!(matches!(owner("replicasets/r", &[], false), Err(OwnerError::None(_))), "a bare ReplicaSet");
        let mut other_group = owner_ref("Deployment", "d", Some(true));
        other_group.api_version = "example.com/v1".into();
        assert!(owner("replicasets/r", &[other_group], false).is_err());
        let hostile = [owner_ref("Job\n\u{1b}[2J", &"x".repeat(400), Some(true))];
        let err = owner("pods/p", &hostile, true).unwrap_err().to_string();
        assert!(!err.contains('\n') && !err.contains('\u{1b}') && err.len() < 400, "{err}");
        let hostile_kind = [owner_ref("Job\n\u{1b}[2J", "j", Some(true))];
        let err = owner("pods/p", &hostile_kind, true).unwrap_err().to_string();
        assert!(
            err.contains("not by a Deployment") && !err.contains('\n') && !err.contains('\u{1b}'),
            "{err}"
        );
    }

    #[test]
    fn owner_names_that_are_not_object_names_are_refused() {
        for name in ["tether-delegate?dryRun=All&x=", "../../..", "a/b", "D", "-a", "a-", "", "a b", "é"] {
            let refs = [owner_ref("ReplicaSet", name, Some(true))];
            let err = owner("pods/p", &refs, true).unwrap_err();
            assert!(matches!(err, OwnerError::InvalidName { .. }), "{name:?}: {err}");
            assert!(err.to_string().contains("not a valid Kubernetes object name"), "{err}");
            let refs = [owner_ref("Deployment", name, Some(true))];
            assert!(matches!(owner("replicasets/r", &refs, false), Err(OwnerError::InvalidName { .. })));
        }
        let long = "a".repeat(254);
        assert!(owner("pods/p", &[owner_ref("StatefulSet", &long, None)], true).is_err());
        let ok = "a".repeat(253);
        assert!(owner("pods/p", &[owner_ref("StatefulSet", &ok, None)], true).is_ok());
        assert!(owner("pods/p", &[owner_ref("ReplicaSet", "d-5f7.x", None)], true).is_ok());
    }

    #[test]
    fn the_secret_patch_carries_the_precondition_and_base64_data() {
        let patch = secret_patch("41", &[(DELEGATE_TOKEN, b"tdt_x"), (UPGRADER_TOKEN, b"tdt_x")]);
        assert_eq!(patch["metadata"]["resourceVersion"], "41");
        assert_eq!(patch["data"][DELEGATE_TOKEN], "dGR0X3g=");
        assert_eq!(patch["data"][UPGRADER_TOKEN], "dGR0X3g=");
        assert_eq!(patch.as_object().unwrap().len(), 2, "nothing else: {patch}");
    }

    #[test]
    fn the_restart_patch_sets_both_template_annotations() {
        let id = Uuid::from_u128(7);
        let patch = restart_patch(id, "2026-12-06T16:30:00Z", None);
        assert_eq!(template_annotation(&patch, ANNOTATION_ROTATION_ID), Some(id.to_string().as_str()));
        assert_eq!(template_annotation(&patch, ANNOTATION_RESTARTED_AT), Some("2026-12-06T16:30:00Z"));
        assert!(patch.get("metadata").is_none(), "the dry run has no precondition");
        let patch = restart_patch(id, "2026-12-06T16:30:00Z", Some("77"));
        assert_eq!(patch["metadata"]["resourceVersion"], "77");
        assert_eq!(template_annotation(&json!({"spec": 3}), ANNOTATION_ROTATION_ID), None);
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_574_601), "2026-12-06T16:30:01Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn token_like_text_is_redacted() {
        let token = tether_protocol::Token::from_parts(Uuid::new_v4(), [9; 32]);
        let value = token.expose().to_string();
        let b64 = serde_json::to_value(ByteString(value.as_bytes().to_vec())).unwrap();
        let text = format!("invalid value \"{value}\" and {} in data; é日", b64.as_str().unwrap());
        let shown = redact(&text);
        assert!(!shown.contains(&value[4..20]) && !shown.contains(&b64.as_str().unwrap()[8..20]), "{shown}");
        assert_eq!(shown, "invalid value \"<redacted>\" and <redacted> in data; é日");
        assert_eq!(redact("tdt_"), "<redacted>");
        assert_eq!(redact("plain"), "plain");
        assert!(peer_text(&"é".repeat(100), 11).ends_with('…'));
    }
}
