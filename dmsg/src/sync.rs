//! Lock helpers: one place that says what a poisoned lock means here.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks a mutex whose every critical section leaves its data consistent (no await inside,
/// no partial update), so a panic in another holder — a poisoned lock — leaves it usable.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
