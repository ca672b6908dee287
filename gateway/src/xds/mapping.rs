//! xDS resources → Sluice's file model.
//!
//! Each accepted Listener becomes a [`ListenerConfig`] (its routes come from the inline
//! RouteConfiguration or the RDS resource it names), each Cluster a [`ClusterConfig`] (its
//! endpoints from `load_assignment` or the EDS resource). A field that would change behaviour and
//! that Sluice does not implement is an error naming the field, so the control plane gets a NACK
//! instead of a silently different proxy. Informational fields (stat prefixes, metadata) are ignored.
//!
//! Deprecated fields are read on purpose: control planes still send them, and a field Sluice does
//! not look at must still be seen to be rejected.
#![allow(deprecated)]

use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, LbPolicy,
};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::core::v3::{Address, HealthStatus};
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType as NetworkConfigType;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::header_matcher::HeaderMatchSpecifier;
use envoy_types::pb::envoy::config::route::v3::redirect_action::{
    PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier,
};
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::hash_policy::PolicySpecifier;
use envoy_types::pb::envoy::config::route::v3::route_action::{
    ClusterSpecifier, HostRewriteSpecifier,
};
use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, RetryPolicy, Route, RouteAction, RouteConfiguration,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::{
    CodecType, RouteSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::explicit_http_config::ProtocolConfig;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::UpstreamProtocolOptions;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration};
use prost::{Message, Name};

use super::fields;
use super::http_filters::{self, FilterSpec};
use crate::config::model::{
    ClusterConfig, DirectResponseConfig, EndpointConfig, HeaderMatchConfig, ListenerConfig,
    LoadBalancing, PoolConfig, Protocol, RedirectConfig, RetryConfig, RetryOn, RewriteConfig,
    RouteConfig, RouteMatchConfig, WeightedCluster, MAX_ENDPOINT_WEIGHT,
};
use crate::config::units::Dur;

/// The network filter Sluice serves HTTP with.
pub const HCM_FILTER: &str = "envoy.filters.network.http_connection_manager";
/// The terminal HTTP filter every HttpConnectionManager ends with.
pub const ROUTER_FILTER: &str = "envoy.filters.http.router";
/// Key of `typed_extension_protocol_options` carrying upstream HTTP options.
pub const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// Why a resource cannot be applied; the text goes to the control plane in the NACK.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{resource}: {message}")]
pub struct MapError {
    /// `Listener "name"`, `Cluster "name"`, ...
    pub resource: String,
    pub message: String,
}

pub(super) fn err(resource: &str, message: impl Into<String>) -> MapError {
    MapError {
        resource: resource.to_string(),
        message: message.into(),
    }
}

/// What a decoded Listener needs before it can be served.
#[derive(Clone, Debug)]
pub struct MappedListener {
    /// The listener with its routes empty when they come from RDS.
    pub listener: ListenerConfig,
    /// The RouteConfiguration to fill the routes from, when not inline.
    pub rds: Option<String>,
    /// The HTTP filters before the router, some of which may wait for ECDS.
    pub filters: Vec<FilterSpec>,
    /// (cluster, header) of the inline routes' header hash policies (for RING_HASH clusters).
    pub hashes: Vec<(String, String)>,
}

/// What a decoded Cluster needs before it can be served.
#[derive(Clone, Debug)]
pub struct MappedCluster {
    /// The cluster with its endpoints empty when they come from EDS.
    pub cluster: ClusterConfig,
    /// The ClusterLoadAssignment to fill the endpoints from, when EDS.
    pub eds: Option<String>,
}

/// Decode an `Any` of type `M`, checking its type URL.
///
/// # Errors
/// A wrong type URL or bytes that do not decode.
pub fn decode_any<M: Message + Name + Default>(any: &Any, what: &str) -> Result<M, MapError> {
    if any.type_url != M::type_url() {
        return Err(err(
            what,
            format!("expected {}, got {}", M::type_url(), any.type_url),
        ));
    }
    M::decode(any.value.as_slice()).map_err(|e| err(what, format!("does not decode: {e}")))
}

