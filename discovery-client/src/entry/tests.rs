//! PROTOCOL.md §14: entry signing, validation and conversion.

use super::*;

fn server_entry(keypair: &Keypair, sequence: u64) -> Entry {
    Entry::server(
        keypair.public(),
        sequence,
        ServerPart {
            address: "127.0.0.1:8080".into(),
            available_sessions: 10,
            server_type: "community".into(),
            max_sessions: 2048,
        },
    )
    .signed(keypair)
}

/// §14.1: the signature covers every field.
#[test]
fn any_changed_field_breaks_the_signature() {
    let keypair = Keypair::generate();
    let entry = server_entry(&keypair, 1);
    assert!(entry.signature_valid());
    let edits: [fn(&mut Entry); 9] = [
        |e| e.sequence += 1,
        |e| e.timestamp += 1,
        |e| e.version.push('x'),
        |e| e.pq_capable = !e.pq_capable,
        |e| e.server.as_mut().unwrap().available_sessions += 1,
        |e| e.server.as_mut().unwrap().address.push('1'),
        |e| e.server.as_mut().unwrap().server_type.push('x'),
        |e| e.server.as_mut().unwrap().max_sessions += 1,
        |e| e.client = Some(ClientPart::default()),
    ];
    for (i, edit) in edits.iter().enumerate() {
        let mut changed = entry.clone();
        edit(&mut changed);
        assert!(
            !changed.signature_valid(),
            "edit {i} kept the signature valid"
        );
    }
}

/// §14.3: stateless checks and their errors.
#[test]
fn validation_names_what_is_wrong() {
    let keypair = Keypair::generate();
    let now = unix_nanos_now();
    let entry = server_entry(&keypair, 1);
    assert_eq!(entry.validate(200, now), Ok(()));
    assert!(matches!(
        entry.validate(MAX_ENTRY_BYTES + 1, now),
        Err(Rejected::TooLarge { .. })
    ));

    let mut forged = entry.clone();
    forged.signature[0] ^= 1;
    assert_eq!(
        forged.validate(200, now),
        Err(Rejected::BadSignature {
            owner: keypair.public()
        })
    );

    let old = Entry {
        timestamp: now - 61 * 1_000_000_000,
        ..entry.clone()
    }
    .signed(&keypair);
    assert!(matches!(
        old.validate(200, now),
        Err(Rejected::ClockSkew { .. })
    ));
    let client = Entry {
        timestamp: now - 3600 * 1_000_000_000,
        ..Entry::client(keypair.public(), 1, vec![])
    }
    .signed(&keypair);
    assert_eq!(
        client.validate(200, now),
        Ok(()),
        "client entries have no window"
    );

    let no_address = Entry::server(keypair.public(), 1, ServerPart::default()).signed(&keypair);
    assert!(matches!(
        no_address.validate(200, now),
        Err(Rejected::Malformed(_))
    ));
    let too_many = Entry::client(keypair.public(), 1, vec![keypair.public(); 65]).signed(&keypair);
    assert!(matches!(
        too_many.validate(200, now),
        Err(Rejected::Malformed(_))
    ));
}

/// §14.3: the sequence must grow and the timestamp must not go back.
#[test]
fn updates_must_move_forward() {
    let keypair = Keypair::generate();
    let entry = server_entry(&keypair, 5);
    assert_eq!(entry.validate_update(None), Ok(()));
    assert_eq!(entry.validate_update(Some((4, entry.timestamp))), Ok(()));
    assert!(matches!(
        entry.validate_update(Some((5, 0))),
        Err(Rejected::StaleSequence {
            stored_sequence: 5,
            ..
        })
    ));
    assert!(matches!(
        entry.validate_update(Some((4, entry.timestamp + 1))),
        Err(Rejected::TimestampBackwards { .. })
    ));
}

