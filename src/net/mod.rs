//! I/O objects bound to a loop: stream and datagram sockets, acceptors, dialers, socket hooks and
//! devices.

pub(crate) mod accept;
pub(crate) mod acceptor;
pub(crate) mod datagram;
pub(crate) mod device;
pub(crate) mod dialer;
pub(crate) mod hooks;
pub(crate) mod incoming;
pub(crate) mod options;
pub(crate) mod registration;
pub(crate) mod socket;
pub(crate) mod std_conv;
pub(crate) mod stream;
