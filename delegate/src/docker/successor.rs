//! The successor container's specification, computed from the inspect of the current one
//! (pure: no engine calls). Copies the config and host config, replaces the token in the
//! environment, clears a hostname that is the old short id, keeps one network endpoint for
//! create (aliases minus the old short id, IPAM config, links, driver options; no runtime
//! fields) and lists the other networks to connect before start.
use std::collections::HashMap;

use bollard::models::{
    ContainerConfig, ContainerCreateBody, ContainerInspectResponse, EndpointSettings, NetworkingConfig,
};

/// Label on a successor: the id of the container it replaces.
pub const LABEL_REPLACES: &str = "io.tether.replaces";
/// Label on a successor: the name it takes once the old container is gone.
pub const LABEL_CANONICAL_NAME: &str = "io.tether.canonical-name";

/// What to create, and how to wire it. Its `Debug` leaves out the create body, whose
/// environment carries the new token.
#[derive(Clone)]
pub struct Successor {
    /// Temporary name: `<old short id>_<canonical name>`.
    pub name: String,
    /// The canonical name the successor renames itself to.
    pub canonical_name: String,
    /// The create body (config, host config, one endpoint).
    pub body: ContainerCreateBody,
    /// Networks to connect after create, with their endpoint settings.
    pub extra_networks: Vec<(String, EndpointSettings)>,
}

impl std::fmt::Debug for Successor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let networks: Vec<&str> = self.extra_networks.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("Successor")
            .field("name", &self.name)
            .field("canonical_name", &self.canonical_name)
            .field("image", &self.body.image)
            .field("extra_networks", &networks)
            .finish_non_exhaustive()
    }
}

/// Why a successor cannot be specified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// The inspect lacks a field the recipe needs.
    #[error("container inspect lacks {0}")]
    Missing(&'static str),
}

fn endpoint_for_create(settings: &EndpointSettings, short_id: &str, full_id: &str) -> EndpointSettings {
    let aliases = settings.aliases.as_ref().map(|aliases| {
        aliases
            .iter()
            .filter(|a| a.as_str() != short_id && a.as_str() != full_id)
            .cloned()
            .collect::<Vec<_>>()
    });
    EndpointSettings {
        ipam_config: settings.ipam_config.clone(),
        links: settings.links.clone(),
        aliases: aliases.filter(|a| !a.is_empty()),
        driver_opts: settings.driver_opts.clone(),
        ..EndpointSettings::default()
    }
}

fn replace_env(env: Vec<String>, token: &str) -> Vec<String> {
    let mut saw_secret = false;
    let mut out: Vec<String> = env
        .into_iter()
        .map(|entry| {
            let key = entry.split('=').next().unwrap_or("");
            match key {
                "ACCOUNT_SECRET" => {
                    saw_secret = true;
                    format!("ACCOUNT_SECRET={token}")
                }
                "DELEGATE_TOKEN" => format!("DELEGATE_TOKEN={token}"),
                _ => entry,
            }
        })
        .collect();
    if !saw_secret {
        out.push(format!("ACCOUNT_SECRET={token}"));
    }
    out
}

fn create_body(config: ContainerConfig) -> ContainerCreateBody {
    ContainerCreateBody {
        hostname: config.hostname,
        domainname: config.domainname,
        user: config.user,
        attach_stdin: config.attach_stdin,
        attach_stdout: config.attach_stdout,
        attach_stderr: config.attach_stderr,
        exposed_ports: config.exposed_ports,
        tty: config.tty,
        open_stdin: config.open_stdin,
        stdin_once: config.stdin_once,
        env: config.env,
        cmd: config.cmd,
        healthcheck: config.healthcheck,
        args_escaped: config.args_escaped,
        image: config.image,
        volumes: config.volumes,
        working_dir: config.working_dir,
        entrypoint: config.entrypoint,
        network_disabled: config.network_disabled,
        on_build: config.on_build,
        labels: config.labels,
        stop_signal: config.stop_signal,
        stop_timeout: config.stop_timeout,
        shell: config.shell,
        host_config: None,
        networking_config: None,
    }
}

