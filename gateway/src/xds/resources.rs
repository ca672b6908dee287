//! The xDS resources the client holds (last accepted per type), and turning them into an overlay.
//!
//! A listener whose RDS RouteConfiguration has not arrived, or whose routes name a cluster that is
//! not known yet, waits (Envoy calls it warming); so does an EDS cluster without its
//! ClusterLoadAssignment. Waiting resources are left out of the overlay, not errors.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::TypedExtensionConfig;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::google::protobuf::Any;

use super::http_filters::{self, FilterSpec, MappedFilter, MappedPlugin};
use super::mapping::{self, MapError};
use super::Overlay;
use crate::config::model::{ClusterConfig, HashKeyConfig, LoadBalancing};

pub const LISTENER_TYPE: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ROUTE_TYPE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ENDPOINT_TYPE: &str =
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub use super::http_filters::EXTENSION_CONFIG_TYPE as EXTENSION_TYPE;

/// Accepted resources by type, each with the version of the response that carried them.
#[derive(Clone, Debug, Default)]
pub struct Resources {
    pub listeners: BTreeMap<String, Listener>,
    pub routes: BTreeMap<String, RouteConfiguration>,
    pub clusters: BTreeMap<String, Cluster>,
    pub endpoints: BTreeMap<String, ClusterLoadAssignment>,
    /// ECDS: HTTP filter configs by name.
    pub extensions: BTreeMap<String, TypedExtensionConfig>,
    /// type URL → version_info last accepted.
    pub versions: BTreeMap<String, String>,
    /// type URL → resource name → its version (Delta ADS `initial_resource_versions`).
    pub resource_versions: BTreeMap<String, BTreeMap<String, String>>,
}

/// An overlay and the RDS/EDS names it needs subscribed.
#[derive(Clone, Debug)]
pub struct Built {
    pub overlay: Overlay,
    pub rds: BTreeSet<String>,
    pub eds: BTreeSet<String>,
    /// ECDS names the listeners refer to.
    pub ecds: BTreeSet<String>,
    /// The wasm plugins the overlay's chains use, code not yet resolved.
    pub plugins: Vec<MappedPlugin>,
}

fn named<M: prost::Message + prost::Name + Default>(
    resources: &[Any],
    kind: &str,
    name: impl Fn(&M) -> String,
) -> Result<BTreeMap<String, M>, MapError> {
    let mut out = BTreeMap::new();
    for any in resources {
        let m: M = mapping::decode_any(any, kind)?;
        let n = name(&m);
        if out.insert(n.clone(), m).is_some() {
            return Err(MapError {
                resource: format!("{kind} \"{n}\""),
                message: "sent twice in one response".into(),
            });
        }
    }
    Ok(out)
}

/// Give RING_HASH clusters their `hash_key` from the header the routes using them hash on.
/// One header per cluster; a cluster no served route uses yet waits.
fn ring_hash_keys(
    clusters: Vec<ClusterConfig>,
    hashes: &BTreeMap<String, BTreeSet<String>>,
    used: &BTreeSet<String>,
    waiting: &mut Vec<String>,
) -> Result<Vec<ClusterConfig>, MapError> {
    let mut out = Vec::with_capacity(clusters.len());
    for mut c in clusters {
        if c.load_balancing != LoadBalancing::RingHash {
            out.push(c);
            continue;
        }
        let what = || format!("Cluster \"{}\"", c.name);
        match hashes.get(&c.name).map(|h| h.iter().collect::<Vec<_>>()).as_deref() {
            Some([header]) => {
                c.hash_key = Some(HashKeyConfig {
                    header: (*header).clone(),
                });
                out.push(c);
            }
            Some(several) if several.len() > 1 => {
                return Err(MapError {
                    resource: what(),
                    message: format!(
                        "RING_HASH: the routes to it hash on different headers {several:?}; Sluice keeps one hash key per cluster"
                    ),
                })
            }
            _ if used.contains(&c.name) => {
                return Err(MapError {
                    resource: what(),
                    message: "RING_HASH: a route to it has no header hash_policy (Sluice hashes on a request header)".into(),
                })
            }
            _ => waiting.push(format!("cluster {} (RING_HASH without a route hash_policy)", c.name)),
        }
    }
    Ok(out)
}

impl Resources {
    /// The version last accepted for `type_url` (empty before the first).
    pub fn version(&self, type_url: &str) -> String {
        self.versions.get(type_url).cloned().unwrap_or_default()
    }

