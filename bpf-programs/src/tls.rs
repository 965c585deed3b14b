//! Uprobes on OpenSSL's `SSL_read`/`SSL_write` (and the `_ex` variants) that
//! copy the plaintext of each call into a RingBuf, plus programs on the
//! `sock_send_length`/`sock_recv_length` raw tracepoints that note which
//! socket the call used, so userspace gets the connection's 5-tuple with the
//! bytes. (fentry on tcp_sendmsg was the first choice; on the test machines
//! loading fentry programs fails with EPERM even as root; raw tracepoints load.)
//!
//! Everything here only reads process and kernel memory; a traced process is
//! never changed (uprobes on a library function cost it a trap per call).
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_user, generated},
    macros::{map, raw_tracepoint, uprobe, uretprobe},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{ProbeContext, RawTracePointContext, RetProbeContext},
};
use cnflow_common::*;

#[map]
static TLS_EVENTS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

#[map]
static TLS_CONFIG: Array<TlsConfig> = Array::with_max_entries(1, 0);

/// Process events for library discovery: `kind << 32 | tgid` (u64), kind
/// 1 = exec, 2 = exit of a process in `TLS_PIDS`, 3 = a thread's first SSL
/// call (4 = `SSL_new`: only on `TLS_HOOK_EVENTS`). Written without waking
/// the reader (a wakeup cost ~16 µs per exec here); it polls every 10 ms,
/// or sleeps until woken once it found nothing for a while (`TLS_IDLE`).
#[map]
static TLS_PROC_EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// `PROC_SSL_NEW` / `PROC_FIRST_CALL` events (same format) while the
/// socket tracepoints are not attached (`TlsConfig::socket_hooks` 0), each
/// waking the reader: a thread of their own attaches the tracepoints, not
/// the discovery thread, which may be busy reading a new process's libraries.
#[map]
static TLS_HOOK_EVENTS: RingBuf = RingBuf::with_byte_size(4096, 0);

/// Processes known (by userspace) to map an attached library: only their
/// exits are reported.
#[map]
static TLS_PIDS: HashMap<u32, u8> = HashMap::with_max_entries(65536, 0);

/// Per reader (`TLS_READER_DATA`, `TLS_READER_PROC`): 1 while it sleeps
/// without its 10 ms poll because it found nothing for a second, so that
/// an idle node does not wake it 100 times a second for nothing (each
/// wakeup of an agent thread costs the node's workloads more than its few
/// µs of CPU on these VMs: README, Session 34). A record written then wakes
/// it (adaptive: only when it has read everything before), and it polls
/// again while records come.
#[map]
static TLS_IDLE: Array<u32> = Array::with_max_entries(2, 0);

/// The submit flag of a record for `reader`: no wakeup while it polls.
#[inline(always)]
fn wake_if_idle(reader: u32) -> u64 {
    match TLS_IDLE.get(reader) {
        Some(v) if *v != 0 => 0,
        _ => BPF_RB_NO_WAKEUP,
    }
}

// bpf_ringbuf_submit / bpf_ringbuf_query flags, as the helpers take them (u64).
const BPF_RB_NO_WAKEUP: u64 = bindings::BPF_RB_NO_WAKEUP as u64;
const BPF_RB_FORCE_WAKEUP: u64 = bindings::BPF_RB_FORCE_WAKEUP as u64;
const BPF_RB_AVAIL_DATA: u64 = bindings::BPF_RB_AVAIL_DATA as u64;
/// Unread bytes in `TLS_EVENTS` past which a record wakes the reader (1/8 of the ring).
const WAKEUP_BYTES: u64 = 1024 * 1024;

const PROC_EXEC: u64 = 1;
const PROC_EXIT: u64 = 2;
const PROC_FIRST_CALL: u64 = 3;
const PROC_SSL_NEW: u64 = 4;


#[map]
static TLS_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(TLS_NUM_COUNTERS, 0);

