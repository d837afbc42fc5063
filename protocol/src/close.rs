//! The WebSocket close codes and reasons the server uses (PROTOCOL.md §11), named.

/// A close code with the reason text the server sends with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Close {
    pub code: u16,
    pub reason: &'static str,
}

/// A streamer (or the SFU a player watches) left, stopped, or lost its own upstream.
pub const STREAMER_DISCONNECTED: Close = Close {
    code: 1000,
    reason: "streamer disconnected",
};
/// A frame that breaks RFC 6455 (unmasked, a reserved opcode or bit, a bad control frame).
pub const PROTOCOL_ERROR: Close = Close {
    code: 1002,
    reason: "protocol error",
};
/// Invalid UTF-8 in a text frame.
pub const INVALID_UTF8: Close = Close {
    code: 1007,
    reason: "invalid UTF-8",
};
/// The connection's outgoing queue overflowed.
pub const TOO_SLOW: Close = Close {
    code: 1008,
    reason: "too slow",
};
/// The peer's messages waited for room at their receiver for longer than `overflow_timeout`:
/// it sends faster than its receiver reads (PROTOCOL.md §1.7).
pub const SENDING_TOO_FAST: Close = Close {
    code: 1008,
    reason: "sending too fast",
};
/// A streamer's `endpointId` asked for an id its token may not claim (`streamer_tokens`).
pub const ID_NOT_ALLOWED: Close = Close {
    code: 1008,
    reason: "streamer id not allowed for this token",
};
/// A player sent more messages than `messages_per_second` and `message_burst` allow.
pub const RATE_LIMIT: Close = Close {
    code: 1008,
    reason: "rate limit",
};
/// A player sent nothing within `first_message_timeout` of its upgrade.
pub const NO_FIRST_MESSAGE: Close = Close {
    code: 1008,
    reason: "no message within first_message_timeout",
};
/// A message above `max_message_size`.
pub const MESSAGE_TOO_BIG: Close = Close {
    code: 1009,
    reason: "message too big",
};
/// `disconnectPlayer` from the player's streamer; the reason is the streamer's when it gives one.
pub const DISCONNECTED_BY_STREAMER: Close = Close {
    code: 1011,
    reason: "disconnected by streamer",
};
/// Server shutdown.
pub const SERVER_RESTARTING: Close = Close {
    code: 1012,
    reason: "server restarting",
};
/// Auto-subscribe found no streamer at all.
pub const NO_STREAMER: Close = Close {
    code: 1013,
    reason: "no streamer connected",
};
/// Cirrus UE5.0/5.1 (`subscribe_at_connect`): a player connected while no streamer was.
pub const STREAMER_NOT_CONNECTED: Close = Close {
    code: 1013,
    reason: "Streamer is not connected",
};
/// 1013 "try again later": Cirrus's `MaxPlayerCount` refusal, whose reason carries the counts.
pub const TRY_AGAIN_LATER: u16 = 1013;

/// The longest close reason a WebSocket close frame can carry, in bytes.
pub const MAX_REASON_BYTES: usize = 123;

/// Cuts `reason` to at most [`MAX_REASON_BYTES`] bytes at a UTF-8 character boundary.
pub fn truncate_reason(reason: &str) -> &str {
    if reason.len() <= MAX_REASON_BYTES {
        return reason;
    }
    let mut end = MAX_REASON_BYTES;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_reasons_are_kept_whole() {
        assert_eq!(truncate_reason("bye"), "bye");
        let exact = "a".repeat(123);
        assert_eq!(truncate_reason(&exact), exact);
    }

    #[test]
    fn long_reasons_are_cut_at_a_char_boundary() {
        let long = "é".repeat(100); // 200 bytes, 2 bytes per char
        let cut = truncate_reason(&long);
        assert_eq!(cut.len(), 122);
        assert!(cut.chars().all(|c| c == 'é'));
        let ascii = "x".repeat(500);
        assert_eq!(truncate_reason(&ascii).len(), 123);
    }
}