/// The canonical name of `inspect`'s container: its label if it is itself a successor that
/// has not renamed yet, else its name.
pub fn canonical_name(inspect: &ContainerInspectResponse) -> Option<String> {
    let label = inspect
        .config
        .as_ref()
        .and_then(|c| c.labels.as_ref())
        .and_then(|labels| labels.get(LABEL_CANONICAL_NAME))
        .cloned();
    let name = inspect.name.as_deref().map(|n| n.trim_start_matches('/').to_owned());
    match (label, name) {
        // A container renamed by hand keeps its new name.
        (Some(label), Some(name)) if name.ends_with(&format!("_{label}")) => Some(label),
        (_, Some(name)) => Some(name),
        (label, None) => label,
    }
}

/// Specifies the successor of `inspect`'s container, carrying `token`.
pub fn successor_spec(inspect: &ContainerInspectResponse, token: &str) -> Result<Successor, SpecError> {
    let full_id = inspect.id.clone().ok_or(SpecError::Missing("Id"))?;
    let short_id = super::container_id::short_id(&full_id).to_owned();
    let canonical_name = canonical_name(inspect).ok_or(SpecError::Missing("Name"))?;
    let config = inspect.config.clone().ok_or(SpecError::Missing("Config"))?;
    let host_config = inspect.host_config.clone().ok_or(SpecError::Missing("HostConfig"))?;

    let mut body = create_body(config);
    // The exact image the current container runs, even if its tag has moved since.
    if let Some(image_id) = inspect.image.clone() {
        body.image = Some(image_id);
    }
    body.env = Some(replace_env(body.env.take().unwrap_or_default(), token));
    if body.hostname.as_deref() == Some(short_id.as_str()) {
        body.hostname = None;
    }
    let labels = body.labels.get_or_insert_with(HashMap::new);
    labels.insert(LABEL_REPLACES.to_owned(), full_id.clone());
    labels.insert(LABEL_CANONICAL_NAME.to_owned(), canonical_name.clone());

    let network_mode = host_config.network_mode.clone().unwrap_or_default();
    let shares_stack =
        matches!(network_mode.as_str(), "host" | "none") || network_mode.starts_with("container:");
    let mut networks: Vec<(String, EndpointSettings)> = inspect
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.clone())
        .unwrap_or_default()
        .into_iter()
        .collect();
    networks.sort_by(|a, b| a.0.cmp(&b.0));
    let mut extra_networks = Vec::new();
    if !shares_stack && !networks.is_empty() {
        // The primary network: the one named by the network mode, else the first by name.
        let primary_index = networks
            .iter()
            .position(|(name, _)| *name == network_mode || (network_mode == "default" && name == "bridge"))
            .unwrap_or(0);
        let (primary_name, primary) = networks.remove(primary_index);
        body.networking_config = Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                primary_name,
                endpoint_for_create(&primary, &short_id, &full_id),
            )])),
        });
        extra_networks = networks
            .into_iter()
            .map(|(name, settings)| {
                let endpoint = endpoint_for_create(&settings, &short_id, &full_id);
                (name, endpoint)
            })
            .collect();
    }
    body.host_config = Some(host_config);

    Ok(Successor { name: format!("{short_id}_{canonical_name}"), canonical_name, body, extra_networks })
}

#[cfg(test)]
mod tests {
    use bollard::models::{HostConfig, NetworkSettings, RestartPolicy, RestartPolicyNameEnum};

    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn endpoint(aliases: &[&str]) -> EndpointSettings {
        EndpointSettings {
            aliases: Some(aliases.iter().map(|a| (*a).to_owned()).collect()),
            ip_address: Some("172.18.0.5".into()),
            endpoint_id: Some("runtime".into()),
            network_id: Some("netid".into()),
            mac_address: Some("02:42:ac:12:00:05".into()),
            ..EndpointSettings::default()
        }
    }

