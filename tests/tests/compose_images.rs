//! The images `docker/build-images.sh` builds: `FROM scratch` with one static binary, OCI
//! labels, a numeric non-root user, the delegate's health check, and the delegate image within
//! its size target (15 MB).
use serde_json::Value;
use tether_tests::compose::preflight;
use tether_tests::harness::docker::docker;

fn inspect(image: &str) -> Value {
    let text = docker(&["image", "inspect", image]).expect("docker image inspect");
    let mut list: Vec<Value> = serde_json::from_str(&text).expect("inspect JSON");
    list.pop().expect("one image")
}

fn check_image(image: &str, binary: &str) -> Value {
    preflight().expect("preflight");
    let info = inspect(image);
    let config = &info["Config"];
    assert_eq!(config["Entrypoint"], serde_json::json!([binary]), "{image}: entrypoint");
    let user = config["User"].as_str().unwrap_or("");
    assert!(!user.is_empty() && !user.starts_with("0") && !user.starts_with("root"), "{image}: runs as root");
    assert!(
        user.split(':').all(|part| part.parse::<u32>().is_ok()),
        "{image}: user must be numeric, got {user}"
    );
    for label in ["version", "revision", "source", "title", "created"] {
        let key = format!("org.opencontainers.image.{label}");
        let value = config["Labels"][&key].as_str().unwrap_or("");
        assert!(!value.is_empty() && value != "unknown", "{image}: label {key} missing");
    }
    let version = config["Labels"]["org.opencontainers.image.version"].as_str().unwrap();
    let name = image.split(':').next().unwrap();
    let tagged = inspect(&format!("{name}:{version}"));
    assert_eq!(tagged["Id"], info["Id"], "{image}: not also tagged with its version {version}");

    // FROM scratch: the filesystem is the binary, empty directories and nothing else.
    let container = docker(&["create", image]).expect("docker create").trim().to_string();
    let export = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("docker export {container} | tar -tf -"))
        .output()
        .expect("docker export");
    docker(&["rm", &container]).expect("docker rm");
    let listing = String::from_utf8_lossy(&export.stdout);
    let files: Vec<&str> = listing
        .lines()
        .filter(|path| !path.ends_with('/'))
        // Files the engine itself puts into every container.
        .filter(|path| !path.starts_with("dev/") && !path.starts_with("etc/") && *path != ".dockerenv")
        .collect();
    assert_eq!(files, vec![binary.trim_start_matches('/')], "{image}: unexpected files");
    info
}

#[test]
fn manager_image_is_scratch_static_labelled_non_root() {
    let info = check_image("tether-manager:latest", "/tether-manager");
    assert_eq!(info["Config"]["Cmd"], serde_json::json!(["serve"]));
    assert!(info["Config"]["ExposedPorts"]["8443/tcp"].is_object(), "manager image exposes 8443");
}

#[test]
fn delegate_image_is_scratch_static_labelled_non_root_with_healthcheck_and_small() {
    let info = check_image("tether-delegate:latest", "/tether-delegate");
    assert_eq!(
        info["Config"]["Healthcheck"]["Test"],
        serde_json::json!(["CMD", "/tether-delegate", "health"]),
        "delegate health check"
    );
    let size = info["Size"].as_u64().expect("image size");
    println!("tether-delegate:latest is {size} bytes");
    assert!(size <= 15_000_000, "delegate image is {size} bytes, target <= 15 MB");
}
