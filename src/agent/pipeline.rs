//! Wires the stages together: PacketEvent → flow → protocol → Exchange.
//! The same pipeline runs for live capture and pcap replay.
use crate::agent::config::AgentConfig;
use crate::capture::PacketEvent;
use crate::exchange::Exchange;
use crate::flow::{FlowConfig, FlowTable};
use crate::protocol::{DecodeConfig, Dispatcher};

pub struct PacketPipeline {
    pub flows: FlowTable,
    pub dispatcher: Dispatcher,
}

/// Decoder settings derived from the agent configuration.
pub fn decode_config(cfg: &AgentConfig) -> DecodeConfig {
    DecodeConfig {
        request_timeout_ns: cfg.request_timeout_secs.saturating_mul(1_000_000_000),
        max_pending_per_conn: cfg.max_pending_requests.max(1),
        ..DecodeConfig::default()
    }
}

impl PacketPipeline {
    pub fn new(cfg: &AgentConfig) -> Self {
        Self::with_span_fields(cfg, true)
    }

    /// `span_fields`: the decoders read what only spans show (off when the
    /// outputs record metrics only, see `DecodeConfig::span_fields`).
    pub fn with_span_fields(cfg: &AgentConfig, span_fields: bool) -> Self {
        let decode = DecodeConfig { span_fields, ..decode_config(cfg) };
        Self { flows: FlowTable::new(&FlowConfig::from(cfg)), dispatcher: Dispatcher::new(decode) }
    }

    #[inline]
    pub fn push(&mut self, ev: &PacketEvent) {
        self.flows.push(ev, &mut self.dispatcher);
    }

    /// Housekeeping at time `now_ns` (packet time in replay, wall clock live):
    /// close idle flows and time out unanswered requests.
    pub fn tick(&mut self, now_ns: u64) {
        self.flows.expire(now_ns, &mut self.dispatcher);
        self.dispatcher.expire(now_ns);
    }

    /// End of input: close every flow so decoders flush pending requests.
    pub fn finish(&mut self) {
        self.flows.finish(&mut self.dispatcher);
    }

    pub fn take_exchanges(&mut self) -> Vec<Exchange> {
        self.dispatcher.take()
    }

    /// Return the `Vec` of [`PacketPipeline::take_exchanges`] after use (its capacity is reused).
    pub fn recycle_exchanges(&mut self, v: Vec<Exchange>) {
        self.dispatcher.recycle(v);
    }
}

/// The time live housekeeping runs at: the wall clock minus how far packet
/// processing lags behind capture. Flows and pending requests carry packet
/// times, so when the agent falls behind (a burst, an overloaded node) the
/// wall clock alone would close every flow as idle and time out every request
/// before their later packets, still queued, are even looked at.
#[derive(Debug, Default)]
pub struct LagClock {
    lag_ns: u64,
    /// A batch arrived since the last `now`.
    busy: bool,
}

impl LagClock {
    /// A batch was processed at `wall_ns`; `last_packet_ns` is its newest packet.
    pub fn on_batch(&mut self, wall_ns: u64, last_packet_ns: u64) {
        self.lag_ns = wall_ns.saturating_sub(last_packet_ns);
        self.busy = true;
    }

    /// Housekeeping time at `wall_ns`. Without batches since the last call the
    /// queue was empty: processing has caught up.
    pub fn now(&mut self, wall_ns: u64) -> u64 {
        if !std::mem::take(&mut self.busy) {
            self.lag_ns = 0;
        }
        wall_ns.saturating_sub(self.lag_ns)
    }

