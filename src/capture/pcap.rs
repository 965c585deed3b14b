//! pcap / pcapng reader producing [`PacketEvent`]s.
//!
//! Own small reader rather than pcap-file: captures taken with a snap length
//! (`tcpdump -s`) have records whose original length exceeds the snap length,
//! which pcap-file 2.0 rejects. Both byte orders, micro/nanosecond classic
//! pcap, and pcapng sections with several interfaces (each with its own link
//! type, timestamp resolution and offset) are read. Frames that cannot be
//! decoded are counted per reason and skipped; a file that is structurally
//! broken stops with an error naming the byte offset.
use super::frame::{self, FrameMeta, LinkType, Skip};
use super::{Direction, PacketEvent};
use crate::stats::{counter, Counter};
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use std::io::Read;
use std::ops::Range;
use std::path::Path;
use std::sync::LazyLock;

/// Records larger than this are treated as file corruption, not packets.
const MAX_RECORD: usize = 256 * 1024 * 1024;

static PACKETS: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.replay.packets", &[]));
static SKIP_NOT_IP: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.replay.skipped", &[("reason", Skip::NotIp.as_str())]));
static SKIP_OTHER: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.replay.skipped", &[("reason", Skip::OtherTransport.as_str())]));
static SKIP_FRAG: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.replay.skipped", &[("reason", Skip::Fragment.as_str())]));
static SKIP_BAD: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.replay.skipped", &[("reason", Skip::Malformed.as_str())]));
static SKIP_LINK: LazyLock<Counter> =
    LazyLock::new(|| counter("cnflow.replay.skipped", &[("reason", "unsupported_link_type")]));
static TRUNCATED_FILE: LazyLock<Counter> = LazyLock::new(|| counter("cnflow.replay.truncated_file", &[]));

