//! Best-effort Kafka body decoding for every version, written against the
//! protocol's message definitions: only topic names and error codes are
//! extracted, and a body cut short (snap length, buffer bound, lost bytes)
//! yields whatever was read before the cut.
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

/// Topics kept per exchange.
const MAX_TOPICS: usize = 32;
/// Array lengths above this are treated as garbage.
const MAX_ARRAY: usize = 100_000;

pub type Uuid = [u8; 16];

/// What a body told us.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Info {
    pub topics: Vec<String>,
    /// First non-zero error code.
    pub error: i16,
    /// Produce `acks` (requests only).
    pub acks: Option<i16>,
    /// The body ended before everything we wanted was read.
    pub cut: bool,
    /// Record sets seen (Produce requests, Fetch responses): their records
    /// and bytes. Meaningful only when `has_records` and not `cut`.
    pub has_records: bool,
    pub records: u64,
    pub record_bytes: u64,
}

impl Info {
    fn topic(&mut self, name: &str) {
        if self.topics.len() < MAX_TOPICS && !self.topics.iter().any(|t| t == name) {
            self.topics.push(name.to_string());
        }
    }
    fn error(&mut self, code: i16) {
        if self.error == 0 && code != 0 {
            self.error = code;
        }
    }
}

/// How a skipped field is encoded.
#[derive(Debug, Clone, Copy)]
enum Enc {
    /// Fixed width in bytes (INT8 1, INT32 4, INT64 8...).
    Fixed(usize),
    /// Nullable string (compact in flexible versions); must be UTF-8.
    Str,
    /// Array of fixed-width ints.
    Ints(usize),
}

/// A field the decoder skips, present in versions `min..=max` of its
/// message. A message's fields between the ones we read are written as one
/// table, in wire order, from the protocol's message definitions: the table
/// reads like the JSON schema's `versions` ranges and keeps each gate in one
/// place instead of a chain of `if v >= n` reads.
#[derive(Debug, Clone, Copy)]
struct Field {
    enc: Enc,
    min: i16,
    max: i16,
}

impl Field {
    const fn all(enc: Enc) -> Self {
        Self { enc, min: 0, max: i16::MAX }
    }
    /// Present from version `v` on.
    const fn since(self, v: i16) -> Self {
        Self { min: v, ..self }
    }
    /// Present up to and including version `v`.
    const fn until(self, v: i16) -> Self {
        Self { max: v, ..self }
    }
    /// Present in version `v` only.
    const fn only(self, v: i16) -> Self {
        self.since(v).until(v)
    }
}

const I8: Field = Field::all(Enc::Fixed(1));
const I32: Field = Field::all(Enc::Fixed(4));
const I64: Field = Field::all(Enc::Fixed(8));
/// Two INT64s (e.g. ListOffsets timestamp + offset).
const I64X2: Field = Field::all(Enc::Fixed(16));
const STR: Field = Field::all(Enc::Str);
const I32_ARRAY: Field = Field::all(Enc::Ints(4));
const I64_ARRAY: Field = Field::all(Enc::Ints(8));

/// Cursor over a body; `flex` selects the compact encodings of KIP-482.
pub struct Reader<'a> {
    b: &'a [u8],
    p: usize,
    flex: bool,
}

