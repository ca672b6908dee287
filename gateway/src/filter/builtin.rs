//! Registers every built-in native filter under the name users write in `filters: - name: ...`.

use super::{cors, fault, headers, ip_access, local_rate_limit, request_id, FilterRegistry};

/// Register `request-id`, `headers`, `local-rate-limit`, `ip-access`, `fault` and `cors`.
pub fn register_all(r: &mut FilterRegistry) {
    r.register(request_id::NAME, request_id::factory);
    r.register(headers::NAME, headers::factory);
    r.register(local_rate_limit::NAME, local_rate_limit::factory);
    r.register(ip_access::NAME, ip_access::factory);
    r.register(fault::NAME, fault::factory);
    r.register(cors::NAME, cors::factory);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_is_registered_by_its_name() {
        let r = FilterRegistry::builtin();
        assert_eq!(
            r.names(),
            [
                "cors",
                "fault",
                "headers",
                "ip-access",
                "local-rate-limit",
                "request-id"
            ]
        );
    }
}
