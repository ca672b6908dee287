//! Sluice's Rust SDK (`sdk/plugin`, crate `sluice-plugin`) through the real host: a plugin built
//! from source on the SDK (`sdk/plugin/tests/check`) uses headers, pairs, bodies, local
//! responses, callouts, properties, shared data, metrics and logs, and each shows its effect.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sluice_plugin_testkit::{json, Request, Response, TestKit};

/// Builds the check plugin once per test process.
fn check_plugin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
            sluice_plugin_testkit::build_wasm(
                &root.join("sdk/plugin/tests/check"),
                Some(&root.join("target/wasm-plugins")),
            )
            .unwrap_or_else(|e| panic!("cannot build sdk/plugin/tests/check: {e}"))
        })
        .clone()
}

fn kit() -> TestKit {
    match TestKit::load(check_plugin()).and_then(|k| k.config(json!("hello"))) {
        Ok(kit) => kit,
        Err(e) => panic!("cannot load the check plugin: {e}"),
    }
}

#[test]
fn reads_edits_and_removes_request_headers() -> Result<(), sluice_plugin_testkit::Error> {
    let out = kit()
        .request(
            Request::get("/")
                .header("x-do", "headers")
                .header("x-replace", "old")
                .header("x-remove", "gone"),
        )
        .run()?;
    let up = out.upstream();
    let names = up.header("x-names").unwrap_or_default();
    for name in ["x-do", "x-replace", "x-remove"] {
        assert!(
            names.split(',').any(|n| n == name),
            "{name} missing from {names}"
        );
    }
    assert_eq!(up.header("x-replace"), Some("new"));
    assert_eq!(up.header("x-remove"), None);
    // Every response: the configuration, and the context count of this VM.
    assert_eq!(out.response.header("x-greeting"), Some("hello"));
    assert_eq!(out.response.header("x-seen"), Some("1"));
    Ok(())
}

#[test]
fn replaces_the_whole_header_list() -> Result<(), sluice_plugin_testkit::Error> {
    let out = kit()
        .request(
            Request::get("/original")
                .header("x-do", "pairs")
                .header("x-old", "1"),
        )
        .run()?;
    let up = out.upstream();
    assert_eq!(up.path, "/rewritten");
    assert_eq!(up.header("x-only"), Some("1"));
    assert_eq!(up.header("x-old"), None);
    Ok(())
}

#[test]
fn answers_locally_without_the_upstream() -> Result<(), sluice_plugin_testkit::Error> {
    let out = kit()
        .request(Request::get("/").header("x-do", "reply"))
        .run()?;
    assert!(out.upstream_request.is_none());
    assert_eq!(out.response.status, 418);
    assert_eq!(out.response.header("x-reply"), Some("yes"));
    assert_eq!(out.response.body_text(), "teapot");
    assert!(!out.failed());
    Ok(())
}

#[test]
fn a_callout_answer_reaches_the_stream_that_sent_it() -> Result<(), sluice_plugin_testkit::Error> {
    let kit = kit().on_http_call("auth", |req| {
        assert_eq!(req.path, "/check");
        Response::ok().header("x-user", "alice").body("granted")
    });
    let out = kit
        .request(Request::get("/").header("x-do", "callout"))
        .run()?;
    assert_eq!(out.callouts.len(), 1);
    let up = out.upstream();
    assert_eq!(up.header("x-user"), Some("alice"));
    assert_eq!(up.header("x-callout-body"), Some("granted"));

    // No handler for the cluster: the plugin sees a failed call and answers 503 itself.
    let out = TestKit::load(check_plugin())?
        .config(json!("hello"))?
        .request(Request::get("/").header("x-do", "callout"))
        .run()?;
    assert_eq!(out.response.status, 503);
    assert_eq!(out.response.body_text(), "callout failed");
    Ok(())
}

/// A gRPC frame: uncompressed, big-endian length, then the message.
fn grpc_frame(message: &[u8]) -> Vec<u8> {
    let mut frame = vec![0];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
    frame
}

