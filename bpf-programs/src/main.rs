//! TC classifier that copies the L3/L4 facts and the first `snaplen` payload
//! bytes of every TCP/UDP/ICMP(v6) packet into a RingBuf.
//!
//! It only observes: both programs return `TC_ACT_UNSPEC` (= `TCX_NEXT`), so
//! the packet continues to the next program of the TCX chain (or the default
//! action) exactly as if cnflow was not attached.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{self, __sk_buff, TC_ACT_UNSPEC},
    btf_maps::{ArrayOfMaps, RingBuf},
    cty::c_void,
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_loop, bpf_ringbuf_query, bpf_skb_load_bytes},
    macros::{btf_map, classifier, map},
    maps::{Array, HashMap, PerCpuArray},
    programs::TcContext,
};
use cnflow_common::*;

/// The record rings: userspace creates `CaptureConfig::rings` of them
/// (one per CPU, up to `MAX_RINGS`) and a CPU writes to ring `cpu % rings`.
/// One ring shared by every CPU made each reservation pull the ring's lock,
/// producer position and last record header from the CPU that wrote
/// before: with a client and a server on two cores, `__bpf_ringbuf_reserve`
/// was the largest cost of the program in a live profile, and the same
/// workload with every producer on one core cost ~130 ns less per packet.
/// The template's size is a placeholder: ring sizes are not part of an
/// inner map's type.
#[btf_map]
static RINGS: ArrayOfMaps<RingBuf<u8, 4096>, { MAX_RINGS as usize }> = ArrayOfMaps::new();

type Ring = RingBuf<u8, 4096>;

#[map]
static CONFIG: Array<CaptureConfig> = Array::with_max_entries(1, 0);

/// Ports of the allowlist (value unused). Only consulted with CFG_PORT_ALLOWLIST.
#[map]
static PORT_FILTER: HashMap<u16, u8> = HashMap::with_max_entries(MAX_FILTER_PORTS, 0);

/// Per-CPU staging area: the record header is assembled here and copied
/// into each ring entry. Its `payload` holds the first `WIN` bytes of the
/// packet: one `bpf_skb_load_bytes` per packet, after which the headers are
/// parsed with plain loads (each helper call costs ~15 ns; a TCP/IPv4 packet
/// needed 14), next to the header so the program touches fewer cache lines.
/// Payload bytes go from the skb straight into the ring.
#[map]
static SCRATCH: PerCpuArray<PacketRecord> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU scratch words the parser's offsets go through (see `launder`).
#[map]
static OPAQUE: PerCpuArray<[u32; 4]> = PerCpuArray::with_max_entries(1, 0);

/// Record bytes this CPU wrote since it last forced a reader wakeup, when
/// that was, and the records written since (see `wake_flag`).
#[map]
static PRODUCED: PerCpuArray<[u64; 3]> = PerCpuArray::with_max_entries(1, 0);

/// Least time between two wakeups forced by one CPU: bounds the wakeups
/// (an irq_work each on the workload's CPU) when a small
/// CNFLOW_RING_WAKEUP_BYTES meets bulk traffic (~8 full records per 16 KiB).
const WAKEUP_MIN_GAP_NS: u64 = 100_000;

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NUM_COUNTERS, 0);

/// Header bytes copied at once: Ethernet + VLAN + IPv6 + TCP with options
/// (≤ 138) and VXLAN/Geneve-in-IPv4/IPv6 (≤ 226 without Geneve options) fit;
/// anything beyond is read with `bpf_skb_load_bytes` as before.
const WIN: usize = 256;
// A 16-byte read at any masked window offset stays inside `payload`.
const _: () = assert!(WIN + 16 <= MAX_PAYLOAD);
const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
/// Transparent Ethernet bridging: an Ethernet frame inside GRE or Geneve.
const ETH_P_TEB: u16 = 0x6558;

// bpf_ringbuf_submit / bpf_ringbuf_query flags, as the helpers take them (u64).
const BPF_RB_NO_WAKEUP: u64 = bindings::BPF_RB_NO_WAKEUP as u64;
const BPF_RB_FORCE_WAKEUP: u64 = bindings::BPF_RB_FORCE_WAKEUP as u64;
const BPF_RB_AVAIL_DATA: u64 = bindings::BPF_RB_AVAIL_DATA as u64;

const IPV6_HOPOPTS: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_DSTOPTS: u8 = 60;

#[classifier]
pub fn cnflow_ingress(ctx: TcContext) -> i32 {
    count(CNT_SEEN);
    // Called from here, not from `capture`: the two subprograms' stacks
    // together would pass the verifier's 512-byte limit for a call chain.
    if fast_tcp(ctx.skb.skb, DIR_INGRESS as u32) == 0 {
        capture(&ctx, DIR_INGRESS);
    }
    TC_ACT_UNSPEC
}

#[classifier]
pub fn cnflow_egress(ctx: TcContext) -> i32 {
    count(CNT_SEEN);
    if fast_tcp(ctx.skb.skb, DIR_EGRESS as u32) == 0 {
        capture(&ctx, DIR_EGRESS);
    }
    TC_ACT_UNSPEC
}

