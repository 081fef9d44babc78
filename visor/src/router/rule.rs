//! Routing rules and their byte layout (ROUTING.md §4.1).

use std::time::Duration;

use dmsg::addr::Port;
use dmsg::identity::{PUBLIC_KEY_LEN, PublicKey};

use crate::packet::RouteId;

/// A transport ID (ROUTING.md §2.3).
pub type TransportId = [u8; 16];

/// Default rule keep-alive (ROUTING.md §5.2).
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Shortest keep-alive a rule may carry.
pub const MIN_KEEP_ALIVE: Duration = Duration::from_secs(1);
/// Longest keep-alive a rule may carry.
pub const MAX_KEEP_ALIVE: Duration = Duration::from_secs(3600);

/// Bytes before the body: keep-alive ms u32, type u8, key u32.
pub const RULE_HEADER_LEN: usize = 9;
/// Bytes of a route descriptor.
pub const DESCRIPTOR_LEN: usize = 2 * PUBLIC_KEY_LEN + 4;
/// Bytes of a next hop: route id u32 and transport id.
const NEXT_HOP_LEN: usize = 4 + 16;
/// The largest encoded rule (a FORWARD rule).
pub const MAX_RULE_LEN: usize = RULE_HEADER_LEN + DESCRIPTOR_LEN + NEXT_HOP_LEN;

/// Which route group a route belongs to, as the route's sender sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RouteDescriptor {
    /// The visor the route starts at.
    pub src_pk: PublicKey,
    /// The visor the route ends at.
    pub dst_pk: PublicKey,
    /// The port at the start.
    pub src_port: Port,
    /// The port at the end.
    pub dst_port: Port,
}

impl RouteDescriptor {
    /// The descriptor of the route going the other way.
    pub fn reversed(&self) -> Self {
        Self {
            src_pk: self.dst_pk,
            dst_pk: self.src_pk,
            src_port: self.dst_port,
            dst_port: self.src_port,
        }
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.src_pk.as_bytes());
        out.extend_from_slice(self.dst_pk.as_bytes());
        out.extend_from_slice(&self.src_port.get().to_be_bytes());
        out.extend_from_slice(&self.dst_port.get().to_be_bytes());
    }

    fn decode(bytes: &[u8]) -> Result<Self, RuleError> {
        let key = |range: std::ops::Range<usize>| {
            PublicKey::from_slice(&bytes[range]).map_err(|_| RuleError::InvalidKey)
        };
        let port = |at: usize| {
            Port::new(u16::from_be_bytes([bytes[at], bytes[at + 1]])).ok_or(RuleError::ZeroPort)
        };
        Ok(Self {
            src_pk: key(0..32)?,
            dst_pk: key(32..64)?,
            src_port: port(64)?,
            dst_port: port(66)?,
        })
    }
}

/// Where a packet goes next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextHop {
    /// The route id on the next visor.
    pub route: RouteId,
    /// The transport to the next visor.
    pub transport: TransportId,
}

impl NextHop {
    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.route.get().to_be_bytes());
        out.extend_from_slice(&self.transport);
    }

    fn decode(bytes: &[u8]) -> Result<Self, RuleError> {
        let route = route_id(&bytes[0..4])?;
        let mut transport = [0u8; 16];
        transport.copy_from_slice(&bytes[4..20]);
        Ok(Self { route, transport })
    }
}

/// What a rule does (ROUTING.md §4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleKind {
    /// The route ends here, at the route group of the descriptor.
    Consume(RouteDescriptor),
    /// A local route group sends with this rule: onto `next`.
    Forward {
        /// The route group sending.
        descriptor: RouteDescriptor,
        /// The first hop.
        next: NextHop,
    },
    /// Packets with the key go on to `next`, unchanged but for the route id.
    Intermediary(NextHop),
}

impl RuleKind {
    /// The type byte.
    pub fn type_byte(&self) -> u8 {
        match self {
            Self::Consume(_) => 0x00,
            Self::Forward { .. } => 0x01,
            Self::Intermediary(_) => 0x02,
        }
    }

    /// A stable name (metric label `type`).
    pub fn label(&self) -> &'static str {
        match self {
            Self::Consume(_) => "consume",
            Self::Forward { .. } => "forward",
            Self::Intermediary(_) => "intermediary",
        }
    }
}

