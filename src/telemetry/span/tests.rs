use super::*;
use crate::capture::Direction::{Egress, Ingress};
use crate::exchange::{Detail, Outcome};
use crate::protocol::kafka::semconv::snake;
use crate::protocol::span_common::split_host;
use crate::telemetry::attr::get;
use crate::telemetry::samples::*;
use crate::telemetry::semconv::is_allowed_key;

fn routes() -> RouteTemplater {
    RouteTemplater::new(24, 1000, 12)
}

fn b(ex: &Exchange, kind: Kind) -> SpanParts {
    build(ex, kind, &mut routes(), &NamingOptions::default())
}

fn s(p: &SpanParts, k: &str) -> Option<String> {
    get(&p.attrs, k).map(|v| match v {
        V::S(s) => s.to_string(),
        other => other.to_string(),
    })
}

fn assert_semconv(p: &SpanParts) {
    for (k, _) in &p.attrs {
        assert!(is_allowed_key(k), "{}: attribute {k} is neither a semconv registry key nor cnflow.*", p.name);
    }
    if let Some((_, m)) = &p.metric {
        for (k, _) in m {
            assert!(is_allowed_key(k), "metric attribute {k}");
            assert!(
                !matches!(*k, "url.path" | "client.address" | "url.query" | "network.peer.address"),
                "{k} in metric"
            );
        }
    }
}

#[test]
fn http_server_and_client_names_routes_status() {
    let ex = http_exchange(Ingress, "GET", "/users/42", 200, T0);
    let p = b(&ex, Kind::Server);
    assert_eq!(p.name, "GET /users/{id}");
    assert_eq!(s(&p, "http.route").as_deref(), Some("/users/{id}"));
    assert_eq!(s(&p, "url.path").as_deref(), Some("/users/42"));
    assert_eq!(s(&p, "http.response.status_code").as_deref(), Some("200"));
    assert_eq!(s(&p, "server.address").as_deref(), Some("api.example"));
    assert_eq!(s(&p, "server.port").as_deref(), Some("8080"));
    assert_eq!(s(&p, "client.address").as_deref(), Some("10.200.0.1"));
    assert_eq!(s(&p, "network.peer.address").as_deref(), Some("10.200.0.1"));
    assert_eq!(s(&p, "network.peer.port").as_deref(), Some("40000"));
    assert_eq!(s(&p, "network.transport").as_deref(), Some("tcp"));
    assert_eq!(s(&p, "network.type").as_deref(), Some("ipv4"));
    assert_eq!(s(&p, "network.protocol.name").as_deref(), Some("http"));
    assert_eq!(s(&p, "network.protocol.version").as_deref(), Some("1.1"));
    assert!(p.error.is_none());
    let (inst, m) = p.metric.clone().unwrap();
    assert_eq!(inst.name(), "http.server.request.duration");
    assert!(get(&m, "http.route").is_some());
    assert_semconv(&p);

    let p = b(&ex, Kind::Client);
    assert_eq!(p.name, "GET /users/{id}");
    assert_eq!(s(&p, "url.template").as_deref(), Some("/users/{id}"));
    assert!(s(&p, "http.route").is_none());
    assert_eq!(s(&p, "network.peer.address").as_deref(), Some("10.200.0.2"));
    assert_eq!(s(&p, "network.peer.port").as_deref(), Some("8080"));
    assert_eq!(p.metric.as_ref().unwrap().0.name(), "http.client.request.duration");
    assert_semconv(&p);
}