#[inline(always)]
fn count(idx: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(idx) {
        // Per-CPU slot and TC runs with migration disabled: no atomics needed.
        unsafe { *p += 1 };
    }
}

/// The packet: its first `wlen` bytes in `win`, the rest read from the skb.
struct Pkt<'a> {
    ctx: &'a TcContext,
    win: *const u8,
    wlen: usize,
}

impl Pkt<'_> {
    /// `N` bytes at `off`, from the window when they lie inside it.
    #[inline(always)]
    fn bytes<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        if off + N <= self.wlen {
            // The mask only restates `off < WIN` for the verifier.
            Some(unsafe { core::ptr::read_unaligned(self.win.add(off & (WIN - 1)) as *const [u8; N]) })
        } else {
            self.ctx.load::<[u8; N]>(off).ok()
        }
    }

    #[inline(always)]
    fn byte(&self, off: usize) -> Option<u8> {
        if off < self.wlen {
            Some(unsafe { *self.win.add(off & (WIN - 1)) })
        } else {
            self.ctx.load::<u8>(off).ok()
        }
    }

    #[inline(always)]
    fn be16(&self, off: usize) -> Option<u16> {
        self.bytes::<2>(off).map(u16::from_be_bytes)
    }

    fn len(&self) -> usize {
        self.ctx.len() as usize
    }
}

/// Plain TCP: untagged IPv4 without options or IPv6 without extension
/// headers, headers in the linear data, no GSO packet to cut. Parsed with
/// direct packet access and emitted without the window copy of the full
/// parse (`bpf_skb_load_bytes` of up to 256 bytes: ~20% of the program's
/// time in a live profile), and pure ACKs dropped before anything else.
/// Returns 1 when the packet was handled (emitted or counted), 0 for the
/// full parse, which classifies everything this path declines exactly as
/// before (it also handles every packet this path takes the same way).
///
/// A subprogram (not inlined) called by the entry programs before
/// `capture`: inlined, its early exits would fall into the full parse with
/// different register states (the verifier went past its 1M-instruction
/// limit that way for the pure-ACK check alone); after a call only the
/// (immediately tested) return value differs.
#[inline(never)]
fn fast_tcp(skb: *mut __sk_buff, direction: u32) -> u32 {
    let ctx = TcContext::new(skb);
    let Some(cfg) = CONFIG.get(0) else { return 0 };
    let (snaplen, flags, wakeup) = (cfg.snaplen, cfg.flags, wake_limits(cfg));
    if snaplen == 0 {
        // Not configured yet by userspace: nothing to do.
        return 1;
    }
    if flags & CFG_TCP == 0 {
        return 0;
    }
    // The header is staged as it is parsed (nothing in it is used before the
    // decision to emit, and the slot is rewritten for every packet).
    let Some(rec) = SCRATCH.get_ptr_mut(0) else { return 1 };
    let (data, end) = (ctx.data(), ctx.data_end());
    // Byte loads: the frame has no alignment guarantee.
    let b = |off: usize| unsafe { *((data + off) as *const u8) };
    // Ethernet + IPv4 + 14 bytes of TCP, checked at once.
    if data + ETH_HLEN + 20 + 14 > end {
        return 0;
    }
    let ethertype = u16::from_be_bytes([b(12), b(13)]);
    let l3 = ETH_HLEN;
    let (family, l4, l4_len) = if ethertype == ETH_P_IP {
        if b(l3) != 0x45 || b(l3 + 9) != PROTO_TCP || (b(l3 + 6) & 0x1f) | b(l3 + 7) != 0 {
            return 0;
        }
        let mut tot = u16::from_be_bytes([b(l3 + 2), b(l3 + 3)]) as usize;
        if tot == 0 {
            tot = (ctx.len() as usize).saturating_sub(l3);
        }
        if tot < 20 {
            return 0;
        }
        unsafe {
            (*rec).src_addr = v4_in_16([b(l3 + 12), b(l3 + 13), b(l3 + 14), b(l3 + 15)]);
            (*rec).dst_addr = v4_in_16([b(l3 + 16), b(l3 + 17), b(l3 + 18), b(l3 + 19)]);
        }
        (4u8, l3 + 20, tot - 20)
    } else if ethertype == ETH_P_IPV6 {
        if data + l3 + 40 + 14 > end {
            return 0;
        }
        if b(l3) >> 4 != 6 || b(l3 + 6) != PROTO_TCP {
            return 0;
        }
        let mut plen = u16::from_be_bytes([b(l3 + 4), b(l3 + 5)]) as usize;
        if plen == 0 {
            plen = (ctx.len() as usize).saturating_sub(l3 + 40);
        }
        for i in 0..16 {
            unsafe {
                (*rec).src_addr[i] = b(l3 + 8 + i);
                (*rec).dst_addr[i] = b(l3 + 24 + i);
            }
        }
        (6u8, l3 + 40, plen)
    } else {
        return 0;
    };
    let hdr_len = ((b(l4 + 12) >> 4) as usize) * 4;
    if hdr_len < 20 || hdr_len > l4_len {
        return 0;
    }
    let tcp_flags = b(l4 + 13);
    if l4_len == hdr_len && tcp_flags & (TCP_SYN | TCP_FIN | TCP_RST) == 0 {
        // Pure ACKs / window updates carry nothing the pipeline needs.
        count(CNT_NO_PAYLOAD);
        return 1;
    }
    let payload_len = l4_len - hdr_len;
    if flags & CFG_SPLIT_GSO != 0 {
        let gso = unsafe { (*skb).gso_size } as usize;
        if gso != 0 && payload_len > gso {
            return 0;
        }
    }
    let src_port = u16::from_be_bytes([b(l4), b(l4 + 1)]);
    let dst_port = u16::from_be_bytes([b(l4 + 2), b(l4 + 3)]);
    if port_filtered(flags, src_port, dst_port) {
        count(CNT_FILTERED);
        return 1;
    }
    let seq = u32::from_be_bytes([b(l4 + 4), b(l4 + 5), b(l4 + 6), b(l4 + 7)]);
    let ack = u32::from_be_bytes([b(l4 + 8), b(l4 + 9), b(l4 + 10), b(l4 + 11)]);
    stage_header(rec, skb, direction as u8, family, PROTO_TCP, src_port, dst_port, ack);
    emit(&ctx, rec, l4 + hdr_len, payload_len, seq, tcp_flags, snaplen, wakeup, (0, tcp_flags));
    1
}

