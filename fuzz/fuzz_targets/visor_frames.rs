//! visor ROUTING.md §3: arbitrary bytes on an unsealed transport never panic the frame
//! reader, and every frame it yields is within its type's bounds and re-encodes its header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use visor::packet::{MAX_BODY, check_header};
use visor::transport::frame::FrameReader;

fuzz_target!(|data: &[u8]| {
    if let Ok(head) = <[u8; 8]>::try_from(data.get(..8).unwrap_or_default()) {
        if let Ok(header) = check_header(&head) {
            assert_eq!(header.encode(), head);
            assert!(usize::from(header.body_len) <= MAX_BODY);
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap_or_else(|_| unreachable!("a current-thread runtime builds"));
    runtime.block_on(async {
        let mut reader = FrameReader::new(data, None);
        while let Ok(Some(frame)) = reader.read().await {
            let (min, max) = frame.header.kind.body_bounds();
            assert!(frame.body.len() >= min && frame.body.len() <= max);
        }
    });
});
