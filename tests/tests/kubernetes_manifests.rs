//! The manifests in `kubernetes/`: every one validates offline against the official
//! Kubernetes schemas (`kubernetes-validate --strict`, PyPI, pinned 1.37.0; `tests/run.sh`
//! installs it), and they hold the properties the delegate's kubernetes mode relies on: a
//! least-privilege Role by `resourceNames` and nothing cluster-wide, a Deployment of 2 replicas
//! rolled with `maxUnavailable: 0`, locked down, with exec probes, reading Harness's variables
//! from the Secret the Role names; and what `kubectl apply -f kubernetes/` re-applies holds no
//! Secret and no placeholder CA (both are in `once/`). The tool's absence fails the test, with
//! how to install it.
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use tether_tests::kube_sim::{delegate_role, Rule};

const INSTALL: &str = "python3 -m pip install kubernetes-validate==1.37.0 (tests/run.sh does it)";

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("kubernetes")
}

/// Every `.yaml` file under `kubernetes/`, sorted.
fn manifests() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&dir(), &mut files);
    files.sort();
    assert!(files.len() >= 6, "found only {files:?} in {}", dir().display());
    files
}

#[test]
fn every_manifest_validates_against_the_official_schemas() {
    let files = manifests();
    let output =
        Command::new("kubernetes-validate").arg("--strict").args(&files).output().unwrap_or_else(|err| {
            panic!("kubernetes-validate cannot run ({err}): install it with {INSTALL}")
        });
    let text =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "kubernetes-validate failed:\n{text}");
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy();
        assert!(text.contains(&format!("{name} passed")), "{name} was not reported as passed:\n{text}");
    }
}

