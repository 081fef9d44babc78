//! The mux on simulated time: two state machines wired back to back (PROTOCOL.md §5–§8).

use proptest::prelude::*;

use super::*;

/// Two muxes, initiator `a` and responder `b`, with matching keys.
struct Pair {
    a: Mux,
    b: Mux,
    now: Instant,
    a_events: Vec<MuxEvent>,
    b_events: Vec<MuxEvent>,
}

fn config() -> MuxConfig {
    MuxConfig {
        ping: PingConfig {
            interval: None,
            ..PingConfig::default()
        },
        ..MuxConfig::default()
    }
}

impl Pair {
    fn new(config: MuxConfig) -> Self {
        let now = Instant::now();
        let (k1, k2) = ([1u8; 32], [2u8; 32]);
        let a = Mux::new(Role::Initiator, config, Aead::new(&k1), Aead::new(&k2), now);
        let b = Mux::new(Role::Responder, config, Aead::new(&k2), Aead::new(&k1), now);
        let mut pair = Self {
            a,
            b,
            now,
            a_events: Vec::new(),
            b_events: Vec::new(),
        };
        pair.deliver();
        assert!(pair.a.is_ready());
        pair
    }

    /// Moves bytes both ways until nothing is left to move.
    fn deliver(&mut self) {
        loop {
            let mut to_b = self.a.take_output();
            let mut to_a = self.b.take_output();
            if to_a.is_empty() && to_b.is_empty() {
                break;
            }
            let _ = self.b.handle_input(self.now, &mut to_b);
            let _ = self.a.handle_input(self.now, &mut to_a);
            while let Some(e) = self.a.poll_event() {
                self.a_events.push(e);
            }
            while let Some(e) = self.b.poll_event() {
                self.b_events.push(e);
            }
        }
    }

    /// Opens a stream from `a`, accepted by `b`.
    fn open(&mut self) -> u32 {
        let id = self.a.open_stream(self.now, b"request").unwrap();
        self.deliver();
        assert!(self.b_events.contains(&MuxEvent::IncomingOpen {
            stream: id,
            request: Bytes::from_static(b"request"),
        }));
        self.b.accept_stream(id, b"accept").unwrap();
        self.deliver();
        assert!(self.a_events.contains(&MuxEvent::Accepted {
            stream: id,
            body: Bytes::from_static(b"accept"),
        }));
        id
    }
}

/// PROTOCOL.md §5.2, §7: open, accept, data both ways, half-close.
#[test]
fn streams_carry_data_both_ways_and_half_close() {
    let mut p = Pair::new(config());
    assert_eq!(p.a_events.first(), Some(&MuxEvent::Ready));
    let id = p.open();
    p.a.send_data(id, b"ping", false).unwrap();
    p.a.send_data(id, b"", true).unwrap();
    p.deliver();
    assert_eq!(
        p.b.recv(id).unwrap(),
        Some((Bytes::from_static(b"ping"), false))
    );
    assert_eq!(p.b.recv(id).unwrap(), Some((Bytes::new(), true)));
    assert_eq!(p.a.send_capacity(id), Err(StreamError::Finished));
    p.b.send_data(id, b"pong", true).unwrap();
    p.deliver();
    assert_eq!(
        p.a.recv(id).unwrap(),
        Some((Bytes::from_static(b"pong"), true))
    );
    assert_eq!(p.b.recv(id).unwrap(), None);
}

/// PROTOCOL.md §7.3: a rejection names its code and removes the stream.
#[test]
fn rejected_streams_report_the_code() {
    let mut p = Pair::new(config());
    let id = p.a.open_stream(p.now, b"request").unwrap();
    p.deliver();
    p.b.reject_stream(id, &ReasonBody::new(Code::NoListener, "port 80"));
    p.deliver();
    assert!(p.a_events.contains(&MuxEvent::Rejected {
        stream: id,
        reason: ReasonBody::new(Code::NoListener, "port 80"),
    }));
    assert_eq!(p.a.stream_count(), 0);
    assert_eq!(p.b.stream_count(), 0);
}

