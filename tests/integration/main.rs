//! The integration tests: one module per subject, all in one test binary, so that `cargo test` links
//! one executable instead of one per file (the timing tests are apart, in `tests/timing`).
//! `cargo test --test integration -- NAME` runs the tests whose full name
//! (`module::test::backend`) contains NAME.
//!
//! Tests share this process, two or more at a time. One that changes or counts process-wide state
//! (rlimits, signal dispositions, `fork`, the fd table, threads, resident memory) runs its body in a
//! child process of its own (`util::in_child`).

#[macro_use]
#[path = "../util/mod.rs"]
mod util;
#[allow(dead_code)]
mod examples_harness;

mod acceptor;
mod blocking;
mod cancel;
mod codec_props;
mod connect;
mod cross_thread;
mod datagram;
mod device;
mod echo_integrity;
mod endpoint;
mod examples;
#[cfg(feature = "hyper")]
mod examples_http;
mod examples_ipc;
mod examples_shutdown;
mod examples_sockets;
mod examples_threads;
mod executor;
mod fd_passing;
mod framed;
mod framed_batch;
#[cfg(feature = "futures-io")]
mod futures_io;
mod generic_connection;
mod hooks;
#[cfg(feature = "hyper")]
mod hyper_http;
mod incoming;
mod op_cancel;
mod op_timeout;
mod pool;
mod read_buf;
mod read_each;
mod read_stream;
mod readiness;
mod reconnect;
mod remote_spawn;
mod run_modes;
mod service;
mod signals;
mod socket_options;
mod socket_ownership;
mod std_conversions;
mod stream_socket;
mod stress_connections;
mod stress_cross_thread;
mod stress_fd_exhaustion;
mod stress_fd_reuse;
mod stress_fork;
mod stress_hostile_peers;
mod stress_panic;
#[cfg(feature = "tokio-io")]
mod tokio_io;
