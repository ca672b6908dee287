//! Field numbers to names for the xDS messages Sluice maps, so that a rejected resource names the
//! field it does not support. Generated from envoy-types' generated code (tags in `#[prost]`
//! attributes); regenerate when envoy-types is upgraded.

/// `Listener`.
pub const LISTENER: &[(u32, &str)] = &[
    (1, "name"),
    (2, "address"),
    (33, "additional_addresses"),
    (28, "stat_prefix"),
    (39, "stats_matcher"),
    (3, "filter_chains"),
    (36, "fcds_config"),
    (32, "filter_chain_matcher"),
    (4, "use_original_dst"),
    (25, "default_filter_chain"),
    (5, "per_connection_buffer_limit_bytes"),
    (38, "per_connection_buffer_high_watermark_timeout"),
    (6, "metadata"),
    (7, "deprecated_v1"),
    (8, "drain_type"),
    (9, "listener_filters"),
    (15, "listener_filters_timeout"),
    (17, "continue_on_listener_filters_timeout"),
    (10, "transparent"),
    (11, "freebind"),
    (13, "socket_options"),
    (12, "tcp_fast_open_queue_length"),
    (16, "traffic_direction"),
    (18, "udp_listener_config"),
    (19, "api_listener"),
    (20, "connection_balance_config"),
    (21, "reuse_port"),
    (29, "enable_reuse_port"),
    (22, "access_log"),
    (24, "tcp_backlog_size"),
    (34, "max_connections_to_accept_per_socket_event"),
    (26, "bind_to_port"),
    (30, "enable_mptcp"),
    (31, "ignore_global_conn_limit"),
    (35, "bypass_overload_manager"),
    (37, "tcp_keepalive"),
    (27, "listener_specifier"),
];

/// `FilterChain`.
pub const FILTER_CHAIN: &[(u32, &str)] = &[
    (1, "filter_chain_match"),
    (3, "filters"),
    (4, "use_proxy_proto"),
    (5, "metadata"),
    (6, "transport_socket"),
    (9, "transport_socket_connect_timeout"),
    (7, "name"),
];

/// `HttpConnectionManager`.
pub const HCM: &[(u32, &str)] = &[
    (1, "codec_type"),
    (2, "stat_prefix"),
    (5, "http_filters"),
    (6, "add_user_agent"),
    (7, "tracing"),
    (35, "common_http_protocol_options"),
    (58, "http1_safe_max_connection_duration"),
    (8, "http_protocol_options"),
    (9, "http2_protocol_options"),
    (44, "http3_protocol_options"),
    (10, "server_name"),
    (48, "scheme_header_transformation"),
    (29, "max_request_headers_kb"),
    (24, "stream_idle_timeout"),
    (59, "stream_flush_timeout"),
    (28, "request_timeout"),
    (41, "request_headers_timeout"),
    (12, "drain_timeout"),
    (62, "drain_timeout_jitter"),
    (26, "delayed_close_timeout"),
    (13, "access_log"),
    (54, "access_log_flush_interval"),
    (55, "flush_access_log_on_new_request"),
    (56, "access_log_options"),
    (14, "use_remote_address"),
    (19, "xff_num_trusted_hops"),
    (46, "original_ip_detection_extensions"),
    (52, "early_header_mutation_extensions"),
    (25, "internal_address_config"),
    (21, "skip_xff_append"),
    (22, "via"),
    (15, "generate_request_id"),
    (32, "preserve_external_request_id"),
    (37, "always_set_request_id_in_response"),
    (17, "set_current_client_cert_details"),
    (60, "forward_client_cert_matcher"),
    (18, "proxy_100_continue"),
    (20, "represent_ipv4_remote_address_as_ipv4_mapped_ipv6"),
    (23, "upgrade_configs"),
    (30, "normalize_path"),
    (33, "merge_slashes"),
    (36, "request_id_extension"),
    (38, "local_reply_config"),
    (39, "strip_matching_host_port"),
    (40, "stream_error_on_invalid_http_message"),
    (43, "path_normalization_options"),
    (47, "strip_trailing_host_dot"),
    (49, "proxy_status_config"),
    (50, "typed_header_validation_config"),
    (51, "append_x_forwarded_port"),
    (57, "append_local_overload"),
    (53, "add_proxy_protocol_connection_state"),
    (61, "forward_proto_config"),
    (31, "route_specifier"),
    (4, "route_specifier"),
    (3, "route_specifier"),
    (42, "strip_port_mode"),
];

/// `RouteConfiguration`.
pub const ROUTE_CONFIGURATION: &[(u32, &str)] = &[
    (1, "name"),
    (2, "virtual_hosts"),
    (9, "vhds"),
    (3, "internal_only_headers"),
    (4, "response_headers_to_add"),
    (5, "response_headers_to_remove"),
    (6, "request_headers_to_add"),
    (8, "request_headers_to_remove"),
    (10, "most_specific_header_mutations_wins"),
    (7, "validate_clusters"),
    (11, "max_direct_response_body_size_bytes"),
    (12, "cluster_specifier_plugins"),
    (13, "request_mirror_policies"),
    (14, "ignore_port_in_host_matching"),
    (18, "vhost_header"),
    (15, "ignore_path_parameters_in_path_matching"),
    (16, "typed_per_filter_config"),
    (17, "metadata"),
    (19, "route_specifiers"),
];

