//! The test control plane: a real tonic gRPC server implementing envoy-types'
//! `AggregatedDiscoveryService`, both state of the world and Delta, plus a tiny HTTP server for
//! remote wasm code. Resources are pushed whole (one version for everything); every request the
//! gateway sends is logged in one shape for both protocols.

use std::collections::{HashMap, HashSet};
use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
};
use envoy_types::pb::google::protobuf::Any;
use futures_util::Stream;
use tokio::sync::{mpsc, watch};

pub const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const RDS: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const ECDS: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";
/// The order updates are pushed in: what is referred to before what refers to it.
const PUSH_ORDER: [&str; 5] = [CDS, EDS, ECDS, LDS, RDS];

/// What the control plane serves: one version for everything, resources by type URL.
#[derive(Clone, Debug, Default)]
pub struct Resources {
    pub version: String,
    pub by_type: HashMap<&'static str, Vec<(String, Any)>>,
}

/// A request from the gateway, SotW or Delta. `version` is SotW's `version_info`; for Delta it
/// is the version of the response a request ACKs or NACKs (by nonce), or for a first request a
/// version from `initial_resource_versions`.
#[derive(Clone, Debug)]
pub struct Req {
    pub type_url: String,
    pub node: Option<Node>,
    pub nonce: String,
    pub version: String,
    pub error: Option<String>,
    pub subscribe: Vec<String>,
}

impl Req {
    pub fn is_ack(&self, type_url: &str, version: &str) -> bool {
        self.type_url == type_url
            && !self.nonce.is_empty()
            && self.version == version
            && self.error.is_none()
    }
}

#[derive(Clone)]
struct Ads {
    state: watch::Receiver<Resources>,
    requests: Arc<Mutex<Vec<Req>>>,
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, tonic::Status>> + Send>>;
type DeltaStream =
    Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, tonic::Status>> + Send>>;

fn response(res: &Resources, type_url: &str, names: &[String], nonce: u64) -> DiscoveryResponse {
    let items = res.by_type.get(type_url).cloned().unwrap_or_default();
    let resources = items
        .into_iter()
        .filter(|(n, _)| names.is_empty() || names.contains(n))
        .map(|(_, a)| a)
        .collect();
    DiscoveryResponse {
        version_info: res.version.clone(),
        resources,
        type_url: type_url.to_string(),
        nonce: nonce.to_string(),
        ..Default::default()
    }
}

/// Delta state of one stream and one type: what is subscribed, what the client holds.
#[derive(Default)]
struct DeltaType {
    names: HashSet<String>,
    held: HashMap<String, String>,
}

impl DeltaType {
    fn wants(&self, name: &str) -> bool {
        self.names.contains("*") || self.names.contains(name)
    }

