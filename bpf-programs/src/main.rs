//! TC classifier that copies the L3/L4 facts and the first `snaplen` payload
//! bytes of every TCP/UDP/ICMP(v6) packet into a RingBuf.
//!
//! It only observes: both programs return `TC_ACT_UNSPEC` (= `TCX_NEXT`), so
//! the packet continues to the next program of the TCX chain (or the default
//! action) exactly as if cnflow was not attached.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{__sk_buff, TC_ACT_UNSPEC},
    cty::c_void,
    helpers::{bpf_ktime_get_ns, bpf_loop, bpf_skb_load_bytes},
    macros::{classifier, map},
    maps::{Array, HashMap, PerCpuArray, RingBuf},
    programs::TcContext,
};
use cnflow_common::*;

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(32 * 1024 * 1024, 0);

#[map]
static CONFIG: Array<CaptureConfig> = Array::with_max_entries(1, 0);

/// Ports of the allowlist (value unused). Only consulted with CFG_PORT_ALLOWLIST.
#[map]
static PORT_FILTER: HashMap<u16, u8> = HashMap::with_max_entries(MAX_FILTER_PORTS, 0);

/// Per-CPU staging area: records are assembled here and only the header plus
/// the captured bytes are copied into the ring, so small packets cost ~100
/// bytes of ring space instead of a full `PacketRecord`.
#[map]
static SCRATCH: PerCpuArray<PacketRecord> = PerCpuArray::with_max_entries(1, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NUM_COUNTERS, 0);

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;

// bpf_ringbuf_output / bpf_ringbuf_query flags (uapi/linux/bpf.h).
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;

const IPV6_HOPOPTS: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_DSTOPTS: u8 = 60;

#[classifier]
pub fn cnflow_ingress(ctx: TcContext) -> i32 {
    capture(&ctx, DIR_INGRESS);
    TC_ACT_UNSPEC
}

#[classifier]
pub fn cnflow_egress(ctx: TcContext) -> i32 {
    capture(&ctx, DIR_EGRESS);
    TC_ACT_UNSPEC
}

