//! The simulator's object store and the API semantics the delegate depends on: objects kept
//! as JSON with a cluster-wide resourceVersion counter (bumped only by a real change, as etcd
//! does), `metadata.generation` bumped by a spec change, JSON merge patch (RFC 7386; the
//! strategic merge patch of maps is the same, and lists are not patched here), a
//! resourceVersion in a patch as the precondition (409 Conflict when stale), dry runs, RBAC
//! rules with `resourceNames` (403 with the API server's wording), and `Status` error bodies.
use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

/// The namespace every object of the simulator lives in.
pub const NAMESPACE: &str = "tether";

/// One rule of the delegate's Role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// API group (`""` for core, `apps`).
    pub group: String,
    /// Resource (plural).
    pub resource: String,
    /// Verbs granted.
    pub verbs: Vec<String>,
    /// Names it is limited to (empty: every object of the resource in the namespace).
    pub names: Vec<String>,
}

impl Rule {
    /// A rule from string slices.
    pub fn new(group: &str, resource: &str, verbs: &[&str], names: &[&str]) -> Self {
        Self {
            group: group.into(),
            resource: resource.into(),
            verbs: verbs.iter().map(|v| v.to_string()).collect(),
            names: names.iter().map(|n| n.to_string()).collect(),
        }
    }

    fn allows(&self, group: &str, resource: &str, verb: &str, name: &str) -> bool {
        self.group == group
            && self.resource == resource
            && self.verbs.iter().any(|v| v == verb)
            && (self.names.is_empty() || self.names.iter().any(|n| n == name))
    }
}

/// The Role of `kubernetes/role.yaml` for a Secret and a Deployment of these names (the
/// manifest test checks the file grants exactly this).
pub fn delegate_role(secret: &str, deployment: &str) -> Vec<Rule> {
    vec![
        Rule::new("", "secrets", &["get", "patch"], &[secret]),
        Rule::new("apps", "deployments", &["get", "patch"], &[deployment]),
        Rule::new("", "pods", &["get"], &[]),
        Rule::new("apps", "replicasets", &["get"], &[]),
    ]
}

/// An API error: HTTP status and the `Status` body.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub code: u16,
    /// The `Status` object.
    pub body: Value,
}

/// A `Status` failure body, as the API server sends it.
pub fn status(code: u16, reason: &str, message: String) -> ApiError {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    });
    ApiError { code, body }
}