/// Fail when `rest` (a copy of a message with every handled field cleared) still sets a field.
pub(super) fn reject_rest<M: Message>(
    rest: &M,
    table: &[(u32, &str)],
    what: &str,
    type_name: &str,
) -> Result<(), MapError> {
    let set = set_fields(&rest.encode_to_vec());
    if set.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = set
        .iter()
        .map(|n| {
            table
                .iter()
                .find(|(t, _)| t == n)
                .map_or_else(|| format!("#{n}"), |(_, name)| (*name).to_string())
        })
        .collect();
    Err(err(
        what,
        format!(
            "{type_name}.{} not supported by Sluice (it would change behaviour; see docs/xds.md)",
            names.join(", ")
        ),
    ))
}

/// Field numbers present in an encoded protobuf message, in order, without repeats.
fn set_fields(mut buf: &[u8]) -> Vec<u32> {
    let mut out: Vec<u32> = Vec::new();
    while !buf.is_empty() {
        let Ok(key) = prost::encoding::decode_varint(&mut buf) else {
            break;
        };
        let field = (key >> 3) as u32;
        let skip = match key & 7 {
            0 => prost::encoding::decode_varint(&mut buf).map(|_| 0).ok(),
            1 => Some(8),
            2 => prost::encoding::decode_varint(&mut buf)
                .ok()
                .and_then(|n| usize::try_from(n).ok()),
            5 => Some(4),
            _ => None,
        };
        let Some(skip) = skip.filter(|s| *s <= buf.len()) else {
            break;
        };
        buf = &buf[skip..];
        if !out.contains(&field) {
            out.push(field);
        }
    }
    out
}

fn duration(d: &PbDuration) -> Dur {
    let secs = u64::try_from(d.seconds).unwrap_or(0);
    let nanos = u32::try_from(d.nanos).unwrap_or(0);
    Dur(std::time::Duration::new(secs, nanos))
}

fn socket_address(addr: Option<&Address>, what: &str) -> Result<String, MapError> {
    let Some(AddressKind::SocketAddress(sa)) = addr.and_then(|a| a.address.as_ref()) else {
        return Err(err(what, "needs a socket_address"));
    };
    let mut rest = sa.clone();
    rest.address.clear();
    rest.port_specifier = None;
    rest.ipv4_compat = false;
    reject_rest(&rest, fields::SOCKET_ADDRESS, what, "SocketAddress")?;
    let port = match sa.port_specifier {
        Some(PortSpecifier::PortValue(p)) => p,
        _ => return Err(err(what, "socket_address needs a port_value")),
    };
    if sa.address.contains(':') {
        Ok(format!("[{}]:{port}", sa.address))
    } else {
        Ok(format!("{}:{port}", sa.address))
    }
}

/// Map a Listener. Its HttpConnectionManager's routes are filled in here when inline.
///
/// # Errors
/// Anything Sluice cannot serve as the control plane meant it.
pub fn listener(l: &Listener) -> Result<MappedListener, MapError> {
    let what = format!("Listener \"{}\"", l.name);
    let what = what.as_str();
    let mut rest = l.clone();
    rest.name.clear();
    rest.address = None;
    rest.filter_chains.clear();
    rest.stat_prefix.clear();
    rest.metadata = None;
    rest.traffic_direction = 0;
    rest.drain_type = 0;
    rest.reuse_port = false;
    rest.enable_reuse_port = None;
    reject_rest(&rest, fields::LISTENER, what, "Listener")?;
    let address = socket_address(l.address.as_ref(), what)?;
    let [chain] = l.filter_chains.as_slice() else {
        return Err(err(what, "needs exactly one filter_chain"));
    };
    let mut chain_rest = chain.clone();
    chain_rest.filters.clear();
    chain_rest.name.clear();
    chain_rest.metadata = None;
    reject_rest(&chain_rest, fields::FILTER_CHAIN, what, "FilterChain")?;
    let [filter] = chain.filters.as_slice() else {
        return Err(err(
            what,
            format!("the filter_chain needs exactly one filter, {HCM_FILTER}"),
        ));
    };
    let Some(NetworkConfigType::TypedConfig(any)) = &filter.config_type else {
        return Err(err(
            what,
            format!("filter `{}` needs a typed_config", filter.name),
        ));
    };
    let hcm: HttpConnectionManager = decode_any(any, what)?;
    let (routes, rds, protocols) = http_connection_manager(&hcm, what)?;
    let filters = http_filters::http_filters(&hcm.http_filters, &l.name, what)?;
    let hashes = match &hcm.route_specifier {
        Some(RouteSpecifier::RouteConfig(rc)) => hash_headers(rc)?,
        _ => Vec::new(),
    };
    Ok(MappedListener {
        listener: ListenerConfig {
            name: l.name.clone(),
            address,
            protocols,
            tls: None,
            limits: Default::default(),
            filters: Vec::new(),
            routes,
        },
        rds,
        filters,
        hashes,
    })
}