#[test]
fn a_unary_grpc_answer_or_its_error_reaches_the_stream() -> Result<(), sluice_plugin_testkit::Error>
{
    let kit = kit().on_http_call("grpc", |req| {
        assert_eq!(req.path, "/grpc.health.v1.Health/Check");
        assert_eq!(req.header("x-caller"), Some("check"));
        assert_eq!(req.body.as_ref(), grpc_frame(b"\x0a\x03web").as_slice());
        Response::ok()
            .header("content-type", "application/grpc")
            .body(grpc_frame(b"\x08\x01"))
            .trailer("grpc-status", "0")
    });
    let out = kit
        .request(Request::get("/").header("x-do", "grpc"))
        .run()?;
    // SERVING (1), the plugin saw the message without its frame.
    assert_eq!(out.upstream().header("x-grpc-answer"), Some("[8, 1]"));

    let kit = self::kit().on_http_call("grpc", |_| {
        Response::ok()
            .header("content-type", "application/grpc")
            .trailer("grpc-status", "7")
            .trailer("grpc-message", "not for you")
    });
    let out = kit
        .request(Request::get("/").header("x-do", "grpc"))
        .run()?;
    assert_eq!(out.response.status, 403);
    assert_eq!(out.response.body_text(), "grpc status 7: not for you");
    Ok(())
}

#[test]
fn a_grpc_stream_delivers_every_event_to_the_stream_that_opened_it(
) -> Result<(), sluice_plugin_testkit::Error> {
    let kit = kit().on_http_call("grpc", |req| {
        assert_eq!(req.path, "/test.Echo/Chat");
        // Both messages the plugin sent, framed, the stream half-closed after the second.
        let mut sent = grpc_frame(b"one");
        sent.extend(grpc_frame(b"two"));
        assert_eq!(req.body.as_ref(), sent.as_slice());
        let mut answer = grpc_frame(b"ONE");
        answer.extend(grpc_frame(b"TWO"));
        Response::ok()
            .header("content-type", "application/grpc")
            .body(answer)
            .trailer("grpc-status", "0")
    });
    let out = kit
        .request(Request::get("/").header("x-do", "grpc-stream"))
        .run()?;
    assert_eq!(
        out.upstream().header("x-grpc-events"),
        Some("meta:application/grpc,msg:ONE,msg:TWO,trailers:0,close:0")
    );
    Ok(())
}

#[test]
fn buffers_and_rewrites_the_request_body() -> Result<(), sluice_plugin_testkit::Error> {
    let out = kit()
        .request(
            Request::post("/")
                .header("x-do", "body")
                .body("quiet please"),
        )
        .run()?;
    assert_eq!(out.upstream().body_text(), "QUIET PLEASE!");
    Ok(())
}

#[test]
fn reads_properties_shared_data_metrics_and_logs() -> Result<(), sluice_plugin_testkit::Error> {
    let kit = kit();
    let out = kit
        .request(Request::get("/some/path?q=1").header("x-do", "property"))
        .run()?;
    let up = out.upstream();
    assert_eq!(up.header("x-path"), Some("/some/path?q=1"));
    assert_eq!(up.header("x-missing"), Some("Ok(None)"));
    assert!(out.logged("logged with status 200"), "{:?}", out.logs);

    let out = kit
        .request(Request::get("/").header("x-do", "shared"))
        .run()?;
    assert_eq!(out.upstream().header("x-shared"), Some("hello"));
    // The second request on the same VM: a second context, and the counter saw both.
    assert_eq!(out.response.header("x-seen"), Some("2"));
    let requests = out
        .metrics
        .iter()
        .find(|m| m.name.ends_with("sdk_requests"));
    assert!(requests.is_some_and(|m| m.value >= 2), "{:?}", out.metrics);
    Ok(())
}

#[test]
fn a_rejected_configuration_and_a_panic_are_reported() -> Result<(), sluice_plugin_testkit::Error> {
    let err = TestKit::load(check_plugin())?
        .config(json!("reject"))
        .and_then(|k| k.start());
    assert!(
        err.is_err(),
        "a configuration the plugin refuses must fail to start"
    );

    let out = kit()
        .request(Request::get("/").header("x-do", "panic"))
        .run()?;
    assert!(out.failed());
    assert_eq!(out.response.status, 503);
    Ok(())
}
