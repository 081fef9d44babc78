use proptest::prelude::*;

use super::*;

fn header(ty: FrameType, flags: u8, stream: u32, body_len: usize) -> Header {
    Header {
        ty,
        flags,
        stream,
        body_len,
    }
}

/// PROTOCOL.md §5.1: a header round-trips and the frame is complete only with body and tag.
#[test]
fn a_frame_is_complete_only_with_its_body_and_tag() {
    let h = header(FrameType::Data, FIN, 7, 100);
    let mut bytes = h.encode().to_vec();
    assert_eq!(check_frame(&bytes), Ok(None));
    bytes.resize(HEADER_LEN + 100 + TAG_LEN - 1, 0);
    assert_eq!(check_frame(&bytes), Ok(None));
    bytes.push(0);
    assert_eq!(check_frame(&bytes), Ok(Some(h)));
}

/// PROTOCOL.md §5.2: each type's body bounds, flags and stream rules.
#[test]
fn invalid_headers_are_refused_before_the_body_arrives() {
    let data_too_big = header(FrameType::Data, 0, 1, MAX_DATA_BODY + 1).encode();
    assert!(matches!(
        check_frame(&data_too_big),
        Err(FrameError::BadLength { .. })
    ));
    let open_too_big = header(FrameType::Open, 0, 1, MAX_CONTROL_BODY + 1).encode();
    assert!(matches!(
        check_frame(&open_too_big),
        Err(FrameError::BadLength { .. })
    ));
    let fin_on_open = header(FrameType::Open, FIN, 1, 10).encode();
    assert!(matches!(
        check_frame(&fin_on_open),
        Err(FrameError::BadFlags { .. })
    ));
    let ping_on_stream = header(FrameType::Ping, 0, 3, 8).encode();
    assert!(matches!(
        check_frame(&ping_on_stream),
        Err(FrameError::BadStream { .. })
    ));
    let data_on_zero = header(FrameType::Data, 0, 0, 8).encode();
    assert!(matches!(
        check_frame(&data_on_zero),
        Err(FrameError::BadStream { .. })
    ));
    let mut unknown = header(FrameType::Ping, 0, 0, 8).encode();
    unknown[0] = 0x7f;
    assert_eq!(check_frame(&unknown), Err(FrameError::UnknownType(0x7f)));
    let huge = [0x04, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff];
    assert!(matches!(
        check_frame(&huge),
        Err(FrameError::BadLength { .. })
    ));
}

proptest! {
    /// Arbitrary bytes never panic the decoder, and whatever it accepts is within bounds.
    #[test]
    fn arbitrary_bytes_never_panic_and_stay_bounded(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(Some(h)) = check_frame(&bytes) {
            prop_assert!(h.body_len <= MAX_DATA_BODY);
            prop_assert!(h.frame_len() <= bytes.len());
        }
    }

    /// Every valid header round-trips through encode and check.
    #[test]
    fn valid_headers_round_trip(stream in 1u32.., len in 0usize..=MAX_DATA_BODY, fin in any::<bool>()) {
        let h = header(FrameType::Data, if fin { FIN } else { 0 }, stream, len);
        let mut bytes = h.encode().to_vec();
        bytes.resize(h.frame_len(), 0);
        prop_assert_eq!(check_frame(&bytes), Ok(Some(h)));
    }
}
