//! In-memory handshakes (PROTOCOL.md §4): every combination of offer and support, tampering,
//! and agreement on PQ.

use super::*;
use crate::noise::payload::PayloadError;
use crate::noise::{PqPolicy, PqSettings};
use crate::wire::Mode;

struct Ends {
    initiator: HandshakeOutcome,
    responder: HandshakeOutcome,
    sizes: Vec<usize>,
}

fn run(pattern: Pattern, mode: Mode, responder_pq: bool) -> Result<Ends, HandshakeError> {
    let alice = Keypair::generate();
    let bob = Keypair::generate();
    let binding = b"addresses";
    let (expect, msg1) = initiate(pattern, &alice, bob.public(), mode, binding)?;
    let known = (pattern == Pattern::Kk).then(|| alice.public());
    let responded = respond(pattern, &bob, known, mode, binding, &msg1, responder_pq)?;
    let answered = expect.read_answer(&responded.reply)?;
    let mut sizes = vec![msg1.len(), responded.reply.len()];
    let responder = match responded.next {
        ResponderNext::Done(outcome) => outcome,
        ResponderNext::ExpectConfirm(expect) => {
            let msg3 = answered
                .confirm
                .clone()
                .ok_or(HandshakeError::MissingRemote)?;
            sizes.push(msg3.len());
            expect.read_confirm(&msg3)?
        }
    };
    assert_eq!(answered.outcome.remote, bob.public());
    assert_eq!(responder.remote, alice.public());
    Ok(Ends {
        initiator: answered.outcome,
        responder,
        sizes,
    })
}

/// PROTOCOL.md §4.3: hybrid XK and KK complete with PQ active on both ends, with the
/// documented message sizes, and the keys match crosswise.
#[test]
fn hybrid_handshakes_complete_with_pq_on_both_ends() {
    for (pattern, sizes) in [
        (Pattern::Xk, vec![1233, 1137, 97]),
        (Pattern::Kk, vec![1233, 1137]),
    ] {
        let ends = run(pattern, Mode::Hybrid, true).unwrap();
        assert_eq!(ends.initiator.pq, PqStatus::Hybrid, "{pattern:?}");
        assert_eq!(ends.responder.pq, PqStatus::Hybrid, "{pattern:?}");
        assert_eq!(ends.sizes, sizes, "{pattern:?}");
        assert_eq!(*ends.initiator.keys.send, *ends.responder.keys.recv);
        assert_eq!(*ends.initiator.keys.recv, *ends.responder.keys.send);
    }
}

/// PROTOCOL.md §4.3: classical sizes, and both ends agree in every combination.
#[test]
fn both_ends_agree_on_pq_in_every_combination() {
    for pattern in [Pattern::Xk, Pattern::Kk] {
        for (mode, responder_pq, expected) in [
            (Mode::Hybrid, true, PqStatus::Hybrid),
            (Mode::Hybrid, false, PqStatus::Classical),
            (Mode::Classical, true, PqStatus::Classical),
            (Mode::Classical, false, PqStatus::Classical),
        ] {
            let ends = run(pattern, mode, responder_pq).unwrap();
            assert_eq!(
                ends.initiator.pq, expected,
                "{pattern:?} {mode:?} {responder_pq}"
            );
            assert_eq!(
                ends.responder.pq, expected,
                "{pattern:?} {mode:?} {responder_pq}"
            );
            assert_eq!(*ends.initiator.keys.send, *ends.responder.keys.recv);
            if mode == Mode::Classical {
                assert_eq!(ends.sizes[..2], [48, 48]);
            }
        }
    }
}

