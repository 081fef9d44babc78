//! Port reservations on one client: fixed ports for listeners, ephemeral ports (49152 and
//! up) for dialing streams. A reservation is released when its guard drops.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use crate::addr::Port;

/// Why a port could not be reserved.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PortError {
    /// The port is already in use on this client.
    #[error("dmsg port {0} is already in use")]
    InUse(u16),
    /// Every ephemeral port is in use.
    #[error("all {} ephemeral dmsg ports are in use", u16::MAX - Port::EPHEMERAL_START + 1)]
    Exhausted,
}

#[derive(Debug, Default)]
struct Ports {
    used: BTreeSet<u16>,
    next_ephemeral: u16,
}

/// The ports in use on one client. Clones share the table.
#[derive(Clone, Debug, Default)]
pub struct PortAllocator {
    ports: Arc<Mutex<Ports>>,
}

impl PortAllocator {
    fn lock(&self) -> std::sync::MutexGuard<'_, Ports> {
        crate::sync::lock(&self.ports)
    }

    /// Reserves `port` (a listener's).
    pub fn reserve(&self, port: Port) -> Result<PortGuard, PortError> {
        if !self.lock().used.insert(port.get()) {
            return Err(PortError::InUse(port.get()));
        }
        Ok(PortGuard {
            allocator: self.clone(),
            port,
        })
    }

    /// Reserves the next free ephemeral port, cycling through the range.
    pub fn reserve_ephemeral(&self) -> Result<PortGuard, PortError> {
        let mut ports = self.lock();
        let span = u32::from(u16::MAX - Port::EPHEMERAL_START) + 1;
        for _ in 0..span {
            let candidate = ports.next_ephemeral.max(Port::EPHEMERAL_START);
            ports.next_ephemeral = candidate.checked_add(1).unwrap_or(Port::EPHEMERAL_START);
            if ports.used.insert(candidate) {
                drop(ports);
                return Ok(PortGuard {
                    allocator: self.clone(),
                    port: Port::new(candidate).ok_or(PortError::Exhausted)?,
                });
            }
        }
        Err(PortError::Exhausted)
    }

    /// How many ports are reserved now.
    pub fn in_use(&self) -> usize {
        self.lock().used.len()
    }
}

/// A reserved port, released on drop.
#[derive(Debug)]
pub struct PortGuard {
    allocator: PortAllocator,
    port: Port,
}

impl PortGuard {
    /// The reserved port.
    pub fn port(&self) -> Port {
        self.port
    }
}

impl Drop for PortGuard {
    fn drop(&mut self) {
        self.allocator.lock().used.remove(&self.port.get());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_exclusive_and_released_on_drop() {
        let ports = PortAllocator::default();
        let p80 = Port::new(80).unwrap();
        let guard = ports.reserve(p80).unwrap();
        assert_eq!(ports.reserve(p80).unwrap_err(), PortError::InUse(80));
        drop(guard);
        assert!(ports.reserve(p80).is_ok());
    }

    #[test]
    fn ephemeral_ports_start_at_49152_cycle_and_exhaust() {
        let ports = PortAllocator::default();
        let first = ports.reserve_ephemeral().unwrap();
        assert_eq!(first.port().get(), 49152);
        let mut held: Vec<_> = (0..16383)
            .map(|_| ports.reserve_ephemeral().unwrap())
            .collect();
        assert_eq!(held.last().unwrap().port().get(), u16::MAX);
        assert_eq!(ports.reserve_ephemeral().unwrap_err(), PortError::Exhausted);
        held.truncate(10); // release most
        drop(first);
        let again = ports.reserve_ephemeral().unwrap();
        assert!(again.port().is_ephemeral());
        assert_eq!(ports.in_use(), 11);
    }
}
