//! snow's primitives, with X25519 from AWS-LC and the local static key pair precomputed.
//!
//! X25519 dominates handshake CPU. AWS-LC's implementation (BoringSSL-derived, with BMI2/ADX
//! assembly) runs a variable-base multiplication in 39 µs on the project's 2-core machine,
//! against 97 µs for curve25519-dalek's portable ladder (dmsg/README.md). snow derives the
//! static public key from the private key in every handshake; a node's static key never
//! changes, so [`crate::identity::Keypair`] computes it once. A DH result that is all zero
//! (a low-order peer point) is refused by AWS-LC and fails the handshake. BLAKE2s comes from
//! `blake2s_simd` (AVX2/SSE4.1 chosen at run time): the hybrid messages carry 2.3 KB more to
//! hash, and the portable implementation made that a measurable share of the hybrid's cost.

use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey, X25519 as AWS_X25519};
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use zeroize::Zeroizing;

/// Resolves snow's default primitives, but X25519 with a known static key pair.
pub(crate) struct StaticKeyResolver {
    secret: Zeroizing<[u8; 32]>,
    public: [u8; 32],
}

impl StaticKeyResolver {
    pub(crate) fn new(secret: Zeroizing<[u8; 32]>, public: [u8; 32]) -> Self {
        Self { secret, public }
    }
}

impl CryptoResolver for StaticKeyResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        DefaultResolver.resolve_rng()
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        match choice {
            DHChoice::Curve25519 => Some(Box::new(X25519 {
                known_secret: self.secret.clone(),
                known_public: self.public,
                secret: Zeroizing::new([0u8; 32]),
                public: [0u8; 32],
                key: None,
            })),
            _ => None,
        }
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        match choice {
            HashChoice::Blake2s => Some(Box::new(Blake2s(blake2s_simd::State::new()))),
            _ => DefaultResolver.resolve_hash(choice),
        }
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

/// X25519 for snow, aware of one precomputed key pair.
struct X25519 {
    known_secret: Zeroizing<[u8; 32]>,
    known_public: [u8; 32],
    secret: Zeroizing<[u8; 32]>,
    public: [u8; 32],
    /// The secret as an AWS-LC key (built once per key, used for every DH).
    key: Option<PrivateKey>,
}

impl X25519 {
    /// Loads `self.secret` into AWS-LC; computes the public key unless `known` is given.
    fn load(&mut self, known: Option<[u8; 32]>) -> Result<(), snow::Error> {
        let key = PrivateKey::from_private_key(&AWS_X25519, self.secret.as_ref())
            .map_err(|_| snow::Error::Dh)?;
        self.public = match known {
            Some(public) => public,
            None => key
                .compute_public_key()
                .ok()
                .and_then(|p| p.as_ref().try_into().ok())
                .ok_or(snow::Error::Dh)?,
        };
        self.key = Some(key);
        Ok(())
    }
}

impl Dh for X25519 {
    fn name(&self) -> &'static str {
        "25519"
    }

    fn pub_len(&self) -> usize {
        32
    }

    fn priv_len(&self) -> usize {
        32
    }

    fn set(&mut self, privkey: &[u8]) {
        self.secret.copy_from_slice(&privkey[..32]);
        let known = (*self.secret == *self.known_secret).then_some(self.known_public);
        if self.load(known).is_err() {
            // Unusable key: every DH with it fails (snow's `set` cannot report errors).
            self.key = None;
        }
    }

    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        rng.try_fill_bytes(self.secret.as_mut())?;
        self.load(None)
    }

    fn pubkey(&self) -> &[u8] {
        &self.public
    }

    fn privkey(&self) -> &[u8] {
        self.secret.as_ref()
    }

    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        let key = self.key.as_ref().ok_or(snow::Error::Dh)?;
        let peer = pubkey.get(..32).ok_or(snow::Error::Dh)?;
        let out = out.get_mut(..32).ok_or(snow::Error::Dh)?;
        // AWS-LC refuses a low-order peer point (an all-zero result).
        agreement::agree(
            key,
            UnparsedPublicKey::new(&AWS_X25519, peer),
            snow::Error::Dh,
            |shared| {
                out.copy_from_slice(shared);
                Ok(())
            },
        )
    }
}

/// BLAKE2s-256 for snow, SIMD-accelerated.
struct Blake2s(blake2s_simd::State);

impl Hash for Blake2s {
    fn name(&self) -> &'static str {
        "BLAKE2s"
    }

    fn block_len(&self) -> usize {
        64
    }

    fn hash_len(&self) -> usize {
        32
    }

    fn reset(&mut self) {
        self.0 = blake2s_simd::State::new();
    }

    fn input(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    fn result(&mut self, out: &mut [u8]) {
        let digest = self.0.finalize();
        out[..32].copy_from_slice(digest.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SIMD BLAKE2s is the same function as snow's own (RFC 7693 test vector "abc").
    #[test]
    fn blake2s_matches_the_reference() {
        let mut ours = Blake2s(blake2s_simd::State::new());
        ours.input(b"abc");
        let mut out = [0u8; 32];
        ours.result(&mut out);
        assert_eq!(
            hex::encode(out),
            "508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982"
        );
        let mut reference = DefaultResolver.resolve_hash(&HashChoice::Blake2s).unwrap();
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        ours.hmac(b"key", b"data", &mut a);
        reference.hmac(b"key", b"data", &mut b);
        assert_eq!(a, b);
    }
}
