//! Kafka API keys: names, header versions and plausible version ranges.
//! kafka-protocol knows every API of Kafka 4.x; the inter-broker APIs that
//! Kafka 4 removed (4-7) are filled in here so older traffic is named too.
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::ApiKey;

/// Highest API key we accept when guessing whether bytes are Kafka.
pub const MAX_API_KEY: i16 = 100;

fn removed(key: i16) -> Option<(&'static str, i16, i16)> {
    // (name, first flexible version, highest version ever defined)
    match key {
        4 => Some(("LeaderAndIsr", 4, 7)),
        5 => Some(("StopReplica", 2, 4)),
        6 => Some(("UpdateMetadata", 6, 8)),
        7 => Some(("ControlledShutdown", 3, 3)),
        _ => None,
    }
}

pub fn name(key: i16) -> String {
    if let Some((n, _, _)) = removed(key) {
        return n.to_string();
    }
    match ApiKey::try_from(key) {
        Ok(k) => format!("{k:?}"),
        Err(()) => format!("Unknown{key}"),
    }
}

/// Is `(key, version)` something a client or broker could send? Allows a few
/// versions beyond what kafka-protocol knows, for newer peers.
pub fn plausible(key: i16, version: i16) -> bool {
    if version < 0 {
        return false;
    }
    if let Some((_, _, max)) = removed(key) {
        return version <= max;
    }
    match ApiKey::try_from(key) {
        Ok(k) => version <= k.valid_versions().max + 3,
        Err(()) => false,
    }
}

pub fn known(key: i16) -> bool {
    removed(key).is_some() || ApiKey::try_from(key).is_ok()
}

/// Request header version: 0 (no client id), 1, or 2 (flexible, tagged fields).
pub fn request_header_version(key: i16, version: i16) -> i16 {
    if let Some((_, flex, _)) = removed(key) {
        return if key == 7 && version == 0 {
            0
        } else if version >= flex {
            2
        } else {
            1
        };
    }
    match ApiKey::try_from(key) {
        Ok(k) => k.request_header_version(version),
        Err(()) => 1,
    }
}

/// Response header version: 1 carries tagged fields.
pub fn response_header_version(key: i16, version: i16) -> i16 {
    if let Some((_, flex, _)) = removed(key) {
        return if version >= flex { 1 } else { 0 };
    }
    match ApiKey::try_from(key) {
        Ok(k) => k.response_header_version(version),
        Err(()) => 0,
    }
}

/// Whether the message body uses the compact (flexible) encoding.
pub fn flexible(key: i16, version: i16) -> bool {
    request_header_version(key, version) >= 2
}

/// "UNKNOWN_TOPIC_OR_PARTITION" style name of an error code.
pub fn error_name(code: i16) -> Option<String> {
    let err = ResponseError::try_from_code(code)?;
    let camel = err.to_string();
    if camel.starts_with("Unknown error code") {
        return Some(format!("UNKNOWN_ERROR_{code}"));
    }
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_versions() {
        assert_eq!(name(0), "Produce");
        assert_eq!(name(18), "ApiVersions");
        assert_eq!(name(7), "ControlledShutdown");
        assert_eq!(request_header_version(0, 8), 1);
        assert_eq!(request_header_version(0, 9), 2);
        assert_eq!(request_header_version(7, 0), 0);
        assert_eq!(response_header_version(18, 3), 0);
        assert!(flexible(18, 3));
        assert!(plausible(1, 0) && plausible(3, 12) && !plausible(3, 40) && !plausible(200, 0));
    }

    #[test]
    fn error_names() {
        assert_eq!(error_name(3).as_deref(), Some("UNKNOWN_TOPIC_OR_PARTITION"));
        assert_eq!(error_name(0), None);
        assert_eq!(error_name(-1).as_deref(), Some("UNKNOWN_SERVER_ERROR"));
        assert_eq!(error_name(9999).as_deref(), Some("UNKNOWN_ERROR_9999"));
    }
}
