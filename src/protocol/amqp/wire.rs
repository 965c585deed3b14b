//! AMQP 0-9-1 wire pieces: frame types, method ids and names, and the
//! arguments of the methods cnflow reads. Field layouts follow the 0-9-1
//! specification (amqp0-9-1.xml); every read is bounds-checked and a short
//! or malformed payload yields `None`, never a panic.

/// `AMQP` 0 0 9 1: the protocol header a 0-9-1 client sends first.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";
pub const FRAME_METHOD: u8 = 1;
pub const FRAME_HEADER: u8 = 2;
pub const FRAME_BODY: u8 = 3;
/// RabbitMQ and the 0-9-1 spec use 8; 4 is the older (0-8) value.
pub const FRAME_HEARTBEAT: u8 = 8;
pub const FRAME_HEARTBEAT_OLD: u8 = 4;
pub const FRAME_END: u8 = 0xCE;
/// type, channel, size.
pub const FRAME_HEAD: usize = 7;

pub const CONNECTION: u16 = 10;
pub const CHANNEL: u16 = 20;
pub const EXCHANGE: u16 = 40;
pub const QUEUE: u16 = 50;
pub const BASIC: u16 = 60;
pub const CONFIRM: u16 = 85;
pub const TX: u16 = 90;

/// Name of a method ("queue.declare-ok"), None for ids 0-9-1 does not define.
pub fn method_name(class: u16, id: u16) -> Option<&'static str> {
    Some(match (class, id) {
        (CONNECTION, 10) => "connection.start",
        (CONNECTION, 11) => "connection.start-ok",
        (CONNECTION, 20) => "connection.secure",
        (CONNECTION, 21) => "connection.secure-ok",
        (CONNECTION, 30) => "connection.tune",
        (CONNECTION, 31) => "connection.tune-ok",
        (CONNECTION, 40) => "connection.open",
        (CONNECTION, 41) => "connection.open-ok",
        (CONNECTION, 50) => "connection.close",
        (CONNECTION, 51) => "connection.close-ok",
        (CONNECTION, 60) => "connection.blocked",
        (CONNECTION, 61) => "connection.unblocked",
        (CONNECTION, 70) => "connection.update-secret",
        (CONNECTION, 71) => "connection.update-secret-ok",
        (CHANNEL, 10) => "channel.open",
        (CHANNEL, 11) => "channel.open-ok",
        (CHANNEL, 20) => "channel.flow",
        (CHANNEL, 21) => "channel.flow-ok",
        (CHANNEL, 40) => "channel.close",
        (CHANNEL, 41) => "channel.close-ok",
        (EXCHANGE, 10) => "exchange.declare",
        (EXCHANGE, 11) => "exchange.declare-ok",
        (EXCHANGE, 20) => "exchange.delete",
        (EXCHANGE, 21) => "exchange.delete-ok",
        (EXCHANGE, 30) => "exchange.bind",
        (EXCHANGE, 31) => "exchange.bind-ok",
        (EXCHANGE, 40) => "exchange.unbind",
        (EXCHANGE, 51) => "exchange.unbind-ok",
        (QUEUE, 10) => "queue.declare",
        (QUEUE, 11) => "queue.declare-ok",
        (QUEUE, 20) => "queue.bind",
        (QUEUE, 21) => "queue.bind-ok",
        (QUEUE, 30) => "queue.purge",
        (QUEUE, 31) => "queue.purge-ok",
        (QUEUE, 40) => "queue.delete",
        (QUEUE, 41) => "queue.delete-ok",
        (QUEUE, 50) => "queue.unbind",
        (QUEUE, 51) => "queue.unbind-ok",
        (BASIC, 10) => "basic.qos",
        (BASIC, 11) => "basic.qos-ok",
        (BASIC, 20) => "basic.consume",
        (BASIC, 21) => "basic.consume-ok",
        (BASIC, 30) => "basic.cancel",
        (BASIC, 31) => "basic.cancel-ok",
        (BASIC, 40) => "basic.publish",
        (BASIC, 50) => "basic.return",
        (BASIC, 60) => "basic.deliver",
        (BASIC, 70) => "basic.get",
        (BASIC, 71) => "basic.get-ok",
        (BASIC, 72) => "basic.get-empty",
        (BASIC, 80) => "basic.ack",
        (BASIC, 90) => "basic.reject",
        (BASIC, 100) => "basic.recover-async",
        (BASIC, 110) => "basic.recover",
        (BASIC, 111) => "basic.recover-ok",
        (BASIC, 120) => "basic.nack",
        (CONFIRM, 10) => "confirm.select",
        (CONFIRM, 11) => "confirm.select-ok",
        (TX, 10) => "tx.select",
        (TX, 11) => "tx.select-ok",
        (TX, 20) => "tx.commit",
        (TX, 21) => "tx.commit-ok",
        (TX, 30) => "tx.rollback",
        (TX, 31) => "tx.rollback-ok",
        _ => return None,
    })
}