/// A routing rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The route id the rule is found under.
    pub key: RouteId,
    /// Idle longer than this, the rule is collected.
    pub keep_alive: Duration,
    /// What it does.
    pub kind: RuleKind,
}

/// Why rule bytes are refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// Not the length its type has.
    #[error("a rule of type {type_byte:#04x} is {expected} bytes, not {len}")]
    Length {
        /// The type byte (or 0 when too short to have one).
        type_byte: u8,
        /// The length of the bytes.
        len: usize,
        /// The length the type has.
        expected: usize,
    },
    /// The type byte is not a rule type.
    #[error("unknown rule type {0:#04x}")]
    UnknownType(u8),
    /// A route id is 0.
    #[error("route id 0 is never a route")]
    ZeroRouteId,
    /// A port is 0.
    #[error("port 0 is not a port")]
    ZeroPort,
    /// A key in the descriptor is not a valid public key.
    #[error("a key in the route descriptor is not a valid public key")]
    InvalidKey,
    /// The keep-alive is outside 1 s – 1 h.
    #[error("keep-alive {0} ms is outside 1000..=3600000")]
    KeepAlive(u32),
}

fn route_id(bytes: &[u8]) -> Result<RouteId, RuleError> {
    let value = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    RouteId::new(value).ok_or(RuleError::ZeroRouteId)
}

impl Rule {
    /// A rule with the default keep-alive.
    pub fn new(key: RouteId, kind: RuleKind) -> Self {
        Self {
            key,
            keep_alive: DEFAULT_KEEP_ALIVE,
            kind,
        }
    }