/// `VirtualHost`.
pub const VIRTUAL_HOST: &[(u32, &str)] = &[
    (1, "name"),
    (2, "domains"),
    (3, "routes"),
    (21, "matcher"),
    (4, "require_tls"),
    (5, "virtual_clusters"),
    (6, "rate_limits"),
    (7, "request_headers_to_add"),
    (13, "request_headers_to_remove"),
    (10, "response_headers_to_add"),
    (11, "response_headers_to_remove"),
    (8, "cors"),
    (15, "typed_per_filter_config"),
    (14, "include_request_attempt_count"),
    (19, "include_attempt_count_in_response"),
    (16, "retry_policy"),
    (20, "retry_policy_typed_config"),
    (17, "hedge_policy"),
    (23, "include_is_timeout_retry_header"),
    (18, "per_request_buffer_limit_bytes"),
    (25, "request_body_buffer_limit"),
    (22, "request_mirror_policies"),
    (24, "metadata"),
    (26, "route_specifiers"),
];

/// `Route`.
pub const ROUTE: &[(u32, &str)] = &[
    (14, "name"),
    (4, "metadata"),
    (5, "decorator"),
    (13, "typed_per_filter_config"),
    (9, "request_headers_to_add"),
    (12, "request_headers_to_remove"),
    (10, "response_headers_to_add"),
    (11, "response_headers_to_remove"),
    (15, "tracing"),
    (16, "per_request_buffer_limit_bytes"),
    (19, "stat_prefix"),
    (20, "request_body_buffer_limit"),
    (21, "route_specifiers"),
    (7, "action"),
    (18, "action"),
    (3, "action"),
    (2, "action"),
    (17, "action"),
];

/// `RouteMatch`.
pub const ROUTE_MATCH: &[(u32, &str)] = &[
    (4, "case_sensitive"),
    (9, "runtime_fraction"),
    (6, "headers"),
    (7, "query_parameters"),
    (17, "cookies"),
    (8, "grpc"),
    (11, "tls_context"),
    (13, "dynamic_metadata"),
    (16, "filter_state"),
    (10, "path_specifier"),
    (15, "path_specifier"),
    (14, "path_specifier"),
    (2, "path_specifier"),
    (1, "path_specifier"),
    (12, "path_specifier"),
];

/// `HeaderMatcher`.
pub const HEADER_MATCHER: &[(u32, &str)] = &[
    (1, "name"),
    (8, "invert_match"),
    (14, "treat_missing_header_as_empty"),
];

/// `RouteAction`.
pub const ROUTE_ACTION: &[(u32, &str)] = &[
    (20, "cluster_not_found_response_code"),
    (4, "metadata_match"),
    (5, "prefix_rewrite"),
    (32, "regex_rewrite"),
    (41, "path_rewrite_policy"),
    (45, "path_rewrite"),
    (38, "append_x_forwarded_host"),
    (8, "timeout"),
    (24, "idle_timeout"),
    (42, "flush_timeout"),
    (40, "early_data_policy"),
    (9, "retry_policy"),
    (33, "retry_policy_typed_config"),
    (30, "request_mirror_policies"),
    (11, "priority"),
    (13, "rate_limits"),
    (14, "include_vh_rate_limits"),
    (15, "hash_policy"),
    (17, "cors"),
    (23, "max_grpc_timeout"),
    (28, "grpc_timeout_offset"),
    (25, "upgrade_configs"),
    (34, "internal_redirect_policy"),
    (26, "internal_redirect_action"),
    (31, "max_internal_redirects"),
    (27, "hedge_policy"),
    (36, "max_stream_duration"),
    (3, "cluster_specifier"),
    (39, "cluster_specifier"),
    (2, "cluster_specifier"),
    (1, "cluster_specifier"),
    (37, "cluster_specifier"),
    (29, "host_rewrite_specifier"),
    (44, "host_rewrite_specifier"),
    (7, "host_rewrite_specifier"),
    (6, "host_rewrite_specifier"),
    (35, "host_rewrite_specifier"),
];

/// `RetryPolicy`.
pub const RETRY_POLICY: &[(u32, &str)] = &[
    (1, "retry_on"),
    (2, "num_retries"),
    (3, "per_try_timeout"),
    (13, "per_try_idle_timeout"),
    (4, "retry_priority"),
    (5, "retry_host_predicate"),
    (12, "retry_options_predicates"),
    (6, "host_selection_retry_max_attempts"),
    (7, "retriable_status_codes"),
    (8, "retry_back_off"),
    (11, "rate_limited_retry_back_off"),
    (9, "retriable_headers"),
    (10, "retriable_request_headers"),
    (14, "refresh_cluster_on_retry"),
];