/// With a port allowlist configured: neither port is on it.
#[inline(always)]
fn port_filtered(flags: u32, src_port: u16, dst_port: u16) -> bool {
    flags & CFG_PORT_ALLOWLIST != 0
        && unsafe { PORT_FILTER.get(src_port).is_none() && PORT_FILTER.get(dst_port).is_none() }
}

/// Stages the record header fields both parses fill alike (each writes the
/// addresses itself: the short path as it reads them).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn stage_header(
    rec: *mut PacketRecord,
    skb: *mut __sk_buff,
    direction: u8,
    family: u8,
    proto: u8,
    src_port: u16,
    dst_port: u16,
    ack: u32,
) {
    unsafe {
        (*rec).ts_ns = bpf_ktime_get_ns();
        (*rec).ifindex = (*skb).ifindex;
        (*rec).tcp_ack = ack;
        (*rec).src_port = src_port;
        (*rec).dst_port = dst_port;
        (*rec).direction = direction;
        (*rec).family = family;
        (*rec).proto = proto;
        (*rec).http_cut = 0;
        (*rec)._pad = 0;
    }
}

/// Parsed headers of one packet, before anything is written to the ring.
/// Laid out by hand, 8-byte aligned: with Rust's layout the zeroed
/// addresses started at odd offsets and LLVM initialised them through two
/// calls to a `memset` subprogram per packet.
#[repr(C, align(8))]
struct Parsed {
    src: [u8; 16],
    dst: [u8; 16],
    /// Offset of the L4 header.
    l4_off: usize,
    /// Bytes from the L4 header to the end of the IP payload (without L2 padding).
    l4_len: usize,
    family: u8,
    proto: u8,
}