/// A JSON merge patch (RFC 7386) of `target` by `patch`.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(map) = target else { return };
    for (key, value) in patch {
        if value.is_null() {
            map.remove(key);
        } else {
            merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// The objects, by resource and name, and the counters.
#[derive(Debug, Default)]
pub struct Store {
    objects: BTreeMap<(String, String), Value>,
    resource_version: u64,
    uid: u64,
    /// The delegate's RBAC rules (editable by tests).
    pub rules: Vec<Rule>,
    /// The service-account subject, as named in 403 messages.
    pub subject: String,
    /// Concurrent writers to simulate: before each of the next N Secret patches, another
    /// client changes the Secret (an annotation), so a patch read before it is stale.
    pub concurrent_secret_writes: usize,
    /// Fault: every non-dry-run patch of a workload fails with 500.
    pub refuse_workload_patches: bool,
    /// Fault: requests of this kind (`VERB resource`, `PATCH resource?dryRun` for a dry run)
    /// are carried out, but their answer is dripped one byte every 200 ms and never ends, as
    /// a hostile or overloaded API server would (each byte restarts a read timeout).
    pub drip: Option<String>,
    /// Every request: `VERB resource/name -> code`.
    pub requests: Vec<String>,
}

impl Store {
    /// An empty store whose delegate has `rules` and is named `subject` in 403 messages.
    pub fn new(rules: Vec<Rule>, subject: String) -> Self {
        Self { rules, subject, ..Self::default() }
    }
}

impl Store {
    /// Stores `object` as `resource/name` (created or replaced), with a new resourceVersion,
    /// a uid and the namespace; returns the stored object.
    pub fn put(&mut self, resource: &str, mut object: Value) -> Value {
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let key = (resource.to_owned(), name);
        let existing = self.objects.get(&key).cloned();
        self.resource_version += 1;
        let meta = &mut object["metadata"];
        meta["namespace"] = json!(NAMESPACE);
        meta["resourceVersion"] = json!(self.resource_version.to_string());
        match &existing {
            Some(old) => {
                meta["uid"] = old["metadata"]["uid"].clone();
                let generation = old["metadata"]["generation"].as_u64().unwrap_or(1);
                let changed = old.get("spec") != object.get("spec");
                object["metadata"]["generation"] = json!(generation + u64::from(changed));
            }
            None => {
                self.uid += 1;
                meta["uid"] = json!(format!("00000000-0000-4000-8000-{:012}", self.uid));
                meta["generation"] = json!(1);
            }
        }
        self.objects.insert(key, object.clone());
        object
    }

    /// `resource/name`, if it exists.
    pub fn get(&self, resource: &str, name: &str) -> Option<Value> {
        self.objects.get(&(resource.to_owned(), name.to_owned())).cloned()
    }

    /// Removes `resource/name`.
    pub fn remove(&mut self, resource: &str, name: &str) {
        self.objects.remove(&(resource.to_owned(), name.to_owned()));
    }

    /// Every object of `resource`.
    pub fn list(&self, resource: &str) -> Vec<Value> {
        self.objects.iter().filter(|((r, _), _)| r == resource).map(|(_, v)| v.clone()).collect()
    }

    /// RBAC: whether the delegate may `verb` `group/resource/name`; else the 403.
    pub fn authorize(&self, group: &str, resource: &str, verb: &str, name: &str) -> Result<(), ApiError> {
        if self.rules.iter().any(|r| r.allows(group, resource, verb, name)) {
            return Ok(());
        }
        let what = if group.is_empty() { resource.to_owned() } else { format!("{resource}.{group}") };
        Err(status(
            403,
            "Forbidden",
            format!(
                "{what} \"{name}\" is forbidden: User \"{}\" cannot {verb} resource \"{resource}\" in API group \"{group}\" in the namespace \"{NAMESPACE}\"",
                self.subject
            ),
        ))
    }

    fn not_found(resource: &str, group: &str, name: &str) -> ApiError {
        let what = if group.is_empty() { resource.to_owned() } else { format!("{resource}.{group}") };
        status(404, "NotFound", format!("{what} \"{name}\" not found"))
    }

    /// GET.
    pub fn read(&self, group: &str, resource: &str, name: &str) -> Result<Value, ApiError> {
        self.authorize(group, resource, "get", name)?;
        self.get(resource, name).ok_or_else(|| Self::not_found(resource, group, name))
    }

    /// PATCH (merge or strategic merge of maps), with the resourceVersion precondition;
    /// `dry_run` computes the result without storing it.
    pub fn patch(
        &mut self,
        group: &str,
        resource: &str,
        name: &str,
        patch: &Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        self.authorize(group, resource, "patch", name)?;
        let Some(mut current) = self.get(resource, name) else {
            return Err(Self::not_found(resource, group, name));
        };
        if resource == "secrets" && !dry_run && self.concurrent_secret_writes > 0 {
            self.concurrent_secret_writes -= 1;
            let mut changed = current.clone();
            let n = self.resource_version;
            changed["metadata"]["annotations"]["sim.tether.dev/concurrent-write"] = json!(n.to_string());
            current = self.put(resource, changed);
        }
        if resource != "secrets" && !dry_run && self.refuse_workload_patches {
            return Err(status(
                500,
                "InternalError",
                "Internal error occurred: the simulator refuses this patch".into(),
            ));
        }
        let wanted = &patch["metadata"]["resourceVersion"];
        if let Some(wanted) = wanted.as_str() {
            if Some(wanted) != current["metadata"]["resourceVersion"].as_str() {
                let what = if group.is_empty() { resource.to_owned() } else { format!("{resource}.{group}") };
                return Err(status(
                    409,
                    "Conflict",
                    format!("Operation cannot be fulfilled on {what} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"),
                ));
            }
        }
        let mut next = current.clone();
        merge_patch(&mut next, patch);
        // Fields a patch cannot change.
        next["metadata"]["name"] = current["metadata"]["name"].clone();
        next["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
        if resource == "secrets" {
            validate_secret_data(&next, name)?;
        }
        if next == current || dry_run {
            return Ok(next);
        }
        Ok(self.put(resource, next))
    }
}

/// A Secret's `data` must be base64 (the API server answers 422 otherwise).
fn validate_secret_data(secret: &Value, name: &str) -> Result<(), ApiError> {
    use base64_check::is_base64;
    if let Some(data) = secret["data"].as_object() {
        for (key, value) in data {
            if !value.as_str().is_some_and(is_base64) {
                return Err(status(
                    422,
                    "Invalid",
                    format!("Secret \"{name}\" is invalid: data[{key}]: Invalid value: illegal base64 data"),
                ));
            }
        }
    }
    Ok(())
}

mod base64_check {
    //! Standard base64 with padding, the encoding of a Secret's `data`.
    /// Whether `s` is standard, padded base64.
    pub fn is_base64(s: &str) -> bool {
        let body = s.trim_end_matches('=');
        s.len() % 4 == 0
            && s.len() - body.len() <= 2
            && body.chars().all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/')
    }
}

/// Standard base64 of `bytes`.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64; `None` if it is not.
pub fn unbase64(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.trim_end_matches('=').chars() {
        let v = match c {
            'A'..='Z' => c as u32 - 'A' as u32,
            'a'..='z' => c as u32 - 'a' as u32 + 26,
            '0'..='9' => c as u32 - '0' as u32 + 52,
            '+' => 62,
            '/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc7386() {
        let mut target = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut target, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(target, json!({"a": "z", "c": {"d": "e"}}));
    }

    #[test]
    fn base64_round_trips() {
        for s in ["", "f", "fo", "foo", "foob", "tdt_abc"] {
            let e = base64(s.as_bytes());
            assert!(base64_check::is_base64(&e), "{e}");
            assert_eq!(unbase64(&e).unwrap(), s.as_bytes());
        }
        assert_eq!(base64(b"tdt_x"), "dGR0X3g=");
    }

    #[test]
    fn a_stale_resource_version_is_a_conflict_and_rbac_is_by_name() {
        let mut store = Store::new(delegate_role("s", "d"), "sa".into());
        store.put("secrets", json!({"metadata": {"name": "s"}, "data": {"K": "YQ=="}}));
        let rv = store.get("secrets", "s").unwrap()["metadata"]["resourceVersion"].clone();
        let ok = store.patch(
            "",
            "secrets",
            "s",
            &json!({"metadata": {"resourceVersion": rv}, "data": {"K": "Yg=="}}),
            false,
        );
        assert_eq!(ok.unwrap()["data"]["K"], "Yg==");
        let stale = store.patch(
            "",
            "secrets",
            "s",
            &json!({"metadata": {"resourceVersion": rv}, "data": {"K": "Yw=="}}),
            false,
        );
        assert_eq!(stale.unwrap_err().code, 409);
        store.put("secrets", json!({"metadata": {"name": "other"}}));
        assert_eq!(store.read("", "secrets", "other").unwrap_err().code, 403);
        assert_eq!(store.read("", "secrets", "s").unwrap()["data"]["K"], "Yg==");
    }
}