/// Is `(class, id)` a synchronous request a client sends, answered by an
/// `-ok` method on the same channel (or by a channel/connection close)?
pub fn client_sync(class: u16, id: u16) -> bool {
    matches!(
        (class, id),
        (CONNECTION, 40 | 50)
            | (CHANNEL, 10 | 20 | 40)
            | (EXCHANGE, 10 | 20 | 30 | 40)
            | (QUEUE, 10 | 20 | 30 | 40 | 50)
            | (BASIC, 10 | 20 | 30 | 70 | 110)
            | (CONFIRM, 10)
            | (TX, 10 | 20 | 30)
    )
}

/// Does the server method `(class, id)` answer the client request `req`?
pub fn answers(req: (u16, u16), class: u16, id: u16) -> bool {
    if class != req.0 {
        return false;
    }
    match req {
        // exchange.unbind-ok is 51, not 41 (a quirk of the 0-9-1 spec).
        (EXCHANGE, 40) => id == 51,
        (BASIC, 70) => id == 71 || id == 72,
        (_, r) => id == r + 1,
    }
}

/// The fields of a method cnflow keeps. Credentials (connection.start-ok
/// `response`, connection.secure-ok) are skipped, never copied.
#[derive(Debug, Default, Clone)]
pub struct Args {
    pub exchange: Option<String>,
    pub routing_key: Option<String>,
    pub queue: Option<String>,
    pub consumer_tag: Option<String>,
    pub delivery_tag: Option<u64>,
    pub multiple: bool,
    pub requeue: bool,
    pub redelivered: bool,
    pub passive: bool,
    pub no_wait: bool,
    pub reply_code: Option<u16>,
    pub reply_text: Option<String>,
    /// connection.close / channel.close: the method that failed.
    pub failed_method: Option<(u16, u16)>,
    pub message_count: Option<u32>,
    pub vhost: Option<String>,
    pub mechanism: Option<String>,
    pub prefetch_count: Option<u16>,
}

/// Bounds-checked big-endian reader.
pub struct Reader<'a> {
    b: &'a [u8],
    p: usize,
}

impl<'a> Reader<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        Self { b, p: 0 }
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.p..self.p.checked_add(n)?)?;
        self.p += n;
        Some(s)
    }
    pub fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|s| s[0])
    }
    pub fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|s| u16::from_be_bytes([s[0], s[1]]))
    }
    pub fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    pub fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|s| u64::from_be_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]))
    }
    /// shortstr, lossily as UTF-8 (names are UTF-8 in RabbitMQ; at most 255 bytes).
    pub fn shortstr(&mut self) -> Option<String> {
        let n = self.u8()? as usize;
        self.take(n).map(|s| String::from_utf8_lossy(s).into_owned())
    }
    /// longstr or field table: skipped by its length, never copied.
    pub fn skip_long(&mut self) -> Option<()> {
        let n = self.u32()? as usize;
        self.take(n).map(|_| ())
    }
}