/// Per thread (pid_tgid) that uses OpenSSL: the arguments of its SSL call
/// in progress, and the last socket it used outside a call. Kept across
/// calls (updated in place: no insert/delete per call, the costliest map
/// operations). LRU: threads that died are pushed out, never fill the map.
#[repr(C)]
#[derive(Clone, Copy)]
struct Call {
    ssl: u64,
    buf: u64,
    /// `size_t *` of SSL_read_ex/SSL_write_ex, 0 for SSL_read/SSL_write.
    nbytes: u64,
    /// `struct sock *` of a TCP send/receive during the call.
    sk: u64,
    /// The socket of the thread's last send/receive outside an SSL call: for
    /// libraries users that feed OpenSSL through memory BIOs (h2o, event
    /// loops) the socket I/O happens around the call, not inside it.
    last_sk: u64,
    /// 1 between the entry and the return probe.
    in_call: u64,
}

/// Stream position per (process, `SSL *`, direction).
#[repr(C)]
#[derive(Clone, Copy)]
struct StreamKey {
    ssl: u64,
    tgid: u32,
    direction: u32,
}

#[map]
static OFFSETS: LruHashMap<StreamKey, u64> = LruHashMap::with_max_entries(65536, 0);

#[map]
static CALLS: LruHashMap<u64, Call> = LruHashMap::with_max_entries(16384, 0);

/// One bit per thread id (modulo 2^20) that has called OpenSSL: the socket
/// tracepoints fire on every send and receive of every process, and for
/// the threads that never called OpenSSL (nearly all of them) one array
/// load now answers what a failed `CALLS` lookup (a hash and a bucket walk,
/// ~half of the ~110 ns per run) answered before. A bit shared with another
/// thread id only costs that thread the lookup. Bits are never cleared.
#[map]
static SSL_THREADS: Array<u64> = Array::with_max_entries(SSL_THREAD_WORDS, 0);
const SSL_THREAD_WORDS: u32 = 1 << 14;

/// The word and bit of a thread id in `SSL_THREADS`.
#[inline(always)]
fn thread_bit(id: u64) -> (u32, u64) {
    let tid = id as u32;
    ((tid >> 6) & (SSL_THREAD_WORDS - 1), 1u64 << (tid & 63))
}

/// `TlsRecord::direction` bit: the socket is the thread's last one outside
/// the call (a guess userspace uses only for a connection it does not know yet).
const DIR_SOCKET_GUESSED: u8 = 0x80;

/// A ring record with room for `N` plaintext bytes: the record is reserved
/// in the ring and filled in place (one copy of the plaintext, from the
/// process straight into the ring); three sizes keep small calls small.
#[repr(C)]
struct Rec<const N: usize> {
    hdr: [u8; TLS_HEADER_LEN],
    data: [u8; N],
}

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

#[inline(always)]
fn count(idx: u32) {
    if let Some(p) = TLS_COUNTERS.get_ptr_mut(idx) {
        unsafe { *p += 1 };
    }
}

#[inline(always)]
fn enter(ctx: &ProbeContext, ex: bool) {
    let Some(cfg) = TLS_CONFIG.get(0) else { return };
    let id = bpf_get_current_pid_tgid();
    if cfg.snaplen == 0 || (id >> 32) as u32 == cfg.own_tgid {
        return;
    }
    let (Some(ssl), Some(buf)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) else { return };
    // SSL_read_ex(ssl, buf, num, size_t *readbytes): the count is arg 3.
    let nbytes = if ex { ctx.arg::<u64>(3).unwrap_or(0) } else { 0 };
    // Checked on every call, not only on the first: a bit lost to a racing
    // read-modify-write on another CPU (no atomics here) comes back with the
    // thread's next call.
    let (word, bit) = thread_bit(id);
    if let Some(w) = SSL_THREADS.get_ptr_mut(word) {
        unsafe {
            if *w & bit == 0 {
                *w |= bit;
            }
        }
    }
    match CALLS.get_ptr_mut(&id) {
        Some(c) => unsafe {
            (*c).ssl = ssl;
            (*c).buf = buf;
            (*c).nbytes = nbytes;
            (*c).sk = 0;
            (*c).in_call = 1;
        },
        None => {
            let _ = CALLS.insert(&id, &Call { ssl, buf, nbytes, sk: 0, last_sk: 0, in_call: 1 }, 0);
            // A thread's first SSL call: userspace reads the process's facts
            // now, while it surely lives (forked servers never exec).
            let _ = TLS_PROC_EVENTS.output::<u64>(&(PROC_FIRST_CALL << 32 | id >> 32), wake_if_idle(TLS_READER_PROC));
            // A connection made before the agent started (no SSL_new seen).
            announce(cfg, PROC_FIRST_CALL << 32 | id >> 32);
        }
    }
}