#[test]
fn http_status_policy_differs_by_kind() {
    let e404 = http_exchange(Ingress, "GET", "/x", 404, T0);
    assert!(b(&e404, Kind::Server).error.is_none());
    let c = b(&e404, Kind::Client);
    assert!(c.error.is_some());
    assert_eq!(s(&c, "error.type").as_deref(), Some("404"));
    let e503 = http_exchange(Ingress, "GET", "/x", 503, T0);
    let p = b(&e503, Kind::Server);
    assert!(p.error.is_some());
    assert_eq!(get(&p.metric.unwrap().1, "error.type"), Some(&V::from("503")));
    let mut t = http_exchange(Ingress, "GET", "/x", 200, T0);
    t.outcome = Outcome::Timeout;
    if let Detail::Http(h) = &mut t.detail {
        h.status = None;
    }
    let p = b(&t, Kind::Server);
    assert!(p.error.is_some());
    assert_eq!(s(&p, "error.type").as_deref(), Some("timeout"));
    t.outcome = Outcome::Reset;
    assert_eq!(s(&b(&t, Kind::Client), "error.type").as_deref(), Some("reset"));
}

#[test]
fn http_reason_is_status_message_only_when_informative() {
    let with = |code: u16, reason: Option<&str>, kind: Kind| {
        let mut ex = http_exchange(Ingress, "GET", "/x", code, T0);
        if let Detail::Http(h) = &mut ex.detail {
            h.reason = reason.map(crate::otel::attr::Str::copy);
        }
        let p = b(&ex, kind);
        assert!(p.attrs.iter().all(|(k, _)| !k.contains("reason")), "no reason attribute: {:?}", p.attrs);
        p.error
    };
    assert_eq!(with(503, Some("Backend pool exhausted"), Kind::Server).as_deref(), Some("Backend pool exhausted"));
    assert_eq!(with(503, Some("Service Unavailable"), Kind::Server).as_deref(), Some(""));
    assert_eq!(with(500, Some("INTERNAL SERVER ERROR"), Kind::Server).as_deref(), Some(""));
    assert_eq!(with(413, Some("Request Entity Too Large"), Kind::Client).as_deref(), Some(""));
    assert_eq!(with(414, Some("Request-URI Too Large"), Kind::Client).as_deref(), Some(""));
    assert_eq!(
        with(494, Some("Request Header Or Cookie Too Large"), Kind::Client).as_deref(),
        Some("Request Header Or Cookie Too Large")
    );
    assert_eq!(with(502, Some(" "), Kind::Server).as_deref(), Some(""));
    assert_eq!(with(502, None, Kind::Server).as_deref(), Some(""));
    assert_eq!(with(500, Some("Falha interna ü"), Kind::Server).as_deref(), Some("Falha interna ü"));
    // Not an error span: no status at all, whatever the phrase.
    assert_eq!(with(404, Some("Gone fishing"), Kind::Server), None);
    assert_eq!(with(200, Some("Fine"), Kind::Client), None);
}

#[test]
fn http_unknown_method_query_masking_and_partial() {
    let mut ex = http_exchange(Ingress, "PURGE", "/cache", 200, T0);
    if let Detail::Http(h) = &mut ex.detail {
        h.query = Some("token=s3cr3t&page=2&flag".into());
    }
    ex.partial = true;
    let p = b(&ex, Kind::Server);
    assert_eq!(p.name, "HTTP");
    assert_eq!(s(&p, "http.request.method").as_deref(), Some("_OTHER"));
    assert_eq!(s(&p, "http.request.method_original").as_deref(), Some("PURGE"));
    assert_eq!(s(&p, "url.query").as_deref(), Some("token=?&page=?&flag"));
    assert_eq!(get(&p.attrs, "cnflow.partial"), Some(&V::B(true)));
    let opts = NamingOptions { mask_query_values: false, ..Default::default() };
    let p = build(&ex, Kind::Server, &mut routes(), &opts);
    assert_eq!(s(&p, "url.query").as_deref(), Some("token=s3cr3t&page=2&flag"));
    // HTTP/2 joined mid-stream: no method or path decoded.
    let mut ex = http_exchange(Ingress, "GET", "/", 200, T0);
    if let Detail::Http(h) = &mut ex.detail {
        h.method = None;
        h.path = None;
    }
    assert_eq!(b(&ex, Kind::Server).name, "HTTP");
}

