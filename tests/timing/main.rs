//! The tests that time the event loop against the wall clock or count its thread's CPU time: timers
//! fire never early and at most 20 ms late, and a loop waiting on a timer does not spin.
//!
//! A test binary of their own, apart from `tests/integration`, because they need the CPUs to
//! themselves: cargo runs test binaries one after another, so nothing but these tests runs while
//! they do. In the integration binary any of its tests could run beside them (10,000 connections,
//! eight threads posting a million jobs each, example servers under load): beside the eight posting
//! threads of `stress_cross_thread`, a timer fired 23 ms late.

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

#[macro_use]
#[path = "../util/mod.rs"]
mod util;

mod timer;
mod timer_no_spin;

/// Shared by the tests that load the CPUs (a million timers), held alone by those that measure
/// lateness or CPU use: the former never run beside the latter.
static CPU_HEAVY: RwLock<()> = RwLock::new(());

fn heavy() -> RwLockReadGuard<'static, ()> {
    CPU_HEAVY.read().unwrap_or_else(|e| e.into_inner())
}

fn exclusive() -> RwLockWriteGuard<'static, ()> {
    CPU_HEAVY.write().unwrap_or_else(|e| e.into_inner())
}
