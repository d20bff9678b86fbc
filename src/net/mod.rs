//! I/O objects bound to a loop: endpoints, stream sockets, acceptors and devices.

pub(crate) mod acceptor;
pub(crate) mod device;
pub(crate) mod endpoint;
pub(crate) mod socket;
pub(crate) mod stream;