#[test]
fn grpc_names_and_status_policy() {
    let ok = grpc_exchange(Egress, Some(0), T0);
    let p = b(&ok, Kind::Client);
    assert_eq!(p.name, "helloworld.Greeter/SayHello");
    assert_eq!(s(&p, "rpc.system.name").as_deref(), Some("grpc"));
    assert_eq!(s(&p, "rpc.method").as_deref(), Some("helloworld.Greeter/SayHello"));
    assert_eq!(s(&p, "rpc.response.status_code").as_deref(), Some("OK"));
    assert_eq!(s(&p, "network.protocol.version").as_deref(), Some("2"));
    assert!(p.error.is_none());
    assert_eq!(p.metric.as_ref().unwrap().0.name(), "rpc.client.call.duration");
    assert_semconv(&p);
    let unavailable = grpc_exchange(Egress, Some(14), T0);
    let p = b(&unavailable, Kind::Server);
    assert_eq!(s(&p, "error.type").as_deref(), Some("UNAVAILABLE"));
    assert_eq!(p.error.as_deref(), Some("boom"));
    // NOT_FOUND is the caller's problem: error on the client only.
    let not_found = grpc_exchange(Egress, Some(5), T0);
    assert!(b(&not_found, Kind::Server).error.is_none());
    assert!(b(&not_found, Kind::Client).error.is_some());
}

#[test]
fn dns_names_and_rcode_policy() {
    let ok = dns_exchange(Egress, "example.com", "NOERROR", T0);
    let p = b(&ok, Kind::Client);
    assert_eq!(p.name, "A example.com");
    assert_eq!(s(&p, "dns.question.name").as_deref(), Some("example.com"));
    assert_eq!(s(&p, "network.transport").as_deref(), Some("udp"));
    assert_eq!(get(&p.attrs, "dns.answers"), Some(&V::A(vec!["A 10.200.0.80".into()])));
    assert!(p.error.is_none());
    assert_eq!(p.metric.as_ref().unwrap().0.name(), "dns.lookup.duration");
    assert_semconv(&p);
    let nx = dns_exchange(Egress, "nope.example.com", "NXDOMAIN", T0);
    assert!(b(&nx, Kind::Client).error.is_none());
    let strict = NamingOptions { dns_nxdomain_is_error: true, ..Default::default() };
    assert!(build(&nx, Kind::Client, &mut routes(), &strict).error.is_some());
    let fail = dns_exchange(Egress, "x.example.com", "SERVFAIL", T0);
    let p = b(&fail, Kind::Server);
    assert_eq!(s(&p, "error.type").as_deref(), Some("SERVFAIL"));
}

#[test]
fn redis_names_masking_and_errors() {
    let ok = redis_exchange(Egress, None, T0);
    let p = b(&ok, Kind::Client);
    assert_eq!(p.name, "SET");
    assert_eq!(s(&p, "db.system.name").as_deref(), Some("redis"));
    assert_eq!(s(&p, "db.operation.name").as_deref(), Some("SET"));
    assert_eq!(s(&p, "db.query.text").as_deref(), Some("SET ? ?"));
    assert_eq!(s(&p, "db.namespace").as_deref(), Some("0"));
    assert_eq!(p.metric.as_ref().unwrap().0.name(), "db.client.operation.duration");
    assert_semconv(&p);
    let opts = NamingOptions { unmask_db_statements: true, ..Default::default() };
    assert_eq!(
        s(&build(&ok, Kind::Client, &mut routes(), &opts), "db.query.text").as_deref(),
        Some("SET user:1 secret")
    );
    let err = redis_exchange(Egress, Some("WRONGTYPE Operation against a key"), T0);
    let p = b(&err, Kind::Client);
    assert_eq!(s(&p, "error.type").as_deref(), Some("WRONGTYPE"));
    assert_eq!(s(&p, "db.response.status_code").as_deref(), Some("WRONGTYPE"));
    assert_eq!(p.error.as_deref(), Some("WRONGTYPE Operation against a key"));
}

