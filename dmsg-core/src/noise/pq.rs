//! ML-KEM-768 (FIPS 203) via PQClean (`pqcrypto-mlkem`).

use pqcrypto_mlkem::mlkem768;
use pqcrypto_traits::kem::{Ciphertext as _, PublicKey as _, SharedSecret as _};
use zeroize::Zeroizing;

/// Encapsulation key length.
pub const EK_LEN: usize = 1184;
/// Ciphertext length.
pub const CT_LEN: usize = 1088;
/// Shared secret length.
pub const SS_LEN: usize = 32;

/// The initiator's ephemeral ML-KEM key pair, kept until the answer arrives.
pub(crate) struct KemKeypair {
    secret: mlkem768::SecretKey,
}

/// An ML-KEM operation failed on malformed input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed ML-KEM-768 {0}")]
pub struct KemError(&'static str);

impl KemKeypair {
    /// A fresh key pair and its encapsulation key bytes.
    pub(crate) fn generate() -> (Self, Vec<u8>) {
        let (public, secret) = mlkem768::keypair();
        (Self { secret }, public.as_bytes().to_vec())
    }

    /// The shared secret in `ciphertext`.
    pub(crate) fn decapsulate(
        &self,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<[u8; SS_LEN]>, KemError> {
        let ct =
            mlkem768::Ciphertext::from_bytes(ciphertext).map_err(|_| KemError("ciphertext"))?;
        Ok(secret_bytes(&mlkem768::decapsulate(&ct, &self.secret)))
    }
}

/// Encapsulates to `encapsulation_key`: the ciphertext to send and the shared secret.
pub(crate) fn encapsulate(
    encapsulation_key: &[u8],
) -> Result<(Vec<u8>, Zeroizing<[u8; SS_LEN]>), KemError> {
    let ek = mlkem768::PublicKey::from_bytes(encapsulation_key)
        .map_err(|_| KemError("encapsulation key"))?;
    let (shared, ciphertext) = mlkem768::encapsulate(&ek);
    Ok((ciphertext.as_bytes().to_vec(), secret_bytes(&shared)))
}

fn secret_bytes(shared: &mlkem768::SharedSecret) -> Zeroizing<[u8; SS_LEN]> {
    let mut out = Zeroizing::new([0u8; SS_LEN]);
    out.copy_from_slice(shared.as_bytes());
    out
}
