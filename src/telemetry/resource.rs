//! Resources: the workload a span or metric belongs to. With an Enricher,
//! the local endpoint's identity; otherwise this host, described the way the
//! OTel SDKs describe a process: `service.name` from OTEL_SERVICE_NAME, then
//! OTEL_RESOURCE_ATTRIBUTES, else `unknown_service:cnflow`; plus host.name and os.type.
use crate::workload::Identity;
use anyhow::{bail, Result};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;

pub const DEFAULT_SERVICE_NAME: &str = "unknown_service:cnflow";

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `key1=value1,key2=value2` with percent-encoded values (W3C Baggage octets).
pub fn parse_resource_attributes(s: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim).filter(|x| !x.is_empty()) {
        let Some((k, v)) = item.split_once('=') else {
            bail!("OTEL_RESOURCE_ATTRIBUTES: {item:?} is not key=value");
        };
        let k = k.trim();
        if k.is_empty() {
            bail!("OTEL_RESOURCE_ATTRIBUTES: empty key in {item:?}");
        }
        let Some(v) = percent_decode(v.trim()) else {
            bail!("OTEL_RESOURCE_ATTRIBUTES: bad percent-encoding in {item:?}");
        };
        out.push((k.to_string(), v));
    }
    Ok(out)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The host resource from the given environment variables.
pub fn host_identity(vars: impl IntoIterator<Item = (String, String)>) -> Result<Identity> {
    let mut service_name = None;
    let mut extra = Vec::new();
    for (k, v) in vars {
        match k.as_str() {
            "OTEL_SERVICE_NAME" if !v.trim().is_empty() => service_name = Some(v.trim().to_string()),
            "OTEL_RESOURCE_ATTRIBUTES" => extra = parse_resource_attributes(&v)?,
            _ => {}
        }
    }
    let mut attrs: Vec<(String, String)> = vec![
        ("service.name".into(), DEFAULT_SERVICE_NAME.into()),
        ("host.name".into(), hostname()),
        ("os.type".into(), "linux".into()),
    ];
    // OTEL_RESOURCE_ATTRIBUTES overrides detected values (as SDK resource merging does).
    for (k, v) in extra {
        match attrs.iter_mut().find(|(ek, _)| *ek == k) {
            Some(e) => e.1 = v,
            None => attrs.push((k, v)),
        }
    }
    if let Some(name) = service_name {
        attrs[0].1 = name;
    }
    Ok(Identity { attributes: attrs })
}

pub fn kv(key: &str, value: impl Into<any_value::Value>) -> KeyValue {
    KeyValue { key: key.to_string(), value: Some(AnyValue { value: Some(value.into()) }), key_strindex: 0 }
}

/// String attribute: the common case for resources, tests and tools.
pub fn kv_str(key: &str, value: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.to_string()))
}

/// The value of attribute `key`, if present.
pub fn find<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs.iter().find(|a| a.key == key).and_then(|a| a.value.as_ref()?.value.as_ref())
}

/// One resource (by `service.name`) holding `spans` in one scope: the
/// smallest well-formed export request, for tools, benches and tests.
pub fn trace_request(
    service: &str,
    spans: Vec<opentelemetry_proto::tonic::trace::v1::Span>,
) -> opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
    opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![kv_str("service.name", service)], ..Default::default() }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
}

pub fn to_proto(id: &Identity) -> Resource {
    Resource {
        attributes: id.attributes.iter().map(|(k, v)| kv(k, any_value::Value::StringValue(v.clone()))).collect(),
        dropped_attributes_count: 0,
        entity_refs: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn vars(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }
    #[test]
    fn service_name_precedence_like_the_sdks() {
        let id = host_identity(vars(&[])).unwrap();
        assert_eq!(id.get("service.name"), Some(DEFAULT_SERVICE_NAME));
        assert_eq!(id.get("os.type"), Some("linux"));
        assert!(id.get("host.name").is_some());
        let id = host_identity(vars(&[(
            "OTEL_RESOURCE_ATTRIBUTES",
            "service.name=a,host.name=h1,deployment.environment.name=prod%20eu",
        )]))
        .unwrap();
        assert_eq!(id.get("service.name"), Some("a"));
        assert_eq!(id.get("host.name"), Some("h1"));
        assert_eq!(id.get("deployment.environment.name"), Some("prod eu"));
        let id =
            host_identity(vars(&[("OTEL_RESOURCE_ATTRIBUTES", "service.name=a"), ("OTEL_SERVICE_NAME", "b")])).unwrap();
        assert_eq!(id.get("service.name"), Some("b"));
        assert!(host_identity(vars(&[("OTEL_RESOURCE_ATTRIBUTES", "novalue")])).is_err());
        assert!(host_identity(vars(&[("OTEL_RESOURCE_ATTRIBUTES", "k=%zz")])).is_err());
    }
}