type HcmParts = (Vec<RouteConfig>, Option<String>, Vec<Protocol>);

fn http_connection_manager(hcm: &HttpConnectionManager, what: &str) -> Result<HcmParts, MapError> {
    let mut rest = hcm.clone();
    rest.codec_type = 0;
    rest.stat_prefix.clear();
    rest.route_specifier = None;
    rest.http_filters.clear();
    reject_rest(&rest, fields::HCM, what, "HttpConnectionManager")?;
    let protocols = match CodecType::try_from(hcm.codec_type) {
        Ok(CodecType::Auto) => vec![Protocol::Http1, Protocol::Http2],
        Ok(CodecType::Http1) => vec![Protocol::Http1],
        Ok(CodecType::Http2) => vec![Protocol::Http2],
        _ => return Err(err(what, "codec_type HTTP3 is not supported")),
    };
    match &hcm.route_specifier {
        Some(RouteSpecifier::Rds(rds)) => {
            Ok((Vec::new(), Some(rds.route_config_name.clone()), protocols))
        }
        Some(RouteSpecifier::RouteConfig(rc)) => Ok((route_configuration(rc)?, None, protocols)),
        _ => Err(err(
            what,
            "needs rds or an inline route_config (scoped routes are not supported)",
        )),
    }
}

/// How specific a virtual host domain is: Envoy picks exact, then suffix wildcards (longest
/// first), then `*`. Sluice matches routes in order, so the routes are emitted in that order.
fn domain_rank(d: &str) -> (u8, std::cmp::Reverse<usize>) {
    if d == "*" {
        (2, std::cmp::Reverse(0))
    } else if d.starts_with('*') {
        (1, std::cmp::Reverse(d.len()))
    } else {
        (0, std::cmp::Reverse(d.len()))
    }
}

/// Map a RouteConfiguration to an ordered route list (virtual hosts flattened by domain).
///
/// # Errors
/// Anything Sluice cannot serve as the control plane meant it.
pub fn route_configuration(rc: &RouteConfiguration) -> Result<Vec<RouteConfig>, MapError> {
    let what = format!("RouteConfiguration \"{}\"", rc.name);
    let what = what.as_str();
    let mut rest = rc.clone();
    rest.name.clear();
    rest.virtual_hosts.clear();
    rest.validate_clusters = None;
    rest.metadata = None;
    reject_rest(
        &rest,
        fields::ROUTE_CONFIGURATION,
        what,
        "RouteConfiguration",
    )?;
    let mut by_domain: Vec<(String, Vec<RouteConfig>)> = Vec::new();
    for vh in &rc.virtual_hosts {
        let vwhat = format!("{what} virtual_host \"{}\"", vh.name);
        let mut vrest = vh.clone();
        vrest.name.clear();
        vrest.domains.clear();
        vrest.routes.clear();
        vrest.metadata = None;
        reject_rest(&vrest, fields::VIRTUAL_HOST, &vwhat, "VirtualHost")?;
        let routes = vh
            .routes
            .iter()
            .map(|r| route(r, &vwhat))
            .collect::<Result<Vec<_>, _>>()?;
        for d in &vh.domains {
            if d.contains(':') {
                return Err(err(
                    &vwhat,
                    format!("domain `{d}`: domains with a port are not supported"),
                ));
            }
            if d.len() > 1 && d.ends_with('*') {
                return Err(err(
                    &vwhat,
                    format!("domain `{d}`: prefix wildcards are not supported"),
                ));
            }
            if by_domain.iter().any(|(x, _)| x.eq_ignore_ascii_case(d)) {
                return Err(err(
                    &vwhat,
                    format!("domain `{d}` appears in two virtual hosts"),
                ));
            }
            by_domain.push((d.clone(), routes.clone()));
        }
    }
    by_domain.sort_by_key(|(d, _)| domain_rank(d));
    let mut out = Vec::new();
    for (d, routes) in by_domain {
        for mut r in routes {
            r.matcher.host = (d != "*").then(|| d.clone());
            out.push(r);
        }
    }
    Ok(out)
}

