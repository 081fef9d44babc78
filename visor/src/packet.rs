//! Frames on a transport and the route packets among them (ROUTING.md §3), with every wire
//! number of the route layer in one place beside its layout.
//!
//! Sans-IO: [`check_header`] validates an 8-byte header before its body is waited for or
//! allocated; [`Header::encode`] writes one.

use std::fmt;

/// Bytes of a frame header (ROUTING.md §3.1).
pub const HEADER_LEN: usize = 8;
/// Bytes of the per-hop tag after each frame on `stcp` (ROUTING.md §3.3).
pub const TAG_LEN: usize = 16;
/// Largest frame body.
pub const MAX_BODY: usize = u16::MAX as usize;
/// Largest frame on the wire: header, body and tag.
pub const MAX_PACKET: usize = HEADER_LEN + MAX_BODY + TAG_LEN;
/// Largest Noise handshake message (stcp and route groups).
pub const MAX_HANDSHAKE_MESSAGE: usize = 4096;
/// Largest stream content of one end-to-end record (ROUTING.md §6.3).
pub const MAX_RECORD_DATA: usize = 65_000;
/// Smallest DATA body: a record of one kind byte and its 16-byte tag.
pub const MIN_RECORD: usize = 1 + TAG_LEN;
/// Body of a SIGN frame: timestamp i64 and an Ed25519 signature.
pub const SIGN_BODY_LEN: usize = 8 + 64;
/// Body of an OPEN packet: the initiator's port and the destination port, u16 each.
pub const OPEN_BODY_LEN: usize = 4;
/// Body of an OPENED packet: a close code u8 and the responder's route id u32.
pub const OPENED_BODY_LEN: usize = 5;

/// A route ID: a rule's key on one visor (ROUTING.md §5.1). Never 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteId(u32);

impl RouteId {
    /// The ID `value`; `None` for 0, which is never a route.
    pub const fn new(value: u32) -> Option<Self> {
        if value == 0 { None } else { Some(Self(value)) }
    }

    /// The number.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for RouteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Declares a `u8` wire enum with its values, labels and a `from_u8`.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $value:literal, $label:literal;)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum $name {
            $($(#[$vmeta])* $variant = $value,)*
        }

        impl $name {
            /// Every value, in wire order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The value for a wire byte, if it is one.
            pub fn from_u8(byte: u8) -> Option<Self> {
                match byte {
                    $($value => Some(Self::$variant),)*
                    _ => None,
                }
            }

            /// A stable snake_case name (logs, metric labels).
            pub fn label(self) -> &'static str {
                match self {
                    $(Self::$variant => $label,)*
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.label())
            }
        }
    };
}

wire_enum! {
    /// Frame types (ROUTING.md §3.2).
    FrameType {
        /// One end-to-end record of a route group, carried as is.
        Data = 0x01, "data";
        /// A route-group Noise handshake message.
        Handshake = 0x02, "handshake";
        /// Keeps the rules of a route alive.
        KeepAlive = 0x03, "keepalive";
        /// A hop or end closes the route (code u8).
        Close = 0x04, "close";
        /// Opens a direct route group over this transport (ROUTING.md §6.7).
        Open = 0x05, "open";
        /// The answer to an OPEN.
        Opened = 0x06, "opened";
        /// An edge's signature of the transport entry.
        Sign = 0x10, "sign";
        /// The transport closes (code u8).
        Bye = 0x11, "bye";
    }
}

impl FrameType {
    /// Whether frames of this type belong to a route (non-zero route id) rather than to the
    /// transport (route id 0).
    pub fn is_route(self) -> bool {
        matches!(
            self,
            Self::Data
                | Self::Handshake
                | Self::KeepAlive
                | Self::Close
                | Self::Open
                | Self::Opened
        )
    }