impl<'a> Reader<'a> {
    pub fn new(b: &'a [u8], flex: bool) -> Self {
        Self { b, p: 0, flex }
    }
    pub fn pos(&self) -> usize {
        self.p
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.p..self.p.checked_add(n)?)?;
        self.p += n;
        Some(s)
    }
    pub fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }
    pub fn i8(&mut self) -> Option<i8> {
        self.take(1).map(|s| s[0] as i8)
    }
    pub fn i16(&mut self) -> Option<i16> {
        self.take(2).map(|s| i16::from_be_bytes([s[0], s[1]]))
    }
    pub fn i32(&mut self) -> Option<i32> {
        self.take(4).map(|s| i32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    pub fn uvarint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.i8()? as u8;
            v |= ((b & 0x7f) as u64) << (7 * i);
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    /// Nullable string (Some(None) = null).
    pub fn string(&mut self) -> Option<Option<&'a str>> {
        let len = if self.flex {
            match self.uvarint()? {
                0 => return Some(None),
                n => (n - 1) as usize,
            }
        } else {
            match self.i16()? {
                -1 => return Some(None),
                n if n < 0 => return None,
                n => n as usize,
            }
        };
        let s = self.take(len)?;
        std::str::from_utf8(s).ok().map(Some)
    }
    /// Nullable array length.
    pub fn array(&mut self) -> Option<Option<usize>> {
        let n = if self.flex {
            match self.uvarint()? {
                0 => return Some(None),
                n => n - 1,
            }
        } else {
            match self.i32()? {
                -1 => return Some(None),
                n if n < 0 => return None,
                n => n as u64,
            }
        };
        if n as usize > MAX_ARRAY {
            return None;
        }
        Some(Some(n as usize))
    }
    /// A record set (nullable bytes): adds its size and the records of its
    /// complete batches to `info`.
    pub fn records(&mut self, info: &mut Info) -> Option<()> {
        let n = if self.flex {
            usize::try_from(self.uvarint()?.saturating_sub(1)).ok()?
        } else {
            match self.i32()? {
                -1 => 0,
                n if n < 0 => return None,
                n => n as usize,
            }
        };
        let set = self.take(n)?;
        info.has_records = true;
        info.record_bytes += n as u64;
        info.records += count_records(set);
        Some(())
    }
    /// Nullable bytes as a slice (empty when null).
    pub fn blob(&mut self) -> Option<&'a [u8]> {
        let n = if self.flex {
            usize::try_from(self.uvarint()?.saturating_sub(1)).ok()?
        } else {
            match self.i32()? {
                -1 => 0,
                n if n < 0 => return None,
                n => n as usize,
            }
        };
        self.take(n)
    }
    /// Tagged fields (flexible versions only).
    pub fn tags(&mut self) -> Option<()> {
        if !self.flex {
            return Some(());
        }
        let n = self.uvarint()?;
        if n > MAX_ARRAY as u64 {
            return None;
        }
        for _ in 0..n {
            self.uvarint()?;
            let size = self.uvarint()?;
            self.skip(usize::try_from(size).ok()?)?;
        }
        Some(())
    }
    pub fn uuid(&mut self) -> Option<Uuid> {
        self.take(16).map(|s| s.try_into().unwrap_or([0; 16]))
    }
    fn int_array(&mut self, width: usize) -> Option<()> {
        let n = self.array()?.unwrap_or(0);
        self.skip(n.checked_mul(width)?)
    }
    /// Skip the fields of `table` that version `v` carries, in order.
    fn skip_fields(&mut self, v: i16, table: &[Field]) -> Option<()> {
        for f in table.iter().filter(|f| (f.min..=f.max).contains(&v)) {
            match f.enc {
                Enc::Fixed(n) => self.skip(n)?,
                Enc::Str => {
                    self.string()?;
                }
                Enc::Ints(w) => self.int_array(w)?,
            }
        }
        Some(())
    }
}

/// Records in a record set. Record batches (magic 2, KIP-98) carry their
/// count in the batch header (`records_count`, byte 57); the older message
/// sets (magic 0/1) have one entry per message, a compressed wrapper counting
/// as one. Both put the magic byte at offset 16 and the entry size at 8. A
/// trailing partial batch, which a broker sends when a fetch reaches its byte
/// limit, is not counted: clients discard it too.
pub fn count_records(mut set: &[u8]) -> u64 {
    let mut n = 0u64;
    while let Some(size) = set.get(8..12) {
        let size = i32::from_be_bytes([size[0], size[1], size[2], size[3]]);
        let Some(entry) = usize::try_from(size).ok().and_then(|s| set.get(..12 + s)) else { break };
        match entry.get(16) {
            Some(2) => {
                if let Some(c) = entry.get(57..61) {
                    n += i32::from_be_bytes([c[0], c[1], c[2], c[3]]).max(0) as u64;
                }
            }
            Some(_) => n += 1,
            None => {}
        }
        set = &set[entry.len()..];
    }
    n
}

/// Topic ids (KIP-516) seen in Metadata responses, so bodies that carry ids
/// instead of names (Fetch v13+, Produce v13+...) can still be named. Ids are
/// cluster-unique UUIDs and clients often fetch metadata on one connection
/// and data on another, so the map is shared process-wide. Bounded.
#[derive(Clone)]
pub struct TopicIds(Arc<Mutex<HashMap<Uuid, String>>>);

static SHARED_IDS: LazyLock<TopicIds> = LazyLock::new(|| TopicIds(Arc::new(Mutex::new(HashMap::new()))));

impl Default for TopicIds {
    fn default() -> Self {
        SHARED_IDS.clone()
    }
}