    fn inspect() -> ContainerInspectResponse {
        ContainerInspectResponse {
            id: Some(ID.into()),
            name: Some("/delegate".into()),
            image: Some("sha256:feed".into()),
            config: Some(ContainerConfig {
                hostname: Some("0123456789ab".into()),
                image: Some("tether-delegate:latest".into()),
                env: Some(vec![
                    "ACCOUNT_ID=acme".into(),
                    "ACCOUNT_SECRET=old".into(),
                    "DELEGATE_TOKEN=old".into(),
                ]),
                labels: Some(HashMap::from([("team".to_owned(), "ops".to_owned())])),
                ..ContainerConfig::default()
            }),
            host_config: Some(HostConfig {
                network_mode: Some("front".into()),
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                    maximum_retry_count: None,
                }),
                binds: Some(vec!["/var/run/docker.sock:/var/run/docker.sock".into()]),
                ..HostConfig::default()
            }),
            network_settings: Some(NetworkSettings {
                networks: Some(HashMap::from([
                    ("front".to_owned(), endpoint(&["delegate", "0123456789ab", "d-front"])),
                    ("back".to_owned(), endpoint(&["0123456789ab", "d-back"])),
                ])),
                ..NetworkSettings::default()
            }),
            ..ContainerInspectResponse::default()
        }
    }

    #[test]
    fn successor_copies_config_and_replaces_the_token() {
        let spec = successor_spec(&inspect(), "NEW").unwrap();
        assert_eq!(spec.name, "0123456789ab_delegate");
        assert_eq!(spec.canonical_name, "delegate");
        let body = &spec.body;
        assert_eq!(body.image.as_deref(), Some("sha256:feed"));
        assert_eq!(
            body.env.as_deref().unwrap(),
            ["ACCOUNT_ID=acme", "ACCOUNT_SECRET=NEW", "DELEGATE_TOKEN=NEW"]
        );
        assert_eq!(body.hostname, None, "hostname equal to the old short id is cleared");
        let labels = body.labels.as_ref().unwrap();
        assert_eq!(labels["team"], "ops");
        assert_eq!(labels[LABEL_REPLACES], ID);
        assert_eq!(labels[LABEL_CANONICAL_NAME], "delegate");
        let host = body.host_config.as_ref().unwrap();
        assert_eq!(host.restart_policy.as_ref().unwrap().name, Some(RestartPolicyNameEnum::UNLESS_STOPPED));
        assert_eq!(host.binds.as_ref().unwrap().len(), 1);
    }

    #[test]
    fn one_endpoint_at_create_and_the_rest_connected_later() {
        let spec = successor_spec(&inspect(), "NEW").unwrap();
        let endpoints = spec.body.networking_config.as_ref().unwrap().endpoints_config.as_ref().unwrap();
        assert_eq!(endpoints.len(), 1);
        let front = &endpoints["front"];
        assert_eq!(front.aliases.as_deref().unwrap(), ["delegate", "d-front"]);
        assert_eq!(front.ip_address, None, "no runtime fields");
        assert_eq!(front.endpoint_id, None);
        assert_eq!(front.mac_address, None);
        assert_eq!(spec.extra_networks.len(), 1);
        assert_eq!(spec.extra_networks[0].0, "back");
        assert_eq!(spec.extra_networks[0].1.aliases.as_deref().unwrap(), ["d-back"]);
    }

    #[test]
    fn a_set_hostname_is_kept_and_a_missing_secret_is_added() {
        let mut inspect = inspect();
        let config = inspect.config.as_mut().unwrap();
        config.hostname = Some("worker-1".into());
        config.env = Some(vec!["ACCOUNT_SECRET_FILE=/secrets/token".into()]);
        let spec = successor_spec(&inspect, "NEW").unwrap();
        assert_eq!(spec.body.hostname.as_deref(), Some("worker-1"));
        assert_eq!(
            spec.body.env.as_deref().unwrap(),
            ["ACCOUNT_SECRET_FILE=/secrets/token", "ACCOUNT_SECRET=NEW"]
        );
    }

    #[test]
    fn host_network_gets_no_endpoints() {
        let mut inspect = inspect();
        inspect.host_config.as_mut().unwrap().network_mode = Some("host".into());
        let spec = successor_spec(&inspect, "NEW").unwrap();
        assert!(spec.body.networking_config.is_none());
        assert!(spec.extra_networks.is_empty());
    }

    #[test]
    fn canonical_name_survives_a_second_rotation() {
        let mut inspect = inspect();
        inspect.name = Some("/0123456789ab_delegate".into());
        inspect.config.as_mut().unwrap().labels =
            Some(HashMap::from([(LABEL_CANONICAL_NAME.to_owned(), "delegate".to_owned())]));
        assert_eq!(canonical_name(&inspect).as_deref(), Some("delegate"));
        inspect.name = Some("/renamed-by-hand".into());
        assert_eq!(canonical_name(&inspect).as_deref(), Some("renamed-by-hand"));
    }
}