    /// The inclusive bounds of the body length.
    pub fn body_bounds(self) -> (usize, usize) {
        match self {
            Self::Data => (MIN_RECORD, MAX_BODY),
            Self::Handshake => (1, MAX_HANDSHAKE_MESSAGE),
            Self::KeepAlive => (0, 0),
            Self::Close | Self::Bye => (1, 1),
            Self::Sign => (SIGN_BODY_LEN, SIGN_BODY_LEN),
            Self::Open => (OPEN_BODY_LEN, OPEN_BODY_LEN),
            Self::Opened => (OPENED_BODY_LEN, OPENED_BODY_LEN),
        }
    }

    /// Whether the body is encrypted on a sealed transport (all but DATA, ROUTING.md §3.3).
    pub fn sealed_body(self) -> bool {
        self != Self::Data
    }
}

wire_enum! {
    /// Why a route closes (ROUTING.md §6.6).
    CloseCode {
        /// The other end closed.
        Normal = 0x00, "normal";
        /// A transport on the route closed.
        TransportClosed = 0x01, "transport_closed";
        /// A hop has no rule for the route.
        NoRule = 0x02, "no_rule";
        /// No listener on the destination port.
        NoListener = 0x03, "no_listener";
        /// A record failed to open.
        BadRecord = 0x04, "bad_record";
        /// The route-group handshake failed (PQ policy included).
        HandshakeFailed = 0x05, "handshake_failed";
        /// A direct open was refused: too many pending on the transport, or no route ID.
        Busy = 0x06, "busy";
    }
}

wire_enum! {
    /// Why a transport closes (ROUTING.md §3.4).
    ByeCode {
        /// Closed on purpose.
        Normal = 0x00, "normal";
        /// Another connection for the same peer and type won (ROUTING.md §2.5).
        Duplicate = 0x01, "duplicate";
        /// A SIGN frame did not verify.
        BadSignature = 0x02, "bad_signature";
        /// A frame broke the rules of §3.
        ProtocolViolation = 0x03, "protocol_violation";
        /// The visor is shutting down.
        ShuttingDown = 0x04, "shutting_down";
    }
}

/// A checked frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The frame type.
    pub kind: FrameType,
    /// The route, for route packets; `None` for transport frames.
    pub route: Option<RouteId>,
    /// Bytes of body that follow.
    pub body_len: u16,
}

impl Header {
    /// A route packet header.
    pub fn for_route(kind: FrameType, route: RouteId, body_len: u16) -> Self {
        Self {
            kind,
            route: Some(route),
            body_len,
        }
    }

    /// A transport frame header (route id 0).
    pub fn for_transport(kind: FrameType, body_len: u16) -> Self {
        Self {
            kind,
            route: None,
            body_len,
        }
    }

    /// The 8 bytes on the wire.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0] = self.kind as u8;
        out[2..6].copy_from_slice(&self.route.map_or(0, RouteId::get).to_be_bytes());
        out[6..8].copy_from_slice(&self.body_len.to_be_bytes());
        out
    }

    /// The same header with another route id (what an intermediary rewrites).
    pub fn with_route(self, route: RouteId) -> Self {
        Self {
            route: Some(route),
            ..self
        }
    }
}

/// Why a header is refused (the transport then closes with `protocol_violation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The type byte is not one of ROUTING.md §3.2.
    #[error("unknown frame type {0:#04x}")]
    UnknownType(u8),
    /// No flags are defined.
    #[error("flags {flags:#04x} are not allowed on {kind}")]
    Flags {
        /// The frame type.
        kind: FrameType,
        /// The flags byte.
        flags: u8,
    },
    /// A route packet with route id 0, or a transport frame with a non-zero one.
    #[error("route id {route} does not fit a {kind} frame")]
    RouteId {
        /// The frame type.
        kind: FrameType,
        /// The route id on the wire.
        route: u32,
    },
    /// The body length is outside the type's bounds.
    #[error("a {kind} body of {len} bytes is outside {min}..={max}")]
    BodyLen {
        /// The frame type.
        kind: FrameType,
        /// The length on the wire.
        len: usize,
        /// Smallest allowed.
        min: usize,
        /// Largest allowed.
        max: usize,
    },
}