/// PROTOCOL.md §4.2: a responder that reads the mode differently (a rewritten preamble or
/// request byte) cannot complete: the mode is in the prologue.
#[test]
fn a_rewritten_mode_fails_the_handshake() {
    let alice = Keypair::generate();
    let bob = Keypair::generate();
    for pattern in [Pattern::Xk, Pattern::Kk] {
        let known = (pattern == Pattern::Kk).then(|| alice.public());
        let (_, msg1) = initiate(pattern, &alice, bob.public(), Mode::Hybrid, b"").unwrap();
        let result = respond(pattern, &bob, known, Mode::Classical, b"", &msg1, true);
        assert!(
            matches!(result, Err(HandshakeError::Noise(_))),
            "{pattern:?}"
        );
        let (_, msg1) = initiate(pattern, &alice, bob.public(), Mode::Classical, b"").unwrap();
        let result = respond(pattern, &bob, known, Mode::Hybrid, b"", &msg1, true);
        assert!(
            matches!(result, Err(HandshakeError::Noise(_))),
            "{pattern:?}"
        );
    }
}

/// PROTOCOL.md §4.2: a KK handshake bound to other addresses fails (a relay cannot redirect).
#[test]
fn kk_is_bound_to_the_stream_addresses() {
    let alice = Keypair::generate();
    let bob = Keypair::generate();
    let (_, msg1) = initiate(Pattern::Kk, &alice, bob.public(), Mode::Hybrid, b"port 80").unwrap();
    let result = respond(
        Pattern::Kk,
        &bob,
        Some(alice.public()),
        Mode::Hybrid,
        b"port 81",
        &msg1,
        true,
    );
    assert!(matches!(result, Err(HandshakeError::Noise(_))));
}

/// Any single flipped bit in any message (offer, answer, confirmation) fails the handshake:
/// PQ material cannot be stripped or altered into a silent classical session.
#[test]
fn tampering_with_any_message_never_completes() {
    let alice = Keypair::generate();
    let bob = Keypair::generate();
    for pattern in [Pattern::Xk, Pattern::Kk] {
        let known = (pattern == Pattern::Kk).then(|| alice.public());
        for target in 0..3 {
            for position in [0usize, 40, 600, 1100] {
                let (expect, mut msg1) =
                    initiate(pattern, &alice, bob.public(), Mode::Hybrid, b"").unwrap();
                if target == 0 {
                    let i = position % msg1.len();
                    msg1[i] ^= 0x40;
                }
                let Ok(responded) = respond(pattern, &bob, known, Mode::Hybrid, b"", &msg1, true)
                else {
                    assert_eq!(target, 0);
                    continue;
                };
                let mut reply = responded.reply;
                if target == 1 {
                    let i = position % reply.len();
                    reply[i] ^= 0x40;
                }
                let Ok(answered) = expect.read_answer(&reply) else {
                    assert_eq!(target, 1);
                    continue;
                };
                if let (ResponderNext::ExpectConfirm(expect), Some(mut msg3)) =
                    (responded.next, answered.confirm)
                {
                    if target == 2 {
                        let i = position % msg3.len();
                        msg3[i] ^= 0x40;
                    }
                    let confirmed = expect.read_confirm(&msg3);
                    assert_eq!(
                        confirmed.is_err(),
                        target == 2,
                        "{pattern:?} {target} {position}"
                    );
                } else {
                    assert!(target != 0 && target != 1);
                }
            }
        }
    }
}

/// Replacing the offer with an empty payload is caught: the responder's decryption fails,
/// and a hybrid prologue with a classical payload is an `OfferMismatch` even if re-encrypted.
#[test]
fn a_stripped_offer_is_refused() {
    let alice = Keypair::generate();
    let bob = Keypair::generate();
    let (_, msg1) = initiate(Pattern::Kk, &alice, bob.public(), Mode::Hybrid, b"").unwrap();
    let stripped = &msg1[..48];
    assert!(
        respond(
            Pattern::Kk,
            &bob,
            Some(alice.public()),
            Mode::Hybrid,
            b"",
            stripped,
            true
        )
        .is_err()
    );

    // An initiator that announces hybrid but sends no offer (properly encrypted) is refused.
    let secret = alice.x25519_secret();
    let remote = bob.public().to_x25519();
    let prologue = prologue(Pattern::Kk, Mode::Hybrid, b"");
    let mut liar = snow::Builder::new(params(Pattern::Kk))
        .local_private_key(secret.as_ref())
        .unwrap()
        .remote_public_key(&remote)
        .unwrap()
        .prologue(&prologue)
        .unwrap()
        .build_initiator()
        .unwrap();
    let lie = write(&mut liar, &[]).unwrap();
    let refused = respond(
        Pattern::Kk,
        &bob,
        Some(alice.public()),
        Mode::Hybrid,
        b"",
        &lie,
        true,
    );
    assert!(matches!(refused, Err(HandshakeError::OfferMismatch)));
}