/// PROTOCOL.md §6: a stream whose reader stalls uses up only its own window; another stream
/// on the same session keeps moving, and the stalled side never buffers past the window.
#[test]
fn a_stalled_stream_does_not_block_its_siblings() {
    let mut p = Pair::new(config());
    let stalled = p.open();
    let moving = p.open();
    let chunk = vec![7u8; 16 * 1024];
    while let Ok(capacity) = p.a.send_capacity(stalled) {
        if capacity == 0 {
            break;
        }
        p.a.send_data(stalled, &chunk[..capacity.min(chunk.len())], false)
            .unwrap();
        p.deliver();
    }
    let buffered = p.b.streams[&stalled].recv_buffered;
    assert_eq!(
        buffered,
        u64::from(INITIAL_STREAM_WINDOW),
        "exactly one window buffered"
    );

    let mut moved = 0usize;
    while moved < 8 * 1024 * 1024 {
        let capacity = p.a.send_capacity(moving).unwrap();
        assert!(capacity > 0, "the sibling is never starved (moved {moved})");
        let n = capacity.min(chunk.len());
        p.a.send_data(moving, &chunk[..n], false).unwrap();
        p.deliver();
        while let Some((body, _)) = p.b.recv(moving).unwrap() {
            moved += body.len();
        }
        p.deliver();
    }
    assert_eq!(
        p.b.streams[&stalled].recv_buffered, buffered,
        "still one window, no more"
    );
}

/// PROTOCOL.md §6: the session window caps what all streams together may have in flight.
#[test]
fn the_session_window_bounds_all_streams_together() {
    let mut p = Pair::new(config());
    let streams: Vec<u32> = (0..80).map(|_| p.open()).collect();
    let chunk = vec![1u8; MAX_DATA_BODY];
    let mut sent = 0u64;
    for &id in &streams {
        while let Ok(capacity) = p.a.send_capacity(id) {
            if capacity == 0 {
                break;
            }
            p.a.send_data(id, &chunk[..capacity], false).unwrap();
            sent += capacity as u64;
        }
    }
    p.deliver();
    assert_eq!(sent, u64::from(INITIAL_SESSION_WINDOW));
    let buffered: u64 = streams.iter().map(|id| p.b.streams[id].recv_buffered).sum();
    assert_eq!(buffered, u64::from(INITIAL_SESSION_WINDOW));
}

/// PROTOCOL.md §6: sending beyond a stream's window resets that stream (FLOW_CONTROL), and
/// the frames already in flight behind the overflowing one are dropped, not a violation.
#[test]
fn exceeding_a_stream_window_resets_the_stream() {
    let mut p = Pair::new(config());
    let id = p.open();
    let sibling = p.open();
    // Pretend `a` was granted more than `b` allowed.
    p.a.streams.get_mut(&id).unwrap().send_credit = u64::from(INITIAL_STREAM_WINDOW) * 3;
    let chunk = vec![0u8; MAX_DATA_BODY];
    // Four frames fill the window; four more are in flight when `b` resets the stream.
    for _ in 0..8 {
        p.a.send_data(id, &chunk, false).unwrap();
    }
    p.deliver();
    assert!(p.b_events.contains(&MuxEvent::Reset {
        stream: id,
        code: Code::FlowControl
    }));
    assert!(p.a_events.contains(&MuxEvent::Reset {
        stream: id,
        code: Code::FlowControl
    }));
    assert!(
        !p.a.is_closed() && !p.b.is_closed(),
        "only the stream is reset"
    );
    // The session's credit for the dropped frames came back: the sibling still moves data.
    p.a.send_data(sibling, b"still here", true).unwrap();
    p.deliver();
    assert_eq!(
        p.b.recv(sibling).unwrap(),
        Some((Bytes::from_static(b"still here"), true))
    );
    // The overflowing frame and the three behind it were counted as consumed (to be granted
    // back), as was what the sibling read.
    assert_eq!(p.b.session_recv_consumed, 4 * MAX_DATA_BODY as u64 + 10);
}

/// PROTOCOL.md §5.3: a frame altered in flight closes the session.
#[test]
fn a_tampered_frame_closes_the_session() {
    let mut p = Pair::new(config());
    let id = p.open();
    p.a.send_data(id, b"hello", false).unwrap();
    let mut bytes = p.a.take_output();
    bytes[2] ^= 1; // the stream id, inside the authenticated header
    assert!(matches!(
        p.b.handle_input(p.now, &mut bytes),
        Err(MuxError::Auth)
    ));
    assert!(p.b.is_closed());
    p.deliver();
    assert!(p.a_events.iter().any(|e| matches!(
        e,
        MuxEvent::Closed {
            code: Code::ProtocolViolation,
            by_peer: true,
            ..
        }
    )));
}

/// PROTOCOL.md §5.2: streams use the opener's parity; a wrong id is a violation.
#[test]
fn stream_ids_follow_the_role_parity() {
    let mut p = Pair::new(config());
    assert_eq!(p.a.open_stream(p.now, b"x").unwrap() % 2, 1);
    assert_eq!(p.b.open_stream(p.now, b"y").unwrap() % 2, 0);
    p.deliver();
    assert_eq!(p.b.stream_count(), 2);
}

