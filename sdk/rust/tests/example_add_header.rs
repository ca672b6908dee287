//! The example from sdk/README.md, as a plugin author would write it for their own plugin: load
//! the built module, configure it, send a request, look at what the upstream and the client saw.

mod support;

use sluice_plugin_testkit::{json, Request, Response, TestKit};

#[test]
fn adds_and_removes_headers() -> Result<(), sluice_plugin_testkit::Error> {
    let kit = TestKit::load(support::plugin("add_header"))?.config(json!({
        "request": [
            { "name": "x-forwarded-by", "value": "sluice" },
            { "name": "x-internal-token", "action": "remove" }
        ],
        "response": [{ "name": "server", "value": "sluice", "action": "default" }]
    }))?;

    let out = kit
        .request(Request::get("/orders?page=2").header("x-internal-token", "secret"))
        .response(
            Response::ok()
                .header("content-type", "text/plain")
                .body("ok"),
        )
        .run()?;

    let upstream = out.upstream();
    assert_eq!(upstream.path, "/orders?page=2");
    assert_eq!(upstream.header("x-forwarded-by"), Some("sluice"));
    assert_eq!(upstream.header("x-internal-token"), None);
    assert_eq!(out.response.status, 200);
    assert_eq!(out.response.header("server"), Some("sluice"));
    assert_eq!(out.response.body_text(), "ok");
    assert!(!out.failed());
    Ok(())
}

#[test]
fn rejects_a_bad_configuration_and_says_why() {
    let kit = TestKit::load(support::plugin("add_header")).map(|k| {
        k.config(json!({ "request": [{ "name": "x-a", "action": "remove", "value": "v" }] }))
    });
    let err = match kit {
        Ok(Err(e)) => e.to_string(),
        Ok(Ok(_)) => panic!("a remove rule with a value must be rejected"),
        Err(e) => panic!("cannot load the plugin: {e}"),
    };
    assert!(err.contains("rejected its configuration"), "{err}");
}

/// How a plugin author tests the plugin next to the test: build it for wasm32-wasip1 from the
/// test (cargo skips the work when nothing changed), then load the module.
#[test]
fn builds_the_plugin_from_source_and_runs_it() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    // The repository builds its plugins into target/wasm-plugins (scripts/build-plugins.sh).
    let wasm = sluice_plugin_testkit::build_wasm(
        &root.join("plugins/add-header"),
        Some(&root.join("target/wasm-plugins")),
    )?;
    let kit = TestKit::load(wasm)?.config(json!({ "header": "x-hello", "value": "world" }))?;
    let out = kit.request(Request::get("/")).run()?;
    assert_eq!(out.response.header("x-hello"), Some("world"));
    Ok(())
}