/// Every document of every manifest, as JSON (through the PyYAML that kubernetes-validate
/// brings along, so no YAML parser is added to the workspace).
fn documents() -> Vec<Value> {
    let script = "import json, sys, yaml\nprint(json.dumps([d for f in sys.argv[1:] for d in yaml.safe_load_all(open(f)) if d]))";
    let output = Command::new("python3")
        .args(["-c", script])
        .args(manifests())
        .output()
        .unwrap_or_else(|err| panic!("python3 cannot run ({err}); install {INSTALL}"));
    assert!(
        output.status.success(),
        "reading the manifests failed (PyYAML comes with {INSTALL}): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "expected one {kind}");
    found[0]
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

/// What `kubectl apply -f kubernetes/` applies (it does not descend into `once/`): no Secret
/// (it would put a revoked token back) and no ConfigMap of the manager's CA (its placeholder
/// would replace the CA created in the README's step 3), nothing to fill in.
#[test]
fn re_applying_the_directory_overwrites_neither_the_token_nor_the_manager_ca() {
    let applied: Vec<PathBuf> =
        manifests().into_iter().filter(|p| p.parent() == Some(dir().as_path())).collect();
    assert!(applied.len() >= 5, "{applied:?}");
    for path in &applied {
        let text = std::fs::read_to_string(path).unwrap();
        assert!(!text.contains("REPLACE"), "{} has a placeholder but is re-applied", path.display());
        for kind in ["Secret", "ConfigMap"] {
            assert!(
                !text.lines().any(|l| l.trim() == format!("kind: {kind}")),
                "{} holds a {kind}: move it to once/",
                path.display()
            );
        }
    }
    let once = dir().join("once");
    for file in ["secret.yaml", "manager-ca.yaml"] {
        assert!(once.join(file).is_file(), "once/{file} is missing");
    }
    let readme = std::fs::read_to_string(dir().join("README.md")).unwrap();
    assert!(readme.contains("kubectl apply -f kubernetes/\n"), "the README's apply step changed");
}

#[test]
fn the_role_grants_only_what_a_rotation_needs_by_name() {
    let docs = documents();
    for doc in &docs {
        let kind = doc["kind"].as_str().unwrap_or_default();
        assert!(!kind.starts_with("Cluster"), "nothing cluster-wide: found a {kind}");
        if doc["kind"] != "Namespace" {
            assert_eq!(doc["metadata"]["namespace"], "tether", "{kind} outside the namespace");
        }
    }
    let secret_name = one(&docs, "Secret")["metadata"]["name"].as_str().unwrap().to_owned();
    let deployment_name = one(&docs, "Deployment")["metadata"]["name"].as_str().unwrap().to_owned();
    let role = one(&docs, "Role");
    let rules = role["rules"].as_array().unwrap();
    let mut seen = Vec::new();
    for rule in rules {
        let resources = strs(&rule["resources"]);
        let verbs = strs(&rule["verbs"]);
        assert_eq!(resources.len(), 1, "one resource per rule: {rule}");
        assert!(!verbs.contains(&"*") && !resources.contains(&"*"), "no wildcards: {rule}");
        match resources[0] {
            "secrets" => {
                assert_eq!(strs(&rule["resourceNames"]), [secret_name.as_str()], "{rule}");
                assert_eq!(verbs, ["get", "patch"], "{rule}");
            }
            "deployments" => {
                assert_eq!(rule["apiGroups"], serde_json::json!(["apps"]));
                assert_eq!(strs(&rule["resourceNames"]), [deployment_name.as_str()], "{rule}");
                assert_eq!(verbs, ["get", "patch"], "{rule}");
            }
            "pods" | "replicasets" => assert_eq!(verbs, ["get"], "{rule}"),
            other => panic!("the Role grants {other}, which the delegate does not use"),
        }
        seen.push(resources[0]);
    }
    seen.sort_unstable();
    assert_eq!(seen, ["deployments", "pods", "replicasets", "secrets"]);
    // The cluster simulator enforces exactly these rules in the kubernetes-mode tests.
    let simulated: Vec<Rule> = rules
        .iter()
        .map(|r| {
            Rule::new(
                r["apiGroups"][0].as_str().unwrap(),
                strs(&r["resources"])[0],
                &strs(&r["verbs"]),
                &strs(&r["resourceNames"]),
            )
        })
        .collect();
    assert_eq!(
        simulated,
        delegate_role(&secret_name, &deployment_name),
        "role.yaml and kube_sim::delegate_role differ"
    );
    let binding = one(&docs, "RoleBinding");
    assert_eq!(binding["roleRef"]["kind"], "Role");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    let account = one(&docs, "ServiceAccount")["metadata"]["name"].clone();
    assert_eq!(binding["subjects"][0]["name"], account);
}

#[test]
fn the_deployment_rolls_with_zero_pods_offline_and_is_locked_down() {
    let docs = documents();
    let deployment = one(&docs, "Deployment");
    let spec = &deployment["spec"];
    assert_eq!(spec["replicas"], 2);
    assert_eq!(spec["strategy"]["type"], "RollingUpdate");
    assert_eq!(spec["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], one(&docs, "ServiceAccount")["metadata"]["name"]);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(strs(&sc["capabilities"]["drop"]), ["ALL"]);
    for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
        assert_eq!(strs(&c[probe]["exec"]["command"]), ["/tether-delegate", "health"], "{probe}");
    }
    for quantity in ["requests", "limits"] {
        assert!(c["resources"][quantity]["memory"].is_string(), "memory {quantity}");
        assert!(c["resources"][quantity]["cpu"].is_string(), "cpu {quantity}");
    }
    // Harness's variable names, read from the one Secret the Role lets the delegate patch.
    let secret = one(&docs, "Secret");
    let secret_name = secret["metadata"]["name"].as_str().unwrap();
    let env = c["env"].as_array().unwrap();
    let var = |name: &str| env.iter().find(|e| e["name"] == name).unwrap_or_else(|| panic!("env {name}"));
    for name in ["ACCOUNT_ID", "DELEGATE_TOKEN", "MANAGER_HOST_AND_PORT"] {
        let from = &var(name)["valueFrom"]["secretKeyRef"];
        assert_eq!(from["name"], secret_name, "{name}");
        assert_eq!(from["key"], name, "{name}");
        assert!(secret["stringData"][name].is_string(), "the Secret has no {name}");
    }
    assert_eq!(var("TETHER_K8S_SECRET")["value"], secret_name);
    assert_eq!(var("TETHER_APPLY_MODE")["value"], "kubernetes");
    assert_eq!(var("TETHER_K8S_POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name");
    // The state directory is writable on a read-only root: a volume is mounted there.
    let state = var("TETHER_STATE_DIR")["value"].as_str().unwrap();
    let mounts = c["volumeMounts"].as_array().unwrap();
    assert!(mounts.iter().any(|m| m["mountPath"] == state), "no volume at {state}");
}