/// PROTOCOL.md §8: pings go out on schedule, answers give the RTT, and two unanswered
/// deadlines close the session.
#[test]
fn pings_measure_rtt_and_missing_pongs_close_the_session() {
    let ping = PingConfig {
        interval: Some(Duration::from_secs(60)),
        deadline: Duration::from_secs(18),
        max_failures: 2,
    };
    let mut p = Pair::new(MuxConfig { ping, ..config() });
    p.a.handle_timeout(p.now);
    p.deliver();
    assert!(
        p.a_events
            .iter()
            .any(|e| matches!(e, MuxEvent::Pong { .. }))
    );
    assert_eq!(p.a.poll_timeout(), Some(p.now + Duration::from_secs(60)));

    // Now the peer stops answering.
    let start = p.now + Duration::from_secs(60);
    p.a.handle_timeout(start);
    let _ = p.a.take_output();
    assert_eq!(p.a.poll_timeout(), Some(start + Duration::from_secs(18)));
    p.a.handle_timeout(start + Duration::from_secs(18));
    assert!(!p.a.is_closed(), "one failure is tolerated");
    p.a.handle_timeout(start + Duration::from_secs(60));
    let _ = p.a.take_output();
    p.a.handle_timeout(start + Duration::from_secs(78));
    assert_eq!(p.a.close_code(), Some(Code::PingTimeout));
}

/// A GOAWAY from the peer fails every stream with the peer's code.
#[test]
fn goaway_fails_every_stream() {
    let mut p = Pair::new(config());
    let id = p.open();
    p.b.close(Code::Replaced, "newer session");
    p.deliver();
    assert_eq!(p.a.close_code(), Some(Code::Replaced));
    assert_eq!(
        p.a.send_capacity(id),
        Err(StreamError::SessionClosed(Code::Replaced))
    );
    assert_eq!(
        p.a.open_stream(p.now, b"x"),
        Err(StreamError::SessionClosed(Code::Replaced))
    );
}

/// PROTOCOL.md §6.2: a handle dropped after FIN loses nothing — the peer still reads every
/// body and the FIN — while the peer's own sends stop with STOPPED.
#[test]
fn releasing_a_finished_sender_delivers_everything_and_stops_the_peer() {
    let mut p = Pair::new(config());
    let id = p.open();
    p.a.send_data(id, b"first", false).unwrap();
    p.a.send_data(id, b"last", true).unwrap();
    p.a.release_stream(id);
    p.deliver();
    assert!(p.a.streams.is_empty(), "a forgot the stream");
    assert!(p.b_events.contains(&MuxEvent::Stopped {
        stream: id,
        code: Code::Cancelled
    }));
    assert_eq!(
        p.b.recv(id).unwrap(),
        Some((Bytes::from_static(b"first"), false))
    );
    assert_eq!(
        p.b.recv(id).unwrap(),
        Some((Bytes::from_static(b"last"), true))
    );
    assert!(p.b.recv_finished(id));
    assert_eq!(
        p.b.send_capacity(id),
        Err(StreamError::Stopped(Code::Cancelled))
    );
    // b's data still in flight towards a is dropped there, with the session credit back.
    p.b.release_stream(id);
    p.deliver();
    assert!(p.b.streams.is_empty());
    assert!(!p.a.is_closed() && !p.b.is_closed());
}

/// PROTOCOL.md §6.2: a handle dropped before it finished sending aborts the stream: the
/// peer sees RESET CANCELLED and its unread data is discarded.
#[test]
fn releasing_an_unfinished_sender_resets_the_stream() {
    let mut p = Pair::new(config());
    let id = p.open();
    p.a.send_data(id, b"half", false).unwrap();
    p.a.release_stream(id);
    p.deliver();
    assert!(p.b_events.contains(&MuxEvent::Reset {
        stream: id,
        code: Code::Cancelled
    }));
    assert_eq!(p.b.recv(id), Err(StreamError::Reset(Code::Cancelled)));
}