/// PROTOCOL.md §4.5: `Prefer` completes classical with a counted warning; `Require` and a
/// peer known to advertise PQ fail with the typed error.
#[test]
fn the_policy_gate_warns_counts_or_refuses() {
    let prefer = PqSettings::default();
    let ends = run(Pattern::Kk, Mode::Hybrid, false).unwrap();
    let peer = ends.initiator.remote;
    let established = prefer.check(ends.initiator, false, "stream").unwrap();
    assert_eq!(established.remote(), peer);
    assert_eq!(established.pq(), PqStatus::Classical);
    assert_eq!(prefer.stats.snapshot().downgrades, 1);
    assert_eq!(prefer.stats.snapshot().classical, 1);

    let require = PqSettings {
        policy: PqPolicy::Require,
        ..PqSettings::default()
    };
    let ends = run(Pattern::Kk, Mode::Hybrid, false).unwrap();
    let refused = require.check(ends.initiator, false, "stream").unwrap_err();
    assert!(matches!(
        refused,
        HandshakeError::PqRequired {
            reason: crate::noise::RequireReason::Policy,
            ..
        }
    ));
    assert_eq!(require.stats.snapshot().pq_refused, 1);

    let ends = run(Pattern::Kk, Mode::Hybrid, false).unwrap();
    let advertised = prefer.check(ends.initiator, true, "stream").unwrap_err();
    assert!(matches!(
        advertised,
        HandshakeError::PqRequired {
            reason: crate::noise::RequireReason::PeerAdvertises,
            ..
        }
    ));
    let ends = run(Pattern::Kk, Mode::Hybrid, false).unwrap();
    let peer = ends.initiator.remote;
    let known = PqSettings {
        known_pq: Some(std::sync::Arc::new(move |pk| *pk == peer)),
        ..PqSettings::default()
    };
    assert!(known.check(ends.initiator, false, "stream").is_err());

    let ends = run(Pattern::Kk, Mode::Hybrid, true).unwrap();
    assert_eq!(
        require.check(ends.initiator, false, "stream").unwrap().pq(),
        PqStatus::Hybrid
    );
}

/// PROTOCOL.md §1, §4.3: an XK initiator that claims a small-order identity in message 3
/// (the identity point, whatever its Noise static) fails the handshake at the responder with
/// a typed error; every other small-order encoding likewise.
#[test]
fn a_small_order_identity_in_message_3_fails_the_handshake() {
    for text in crate::identity::SMALL_ORDER_KEYS {
        let alice = Keypair::generate();
        let bob = Keypair::generate();
        let (mut expect, msg1) =
            initiate(Pattern::Xk, &alice, bob.public(), Mode::Classical, b"").unwrap();
        // What a hostile initiator would write: bypasses `PublicKey::from_bytes`.
        expect.local = PublicKey::unchecked(hex::decode(text).unwrap().try_into().unwrap());
        let responded =
            respond(Pattern::Xk, &bob, None, Mode::Classical, b"", &msg1, true).unwrap();
        let answered = expect.read_answer(&responded.reply).unwrap();
        let ResponderNext::ExpectConfirm(confirm) = responded.next else {
            panic!("XK has a message 3");
        };
        let refused = confirm.read_confirm(&answered.confirm.unwrap());
        assert!(
            matches!(
                refused,
                Err(HandshakeError::Payload(PayloadError::Identity))
            ),
            "{text}: {:?}",
            refused.map(|outcome| outcome.remote)
        );
    }
}
