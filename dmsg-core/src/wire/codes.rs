//! Every numbered code on the wire, in one table (PROTOCOL.md §7).

/// Defines [`Code`] with its numbers and descriptions in one place.
macro_rules! codes {
    ($($(#[$doc:meta])* $name:ident = $number:literal, $text:literal;)*) => {
        /// A numbered reason: why a stream was refused or reset, or why a session ended.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Code {
            $($(#[$doc])* $name,)*
            /// A number this implementation does not know.
            Unknown(u16),
        }

        impl Code {
            /// Every known code.
            pub const ALL: &'static [Code] = &[$(Code::$name,)*];

            /// The number on the wire.
            pub fn number(self) -> u16 {
                match self {
                    $(Code::$name => $number,)*
                    Code::Unknown(number) => number,
                }
            }

            /// The code for a number.
            pub fn from_number(number: u16) -> Self {
                match number {
                    $($number => Code::$name,)*
                    other => Code::Unknown(other),
                }
            }

            /// What the code means, for error messages.
            pub fn description(self) -> &'static str {
                match self {
                    $(Code::$name => $text,)*
                    Code::Unknown(_) => "unknown code",
                }
            }

            /// A stable snake_case name, for metric labels.
            pub fn label(self) -> &'static str {
                match self {
                    $(Code::$name => stringify!($name),)*
                    Code::Unknown(_) => "Unknown",
                }
            }
        }
    };
}

codes! {
    // 1xx: session end (GOAWAY)
    /// The peer closed the session normally.
    Normal = 100, "session closed";
    /// A newer session from the same key replaced this one.
    Replaced = 101, "replaced by a newer session from the same key";
    /// Pings went unanswered.
    PingTimeout = 102, "the peer stopped answering pings";
    /// The peer broke the protocol.
    ProtocolViolation = 103, "protocol violation";
    /// The peer is shutting down.
    ShuttingDown = 104, "the peer is shutting down";
    /// The peer requires a post-quantum hybrid handshake and this one was classical.
    PqRequired = 105, "a post-quantum hybrid handshake is required";

    // 2xx: stream reset (RESET)
    /// The stream was abandoned (its handle dropped before it finished).
    Cancelled = 200, "stream cancelled";
    /// The peer sent more than its window allowed.
    FlowControl = 201, "flow-control window exceeded";
    /// The session carrying the stream ended.
    SessionClosed = 202, "the session carrying the stream closed";
    /// An end-to-end record did not decrypt.
    BadRecord = 203, "end-to-end record failed to authenticate";

    // 3xx: stream open refused (REJECT)
    /// The server has no session to the destination.
    NoSession = 300, "the server has no session to the destination";
    /// The destination has no listener on that port.
    NoListener = 301, "the destination has no listener on that port";
    /// The destination listener's accept queue is full.
    AcceptQueueFull = 302, "the destination's accept queue is full";
    /// The request did not parse.
    MalformedRequest = 303, "malformed stream request";
    /// The end-to-end handshake failed at the destination.
    HandshakeFailed = 304, "the end-to-end handshake failed";
    /// The request's source key is not the session's peer.
    SourceMismatch = 305, "the request's source is not the session's peer";
    /// The destination did not answer in time.
    DestinationTimeout = 306, "the destination did not answer in time";
    /// Too many streams are open.
    TooManyStreams = 307, "too many open streams";
    /// The request's destination is not this peer.
    WrongDestination = 308, "the request is not addressed to this peer";
    /// The destination's listener on that port does not accept streams from the source key.
    NotAllowed = 309, "the destination does not accept streams from this key on that port";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for code in Code::ALL {
            assert!(
                seen.insert(code.number()),
                "{code:?} reuses {}",
                code.number()
            );
            assert_eq!(Code::from_number(code.number()), *code);
        }
        assert_eq!(Code::from_number(9999), Code::Unknown(9999));
    }
}
