//! The kit against real plugins built from this repository: first-party plugins (add-header,
//! api-key-auth, deny-path) and conformance plugins for callouts, bodies, logs, metrics and
//! failures.

mod support;

use sluice_plugin_testkit::{json, Error, LogSource, Request, Response, TestKit};

const KEY: &str = "k_test_0123456789";

fn api_key_auth() -> Result<TestKit, Error> {
    TestKit::load(support::plugin("api_key_auth"))?.config(json!({
        "keys": [{ "name": "mobile-app", "key": KEY }],
        "skip_paths": ["/healthz"]
    }))
}

#[test]
fn api_key_auth_lets_a_valid_key_through_and_strips_it() -> Result<(), Error> {
    let kit = api_key_auth()?;
    let out = kit
        .request(Request::get("/api/orders").header("x-api-key", KEY))
        .run()?;
    assert!(out.local_response.is_none());
    let up = out.upstream();
    assert_eq!(up.header("x-api-key"), None, "the credential is stripped");
    assert_eq!(up.header("x-api-consumer"), Some("mobile-app"));
    assert_eq!(out.response.status, 200);

    let bearer = kit
        .request(Request::get("/api/orders").header("authorization", &format!("Bearer {KEY}")))
        .run()?;
    assert_eq!(bearer.upstream().header("authorization"), None);
    Ok(())
}

#[test]
fn api_key_auth_refuses_missing_and_wrong_keys_locally() -> Result<(), Error> {
    let kit = api_key_auth()?;
    for (req, error) in [
        (Request::get("/api/orders"), "missing_api_key"),
        (
            Request::get("/api/orders").header("x-api-key", "nope"),
            "invalid_api_key",
        ),
    ] {
        let out = kit.request(req).run()?;
        assert!(
            out.upstream_request.is_none(),
            "no request reaches the upstream"
        );
        assert_eq!(out.response.status, 401);
        assert!(out.response.header("www-authenticate").is_some());
        assert!(
            out.response.body_text().contains(error),
            "{}",
            out.response.body_text()
        );
        let local = out.local_response.as_ref().map(|l| l.details);
        assert_eq!(local, Some("wasm_plugin_local_response"));
        assert!(!out.failed());
    }
    let skipped = kit.request(Request::get("/healthz")).run()?;
    assert_eq!(skipped.response.status, 200);
    Ok(())
}

#[test]
fn a_rejected_configuration_is_a_load_error_with_the_plugins_reason() {
    let err =
        TestKit::load(support::plugin("api_key_auth")).and_then(|k| k.config(json!({"keys": []})));
    match err {
        Err(Error::Load { message, logs }) => {
            assert!(message.contains("rejected its configuration"), "{message}");
            assert!(
                logs.iter().any(|l| l.message.contains("`keys` is empty")),
                "{logs:?}"
            );
        }
        Err(e) => panic!("expected a load error, got {e}"),
        Ok(_) => panic!("an empty key list must be rejected"),
    }
}

#[test]
fn deny_path_answers_denied_paths_and_passes_others() -> Result<(), Error> {
    let kit = TestKit::load(support::plugin("deny_path"))?
        .root_id("deny_path")
        .config(json!({ "deny": ["/admin/"], "status": 404, "body": "gone\n" }))?;
    let denied = kit.request(Request::get("/admin/users")).run()?;
    assert_eq!(denied.response.status, 404);
    assert_eq!(denied.response.body_text(), "gone\n");
    assert!(denied.upstream_request.is_none());

    let passed = kit
        .request(Request::get("/administrator"))
        .response(Response::status(201).body("made"))
        .run()?;
    assert_eq!(passed.upstream().path, "/administrator");
    assert_eq!(passed.response.status, 201);
    assert_eq!(passed.response.body_text(), "made");
    Ok(())
}

#[test]
fn callouts_are_answered_by_registered_handlers() -> Result<(), Error> {
    let kit = TestKit::load(support::plugin("rs_http_call"))?
        .on_http_call("auth", |req| {
            let from = req.header("x-callout-from").unwrap_or("?").to_string();
            Response::status(202)
                .header("x-seen-from", &from)
                .body("abc")
        })
        .config(json!({ "cluster": "auth", "path": "/check" }))?;
    let out = kit
        .request(Request::get("/").header("x-callout", "resume"))
        .run()?;
    assert_eq!(out.callouts.len(), 1);
    assert_eq!(out.callouts[0].request.cluster, "auth");
    assert_eq!(out.callouts[0].request.path, "/check");
    assert_eq!(out.callouts[0].status, Some(202));
    assert_eq!(out.upstream().header("x-callout-status"), Some("202"));
    assert_eq!(out.upstream().header("x-callout-body-size"), Some("3"));

    let local = kit
        .request(Request::get("/").header("x-callout", "local"))
        .run()?;
    assert_eq!(local.response.status, 202);
    assert_eq!(local.response.header("x-seen-from"), Some("rs"));
    assert_eq!(local.response.body_text(), "abc");
    Ok(())
}

