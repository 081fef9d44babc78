//! gRPC over dmsg: a tonic channel whose connections are dmsg streams, and dmsg listeners as
//! the incoming connections of a tonic server (PROTOCOL.md §11).
//!
//! One dmsg stream carries one HTTP/2 connection with any number of concurrent RPCs; tonic
//! opens a new stream only when it (re)connects.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use hyper_util::rt::TokioIo;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint};

use crate::addr::DmsgAddr;
use crate::client::dial::DialByAddrError;
use crate::client::{Client, DialError, Listener, WeakClient};
use crate::session::Session;
use crate::stream::DmsgStream;

/// A lazily connecting tonic channel to the gRPC server listening at `addr`, dialed through
/// `session`. Layer it with `middleware::client_stack` like any channel.
pub fn channel(client: Client, session: Session, addr: DmsgAddr) -> Channel {
    // The URI is only a label: the connector ignores it and dials `addr`.
    let endpoint = Endpoint::from_static("http://dmsg.invalid");
    endpoint.connect_with_connector_lazy(tower::service_fn(move |_uri: http::Uri| {
        let client = client.clone();
        let session = session.clone();
        async move {
            let stream = client.dial_via(&session, addr).await?;
            Ok::<_, DialError>(TokioIo::new(stream))
        }
    }))
}

/// A lazily connecting tonic channel to the gRPC server at `addr`, dialed through whichever
/// live session of the client reaches it (lowest RTT first) each time tonic (re)connects.
/// Holds the client weakly, so the client can own the channel (its discovery over dmsg).
pub fn channel_any(client: WeakClient, addr: DmsgAddr) -> Channel {
    let endpoint = Endpoint::from_static("http://dmsg.invalid");
    endpoint.connect_with_connector_lazy(tower::service_fn(move |_uri: http::Uri| {
        let client = client.clone();
        async move {
            let client = client.upgrade().ok_or(DialByAddrError::Closed)?;
            let stream = client.dial_any_session(addr).await?;
            Ok::<_, DialByAddrError>(TokioIo::new(stream))
        }
    }))
}

/// A lazily connecting tonic channel to the gRPC server at `addr`, wherever it is homed:
/// each (re)connect is a [`Client::dial`] — its entry from discovery, its servers through
/// existing or new sessions — and, when that finds no way (no discovery, or no entry), any
/// live session that reaches it. What peers on other servers than this client's are reached
/// by; a refusal by the destination is returned as it is. Holds the client weakly.
pub fn channel_to(client: WeakClient, addr: DmsgAddr) -> Channel {
    let endpoint = Endpoint::from_static("http://dmsg.invalid");
    endpoint.connect_with_connector_lazy(tower::service_fn(move |_uri: http::Uri| {
        let client = client.clone();
        async move {
            let client = client.upgrade().ok_or(DialByAddrError::Closed)?;
            let stream = match client.dial(addr).await {
                Ok(stream) => stream,
                Err(error @ (DialByAddrError::Closed | DialByAddrError::Refused(_))) => {
                    return Err(error);
                }
                Err(error) => match client.dial_any_session(addr).await {
                    Ok(stream) => stream,
                    // The first error says more (which servers were tried, and how).
                    Err(_) => return Err(error),
                },
            };
            Ok::<_, DialByAddrError>(TokioIo::new(stream))
        }
    }))
}

/// What a tonic handler learns about a dmsg connection (`request.extensions()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmsgConnectInfo {
    /// The caller's address (its key and ephemeral port).
    pub remote: DmsgAddr,
    /// The listener's address.
    pub local: DmsgAddr,
}

impl Connected for DmsgStream {
    type ConnectInfo = DmsgConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        DmsgConnectInfo {
            remote: self.remote_addr(),
            local: self.local_addr(),
        }
    }
}

/// A dmsg listener as a stream of connections for `Server::serve_with_incoming`.
#[derive(Debug)]
pub struct Incoming {
    listener: Listener,
}

impl Incoming {
    /// Serves the streams arriving at `listener`.
    pub fn new(listener: Listener) -> Self {
        Self { listener }
    }
}

impl Stream for Incoming {
    type Item = std::io::Result<DmsgStream>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut()
            .listener
            .poll_accept(cx)
            .map(|next| next.map(Ok))
    }
}

/// The code a dmsg refusal carried, when `status` is a call that failed because its stream
/// was refused (a status tonic made from the connector's error on a dmsg channel): the
/// destination's `NOT_ALLOWED`, say, which a caller answers differently from "unreachable".
pub fn refusal(status: &tonic::Status) -> Option<crate::wire::Code> {
    let mut next = std::error::Error::source(status);
    while let Some(error) = next {
        let dial = error
            .downcast_ref::<DialByAddrError>()
            .and_then(|error| match error {
                DialByAddrError::Refused(dial) => Some(dial),
                _ => None,
            })
            .or_else(|| error.downcast_ref::<DialError>());
        if let Some(DialError::Rejected { code, .. }) = dial {
            return Some(*code);
        }
        next = error.source();
    }
    None
}