impl TopicIds {
    const CAP: usize = 4096;
    fn learn(&mut self, id: Uuid, name: &str) {
        let mut m = self.0.lock();
        if id != [0; 16] && (m.len() < Self::CAP || m.contains_key(&id)) && m.get(&id).is_none_or(|n| n != name) {
            m.insert(id, name.to_string());
        }
    }
    fn name(&self, id: &Uuid) -> Option<String> {
        self.0.lock().get(id).cloned()
    }
}

fn topic_name_or_id(r: &mut Reader, by_id: bool, ids: &TopicIds, info: &mut Info) -> Option<()> {
    if by_id {
        let id = r.uuid()?;
        if let Some(n) = ids.name(&id) {
            info.topic(&n);
        }
    } else if let Some(n) = r.string()? {
        info.topic(n);
    }
    Some(())
}

/// The layout most topic-keyed bodies share: `[topic (name or id) [partition .. tags] tags]`.
/// `partition` reads one partition entry up to, not including, its tagged fields.
fn topic_partitions(
    r: &mut Reader,
    by_id: bool,
    ids: &TopicIds,
    info: &mut Info,
    mut partition: impl FnMut(&mut Reader, &mut Info) -> Option<()>,
) -> Option<()> {
    for _ in 0..r.array()?.unwrap_or(0) {
        topic_name_or_id(r, by_id, ids, info)?;
        for _ in 0..r.array()?.unwrap_or(0) {
            partition(r, info)?;
            r.tags()?;
        }
        r.tags()?;
    }
    Some(())
}

/// Decode what we can of a request body. Returns None when the API is not
/// one we decode (the exchange is then header-level only).
pub fn request(key: i16, v: i16, flex: bool, body: &[u8], ids: &TopicIds) -> Option<Info> {
    let mut info = Info::default();
    let mut r = Reader::new(body, flex);
    let ok = match key {
        0 => produce_req(&mut r, v, ids, &mut info),
        1 => fetch_req(&mut r, v, ids, &mut info),
        2 => list_offsets_req(&mut r, v, &mut info),
        3 => metadata_req(&mut r, v, ids, &mut info),
        8 => offset_commit_req(&mut r, v, ids, &mut info),
        9 => offset_fetch_req(&mut r, v, ids, &mut info),
        11 => join_group_req(&mut r, v, &mut info),
        14 => sync_group_req(&mut r, v, &mut info),
        10 | 12 | 13 | 18 | 22 => Some(()),
        _ => return None,
    };
    info.cut = ok.is_none();
    Some(info)
}

/// Decode what we can of a response body (see [`request`]).
pub fn response(key: i16, v: i16, flex: bool, body: &[u8], ids: &mut TopicIds) -> Option<Info> {
    let mut info = Info::default();
    let mut r = Reader::new(body, flex);
    let ok = match key {
        0 => produce_resp(&mut r, v, ids, &mut info),
        1 => fetch_resp(&mut r, v, ids, &mut info),
        2 => list_offsets_resp(&mut r, v, &mut info),
        3 => metadata_resp(&mut r, v, ids, &mut info),
        8 => offset_commit_resp(&mut r, v, ids, &mut info),
        9 => offset_fetch_resp(&mut r, v, ids, &mut info),
        10 => find_coordinator_resp(&mut r, v, &mut info),
        14 => sync_group_resp(&mut r, v, &mut info),
        // JoinGroup, Heartbeat, LeaveGroup, InitProducerId:
        // [throttle_time_ms] error_code ...
        11 | 12 | 13 | 22 => {
            let throttle_from = match key {
                11 => 2,
                22 => 0,
                _ => 1,
            };
            (|| {
                if v >= throttle_from {
                    r.i32()?;
                }
                info.error(r.i16()?);
                Some(())
            })()
        }
        18 => r.i16().map(|e| info.error(e)),
        _ => return None,
    };
    info.cut = ok.is_none();
    Some(info)
}

fn produce_req(r: &mut Reader, v: i16, ids: &TopicIds, info: &mut Info) -> Option<()> {
    if v >= 3 {
        r.string()?;
    }
    info.acks = Some(r.i16()?);
    r.i32()?;
    topic_partitions(r, v >= 13, ids, info, |r, info| {
        r.i32()?;
        r.records(info)?;
        Some(())
    })
}

