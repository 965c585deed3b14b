//! Hand-built exchanges of every protocol, shared by unit tests, the golden
//! test, the benchmark and the docs' example output.
use crate::capture::Direction;
use crate::exchange::*;
use crate::flow::{ConnInfo, RoleEvidence, Transport};
use crate::otel::attr::Str;
use crate::protocol::dns::DnsDetail;
use crate::protocol::http::HttpDetail;
use crate::protocol::http2::grpc::GrpcDetail;
use crate::protocol::icmp::IcmpDetail;
use crate::protocol::kafka::KafkaDetail;
use crate::protocol::redis::RedisDetail;
use std::sync::Arc;

/// 2023-11-14T22:13:20Z, a fixed base time so outputs are reproducible.
pub const T0: u64 = 1_700_000_000_000_000_000;

pub fn conn(client: &str, server: &str, transport: Transport, client_to_server: Direction) -> crate::flow::Conn {
    Arc::new(ConnInfo {
        id: 1,
        ifindex: 2,
        transport,
        client: client.parse().expect("client addr"),
        server: server.parse().expect("server addr"),
        client_to_server,
        evidence: RoleEvidence::Syn,
        first_ts_ns: T0,
    })
}

pub fn exchange(conn: crate::flow::Conn, protocol: Protocol, start_ns: u64, dur_ns: u64, detail: Detail) -> Exchange {
    Exchange {
        conn,
        wire: Default::default(),
        protocol,
        start_ns,
        end_ns: start_ns + dur_ns,
        request_bytes: 100,
        response_bytes: 200,
        outcome: Outcome::Complete,
        partial: false,
        detail,
    }
}

pub fn http(method: &str, path: &str, query: Option<&str>, status: u16) -> HttpDetail {
    HttpDetail {
        method: Some(Str::copy(method)),
        path: Some(Str::copy(path)),
        query: query.map(Str::copy),
        version: "1.1".into(),
        host: Some("api.example:8080".into()),
        user_agent: Some("curl/8.0".into()),
        status: Some(status),
        response_content_length: Some(2),
        ..Default::default()
    }
}

/// An HTTP/1.1 exchange 10.200.0.1 → 10.200.0.2:8080 seen as `dir` at the interface.
pub fn http_exchange(dir: Direction, method: &str, path: &str, status: u16, start_ns: u64) -> Exchange {
    let c = conn("10.200.0.1:40000", "10.200.0.2:8080", Transport::Tcp, dir);
    exchange(c, Protocol::Http1, start_ns, 1_500_000, Detail::Http(Box::new(http(method, path, None, status))))
}

pub fn grpc_exchange(dir: Direction, status: Option<u32>, start_ns: u64) -> Exchange {
    let c = conn("10.200.0.1:40002", "10.200.0.2:50051", Transport::Tcp, dir);
    let d = HttpDetail {
        method: Some("POST".into()),
        path: Some("/helloworld.Greeter/SayHello".into()),
        version: "2".into(),
        host: Some("10.200.0.2:50051".into()),
        status: Some(200),
        stream_id: Some(1),
        content_type: Some("application/grpc".into()),
        grpc: Some(Box::new(GrpcDetail {
            service: "helloworld.Greeter".into(),
            method: "SayHello".into(),
            status_code: status,
            message: status.filter(|c| *c != 0).map(|_| "boom".into()),
            request_messages: 1,
            response_messages: 1,
        })),
        ..Default::default()
    };
    exchange(c, Protocol::Grpc, start_ns, 2_000_000, Detail::Http(Box::new(d)))
}

pub fn dns_exchange(dir: Direction, name: &str, rcode: &str, start_ns: u64) -> Exchange {
    let c = conn("10.200.0.1:53000", "10.200.0.53:53", Transport::Udp, dir);
    let d = DnsDetail {
        id: 0x1234,
        question_name: Some(name.into()),
        question_type: Some("A".into()),
        question_class: Some("IN".into()),
        rcode: Some(rcode.into()),
        answer_count: if rcode == "NOERROR" { 1 } else { 0 },
        answers: if rcode == "NOERROR" { vec!["A 10.200.0.80".into()] } else { vec![] },
        truncated: false,
        transport: "udp".into(),
        ..Default::default()
    };
    exchange(c, Protocol::Dns, start_ns, 300_000, Detail::Dns(d))
}

pub fn redis_exchange(dir: Direction, error: Option<&str>, start_ns: u64) -> Exchange {
    let c = conn("10.200.0.1:40004", "10.200.0.6:6379", Transport::Tcp, dir);
    let d = RedisDetail {
        command: "SET".into(),
        subcommand: None,
        arg_count: 2,
        query_masked: "SET ? ?".into(),
        query_raw: "SET user:1 secret".into(),
        error: error.map(Into::into),
        error_prefix: error.and_then(|e| e.split_whitespace().next()).map(crate::otel::attr::Str::copy),
        response_type: Some(if error.is_some() { "error" } else { "simple" }),
        resp_version: 2,
        db_index: Some(0),
    };
    exchange(c, Protocol::Redis, start_ns, 400_000, Detail::Redis(Box::new(d)))
}