/// PROTOCOL.md §6.2: a STOP while data is in flight: the stopped side's frames are dropped
/// with their session credit returned; the other direction keeps flowing.
#[test]
fn stop_drops_what_is_in_flight_and_keeps_the_other_direction() {
    let mut p = Pair::new(config());
    let id = p.open();
    p.a.send_data(id, &[7u8; 1000], false).unwrap();
    p.b.stop_stream(id, Code::Cancelled);
    p.deliver();
    assert!(p.a_events.contains(&MuxEvent::Stopped {
        stream: id,
        code: Code::Cancelled
    }));
    assert_eq!(
        p.b.recv(id).unwrap(),
        None,
        "the in-flight body was dropped"
    );
    assert_eq!(
        p.a.send_data(id, b"more", false),
        Err(StreamError::Stopped(Code::Cancelled))
    );
    p.b.send_data(id, b"reply", true).unwrap();
    p.deliver();
    assert_eq!(
        p.a.recv(id).unwrap(),
        Some((Bytes::from_static(b"reply"), true))
    );
    assert_eq!(p.b.session_recv_consumed, 1000);
}

/// PROTOCOL.md §6.1: a WINDOW that would push credit past 2³¹ closes the session and is
/// not applied (found by the `mux_frames` fuzz target: the credit was raised first).
#[test]
fn an_overflowing_grant_is_refused_before_it_is_applied() {
    let mut p = Pair::new(config());
    let before = p.b.session_send_credit;
    let mut frame = BytesMut::new();
    let grant = u32::MAX.to_be_bytes();
    seal_frame(&mut p.a.send, &mut frame, FrameType::Window, 0, 0, &grant).unwrap();
    assert!(p.b.handle_input(p.now, &mut frame).is_err());
    assert!(p.b.is_closed());
    assert_eq!(p.b.session_send_credit, before);
}

/// Inputs the fuzz targets once crashed on (`testdata/fuzz/`), replayed on every test run.
#[test]
fn past_fuzzer_findings_stay_fixed() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/fuzz");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("mux_frames-") {
            fuzzing::sealed_frames(&data);
        } else if name.starts_with("mux_pair-") {
            fuzzing::pair(&data);
        } else {
            panic!("{name}: name it after its target");
        }
        replayed += 1;
    }
    assert!(replayed >= 2, "the findings are in {}", dir.display());
}

proptest! {
    /// Arbitrary bytes fed to a session never panic it and never leave it open after garbage.
    #[test]
    fn arbitrary_input_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let mut p = Pair::new(config());
        let mut input = BytesMut::from(&bytes[..]);
        let result = p.b.handle_input(p.now, &mut input);
        if result.is_err() {
            prop_assert!(p.b.is_closed());
        }
    }

    /// Fuzzer-chosen frames sealed with the session's real key reach frame handling and
    /// never panic it or break its accounting (the `mux_frames` fuzz target's property).
    #[test]
    fn sealed_arbitrary_frames_keep_the_accounting(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        fuzzing::sealed_frames(&bytes);
    }

    /// Two muxes driven by arbitrary commands never see a violation from each other and keep
    /// their windows within bounds (the `mux_pair` fuzz target's property).
    #[test]
    fn two_muxes_under_arbitrary_commands_stay_consistent(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        fuzzing::pair(&bytes);
    }
}

/// PROTOCOL.md §6.1: an open not answered within `open_timeout` is a timer of the mux: the
/// stream is reset (CANCELLED) to the peer and reported once; an answered open never times
/// out, and the deadlines of answered opens do not pile up.
#[test]
fn an_unanswered_open_times_out_as_a_mux_timer() {
    let mut p = Pair::new(MuxConfig {
        open_timeout: Duration::from_secs(5),
        ..config()
    });
    let answered = p.open();
    let silent = p.a.open_stream(p.now, b"request").unwrap();
    p.deliver();
    let deadline = p.a.poll_timeout().unwrap();
    assert_eq!(deadline, p.now + Duration::from_secs(5));
    p.a.handle_timeout(deadline - Duration::from_millis(1));
    assert!(p.a.poll_event().is_none(), "not before the deadline");
    p.a.handle_timeout(deadline);
    assert_eq!(
        p.a.poll_event(),
        Some(MuxEvent::OpenTimedOut { stream: silent })
    );
    assert!(
        p.a.poll_event().is_none(),
        "the answered stream does not time out"
    );
    assert_eq!(p.a.poll_timeout(), None, "nothing left to time");
    assert_eq!(p.a.send_capacity(silent), Err(StreamError::Unknown));
    p.deliver();
    assert!(
        p.b_events.contains(&MuxEvent::Reset {
            stream: silent,
            code: Code::Cancelled
        }),
        "the peer forgets it: {:?}",
        p.b_events
    );
    assert!(p.a.send_capacity(answered).is_ok());
    for _ in 0..1000 {
        p.open();
    }
    assert!(
        p.a.opening.len() <= 1,
        "answered opens are forgotten: {}",
        p.a.opening.len()
    );
}
