//! Accepting connections on a pool: one `SO_REUSEPORT` acceptor per loop, or one acceptor that
//! hands sockets to the loops.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};

use super::{PoolHandle, Shared, adopt};
use crate::endpoint::Endpoint;
use crate::{Acceptor, DEFAULT_BACKLOG, LocalHandle, StreamSocket};

/// How [`serve`](PoolHandle::serve) spreads connections over the loops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AcceptMode {
    /// An acceptor per loop on the same port (`SO_REUSEPORT`): the kernel picks the loop of each
    /// connection (by a hash of its addresses), and no connection ever crosses threads. TCP only.
    #[default]
    ReusePort,
    /// One acceptor, on loop 0, hands each connection to a loop chosen by the [`Balance`]; TCP and
    /// Unix sockets. A handed-over connection costs one cross-thread post.
    Handoff(Balance),
}

/// Which loop a handed-over connection goes to ([`AcceptMode::Handoff`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balance {
    /// Each loop in turn.
    #[default]
    RoundRobin,
    /// The loop with the fewest open connections (the next in turn among equals).
    LeastLoaded,
}

type Handler = dyn Fn(StreamSocket, Endpoint) + Send + Sync;

thread_local! {
    /// This loop's acceptors, by the number of the `serve` call that made them (to close them if
    /// that call fails on another loop).
    static ACCEPTORS: RefCell<HashMap<u64, Rc<Acceptor>>> = RefCell::new(HashMap::new());
}

static NEXT_SERVE: AtomicU64 = AtomicU64::new(1);

/// Closes this loop's acceptors (its loop has ended).
pub(super) fn close_acceptors() {
    let acceptors = ACCEPTORS.with(|a| std::mem::take(&mut *a.borrow_mut()));
    for acceptor in acceptors.values() {
        acceptor.close();
    }
}