#[inline(always)]
fn count(idx: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(idx) {
        // Per-CPU slot and TC runs with migration disabled: no atomics needed.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
fn be16(ctx: &TcContext, off: usize) -> Option<u16> {
    ctx.load::<u16>(off).ok().map(u16::from_be)
}

#[inline(always)]
fn byte(ctx: &TcContext, off: usize) -> Option<u8> {
    ctx.load::<u8>(off).ok()
}

/// Parsed headers of one packet, before anything is written to the ring.
struct Parsed {
    family: u8,
    proto: u8,
    src: [u8; 16],
    dst: [u8; 16],
    /// Offset of the L4 header.
    l4_off: usize,
    /// Bytes from the L4 header to the end of the IP payload (without L2 padding).
    l4_len: usize,
}

fn capture(ctx: &TcContext, direction: u8) {
    count(CNT_SEEN);
    let Some(cfg) = CONFIG.get(0) else { return };
    let (snaplen, flags, wakeup_bytes) = (cfg.snaplen, cfg.flags, cfg.wakeup_bytes as u64);
    if snaplen == 0 {
        // Not configured yet by userspace: nothing to do.
        return;
    }
    let Some(p) = parse_l3(ctx) else {
        count(CNT_NOT_IP);
        return;
    };

    let (mut src_port, mut dst_port, mut seq, mut ack, mut tcp_flags) = (0u16, 0u16, 0u32, 0u32, 0u8);
    let hdr_len: usize;
    match p.proto {
        PROTO_TCP => {
            if flags & CFG_TCP == 0 {
                count(CNT_FILTERED);
                return;
            }
            let Some(doff) = byte(ctx, p.l4_off + 12) else { return count(CNT_NOT_IP) };
            hdr_len = ((doff >> 4) as usize) * 4;
            let (Some(sp), Some(dp), Some(s), Some(a), Some(f)) = (
                be16(ctx, p.l4_off),
                be16(ctx, p.l4_off + 2),
                ctx.load::<u32>(p.l4_off + 4).ok(),
                ctx.load::<u32>(p.l4_off + 8).ok(),
                byte(ctx, p.l4_off + 13),
            ) else {
                return count(CNT_NOT_IP);
            };
            (src_port, dst_port, seq, ack, tcp_flags) = (sp, dp, u32::from_be(s), u32::from_be(a), f);
            if hdr_len < 20 || hdr_len > p.l4_len {
                return count(CNT_NOT_IP);
            }
            if p.l4_len == hdr_len && tcp_flags & (TCP_SYN | TCP_FIN | TCP_RST) == 0 {
                // Pure ACKs / window updates carry nothing the pipeline needs.
                return count(CNT_NO_PAYLOAD);
            }
        }
        PROTO_UDP => {
            if flags & CFG_UDP == 0 {
                count(CNT_FILTERED);
                return;
            }
            let (Some(sp), Some(dp)) = (be16(ctx, p.l4_off), be16(ctx, p.l4_off + 2)) else {
                return count(CNT_NOT_IP);
            };
            (src_port, dst_port) = (sp, dp);
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

    if flags & CFG_PORT_ALLOWLIST != 0
        && p.proto != PROTO_ICMP
        && p.proto != PROTO_ICMPV6
        && unsafe { PORT_FILTER.get(src_port).is_none() && PORT_FILTER.get(dst_port).is_none() }
    {
        return count(CNT_FILTERED);
    }

    let Some(rec) = SCRATCH.get_ptr_mut(0) else { return };
    unsafe {
        (*rec).ts_ns = bpf_ktime_get_ns();
        (*rec).ifindex = (*ctx.skb.skb).ifindex;
        (*rec).tcp_ack = ack;
        (*rec).src_port = src_port;
        (*rec).dst_port = dst_port;
        (*rec).direction = direction;
        (*rec).family = p.family;
        (*rec).proto = p.proto;
        (*rec)._pad = [0; 2];
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
        emit(ctx, rec, payload_off, payload_len, seq, tcp_flags, snaplen, wakeup_bytes);
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
        wakeup_bytes,
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
    wakeup_bytes: u64,
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
    emit(&ctx, rec, c.payload_off + off, seg, c.seq.wrapping_add(off as u32), flags, c.snaplen, c.wakeup_bytes);
    if last {
        1
    } else {
        0
    }
}

/// Copies the first bytes of `len` payload bytes at `off` into the staged
/// record and writes header + captured bytes to the ring.
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
    wakeup_bytes: u64,
) {
    // The IP length may claim more than the skb holds (broken packets).
    let in_skb = (ctx.len() as usize).saturating_sub(off);
    let mut cap = len;
    if cap > snaplen as usize {
        cap = snaplen as usize;
    }
    if cap > in_skb {
        cap = in_skb;
    }
    if cap > MAX_PAYLOAD {
        cap = MAX_PAYLOAD;
    }
    let mut n = 0usize;
    unsafe {
        (*rec).payload_len = len as u32;
        (*rec).tcp_seq = seq;
        (*rec).tcp_flags = tcp_flags;
        if cap > 0 {
            // Variable-length copies must be provably within 1..=MAX_PAYLOAD
            // for the verifier, hence the mask on (cap - 1).
            let l = ((cap - 1) & (MAX_PAYLOAD - 1)) + 1;
            let r = bpf_skb_load_bytes(
                ctx.skb.skb as *const __sk_buff as *const _,
                off as u32,
                (*rec).payload.as_mut_ptr() as *mut _,
                l as u32,
            );
            if r == 0 {
                n = l;
            }
        }
        (*rec).cap_len = n as u16;
        if n < len {
            count(CNT_TRUNCATED);
        }
        if n > MAX_PAYLOAD {
            return;
        }
        let size = PACKET_HEADER_LEN + n;
        let bytes = core::slice::from_raw_parts(rec as *const u8, size);
        // A wakeup per record costs an irq_work and a context switch of the
        // reader on the workload's CPU; instead only the record that takes the
        // ring past `wakeup_bytes` wakes it, and the reader drains on a timer.
        let notify = if wakeup_bytes == 0 {
            0
        } else {
            let avail = EVENTS.query(BPF_RB_AVAIL_DATA);
            if avail < wakeup_bytes && avail + size as u64 >= wakeup_bytes {
                BPF_RB_FORCE_WAKEUP
            } else {
                BPF_RB_NO_WAKEUP
            }
        };
        if EVENTS.output::<[u8]>(bytes, notify).is_err() {
            return count(CNT_RING_FULL);
        }
    }
    count(CNT_EMITTED);
}

#[inline(always)]
fn parse_l3(ctx: &TcContext) -> Option<Parsed> {
    let mut l3 = ETH_HLEN;
    let mut ethertype = be16(ctx, 12)?;
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        // VLAN tag still in the frame (not offloaded into skb->vlan_tci).
        ethertype = be16(ctx, 16)?;
        l3 += 4;
    }
    let mut p = Parsed { family: 0, proto: 0, src: [0; 16], dst: [0; 16], l4_off: 0, l4_len: 0 };
    match ethertype {
        ETH_P_IP => {
            let vihl = byte(ctx, l3)?;
            if vihl >> 4 != 4 {
                return None;
            }
            let ihl = ((vihl & 0x0f) as usize) * 4;
            if ihl < 20 {
                return None;
            }
            let mut tot = be16(ctx, l3 + 2)? as usize;
            if tot == 0 {
                // BIG TCP / TSO super-packets leave tot_len 0: use the skb length.
                tot = (ctx.len() as usize).saturating_sub(l3);
            }
            let frag = be16(ctx, l3 + 6)?;
            if frag & 0x1fff != 0 || tot < ihl {
                // Later fragments have no L4 header.
                return None;
            }
            p.family = 4;
            p.proto = byte(ctx, l3 + 9)?;
            let s: [u8; 4] = ctx.load(l3 + 12).ok()?;
            let d: [u8; 4] = ctx.load(l3 + 16).ok()?;
            p.src[..4].copy_from_slice(&s);
            p.dst[..4].copy_from_slice(&d);
            p.l4_off = l3 + ihl;
            p.l4_len = tot - ihl;
        }
        ETH_P_IPV6 => {
            if byte(ctx, l3)? >> 4 != 6 {
                return None;
            }
            let mut plen = be16(ctx, l3 + 4)? as usize;
            if plen == 0 {
                // Jumbogram / BIG TCP.
                plen = (ctx.len() as usize).saturating_sub(l3 + 40);
            }
            let mut next = byte(ctx, l3 + 6)?;
            p.src = ctx.load(l3 + 8).ok()?;
            p.dst = ctx.load(l3 + 24).ok()?;
            let mut off = l3 + 40;
            let mut ext = 0usize;
            // Bounded walk over the usual extension headers.
            for _ in 0..4 {
                match next {
                    IPV6_HOPOPTS | IPV6_ROUTING | IPV6_DSTOPTS => {
                        let n = byte(ctx, off)?;
                        let len = (byte(ctx, off + 1)? as usize + 1) * 8;
                        next = n;
                        off += len;
                        ext += len;
                    }
                    IPV6_FRAGMENT => {
                        let n = byte(ctx, off)?;
                        if be16(ctx, off + 2)? & 0xfff8 != 0 {
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
            p.family = 6;
            p.proto = next;
            p.l4_off = off;
            p.l4_len = plen - ext;
        }
        _ => return None,
    }
    Some(p)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