fn capture(ctx: &TcContext, direction: u8) {
    let Some(cfg) = CONFIG.get(0) else { return };
    let (snaplen, flags, wakeup) = (cfg.snaplen, cfg.flags, wake_limits(cfg));
    if snaplen == 0 {
        // Not configured yet by userspace: nothing to do.
        return;
    }
    let Some(rec) = SCRATCH.get_ptr_mut(0) else { return };
    let win = unsafe { (*rec).payload.as_mut_ptr() };
    let skb_len = ctx.len() as usize;
    let mut wlen = 0usize;
    if skb_len > 0 {
        // Within 1..=WIN for the verifier (mask), and never past the skb end.
        let l = if skb_len > WIN { WIN } else { ((skb_len - 1) & (WIN - 1)) + 1 };
        let r = unsafe { bpf_skb_load_bytes(ctx.skb.skb as *const _, 0, win as *mut c_void, l as u32) };
        if r == 0 {
            wlen = l;
        }
    }
    let pk = Pkt { ctx, win: win as *const u8, wlen };
    let Some(mut p) = parse_l3(&pk) else {
        count(CNT_NOT_IP);
        return;
    };
    // Overlay traffic (VXLAN, Geneve, GRE, IPIP, SIT on a node's underlay
    // interface): the flows worth decoding are inside. The plain path pays
    // one compare of the IP protocol (and a port load for UDP).
    if matches!(p.proto, PROTO_UDP | PROTO_GRE | PROTO_IPIP | PROTO_IPV6) {
        let Some(inner) = decapsulate(&pk, &p) else {
            count(CNT_NOT_IP);
            return;
        };
        if let Some(inner) = inner {
            p = inner;
        }
    }
    // Offsets and lengths differ on every parsing path (IPv6 extension
    // headers, tunnel options); passed through map memory they become plain
    // unknown values, so the verifier checks the code below once instead of
    // once per path (it exceeded the 1M-instruction limit otherwise).
    let Some(opaque) = OPAQUE.get_ptr_mut(0) else { return };
    p.l4_off = launder(opaque, 0, p.l4_off);
    p.l4_len = launder(opaque, 1, p.l4_len);

    let (mut src_port, mut dst_port, mut seq, mut ack, mut tcp_flags) = (0u16, 0u16, 0u32, 0u32, 0u8);
    let hdr_len: usize;
    match p.proto {
        PROTO_TCP => {
            if flags & CFG_TCP == 0 {
                count(CNT_FILTERED);
                return;
            }
            // Ports, seq, ack, data offset and flags: the first 14 bytes.
            let Some(h) = pk.bytes::<14>(p.l4_off) else { return count(CNT_NOT_IP) };
            hdr_len = ((h[12] >> 4) as usize) * 4;
            tcp_flags = h[13];
            if hdr_len < 20 || hdr_len > p.l4_len {
                return count(CNT_NOT_IP);
            }
            if p.l4_len == hdr_len && tcp_flags & (TCP_SYN | TCP_FIN | TCP_RST) == 0 {
                // Pure ACKs / window updates carry nothing the pipeline needs.
                return count(CNT_NO_PAYLOAD);
            }
            src_port = u16::from_be_bytes([h[0], h[1]]);
            dst_port = u16::from_be_bytes([h[2], h[3]]);
            seq = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
            ack = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
        }
        PROTO_UDP => {
            if flags & CFG_UDP == 0 {
                count(CNT_FILTERED);
                return;
            }
            let Some(h) = pk.bytes::<4>(p.l4_off) else { return count(CNT_NOT_IP) };
            src_port = u16::from_be_bytes([h[0], h[1]]);
            dst_port = u16::from_be_bytes([h[2], h[3]]);
            hdr_len = 8;
            if p.l4_len < hdr_len {
                return count(CNT_NOT_IP);
            }
        }
        PROTO_ICMP | PROTO_ICMPV6 => {
            if flags & CFG_ICMP == 0 {
                count(CNT_FILTERED);
                return;
            }
            // The whole ICMP message (type, code, checksum, body) is the payload.
            hdr_len = 0;
        }
        _ => return count(CNT_NOT_IP),
    }

    if p.proto != PROTO_ICMP && p.proto != PROTO_ICMPV6 && port_filtered(flags, src_port, dst_port) {
        return count(CNT_FILTERED);
    }

    stage_header(rec, ctx.skb.skb, direction, p.family, p.proto, src_port, dst_port, ack);
    unsafe {
        (*rec).src_addr = p.src;
        (*rec).dst_addr = p.dst;
    }
    let payload_off = p.l4_off + hdr_len;
    let payload_len = p.l4_len - hdr_len;
    // TSO/GSO (egress) and GRO (ingress) hand the hook one skb standing for
    // many wire packets. Cut it back into those packets, so the snap length
    // applies per wire packet and a large response is not reduced to its
    // first `snaplen` bytes followed by a gap the decoders cannot cross.
    let gso = if flags & CFG_SPLIT_GSO != 0 && (p.proto == PROTO_TCP || p.proto == PROTO_UDP) {
        unsafe { (*ctx.skb.skb).gso_size as usize }
    } else {
        0
    };
    if gso == 0 || payload_len <= gso {
        emit(ctx, rec, payload_off, payload_len, seq, tcp_flags, snaplen, wakeup, (0, tcp_flags));
        return;
    }
    count(CNT_GSO_SPLIT);
    // bpf_loop: the verifier checks the callback once instead of unrolling
    // 64 copies of `emit` (which exceeds its complexity limit).
    let mut segs = Segments {
        skb: ctx.skb.skb,
        payload_off,
        payload_len,
        gso,
        nr: payload_len.div_ceil(gso).min(MAX_GSO_SEGS) as u32,
        seq,
        tcp_flags,
        snaplen,
        wakeup,
    };
    unsafe {
        bpf_loop(segs.nr, segment as *mut c_void, &mut segs as *mut Segments as *mut c_void, 0);
    }
}

/// What [`segment`] needs to cut one GSO/GRO packet into wire segments.
#[repr(C)]
struct Segments {
    skb: *mut __sk_buff,
    payload_off: usize,
    payload_len: usize,
    gso: usize,
    nr: u32,
    seq: u32,
    tcp_flags: u8,
    snaplen: u32,
    /// See [`wake_limits`].
    wakeup: u64,
}

/// bpf_loop callback: emits wire segment `i` (0 = continue, 1 = stop).
#[inline(never)]
extern "C" fn segment(i: u64, c: *mut c_void) -> i64 {
    let c = unsafe { &*(c as *const Segments) };
    let Some(rec) = SCRATCH.get_ptr_mut(0) else { return 1 };
    let off = (i as usize).wrapping_mul(c.gso);
    if off >= c.payload_len {
        return 1;
    }
    // Beyond MAX_GSO_SEGS the rest goes into one record (cut by the snap length).
    let last = i as u32 + 1 >= c.nr || c.payload_len - off <= c.gso;
    let seg = if last { c.payload_len - off } else { c.gso };
    // On the wire only the last segment carries PSH/FIN (RST never comes with GSO).
    let flags = if last { c.tcp_flags } else { c.tcp_flags & !(TCP_FIN | TCP_PSH) };
    let ctx = TcContext::new(c.skb);
    // The bytes after this segment: a segment `emit` cuts to an HTTP/1
    // response head stands for them too (they are body either way), so the
    // loop stops there, one record and one gap instead of a record per
    // wire segment carrying body only.
    let rest = c.payload_len - off - seg;
    let after = (rest, c.tcp_flags);
    emit(&ctx, rec, c.payload_off + off, seg, c.seq.wrapping_add(off as u32), flags, c.snaplen, c.wakeup, after);
    if last || unsafe { (*rec).http_cut } != 0 {
        1
    } else {
        0
    }
}