fn route(r: &Route, vwhat: &str) -> Result<RouteConfig, MapError> {
    let what = format!("{vwhat} route \"{}\"", r.name);
    let what = what.as_str();
    let mut rest = r.clone();
    rest.name.clear();
    rest.r#match = None;
    rest.action = None;
    rest.metadata = None;
    rest.decorator = None;
    reject_rest(&rest, fields::ROUTE, what, "Route")?;
    let m = r.r#match.clone().unwrap_or_default();
    let mut mrest = m.clone();
    mrest.path_specifier = None;
    mrest.headers.clear();
    // case_sensitive: true is the default and what Sluice does.
    if mrest.case_sensitive.as_ref().is_some_and(|b| b.value) {
        mrest.case_sensitive = None;
    }
    reject_rest(&mrest, fields::ROUTE_MATCH, what, "RouteMatch")?;
    let mut matcher = RouteMatchConfig::default();
    match &m.path_specifier {
        Some(PathSpecifier::Prefix(p)) => matcher.path_prefix = Some(p.clone()),
        Some(PathSpecifier::Path(p)) => matcher.path = Some(p.clone()),
        Some(PathSpecifier::SafeRegex(re)) => matcher.path_regex = Some(re.regex.clone()),
        _ => return Err(err(what, "match needs prefix, path or safe_regex")),
    }
    for h in &m.headers {
        matcher.headers.push(header_matcher(h, what)?);
    }
    let mut out = RouteConfig {
        name: (!r.name.is_empty()).then(|| r.name.clone()),
        matcher,
        filters: Vec::new(),
        cluster: None,
        weighted_clusters: None,
        redirect: None,
        direct_response: None,
        timeout: None,
        retries: None,
        rewrite: None,
    };
    match &r.action {
        Some(Action::Route(a)) => route_action(a, &mut out, what)?,
        Some(Action::Redirect(rd)) => {
            let mut rrest = rd.clone();
            rrest.host_redirect.clear();
            rrest.port_redirect = 0;
            rrest.scheme_rewrite_specifier = None;
            rrest.path_rewrite_specifier = None;
            rrest.response_code = 0;
            reject_rest(&rrest, fields::REDIRECT_ACTION, what, "RedirectAction")?;
            let mut c = RedirectConfig {
                host: (!rd.host_redirect.is_empty()).then(|| rd.host_redirect.clone()),
                port: u16::try_from(rd.port_redirect).ok().filter(|p| *p != 0),
                ..Default::default()
            };
            match &rd.scheme_rewrite_specifier {
                Some(SchemeRewriteSpecifier::HttpsRedirect(b)) => c.https_redirect = *b,
                Some(SchemeRewriteSpecifier::SchemeRedirect(s)) => c.scheme = Some(s.clone()),
                None => {}
            }
            match &rd.path_rewrite_specifier {
                Some(PathRewriteSpecifier::PathRedirect(p)) => c.path = Some(p.clone()),
                Some(PathRewriteSpecifier::PrefixRewrite(p)) => c.path_prefix = Some(p.clone()),
                Some(_) => return Err(err(what, "redirect regex_rewrite is not supported")),
                None => {}
            }
            c.status = Some(match RedirectResponseCode::try_from(rd.response_code) {
                Ok(RedirectResponseCode::MovedPermanently) => 301,
                Ok(RedirectResponseCode::Found) => 302,
                Ok(RedirectResponseCode::SeeOther) => 303,
                Ok(RedirectResponseCode::TemporaryRedirect) => 307,
                Ok(RedirectResponseCode::PermanentRedirect) => 308,
                Err(_) => return Err(err(what, "unknown redirect response_code")),
            });
            out.redirect = Some(c);
        }
        Some(Action::DirectResponse(d)) => {
            let mut drest = d.clone();
            drest.status = 0;
            drest.body = None;
            reject_rest(
                &drest,
                fields::DIRECT_RESPONSE_ACTION,
                what,
                "DirectResponseAction",
            )?;
            let body = match d.body.as_ref().and_then(|b| b.specifier.as_ref()) {
                None => None,
                Some(Specifier::InlineString(s)) => Some(s.clone()),
                Some(Specifier::InlineBytes(b)) => Some(
                    String::from_utf8(b.clone())
                        .map_err(|_| err(what, "direct_response body must be UTF-8"))?,
                ),
                Some(_) => {
                    return Err(err(
                        what,
                        "direct_response body must be inline_string or inline_bytes",
                    ))
                }
            };
            let status =
                u16::try_from(d.status).map_err(|_| err(what, "bad direct_response status"))?;
            out.direct_response = Some(DirectResponseConfig {
                status,
                body,
                headers: Vec::new(),
            });
        }
        _ => {
            return Err(err(
                what,
                "needs a route, redirect or direct_response action",
            ))
        }
    }
    Ok(out)
}

