//! Generated configuration files for the upstream and every peer.
//!
//! nginx and HAProxy configs are templates under `bench/templates/` (readable as files, embedded at
//! build time); Sluice's YAML is written here because the cases vary its filter chain.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_json::Value;

const UPSTREAM_NGINX: &str = include_str!("../../../bench/templates/upstream.nginx.conf");
const PROXY_NGINX: &str = include_str!("../../../bench/templates/proxy.nginx.conf");
const HAPROXY: &str = include_str!("../../../bench/templates/haproxy.cfg");

/// Fills `{{DIR}}`, `{{LISTEN}}` and `{{UPSTREAM}}` in a template.
fn render(template: &str, dir: &Path, listen: SocketAddr, upstream: Option<SocketAddr>) -> String {
    let upstream = upstream.map(|a| a.to_string()).unwrap_or_default();
    template
        .replace("{{DIR}}", &dir.display().to_string())
        .replace("{{LISTEN}}", &listen.to_string())
        .replace("{{UPSTREAM}}", &upstream)
}

/// The upstream nginx, serving a body of `body_bytes` bytes ([`upstream_body`]) on `listen`;
/// `dir` is its prefix (pid file, temp paths).
pub fn upstream_nginx(dir: &Path, listen: SocketAddr, body_bytes: u32) -> String {
    render(UPSTREAM_NGINX, dir, listen, None).replace(
        r#"return 200 "hello\n";"#,
        &format!(r#"return 200 "{}";"#, upstream_body(body_bytes)),
    )
}

/// The most a response body served from nginx's config may have: nginx reads a config token
/// into a 4 KiB buffer.
pub const MAX_RESPONSE_BYTES: u32 = 4000;

/// The upstream's response body of `n` bytes, as an nginx string: `hello\n` for 6 (the
/// default), otherwise lowercase letters and a final newline. No quote, `$` or backslash but
/// the newline's escape.
pub fn upstream_body(n: u32) -> String {
    if n == 6 {
        return r"hello\n".to_string();
    }
    let letters = (b'a'..=b'z').cycle().take(n.saturating_sub(1) as usize);
    let mut s: String = letters.map(char::from).collect();
    s.push_str(r"\n");
    s
}

/// nginx as a reverse proxy from `listen` to `upstream`.
pub fn proxy_nginx(dir: &Path, listen: SocketAddr, upstream: SocketAddr) -> String {
    render(PROXY_NGINX, dir, listen, Some(upstream))
}

/// How nginx makes the `X-Request-ID` it sends upstream in [`proxy_nginx_headers`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NginxRequestId {
    /// `$request_id`: 16 random bytes from OpenSSL, in hex (nginx's own request id).
    Random,
    /// `$pid-$connection-$connection_requests`: unique per process, no random number (as cheap
    /// as an id can be; Sluice's is a random UUID from a fast non-cryptographic generator).
    Counter,
}