impl PoolHandle {
    /// Accepts connections on `endpoint` on the pool's loops, as `mode` says, and calls `handler` on
    /// the loop that owns each connection, with the socket and the peer's address. Accepting goes on
    /// until [`Serving::close`] or until the pool stops. Transient accept errors (out of fds: the
    /// acceptor backs off) do not end it.
    ///
    /// # Errors
    /// `InvalidInput` for a Unix endpoint with [`AcceptMode::ReusePort`] (the kernel does not balance
    /// Unix sockets: use `Handoff`) or when called from one of the pool's own loops (it waits for
    /// them); what `socket`, `bind` or `listen` report on any loop (the acceptors already made are
    /// closed).
    pub fn serve<H>(&self, endpoint: &Endpoint, mode: AcceptMode, handler: H) -> io::Result<Serving>
    where
        H: Fn(StreamSocket, Endpoint) + Send + Sync + 'static,
    {
        if PoolHandle::current_index().is_some() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "LoopPool::serve waits for the pool's loops: call it from outside them",
            ));
        }
        if mode == AcceptMode::ReusePort && endpoint.is_unix() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "SO_REUSEPORT does not spread Unix sockets over loops: use AcceptMode::Handoff",
            ));
        }
        let handler: Arc<Handler> = Arc::new(handler);
        let id = NEXT_SERVE.fetch_add(1, Ordering::Relaxed);
        let on = match mode {
            AcceptMode::ReusePort => self.len(),
            AcceptMode::Handoff(_) => 1,
        };
        let mut bound = endpoint.clone();
        for index in 0..on {
            let result = self.start_acceptor(id, index, &bound, mode, handler.clone());
            match result {
                Ok(local) => bound = local,
                Err(e) => {
                    close_on(self, id, index);
                    return Err(e);
                }
            }
        }
        Ok(Serving {
            endpoint: bound,
            id,
            acceptors: on,
            pool: self.clone(),
        })
    }

    /// Makes loop `index`'s acceptor on `endpoint` and starts accepting; returns the endpoint bound.
    fn start_acceptor(
        &self,
        id: u64,
        index: usize,
        endpoint: &Endpoint,
        mode: AcceptMode,
        handler: Arc<Handler>,
    ) -> io::Result<Endpoint> {
        let (tx, rx) = mpsc::channel();
        let shared = self.shared.clone();
        let endpoint = endpoint.clone();
        self.post(index, move || {
            let Some(svc) = LocalHandle::current() else {
                return;
            };
            let made = open_acceptor(&svc, &endpoint, mode);
            let made = made.and_then(|acceptor| Ok((acceptor.local_endpoint()?, acceptor)));
            match made {
                Ok((local, acceptor)) => {
                    let acceptor = Rc::new(acceptor);
                    acceptor.set_hooks(shared.loops[index].counters.clone().hooks());
                    ACCEPTORS.with(|a| a.borrow_mut().insert(id, acceptor.clone()));
                    let _ = tx.send(Ok(local));
                    let server = Rc::new(Server {
                        index,
                        mode,
                        shared,
                        handler,
                    });
                    accept_next(acceptor, server);
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        })?;
        rx.recv()
            .unwrap_or_else(|_| Err(io::Error::other("the pool loop ended before it accepted")))
    }
}

/// Closes the acceptors of `serve` call `id` on loops `0..loops`.
fn close_on(pool: &PoolHandle, id: u64, loops: usize) {
    for index in 0..loops {
        let _ = pool.post(index, move || {
            if let Some(acceptor) = ACCEPTORS.with(|a| a.borrow_mut().remove(&id)) {
                acceptor.close();
            }
        });
    }
}

/// What [`serve`](PoolHandle::serve) started: the endpoint it listens on, and a way to stop
/// accepting. Dropping it changes nothing: accepting goes on until the pool stops.
#[derive(Debug, Clone)]
pub struct Serving {
    endpoint: Endpoint,
    id: u64,
    acceptors: usize,
    pool: PoolHandle,
}

impl Serving {
    /// The endpoint bound (with the port the kernel chose for port 0).
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Closes the acceptors (each on its own loop, soon after this call): no new connection is
    /// accepted; those accepted already are untouched. A Unix socket file is removed.
    pub fn close(&self) {
        close_on(&self.pool, self.id, self.acceptors);
    }
}

fn open_acceptor(svc: &LocalHandle, endpoint: &Endpoint, mode: AcceptMode) -> io::Result<Acceptor> {
    if mode != AcceptMode::ReusePort {
        return Acceptor::bind(svc, endpoint);
    }
    let acceptor = Acceptor::new(svc);
    acceptor.open(endpoint.family())?;
    acceptor.set_reuse_address(true)?;
    acceptor.set_reuse_port(true)?;
    acceptor.bind_to(endpoint)?;
    acceptor.listen(DEFAULT_BACKLOG)?;
    Ok(acceptor)
}

/// One loop's share of a `serve` call.
struct Server {
    index: usize,
    mode: AcceptMode,
    shared: Arc<Shared>,
    handler: Arc<Handler>,
}

fn accept_next(acceptor: Rc<Acceptor>, server: Rc<Server>) {
    let again = acceptor.clone();
    acceptor.accept().then(move |res| match res {
        Ok((socket, peer)) => {
            server.deliver(socket, peer);
            accept_next(again, server);
        }
        // Closed (the pool stopped, or the serve call failed elsewhere): accepting ends.
        Err(e) if crate::is_cancelled(&e) || !again.is_open() => {
            let _ = e;
        }
        // Out of fds, a connection reset before it was accepted: the acceptor backs off by itself.
        Err(_) => accept_next(again, server),
    });
}

impl Server {
    fn deliver(&self, socket: StreamSocket, peer: Endpoint) {
        let target = match self.mode {
            AcceptMode::ReusePort => self.index,
            AcceptMode::Handoff(balance) => self.choose(balance),
        };
        if target == self.index {
            self.shared.loops[target].counters.opened(true);
            (self.handler)(socket, peer);
            return;
        }
        let Ok(fd) = socket.release() else {
            return;
        };
        let family = peer.family();
        let counters = self.shared.loops[target].counters.clone();
        let handler = self.handler.clone();
        // A loop that has ended drops the closure, and with it the fd.
        let _ = self.shared.loops[target].handle.post(move || {
            let Some(svc) = LocalHandle::current() else {
                return;
            };
            if let Ok(socket) = adopt(&svc, fd, Some(family), counters, true) {
                handler(socket, peer);
            }
        });
    }

    fn choose(&self, balance: Balance) -> usize {
        let loops = &self.shared.loops;
        let turn = self.shared.next.fetch_add(1, Ordering::Relaxed) % loops.len();
        match balance {
            Balance::RoundRobin => turn,
            Balance::LeastLoaded => (0..loops.len())
                .map(|i| (turn + i) % loops.len())
                .min_by_key(|&i| loops[i].counters.open())
                .unwrap_or(turn),
        }
    }
}