fn produce_resp(r: &mut Reader, v: i16, ids: &TopicIds, info: &mut Info) -> Option<()> {
    topic_partitions(r, v >= 13, ids, info, |r, info| {
        r.i32()?;
        info.error(r.i16()?);
        // base_offset, log_append_time_ms, log_start_offset
        r.skip_fields(v, &[I64, I64.since(2), I64.since(5)])?;
        if v >= 8 {
            for _ in 0..r.array()?.unwrap_or(0) {
                r.i32()?;
                r.string()?;
                r.tags()?;
            }
            r.string()?;
        }
        Some(())
    })
}

fn fetch_req(r: &mut Reader, v: i16, ids: &TopicIds, info: &mut Info) -> Option<()> {
    // replica_id, max_wait_ms + min_bytes, max_bytes, isolation_level, session_id + session_epoch
    r.skip_fields(v, &[I32.until(14), I64, I32.since(3), I8.since(4), I64.since(7)])?;
    topic_partitions(r, v >= 13, ids, info, |r, _info| {
        // partition, current_leader_epoch, fetch_offset, last_fetched_epoch, log_start_offset, partition_max_bytes
        r.skip_fields(v, &[I32, I32.since(9), I64, I32.since(12), I64.since(5), I32])
    })
}

fn fetch_resp(r: &mut Reader, v: i16, ids: &TopicIds, info: &mut Info) -> Option<()> {
    if v >= 1 {
        r.i32()?;
    }
    if v >= 7 {
        info.error(r.i16()?);
        r.i32()?;
    }
    topic_partitions(r, v >= 13, ids, info, |r, info| {
        r.i32()?;
        info.error(r.i16()?);
        // high_watermark, last_stable_offset, log_start_offset
        r.skip_fields(v, &[I64, I64.since(4), I64.since(5)])?;
        if v >= 4 {
            for _ in 0..r.array()?.unwrap_or(0) {
                r.skip(16)?;
                r.tags()?;
            }
        }
        if v >= 11 {
            r.i32()?;
        }
        r.records(info)?;
        Some(())
    })
}

fn list_offsets_req(r: &mut Reader, v: i16, info: &mut Info) -> Option<()> {
    // replica_id, isolation_level
    r.skip_fields(v, &[I32, I8.since(2)])?;
    topic_partitions(r, false, &TopicIds::default(), info, |r, _info| {
        // partition, current_leader_epoch, timestamp, max_num_offsets
        r.skip_fields(v, &[I32, I32.since(4), I64, I32.only(0)])
    })
}

fn list_offsets_resp(r: &mut Reader, v: i16, info: &mut Info) -> Option<()> {
    if v >= 2 {
        r.i32()?;
    }
    topic_partitions(r, false, &TopicIds::default(), info, |r, info| {
        r.i32()?;
        info.error(r.i16()?);
        // old_style_offsets, timestamp + offset, leader_epoch
        r.skip_fields(v, &[I64_ARRAY.only(0), I64X2.since(1), I32.since(4)])
    })
}

fn metadata_req(r: &mut Reader, v: i16, ids: &TopicIds, info: &mut Info) -> Option<()> {
    for _ in 0..r.array()?.unwrap_or(0) {
        let id = if v >= 10 { Some(r.uuid()?) } else { None };
        match r.string()? {
            Some(n) => info.topic(n),
            None => {
                if let Some(n) = id.as_ref().and_then(|id| ids.name(id)) {
                    info.topic(&n);
                }
            }
        }
        r.tags()?;
    }
    Some(())
}

fn metadata_resp(r: &mut Reader, v: i16, ids: &mut TopicIds, info: &mut Info) -> Option<()> {
    if v >= 3 {
        r.i32()?;
    }
    for _ in 0..r.array()?.unwrap_or(0) {
        // broker: node_id, host, port, rack
        r.skip_fields(v, &[I32, STR, I32, STR.since(1)])?;
        r.tags()?;
    }
    // cluster_id, controller_id
    r.skip_fields(v, &[STR.since(2), I32.since(1)])?;
    for _ in 0..r.array()?.unwrap_or(0) {
        info.error(r.i16()?);
        let name = r.string()?;
        if let Some(n) = name {
            info.topic(n);
        }
        if v >= 10 {
            let id = r.uuid()?;
            if let Some(n) = name {
                ids.learn(id, n);
            }
        }
        if v >= 1 {
            r.i8()?;
        }
        for _ in 0..r.array()?.unwrap_or(0) {
            info.error(r.i16()?);
            // partition_index + leader_id, leader_epoch, replica_nodes, isr_nodes, offline_replicas
            r.skip_fields(v, &[I64, I32.since(7), I32_ARRAY, I32_ARRAY, I32_ARRAY.since(5)])?;
            r.tags()?;
        }
        if v >= 8 {
            r.i32()?;
        }
        r.tags()?;
    }
    Some(())
}