    /// What the client lacks (changed or new) and what it holds that is gone; None if nothing.
    fn diff(
        &mut self,
        res: &Resources,
        type_url: &str,
        nonce: u64,
    ) -> Option<DeltaDiscoveryResponse> {
        let items = res.by_type.get(type_url).cloned().unwrap_or_default();
        let mut resources = Vec::new();
        for (name, any) in &items {
            if self.wants(name) && self.held.get(name) != Some(&res.version) {
                self.held.insert(name.clone(), res.version.clone());
                resources.push(Resource {
                    name: name.clone(),
                    version: res.version.clone(),
                    resource: Some(any.clone()),
                    ..Default::default()
                });
            }
        }
        let present: HashSet<&String> = items.iter().map(|(n, _)| n).collect();
        let removed: Vec<String> = self
            .held
            .keys()
            .filter(|n| !present.contains(n))
            .cloned()
            .collect();
        for n in &removed {
            self.held.remove(n);
        }
        if resources.is_empty() && removed.is_empty() {
            return None;
        }
        Some(DeltaDiscoveryResponse {
            system_version_info: res.version.clone(),
            resources,
            type_url: type_url.to_string(),
            removed_resources: removed,
            nonce: nonce.to_string(),
            ..Default::default()
        })
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = ResponseStream;
    type DeltaAggregatedResourcesStream = DeltaStream;

    async fn stream_aggregated_resources(
        &self,
        request: tonic::Request<tonic::Streaming<DiscoveryRequest>>,
    ) -> Result<tonic::Response<ResponseStream>, tonic::Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let mut state = self.state.clone();
        let log = self.requests.clone();
        tokio::spawn(async move {
            let mut subscribed: HashMap<String, Vec<String>> = HashMap::new();
            let mut nonce = 0u64;
            loop {
                tokio::select! {
                    m = inbound.message() => {
                        let Ok(Some(req)) = m else { return };
                        log.lock().unwrap().push(Req {
                            type_url: req.type_url.clone(),
                            node: req.node.clone(),
                            nonce: req.response_nonce.clone(),
                            version: req.version_info.clone(),
                            error: req.error_detail.as_ref().map(|e| e.message.clone()),
                            subscribe: req.resource_names.clone(),
                        });
                        let names_changed = subscribed.get(&req.type_url) != Some(&req.resource_names);
                        subscribed.insert(req.type_url.clone(), req.resource_names.clone());
                        // A first request or a new set of names gets the current resources;
                        // an ACK or NACK of what was just sent gets nothing.
                        if req.response_nonce.is_empty() || names_changed {
                            nonce += 1;
                            let res = state.borrow().clone();
                            if tx.send(Ok(response(&res, &req.type_url, &req.resource_names, nonce))).await.is_err() {
                                return;
                            }
                        }
                    }
                    c = state.changed() => {
                        if c.is_err() { return }
                        let res = state.borrow_and_update().clone();
                        for t in PUSH_ORDER {
                            if let Some(names) = subscribed.get(t) {
                                nonce += 1;
                                if tx.send(Ok(response(&res, t, names, nonce))).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                }
            }
        });
        Ok(tonic::Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn delta_aggregated_resources(
        &self,
        request: tonic::Request<tonic::Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<tonic::Response<DeltaStream>, tonic::Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let mut state = self.state.clone();
        let log = self.requests.clone();
        tokio::spawn(async move {
            let mut types: HashMap<String, DeltaType> = HashMap::new();
            let mut sent: HashMap<String, String> = HashMap::new();
            let mut nonce = 0u64;
            loop {
                tokio::select! {
                    m = inbound.message() => {
                        let Ok(Some(req)) = m else { return };
                        let version = if req.response_nonce.is_empty() {
                            req.initial_resource_versions.values().next().cloned().unwrap_or_default()
                        } else {
                            sent.get(&req.response_nonce).cloned().unwrap_or_default()
                        };
                        log.lock().unwrap().push(Req {
                            type_url: req.type_url.clone(),
                            node: req.node.clone(),
                            nonce: req.response_nonce.clone(),
                            version,
                            error: req.error_detail.as_ref().map(|e| e.message.clone()),
                            subscribe: req.resource_names_subscribe.clone(),
                        });
                        let t = types.entry(req.type_url.clone()).or_default();
                        if req.response_nonce.is_empty() {
                            t.held.extend(req.initial_resource_versions.clone());
                        }
                        let changed = !req.resource_names_subscribe.is_empty()
                            || !req.resource_names_unsubscribe.is_empty();
                        t.names.extend(req.resource_names_subscribe.iter().cloned());
                        for n in &req.resource_names_unsubscribe {
                            t.names.remove(n);
                            t.held.remove(n);
                        }
                        if changed {
                            nonce += 1;
                            let res = state.borrow().clone();
                            if let Some(r) = t.diff(&res, &req.type_url, nonce) {
                                sent.insert(r.nonce.clone(), res.version.clone());
                                if tx.send(Ok(r)).await.is_err() { return }
                            }
                        }
                    }
                    c = state.changed() => {
                        if c.is_err() { return }
                        let res = state.borrow_and_update().clone();
                        for ty in PUSH_ORDER {
                            if let Some(t) = types.get_mut(ty) {
                                nonce += 1;
                                if let Some(r) = t.diff(&res, ty, nonce) {
                                    sent.insert(r.nonce.clone(), res.version.clone());
                                    if tx.send(Ok(r)).await.is_err() { return }
                                }
                            }
                        }
                    }
                }
            }
        });
        Ok(tonic::Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// A control plane on its own runtime; dropping the runtime kills it like a crashed process.
pub struct ControlPlane {
    pub addr: SocketAddr,
    state: watch::Sender<Resources>,
    pub requests: Arc<Mutex<Vec<Req>>>,
    rt: Option<tokio::runtime::Runtime>,
}

impl ControlPlane {
    pub fn start(addr: SocketAddr, initial: Resources) -> ControlPlane {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let (state, rx) = watch::channel(initial);
        let requests = Arc::new(Mutex::new(Vec::new()));
        let ads = Ads {
            state: rx,
            requests: requests.clone(),
        };
        let listener = rt.block_on(async {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                // The port may linger briefly after a restart.
                match tokio::net::TcpListener::bind(addr).await {
                    Ok(l) => return l,
                    Err(e) if Instant::now() > deadline => panic!("bind {addr}: {e}"),
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        let addr = listener.local_addr().expect("addr");
        rt.spawn(
            tonic::transport::Server::builder()
                .add_service(AggregatedDiscoveryServiceServer::new(ads))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        ControlPlane {
            addr,
            state,
            requests,
            rt: Some(rt),
        }
    }

    pub fn push(&self, res: Resources) {
        self.state.send_replace(res);
    }

    pub fn kill(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }

    /// How many requests have been logged: a mark for [`ControlPlane::wait_request_since`].
    pub fn mark(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    /// Wait for a request matching `f` (generous timeout only to avoid hanging).
    pub fn wait_request(&self, what: &str, f: impl Fn(&Req) -> bool) -> Req {
        self.wait_request_since(0, what, f)
    }

    /// As [`ControlPlane::wait_request`], among the requests logged after `mark`.
    pub fn wait_request_since(&self, mark: usize, what: &str, f: impl Fn(&Req) -> bool) -> Req {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(r) = self
                .requests
                .lock()
                .unwrap()
                .iter()
                .skip(mark)
                .find(|r| f(r))
            {
                return r.clone();
            }
            if Instant::now() > deadline {
                panic!("no {what}; requests: {:#?}", self.requests.lock().unwrap());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An HTTP/1.1 server handing out files by path (`/<name>`), for remote wasm code. Counts the
/// requests it answers.
pub struct CodeServer {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
}

impl CodeServer {
    pub fn start(files: Vec<(String, Vec<u8>)>) -> CodeServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { return };
                counter.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                let found = files.iter().find(|(name, _)| path == format!("/{name}"));
                let reply = match found {
                    Some((_, body)) => {
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        r.extend_from_slice(body);
                        r
                    }
                    None => {
                        b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                            .to_vec()
                    }
                };
                let _ = s.write_all(&reply);
            }
        });
        CodeServer { addr, hits }
    }

    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{name}", self.addr)
    }
}
