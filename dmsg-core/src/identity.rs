//! Identities: one Ed25519 key pair per entity, its 32-byte public key the entity's address.
//!
//! The same key serves for signatures (discovery entries) and for Noise: the X25519 static key
//! is the Montgomery form of the Ed25519 key (PROTOCOL.md §1). Secret keys live in key files
//! created with mode 0600; a key file that group or others can access is refused.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use curve25519_dalek::edwards::CompressedEdwardsY;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

/// Length of a public key in bytes.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of a signature in bytes.
pub const SIGNATURE_LEN: usize = 64;

/// A public key: the identity and address of a visor, server or service (PROTOCOL.md §1).
///
/// Always a valid Ed25519 point; printed as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; PUBLIC_KEY_LEN]);

/// The eight small-order points of edwards25519, canonically encoded as hex: the identity
/// (order 1), order 2, the two of order 4 and the four of order 8. Every one is refused as a
/// key ([`InvalidKey::SmallOrder`]); tests of each place a key is read use this list.
pub const SMALL_ORDER_KEYS: [&str; 8] = [
    "0100000000000000000000000000000000000000000000000000000000000000",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000080",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
];

/// Why bytes or text are not a public key.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidKey {
    /// Not 32 bytes.
    #[error("a public key is 32 bytes, got {0} bytes")]
    Length(usize),
    /// Text that is not 64 characters.
    #[error("a public key is 64 hex characters, got {0} characters")]
    TextLength(usize),
    /// Not hexadecimal.
    #[error("a public key is written in hex: {0}")]
    Hex(#[from] hex::FromHexError),
    /// 32 bytes that are not a point on the curve.
    #[error("not a valid Ed25519 public key")]
    NotOnCurve,
    /// Another encoding of a point (a y coordinate of p or more, or the sign bit set where
    /// x = 0): refused, so every key has exactly one form.
    #[error("not the canonical encoding of an Ed25519 point")]
    NonCanonical,
    /// A point of small order (the identity or another of the 8 torsion points): such a key
    /// "verifies" forged signatures and gives a predictable Noise DH (PROTOCOL.md §1).
    #[error("a small-order (weak) Ed25519 public key")]
    SmallOrder,
}

impl PublicKey {
    /// Checks that `bytes` are a valid Ed25519 public key: a point on the curve, canonically
    /// encoded, not of small order. Every key read from the network comes through here.
    pub fn from_bytes(bytes: [u8; PUBLIC_KEY_LEN]) -> Result<Self, InvalidKey> {
        let point = CompressedEdwardsY(bytes)
            .decompress()
            .ok_or(InvalidKey::NotOnCurve)?;
        if point.compress().to_bytes() != bytes {
            return Err(InvalidKey::NonCanonical);
        }
        if point.is_small_order() {
            return Err(InvalidKey::SmallOrder);
        }
        Ok(Self(bytes))
    }

    /// Any 32 bytes, unchecked: what a hostile peer could put on the wire (tests only:
    /// feature `testing`).
    #[cfg(any(test, feature = "testing"))]
    pub fn unchecked(bytes: [u8; PUBLIC_KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// [`PublicKey::from_bytes`] from a slice of any length.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, InvalidKey> {
        let array: [u8; PUBLIC_KEY_LEN] = bytes
            .try_into()
            .map_err(|_| InvalidKey::Length(bytes.len()))?;
        Self::from_bytes(array)
    }

    /// The 32 key bytes.
    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.0
    }

    /// The X25519 public key used as this identity's Noise static key (PROTOCOL.md §1).
    pub fn to_x25519(&self) -> [u8; 32] {
        // Valid by construction: every PublicKey was checked to decompress.
        VerifyingKey::from_bytes(&self.0)
            .map(|key| key.to_montgomery().to_bytes())
            .unwrap_or_default()
    }

    /// Verifies an Ed25519 signature by this key over `message`, strictly: a canonical S,
    /// and no small-order R (`verify_strict`), so no signature verifies for two messages by
    /// accident of the curve's torsion.
    pub fn verify(&self, message: &[u8], signature: &[u8; SIGNATURE_LEN]) -> bool {
        VerifyingKey::from_bytes(&self.0)
            .map(|key| {
                key.verify_strict(message, &Signature::from_bytes(signature))
                    .is_ok()
            })
            .unwrap_or(false)
    }
}

impl PublicKey {
    /// The first 8 hex characters: enough to tell the instances of a fleet apart in
    /// telemetry (`service.instance.id`), not to identify a key.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    /// The key as 64 lowercase hex characters (its text form in logs, protos and the CLI).
    pub fn to_hex(&self) -> String {
        let mut text = String::with_capacity(2 * PUBLIC_KEY_LEN);
        text.push_str(self.hex_chars().as_str());
        text
    }