/// A ring entry: the record header, then room for `N` payload bytes.
#[repr(C)]
struct Entry<const N: usize> {
    head: [u8; PACKET_HEADER_LEN],
    payload: [u8; N],
}

/// Writes a record for the `len` payload bytes at `off` (the header staged
/// in `rec`) with the first of them copied straight from the skb into the
/// ring. The verifier only accepts constant reservation sizes, so the entry
/// is the smallest size class that holds the captured bytes; userspace reads
/// `cap_len` of them and ignores the rest of the class. `after`: the bytes
/// of a GSO packet after this segment and the packet's TCP flags ((0, the
/// flags) for a packet emitted whole).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn emit(
    ctx: &TcContext,
    rec: *mut PacketRecord,
    off: usize,
    len: usize,
    seq: u32,
    tcp_flags: u8,
    snaplen: u32,
    wakeup: u64,
    (rest, packet_flags): (usize, u8),
) {
    // An HTTP/1 response's body is what makes its segments long, and the
    // decoder only counts body bytes (a gap inside a Content-Length or
    // chunk body is harmless to it): copying a 1448-byte segment cost
    // ~280 ns more than a 64-byte one in `bench_ebpf.sh`, and the reader
    // copies and touches the bytes again. Small segments pay one compare.
    // The flag goes through the staged header (map memory, not tracked by
    // the verifier) rather than a variable, and the limit is dead after the
    // clamps below, so both outcomes leave the same state: a branch that
    // set `cap` itself doubled the paths checked after it, past the
    // verifier's 1M-instruction limit.
    let mut limit = snaplen as usize;
    unsafe {
        (*rec).http_cut = 0;
        (*rec).payload_len = len as u32;
        (*rec).tcp_seq = seq;
        (*rec).tcp_flags = tcp_flags;
    }
    if len > HTTP_HEAD_MIN && unsafe { (*rec).proto } == PROTO_TCP {
        if let Some(cfg) = CONFIG.get(0) {
            let head = cfg.http_response_snaplen as usize;
            if head != 0 && head < limit && len > head && starts_http1_response(ctx, off) {
                limit = head;
                // A GSO packet's `rest` bytes after this segment are this
                // record's too (body either way), with the packet's flags
                // (PSH/FIN are those of its last segment).
                unsafe {
                    (*rec).http_cut = 1;
                    (*rec).payload_len = (len + rest) as u32;
                    (*rec).tcp_flags = packet_flags;
                }
                count(CNT_HTTP_BODY_CUT);
            }
        }
    }
    // The IP length may claim more than the skb holds (broken packets).
    let in_skb = (ctx.len() as usize).saturating_sub(off);
    let mut cap = len;
    if cap > limit {
        cap = limit;
    }
    if cap > in_skb {
        cap = in_skb;
    }
    if cap > MAX_PAYLOAD {
        cap = MAX_PAYLOAD;
    }
    let Some(ring) = cpu_ring() else {
        count(CNT_RING_FULL);
        return;
    };
    // The record's own timestamp serves as the clock for the wakeup spacing.
    let notify = wake_flag(ring, cap, wakeup, unsafe { (*rec).ts_ns });
    let n = if cap <= 64 {
        put::<64>(ring, ctx, rec, off, cap, notify)
    } else if cap <= 256 {
        put::<256>(ring, ctx, rec, off, cap, notify)
    } else if cap <= 512 {
        put::<512>(ring, ctx, rec, off, cap, notify)
    } else if cap <= 1024 {
        put::<1024>(ring, ctx, rec, off, cap, notify)
    } else if cap <= 1536 {
        put::<1536>(ring, ctx, rec, off, cap, notify)
    } else if cap <= 2048 {
        put::<2048>(ring, ctx, rec, off, cap, notify)
    } else {
        put::<MAX_PAYLOAD>(ring, ctx, rec, off, cap, notify)
    };
    match n {
        None => count(CNT_RING_FULL),
        Some(n) => {
            if n < len && unsafe { (*rec).http_cut } == 0 {
                count(CNT_TRUNCATED);
            }
            count(CNT_EMITTED);
        }
    }
}

/// The payload at `off` starts with an HTTP/1.0 or HTTP/1.1 status line.
#[inline(always)]
fn starts_http1_response(ctx: &TcContext, off: usize) -> bool {
    // A match, not `is_ok_and`: that form cost the verifier ~140k more
    // instructions (795k against 657k of its 1M limit).
    match ctx.load::<[u8; 8]>(off) {
        Ok(b) => is_http1_status_start(b),
        Err(_) => false,
    }
}