/// Regex text matching `s` literally (Sluice anchors header regexes itself).
fn literal(s: &str) -> String {
    regex::escape(s)
}

fn header_matcher(h: &HeaderMatcher, what: &str) -> Result<HeaderMatchConfig, MapError> {
    let mut rest = h.clone();
    rest.name.clear();
    rest.header_match_specifier = None;
    reject_rest(&rest, fields::HEADER_MATCHER, what, "HeaderMatcher")?;
    let mut out = HeaderMatchConfig {
        name: h.name.clone(),
        value: None,
        present: None,
        regex: None,
    };
    match &h.header_match_specifier {
        Some(HeaderMatchSpecifier::ExactMatch(v)) => out.value = Some(v.clone()),
        Some(HeaderMatchSpecifier::SafeRegexMatch(re)) => out.regex = Some(re.regex.clone()),
        Some(HeaderMatchSpecifier::PresentMatch(p)) => out.present = Some(*p),
        Some(HeaderMatchSpecifier::PrefixMatch(p)) => out.regex = Some(format!("{}.*", literal(p))),
        Some(HeaderMatchSpecifier::SuffixMatch(p)) => out.regex = Some(format!(".*{}", literal(p))),
        Some(HeaderMatchSpecifier::ContainsMatch(p)) => {
            out.regex = Some(format!(".*{}.*", literal(p)))
        }
        Some(HeaderMatchSpecifier::StringMatch(sm)) => {
            if sm.ignore_case {
                return Err(err(
                    what,
                    format!("header `{}`: ignore_case is not supported", h.name),
                ));
            }
            match &sm.match_pattern {
                Some(MatchPattern::Exact(v)) => out.value = Some(v.clone()),
                Some(MatchPattern::Prefix(p)) => out.regex = Some(format!("{}.*", literal(p))),
                Some(MatchPattern::Suffix(p)) => out.regex = Some(format!(".*{}", literal(p))),
                Some(MatchPattern::Contains(p)) => out.regex = Some(format!(".*{}.*", literal(p))),
                Some(MatchPattern::SafeRegex(re)) => out.regex = Some(re.regex.clone()),
                _ => {
                    return Err(err(
                        what,
                        format!("header `{}`: unsupported string_match", h.name),
                    ))
                }
            }
        }
        _ => {
            return Err(err(
                what,
                format!(
                    "header `{}`: only exact, regex, present, prefix, suffix, contains",
                    h.name
                ),
            ))
        }
    }
    Ok(out)
}