    /// The hex text in a buffer on the stack (no allocation: `Display` and protos use it on
    /// every read of an entry).
    fn hex_chars(&self) -> HexKey {
        let mut chars = [0u8; 2 * PUBLIC_KEY_LEN];
        for (byte, pair) in self.0.iter().zip(chars.chunks_exact_mut(2)) {
            pair[0] = HEX_DIGITS[usize::from(byte >> 4)];
            pair[1] = HEX_DIGITS[usize::from(byte & 0x0f)];
        }
        HexKey(chars)
    }
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// A key's 64 hex characters.
struct HexKey([u8; 2 * PUBLIC_KEY_LEN]);

impl HexKey {
    fn as_str(&self) -> &str {
        // Only ASCII digits are ever written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// A key is its bytes for lookups: maps keyed by `PublicKey` can be searched with bytes not
/// yet checked to be a key (whatever such a search finds was checked when it was stored).
impl std::borrow::Borrow<[u8; PUBLIC_KEY_LEN]> for PublicKey {
    fn borrow(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.0
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.hex_chars().as_str())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = InvalidKey;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 2 * PUBLIC_KEY_LEN {
            return Err(InvalidKey::TextLength(s.chars().count()));
        }
        let mut bytes = [0u8; PUBLIC_KEY_LEN];
        hex::decode_to_slice(s, &mut bytes)?;
        Self::from_bytes(bytes)
    }
}

/// A key pair. The secret never appears in `Debug` output or logs.
#[derive(Clone)]
pub struct Keypair {
    signing: SigningKey,
    public: PublicKey,
    /// The Noise static public key, computed once.
    x25519_public: [u8; 32],
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keypair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// Why a key file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// The file could not be opened, read or written.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Group or others may access the file.
    #[error(
        "key file {path} is accessible by group or others (mode {mode:o}); run `chmod 600 {path}`"
    )]
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The content is not a key.
    #[error("key file {path} does not hold a 64-hex-character secret key")]
    Malformed {
        /// The file.
        path: PathBuf,
    },
}

impl Keypair {
    /// A fresh key pair from the operating system's random source.
    pub fn generate() -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        // The OS random source failing is unrecoverable: no key can be made safely.
        #[allow(clippy::expect_used)]
        getrandom::fill(seed.as_mut()).expect("the operating system's random source failed");
        Self::from_seed(&seed)
    }

    /// The key pair for a 32-byte secret seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let signing = SigningKey::from_bytes(seed);
        let public = PublicKey(signing.verifying_key().to_bytes());
        let x25519_public = signing.verifying_key().to_montgomery().to_bytes();
        Self {
            signing,
            public,
            x25519_public,
        }
    }

    /// The public key.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// Signs `message` (Ed25519).
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.signing.sign(message).to_bytes()
    }

    /// The X25519 secret used as the Noise static key (PROTOCOL.md §1).
    pub fn x25519_secret(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_scalar_bytes())
    }

    /// The X25519 public key matching [`Keypair::x25519_secret`] (PROTOCOL.md §1).
    pub fn x25519_public(&self) -> [u8; 32] {
        self.x25519_public
    }

    /// Reads a key file written by [`Keypair::save`]. Refuses a file group or others can access.
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        let io = |source| KeyFileError::Io {
            path: path.to_owned(),
            source,
        };
        check_private(path)?;
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io)?);
        let line = text
            .lines()
            .map(str::trim)
            .find(|line| !line.is_empty() && !line.starts_with('#'))
            .ok_or_else(|| KeyFileError::Malformed {
                path: path.to_owned(),
            })?;
        let mut seed = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(line, seed.as_mut()).map_err(|_| KeyFileError::Malformed {
            path: path.to_owned(),
        })?;
        Ok(Self::from_seed(&seed))
    }

    /// The key in `path`, or without one a fresh ephemeral key — logged as such, since a
    /// process's identity then changes at every start (development only).
    pub fn load_or_ephemeral(path: Option<&Path>) -> Result<Self, KeyFileError> {
        match path {
            Some(path) => Self::load(path),
            None => {
                let keypair = Self::generate();
                tracing::warn!(
                    pk = %keypair.public(),
                    "no --key-file: using an ephemeral key (development only; it changes at every start)"
                );
                Ok(keypair)
            }
        }
    }

    /// Writes the secret to a new file with mode 0600. Never overwrites an existing file.
    pub fn save(&self, path: &Path) -> Result<(), KeyFileError> {
        let io = |source| KeyFileError::Io {
            path: path.to_owned(),
            source,
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(io)?;
        let body = Zeroizing::new(format!(
            "# skywire dmsg secret key; public key {}\n{}\n",
            self.public,
            hex::encode(self.signing.to_bytes())
        ));
        file.write_all(body.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)
    }
}

/// Refuses a key (or other secret) file that group or others can access.
pub fn check_private(path: &Path) -> Result<(), KeyFileError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let metadata = std::fs::metadata(path).map_err(|source| KeyFileError::Io {
            path: path.to_owned(),
            source,
        })?;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyFileError::InsecurePermissions {
                path: path.to_owned(),
                mode,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