    /// Replace every resource of `type_url` with a state-of-the-world response's resources.
    ///
    /// # Errors
    /// An unknown type, a resource that does not decode, a name sent twice.
    pub fn replace(
        &mut self,
        type_url: &str,
        version: &str,
        resources: &[Any],
    ) -> Result<(), MapError> {
        match type_url {
            LISTENER_TYPE => {
                self.listeners = named(resources, "Listener", |l: &Listener| l.name.clone())?
            }
            ROUTE_TYPE => {
                self.routes = named(resources, "RouteConfiguration", |r: &RouteConfiguration| {
                    r.name.clone()
                })?
            }
            CLUSTER_TYPE => {
                self.clusters = named(resources, "Cluster", |c: &Cluster| c.name.clone())?
            }
            ENDPOINT_TYPE => {
                self.endpoints = named(
                    resources,
                    "ClusterLoadAssignment",
                    |c: &ClusterLoadAssignment| c.cluster_name.clone(),
                )?
            }
            EXTENSION_TYPE => {
                self.extensions = named(
                    resources,
                    "TypedExtensionConfig",
                    |t: &TypedExtensionConfig| t.name.clone(),
                )?
            }
            other => {
                return Err(MapError {
                    resource: format!("type {other}"),
                    message: "not supported by Sluice".into(),
                })
            }
        }
        self.versions
            .insert(type_url.to_string(), version.to_string());
        let names = self.names(type_url);
        self.resource_versions.insert(
            type_url.to_string(),
            names
                .into_iter()
                .map(|n| (n, version.to_string()))
                .collect(),
        );
        Ok(())
    }