/// This CPU's ring (`RINGS`). None only before userspace filled the array
/// (the program is configured after the rings exist).
#[inline(always)]
fn cpu_ring() -> Option<&'static Ring> {
    let rings = CONFIG.get(0)?.rings;
    // bpf_get_smp_processor_id is inlined by the kernel on x86-64.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    RINGS.get(cpu.checked_rem(rings)?)
}

/// The wakeup thresholds of `cfg` in one word (low half: record bytes,
/// high half: records), so they travel through `emit` and the GSO loop's
/// context as one argument.
#[inline(always)]
fn wake_limits(cfg: &CaptureConfig) -> u64 {
    cfg.wakeup_bytes as u64 | (cfg.wakeup_records as u64) << 32
}

/// The `bpf_ringbuf_submit` flag for a record of `cap` payload bytes written
/// at `now` (its timestamp, CLOCK_MONOTONIC like the spacing).
/// A wakeup per record costs an irq_work and a context switch of the reader
/// on the workload's CPU, so records are written without one and the reader
/// drains on a timer; each CPU forces a wakeup once it has written the
/// byte limit (1/8 of the ring divided by the CPU count, or a smaller
/// CNFLOW_RING_WAKEUP_BYTES) or, while early wakeups are on, the record
/// limit (CNFLOW_RING_WAKEUP_RECORDS: short, frequent drains on saturated
/// nodes whose length follows the reader's work, which is per record) since
/// its last one and [`WAKEUP_MIN_GAP_NS`] have passed, so the ring never
/// takes more than 1/8 of its size without the reader being woken.
/// Per-CPU sums instead of asking the ring how full it is
/// (`bpf_ringbuf_query`) for every record: the query reads the consumer
/// position, a cache line the reader writes from another CPU (~10–20 ns per
/// record in `bench_ebpf.sh`). It is asked once the byte sum reaches its
/// limit: the reader may have drained since this CPU's last wakeup (on its
/// timer, or woken by another CPU, since a drain empties every ring), and a
/// wakeup then would find little to read (the self-IPI of the irq_work,
/// with the reader's wakeup, is charged to the packet that forces it: ~13
/// µs on these VMs). The sums are then cut to what is still unread and no
/// wakeup is forced. Not for the record limit: skipping those wakeups too
/// cut the agent's CPU by ~8% and the eBPF time by ~15 ns per packet on
/// saturated wrk, but wrk's throughput was lower in 12 of 13 alternated
/// pairs (−1.5 points; README, "Session 31"): there the wakeups pace
/// short drains rather than guard the ring.
#[inline(always)]
fn wake_flag(ring: &Ring, cap: usize, wakeup: u64, now: u64) -> u64 {
    let (max_bytes, max_records) = (wakeup & 0xffff_ffff, wakeup >> 32);
    if max_bytes == 0 {
        return 0;
    }
    let Some(p) = PRODUCED.get_ptr_mut(0) else { return BPF_RB_NO_WAKEUP };
    // Per-CPU slot, TC runs with migration disabled: no atomics needed.
    unsafe {
        let mut n = (*p)[0] + (cap + PACKET_HEADER_LEN) as u64;
        let mut r = (*p)[2] + 1;
        let over = |n: u64, r: u64| n >= max_bytes || (max_records != 0 && r >= max_records);
        if over(n, r) && now.wrapping_sub((*p)[1]) >= WAKEUP_MIN_GAP_NS {
            // The record limit paces the busy mode's drains: it forces a
            // wakeup even when the reader has drained since (see above).
            if max_records == 0 || r < max_records {
                let unread = bpf_ringbuf_query(ring as *const Ring as *mut c_void, BPF_RB_AVAIL_DATA);
                if unread < n {
                    // Records of this CPU still unread, assuming the reader took
                    // them in order (it does) and they were alike in size.
                    r = r * unread / n;
                    n = unread;
                }
            }
            if over(n, r) {
                *p = [0, now, 0];
                count(CNT_WAKEUP_FORCED);
                return BPF_RB_FORCE_WAKEUP;
            }
            count(CNT_WAKEUP_NOT_NEEDED);
        }
        *p = [n, (*p)[1], r];
        BPF_RB_NO_WAKEUP
    }
}

/// One record in an `Entry<N>` (`cap` ≤ N): the captured byte count, or
/// None when the ring is full.
#[inline(always)]
fn put<const N: usize>(
    ring: &Ring,
    ctx: &TcContext,
    rec: *const PacketRecord,
    off: usize,
    cap: usize,
    notify: u64,
) -> Option<usize> {
    let mut entry = ring.reserve_untyped::<Entry<N>>(0)?;
    let e = entry.as_mut_ptr();
    let mut n = 0usize;
    if cap > 0 {
        // Provably within 1..=N for the verifier: a power-of-two mask, then
        // the clamp for the 1536 class.
        let mut l = ((cap - 1) & (N.next_power_of_two() - 1)) + 1;
        if l > N {
            l = N;
        }
        let r = unsafe {
            bpf_skb_load_bytes(ctx.skb.skb as *const _, off as u32, (*e).payload.as_mut_ptr() as *mut c_void, l as u32)
        };
        if r == 0 {
            n = l;
        }
    }
    // `cap_len` goes straight into the entry after the copy of the staged
    // header. Staged first (a 2-byte store, then the 8-byte loads of the
    // copy over it), the copy's load could not be forwarded from the store
    // and waited for every older store to commit, the payload just written
    // into cold ring memory included: the hottest instruction of the
    // program in a live profile (~13% of its time). The other per-record
    // fields are staged before the reservation, when no ring store is
    // pending yet.
    unsafe {
        let h = (*e).head.as_mut_ptr();
        copy_head(rec as *const u8, h);
        (*(h as *mut PacketRecord)).cap_len = n as u16;
    }
    entry.submit(notify);
    Some(n)
}

