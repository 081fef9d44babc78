//! The codec every generated service and client uses: prost, plus one rule — a **request**
//! (a message whose name ends in `Request`) that holds fields this build does not know is
//! refused with INVALID_ARGUMENT (`google.rpc.ErrorInfo` reason `unknown_fields`) instead of
//! being half-served.
//!
//! Why: prost drops unknown fields while decoding, so a signed entry padded with kilobytes of
//! an unknown field would pass every size bound measured on the decoded message. Refusing
//! them makes the decoded size the received size. Responses are decoded leniently, so a
//! client keeps working against a newer server; a new request field comes with a server that
//! knows it.

use std::collections::HashMap;
use std::marker::PhantomData;

use prost::{Message, Name};
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstDecoder, ProstEncoder};

use crate::status::{ERROR_DOMAIN, status_with_info};

/// `google.rpc.ErrorInfo` reason of a request holding fields this server does not know.
pub const REASON_UNKNOWN_FIELDS: &str = "unknown_fields";

/// prost's codec, strict about unknown fields in requests (see the module docs).
#[derive(Debug, Clone)]
pub struct StrictCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for StrictCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for StrictCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Name + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = StrictDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictDecoder(ProstDecoder::default())
    }
}

/// Decodes with prost, then refuses a request whose encoding is longer than the message it
/// decoded to (the difference is fields this build does not know, or repeated scalars).
#[derive(Debug, Clone)]
pub struct StrictDecoder<U>(ProstDecoder<U>);

impl<U: Message + Name + Default> Decoder for StrictDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let received = prost::bytes::Buf::remaining(buf);
        let Some(message) = self.0.decode(buf)? else {
            return Ok(None);
        };
        if !U::NAME.ends_with("Request") {
            return Ok(Some(message));
        }
        let understood = message.encoded_len();
        if received > understood {
            return Err(unknown_fields(&U::full_name(), received - understood));
        }
        Ok(Some(message))
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

/// The refusal of a request holding `extra` bytes this server does not understand.
fn unknown_fields(message: &str, extra: usize) -> Status {
    status_with_info(
        tonic::Code::InvalidArgument,
        format!(
            "{message} holds {extra} bytes of fields this server does not know; unknown \
             fields are refused in requests (leave them unset or upgrade the server)"
        ),
        ERROR_DOMAIN,
        REASON_UNKNOWN_FIELDS,
        HashMap::from([
            ("message".to_owned(), message.to_owned()),
            ("unknown_bytes".to_owned(), extra.to_string()),
        ]),
    )
}
