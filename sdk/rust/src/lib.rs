//! The Sluice plugin test kit: run your proxy-wasm plugin in the real Sluice host from
//! `cargo test`, without a network.
//!
//! The kit drives the gateway's own plugin adapter through the same filter chain and body
//! filtering the proxy uses, on a single-threaded runtime like a gateway worker: what your plugin
//! does here is what it does in `sluice run`. The upstream is a canned [`Response`]; http callouts
//! are answered by handlers you register per cluster; what the plugin logged, the metrics it
//! keeps and whether its VM failed are in the [`Outcome`].
//!
//! ```no_run
//! use sluice_plugin_testkit::{json, Request, Response, TestKit};
//!
//! # fn main() -> Result<(), sluice_plugin_testkit::Error> {
//! let kit = TestKit::load("target/wasm32-wasip1/release/my_plugin.wasm")?
//!     .config(json!({ "header": "x-hello", "value": "world" }))?;
//! let out = kit
//!     .request(Request::get("/x").header("a", "b"))
//!     .response(Response::ok().body("hi"))
//!     .run()?;
//! assert_eq!(out.upstream().header("a"), Some("b"));
//! assert_eq!(out.response.status, 200);
//! assert_eq!(out.response.header("x-hello"), Some("world"));
//! # Ok(())
//! # }
//! ```
//!
//! Requests sent through one [`TestKit`] run one after the other in the same plugin VM, as
//! requests on one gateway worker do. Call the kit from plain `#[test]` functions, not from inside
//! a tokio runtime: it runs its own single-threaded one, as a worker does. What the kit does not add: the proxy's own headers
//! (`x-request-id`, `x-forwarded-*`), routing, other filters.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod build;

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

use serde::Serialize;
use sluice::plugin_test::Harness;

pub use build::{build_wasm, BuildError};
pub use serde_json::json;
pub use sluice::plugin_test::{
    CalloutRecord, CalloutRequest, ClientResponse, LocalReply, LogLine, LogSource, MetricReading,
    Outcome, PluginFailure, PluginTestError as Error, TestRequest as Request,
    TestResponse as Response, UpstreamRequest,
};

type Handler = Rc<dyn Fn(&CalloutRequest) -> Response>;

/// A plugin under test: its code, its settings, and (once started) its VM.
pub struct TestKit {
    wasm: Vec<u8>,
    settings: serde_json::Map<String, serde_json::Value>,
    handlers: Vec<(String, Handler)>,
    harness: RefCell<Option<Harness>>,
}