/// [`proxy_nginx`] doing to the request what Sluice does by default (and issue 2 requires of
/// it): the client's `Host` passed on, `X-Forwarded-For` and `X-Forwarded-Proto` set, and an
/// `X-Request-ID` added. The plain [`proxy_nginx`] does none of it.
pub fn proxy_nginx_headers(
    dir: &Path,
    listen: SocketAddr,
    upstream: SocketAddr,
    id: NginxRequestId,
) -> String {
    let id = match id {
        NginxRequestId::Random => "$request_id",
        NginxRequestId::Counter => "$pid-$connection-$connection_requests",
    };
    let headers = format!(
        r#"proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Request-ID {id};"#
    );
    proxy_nginx(dir, listen, upstream).replace(r#"proxy_set_header Connection "";"#, &headers)
}

/// [`proxy_nginx`] with a JSON access log like Sluice's (the same fields where nginx has them,
/// `escape=json`) written to `DIR/access.log` through a 64 KiB buffer flushed every 100 ms: what
/// Sluice's writer does.
pub fn proxy_nginx_access_log(dir: &Path, listen: SocketAddr, upstream: SocketAddr) -> String {
    let log = format!(
        r#"log_format sluice_json escape=json '{{"start_time":"$time_iso8601","duration_ms":$request_time,'
        '"ttfb_ms":$upstream_header_time,"upstream_addr":"$upstream_addr","client_ip":"$remote_addr",'
        '"client_port":$remote_port,"method":"$request_method","authority":"$host",'
        '"path":"$request_uri","protocol":"$server_protocol","status":$status,'
        '"bytes_received":$request_length,"bytes_sent":$bytes_sent,"request_id":"$request_id",'
        '"user_agent":"$http_user_agent","referer":"$http_referer",'
        '"x_forwarded_for":"$http_x_forwarded_for"}}';
    access_log {}/access.log sluice_json buffer=64k flush=100ms;"#,
        dir.display()
    );
    proxy_nginx(dir, listen, upstream).replace("access_log off;", &log)
}

/// nginx as a TLS-terminating reverse proxy (HTTP/1.1 and h2 by ALPN) from `listen` to
/// `upstream`, with the same proxy settings as [`proxy_nginx`] and a shared session cache.
pub fn proxy_nginx_tls(
    dir: &Path,
    listen: SocketAddr,
    upstream: SocketAddr,
    cert: &Path,
    key: &Path,
) -> String {
    let tls = format!(
        "listen {listen} ssl http2 backlog=4096;
        ssl_certificate {};
        ssl_certificate_key {};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:10m;",
        cert.display(),
        key.display()
    );
    proxy_nginx(dir, listen, upstream).replace(&format!("listen {listen} backlog=4096;"), &tls)
}

/// HAProxy from `listen` to `upstream`.
pub fn haproxy(dir: &Path, listen: SocketAddr, upstream: SocketAddr) -> String {
    render(HAPROXY, dir, listen, Some(upstream))
}

/// [`haproxy`] doing to the request what Sluice does by default: `X-Forwarded-For` (`option
/// forwardfor`), `X-Forwarded-Proto` and an `X-Request-ID` holding a random UUID (HAProxy's
/// `uuid` fetch, version 4 like Sluice's). HAProxy passes the client's `Host` on already.
pub fn haproxy_headers(dir: &Path, listen: SocketAddr, upstream: SocketAddr) -> String {
    haproxy(dir, listen, upstream).replace(
        "    default_backend upstream",
        "    option forwardfor
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Request-ID %[uuid]
    default_backend upstream",
    )
}

/// What varies between the Sluice configs of the cases.
#[derive(Clone, Debug, Default)]
pub struct SluiceSpec {
    /// Entries of the listener's filter chain, each a CONFIG.md filter reference.
    pub filters: Vec<Value>,
    /// Entries of `plugins:`.
    pub plugins: Vec<Value>,
    /// The `telemetry:` mapping, when the case sets one.
    pub telemetry: Option<Value>,
    /// Certificate and key: terminate TLS (HTTP/1.1 and h2 by ALPN) instead of cleartext h1.
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// Sluice with one worker, one listener on `listen`, one catch-all route to one cluster holding
/// `upstream`, admin on `admin`, and no access log.
pub fn sluice(
    spec: &SluiceSpec,
    listen: SocketAddr,
    admin: SocketAddr,
    upstream: SocketAddr,
) -> String {
    let list = |items: &[Value], indent: &str| -> String {
        if items.is_empty() {
            return " []".into();
        }
        items
            .iter()
            .map(|v| format!("\n{indent}- {}", flow(v)))
            .collect()
    };
    let filters = list(&spec.filters, "      ");
    let (protocols, tls) = match &spec.tls {
        None => ("[http1]".to_string(), String::new()),
        Some((crt, key)) => (
            "[http1, http2]".to_string(),
            format!(
                "\n    tls:\n      certificates:\n        - {{ cert: \"{}\", key: \"{}\" }}",
                crt.display(),
                key.display()
            ),
        ),
    };
    let plugins = list(&spec.plugins, "  ");
    let telemetry = spec
        .telemetry
        .as_ref()
        .map_or_else(String::new, |t| format!("telemetry: {}\n", flow(t)));
    format!(
        "# Sluice under test: one worker, one listener, one route to one cluster, no access log.
admin:
  address: \"{admin}\"
workers: 1
listeners:
  - name: bench
    address: \"{listen}\"
    protocols: {protocols}{tls}
    filters:{filters}
    routes:
      - match: {{ path_prefix: \"/\" }}
        cluster: upstream
clusters:
  - name: upstream
    endpoints: [\"{upstream}\"]
    protocol: http1
    pool: {{ max_idle_per_endpoint: 64, idle_timeout: 300s }}
plugins:{plugins}
{telemetry}"
    )
}

/// A value as a one-line YAML flow node, `name`/`plugin` first so a chain entry reads as in
/// CONFIG.md. Strings are JSON-quoted, which YAML reads as double-quoted scalars.
fn flow(v: &Value) -> String {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by_key(|k| (!matches!(k.as_str(), "name" | "plugin"), k.as_str()));
            let items: Vec<String> = keys
                .iter()
                .map(|k| format!("{k}: {}", flow(&map[k.as_str()])))
                .collect();
            format!("{{ {} }}", items.join(", "))
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(flow).collect();
            format!("[{}]", items.join(", "))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn haproxy_with_headers_sets_what_sluice_sets() {
        let dir = Path::new("/tmp/x");
        let conf = haproxy_headers(dir, addr(1), addr(2));
        for line in [
            "option forwardfor",
            "http-request set-header X-Forwarded-Proto http",
            "http-request set-header X-Request-ID %[uuid]",
        ] {
            assert!(conf.contains(line), "{line} missing:\n{conf}");
        }
        // In the frontend, before its backend is chosen.
        assert!(conf.find("option forwardfor") < conf.find("default_backend upstream"));
        assert!(!haproxy(dir, addr(1), addr(2)).contains("forwardfor"));
    }

    #[test]
    fn nginx_with_headers_sets_what_sluice_sets() {
        let dir = Path::new("/tmp/x");
        let plain = proxy_nginx(dir, addr(1), addr(2));
        for (id, value) in [
            (NginxRequestId::Random, "$request_id;"),
            (
                NginxRequestId::Counter,
                "$pid-$connection-$connection_requests;",
            ),
        ] {
            let conf = proxy_nginx_headers(dir, addr(1), addr(2), id);
            for line in [
                "proxy_set_header Connection \"\";",
                "proxy_set_header Host $http_host;",
                "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
                "proxy_set_header X-Forwarded-Proto $scheme;",
            ] {
                assert!(conf.contains(line), "{line} missing:\n{conf}");
            }
            assert!(conf.contains(&format!("proxy_set_header X-Request-ID {value}")));
            assert!(!plain.contains("X-Request-ID"));
        }
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn templates_have_no_unfilled_placeholders() {
        let dir = Path::new("/tmp/x");
        for text in [
            upstream_nginx(dir, addr(1), 6),
            proxy_nginx(dir, addr(1), addr(2)),
            haproxy(dir, addr(1), addr(2)),
        ] {
            assert!(!text.contains("{{"), "{text}");
        }
        assert!(proxy_nginx(dir, addr(1), addr(2)).contains("server 127.0.0.1:2;"));
    }

    #[test]
    fn sluice_yaml_splices_filters_and_plugins() {
        let spec = SluiceSpec {
            filters: vec![serde_json::json!({"plugin": "p"})],
            plugins: vec![serde_json::json!({"wasm": "/a.wasm", "name": "p"})],
            telemetry: None,
            tls: None,
        };
        let yaml = sluice(&spec, addr(1), addr(2), addr(3));
        assert!(yaml.contains("\n      - { plugin: \"p\" }\n"), "{yaml}");
        assert!(
            yaml.contains("\n  - { name: \"p\", wasm: \"/a.wasm\" }\n"),
            "{yaml}"
        );
        let plain = sluice(&SluiceSpec::default(), addr(1), addr(2), addr(3));
        assert!(
            plain.contains("filters: []") && plain.contains("plugins: []"),
            "{plain}"
        );
        let nested = flow(
            &serde_json::json!({"config": {"add": [{"value": "1", "name": "x"}]}, "name": "headers"}),
        );
        assert_eq!(
            nested,
            r#"{ name: "headers", config: { add: [{ name: "x", value: "1" }] } }"#
        );
    }

    #[test]
    fn upstream_body_has_the_asked_size() {
        let dir = Path::new("/tmp/x");
        let listen: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let conf = upstream_nginx(dir, listen, 6);
        assert!(conf.contains(r#"return 200 "hello\n";"#), "{conf}");
        for n in [1, 2, 100, MAX_RESPONSE_BYTES] {
            let body = upstream_body(n);
            // nginx turns the two characters `\n` into one byte.
            assert_eq!(body.len() - 1, n as usize, "{n}");
            assert!(body.ends_with(r"\n"));
            assert!(!body.contains(['"', '$']));
            let conf = upstream_nginx(dir, listen, n);
            assert!(conf.contains(&format!(r#"return 200 "{body}";"#)));
            assert!(!conf.contains("hello"), "{n}");
        }
    }
}