#[test]
fn entries_round_trip_through_protobuf() {
    let keypair = Keypair::generate();
    let entry =
        Entry::client(keypair.public(), 3, vec![Keypair::generate().public()]).signed(&keypair);
    let back = Entry::from_proto(&entry.to_proto()).unwrap();
    assert_eq!(back, entry);
    assert!(back.signature_valid());
    let mut bad = entry.to_proto();
    bad.owner.truncate(5);
    assert!(matches!(
        Entry::from_proto(&bad),
        Err(Rejected::Malformed(message)) if message.contains("Entry.owner: expected 64 hex characters, got 5")
    ));
}

/// §14.2: only the owner can delete, only recently, never over a newer entry.
#[test]
fn deletes_are_owned_and_fresh() {
    let owner = Keypair::generate();
    let request = delete_request(&owner);
    let pk = owner.public();
    let now = unix_nanos_now();
    let ts = request.timestamp_unix_nanos;
    assert_eq!(
        validate_delete(&pk, ts, &request.signature, Some(ts - 1), now),
        Ok(())
    );
    let stranger = delete_request(&Keypair::generate());
    assert_eq!(
        validate_delete(
            &pk,
            stranger.timestamp_unix_nanos,
            &stranger.signature,
            None,
            now
        ),
        Err(Rejected::NotOwner(pk))
    );
    assert!(matches!(
        validate_delete(&pk, ts, &request.signature, Some(ts + 1), now),
        Err(Rejected::ClockSkew { .. })
    ));
    assert!(matches!(
        validate_delete(&pk, ts, &request.signature, None, now + 120 * 1_000_000_000),
        Err(Rejected::ClockSkew { .. })
    ));
}

/// §14.4: transport ids are deterministic and order-free; both edges must sign.
#[test]
fn transports_need_both_signatures() {
    let a = Keypair::generate();
    let b = Keypair::generate();
    assert_eq!(
        transport_id(&a.public(), &b.public(), "dmsg"),
        transport_id(&b.public(), &a.public(), "dmsg")
    );
    assert_ne!(
        transport_id(&a.public(), &b.public(), "dmsg"),
        transport_id(&a.public(), &b.public(), "stcp")
    );
    let now = unix_nanos_now();
    let mut transport = TransportEntry::new(b.public(), a.public(), "dmsg");
    transport.sign_as(&a);
    assert!(matches!(
        transport.validate(now),
        Err(Rejected::BadSignature { .. })
    ));
    transport.sign_as(&b);
    assert_eq!(transport.validate(now), Ok(()));
    assert_eq!(
        TransportEntry::from_proto(&transport.to_proto()).unwrap(),
        transport
    );
}

/// PROTOCOL.md §1, §14: a small-order key is refused wherever an entry carries one — the
/// forged entry of the security review (owner `01 00…00`, signature `01 00…00 ‖ 0³²`, which
/// plain verification accepted), a delegated server, and a transport edge — naming the field.
#[test]
fn entries_with_small_order_keys_are_refused_naming_the_field() {
    let identity = format!("01{}", "00".repeat(31));
    let mut signature = vec![1u8];
    signature.extend([0u8; 63]);
    let honest = Keypair::generate();
    let forged = pb::Entry {
        owner: identity.clone(),
        sequence: 1,
        timestamp_unix_nanos: unix_nanos_now(),
        client: Some(pb::ClientPart {
            delegated_servers: vec![pk_to_proto(&honest.public())],
        }),
        signature: signature.clone(),
        ..pb::Entry::default()
    };
    let refused = Entry::from_proto(&forged).unwrap_err();
    assert!(
        refused.to_string().contains("Entry.owner") && refused.to_string().contains("small-order"),
        "{refused}"
    );

    let mut weak_delegate = Entry::client(honest.public(), 1, Vec::new())
        .signed(&honest)
        .to_proto();
    weak_delegate.client = Some(pb::ClientPart {
        delegated_servers: vec![identity.clone()],
    });
    let refused = Entry::from_proto(&weak_delegate).unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("Entry.client.delegated_servers[0]"),
        "{refused}"
    );

    let refused = pk_from_proto(&identity, "TransportEntry.edge_a").unwrap_err();
    assert_eq!(refused.field, "TransportEntry.edge_a");
    assert!(refused.reason.contains("small-order"), "{refused}");
}