impl TestKit {
    /// Read a plugin module. The plugin's name is the file name without `.wasm`. Nothing runs
    /// yet: the plugin starts on [`TestKit::config`], [`TestKit::start`] or the first request.
    ///
    /// # Errors
    /// [`Error::Read`] when the file cannot be read.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let wasm = std::fs::read(path).map_err(|source| Error::Read {
            path: path.display().to_string(),
            source,
        })?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "plugin".into());
        Ok(TestKit::from_bytes(&name, wasm))
    }

    /// A plugin from module bytes, named `name`.
    pub fn from_bytes(name: &str, wasm: impl Into<Vec<u8>>) -> Self {
        let mut settings = serde_json::Map::new();
        settings.insert("name".into(), json!(name));
        TestKit {
            wasm: wasm.into(),
            settings,
            handlers: Vec::new(),
            harness: RefCell::new(None),
        }
    }

    /// Set the plugin's configuration (what `get_plugin_configuration` returns: a string as is,
    /// anything else as JSON) and start the plugin with it.
    ///
    /// # Errors
    /// [`Error::Load`] when the plugin rejects the configuration (`on_configure` returned false)
    /// or fails to start; its log lines say why.
    pub fn config(self, config: impl Serialize) -> Result<Self, Error> {
        let kit = self.setting("config", config)?;
        kit.start()?;
        Ok(kit)
    }

    /// Set any key of the plugin's entry in the config file (`root_id`, `vm_config`,
    /// `failure_policy`, `limits`, `allowed_env`); the plugin restarts on the next request.
    ///
    /// # Errors
    /// [`Error::Settings`] when `value` cannot be turned into JSON.
    pub fn setting(mut self, key: &str, value: impl Serialize) -> Result<Self, Error> {
        let v = serde_json::to_value(value).map_err(|e| Error::Settings(e.to_string()))?;
        self.settings.insert(key.to_string(), v);
        self.harness = RefCell::new(None);
        Ok(self)
    }

    /// The plugin's name (metric labels, `plugin_name` property). Metrics are process-global per
    /// name: give each kit its own name when tests running in parallel read the same metric.
    pub fn name(mut self, name: &str) -> Self {
        self.settings.insert("name".into(), json!(name));
        self.harness = RefCell::new(None);
        self
    }

    /// The root context id the plugin is configured with (`root_id`).
    pub fn root_id(mut self, id: &str) -> Self {
        self.settings.insert("root_id".into(), json!(id));
        self.harness = RefCell::new(None);
        self
    }

    /// What happens when the VM fails: `fail_closed` (default: 503), `fail_open` (skip the
    /// plugin), `fail_reload` (recreate the VM after a backoff).
    pub fn failure_policy(mut self, policy: &str) -> Self {
        self.settings.insert("failure_policy".into(), json!(policy));
        self.harness = RefCell::new(None);
        self
    }

    /// Answer http callouts to `cluster` with `handler`. A callout to a cluster without a
    /// handler fails (the plugin sees a failed call, as for an unreachable cluster).
    pub fn on_http_call(
        mut self,
        cluster: &str,
        handler: impl Fn(&CalloutRequest) -> Response + 'static,
    ) -> Self {
        let handler: Handler = Rc::new(handler);
        if let Some(h) = self.harness.get_mut().as_ref() {
            install(h, cluster, &handler);
        }
        self.handlers.push((cluster.to_string(), handler));
        self
    }

    /// Start the plugin now (compile, `on_vm_start`, `on_configure`) if it is not running.
    ///
    /// # Errors
    /// As [`TestKit::config`].
    pub fn start(&self) -> Result<(), Error> {
        if self.harness.borrow().is_some() {
            return Ok(());
        }
        let settings = serde_json::Value::Object(self.settings.clone());
        let harness = Harness::from_settings(settings, &self.wasm)?;
        for (cluster, handler) in &self.handlers {
            install(&harness, cluster, handler);
        }
        *self.harness.borrow_mut() = Some(harness);
        Ok(())
    }

    /// A request to send through the plugin; by default the upstream answers `200` with no body.
    pub fn request(&self, request: Request) -> Run<'_> {
        Run {
            kit: self,
            request,
            response: Response::ok(),
        }
    }
}

fn install(harness: &Harness, cluster: &str, handler: &Handler) {
    let h = handler.clone();
    harness.on_http_call(cluster, Box::new(move |req| h(req)));
}

/// One request about to be run: set the upstream's answer, then [`Run::run`].
pub struct Run<'a> {
    kit: &'a TestKit,
    request: Request,
    response: Response,
}

impl Run<'_> {
    /// What the upstream answers if the request reaches it.
    pub fn response(mut self, response: Response) -> Self {
        self.response = response;
        self
    }

    /// Send the request through the plugin.
    ///
    /// # Errors
    /// [`Error::Load`] when the plugin cannot start; [`Error::Input`] for a malformed request or
    /// response. A plugin that traps or overruns its deadline is not an error: see
    /// [`Outcome::failure`] and the response the failure policy gave.
    pub fn run(self) -> Result<Outcome, Error> {
        self.kit.start()?;
        let guard = self.kit.harness.borrow();
        match guard.as_ref() {
            Some(h) => h.run(&self.request, &self.response),
            // start() just stored it; reaching this would be a bug in the kit.
            None => Err(Error::Settings("the plugin did not start".into())),
        }
    }
}