fn count_skip(s: Skip) {
    match s {
        Skip::NotIp => SKIP_NOT_IP.inc(),
        Skip::OtherTransport => SKIP_OTHER.inc(),
        Skip::Fragment => SKIP_FRAG.inc(),
        Skip::Malformed => SKIP_BAD.inc(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endian {
    Little,
    Big,
}

impl Endian {
    fn u16(self, b: &[u8]) -> u16 {
        let a = [b[0], b[1]];
        match self {
            Endian::Little => u16::from_le_bytes(a),
            Endian::Big => u16::from_be_bytes(a),
        }
    }
    fn u32(self, b: &[u8]) -> u32 {
        let a = [b[0], b[1], b[2], b[3]];
        match self {
            Endian::Little => u32::from_le_bytes(a),
            Endian::Big => u32::from_be_bytes(a),
        }
    }
    fn u64(self, b: &[u8]) -> u64 {
        let a: [u8; 8] = b[..8].try_into().unwrap_or([0; 8]);
        match self {
            Endian::Little => u64::from_le_bytes(a),
            Endian::Big => u64::from_be_bytes(a),
        }
    }
}

/// Timestamp unit of an interface: either 10^-n or 2^-n seconds.
#[derive(Debug, Clone, Copy)]
enum TsRes {
    Pow10(u8),
    Pow2(u8),
}

impl TsRes {
    fn to_ns(self, ticks: u64) -> u64 {
        match self {
            TsRes::Pow10(n) if n <= 9 => ticks.saturating_mul(10u64.pow(9 - n as u32)),
            TsRes::Pow10(n) => ticks / 10u64.pow((n as u32 - 9).min(19)),
            TsRes::Pow2(n) => ((ticks as u128 * 1_000_000_000u128) >> n.min(127)) as u64,
        }
    }
}

#[derive(Debug, Clone)]
struct Iface {
    link: Option<LinkType>,
    link_code: u16,
    snaplen: u32,
    res: TsRes,
    offset_s: i64,
    warned: bool,
}

enum Format {
    /// `modified`: Alexey Kuznetsov's patched libpcap format (magic
    /// 0xa1b2cd34), whose record headers carry 8 more bytes (ifindex,
    /// protocol, packet type, padding).
    Pcap {
        endian: Endian,
        res: TsRes,
        link: LinkType,
        modified: bool,
    },
    PcapNg {
        endian: Endian,
        ifaces: Vec<Iface>,
    },
}

/// Reads packets from a pcap or pcapng file (format detected by magic number).
pub struct CaptureReader<R: Read> {
    r: Chunks<R>,
    fmt: Format,
    /// The current record: `r.chunk[rec]`.
    rec: Range<usize>,
    /// Byte offset of the next record (for error messages).
    pos: u64,
    last_ts_ns: u64,
    /// After a structural error nothing more is read.
    failed: bool,
}

impl CaptureReader<std::fs::File> {
    pub fn open(path: &Path) -> Result<Self> {
        let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        Self::new(f).with_context(|| format!("{}", path.display()))
    }
}

/// Bytes read from the file per refill.
const CHUNK: usize = 1 << 20;

/// Reads the file in large chunks and hands out records as ranges of the
/// current chunk, so packet payloads are slices sharing the chunk instead of
/// one allocation and copy per packet.
struct Chunks<R> {
    r: R,
    chunk: Bytes,
    at: usize,
}

impl<R: Read> Chunks<R> {
    fn new(r: R) -> Self {
        Self { r, chunk: Bytes::new(), at: 0 }
    }

    /// Makes `n` bytes available at `at` if the file has them; returns how
    /// many are (fewer than `n` only at the end of the file).
    fn fill(&mut self, n: usize) -> Result<usize> {
        let avail = self.chunk.len() - self.at;
        if avail >= n {
            return Ok(n);
        }
        // Records refer into the old chunk only until the next one is read;
        // payloads handed out keep it alive on their own.
        let want = CHUNK.max(n);
        let mut buf = Vec::with_capacity(want);
        buf.extend_from_slice(&self.chunk[self.at..]);
        // Reads until the chunk is full or the file ends (retrying EINTR).
        (&mut self.r).take((want - avail) as u64).read_to_end(&mut buf)?;
        let len = buf.len();
        self.chunk = Bytes::from(buf);
        self.at = 0;
        Ok(len.min(n))
    }

    /// The next `n` bytes as a range of `chunk`; None on a clean end of file
    /// before the first byte.
    fn take(&mut self, n: usize) -> Result<Option<Range<usize>>> {
        let got = self.fill(n)?;
        if got == 0 && n > 0 {
            return Ok(None);
        }
        if got < n {
            bail!("file ends in the middle of a record ({got} of {n} bytes)");
        }
        let r = self.at..self.at + n;
        self.at += n;
        Ok(Some(r))
    }

    /// Fill `buf` completely; Ok(false) on a clean end of file before the first byte.
    fn read_full(&mut self, buf: &mut [u8]) -> Result<bool> {
        let Some(r) = self.take(buf.len())? else { return Ok(false) };
        buf.copy_from_slice(&self.chunk[r]);
        Ok(true)
    }
}

const PCAPNG_SHB: u32 = 0x0A0D_0D0A;
const PCAPNG_IDB: u32 = 1;
const PCAPNG_OPB: u32 = 2;
const PCAPNG_SPB: u32 = 3;
const PCAPNG_EPB: u32 = 6;
const BOM: u32 = 0x1A2B_3C4D;

impl<R: Read> CaptureReader<R> {
    pub fn new(r: R) -> Result<Self> {
        let mut r = Chunks::new(r);
        for c in [&PACKETS, &SKIP_NOT_IP, &SKIP_OTHER, &SKIP_FRAG, &SKIP_BAD, &SKIP_LINK, &TRUNCATED_FILE] {
            LazyLock::force(c);
        }
        let mut magic = [0u8; 4];
        if !r.read_full(&mut magic)? {
            bail!("empty file");
        }
        let m = u32::from_le_bytes(magic);
        let fmt = match m {
            0xA1B2_C3D4 | 0xA1B2_3C4D | 0xD4C3_B2A1 | 0x4D3C_B2A1 | 0xA1B2_CD34 | 0x34CD_B2A1 => {
                let (endian, nano) = match m {
                    0xA1B2_C3D4 | 0xA1B2_CD34 => (Endian::Little, false),
                    0xA1B2_3C4D => (Endian::Little, true),
                    0xD4C3_B2A1 | 0x34CD_B2A1 => (Endian::Big, false),
                    _ => (Endian::Big, true),
                };
                let modified = m == 0xA1B2_CD34 || m == 0x34CD_B2A1;
                let mut h = [0u8; 20];
                if !r.read_full(&mut h)? {
                    bail!("pcap header is cut off");
                }
                let code = endian.u32(&h[16..20]);
                let link = LinkType::from_code(code).with_context(|| {
                    format!(
                        "unsupported link type {} (supported: Ethernet, Linux SLL/SLL2, raw IP, IPv4, IPv6, loopback, NFLOG)",
                        code & 0xFFFF
                    )
                })?;
                let res = if nano { TsRes::Pow10(9) } else { TsRes::Pow10(6) };
                Format::Pcap { endian, res, link, modified }
            }
            PCAPNG_SHB => Format::PcapNg { endian: Endian::Little, ifaces: Vec::new() },
            _ => bail!("not a pcap or pcapng file (magic {m:#010x})"),
        };
        let mut me = Self { r, fmt, rec: 0..0, pos: 4, last_ts_ns: 0, failed: false };
        match me.fmt {
            Format::Pcap { .. } => me.pos = 24,
            Format::PcapNg { .. } => me.read_shb_rest()?,
        }
        Ok(me)
    }

    /// Link type of a classic pcap file (pcapng: of the first interface seen).
    pub fn link_type(&self) -> Option<LinkType> {
        match &self.fmt {
            Format::Pcap { link, .. } => Some(*link),
            Format::PcapNg { ifaces, .. } => ifaces.first().and_then(|i| i.link),
        }
    }

    /// Next decodable packet. Frames that do not decode are counted and
    /// skipped. `Ok(None)` at the end of the file; a cut-off last record is
    /// counted (`cnflow.replay.truncated_file`) and ends the file.
    pub fn next_event(&mut self) -> Result<Option<PacketEvent>> {
        if self.failed {
            return Ok(None);
        }
        loop {
            let rec = match self.next_frame() {
                Ok(Some(r)) => r,
                Ok(None) => return Ok(None),
                Err(e) if e.downcast_ref::<CutOff>().is_some() => {
                    TRUNCATED_FILE.inc();
                    tracing::warn!("capture file ends in the middle of a record at byte {}", self.pos);
                    return Ok(None);
                }
                Err(e) => {
                    self.failed = true;
                    return Err(e.context(format!("corrupt capture file at byte {}", self.pos)));
                }
            };
            let Some((link, start, end, meta)) = rec else { continue };
            PACKETS.inc();
            let rec = &self.r.chunk[self.rec.clone()];
            match frame::decode_with(link, &rec[start..end], &meta, |p| self.r.chunk.slice_ref(p)) {
                Ok(ev) => {
                    self.last_ts_ns = ev.ts_ns;
                    return Ok(Some(ev));
                }
                Err(s) => count_skip(s),
            }
        }
    }

    /// Reads the next record into `self.rec`. Outer None = end of file; inner
    /// None = a block that is not a packet (or an unsupported interface).
    #[allow(clippy::type_complexity)]
    fn next_frame(&mut self) -> Result<Option<Option<(LinkType, usize, usize, FrameMeta)>>> {
        match &self.fmt {
            Format::Pcap { endian, res, link, modified } => {
                let (endian, res, link, modified) = (*endian, *res, *link, *modified);
                let mut h = [0u8; 24];
                let hlen = if modified { 24 } else { 16 };
                if !self.r.read_full(&mut h[..hlen]).map_err(cut_off)? {
                    return Ok(None);
                }
                let secs = endian.u32(&h[0..4]) as u64;
                let frac = endian.u32(&h[4..8]) as u64;
                let incl = endian.u32(&h[8..12]) as usize;
                let orig = endian.u32(&h[12..16]);
                if incl > MAX_RECORD {
                    bail!("record length {incl} is implausible");
                }
                self.rec = self.r.take(incl).map_err(cut_off)?.ok_or(CutOff)?;
                self.pos += hlen as u64 + incl as u64;
                let ts_ns = secs.saturating_mul(1_000_000_000).saturating_add(res.to_ns(frac));
                let mut meta = FrameMeta { ts_ns, ifindex: 0, direction: None, orig_len: orig.max(incl as u32) };
                if modified {
                    // The extra header's interface index and packet type (PACKET_OUTGOING = 4).
                    meta.ifindex = endian.u32(&h[16..20]);
                    meta.direction = Some(if h[22] == 4 { Direction::Egress } else { Direction::Ingress });
                }
                Ok(Some(Some((link, 0, incl, meta))))
            }
            Format::PcapNg { .. } => self.next_ng_block(),
        }
    }

    #[allow(clippy::type_complexity)]
    fn next_ng_block(&mut self) -> Result<Option<Option<(LinkType, usize, usize, FrameMeta)>>> {
        let Format::PcapNg { endian, .. } = &self.fmt else { unreachable!() };
        let mut endian = *endian;
        let mut h = [0u8; 8];
        if !self.r.read_full(&mut h).map_err(cut_off)? {
            return Ok(None);
        }
        let btype = endian.u32(&h[0..4]);
        if btype == PCAPNG_SHB {
            // A new section may switch byte order: peek at its byte-order magic.
            let mut bom = [0u8; 4];
            // At the end of the file `bom` stays zero and fails the check below.
            self.r.read_full(&mut bom).map_err(cut_off)?;
            endian = if u32::from_le_bytes(bom) == BOM { Endian::Little } else { Endian::Big };
            if endian.u32(&bom) != BOM {
                bail!("pcapng section header has a bad byte-order magic");
            }
            let len = endian.u32(&h[4..8]) as usize;
            if !(28..=MAX_RECORD).contains(&len) || !len.is_multiple_of(4) {
                bail!("pcapng section header length {len} is invalid");
            }
            self.rec = self.r.take(len - 12).map_err(cut_off)?.ok_or(CutOff)?;
            self.pos += len as u64;
            self.fmt = Format::PcapNg { endian, ifaces: Vec::new() };
            return Ok(Some(None));
        }
        let len = endian.u32(&h[4..8]) as usize;
        if !(12..=MAX_RECORD).contains(&len) || !len.is_multiple_of(4) {
            bail!("pcapng block length {len} is invalid");
        }
        // Body plus the trailing length copy.
        self.rec = self.r.take(len - 8).map_err(cut_off)?.ok_or(CutOff)?;
        self.pos += len as u64;
        let body_len = len - 12;
        let Format::PcapNg { ifaces, .. } = &mut self.fmt else { unreachable!() };
        let b = &self.r.chunk[self.rec.clone()][..body_len];
        match btype {
            PCAPNG_IDB => {
                if b.len() < 8 {
                    bail!("pcapng interface block too short");
                }
                let code = endian.u16(&b[0..2]);
                let snaplen = endian.u32(&b[4..8]);
                let mut iface = Iface {
                    link: LinkType::from_code(code as u32),
                    link_code: code,
                    snaplen,
                    res: TsRes::Pow10(6),
                    offset_s: 0,
                    warned: false,
                };
                for (oc, val) in options(endian, &b[8..]) {
                    match (oc, val.len()) {
                        (9, 1..) => {
                            let v = val[0];
                            iface.res = if v & 0x80 == 0 { TsRes::Pow10(v) } else { TsRes::Pow2(v & 0x7F) };
                        }
                        (14, 8..) => iface.offset_s = endian.u64(val) as i64,
                        _ => {}
                    }
                }
                ifaces.push(iface);
                Ok(Some(None))
            }
            PCAPNG_EPB | PCAPNG_OPB => {
                let (ifid, rest) = if btype == PCAPNG_EPB {
                    if b.len() < 20 {
                        bail!("pcapng packet block too short");
                    }
                    (endian.u32(&b[0..4]) as usize, &b[4..])
                } else {
                    if b.len() < 20 {
                        bail!("pcapng packet block too short");
                    }
                    (endian.u16(&b[0..2]) as usize, &b[4..])
                };
                let ts = ((endian.u32(&rest[0..4]) as u64) << 32) | endian.u32(&rest[4..8]) as u64;
                let cap = endian.u32(&rest[8..12]) as usize;
                let orig = endian.u32(&rest[12..16]);
                let data_start = (b.len() - rest.len()) + 16;
                if data_start + cap > body_len {
                    bail!("pcapng packet length {cap} exceeds its block");
                }
                let opts_start = data_start + cap.div_ceil(4) * 4;
                let mut direction = None;
                if btype == PCAPNG_EPB && opts_start < body_len {
                    for (oc, val) in options(endian, &b[opts_start..]) {
                        if oc == 2 && val.len() >= 4 {
                            direction = match endian.u32(val) & 3 {
                                1 => Some(Direction::Ingress),
                                2 => Some(Direction::Egress),
                                _ => None,
                            };
                        }
                    }
                }
                let Some(iface) = ifaces.get_mut(ifid) else {
                    bail!("pcapng packet refers to undeclared interface {ifid}");
                };
                let Some(link) = iface.link else {
                    SKIP_LINK.inc();
                    if !iface.warned {
                        iface.warned = true;
                        tracing::warn!(
                            "pcapng interface {ifid} has unsupported link type {}; its packets are skipped",
                            iface.link_code
                        );
                    }
                    return Ok(Some(None));
                };
                let ts_ns = (iface.res.to_ns(ts) as i64).saturating_add(iface.offset_s.saturating_mul(1_000_000_000));
                let meta = FrameMeta {
                    ts_ns: ts_ns.max(0) as u64,
                    ifindex: ifid as u32,
                    direction,
                    orig_len: orig.max(cap as u32),
                };
                Ok(Some(Some((link, data_start, data_start + cap, meta))))
            }
            PCAPNG_SPB => {
                if b.len() < 4 {
                    bail!("pcapng simple packet block too short");
                }
                let orig = endian.u32(&b[0..4]);
                let Some(iface) = ifaces.first() else {
                    bail!("pcapng simple packet before any interface block");
                };
                let Some(link) = iface.link else {
                    SKIP_LINK.inc();
                    return Ok(Some(None));
                };
                let mut cap = (orig as usize).min(body_len - 4);
                if iface.snaplen != 0 {
                    cap = cap.min(iface.snaplen as usize);
                }
                // Simple packet blocks carry no timestamp: reuse the last one.
                let meta = FrameMeta { ts_ns: self.last_ts_ns, ifindex: 0, direction: None, orig_len: orig };
                Ok(Some(Some((link, 4, 4 + cap, meta))))
            }
            _ => Ok(Some(None)),
        }
    }

    fn read_shb_rest(&mut self) -> Result<()> {
        // Magic already consumed: length, byte-order magic, then the rest.
        let mut h = [0u8; 8];
        if !self.r.read_full(&mut h)? {
            bail!("pcapng section header is cut off");
        }
        let endian = if u32::from_le_bytes(h[4..8].try_into().unwrap()) == BOM {
            Endian::Little
        } else if u32::from_be_bytes(h[4..8].try_into().unwrap()) == BOM {
            Endian::Big
        } else {
            bail!("pcapng section header has a bad byte-order magic");
        };
        let len = endian.u32(&h[0..4]) as usize;
        if !(28..=MAX_RECORD).contains(&len) || !len.is_multiple_of(4) {
            bail!("pcapng section header length {len} is invalid");
        }
        if self.r.take(len - 12)?.is_none() {
            bail!("pcapng section header is cut off");
        }
        self.pos = len as u64;
        self.fmt = Format::PcapNg { endian, ifaces: Vec::new() };
        Ok(())
    }
}

impl<R: Read> Iterator for CaptureReader<R> {
    type Item = Result<PacketEvent>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_event().transpose()
    }
}

/// Marker error: the file ends inside a record (capture interrupted).
#[derive(Debug)]
struct CutOff;

impl std::fmt::Display for CutOff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("file ends in the middle of a record")
    }
}