    /// The bytes of ROUTING.md §4.1.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAX_RULE_LEN);
        let millis = u32::try_from(self.keep_alive.as_millis()).unwrap_or(u32::MAX);
        out.extend_from_slice(&millis.to_be_bytes());
        out.push(self.kind.type_byte());
        out.extend_from_slice(&self.key.get().to_be_bytes());
        match &self.kind {
            RuleKind::Consume(descriptor) => descriptor.encode_into(&mut out),
            RuleKind::Forward { descriptor, next } => {
                descriptor.encode_into(&mut out);
                next.encode_into(&mut out);
            }
            RuleKind::Intermediary(next) => next.encode_into(&mut out),
        }
        out
    }

    /// Reads and validates a rule: length first, then every field.
    pub fn decode(bytes: &[u8]) -> Result<Self, RuleError> {
        if bytes.len() < RULE_HEADER_LEN {
            return Err(RuleError::Length {
                type_byte: bytes.get(4).copied().unwrap_or(0),
                len: bytes.len(),
                expected: RULE_HEADER_LEN,
            });
        }
        let type_byte = bytes[4];
        let body_len = match type_byte {
            0x00 => DESCRIPTOR_LEN,
            0x01 => DESCRIPTOR_LEN + NEXT_HOP_LEN,
            0x02 => NEXT_HOP_LEN,
            other => return Err(RuleError::UnknownType(other)),
        };
        let expected = RULE_HEADER_LEN + body_len;
        if bytes.len() != expected {
            return Err(RuleError::Length {
                type_byte,
                len: bytes.len(),
                expected,
            });
        }
        let millis = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let keep_alive = Duration::from_millis(u64::from(millis));
        if !(MIN_KEEP_ALIVE..=MAX_KEEP_ALIVE).contains(&keep_alive) {
            return Err(RuleError::KeepAlive(millis));
        }
        let key = route_id(&bytes[5..9])?;
        let body = &bytes[RULE_HEADER_LEN..];
        let kind = match type_byte {
            0x00 => RuleKind::Consume(RouteDescriptor::decode(body)?),
            0x01 => RuleKind::Forward {
                descriptor: RouteDescriptor::decode(&body[..DESCRIPTOR_LEN])?,
                next: NextHop::decode(&body[DESCRIPTOR_LEN..])?,
            },
            _ => RuleKind::Intermediary(NextHop::decode(body)?),
        };
        Ok(Self {
            key,
            keep_alive,
            kind,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dmsg::identity::{Keypair, SMALL_ORDER_KEYS};
    use proptest::prelude::*;

    fn descriptor() -> RouteDescriptor {
        RouteDescriptor {
            src_pk: Keypair::generate().public(),
            dst_pk: Keypair::generate().public(),
            src_port: Port::new(1).unwrap_or_else(|| unreachable!()),
            dst_port: Port::new(1080).unwrap_or_else(|| unreachable!()),
        }
    }

    fn id(n: u32) -> RouteId {
        RouteId::new(n).unwrap_or_else(|| unreachable!())
    }

    fn every_kind() -> Vec<Rule> {
        let next = NextHop {
            route: id(9),
            transport: [7; 16],
        };
        vec![
            Rule::new(id(1), RuleKind::Consume(descriptor())),
            Rule::new(
                id(2),
                RuleKind::Forward {
                    descriptor: descriptor(),
                    next,
                },
            ),
            Rule {
                keep_alive: Duration::from_secs(3600),
                ..Rule::new(id(u32::MAX), RuleKind::Intermediary(next))
            },
        ]
    }

    /// ROUTING.md §4.1: each type encodes to its stated length and decodes back.
    #[test]
    fn every_rule_type_round_trips_at_its_length() {
        for (rule, len) in every_kind().into_iter().zip([77, 97, 29]) {
            let bytes = rule.encode();
            assert_eq!(bytes.len(), len, "{}", rule.kind.label());
            assert_eq!(Rule::decode(&bytes), Ok(rule));
        }
    }

    /// ROUTING.md §4.1: zero ids, zero ports, small-order keys, bad keep-alives, unknown
    /// types and wrong lengths are refused when decoded.
    #[test]
    fn invalid_fields_are_refused_at_decode() {
        let consume = every_kind()[0].encode();
        let mut zero_key = consume.clone();
        zero_key[5..9].copy_from_slice(&[0; 4]);
        assert_eq!(Rule::decode(&zero_key), Err(RuleError::ZeroRouteId));
        let mut zero_port = consume.clone();
        zero_port[73..75].copy_from_slice(&[0; 2]);
        assert_eq!(Rule::decode(&zero_port), Err(RuleError::ZeroPort));
        for small in SMALL_ORDER_KEYS {
            let mut weak = consume.clone();
            let bytes = hex::decode(small).unwrap_or_default();
            weak[9..41].copy_from_slice(&bytes);
            assert_eq!(Rule::decode(&weak), Err(RuleError::InvalidKey), "{small}");
        }
        let mut fast = consume.clone();
        fast[0..4].copy_from_slice(&999u32.to_be_bytes());
        assert_eq!(Rule::decode(&fast), Err(RuleError::KeepAlive(999)));
        let mut unknown = consume.clone();
        unknown[4] = 3;
        assert_eq!(Rule::decode(&unknown), Err(RuleError::UnknownType(3)));
        assert!(matches!(
            Rule::decode(&consume[..76]),
            Err(RuleError::Length { len: 76, .. })
        ));
        let intermediary = every_kind()[2].encode();
        let mut zero_next = intermediary.clone();
        zero_next[9..13].copy_from_slice(&[0; 4]);
        assert_eq!(Rule::decode(&zero_next), Err(RuleError::ZeroRouteId));
    }

    proptest! {
        /// Arbitrary bytes never panic the decoder, and whatever decodes re-encodes to the
        /// same bytes (no two encodings of one rule).
        #[test]
        fn arbitrary_bytes_never_panic_and_decoded_rules_are_canonical(
            bytes in proptest::collection::vec(any::<u8>(), 0..=2 * MAX_RULE_LEN),
        ) {
            if let Ok(rule) = Rule::decode(&bytes) {
                prop_assert_eq!(rule.encode(), bytes);
            }
        }

        /// Mutating one byte of a valid rule never panics and never yields a rule that
        /// re-encodes differently.
        #[test]
        fn mutated_rules_decode_canonically_or_fail(which in 0usize..3, at in 0usize..97, byte in any::<u8>()) {
            let mut bytes = every_kind()[which].encode();
            let at = at % bytes.len();
            bytes[at] = byte;
            if let Ok(rule) = Rule::decode(&bytes) {
                prop_assert_eq!(rule.encode(), bytes);
            }
        }
    }
}