fn route_action(a: &RouteAction, out: &mut RouteConfig, what: &str) -> Result<(), MapError> {
    let mut rest = a.clone();
    rest.cluster_specifier = None;
    rest.prefix_rewrite.clear();
    rest.timeout = None;
    rest.retry_policy = None;
    rest.host_rewrite_specifier = None;
    rest.hash_policy.clear();
    reject_rest(&rest, fields::ROUTE_ACTION, what, "RouteAction")?;
    hash_header(a, what)?;
    match &a.cluster_specifier {
        Some(ClusterSpecifier::Cluster(c)) => out.cluster = Some(c.clone()),
        Some(ClusterSpecifier::WeightedClusters(w)) => {
            let mut wrest = w.clone();
            wrest.clusters.clear();
            wrest.total_weight = None;
            reject_rest(&wrest, fields::WEIGHTED_CLUSTER, what, "WeightedCluster")?;
            let mut list = Vec::new();
            for c in &w.clusters {
                let mut crest = c.clone();
                crest.name.clear();
                crest.weight = None;
                reject_rest(&crest, fields::CLUSTER_WEIGHT, what, "ClusterWeight")?;
                list.push(WeightedCluster {
                    name: c.name.clone(),
                    weight: c.weight.as_ref().map_or(0, |w| w.value),
                });
            }
            out.weighted_clusters = Some(list);
        }
        _ => return Err(err(what, "route needs cluster or weighted_clusters")),
    }
    // Envoy's default route timeout is 15s, Sluice's too; 0 means "no timeout" in Envoy.
    if let Some(t) = &a.timeout {
        if t.seconds == 0 && t.nanos == 0 {
            return Err(err(what, "timeout 0 (disabled) is not supported"));
        }
        out.timeout = Some(duration(t));
    }
    if let Some(p) = &a.retry_policy {
        out.retries = Some(retry_policy(p, what)?);
    }
    let mut rewrite = RewriteConfig::default();
    if !a.prefix_rewrite.is_empty() {
        rewrite.path_prefix = Some(a.prefix_rewrite.clone());
    }
    match &a.host_rewrite_specifier {
        Some(HostRewriteSpecifier::HostRewriteLiteral(h)) => rewrite.host = Some(h.clone()),
        Some(_) => return Err(err(what, "only host_rewrite_literal is supported")),
        None => {}
    }
    if rewrite.path_prefix.is_some() || rewrite.host.is_some() {
        out.rewrite = Some(rewrite);
    }
    Ok(())
}

/// The header a route hashes on (`hash_policy` with one `header` policy), lower-cased.
fn hash_header(a: &RouteAction, what: &str) -> Result<Option<String>, MapError> {
    match a.hash_policy.as_slice() {
        [] => Ok(None),
        [hp] => match &hp.policy_specifier {
            Some(PolicySpecifier::Header(h)) if h.regex_rewrite.is_none() => {
                Ok(Some(h.header_name.to_ascii_lowercase()))
            }
            _ => Err(err(
                what,
                "only a `header` hash_policy (without regex_rewrite) is supported",
            )),
        },
        _ => Err(err(what, "only one hash_policy per route is supported")),
    }
}

/// (cluster, header) for every route of `rc` that hashes on a header: Sluice keeps the hash key
/// on the cluster (`hash_key`), so a RING_HASH cluster takes it from the routes that use it.
///
/// # Errors
/// A hash_policy Sluice cannot express.
pub fn hash_headers(rc: &RouteConfiguration) -> Result<Vec<(String, String)>, MapError> {
    let what = format!("RouteConfiguration \"{}\"", rc.name);
    let mut out = Vec::new();
    for r in rc.virtual_hosts.iter().flat_map(|vh| vh.routes.iter()) {
        let Some(Action::Route(a)) = &r.action else {
            continue;
        };
        let Some(header) = hash_header(a, &what)? else {
            continue;
        };
        match &a.cluster_specifier {
            Some(ClusterSpecifier::Cluster(c)) => out.push((c.clone(), header)),
            Some(ClusterSpecifier::WeightedClusters(w)) => {
                out.extend(w.clusters.iter().map(|c| (c.name.clone(), header.clone())))
            }
            _ => {}
        }
    }
    Ok(out)
}

fn retry_policy(p: &RetryPolicy, what: &str) -> Result<RetryConfig, MapError> {
    let mut rest = p.clone();
    rest.retry_on.clear();
    rest.num_retries = None;
    reject_rest(&rest, fields::RETRY_POLICY, what, "RetryPolicy")?;
    let mut on = Vec::new();
    for cond in p
        .retry_on
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        on.push(match cond {
            "connect-failure" => RetryOn::ConnectFailure,
            "reset" => RetryOn::Reset,
            "5xx" => RetryOn::FiveXx,
            "gateway-error" => RetryOn::GatewayError,
            other => return Err(err(what, format!("retry_on `{other}` is not supported"))),
        });
    }
    Ok(RetryConfig {
        // Envoy's default num_retries is 1.
        attempts: p.num_retries.as_ref().map_or(1, |n| n.value),
        on,
        budget_percent: None,
        min_retries_per_second: None,
    })
}