impl std::error::Error for CutOff {}

fn cut_off(e: anyhow::Error) -> anyhow::Error {
    if e.to_string().contains("middle of a record") {
        CutOff.into()
    } else {
        e
    }
}

/// pcapng options: (code, value) until opt_endofopt or the end of the data.
fn options(endian: Endian, mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let code = endian.u16(&b[0..2]);
        let len = endian.u16(&b[2..4]) as usize;
        if code == 0 || 4 + len > b.len() {
            return None;
        }
        let val = &b[4..4 + len];
        b = &b[(4 + len.div_ceil(4) * 4).min(b.len())..];
        Some((code, val))
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::capture::L4;
    use etherparse::PacketBuilder;

    pub(crate) fn ip_packet(payload: &[u8], seq: u32) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ipv4([10, 200, 0, 1], [10, 200, 0, 2], 64)
            .tcp(40000, 80, seq, 1000)
            .ack(1)
            .write(&mut out, payload)
            .unwrap();
        out
    }

    /// Classic pcap with the given byte order/resolution; records (ts_ns, frame, orig_len).
    pub(crate) fn pcap_file(big: bool, nano: bool, link: u32, recs: &[(u64, Vec<u8>, u32)]) -> Vec<u8> {
        let w32 = |v: u32| if big { v.to_be_bytes() } else { v.to_le_bytes() };
        let w16 = |v: u16| if big { v.to_be_bytes() } else { v.to_le_bytes() };
        let mut f = Vec::new();
        f.extend_from_slice(&w32(if nano { 0xA1B2_3C4D } else { 0xA1B2_C3D4 }));
        f.extend_from_slice(&w16(2));
        f.extend_from_slice(&w16(4));
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&w32(65535));
        f.extend_from_slice(&w32(link));
        for (ts, data, orig) in recs {
            let frac = if nano { ts % 1_000_000_000 } else { ts % 1_000_000_000 / 1000 };
            f.extend_from_slice(&w32((ts / 1_000_000_000) as u32));
            f.extend_from_slice(&w32(frac as u32));
            f.extend_from_slice(&w32(data.len() as u32));
            f.extend_from_slice(&w32(*orig));
            f.extend_from_slice(data);
        }
        f
    }

    fn ng_block(big: bool, btype: u32, body: &[u8]) -> Vec<u8> {
        let w32 = |v: u32| if big { v.to_be_bytes() } else { v.to_le_bytes() };
        let mut body = body.to_vec();
        while !body.len().is_multiple_of(4) {
            body.push(0);
        }
        let len = body.len() as u32 + 12;
        let mut b = Vec::new();
        b.extend_from_slice(&w32(btype));
        b.extend_from_slice(&w32(len));
        b.extend_from_slice(&body);
        b.extend_from_slice(&w32(len));
        b
    }

    /// (interface id, timestamp ticks, frame, original length, epb_flags).
    pub(crate) type Epb = (u32, u64, Vec<u8>, u32, Option<u32>);

    /// pcapng with interfaces (link, tsresol option) and EPBs (iface, ts ticks, frame, orig, flags).
    pub(crate) fn pcapng_file(big: bool, ifaces: &[(u16, Option<u8>)], pkts: &[Epb]) -> Vec<u8> {
        let w32 = |v: u32| if big { v.to_be_bytes() } else { v.to_le_bytes() };
        let w16 = |v: u16| if big { v.to_be_bytes() } else { v.to_le_bytes() };
        let mut shb = Vec::new();
        shb.extend_from_slice(&w32(BOM));
        shb.extend_from_slice(&w16(1));
        shb.extend_from_slice(&w16(0));
        shb.extend_from_slice(&u64::MAX.to_le_bytes());
        let mut f = ng_block(big, PCAPNG_SHB, &shb);
        for (link, res) in ifaces {
            let mut idb = Vec::new();
            idb.extend_from_slice(&w16(*link));
            idb.extend_from_slice(&w16(0));
            idb.extend_from_slice(&w32(262144));
            if let Some(r) = res {
                idb.extend_from_slice(&w16(9));
                idb.extend_from_slice(&w16(1));
                idb.extend_from_slice(&[*r, 0, 0, 0]);
                idb.extend_from_slice(&[0; 4]);
            }
            f.extend(ng_block(big, PCAPNG_IDB, &idb));
        }
        for (ifid, ts, data, orig, flags) in pkts {
            let mut epb = Vec::new();
            epb.extend_from_slice(&w32(*ifid));
            epb.extend_from_slice(&w32((ts >> 32) as u32));
            epb.extend_from_slice(&w32(*ts as u32));
            epb.extend_from_slice(&w32(data.len() as u32));
            epb.extend_from_slice(&w32(*orig));
            epb.extend_from_slice(data);
            while !epb.len().is_multiple_of(4) {
                epb.push(0);
            }
            if let Some(fl) = flags {
                epb.extend_from_slice(&w16(2));
                epb.extend_from_slice(&w16(4));
                epb.extend_from_slice(&w32(*fl));
                epb.extend_from_slice(&[0; 4]);
            }
            f.extend(ng_block(big, PCAPNG_EPB, &epb));
        }
        f
    }

    fn read_all(bytes: Vec<u8>) -> Vec<PacketEvent> {
        CaptureReader::new(std::io::Cursor::new(bytes)).unwrap().map(|r| r.unwrap()).collect()
    }

    #[test]
    fn classic_pcap_all_byte_orders_and_resolutions() {
        let p = ip_packet(b"hello", 1);
        for big in [false, true] {
            for nano in [false, true] {
                let f = pcap_file(big, nano, 101, &[(1_700_000_000_123_456_789, p.clone(), p.len() as u32)]);
                let evs = read_all(f);
                assert_eq!(evs.len(), 1);
                let want = if nano { 1_700_000_000_123_456_789 } else { 1_700_000_000_123_456_000 };
                assert_eq!(evs[0].ts_ns, want, "big={big} nano={nano}");
                assert_eq!(&evs[0].payload[..], b"hello");
            }
        }
    }

    #[test]
    fn record_longer_than_snaplen_is_accepted() {
        let p = ip_packet(&[7u8; 200], 1);
        let f = pcap_file(false, false, 101, &[(0, p[..100].to_vec(), p.len() as u32)]);
        let evs = read_all(f);
        assert_eq!(evs[0].payload_len, 200);
        assert_eq!(evs[0].payload.len(), 60);
    }

    #[test]
    fn pcapng_interfaces_resolution_and_direction() {
        let p = ip_packet(b"abc", 9);
        let mut sll2 = vec![0x08, 0x00, 0, 0, 0, 0, 0, 3, 0, 1, 4, 6, 0, 0, 0, 0, 0, 0, 0, 0];
        sll2.extend_from_slice(&p);
        for big in [false, true] {
            let f = pcapng_file(
                big,
                &[(1, None), (101, Some(9)), (276, Some(0x80 | 10)), (147, None)],
                &[
                    (1, 5_000_000_000, p.clone(), p.len() as u32, Some(2)),
                    (2, 3 * 1024, sll2.clone(), sll2.len() as u32, None),
                    (3, 0, p.clone(), p.len() as u32, None),
                    (0, 7_000_000, vec![0u8; 10], 10, None),
                ],
            );
            let evs = read_all(f);
            assert_eq!(evs.len(), 2);
            assert_eq!(evs[0].ts_ns, 5_000_000_000);
            assert_eq!((evs[0].ifindex, evs[0].direction), (1, Direction::Egress));
            assert_eq!(evs[1].ts_ns, 3_000_000_000);
            assert_eq!((evs[1].ifindex, evs[1].direction), (3, Direction::Egress));
            assert!(matches!(evs[1].l4, L4::Tcp { seq: 9, .. }));
        }
    }

    #[test]
    fn pcapng_sections_switch_byte_order_and_simple_packet_blocks() {
        let p = ip_packet(b"first", 1);
        let mut f = pcapng_file(false, &[(101, None)], &[(0, 1_000_000, p.clone(), p.len() as u32, None)]);
        let q = ip_packet(b"second", 2);
        f.extend(pcapng_file(true, &[(228, None)], &[]));
        let mut spb = (q.len() as u32).to_be_bytes().to_vec();
        spb.extend_from_slice(&q);
        f.extend(ng_block(true, PCAPNG_SPB, &spb));
        let evs = read_all(f);
        assert_eq!(evs.len(), 2);
        assert_eq!(&evs[1].payload[..], b"second");
        // No timestamp in a simple packet block: the previous packet's time.
        assert_eq!(evs[1].ts_ns, evs[0].ts_ns);
    }

    #[test]
    fn unsupported_link_type_and_garbage_are_clear_errors() {
        let e = CaptureReader::new(std::io::Cursor::new(pcap_file(false, false, 147, &[]))).err().unwrap();
        assert!(e.to_string().contains("unsupported link type 147"), "{e}");
        let e = CaptureReader::new(std::io::Cursor::new(b"GET / HTTP/1.1\r\n".to_vec())).err().unwrap();
        assert!(e.to_string().contains("not a pcap"), "{e}");
    }

    #[test]
    fn cut_off_file_ends_cleanly() {
        let p = ip_packet(b"hello", 1);
        let mut f = pcap_file(false, false, 101, &[(0, p.clone(), p.len() as u32), (0, p.clone(), p.len() as u32)]);
        f.truncate(f.len() - 10);
        assert_eq!(read_all(f).len(), 1);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let p = ip_packet(b"hello", 1);
        let f = pcapng_file(false, &[(1, None)], &[(0, 1, p.clone(), p.len() as u32, Some(1))]);
        for i in 0..f.len() {
            let mut g = f.clone();
            g[i] ^= 0xFF;
            if let Ok(r) = CaptureReader::new(std::io::Cursor::new(g.clone())) {
                for ev in r.take(10) {
                    let _ = ev;
                }
            }
            g.truncate(i);
            if let Ok(r) = CaptureReader::new(std::io::Cursor::new(g)) {
                for ev in r.take(10) {
                    let _ = ev;
                }
            }
        }
    }
}
