//! Adds GeoIP attributes next to the address attributes of spans, log records
//! and resources.
//!
//! Naming rule: an attribute set (one span, one log record or one resource)
//! whose address attributes hold public IPs for exactly one role gets plain
//! `geo.*` / `as.*` keys. When two or more roles hold public IPs, each role's
//! keys are prefixed with the role: `client.geo.country.iso_code`,
//! `server.as.number`, `network.peer.geo.locality.name`... Existing keys are
//! never overwritten. Metric data points are left alone (addresses do not
//! belong in metric attributes); metric resources are enriched.
use super::geoip::{parse_ip, GeoInfo, GeoIp};
use super::wire::Value as WireValue;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;

/// (address attribute, prefix used when several roles are enriched)
pub const ROLES: [(&str, &str); 5] = [
    ("client.address", "client."),
    ("server.address", "server."),
    ("source.address", "source."),
    ("destination.address", "destination."),
    ("network.peer.address", "network.peer."),
];

fn str_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
        Value::StringValue(s) => Some(s.as_str()),
        _ => None,
    })
}

fn push(attrs: &mut Vec<KeyValue>, key: String, v: Value) {
    if !attrs.iter().any(|kv| kv.key == key) {
        attrs.push(KeyValue { key, value: Some(AnyValue { value: Some(v) }), ..Default::default() });
    }
}

/// The attributes added for one address, in this order (shared with `wire`).
pub const GEO_FIELDS: [&str; 9] = [
    "geo.continent.code",
    "geo.country.iso_code",
    "geo.region.iso_code",
    "geo.locality.name",
    "geo.postal_code",
    "geo.location.lat",
    "geo.location.lon",
    "as.number",
    "as.organization.name",
];

/// `GEO_FIELDS`' values for `g` (None = not in the databases).
pub fn values(g: &GeoInfo) -> [Option<WireValue<'_>>; 9] {
    fn s(x: &Option<String>) -> Option<WireValue<'_>> {
        x.as_deref().map(WireValue::Str)
    }
    [
        s(&g.continent_code),
        s(&g.country_iso_code),
        s(&g.region_iso_code),
        s(&g.locality_name),
        s(&g.postal_code),
        g.lat.map(WireValue::Double),
        g.lon.map(WireValue::Double),
        g.as_number.map(|n| WireValue::Int(n.into())),
        s(&g.as_organization),
    ]
}

fn add_info(attrs: &mut Vec<KeyValue>, prefix: &str, g: &GeoInfo) {
    for (k, v) in GEO_FIELDS.iter().zip(values(g)) {
        let v = match v {
            Some(WireValue::Str(s)) => Value::StringValue(s.to_string()),
            Some(WireValue::Int(i)) => Value::IntValue(i),
            Some(WireValue::Double(d)) => Value::DoubleValue(d),
            None => continue,
        };
        push(attrs, format!("{prefix}{k}"), v);
    }
}

/// Enriches one attribute set; returns whether anything was added.
pub fn enrich_attrs(geo: &GeoIp, attrs: &mut Vec<KeyValue>) -> bool {
    let mut found: [Option<(&'static str, std::net::IpAddr)>; 5] = [None; 5];
    let mut n = 0;
    for (key, prefix) in ROLES {
        if let Some(ip) = str_attr(attrs, key).and_then(parse_ip).filter(|ip| super::geoip::is_public(*ip)) {
            found[n] = Some((prefix, ip));
            n += 1;
        }
    }
    let mut added = false;
    for (prefix, ip) in found.into_iter().flatten() {
        if let Some(info) = geo.lookup(ip) {
            add_info(attrs, if n > 1 { prefix } else { "" }, &info);
            added = true;
        }
    }
    added
}

fn enrich_resource(geo: &GeoIp, r: &mut Option<Resource>) -> bool {
    r.as_mut().is_some_and(|r| enrich_attrs(geo, &mut r.attributes))
}

/// Number of attribute sets enriched.
pub fn enrich_traces(geo: &GeoIp, req: &mut ExportTraceServiceRequest) -> u64 {
    let mut n = 0;
    for rs in &mut req.resource_spans {
        n += enrich_resource(geo, &mut rs.resource) as u64;
        for ss in &mut rs.scope_spans {
            for span in &mut ss.spans {
                n += enrich_attrs(geo, &mut span.attributes) as u64;
            }
        }
    }
    n
}

pub fn enrich_logs(geo: &GeoIp, req: &mut ExportLogsServiceRequest) -> u64 {
    let mut n = 0;
    for rl in &mut req.resource_logs {
        n += enrich_resource(geo, &mut rl.resource) as u64;
        for sl in &mut rl.scope_logs {
            for rec in &mut sl.log_records {
                n += enrich_attrs(geo, &mut rec.attributes) as u64;
            }
        }
    }
    n
}

pub fn enrich_metrics(geo: &GeoIp, req: &mut ExportMetricsServiceRequest) -> u64 {
    req.resource_metrics.iter_mut().map(|rm| enrich_resource(geo, &mut rm.resource) as u64).sum()
}
