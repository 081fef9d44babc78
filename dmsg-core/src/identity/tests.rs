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