/// Copies the record header (`PACKET_HEADER_LEN` = 68 bytes) in 8- and
/// 4-byte words. `copy_nonoverlapping` on the `[u8]` head compiled to 68
/// byte loads and 68 byte stores (its alignment is 1); both ends are 8-byte
/// aligned (the per-CPU staging value, a ring entry).
#[inline(always)]
unsafe fn copy_head(src: *const u8, dst: *mut u8) {
    const WORDS: usize = PACKET_HEADER_LEN / 8;
    const _: () = assert!(PACKET_HEADER_LEN == WORDS * 8 + 4);
    let (s, d) = (src as *const u64, dst as *mut u64);
    for i in 0..WORDS {
        unsafe { *d.add(i) = *s.add(i) };
    }
    unsafe { *(dst.add(WORDS * 8) as *mut u32) = *(src.add(WORDS * 8) as *const u32) };
}

/// Ethernet header at `off` (one VLAN tag allowed): offset of the L3 header and its EtherType.
#[inline(always)]
fn parse_eth(pk: &Pkt, off: usize) -> Option<(usize, u16)> {
    let mut l3 = off + ETH_HLEN;
    let mut ethertype = pk.be16(off + 12)?;
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        // VLAN tag still in the frame (not offloaded into skb->vlan_tci).
        ethertype = pk.be16(off + 16)?;
        l3 += 4;
    }
    Some((l3, ethertype))
}

#[inline(always)]
fn parse_l3(pk: &Pkt) -> Option<Parsed> {
    let (l3, ethertype) = parse_eth(pk, 0)?;
    parse_ip(pk, l3, ethertype)
}

/// The packet inside a tunnel packet `p`: offset of its IP header, its
/// EtherType and the counter to bump; None when `p` is not one of the
/// overlay encapsulations or its header lacks their evidence (same rules as
/// replay's `capture::frame::tunnel_inner`).
#[inline(always)]
fn tunnel_inner(pk: &Pkt, proto: u8, l4_off: usize) -> Option<(usize, u16, u32)> {
    match proto {
        PROTO_UDP => {
            let dport = pk.be16(l4_off + 2)?;
            let h = l4_off + 8;
            if dport == VXLAN_PORT || dport == VXLAN_LINUX_PORT {
                // RFC 7348 flags: only the I bit.
                if pk.byte(h)? != 0x08 {
                    return None;
                }
                let (l3, ethertype) = parse_eth(pk, h + 8)?;
                Some((l3, ethertype, CNT_DECAP_VXLAN))
            } else if dport == GENEVE_PORT {
                let vl = pk.byte(h)?;
                if vl >> 6 != 0 {
                    return None;
                }
                let proto = pk.be16(h + 2)?;
                let start = h + 8 + (vl & 0x3f) as usize * 4;
                by_ethertype(pk, proto, start, CNT_DECAP_GENEVE)
            } else {
                None
            }
        }
        PROTO_GRE => {
            let flags = pk.be16(l4_off)? as usize;
            // Routing (deprecated) or version ≠ 0 (PPTP): not an overlay.
            if flags & 0x4007 != 0 {
                return None;
            }
            let proto = pk.be16(l4_off + 2)?;
            // 4 bytes each for checksum (C), key (K) and sequence number (S),
            // added without branches (fewer verifier paths).
            let words = ((flags >> 15) & 1) + ((flags >> 13) & 1) + ((flags >> 12) & 1);
            by_ethertype(pk, proto, l4_off + 4 + words * 4, CNT_DECAP_GRE)
        }
        PROTO_IPIP => Some((l4_off, ETH_P_IP, CNT_DECAP_IPIP)),
        PROTO_IPV6 => Some((l4_off, ETH_P_IPV6, CNT_DECAP_SIT)),
        _ => None,
    }
}

/// Removes up to `MAX_DECAP_DEPTH` tunnel headers from `outer`. Some(None):
/// not a tunnel packet; Some(Some(inner)): the innermost packet; None: a
/// tunnel whose inner packet is not IP or cut short.
#[inline(always)]
fn decapsulate(pk: &Pkt, outer: &Parsed) -> Option<Option<Parsed>> {
    let opaque = OPAQUE.get_ptr_mut(0)?;
    let (mut proto, mut l4_off) = (outer.proto, outer.l4_off);
    let (mut l3, mut ethertype, mut found) = (0usize, 0u16, false);
    for _ in 0..MAX_DECAP_DEPTH {
        let Some((in_l3, in_ethertype, counter)) = tunnel_inner(pk, proto, l4_off) else { break };
        count(counter);
        found = true;
        // Every tunnel layout gives another offset: merged here (see `launder`).
        l3 = launder(opaque, 2, in_l3);
        ethertype = in_ethertype;
        // Only the protocol and L4 offset, to look for a further tunnel; the
        // innermost packet gets the full parse below.
        (proto, l4_off) = ip_proto(pk, l3, ethertype)?;
    }
    if !found {
        return Some(None);
    }
    parse_ip(pk, l3, ethertype).map(Some)
}

