//! Per-stream state and flow-control accounting (PROTOCOL.md §6).

use std::collections::VecDeque;

use bytes::Bytes;

use crate::wire::{Code, INITIAL_STREAM_WINDOW};

/// Where a stream is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// This end sent OPEN and waits for ACCEPT or REJECT.
    LocalOpening,
    /// The peer sent OPEN; this end has not answered yet.
    RemoteOpening,
    /// Accepted: data may flow.
    Open,
}

/// One received DATA frame body.
#[derive(Clone, Debug)]
pub(crate) struct Chunk {
    pub(crate) body: Bytes,
    pub(crate) fin: bool,
}

/// A stream's state inside the mux.
#[derive(Debug)]
pub(crate) struct StreamState {
    pub(crate) phase: Phase,
    /// Bytes this end may still send before the peer grants more.
    pub(crate) send_credit: u64,
    /// This end has sent FIN.
    pub(crate) send_fin: bool,
    /// Received chunks not yet taken by the reader.
    pub(crate) recv: VecDeque<Chunk>,
    /// Bytes in `recv`.
    pub(crate) recv_buffered: u64,
    /// Bytes the peer may still send before this end grants more.
    pub(crate) recv_allowed: u64,
    /// Bytes taken by the reader and not yet granted back.
    pub(crate) recv_consumed: u64,
    /// The peer has sent FIN (it may still be queued in `recv`).
    pub(crate) recv_fin: bool,
    /// The peer reset the stream with this code.
    pub(crate) reset: Option<Code>,
    /// The peer stopped reading (STOP with this code): this end sends no more.
    pub(crate) send_stopped: Option<Code>,
    /// This end stopped reading (it sent STOP): what still arrives is dropped.
    pub(crate) recv_stopped: bool,
}

impl StreamState {
    pub(crate) fn new(phase: Phase) -> Self {
        Self {
            phase,
            send_credit: u64::from(INITIAL_STREAM_WINDOW),
            send_fin: false,
            recv: VecDeque::new(),
            recv_buffered: 0,
            recv_allowed: u64::from(INITIAL_STREAM_WINDOW),
            recv_consumed: 0,
            recv_fin: false,
            reset: None,
            send_stopped: None,
            recv_stopped: false,
        }
    }

    /// True once this end sends nothing more: it sent FIN, or the peer stopped reading.
    pub(crate) fn send_finished(&self) -> bool {
        self.send_fin || self.send_stopped.is_some()
    }

    /// True once this end reads nothing more: everything up to FIN was read, or it stopped.
    pub(crate) fn recv_finished(&self) -> bool {
        self.recv_stopped || (self.recv_fin && self.recv.is_empty())
    }

    /// True once both directions are finished and everything received was read.
    pub(crate) fn is_done(&self) -> bool {
        self.send_finished() && self.recv_finished()
    }
}