/// Checks a header (ROUTING.md §3.1) before its body is read.
pub fn check_header(bytes: &[u8; HEADER_LEN]) -> Result<Header, HeaderError> {
    let kind = FrameType::from_u8(bytes[0]).ok_or(HeaderError::UnknownType(bytes[0]))?;
    if bytes[1] != 0 {
        return Err(HeaderError::Flags {
            kind,
            flags: bytes[1],
        });
    }
    let raw_route = u32::from_be_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]);
    let route = RouteId::new(raw_route);
    if kind.is_route() != route.is_some() {
        return Err(HeaderError::RouteId {
            kind,
            route: raw_route,
        });
    }
    let body_len = u16::from_be_bytes([bytes[6], bytes[7]]);
    let (min, max) = kind.body_bounds();
    let len = usize::from(body_len);
    if len < min || len > max {
        return Err(HeaderError::BodyLen {
            kind,
            len,
            min,
            max,
        });
    }
    Ok(Header {
        kind,
        route,
        body_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn route(n: u32) -> RouteId {
        RouteId::new(n).unwrap_or_else(|| unreachable!("non-zero"))
    }

    /// ROUTING.md §3.1: what `encode` writes, `check_header` reads back.
    #[test]
    fn every_valid_header_round_trips() {
        for kind in FrameType::ALL {
            let (min, max) = kind.body_bounds();
            for len in [min, max] {
                let len = u16::try_from(len).unwrap_or(u16::MAX);
                let header = if kind.is_route() {
                    Header::for_route(*kind, route(7), len)
                } else {
                    Header::for_transport(*kind, len)
                };
                assert_eq!(check_header(&header.encode()), Ok(header), "{kind}");
            }
        }
    }

    /// ROUTING.md §3.1: each rule of the check refuses its violation.
    #[test]
    fn headers_breaking_a_rule_are_refused() {
        let data = Header::for_route(FrameType::Data, route(1), 100).encode();
        let mut unknown = data;
        unknown[0] = 0x7f;
        assert_eq!(check_header(&unknown), Err(HeaderError::UnknownType(0x7f)));
        let mut flagged = data;
        flagged[1] = 1;
        assert!(matches!(
            check_header(&flagged),
            Err(HeaderError::Flags { .. })
        ));
        let mut no_route = data;
        no_route[2..6].copy_from_slice(&[0; 4]);
        assert!(matches!(
            check_header(&no_route),
            Err(HeaderError::RouteId { route: 0, .. })
        ));
        let mut routed_bye = Header::for_transport(FrameType::Bye, 1).encode();
        routed_bye[5] = 9;
        assert!(matches!(
            check_header(&routed_bye),
            Err(HeaderError::RouteId { route: 9, .. })
        ));
        let short_data = Header::for_route(FrameType::Data, route(1), 16).encode();
        assert!(matches!(
            check_header(&short_data),
            Err(HeaderError::BodyLen { len: 16, .. })
        ));
        let long_handshake = Header::for_route(FrameType::Handshake, route(1), 4097).encode();
        assert!(matches!(
            check_header(&long_handshake),
            Err(HeaderError::BodyLen { len: 4097, .. })
        ));
    }

    #[test]
    fn codes_round_trip_their_wire_bytes() {
        for code in CloseCode::ALL {
            assert_eq!(CloseCode::from_u8(*code as u8), Some(*code));
        }
        for code in ByeCode::ALL {
            assert_eq!(ByeCode::from_u8(*code as u8), Some(*code));
        }
        assert_eq!(CloseCode::from_u8(0xff), None);
    }

    proptest! {
        /// ROUTING.md §3.1: any 8 bytes either fail the check or declare a body within the
        /// type's bounds (never more than `MAX_BODY`), and re-encode to themselves.
        #[test]
        fn arbitrary_headers_never_panic_or_overstate_the_body(bytes in any::<[u8; HEADER_LEN]>()) {
            if let Ok(header) = check_header(&bytes) {
                let (min, max) = header.kind.body_bounds();
                let len = usize::from(header.body_len);
                prop_assert!(len >= min && len <= max && len <= MAX_BODY);
                prop_assert_eq!(header.encode(), bytes);
            }
        }
    }
}