#[test]
fn kafka_names_and_errors() {
    let ok = kafka_exchange(Egress, 0, T0);
    let p = b(&ok, Kind::Client);
    assert_eq!(p.name, "produce orders");
    assert_eq!(s(&p, "messaging.system").as_deref(), Some("kafka"));
    assert_eq!(s(&p, "messaging.operation.name").as_deref(), Some("produce"));
    assert_eq!(s(&p, "messaging.operation.type").as_deref(), Some("send"));
    assert_eq!(s(&p, "messaging.destination.name").as_deref(), Some("orders"));
    assert_eq!(s(&p, "messaging.client.id").as_deref(), Some("rdkafka"));
    assert!(p.error.is_none());
    assert_eq!(p.metric.as_ref().unwrap().0.name(), "messaging.client.operation.duration");
    assert_semconv(&p);
    let err = kafka_exchange(Egress, 3, T0);
    let p = b(&err, Kind::Client);
    assert_eq!(s(&p, "error.type").as_deref(), Some("UNKNOWN_TOPIC_OR_PARTITION"));
    assert!(s(&p, "messaging.batch.message_count").is_none(), "not counted: not set");
    let mut fetch = kafka_exchange(Egress, 0, T0);
    if let Detail::Kafka(k) = &mut fetch.detail {
        (k.api_key, k.api_name, k.record_count, k.record_bytes) = (1, "Fetch".into(), Some(5), Some(197));
    }
    let p = b(&fetch, Kind::Client);
    assert_eq!(s(&p, "messaging.batch.message_count").as_deref(), Some("5"));
    assert_eq!(s(&p, "cnflow.kafka.record_bytes").as_deref(), Some("197"));
    assert!(get(&p.metric.as_ref().unwrap().1, "messaging.batch.message_count").is_none(), "not a metric attribute");
    assert_semconv(&p);
    assert_eq!(snake("OffsetCommit"), "offset_commit");
    assert_eq!(snake("ApiVersions"), "api_versions");
}

#[test]
fn icmp_echo_and_errors() {
    let ok = icmp_echo(Egress, Outcome::Complete, T0);
    let p = b(&ok, Kind::Client);
    assert_eq!(p.name, "ICMP echo");
    assert!(s(&p, "network.transport").is_none());
    assert!(s(&p, "network.peer.port").is_none());
    assert_eq!(p.metric.as_ref().unwrap().0.name(), "cnflow.icmp.echo.rtt");
    assert_semconv(&p);
    let lost = icmp_echo(Egress, Outcome::Timeout, T0);
    let p = b(&lost, Kind::Client);
    assert!(p.error.is_some() && p.metric.is_none());
    let mut unreach = icmp_echo(Ingress, Outcome::Complete, T0);
    if let Detail::Icmp(i) = &mut unreach.detail {
        i.icmp_type = 3;
        i.code = 3;
        i.echo_id = None;
        i.name = "destination_unreachable".into();
        i.original = Some(crate::protocol::icmp::IcmpOriginal {
            protocol: 17,
            src: "10.200.0.1:5000".parse().unwrap(),
            dst: "10.200.0.2:53".parse().unwrap(),
        });
    }
    let p = b(&unreach, Kind::Server);
    assert_eq!(p.name, "ICMP destination_unreachable");
    assert_eq!(s(&p, "error.type").as_deref(), Some("destination_unreachable"));
    assert_eq!(s(&p, "cnflow.icmp.original.destination").as_deref(), Some("10.200.0.2:53"));
}

#[test]
fn every_sample_uses_only_semconv_or_cnflow_keys() {
    for ex in one_of_each(T0) {
        for kind in [Kind::Client, Kind::Server] {
            assert_semconv(&b(&ex, kind));
        }
    }
}

#[test]
fn host_header_forms() {
    assert_eq!(split_host("example.com:8080"), ("example.com".to_string(), Some(8080)));
    assert_eq!(split_host("example.com"), ("example.com".to_string(), None));
    assert_eq!(split_host("[::1]:80"), ("::1".to_string(), Some(80)));
    assert_eq!(split_host("::1"), ("::1".to_string(), None));
}