/// IP protocol and L4 offset of the IP header at `l3` (IPv6 extension
/// headers are not walked: a tunnel behind them is not decapsulated).
#[inline(always)]
fn ip_proto(pk: &Pkt, l3: usize, ethertype: u16) -> Option<(u8, usize)> {
    if ethertype == ETH_P_IP {
        let vihl = pk.byte(l3)?;
        if vihl >> 4 != 4 {
            return None;
        }
        Some((pk.byte(l3 + 9)?, l3 + ((vihl & 0x0f) as usize) * 4))
    } else if ethertype == ETH_P_IPV6 {
        if pk.byte(l3)? >> 4 != 6 {
            return None;
        }
        Some((pk.byte(l3 + 6)?, l3 + 40))
    } else {
        None
    }
}

/// `v` written to and read back from map memory: the verifier then knows
/// only "some u32", which lets it merge parsing paths that differ in `v`.
#[inline(always)]
fn launder(slot: *mut [u32; 4], i: usize, v: usize) -> usize {
    unsafe {
        let p = (slot as *mut u32).add(i & 3);
        core::ptr::write_volatile(p, v as u32);
        core::ptr::read_volatile(p) as usize
    }
}

/// A tunnel payload named by EtherType: IP directly, or an Ethernet frame (TEB).
#[inline(always)]
fn by_ethertype(pk: &Pkt, proto: u16, off: usize, counter: u32) -> Option<(usize, u16, u32)> {
    match proto {
        ETH_P_IP | ETH_P_IPV6 => Some((off, proto, counter)),
        ETH_P_TEB => {
            let (l3, ethertype) = parse_eth(pk, off)?;
            Some((l3, ethertype, counter))
        }
        _ => None,
    }
}

/// IPv4/IPv6 header at `l3` (EtherType `ethertype`) down to the L4 header.
#[inline(always)]
fn parse_ip(pk: &Pkt, l3: usize, ethertype: u16) -> Option<Parsed> {
    match ethertype {
        ETH_P_IP => {
            let vihl = pk.byte(l3)?;
            if vihl >> 4 != 4 {
                return None;
            }
            let ihl = ((vihl & 0x0f) as usize) * 4;
            if ihl < 20 {
                return None;
            }
            let mut tot = pk.be16(l3 + 2)? as usize;
            if tot == 0 {
                // BIG TCP / TSO super-packets leave tot_len 0: use the skb length.
                tot = pk.len().saturating_sub(l3);
            }
            let frag = pk.be16(l3 + 6)?;
            if frag & 0x1fff != 0 || tot < ihl {
                // Later fragments have no L4 header.
                return None;
            }
            let proto = pk.byte(l3 + 9)?;
            let s: [u8; 4] = pk.bytes(l3 + 12)?;
            let d: [u8; 4] = pk.bytes(l3 + 16)?;
            Some(Parsed { src: v4_in_16(s), dst: v4_in_16(d), l4_off: l3 + ihl, l4_len: tot - ihl, family: 4, proto })
        }
        ETH_P_IPV6 => {
            if pk.byte(l3)? >> 4 != 6 {
                return None;
            }
            let mut plen = pk.be16(l3 + 4)? as usize;
            if plen == 0 {
                // Jumbogram / BIG TCP.
                plen = pk.len().saturating_sub(l3 + 40);
            }
            let mut next = pk.byte(l3 + 6)?;
            let src = pk.bytes(l3 + 8)?;
            let dst = pk.bytes(l3 + 24)?;
            let mut off = l3 + 40;
            let mut ext = 0usize;
            // Bounded walk over the usual extension headers.
            for _ in 0..4 {
                match next {
                    IPV6_HOPOPTS | IPV6_ROUTING | IPV6_DSTOPTS => {
                        let n = pk.byte(off)?;
                        let len = (pk.byte(off + 1)? as usize + 1) * 8;
                        next = n;
                        off += len;
                        ext += len;
                    }
                    IPV6_FRAGMENT => {
                        let n = pk.byte(off)?;
                        if pk.be16(off + 2)? & 0xfff8 != 0 {
                            return None;
                        }
                        next = n;
                        off += 8;
                        ext += 8;
                    }
                    _ => break,
                }
            }
            if ext > plen {
                return None;
            }
            Some(Parsed { src, dst, l4_off: off, l4_len: plen - ext, family: 6, proto: next })
        }
        _ => None,
    }
}

/// An IPv4 address in the first 4 of 16 bytes, the rest zero, as two
/// 8-byte words: zeroing a `[u8; 16]` and copying 4 bytes in compiled to
/// two calls to a `memset` subprogram per packet.
#[inline(always)]
fn v4_in_16(a: [u8; 4]) -> [u8; 16] {
    (u32::from_ne_bytes(a) as u128).to_ne_bytes()
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