fn offset_commit_req(r: &mut Reader, v: i16, ids: &TopicIds, info: &mut Info) -> Option<()> {
    // group_id, generation_id, member_id, group_instance_id, retention_time_ms
    r.skip_fields(v, &[STR, I32.since(1), STR.since(1), STR.since(7), I64.since(2).until(4)])?;
    topic_partitions(r, v >= 10, ids, info, |r, _info| {
        // partition_index, committed_offset, committed_leader_epoch, commit_timestamp, committed_metadata
        r.skip_fields(v, &[I32, I64, I32.since(6), I64.only(1), STR])
    })
}

fn offset_commit_resp(r: &mut Reader, v: i16, ids: &TopicIds, info: &mut Info) -> Option<()> {
    if v >= 3 {
        r.i32()?;
    }
    topic_partitions(r, v >= 10, ids, info, |r, info| {
        r.i32()?;
        info.error(r.i16()?);
        Some(())
    })
}

fn offset_fetch_topics(r: &mut Reader, by_id: bool, ids: &TopicIds, info: &mut Info) -> Option<()> {
    for _ in 0..r.array()?.unwrap_or(0) {
        topic_name_or_id(r, by_id, ids, info)?;
        r.int_array(4)?;
        r.tags()?;
    }
    Some(())
}

fn offset_fetch_req(r: &mut Reader, v: i16, ids: &TopicIds, info: &mut Info) -> Option<()> {
    if v < 8 {
        r.string()?;
        return offset_fetch_topics(r, false, ids, info);
    }
    for _ in 0..r.array()?.unwrap_or(0) {
        r.string()?;
        if v >= 9 {
            r.string()?;
            r.i32()?;
        }
        offset_fetch_topics(r, v >= 10, ids, info)?;
        r.tags()?;
    }
    Some(())
}

fn offset_fetch_partitions(r: &mut Reader, v: i16, by_id: bool, ids: &TopicIds, info: &mut Info) -> Option<()> {
    topic_partitions(r, by_id, ids, info, |r, info| {
        // partition_index, committed_offset, committed_leader_epoch, metadata
        r.skip_fields(v, &[I32, I64, I32.since(5), STR])?;
        info.error(r.i16()?);
        Some(())
    })
}

fn offset_fetch_resp(r: &mut Reader, v: i16, ids: &TopicIds, info: &mut Info) -> Option<()> {
    if v >= 3 {
        r.i32()?;
    }
    if v < 8 {
        offset_fetch_partitions(r, v, false, ids, info)?;
        if v >= 2 {
            info.error(r.i16()?);
        }
        return Some(());
    }
    for _ in 0..r.array()?.unwrap_or(0) {
        r.string()?;
        offset_fetch_partitions(r, v, v >= 10, ids, info)?;
        info.error(r.i16()?);
        r.tags()?;
    }
    Some(())
}

