use proptest::prelude::*;

use super::*;
use crate::identity::Keypair;

fn request(noise_len: usize) -> StreamRequest {
    StreamRequest {
        src: DmsgAddr::new(Keypair::generate().public(), Port::new(49152).unwrap()),
        dst: DmsgAddr::new(Keypair::generate().public(), Port::new(80).unwrap()),
        mode: Mode::Hybrid,
        noise: Bytes::from(vec![0xab; noise_len]),
    }
}

/// PROTOCOL.md §7.1.
#[test]
fn stream_requests_round_trip() {
    let r = request(1233);
    let bytes = r.encode();
    assert_eq!(bytes.len(), 1 + 34 + 34 + 1 + 2 + 1233);
    assert_eq!(StreamRequest::decode(&bytes), Ok(r));
}

/// PROTOCOL.md §7.1: every malformed field is named.
#[test]
fn malformed_requests_are_refused_with_the_reason() {
    let good = request(10).encode();
    assert_eq!(
        StreamRequest::decode(&good[..20]),
        Err(BodyError::Length(20))
    );
    let mut bad = good.to_vec();
    bad[0] = 9;
    assert_eq!(StreamRequest::decode(&bad), Err(BodyError::Version(9)));
    let mut bad = good.to_vec();
    bad[33..35].copy_from_slice(&[0, 0]);
    assert_eq!(StreamRequest::decode(&bad), Err(BodyError::Port));
    let mut bad = good.to_vec();
    bad[69] = 7;
    assert_eq!(StreamRequest::decode(&bad), Err(BodyError::Mode(7)));
    let mut bad = good.to_vec();
    bad.push(0);
    assert_eq!(
        StreamRequest::decode(&bad),
        Err(BodyError::Length(good.len() + 1))
    );
    let mut bad = good.to_vec();
    bad[70..72].copy_from_slice(&5000u16.to_be_bytes());
    assert_eq!(
        StreamRequest::decode(&bad),
        Err(BodyError::HandshakeTooLong(5000))
    );
}

/// PROTOCOL.md §7.2–§7.4.
#[test]
fn other_bodies_round_trip() {
    let accept = AcceptBody {
        noise: Bytes::from_static(b"msg2"),
    };
    assert_eq!(AcceptBody::decode(&accept.encode()), Ok(accept));
    let reject = ReasonBody::new(Code::NoListener, "nobody on port 80");
    assert_eq!(ReasonBody::decode(&reject.encode()), Ok(reject));
    let long = ReasonBody::new(Code::Normal, "é".repeat(200));
    assert!(long.reason.len() <= MAX_REASON_LEN);
    assert_eq!(
        ReasonBody::decode(&long.encode()).unwrap().reason,
        long.reason
    );
    assert_eq!(decode_window(&7u32.to_be_bytes()), Ok(7));
    assert_eq!(decode_reset(&200u16.to_be_bytes()), Ok(Code::Cancelled));
    assert_eq!(decode_ping(&9u64.to_be_bytes()), Ok(9));
    assert!(decode_window(&[1, 2]).is_err());
}

proptest! {
    /// Arbitrary bytes never panic the request parser, and an accepted request's handshake
    /// message is within the declared maximum.
    #[test]
    fn arbitrary_request_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(request) = StreamRequest::decode(&bytes) {
            prop_assert!(request.noise.len() <= MAX_HANDSHAKE_MESSAGE);
            let encoded = request.encode();
            prop_assert_eq!(encoded.as_ref(), bytes.as_slice());
        }
        let _ = AcceptBody::decode(&bytes);
        let _ = ReasonBody::decode(&bytes);
    }

    /// Mutating one byte of a valid request never panics the parser.
    #[test]
    fn mutated_requests_never_panic(index in 0usize..100, value in any::<u8>()) {
        let mut bytes = request(20).encode().to_vec();
        let i = index % bytes.len();
        bytes[i] = value;
        let _ = StreamRequest::decode(&bytes);
    }
}