    /// Names held for `type_url`.
    pub fn names(&self, type_url: &str) -> Vec<String> {
        match type_url {
            LISTENER_TYPE => self.listeners.keys().cloned().collect(),
            ROUTE_TYPE => self.routes.keys().cloned().collect(),
            CLUSTER_TYPE => self.clusters.keys().cloned().collect(),
            ENDPOINT_TYPE => self.endpoints.keys().cloned().collect(),
            EXTENSION_TYPE => self.extensions.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// Add or replace some resources of `type_url` (a Delta ADS response): `(version, resource)`.
    ///
    /// # Errors
    /// As [`Resources::replace`].
    pub fn upsert(
        &mut self,
        type_url: &str,
        system_version: &str,
        items: &[(String, Any)],
    ) -> Result<(), MapError> {
        for (version, any) in items {
            let mut one = Resources::default();
            one.replace(type_url, version, std::slice::from_ref(any))?;
            let versions = self
                .resource_versions
                .entry(type_url.to_string())
                .or_default();
            for name in one.names(type_url) {
                versions.insert(name, version.clone());
            }
            self.listeners.extend(one.listeners);
            self.routes.extend(one.routes);
            self.clusters.extend(one.clusters);
            self.endpoints.extend(one.endpoints);
            self.extensions.extend(one.extensions);
        }
        self.versions
            .insert(type_url.to_string(), system_version.to_string());
        Ok(())
    }

    /// Drop resources of `type_url` by name (Delta ADS `removed_resources`).
    pub fn remove(&mut self, type_url: &str, names: &[String]) {
        for n in names {
            match type_url {
                LISTENER_TYPE => drop(self.listeners.remove(n)),
                ROUTE_TYPE => drop(self.routes.remove(n)),
                CLUSTER_TYPE => drop(self.clusters.remove(n)),
                ENDPOINT_TYPE => drop(self.endpoints.remove(n)),
                EXTENSION_TYPE => drop(self.extensions.remove(n)),
                _ => {}
            }
            if let Some(v) = self.resource_versions.get_mut(type_url) {
                v.remove(n);
            }
        }
    }

    /// Map everything into an overlay. `known_cluster` says whether a cluster name outside xDS
    /// (the config file's) exists, for listeners' warming.
    ///
    /// # Errors
    /// The first resource that cannot be mapped.
    pub fn build(&self, known_cluster: &dyn Fn(&str) -> bool) -> Result<Built, MapError> {
        let mut clusters = Vec::new();
        let mut eds = BTreeSet::new();
        let mut waiting = Vec::new();
        for c in self.clusters.values() {
            let mut m = mapping::cluster(c)?;
            if let Some(service) = &m.eds {
                eds.insert(service.clone());
                match self.endpoints.get(service) {
                    Some(cla) => {
                        m.cluster.endpoints = mapping::cluster_load_assignment(
                            cla,
                            &format!("Cluster \"{}\"", c.name),
                        )?
                    }
                    None => {
                        waiting.push(format!("cluster {} (EDS {service})", c.name));
                        continue;
                    }
                }
            }
            clusters.push(m.cluster);
        }
        let ready: BTreeSet<&str> = clusters.iter().map(|c| c.name.as_str()).collect();
        let mut listeners = Vec::new();
        let mut rds = BTreeSet::new();
        let mut extensions = BTreeMap::new();
        for (name, tec) in &self.extensions {
            extensions.insert(name.as_str(), http_filters::extension_config(tec)?);
        }
        let mut ecds = BTreeSet::new();
        let mut hashes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut used: BTreeSet<String> = BTreeSet::new();
        let mut plugins: BTreeMap<String, MappedPlugin> = BTreeMap::new();
        'listeners: for l in self.listeners.values() {
            let mut m = mapping::listener(l)?;
            let mut chain: Vec<&MappedFilter> = Vec::new();
            for spec in &m.filters {
                match spec {
                    FilterSpec::Ready(f) => chain.push(f),
                    FilterSpec::Discovered {
                        name,
                        default,
                        type_urls,
                    } => {
                        ecds.insert(name.clone());
                        match (extensions.get(name.as_str()), default) {
                            (Some(f), _) => {
                                if let Some(tec) = self.extensions.get(name) {
                                    if !http_filters::type_allowed(tec, type_urls) {
                                        return Err(MapError {
                                            resource: format!("TypedExtensionConfig \"{name}\""),
                                            message: format!(
                                                "its type is not among listener {}'s type_urls {type_urls:?}",
                                                l.name
                                            ),
                                        });
                                    }
                                }
                                chain.push(f)
                            }
                            (None, Some(f)) => chain.push(f),
                            (None, None) => {
                                waiting.push(format!("listener {} (ECDS {name})", l.name));
                                continue 'listeners;
                            }
                        }
                    }
                }
            }
            if let Some(name) = &m.rds {
                rds.insert(name.clone());
                match self.routes.get(name) {
                    Some(rc) => {
                        m.listener.routes = mapping::route_configuration(rc)?;
                        m.hashes = mapping::hash_headers(rc)?;
                    }
                    None => {
                        waiting.push(format!("listener {} (RDS {name})", l.name));
                        continue 'listeners;
                    }
                }
            }
            let missing: Vec<&str> = m
                .listener
                .routes
                .iter()
                .flat_map(|r| {
                    r.cluster.iter().map(String::as_str).chain(
                        r.weighted_clusters
                            .iter()
                            .flatten()
                            .map(|w| w.name.as_str()),
                    )
                })
                .filter(|c| !ready.contains(c) && !known_cluster(c))
                .collect();
            if let Some(c) = missing.first() {
                waiting.push(format!("listener {} (cluster {c})", l.name));
                continue;
            }
            for (cluster, header) in &m.hashes {
                hashes
                    .entry(cluster.clone())
                    .or_default()
                    .insert(header.clone());
            }
            for r in &m.listener.routes {
                let names = r
                    .cluster
                    .iter()
                    .chain(r.weighted_clusters.iter().flatten().map(|w| &w.name));
                used.extend(names.cloned());
            }
            for f in chain {
                if let MappedFilter::Wasm(p) = f {
                    plugins.insert(p.plugin.name.clone(), (**p).clone());
                }
                m.listener.filters.push(f.chain_entry());
            }
            listeners.push(m.listener);
        }
        let clusters = ring_hash_keys(clusters, &hashes, &used, &mut waiting)?;
        let status = serde_json::json!({
            "versions": self.versions,
            "listeners": self.listeners.keys().collect::<Vec<_>>(),
            "route_configurations": self.routes.keys().collect::<Vec<_>>(),
            "clusters": self.clusters.keys().collect::<Vec<_>>(),
            "cluster_load_assignments": self.endpoints.keys().collect::<Vec<_>>(),
            "extension_configs": self.extensions.keys().collect::<Vec<_>>(),
            "waiting": waiting,
        });
        Ok(Built {
            overlay: Overlay {
                listeners,
                clusters,
                plugins: Vec::new(),
                status,
            },
            rds,
            eds,
            ecds,
            plugins: plugins.into_values().collect(),
        })
    }
}

#[cfg(test)]
mod tests;