#[inline(always)]
fn leave(ctx: &RetProbeContext, ex: bool, direction: u8) {
    let id = bpf_get_current_pid_tgid();
    let Some(c) = CALLS.get_ptr_mut(&id) else { return };
    let call = unsafe { *c };
    if call.in_call == 0 {
        return;
    }
    unsafe {
        (*c).in_call = 0;
        (*c).sk = 0;
    }
    count(TLS_CNT_CALLS);
    let ret: i64 = ctx.ret::<i64>();
    // SSL_read/SSL_write return an int byte count; the _ex variants 1 on success.
    let ret = ret as i32;
    let len: u64 = if ex {
        if ret != 1 || call.nbytes == 0 {
            0
        } else {
            unsafe { bpf_probe_read_user(call.nbytes as *const u64) }.unwrap_or(0)
        }
    } else if ret > 0 {
        ret as u64
    } else {
        0
    };
    if len == 0 {
        return count(TLS_CNT_NO_DATA);
    }
    let Some(cfg) = TLS_CONFIG.get(0) else { return };
    // The stream position, counted also for records the ring has no room for.
    let key = StreamKey { ssl: call.ssl, tgid: (id >> 32) as u32, direction: direction as u32 };
    let off = match OFFSETS.get_ptr_mut(&key) {
        Some(p) => unsafe {
            let o = *p;
            *p = o + len;
            o
        },
        None => {
            let _ = OFFSETS.insert(&key, &len, 0);
            0
        }
    };
    let (sk, dir) = if call.sk != 0 { (call.sk, direction) } else { (call.last_sk, direction | DIR_SOCKET_GUESSED) };
    // An HTTP/1 response written in one call (or read in one): its head is
    // what the decoder needs, the body beyond the limit becomes a gap it
    // only counts (as for captured packets: `emit` in main.rs).
    let mut limit = cfg.snaplen as usize;
    let head = cfg.http_response_snaplen as usize;
    let mut cut = false;
    if len > HTTP_HEAD_MIN as u64
        && head != 0
        && head < limit
        && len > head as u64
        && unsafe { bpf_probe_read_user(call.buf as *const [u8; 8]) }.is_ok_and(is_http1_status_start)
    {
        limit = head;
        cut = true;
        count(TLS_CNT_HTTP_BODY_CUT);
    }
    let mut cap = len as usize;
    if cap > limit {
        cap = limit;
    }
    if cap > MAX_PAYLOAD {
        cap = MAX_PAYLOAD;
    }
    let h = Header { id, ssl: call.ssl, buf: call.buf, sk, dir, len, off, cap, cut };
    unsafe {
        if cap <= 256 {
            emit::<256>(&h, cfg)
        } else if cap <= 1024 {
            emit::<1024>(&h, cfg)
        } else {
            emit::<MAX_PAYLOAD>(&h, cfg)
        }
    }
}

/// What `emit` writes besides the plaintext.
struct Header {
    id: u64,
    ssl: u64,
    buf: u64,
    sk: u64,
    dir: u8,
    len: u64,
    off: u64,
    /// Bytes to copy, 1..=N.
    cap: usize,
    /// `cap` is an HTTP/1 response head's limit, not the snap length.
    cut: bool,
}

