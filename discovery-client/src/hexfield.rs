//! Keys and ids in protobuf messages: `string` fields of lowercase hex (64 characters for a
//! public key, 32 for a transport id) — the text logs and the CLI print, so what an operator
//! copies from a log line is what grpcurl takes and shows. Upper case is accepted on input.
//!
//! A field that does not parse is a [`FieldError`] naming the field by its message
//! (`GetEntryRequest.pk`) and saying what was received.

use dmsg_core::identity::{InvalidKey, PUBLIC_KEY_LEN, PublicKey};

/// Length of a transport id in bytes.
pub const TRANSPORT_ID_LEN: usize = 16;

/// A key or id field that does not hold what it must (INVALID_ARGUMENT).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    /// The field, as `Message.field`.
    pub field: String,
    /// What is wrong with what was received.
    pub reason: String,
}

impl FieldError {
    fn new(field: &str, reason: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            reason: reason.into(),
        }
    }

    /// The status a server answers with: INVALID_ARGUMENT naming the field, with a
    /// `google.rpc.BadRequest` field violation and an `ErrorInfo` (`invalid_field`) in the
    /// details.
    pub fn status(&self) -> tonic::Status {
        use tonic_types::{ErrorDetails, StatusExt};
        let mut details =
            ErrorDetails::with_bad_request_violation(self.field.clone(), self.reason.clone());
        details.set_error_info(
            crate::reason::INVALID_FIELD,
            crate::reason::ERROR_DOMAIN,
            std::collections::HashMap::from([("field".to_owned(), self.field.clone())]),
        );
        tonic::Status::with_error_details(tonic::Code::InvalidArgument, self.to_string(), details)
    }
}

/// A public key as its proto field: 64 lowercase hex characters.
pub fn pk_to_proto(pk: &PublicKey) -> String {
    pk.to_hex()
}

/// The public key in the proto field `field` (named `Message.field` in the error).
pub fn pk_from_proto(text: &str, field: &str) -> Result<PublicKey, FieldError> {
    pk_from_bytes(pk_bytes_from_proto(text, field)?, field)
}

/// The 32 bytes in the public-key field `field`, not yet checked to be a key: enough to look
/// up what was stored under a key (only checked keys are stored); check them with
/// [`pk_from_bytes`] before anything else.
pub fn pk_bytes_from_proto(text: &str, field: &str) -> Result<[u8; PUBLIC_KEY_LEN], FieldError> {
    let mut bytes = [0u8; PUBLIC_KEY_LEN];
    decode(text, field, "a public key", &mut bytes)?;
    Ok(bytes)
}

/// `bytes` from the field `field` as a public key: a canonical point, not of small order.
pub fn pk_from_bytes(bytes: [u8; PUBLIC_KEY_LEN], field: &str) -> Result<PublicKey, FieldError> {
    PublicKey::from_bytes(bytes).map_err(|error| match error {
        InvalidKey::NotOnCurve => FieldError::new(field, "not a valid Ed25519 public key"),
        other => FieldError::new(field, other.to_string()),
    })
}

/// A transport id as its proto field: 32 lowercase hex characters.
pub fn id_to_proto(id: &[u8; TRANSPORT_ID_LEN]) -> String {
    hex::encode(id)
}

/// The transport id in the proto field `field`.
pub fn id_from_proto(text: &str, field: &str) -> Result<[u8; TRANSPORT_ID_LEN], FieldError> {
    let mut id = [0u8; TRANSPORT_ID_LEN];
    decode(text, field, "a transport id", &mut id)?;
    Ok(id)
}

/// Decodes `text` (exactly `2 * out.len()` hex characters) into `out`.
fn decode(text: &str, field: &str, what: &str, out: &mut [u8]) -> Result<(), FieldError> {
    let expected = 2 * out.len();
    if text.is_empty() {
        return Err(FieldError::new(
            field,
            format!("is empty: expected {what} as {expected} hex characters"),
        ));
    }
    let received = text.chars().count();
    if received != expected {
        return Err(FieldError::new(
            field,
            format!("expected {expected} hex characters, got {received} characters"),
        ));
    }
    if let Some((at, bad)) = text.char_indices().find(|(_, c)| !c.is_ascii_hexdigit()) {
        return Err(FieldError::new(
            field,
            format!("expected {expected} hex characters, got {bad:?} at position {at}"),
        ));
    }
    hex::decode_to_slice(text, out).map_err(|error| FieldError::new(field, error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dmsg_core::identity::Keypair;

    #[test]
    fn keys_round_trip_as_the_hex_logs_print() {
        let pk = Keypair::generate().public();
        let text = pk_to_proto(&pk);
        assert_eq!(text, pk.to_string());
        assert_eq!(text.len(), 64);
        assert_eq!(pk_from_proto(&text, "GetEntryRequest.pk"), Ok(pk));
        assert_eq!(pk_from_proto(&text.to_uppercase(), "X.pk"), Ok(pk));
        let id = [7u8; TRANSPORT_ID_LEN];
        assert_eq!(id_from_proto(&id_to_proto(&id), "X.id"), Ok(id));
    }

    #[test]
    fn errors_say_what_was_received_and_name_the_field() {
        let base64 = "q".repeat(43) + "=";
        let error = pk_from_proto(&base64, "GetEntryRequest.pk").unwrap_err();
        assert_eq!(
            error.to_string(),
            "GetEntryRequest.pk: expected 64 hex characters, got 44 characters"
        );
        let error = pk_from_proto("", "GetEntryRequest.pk").unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("GetEntryRequest.pk: is empty"),
            "{error}"
        );
        let error = pk_from_proto(&"g".repeat(64), "Entry.owner").unwrap_err();
        assert!(error.to_string().contains("'g' at position 0"), "{error}");
        let error = id_from_proto("abc", "GetTransportRequest.id").unwrap_err();
        assert_eq!(
            error.to_string(),
            "GetTransportRequest.id: expected 32 hex characters, got 3 characters"
        );
    }

    #[test]
    fn a_point_off_the_curve_is_refused() {
        // y = 2 is not on the Ed25519 curve.
        let mut bytes = [0u8; 32];
        bytes[0] = 2;
        let error = pk_from_proto(&hex::encode(bytes), "Entry.owner").unwrap_err();
        assert_eq!(error.reason, "not a valid Ed25519 public key");
    }
}