    pub fn lag_ns(&self) -> u64 {
        self.lag_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lagging_processing_does_not_expire_flows_by_wall_clock() {
        const S: u64 = 1_000_000_000;
        let cfg = AgentConfig { flow_idle_timeout_secs: 120, ..AgentConfig::default() };
        let mut p = PacketPipeline::new(&cfg);
        let mut clock = LagClock::default();
        // Processing runs 300 s behind capture: packets from t=1000 s handled at wall 1300 s.
        let pkt = |ts: u64, seq: u32, flags: u8, data: &'static [u8], to_server: bool| {
            let (c, s): (std::net::IpAddr, std::net::IpAddr) =
                ("10.200.0.1".parse().unwrap(), "10.200.0.2".parse().unwrap());
            let (src, dst, sp, dp) = if to_server { (c, s, 40000, 6379) } else { (s, c, 6379, 40000) };
            PacketEvent {
                ts_ns: ts,
                ifindex: 1,
                direction: crate::capture::Direction::Ingress,
                src,
                dst,
                src_port: sp,
                dst_port: dp,
                l4: crate::capture::L4::Tcp { seq, ack: 0, flags },
                payload_len: data.len() as u32,
                payload: bytes::Bytes::from_static(data),
            }
        };
        p.push(&pkt(1000 * S, 99, 0x02, b"", true));
        p.push(&pkt(1000 * S + 1, 100, 0x18, b"*1\r\n$4\r\nPING\r\n", true));
        clock.on_batch(1300 * S, 1000 * S + 1);
        let now = clock.now(1300 * S);
        assert_eq!(clock.lag_ns(), 300 * S - 1);
        p.tick(now);
        assert_eq!(p.flows.len(), 1, "flow not closed as idle while its packets are still queued");
        // Its response, processed later, still pairs with the request.
        p.push(&pkt(1000 * S + 2, 500, 0x18, b"+PONG\r\n", false));
        clock.on_batch(1300 * S + 1, 1000 * S + 2);
        p.tick(clock.now(1300 * S + 1));
        let ex = p.take_exchanges();
        assert_eq!(ex.len(), 1);
        assert_eq!(ex[0].outcome, crate::exchange::Outcome::Complete);
        // Caught up (no batch since the last tick): back to the wall clock.
        assert_eq!(clock.now(1400 * S), 1400 * S);
        p.tick(1400 * S);
        assert!(p.flows.is_empty(), "idle by then");
    }
    use crate::capture::{Direction, L4};
    use bytes::Bytes;
    use proptest::prelude::*;

    fn arb_packet() -> impl Strategy<Value = PacketEvent> {
        (
            0u8..4,
            0u8..4,
            0u64..50_000_000_000,
            prop_oneof![Just(0u32), Just(u32::MAX - 100), any::<u32>()],
            0u32..3000,
            any::<u32>(),
            any::<u8>(),
            proptest::collection::vec(any::<u8>(), 0..200),
            0u32..400,
            0u8..4,
        )
            .prop_map(|(a, b, ts, base, off, ack, flags, payload, extra, kind)| {
                let host = |x: u8| format!("10.200.0.{}", x % 3).parse().unwrap();
                let l4 = match kind {
                    0 | 1 => L4::Tcp { seq: base.wrapping_add(off), ack, flags: flags & 0x3F },
                    2 => L4::Udp,
                    _ => L4::Icmp { v6: flags & 1 == 1 },
                };
                PacketEvent {
                    ts_ns: ts,
                    ifindex: 1,
                    direction: if flags & 0x80 != 0 { Direction::Egress } else { Direction::Ingress },
                    src: host(a),
                    dst: host(b),
                    src_port: [80, 6379, 40000, 53][a as usize % 4],
                    dst_port: [80, 6379, 40000, 53][b as usize % 4],
                    l4,
                    payload_len: payload.len() as u32 + extra,
                    payload: Bytes::from(payload),
                }
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
        #[test]
        fn arbitrary_packets_never_panic_and_stay_bounded(pkts in proptest::collection::vec(arb_packet(), 1..300)) {
            let cfg = AgentConfig { max_flows: 5, max_flow_buffer_bytes: 2000, flow_idle_timeout_secs: 5, ..AgentConfig::default() };
            let mut p = PacketPipeline::new(&cfg);
            for (i, ev) in pkts.iter().enumerate() {
                p.push(ev);
                prop_assert!(p.flows.len() <= 5);
                prop_assert!(p.flows.buffered_bytes() <= 5 * 2 * (2000 + 300));
                if i % 50 == 0 {
                    p.tick(ev.ts_ns);
                }
            }
            p.finish();
            prop_assert!(p.flows.is_empty());
            let _ = p.take_exchanges();
        }
    }
}