/// A PostgreSQL simple query, `sqlstate` an ErrorResponse's (with a message
/// when `with_message`); `summary` false leaves only operation and table.
pub fn postgres_exchange(dir: Direction, sqlstate: Option<&str>, summary: bool, start_ns: u64) -> Exchange {
    let c = conn("10.200.0.1:40008", "10.200.0.7:5432", Transport::Tcp, dir);
    let d = crate::protocol::postgres::PostgresDetail {
        message: "query",
        operation: Some("SELECT".into()),
        collection: Some("pgbench_accounts".into()),
        summary: summary.then(|| Str::shared("SELECT pgbench_accounts")),
        query_masked: Some(Str::shared("SELECT abalance FROM pgbench_accounts WHERE aid = ?")),
        query_raw: Some(Str::shared("SELECT abalance FROM pgbench_accounts WHERE aid = 42")),
        database: Some("shop".into()),
        user: Some("app".into()),
        command_tag: sqlstate.is_none().then(|| Str::lit("SELECT 1")),
        returned_rows: sqlstate.is_none().then_some(1),
        sqlstate: sqlstate.map(Into::into),
        error_severity: sqlstate.map(|_| "ERROR".into()),
        error_message: sqlstate.map(|_| "relation \"pgbench_accounts\" does not exist".into()),
        ..Default::default()
    };
    exchange(c, Protocol::Postgres, start_ns, 700_000, Detail::Postgres(d))
}

/// A MySQL COM_QUERY, `error_code` an ERR packet's.
pub fn mysql_exchange(dir: Direction, error_code: Option<u16>, start_ns: u64) -> Exchange {
    let c = conn("10.200.0.1:40009", "10.200.0.10:3306", Transport::Tcp, dir);
    let d = crate::protocol::mysql::MysqlDetail {
        system: "mariadb".into(),
        server_version: Some("11.8.3-MariaDB".into()),
        command: "COM_QUERY".into(),
        operation: Some("SELECT".into()),
        collection: Some("items".into()),
        summary: Some("SELECT items".into()),
        query_masked: Some(Str::shared("SELECT name, price FROM items WHERE id = ?")),
        query_raw: Some(Str::shared("SELECT name, price FROM items WHERE id = 2")),
        namespace: Some("shop".into()),
        user: Some("app".into()),
        error_code,
        sql_state: error_code.map(|_| "42S02".into()),
        error_message: error_code.map(|_| "Table 'shop.items' doesn't exist".into()),
        returned_rows: error_code.is_none().then_some(1),
        ..Default::default()
    };
    exchange(c, Protocol::Mysql, start_ns, 650_000, Detail::Mysql(d))
}

pub fn kafka_exchange(dir: Direction, error_code: i16, start_ns: u64) -> Exchange {
    let c = conn("10.200.0.1:40006", "10.200.0.9:9092", Transport::Tcp, dir);
    let d = KafkaDetail {
        api_key: 0,
        api_name: "Produce".into(),
        api_version: 9,
        correlation_id: 7,
        client_id: Some("rdkafka".into()),
        topics: vec!["orders".into()],
        error_code,
        error_name: (error_code != 0).then(|| "UNKNOWN_TOPIC_OR_PARTITION".into()),
        header_only: false,
        ..Default::default()
    };
    exchange(c, Protocol::Kafka, start_ns, 3_000_000, Detail::Kafka(d))
}

pub fn icmp_echo(dir: Direction, outcome: Outcome, start_ns: u64) -> Exchange {
    let c = conn("10.200.0.1:0", "10.200.0.2:0", Transport::Icmp, dir);
    let d = IcmpDetail {
        v6: false,
        icmp_type: 8,
        code: 0,
        echo_id: Some(77),
        echo_seq: Some(1),
        original: None,
        name: "echo".into(),
    };
    let mut ex = exchange(c, Protocol::Icmp, start_ns, 80_000, Detail::Icmp(d));
    ex.outcome = outcome;
    ex
}

/// One of each, all captured on the client's side (egress).
pub fn one_of_each(start_ns: u64) -> Vec<Exchange> {
    let e = Direction::Egress;
    let i = Direction::Ingress;
    let mut with_tp = http_exchange(i, "GET", "/users/42", 200, start_ns + 9_000_000);
    if let Detail::Http(h) = &mut with_tp.detail {
        h.trace_headers =
            vec![("traceparent".into(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into())];
        h.query = Some("token=abc&page=2".into());
    }
    vec![
        http_exchange(e, "GET", "/users/42", 200, start_ns),
        http_exchange(i, "POST", "/orders", 503, start_ns + 1_000_000),
        grpc_exchange(e, Some(0), start_ns + 2_000_000),
        grpc_exchange(i, Some(14), start_ns + 3_000_000),
        dns_exchange(e, "example.com", "NOERROR", start_ns + 4_000_000),
        dns_exchange(e, "nope.example.com", "SERVFAIL", start_ns + 5_000_000),
        redis_exchange(e, None, start_ns + 6_000_000),
        redis_exchange(
            e,
            Some("WRONGTYPE Operation against a key holding the wrong kind of value"),
            start_ns + 6_500_000,
        ),
        kafka_exchange(e, 0, start_ns + 7_000_000),
        kafka_exchange(e, 3, start_ns + 7_500_000),
        icmp_echo(e, Outcome::Complete, start_ns + 8_000_000),
        with_tp,
    ]
}