/// Map a Cluster. Endpoints are filled in here for STATIC and STRICT_DNS.
///
/// # Errors
/// Anything Sluice cannot serve as the control plane meant it.
pub fn cluster(c: &Cluster) -> Result<MappedCluster, MapError> {
    let what = format!("Cluster \"{}\"", c.name);
    let what = what.as_str();
    let mut rest = c.clone();
    rest.name.clear();
    rest.alt_stat_name.clear();
    rest.metadata = None;
    rest.cluster_discovery_type = None;
    rest.eds_cluster_config = None;
    rest.connect_timeout = None;
    rest.lb_policy = 0;
    rest.load_assignment = None;
    rest.http2_protocol_options = None;
    rest.typed_extension_protocol_options.clear();
    rest.dns_refresh_rate = None;
    reject_rest(&rest, fields::CLUSTER, what, "Cluster")?;
    let kind = match &c.cluster_discovery_type {
        None => DiscoveryType::Static,
        Some(ClusterDiscoveryType::Type(t)) => DiscoveryType::try_from(*t)
            .map_err(|_| err(what, format!("unknown discovery type {t}")))?,
        Some(ClusterDiscoveryType::ClusterType(t)) => {
            return Err(err(
                what,
                format!("custom cluster_type `{}` is not supported", t.name),
            ))
        }
    };
    let load_balancing = match LbPolicy::try_from(c.lb_policy) {
        Ok(LbPolicy::RoundRobin) => LoadBalancing::RoundRobin,
        Ok(LbPolicy::LeastRequest) => LoadBalancing::LeastRequest,
        Ok(LbPolicy::Random) => LoadBalancing::Random,
        Ok(LbPolicy::RingHash) => LoadBalancing::RingHash,
        _ => {
            return Err(err(
                what,
                "lb_policy must be ROUND_ROBIN, LEAST_REQUEST, RANDOM or RING_HASH",
            ))
        }
    };
    // RING_HASH: `hash_key` is filled from the routes' hash_policy once listeners are mapped
    // (resources.rs). ring_hash_lb_config (ring sizes, hash function) is not cleared above, so
    // setting it is a NACK.
    let mut protocol = Protocol::Http1;
    if c.http2_protocol_options.is_some() {
        protocol = Protocol::Http2;
    }
    for (key, any) in &c.typed_extension_protocol_options {
        if key != HTTP_PROTOCOL_OPTIONS {
            return Err(err(
                what,
                format!("typed_extension_protocol_options `{key}` is not supported"),
            ));
        }
        let opts: HttpProtocolOptions = decode_any(any, what)?;
        match &opts.upstream_protocol_options {
            Some(UpstreamProtocolOptions::ExplicitHttpConfig(e)) => match &e.protocol_config {
                Some(ProtocolConfig::Http2ProtocolOptions(_)) => protocol = Protocol::Http2,
                Some(ProtocolConfig::HttpProtocolOptions(_)) => protocol = Protocol::Http1,
                _ => return Err(err(what, "only HTTP/1.1 or HTTP/2 upstream protocols")),
            },
            None => {}
            Some(_) => {
                return Err(err(
                    what,
                    "only explicit_http_config upstream protocol options",
                ))
            }
        }
    }
    let (endpoints, eds) = match kind {
        DiscoveryType::Static | DiscoveryType::StrictDns => {
            let Some(cla) = &c.load_assignment else {
                return Err(err(
                    what,
                    "STATIC and STRICT_DNS clusters need a load_assignment",
                ));
            };
            (cluster_load_assignment(cla, what)?, None)
        }
        DiscoveryType::Eds => {
            let name = c
                .eds_cluster_config
                .as_ref()
                .map(|e| e.service_name.clone())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| c.name.clone());
            (Vec::new(), Some(name))
        }
        _ => return Err(err(what, "type must be STATIC, STRICT_DNS or EDS")),
    };
    Ok(MappedCluster {
        cluster: ClusterConfig {
            name: c.name.clone(),
            endpoints,
            load_balancing,
            hash_key: None,
            protocol,
            tls: None,
            connect_timeout: c.connect_timeout.as_ref().map(duration),
            pool: PoolConfig::default(),
            health_check: None,
            dns_refresh: c.dns_refresh_rate.as_ref().map(duration),
        },
        eds,
    })
}

