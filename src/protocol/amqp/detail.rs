//! What an AMQP 0-9-1 exchange carries. Message bodies and properties are
//! never kept (only the body size from the content header), nor the
//! connection.start-ok response (PLAIN/AMQPLAIN credentials).
use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize)]
pub struct AmqpDetail {
    /// Method that started the exchange: "basic.publish", "queue.declare",
    /// "basic.deliver", "basic.ack", ...
    pub method: String,
    /// Method that ended it: "queue.declare-ok", "basic.get-empty", a
    /// publisher confirm ("basic.ack"/"basic.nack"), or "channel.close" /
    /// "connection.close" when the server refused it. None for methods
    /// nothing answers (publish without confirms, deliver, client ack) and
    /// for unanswered ones.
    pub response: Option<String>,
    pub channel: u16,
    /// Exchange published to, delivered from, declared, deleted or bound.
    pub exchange: Option<String>,
    pub routing_key: Option<String>,
    /// Queue declared, bound, purged, deleted, consumed from or read by
    /// basic.get; for a delivery the queue of its consumer when basic.consume was seen.
    pub queue: Option<String>,
    pub consumer_tag: Option<String>,
    /// Delivery tag: of a delivery, a get-ok, an ack/nack/reject, or the
    /// publisher-confirm sequence number of a confirmed publish.
    pub delivery_tag: Option<u64>,
    /// ack/nack: settles every tag up to `delivery_tag`.
    pub multiple: bool,
    pub redelivered: bool,
    /// Body size from the content header (publish, deliver, get-ok, return).
    pub body_size: Option<u64>,
    /// Messages in the queue (queue.declare-ok, purge-ok, delete-ok, get-ok).
    pub message_count: Option<u32>,
    /// connection.open virtual host.
    pub vhost: Option<String>,
    /// SASL mechanism the client chose (connection.start-ok), e.g. "PLAIN".
    pub mechanism: Option<String>,
    /// Reply code of the channel.close/connection.close that answered (or
    /// was) the exchange, or of a basic.return.
    pub reply_code: Option<u16>,
    pub reply_text: Option<String>,
}
