//! A transport's outgoing queue, bounded by bytes (ROUTING.md §6.4): forwarded packets that
//! do not fit are dropped and counted, never buffered without bound; the writer task takes
//! everything queued at once and writes it as one batch.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::packet::{FrameType, HEADER_LEN, Header};
use crate::router::DropReason;

/// Bytes an outgoing transport queue holds at most (ROUTING.md §6.4).
pub const TRANSPORT_QUEUE_BYTES: usize = 32 * 1024 * 1024;

/// A frame waiting to be written.
#[derive(Clone, Debug)]
pub struct OutFrame {
    /// Its header.
    pub header: Header,
    /// Its body (sealed by the writer on a sealed transport, if its type is).
    pub body: Bytes,
}

impl OutFrame {
    fn cost(&self) -> usize {
        HEADER_LEN + self.body.len()
    }
}

#[derive(Debug, Default)]
struct State {
    frames: VecDeque<OutFrame>,
    bytes: usize,
    /// Forwarded DATA body bytes queued per route (the route id they leave with).
    per_route: HashMap<u32, usize>,
    closed: bool,
    /// The most bytes ever queued at once.
    high_water: usize,
}

/// The queue. Shared by everything that sends on the transport and its writer task.
#[derive(Debug)]
pub struct FrameQueue {
    state: Mutex<State>,
    cap: usize,
    route_cap: usize,
    ready: Notify,
}

impl FrameQueue {
    /// An empty queue of at most `cap` bytes, of which forwarded DATA bodies of one route
    /// may be at most `route_cap` (ROUTING.md §6.4).
    pub fn new(cap: usize, route_cap: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            cap,
            route_cap,
            ready: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues a forwarded frame if it fits; otherwise says why it was dropped: its route is
    /// past its window here (a sender ignoring credit), or the queue is full.
    pub fn try_push(&self, frame: OutFrame) -> Result<(), DropReason> {
        let mut state = self.lock();
        if state.closed {
            return Err(DropReason::TransportClosed);
        }
        if state.bytes + frame.cost() > self.cap {
            return Err(DropReason::QueueFull);
        }
        if frame.header.kind == FrameType::Data
            && let Some(route) = frame.header.route
        {
            let queued = state.per_route.entry(route.get()).or_default();
            if *queued + frame.body.len() > self.route_cap {
                return Err(DropReason::OverWindow);
            }
            *queued += frame.body.len();
        }
        Self::append(&mut state, frame);
        drop(state);
        self.ready.notify_one();
        Ok(())
    }

    /// Queues a frame of a local sender whatever the fill (its own flow control bounds what
    /// it sends: a route group's window, a transport's few control frames). Fails only when
    /// the transport is closed.
    pub fn push(&self, frame: OutFrame) -> Result<(), DropReason> {
        let mut state = self.lock();
        if state.closed {
            return Err(DropReason::TransportClosed);
        }
        Self::append(&mut state, frame);
        drop(state);
        self.ready.notify_one();
        Ok(())
    }

    fn append(state: &mut State, frame: OutFrame) {
        state.bytes += frame.cost();
        state.high_water = state.high_water.max(state.bytes);
        state.frames.push_back(frame);
    }

    /// Waits until frames are queued (or the queue closes), then moves them all into `into`.
    /// Returns `false` once the queue is closed and empty.
    pub async fn take_all(&self, into: &mut Vec<OutFrame>) -> bool {
        loop {
            let ready = self.ready.notified();
            {
                let mut state = self.lock();
                if !state.frames.is_empty() {
                    into.extend(state.frames.drain(..));
                    state.bytes = 0;
                    state.per_route.clear();
                    return true;
                }
                if state.closed {
                    return false;
                }
            }
            ready.await;
        }
    }

    /// Closes the queue: pushes fail from now on; what is queued is still taken.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    /// Whether the queue is closed.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Bytes queued now.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// The most bytes ever queued at once.
    pub fn high_water(&self) -> usize {
        self.lock().high_water
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{FrameType, RouteId};

    fn frame(len: usize) -> OutFrame {
        let route = RouteId::new(1).unwrap_or_else(|| unreachable!());
        OutFrame {
            header: Header::for_route(FrameType::Data, route, u16::try_from(len).unwrap_or(0)),
            body: Bytes::from(vec![0; len]),
        }
    }

    /// ROUTING.md §6.4: forwarded frames beyond the cap are dropped as `queue_full`; local
    /// frames are queued; a closed queue refuses both and still hands out what it held.
    #[tokio::test]
    async fn the_queue_is_bounded_for_forwarded_frames() {
        let queue = FrameQueue::new(1000, 1000);
        assert_eq!(queue.try_push(frame(492)), Ok(()));
        assert_eq!(queue.try_push(frame(492)), Ok(()));
        assert_eq!(queue.try_push(frame(100)), Err(DropReason::QueueFull));
        assert_eq!(queue.push(frame(100)), Ok(()));
        assert_eq!(queue.bytes(), 1108);
        queue.close();
        assert_eq!(queue.try_push(frame(1)), Err(DropReason::TransportClosed));
        assert_eq!(queue.push(frame(1)), Err(DropReason::TransportClosed));
        let mut out = Vec::new();
        assert!(queue.take_all(&mut out).await);
        assert_eq!(out.len(), 3);
        assert_eq!(queue.bytes(), 0);
        assert!(!queue.take_all(&mut out).await);
        assert_eq!(queue.high_water(), 1108);
    }

    /// ROUTING.md §6.4: one route may not hold more than its window in a hop's queue, and
    /// what the writer took no longer counts; other routes are unaffected.
    #[tokio::test]
    async fn one_route_is_bounded_by_its_window() {
        let queue = FrameQueue::new(1 << 20, 1000);
        let on = |route: u32, len: usize| OutFrame {
            header: Header::for_route(
                FrameType::Data,
                RouteId::new(route).unwrap_or_else(|| unreachable!()),
                u16::try_from(len).unwrap_or(0),
            ),
            body: Bytes::from(vec![0; len]),
        };
        assert_eq!(queue.try_push(on(1, 600)), Ok(()));
        assert_eq!(queue.try_push(on(1, 600)), Err(DropReason::OverWindow));
        assert_eq!(
            queue.try_push(on(2, 600)),
            Ok(()),
            "another route has its own window"
        );
        let mut out = Vec::new();
        assert!(queue.take_all(&mut out).await);
        assert_eq!(
            queue.try_push(on(1, 600)),
            Ok(()),
            "taken bytes no longer count"
        );
    }
}