#[test]
fn a_callout_to_a_cluster_without_handler_fails_for_the_plugin() -> Result<(), Error> {
    let kit = TestKit::load(support::plugin("rs_http_call"))?;
    let out = kit
        .request(
            Request::get("/")
                .header("x-callout", "resume")
                .header("x-callout-cluster", "nowhere"),
        )
        .run()?;
    assert_eq!(out.callouts.len(), 1);
    assert_eq!(out.callouts[0].status, None);
    assert_eq!(out.upstream().header("x-callout-status"), Some("failed"));
    Ok(())
}

#[test]
fn bodies_are_buffered_and_rewritten_as_in_the_gateway() -> Result<(), Error> {
    let kit = TestKit::load(support::plugin("rs_body"))?;
    let out = kit
        .request(
            Request::post("/")
                .header("x-body-op", "append")
                .header("x-response-body-op", "prepend")
                .header("x-body-text", "!")
                .body("hello"),
        )
        .response(Response::ok().body("world"))
        .run()?;
    assert_eq!(out.upstream().body_text(), "hello!");
    assert_eq!(out.response.body_text(), "!world");
    Ok(())
}

#[test]
fn logs_are_captured_with_their_level() -> Result<(), Error> {
    let out = TestKit::load(support::plugin("rs_log"))?
        .request(Request::get("/p"))
        .run()?;
    let levels: Vec<&str> = out.logs.iter().map(|l| l.level).collect();
    assert_eq!(levels, ["trace", "debug", "info", "warn", "error", "error"]);
    assert!(out.logs.iter().all(|l| l.source == LogSource::Plugin));
    assert!(out.logged("sluice-conformance log info /p"));
    Ok(())
}

#[test]
fn metrics_accumulate_over_requests_in_one_vm() -> Result<(), Error> {
    let kit = TestKit::load(support::plugin("rs_metrics"))?.name("kit-metrics-test");
    let first = kit
        .request(Request::get("/").header("x-metric-gauge", "5"))
        .run()?;
    let second = kit.request(Request::get("/")).run()?;
    assert_eq!(first.metric("sluice_conformance_requests"), Some(1));
    assert_eq!(first.metric("sluice_conformance_gauge"), Some(5));
    assert_eq!(second.metric("sluice_conformance_requests"), Some(2));
    assert_eq!(second.metric("sluice_conformance_gauge"), Some(42));
    Ok(())
}

#[test]
fn a_trap_is_reported_and_the_failure_policy_answers() -> Result<(), Error> {
    let trap = || Request::get("/").header("x-hostile-where", "request_headers");
    let closed = TestKit::load(support::plugin("rs_hostile_trap"))?;
    let out = closed.request(trap()).run()?;
    assert_eq!(out.failure.as_ref().map(|f| f.kind.as_str()), Some("trap"));
    assert_eq!(out.response.status, 503);
    assert!(out.upstream_request.is_none());
    assert!(
        out.logs
            .iter()
            .any(|l| l.message.contains("deliberate panic")),
        "{:?}",
        out.logs
    );
    // The VM stays down under fail_closed: the next request gets the policy too.
    let later = closed.request(Request::get("/")).run()?;
    assert_eq!(later.response.status, 503);
    assert_eq!(
        later.failure.as_ref().map(|f| f.kind.as_str()),
        Some("unavailable")
    );

    let open = TestKit::load(support::plugin("rs_hostile_trap"))?.failure_policy("fail_open");
    let out = open.request(trap()).run()?;
    assert!(out.failed());
    assert_eq!(out.response.status, 200, "fail_open skips the plugin");
    assert!(out.upstream_request.is_some());
    Ok(())
}

#[test]
fn a_callback_past_its_deadline_is_a_deadline_failure() -> Result<(), Error> {
    let kit = TestKit::load(support::plugin("rs_hostile_loop"))?
        .setting("limits", json!({ "callback_timeout": "20ms" }))?;
    let out = kit
        .request(Request::get("/").header("x-hostile-where", "response_headers"))
        .run()?;
    assert_eq!(
        out.failure.as_ref().map(|f| f.kind.as_str()),
        Some("deadline")
    );
    assert!(
        out.upstream_request.is_some(),
        "the request phase ran before the loop"
    );
    assert_eq!(out.response.status, 503);
    Ok(())
}

#[test]
fn malformed_test_input_is_an_input_error() -> Result<(), Error> {
    let kit = TestKit::load(support::plugin("add_header"))?;
    let bad = kit
        .request(Request::get("/").header("bad header", "v"))
        .run();
    assert!(matches!(bad, Err(Error::Input(_))));
    let bad = kit
        .request(Request::get("/"))
        .response(Response::status(42))
        .run();
    assert!(matches!(bad, Err(Error::Input(_))));
    Ok(())
}
