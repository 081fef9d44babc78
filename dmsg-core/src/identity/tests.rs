use super::*;

#[test]
fn public_keys_print_and_parse_as_hex() {
    let keypair = Keypair::generate();
    let text = keypair.public().to_string();
    assert_eq!(text.len(), 64);
    assert_eq!(text.parse::<PublicKey>().unwrap(), keypair.public());
    assert!(matches!(
        "abc".parse::<PublicKey>(),
        Err(InvalidKey::TextLength(3))
    ));
    assert!(matches!(
        "zz".repeat(32).parse::<PublicKey>(),
        Err(InvalidKey::Hex(_))
    ));
}

#[test]
fn keys_off_the_curve_are_refused() {
    // y = 2 is not the y-coordinate of a point on edwards25519.
    let mut bytes = [0u8; 32];
    bytes[0] = 2;
    assert_eq!(PublicKey::from_bytes(bytes), Err(InvalidKey::NotOnCurve));
}

use super::SMALL_ORDER_KEYS as SMALL_ORDER;

fn key_bytes(hex_text: &str) -> [u8; 32] {
    hex::decode(hex_text).unwrap().try_into().unwrap()
}

/// PROTOCOL.md §1: a small-order key is refused wherever a key is read (it would verify
/// forged signatures: the forged entry was owner `01 00…00`, signature
/// `01 00…00 ‖ 0³²`).
#[test]
fn small_order_keys_are_refused() {
    for text in SMALL_ORDER {
        assert_eq!(
            PublicKey::from_bytes(key_bytes(text)),
            Err(InvalidKey::SmallOrder),
            "{text}"
        );
        assert!(text.parse::<PublicKey>().is_err(), "{text}");
    }
}

/// Non-canonical encodings of points (y ≥ p, or the sign bit on x = 0) are refused: one key,
/// one form.
#[test]
fn non_canonical_encodings_are_refused() {
    let non_canonical = [
        // y = p + 1 ≡ 1: the identity again.
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        // y = 1 with the sign bit set (x = 0 has no negative).
        "0100000000000000000000000000000000000000000000000000000000000080",
        // y = p ≡ 0, sign bit set.
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    ];
    for text in non_canonical {
        assert!(
            matches!(
                PublicKey::from_bytes(key_bytes(text)),
                Err(InvalidKey::NonCanonical | InvalidKey::NotOnCurve)
            ),
            "{text}: {:?}",
            PublicKey::from_bytes(key_bytes(text))
        );
    }
    // A real key still parses, and its encoding is the canonical one.
    let real = Keypair::generate().public();
    assert_eq!(PublicKey::from_bytes(*real.as_bytes()), Ok(real));
}

/// Strict verification: a signature whose R is a small-order point is refused even with a
/// real key (plain `verify` accepts some such signatures for many messages).
#[test]
fn signatures_with_a_small_order_r_are_refused() {
    let alice = Keypair::generate();
    for text in SMALL_ORDER {
        let mut signature = [0u8; SIGNATURE_LEN];
        signature[..32].copy_from_slice(&key_bytes(text));
        assert!(!alice.public().verify(b"entry", &signature), "{text}");
    }
}

#[test]
fn signatures_verify_only_for_the_signer_and_message() {
    let alice = Keypair::generate();
    let bob = Keypair::generate();
    let signature = alice.sign(b"entry");
    assert!(alice.public().verify(b"entry", &signature));
    assert!(!alice.public().verify(b"other", &signature));
    assert!(!bob.public().verify(b"entry", &signature));
}

/// PROTOCOL.md §1: the Noise static key is the Montgomery form of the Ed25519 key; the X25519
/// secret derived from the seed must match it, or no handshake could complete.
#[test]
fn x25519_secret_matches_the_montgomery_public_key() {
    let keypair = Keypair::generate();
    let secret = keypair.x25519_secret();
    let derived = curve25519_dalek::montgomery::MontgomeryPoint::mul_base_clamped(*secret);
    assert_eq!(derived.to_bytes(), keypair.public().to_x25519());
}

#[test]
fn debug_output_never_shows_the_secret() {
    let keypair = Keypair::from_seed(&[7u8; 32]);
    let debug = format!("{keypair:?}");
    assert!(!debug.contains(&hex::encode([7u8; 32])));
    assert!(debug.contains(&keypair.public().to_string()));
}

#[test]
fn key_files_are_private_and_round_trip() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("dmsg-key-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("key");
    let _ = std::fs::remove_file(&path);

    let keypair = Keypair::generate();
    keypair.save(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(Keypair::load(&path).unwrap().public(), keypair.public());
    assert!(
        matches!(keypair.save(&path), Err(KeyFileError::Io { .. })),
        "never overwrites"
    );

    for loose in [0o640, 0o604, 0o644] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(loose)).unwrap();
        let refused = Keypair::load(&path).unwrap_err();
        assert!(
            matches!(refused, KeyFileError::InsecurePermissions { mode, .. } if mode == loose),
            "{refused}"
        );
        assert!(refused.to_string().contains("chmod 600"));
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&path, "not a key\n").unwrap();
    assert!(matches!(
        Keypair::load(&path),
        Err(KeyFileError::Malformed { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The text form is the hex crate's, lowercase, and parses back.
#[test]
fn a_key_prints_as_lowercase_hex_that_parses_back() {
    for _ in 0..50 {
        let pk = Keypair::generate().public();
        assert_eq!(pk.to_string(), hex::encode(pk.as_bytes()));
        assert_eq!(pk.to_hex(), pk.to_string());
        assert_eq!(pk.to_hex().parse::<PublicKey>().unwrap(), pk);
    }
}