/// Arguments of method `(class, id)` from its payload after the ids. None
/// when the payload is shorter than the fields read (cut or malformed).
pub fn parse_args(class: u16, id: u16, args: &[u8]) -> Option<Args> {
    let mut r = Reader::new(args);
    let mut a = Args::default();
    match (class, id) {
        (CONNECTION, 11) => {
            // client-properties, mechanism, response (credentials: skipped), locale.
            r.skip_long()?;
            a.mechanism = Some(r.shortstr()?);
        }
        (CONNECTION, 40) => a.vhost = Some(r.shortstr()?),
        (CONNECTION, 50) | (CHANNEL, 40) => {
            a.reply_code = Some(r.u16()?);
            a.reply_text = Some(r.shortstr()?);
            a.failed_method = Some((r.u16()?, r.u16()?));
        }
        (EXCHANGE, 10) => {
            r.u16()?;
            a.exchange = Some(r.shortstr()?);
            r.shortstr()?; // type
            let bits = r.u8()?;
            a.passive = bits & 1 != 0;
            a.no_wait = bits & 0x10 != 0;
        }
        (EXCHANGE, 20) => {
            r.u16()?;
            a.exchange = Some(r.shortstr()?);
            a.no_wait = r.u8()? & 2 != 0;
        }
        (EXCHANGE, 30) | (EXCHANGE, 40) => {
            // destination, source, routing-key: the exchange bound is the destination.
            r.u16()?;
            a.exchange = Some(r.shortstr()?);
            r.shortstr()?;
            a.routing_key = Some(r.shortstr()?);
            a.no_wait = r.u8()? & 1 != 0;
        }
        (QUEUE, 10) => {
            r.u16()?;
            a.queue = Some(r.shortstr()?);
            let bits = r.u8()?;
            a.passive = bits & 1 != 0;
            a.no_wait = bits & 0x10 != 0;
        }
        (QUEUE, 11) => {
            a.queue = Some(r.shortstr()?);
            a.message_count = Some(r.u32()?);
        }
        (QUEUE, 20) | (QUEUE, 50) => {
            r.u16()?;
            a.queue = Some(r.shortstr()?);
            a.exchange = Some(r.shortstr()?);
            a.routing_key = Some(r.shortstr()?);
            if id == 20 {
                a.no_wait = r.u8()? & 1 != 0;
            }
        }
        (QUEUE, 30) | (QUEUE, 40) => {
            r.u16()?;
            a.queue = Some(r.shortstr()?);
            let bits = r.u8()?;
            a.no_wait = if id == 30 { bits & 1 != 0 } else { bits & 4 != 0 };
        }
        (QUEUE, 31) | (QUEUE, 41) => a.message_count = Some(r.u32()?),
        (BASIC, 10) => {
            r.u32()?;
            a.prefetch_count = Some(r.u16()?);
        }
        (BASIC, 20) => {
            r.u16()?;
            a.queue = Some(r.shortstr()?);
            a.consumer_tag = Some(r.shortstr()?);
            a.no_wait = r.u8()? & 8 != 0;
        }
        (BASIC, 21) | (BASIC, 31) => a.consumer_tag = Some(r.shortstr()?),
        (BASIC, 30) => {
            a.consumer_tag = Some(r.shortstr()?);
            a.no_wait = r.u8()? & 1 != 0;
        }
        (BASIC, 40) => {
            r.u16()?;
            a.exchange = Some(r.shortstr()?);
            a.routing_key = Some(r.shortstr()?);
        }
        (BASIC, 50) => {
            a.reply_code = Some(r.u16()?);
            a.reply_text = Some(r.shortstr()?);
            a.exchange = Some(r.shortstr()?);
            a.routing_key = Some(r.shortstr()?);
        }
        (BASIC, 60) => {
            a.consumer_tag = Some(r.shortstr()?);
            a.delivery_tag = Some(r.u64()?);
            a.redelivered = r.u8()? & 1 != 0;
            a.exchange = Some(r.shortstr()?);
            a.routing_key = Some(r.shortstr()?);
        }
        (BASIC, 70) => {
            r.u16()?;
            a.queue = Some(r.shortstr()?);
        }
        (BASIC, 71) => {
            a.delivery_tag = Some(r.u64()?);
            a.redelivered = r.u8()? & 1 != 0;
            a.exchange = Some(r.shortstr()?);
            a.routing_key = Some(r.shortstr()?);
            a.message_count = Some(r.u32()?);
        }
        (BASIC, 80) | (BASIC, 90) | (BASIC, 120) => {
            a.delivery_tag = Some(r.u64()?);
            let bits = r.u8()?;
            match id {
                80 => a.multiple = bits & 1 != 0,
                90 => a.requeue = bits & 1 != 0,
                _ => {
                    a.multiple = bits & 1 != 0;
                    a.requeue = bits & 2 != 0;
                }
            }
        }
        (CONFIRM, 10) => a.no_wait = r.u8()? & 1 != 0,
        _ => {}
    }
    Some(a)
}

/// Does a plausible frame start at `b[0]`, whole and ended by 0xCE within
/// `b`? Method frames must name a 0-9-1 method, content headers class basic.
/// Used by the probe and to resynchronise after lost bytes.
pub fn frame_at(b: &[u8], max_frame: u32) -> Option<usize> {
    let h = b.get(..FRAME_HEAD)?;
    let ty = h[0];
    let channel = u16::from_be_bytes([h[1], h[2]]);
    let size = u32::from_be_bytes([h[3], h[4], h[5], h[6]]);
    if size > max_frame {
        return None;
    }
    let end = FRAME_HEAD + size as usize;
    if *b.get(end)? != FRAME_END {
        return None;
    }
    let p = &b[FRAME_HEAD..end];
    let ok = match ty {
        FRAME_METHOD => {
            p.len() >= 4
                && method_name(u16::from_be_bytes([p[0], p[1]]), u16::from_be_bytes([p[2], p[3]])).is_some()
                && (channel != 0 || u16::from_be_bytes([p[0], p[1]]) == CONNECTION)
        }
        FRAME_HEADER => p.len() >= 14 && u16::from_be_bytes([p[0], p[1]]) == BASIC && channel != 0,
        FRAME_HEARTBEAT => size == 0 && channel == 0,
        _ => false,
    };
    ok.then_some(end + 1)
}