/// The endpoints of a ClusterLoadAssignment that may take traffic, as `host:port` with their
/// `load_balancing_weight` (see `endpoint_weights`).
///
/// # Errors
/// Localities with priorities, a weight of 0, or unsupported fields.
pub fn cluster_load_assignment(
    cla: &ClusterLoadAssignment,
    parent: &str,
) -> Result<Vec<EndpointConfig>, MapError> {
    let what = format!("{parent} ClusterLoadAssignment \"{}\"", cla.cluster_name);
    let what = what.as_str();
    let mut rest = cla.clone();
    rest.cluster_name.clear();
    rest.endpoints.clear();
    rest.policy = None;
    reject_rest(
        &rest,
        fields::CLUSTER_LOAD_ASSIGNMENT,
        what,
        "ClusterLoadAssignment",
    )?;
    let mut out = Vec::new();
    let mut weights = Vec::new();
    for loc in &cla.endpoints {
        let mut lrest = loc.clone();
        lrest.lb_endpoints.clear();
        lrest.locality = None;
        lrest.load_balancing_weight = None;
        reject_rest(
            &lrest,
            fields::LOCALITY_LB_ENDPOINTS,
            what,
            "LocalityLbEndpoints",
        )?;
        for e in &loc.lb_endpoints {
            let mut erest = e.clone();
            erest.host_identifier = None;
            erest.health_status = 0;
            erest.load_balancing_weight = None;
            erest.metadata = None;
            reject_rest(&erest, fields::LB_ENDPOINT, what, "LbEndpoint")?;
            let Some(HostIdentifier::Endpoint(ep)) = &e.host_identifier else {
                return Err(err(what, "lb_endpoint needs an endpoint"));
            };
            let mut eprest = ep.clone();
            eprest.address = None;
            eprest.hostname.clear();
            reject_rest(&eprest, fields::ENDPOINT, what, "Endpoint")?;
            let healthy = matches!(
                HealthStatus::try_from(e.health_status),
                Ok(HealthStatus::Unknown | HealthStatus::Healthy | HealthStatus::Degraded)
            );
            if !healthy {
                continue;
            }
            let w = e.load_balancing_weight.as_ref().map_or(1, |w| w.value);
            if w == 0 {
                return Err(err(
                    what,
                    "lb_endpoint load_balancing_weight must be at least 1",
                ));
            }
            weights.push(w);
            out.push(socket_address(ep.address.as_ref(), what)?);
        }
    }
    Ok(out
        .into_iter()
        .zip(endpoint_weights(&weights))
        .map(|(address, weight)| EndpointConfig { address, weight })
        .collect())
}

/// Envoy's endpoint weights (1..=u32::MAX, relative) as Sluice's (1..=MAX_ENDPOINT_WEIGHT):
/// divided by their greatest common divisor, so equal weights become the default and small
/// ratios stay exact; then, if the largest is still above the maximum, scaled down
/// proportionally (rounded, at least 1).
fn endpoint_weights(weights: &[u32]) -> Vec<u32> {
    fn gcd(a: u64, b: u64) -> u64 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    let g = weights.iter().fold(0, |g, &w| gcd(g, u64::from(w))).max(1);
    let max = weights.iter().map(|&w| u64::from(w) / g).max().unwrap_or(1);
    let cap = u64::from(MAX_ENDPOINT_WEIGHT);
    weights
        .iter()
        .map(|&w| {
            let w = u64::from(w) / g;
            let scaled = if max <= cap {
                w
            } else {
                ((w * cap + max / 2) / max).max(1)
            };
            u32::try_from(scaled).unwrap_or(MAX_ENDPOINT_WEIGHT)
        })
        .collect()
}

#[cfg(test)]
mod tests;