#[inline(always)]
unsafe fn emit<const N: usize>(h: &Header, cfg: &TlsConfig) {
    let Some(mut e) = TLS_EVENTS.reserve::<Rec<N>>(0) else {
        return count(TLS_CNT_RING_FULL);
    };
    let rec = e.as_mut_ptr() as *mut TlsRecord;
    (*rec).ts_ns = bpf_ktime_get_ns();
    (*rec).pid_tgid = h.id;
    (*rec).ssl = h.ssl;
    (*rec).len = h.len.min(u32::MAX as u64) as u32;
    (*rec).direction = h.dir;
    (*rec).offset = h.off;
    (*rec).tls_version = bpf_probe_read_user(h.ssl as *const i32).map(|v| v as u16).unwrap_or(0);
    (*rec)._pad = [0; 4];
    (*rec).family = 0;
    (*rec).local_port = 0;
    (*rec).remote_port = 0;
    (*rec).local_addr = [0; 16];
    (*rec).remote_addr = [0; 16];
    if h.sk != 0 {
        read_sock(rec, h.sk as *const u8, cfg);
    }
    if (*rec).family == 0 {
        count(TLS_CNT_NO_SOCKET);
    }
    // Masked so the verifier sees 1..=N (N a power of two).
    let l = ((h.cap.wrapping_sub(1)) & (N - 1)) + 1;
    let data = (rec as *mut u8).add(TLS_HEADER_LEN);
    let n = if generated::bpf_probe_read_user(data as *mut _, l as u32, h.buf as *const _) == 0 {
        l
    } else {
        count(TLS_CNT_READ_FAILED);
        0
    };
    (*rec).cap_len = n as u32;
    if (n as u64) < h.len && !h.cut {
        count(TLS_CNT_TRUNCATED);
    }
    // No wakeup per record: waking the reader from the probe costs several
    // µs per call when it sleeps (measured: 6–11 µs per return probe at
    // 300 req/s); it drains every 10 ms instead, and is woken only once
    // the ring is filling up, or when it went idle (`TLS_IDLE`).
    let notify =
        if TLS_EVENTS.query(BPF_RB_AVAIL_DATA) > WAKEUP_BYTES { 0 } else { wake_if_idle(TLS_READER_DATA) };
    e.submit(notify);
    count(TLS_CNT_EMITTED);
}

/// The 5-tuple of `struct sock_common` (daddr@0, rcv_saddr@4, dport@12,
/// num@14, family@16; the IPv6 addresses at offsets from userspace's config).
#[inline(always)]
unsafe fn read_sock(rec: *mut TlsRecord, sk: *const u8, cfg: &TlsConfig) {
    let Ok(family) = bpf_probe_read_kernel(sk.add(16) as *const u16) else { return };
    let (Ok(dport), Ok(num)) = (bpf_probe_read_kernel(sk.add(12) as *const u16), bpf_probe_read_kernel(sk.add(14) as *const u16))
    else {
        return;
    };
    if family == AF_INET {
        let (Ok(d), Ok(s)) = (bpf_probe_read_kernel(sk as *const [u8; 4]), bpf_probe_read_kernel(sk.add(4) as *const [u8; 4]))
        else {
            return;
        };
        (&mut (*rec).remote_addr)[..4].copy_from_slice(&d);
        (&mut (*rec).local_addr)[..4].copy_from_slice(&s);
    } else if family == AF_INET6 && cfg.v6_daddr_off != 0 && cfg.v6_saddr_off != 0 {
        let dof = (cfg.v6_daddr_off & 0x3ff) as usize;
        let sof = (cfg.v6_saddr_off & 0x3ff) as usize;
        let (Ok(d), Ok(s)) =
            (bpf_probe_read_kernel(sk.add(dof) as *const [u8; 16]), bpf_probe_read_kernel(sk.add(sof) as *const [u8; 16]))
        else {
            return;
        };
        (*rec).remote_addr = d;
        (*rec).local_addr = s;
    } else {
        return;
    }
    (*rec).family = family as u8;
    (*rec).remote_port = u16::from_be(dport);
    (*rec).local_port = num;
}

/// Remembers the socket a thread inside an SSL call sends or receives on.
/// The `sock_send_length` / `sock_recv_length` tracepoints (Linux ≥ 6.3)
/// fire for every socket send/receive, `write()`/`read()` on a socket
/// included; as raw tracepoints (attached by name, no tracefs needed) their
/// first argument is the `struct sock *`.
#[inline(always)]
fn note_sock(ctx: &RawTracePointContext) {
    let id = bpf_get_current_pid_tgid();
    // Threads that never called OpenSSL: one array load.
    let (word, bit) = thread_bit(id);
    match SSL_THREADS.get(word) {
        Some(w) if *w & bit != 0 => {}
        _ => return,
    }
    let Some(c) = CALLS.get_ptr_mut(&id) else { return };
    let sk: u64 = ctx.arg::<u64>(0);
    unsafe {
        if (*c).in_call != 0 {
            (*c).sk = sk;
        } else {
            (*c).last_sk = sk;
        }
    }
}