/// A legal Kafka topic name: embedded consumer-protocol blobs are only
/// trusted when what they name could be a topic.
fn legal_topic(n: &str) -> bool {
    !n.is_empty() && n.len() <= 249 && n.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// ConsumerProtocolSubscription (the metadata a consumer sends in JoinGroup):
/// version, topics, ... Never flexible.
fn consumer_subscription(blob: &[u8], info: &mut Info) {
    let mut r = Reader::new(blob, false);
    let topics = (|| {
        r.i16()?;
        let mut v = Vec::new();
        for _ in 0..r.array()?.unwrap_or(0) {
            v.push(r.string()??);
        }
        Some(v)
    })();
    for t in topics.unwrap_or_default().into_iter().filter(|t| legal_topic(t)) {
        info.topic(t);
    }
}

/// ConsumerProtocolAssignment (what the leader hands out in SyncGroup):
/// version, [topic, [partition]], user_data. Never flexible.
fn consumer_assignment(blob: &[u8], info: &mut Info) {
    let mut r = Reader::new(blob, false);
    let topics = (|| {
        r.i16()?;
        let mut v = Vec::new();
        for _ in 0..r.array()?.unwrap_or(0) {
            v.push(r.string()??);
            r.int_array(4)?;
        }
        Some(v)
    })();
    for t in topics.unwrap_or_default().into_iter().filter(|t| legal_topic(t)) {
        info.topic(t);
    }
}

fn join_group_req(r: &mut Reader, v: i16, info: &mut Info) -> Option<()> {
    // group_id, session_timeout_ms, rebalance_timeout_ms, member_id, group_instance_id
    r.skip_fields(v, &[STR, I32, I32.since(1), STR, STR.since(5)])?;
    let consumer = r.string()? == Some("consumer");
    for _ in 0..r.array()?.unwrap_or(0) {
        r.string()?;
        let meta = r.blob()?;
        if consumer {
            consumer_subscription(meta, info);
        }
        r.tags()?;
    }
    Some(())
}

fn sync_group_req(r: &mut Reader, v: i16, info: &mut Info) -> Option<()> {
    // group_id, generation_id, member_id, group_instance_id
    r.skip_fields(v, &[STR, I32, STR, STR.since(3)])?;
    // Before v5 the protocol type is not sent; the assignment is read as a
    // consumer's and kept only if it names legal topics.
    let consumer = if v >= 5 {
        let t = r.string()?;
        r.string()?;
        t.is_none_or(|t| t == "consumer")
    } else {
        true
    };
    for _ in 0..r.array()?.unwrap_or(0) {
        r.string()?;
        let a = r.blob()?;
        if consumer {
            consumer_assignment(a, info);
        }
        r.tags()?;
    }
    Some(())
}

fn sync_group_resp(r: &mut Reader, v: i16, info: &mut Info) -> Option<()> {
    if v >= 1 {
        r.i32()?;
    }
    info.error(r.i16()?);
    let consumer = if v >= 5 {
        let t = r.string()?;
        r.string()?;
        t.is_none_or(|t| t == "consumer")
    } else {
        true
    };
    let a = r.blob()?;
    if consumer {
        consumer_assignment(a, info);
    }
    Some(())
}

fn find_coordinator_resp(r: &mut Reader, v: i16, info: &mut Info) -> Option<()> {
    if v >= 1 {
        r.i32()?;
    }
    if v < 4 {
        info.error(r.i16()?);
        return Some(());
    }
    for _ in 0..r.array()?.unwrap_or(0) {
        r.string()?;
        r.i32()?;
        r.string()?;
        r.i32()?;
        info.error(r.i16()?);
        r.string()?;
        r.tags()?;
    }
    Some(())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::messages::{
        metadata_response::{MetadataResponse, MetadataResponseTopic},
        produce_request::{PartitionProduceData, ProduceRequest, TopicProduceData},
        produce_response::{PartitionProduceResponse, ProduceResponse, TopicProduceResponse},
        TopicName,
    };
    use kafka_protocol::protocol::{Encodable, StrBytes};

    fn enc<T: Encodable>(m: &T, v: i16) -> Vec<u8> {
        let mut b = BytesMut::new();
        m.encode(&mut b, v).unwrap();
        b.to_vec()
    }

    fn topic(n: &str) -> TopicName {
        TopicName(StrBytes::from_string(n.to_string()))
    }

    #[test]
    fn produce_versions_against_kafka_protocol() {
        for v in 3..=12i16 {
            let req = ProduceRequest::default().with_acks(-1).with_timeout_ms(1000).with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(topic("orders"))
                    .with_partition_data(vec![PartitionProduceData::default().with_index(0)]),
            ]);
            let flex = crate::protocol::kafka::apis::flexible(0, v);
            let info = request(0, v, flex, &enc(&req, v), &TopicIds::default()).unwrap();
            assert_eq!(info.topics, vec!["orders"], "v{v}");
            assert_eq!(info.acks, Some(-1));
            assert!(!info.cut, "v{v}");
            let resp = ProduceResponse::default().with_responses(vec![TopicProduceResponse::default()
                .with_name(topic("orders"))
                .with_partition_responses(vec![PartitionProduceResponse::default().with_error_code(3)])]);
            let info = response(0, v, flex, &enc(&resp, v), &mut TopicIds::default()).unwrap();
            assert_eq!((info.topics.as_slice(), info.error, info.cut), (&["orders".to_string()][..], 3, false), "v{v}");
        }
    }

    #[test]
    fn metadata_versions_against_kafka_protocol() {
        for v in 0..=12i16 {
            let t = MetadataResponseTopic::default().with_error_code(5).with_name(Some(topic("t1")));
            let resp = MetadataResponse::default().with_topics(vec![t]);
            let flex = crate::protocol::kafka::apis::flexible(3, v);
            let mut ids = TopicIds::default();
            let info = response(3, v, flex, &enc(&resp, v), &mut ids).unwrap();
            assert_eq!((info.topics.as_slice(), info.error, info.cut), (&["t1".to_string()][..], 5, false), "v{v}");
        }
    }

    /// `n` records encoded by kafka-protocol (record format `version`).
    pub(in crate::protocol::kafka) fn record_set(n: usize, version: i8) -> Vec<u8> {
        use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
        let recs: Vec<Record> = (0..n)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: i as i32,
                timestamp: 1_700_000_000_000,
                key: Some(bytes::Bytes::from(format!("k{i}"))),
                value: Some(bytes::Bytes::from(vec![b'v'; 10 + i])),
                headers: Default::default(),
            })
            .collect();
        let mut b = BytesMut::new();
        RecordBatchEncoder::encode(&mut b, &recs, &RecordEncodeOptions { version, compression: Compression::None })
            .unwrap();
        b.to_vec()
    }

    /// A magic 0/1 message set (kafka-protocol only encodes batches) of `n`
    /// uncompressed messages: offset, size, crc, magic, attributes,
    /// [timestamp], key, value.
    fn message_set(n: usize, magic: u8) -> Vec<u8> {
        let mut set = Vec::new();
        for i in 0..n {
            let mut m = vec![0, 0, 0, 0, magic, 0];
            if magic == 1 {
                m.extend_from_slice(&0i64.to_be_bytes());
            }
            m.extend_from_slice(&(-1i32).to_be_bytes());
            m.extend_from_slice(&3i32.to_be_bytes());
            m.extend_from_slice(b"abc");
            set.extend_from_slice(&(i as i64).to_be_bytes());
            set.extend_from_slice(&(m.len() as i32).to_be_bytes());
            set.extend_from_slice(&m);
        }
        set
    }

    #[test]
    fn record_counts_against_kafka_protocol() {
        let sets = [
            ("magic 2", [record_set(3, 2), record_set(2, 2)].concat(), 5),
            ("magic 1", message_set(4, 1), 4),
            ("magic 0", message_set(2, 0), 2),
        ];
        for (what, set, n) in sets {
            assert_eq!(count_records(&set), n, "{what}");
            // A trailing partial batch (fetch byte limit) is not counted.
            assert_eq!(count_records(&set[..set.len() - 5]), n - if what == "magic 2" { 2 } else { 1 }, "{what}");
            for cut in 0..set.len() {
                count_records(&set[cut..]);
                count_records(&set[..cut]);
            }
        }
        assert_eq!(count_records(&[]), 0);
    }

    #[test]
    fn fetch_and_produce_record_counts_every_version() {
        use kafka_protocol::messages::fetch_response::{FetchResponse, FetchableTopicResponse, PartitionData};
        let set = [record_set(3, 2), record_set(2, 2)].concat();
        let id = uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        let mut ids = TopicIds::default();
        ids.learn(*id.as_bytes(), "orders-rc");
        for v in 4..=16i16 {
            let resp = FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
                .with_topic(topic("orders-rc"))
                .with_topic_id(id)
                .with_partitions(vec![
                    PartitionData::default().with_records(Some(set.clone().into())),
                    PartitionData::default().with_partition_index(1).with_records(Some(bytes::Bytes::new())),
                ])]);
            let flex = crate::protocol::kafka::apis::flexible(1, v);
            let info = response(1, v, flex, &enc(&resp, v), &mut ids).unwrap();
            assert_eq!(info.topics, vec!["orders-rc"], "v{v}");
            assert!(info.has_records && !info.cut, "v{v}");
            assert_eq!((info.records, info.record_bytes), (5, set.len() as u64), "v{v}");
        }
        for v in 3..=12i16 {
            let req = ProduceRequest::default().with_acks(1).with_topic_data(vec![TopicProduceData::default()
                .with_name(topic("orders"))
                .with_partition_data(vec![
                    PartitionProduceData::default().with_records(Some(record_set(3, 2).into()))
                ])]);
            let flex = crate::protocol::kafka::apis::flexible(0, v);
            let info = request(0, v, flex, &enc(&req, v), &TopicIds::default()).unwrap();
            assert_eq!((info.records, info.cut), (3, false), "v{v}");
        }
    }

    #[test]
    fn group_membership_topics_against_kafka_protocol() {
        use kafka_protocol::messages::{
            consumer_protocol_assignment::TopicPartition, join_group_request::JoinGroupRequestProtocol,
            sync_group_request::SyncGroupRequestAssignment, ConsumerProtocolAssignment, ConsumerProtocolSubscription,
            JoinGroupRequest, SyncGroupRequest, SyncGroupResponse,
        };
        let s = |x: &str| StrBytes::from_string(x.to_string());
        // Embedded consumer-protocol blobs start with their own version.
        let blob = |v: i16, body: Vec<u8>| [v.to_be_bytes().to_vec(), body].concat();
        for sv in 0..=3i16 {
            let sub = ConsumerProtocolSubscription::default().with_topics(vec![s("orders"), s("audit.log")]);
            let asg = ConsumerProtocolAssignment::default().with_assigned_partitions(vec![TopicPartition::default()
                .with_topic(topic("orders"))
                .with_partitions(vec![0, 1])]);
            let (sub, asg) = (blob(sv, enc(&sub, sv)), blob(sv, enc(&asg, sv)));
            for v in 0..=9i16 {
                let req = JoinGroupRequest::default().with_protocol_type(s("consumer")).with_protocols(vec![
                    JoinGroupRequestProtocol::default().with_name(s("range")).with_metadata(sub.clone().into()),
                ]);
                let info =
                    request(11, v, crate::protocol::kafka::apis::flexible(11, v), &enc(&req, v), &TopicIds::default())
                        .unwrap();
                assert_eq!(
                    (info.topics.clone(), info.cut),
                    (vec!["orders".to_string(), "audit.log".into()], false),
                    "v{v}/{sv}"
                );
                // Kafka Connect and others use their own metadata: not read as topics.
                let other = req.with_protocol_type(s("connect"));
                let info = request(
                    11,
                    v,
                    crate::protocol::kafka::apis::flexible(11, v),
                    &enc(&other, v),
                    &TopicIds::default(),
                )
                .unwrap();
                assert!(info.topics.is_empty());
            }
            for v in 0..=5i16 {
                let flex = crate::protocol::kafka::apis::flexible(14, v);
                let req = SyncGroupRequest::default().with_protocol_type(Some(s("consumer"))).with_assignments(vec![
                    SyncGroupRequestAssignment::default().with_member_id(s("m-1")).with_assignment(asg.clone().into()),
                ]);
                let info = request(14, v, flex, &enc(&req, v), &TopicIds::default()).unwrap();
                assert_eq!(info.topics, vec!["orders"], "v{v}/{sv}");
                let resp = SyncGroupResponse::default()
                    .with_error_code(27)
                    .with_protocol_type(Some(s("consumer")))
                    .with_assignment(asg.clone().into());
                let info = response(14, v, flex, &enc(&resp, v), &mut TopicIds::default()).unwrap();
                assert_eq!(
                    (info.topics.as_slice(), info.error, info.cut),
                    (&["orders".to_string()][..], 27, false),
                    "v{v}/{sv}"
                );
            }
        }
        // Garbage that is not a consumer blob names nothing.
        let mut info = Info::default();
        consumer_assignment(b"\x00\x00\x00\x00\x00\x01\x00\x03a b", &mut info);
        consumer_subscription(&[0xff; 40], &mut info);
        assert!(info.topics.is_empty());
    }

    #[test]
    fn old_versions_by_hand() {
        // Produce v0 request: acks, timeout, [topic, [partition, records]].
        let mut b = vec![0, 1, 0, 0, 0x03, 0xe8, 0, 0, 0, 1, 0, 3];
        b.extend_from_slice(b"abc");
        b.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 9, 9]);
        let info = request(0, 0, false, &b, &TopicIds::default()).unwrap();
        assert_eq!((info.topics, info.acks, info.cut), (vec!["abc".to_string()], Some(1), false));
        // Cut short: the topic is still reported.
        let info = request(0, 0, false, &b[..16], &TopicIds::default()).unwrap();
        assert_eq!((info.topics, info.cut), (vec!["abc".to_string()], true));
        // Heartbeat v0: error_code only.
        let info = response(12, 0, false, &[0, 27], &mut TopicIds::default()).unwrap();
        assert_eq!(info.error, 27);
        assert!(request(42, 0, false, &[], &TopicIds::default()).is_none());
    }
}