/// `RedirectAction`.
pub const REDIRECT_ACTION: &[(u32, &str)] = &[
    (1, "host_redirect"),
    (8, "port_redirect"),
    (3, "response_code"),
    (6, "strip_query"),
    (7, "scheme_rewrite_specifier"),
    (4, "scheme_rewrite_specifier"),
    (9, "path_rewrite_specifier"),
    (5, "path_rewrite_specifier"),
    (2, "path_rewrite_specifier"),
    (10, "path_rewrite_specifier"),
];

/// `DirectResponseAction`.
pub const DIRECT_RESPONSE_ACTION: &[(u32, &str)] =
    &[(1, "status"), (2, "body"), (3, "body_format")];

/// `WeightedCluster`.
pub const WEIGHTED_CLUSTER: &[(u32, &str)] = &[
    (1, "clusters"),
    (3, "total_weight"),
    (2, "runtime_key_prefix"),
    (5, "random_value_specifier"),
    (4, "random_value_specifier"),
];

/// `ClusterWeight`.
pub const CLUSTER_WEIGHT: &[(u32, &str)] = &[];

/// `Cluster`.
pub const CLUSTER: &[(u32, &str)] = &[
    (43, "transport_socket_matches"),
    (59, "transport_socket_matcher"),
    (1, "name"),
    (28, "alt_stat_name"),
    (61, "stats_matcher"),
    (3, "eds_cluster_config"),
    (4, "connect_timeout"),
    (5, "per_connection_buffer_limit_bytes"),
    (60, "per_connection_buffer_high_watermark_timeout"),
    (6, "lb_policy"),
    (33, "load_assignment"),
    (8, "health_checks"),
    (9, "max_requests_per_connection"),
    (10, "circuit_breakers"),
    (46, "upstream_http_protocol_options"),
    (29, "common_http_protocol_options"),
    (13, "http_protocol_options"),
    (14, "http2_protocol_options"),
    (36, "typed_extension_protocol_options"),
    (16, "dns_refresh_rate"),
    (58, "dns_jitter"),
    (44, "dns_failure_refresh_rate"),
    (39, "respect_dns_ttl"),
    (17, "dns_lookup_family"),
    (18, "dns_resolvers"),
    (45, "use_tcp_for_dns_lookups"),
    (53, "dns_resolution_config"),
    (55, "typed_dns_resolver_config"),
    (54, "wait_for_warm_on_init"),
    (19, "outlier_detection"),
    (20, "cleanup_interval"),
    (21, "upstream_bind_config"),
    (22, "lb_subset_config"),
    (27, "common_lb_config"),
    (24, "transport_socket"),
    (25, "metadata"),
    (26, "protocol_selection"),
    (30, "upstream_connection_options"),
    (31, "close_connections_on_host_health_failure"),
    (32, "ignore_health_on_host_removal"),
    (40, "filters"),
    (41, "load_balancing_policy"),
    (42, "lrs_server"),
    (57, "lrs_report_endpoint_metrics"),
    (47, "track_timeout_budgets"),
    (48, "upstream_config"),
    (49, "track_cluster_stats"),
    (50, "preconnect_policy"),
    (51, "connection_pool_per_downstream_connection"),
    (62, "queuing_policies"),
    (38, "cluster_discovery_type"),
    (2, "cluster_discovery_type"),
    (34, "lb_config"),
    (56, "lb_config"),
    (52, "lb_config"),
    (23, "lb_config"),
    (37, "lb_config"),
];

/// `ClusterLoadAssignment`.
pub const CLUSTER_LOAD_ASSIGNMENT: &[(u32, &str)] = &[
    (1, "cluster_name"),
    (2, "endpoints"),
    (5, "named_endpoints"),
    (4, "policy"),
];

/// `LocalityLbEndpoints`.
pub const LOCALITY_LB_ENDPOINTS: &[(u32, &str)] = &[
    (1, "locality"),
    (9, "metadata"),
    (2, "lb_endpoints"),
    (3, "load_balancing_weight"),
    (5, "priority"),
    (6, "proximity"),
    (8, "lb_config"),
    (7, "lb_config"),
];

/// `LbEndpoint`.
pub const LB_ENDPOINT: &[(u32, &str)] = &[
    (2, "health_status"),
    (3, "metadata"),
    (4, "load_balancing_weight"),
    (5, "host_identifier"),
    (1, "host_identifier"),
];

/// `Endpoint`.
pub const ENDPOINT: &[(u32, &str)] = &[
    (1, "address"),
    (2, "health_check_config"),
    (3, "hostname"),
    (4, "additional_addresses"),
    (5, "observability_name"),
];

/// `SocketAddress`.
pub const SOCKET_ADDRESS: &[(u32, &str)] = &[
    (1, "protocol"),
    (2, "address"),
    (5, "resolver_name"),
    (6, "ipv4_compat"),
    (7, "network_namespace_filepath"),
    (4, "port_specifier"),
    (3, "port_specifier"),
];