#[raw_tracepoint(tracepoint = "sock_send_length")]
pub fn cnflow_sock_send(ctx: RawTracePointContext) -> i32 {
    note_sock(&ctx);
    0
}

#[raw_tracepoint(tracepoint = "sock_recv_length")]
pub fn cnflow_sock_recv(ctx: RawTracePointContext) -> i32 {
    note_sock(&ctx);
    0
}

/// A process image was replaced (exec): userspace looks at its mappings
/// once the dynamic loader has had time to map its libraries. The task is
/// the thread group leader by then (exec from another thread makes it so).
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn cnflow_proc_exec(_ctx: RawTracePointContext) -> i32 {
    let tgid = bpf_get_current_pid_tgid() >> 32;
    let _ = TLS_PROC_EVENTS.output::<u64>(&(PROC_EXEC << 32 | tgid), wake_if_idle(TLS_READER_PROC));
    0
}

/// A task exits; reported only for the leader of a process userspace
/// counts as a user of an attached library (thread exits are not process exits).
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn cnflow_proc_exit(_ctx: RawTracePointContext) -> i32 {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    if id as u32 != tgid || unsafe { TLS_PIDS.get(&tgid) }.is_none() {
        return 0;
    }
    let _ = TLS_PIDS.remove(&tgid);
    let _ = TLS_PROC_EVENTS.output::<u64>(&(PROC_EXIT << 32 | tgid as u64), wake_if_idle(TLS_READER_PROC));
    0
}

/// A connection object is created: userspace attaches the socket
/// tracepoints now, a handshake (a network round trip at least) before the
/// connection's first SSL_read/SSL_write needs them. Attached only until
/// then, so it costs nothing afterwards.
#[uprobe]
pub fn cnflow_ssl_new(_ctx: ProbeContext) -> u32 {
    let tgid = bpf_get_current_pid_tgid() >> 32;
    if let Some(cfg) = TLS_CONFIG.get(0) {
        if cfg.own_tgid as u64 != tgid {
            announce(cfg, PROC_SSL_NEW << 32 | tgid);
        }
    }
    0
}

/// A use of TLS, for the thread that attaches the socket tracepoints (until
/// they are: `cfg.socket_hooks`).
#[inline(always)]
fn announce(cfg: &TlsConfig, event: u64) {
    if cfg.socket_hooks == 0 {
        let _ = TLS_HOOK_EVENTS.output::<u64>(&event, BPF_RB_FORCE_WAKEUP);
    }
}

#[uprobe]
pub fn cnflow_ssl_write(ctx: ProbeContext) -> u32 {
    enter(&ctx, false);
    0
}

#[uretprobe]
pub fn cnflow_ssl_write_ret(ctx: RetProbeContext) -> u32 {
    leave(&ctx, false, TLS_DIR_WRITE);
    0
}

#[uprobe]
pub fn cnflow_ssl_write_ex(ctx: ProbeContext) -> u32 {
    enter(&ctx, true);
    0
}

#[uretprobe]
pub fn cnflow_ssl_write_ex_ret(ctx: RetProbeContext) -> u32 {
    leave(&ctx, true, TLS_DIR_WRITE);
    0
}

#[uprobe]
pub fn cnflow_ssl_read(ctx: ProbeContext) -> u32 {
    enter(&ctx, false);
    0
}

#[uretprobe]
pub fn cnflow_ssl_read_ret(ctx: RetProbeContext) -> u32 {
    leave(&ctx, false, TLS_DIR_READ);
    0
}

#[uprobe]
pub fn cnflow_ssl_read_ex(ctx: ProbeContext) -> u32 {
    enter(&ctx, true);
    0
}

#[uretprobe]
pub fn cnflow_ssl_read_ex_ret(ctx: RetProbeContext) -> u32 {
    leave(&ctx, true, TLS_DIR_READ);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
