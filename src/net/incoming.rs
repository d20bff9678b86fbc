//! Accept loops written once: [`Incoming`], whose `next()` a task awaits for each connection, and
//! [`Acceptor::serve`], which calls a handler per connection; both with an optional limit on the
//! connections open at once.
//!
//! Every connection comes as an [`Accepted`]: the socket, the peer, and a [`Permit`], its place
//! among the open connections, freed when the permit is dropped. Keep the permit with the session
//! (drop it with the socket): with a limit of `n`, accepting pauses while `n` permits are alive and
//! resumes when one is dropped (connections arriving meanwhile wait in the listen backlog).
//!
//! What they do with each accept error is decided once, here: see [`Incoming`].

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io;
use std::rc::Rc;
use std::task::{Poll, Waker};

use crate::LocalHandle;
use crate::endpoint::Endpoint;
use crate::error::is_cancelled;
use crate::net::acceptor::Acceptor;
use crate::net::stream::StreamSocket;

/// One accepted connection, from [`Incoming::next`] or [`Acceptor::serve`].
///
/// Keep [`permit`](Accepted::permit) as long as the connection is open: dropping it frees the
/// connection's place under the limit.
#[derive(Debug)]
pub struct Accepted {
    /// The connected socket.
    pub socket: StreamSocket,
    /// The peer's endpoint.
    pub peer: Endpoint,
    /// The connection's place among the open connections; dropping it frees the place.
    pub permit: Permit,
}

/// A place among the open connections of an [`Incoming`] or [`Acceptor::serve`]: dropping it frees
/// the place, and accepting resumes if it had paused at the limit.
pub struct Permit {
    slots: Rc<Slots>,
}

impl Permit {
    /// How many connections of the same accept loop hold their permit now, this one included.
    pub fn open_connections(&self) -> usize {
        self.slots.open.get()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.slots.release();
    }
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit")
            .field("open", &self.slots.open.get())
            .field("max", &self.slots.max)
            .finish()
    }
}

/// What resumes an accept loop paused at its limit.
enum Resume {
    Task(Waker),
    Handler(Box<dyn FnOnce()>),
}

/// The count of open connections of one accept loop, and who waits for a place.
struct Slots {
    svc: LocalHandle,
    open: Cell<usize>,
    max: usize,
    resume: RefCell<Option<Resume>>,
}

impl Slots {
    fn new(svc: &LocalHandle, max: usize) -> Rc<Slots> {
        Rc::new(Slots {
            svc: svc.clone(),
            open: Cell::new(0),
            max: max.max(1),
            resume: RefCell::new(None),
        })
    }

    fn full(&self) -> bool {
        self.open.get() >= self.max
    }

    fn take(self: &Rc<Self>) -> Permit {
        self.open.set(self.open.get() + 1);
        Permit {
            slots: self.clone(),
        }
    }

    fn release(&self) {
        self.open.set(self.open.get() - 1);
        let resume = self.resume.borrow_mut().take();
        match resume {
            Some(Resume::Task(waker)) => waker.wake(),
            // A handler loop re-arms its accept from the loop, not from inside whatever dropped
            // the permit.
            Some(Resume::Handler(f)) => self.svc.post(f),
            None => {}
        }
    }
}

/// What an accept loop does after an error (see the module's docs).
enum AfterError {
    /// Report it and accept again.
    Report,
    /// Report it, then stop: the listening socket is unusable.
    ReportAndEnd,
    /// Stop quietly: the acceptor was closed or cancelled.
    End,
}

fn after_error(acceptor: &Acceptor, e: &io::Error) -> AfterError {
    if is_cancelled(e) || !acceptor.is_open() {
        return AfterError::End;
    }
    match e.raw_os_error() {
        Some(libc::EBADF | libc::ENOTSOCK | libc::EINVAL | libc::EOPNOTSUPP | libc::EFAULT) => {
            AfterError::ReportAndEnd
        }
        _ => AfterError::Report,
    }
}

/// The connections of an acceptor, one [`next`](Incoming::next) at a time: made by
/// [`Acceptor::incoming`] and [`Acceptor::incoming_with`].
///
/// # Accept errors
/// What an accept loop should do with each error is decided here, once:
/// - a connection that vanished before it was taken (`ECONNABORTED`, `EPROTO`), or that another
///   process took first: skipped, nothing reported (see [`Accept`](crate::Accept));
/// - out of fds or memory (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`): reported, and accepting goes on
///   after the acceptor's short back-off (50 ms, readiness ignored meanwhile), so the loop does not
///   spin while the process is out of fds and resumes by itself once some are freed;
/// - any other error of one connection (an `on_open` hook's, `EPERM` from a firewall...):
///   reported, and accepting goes on;
/// - the acceptor closed or cancelled: the loop ends quietly;
/// - an error that says the listening socket itself is unusable (`EBADF`, `ENOTSOCK`, `EINVAL`
///   when it does not listen, `EOPNOTSUPP`, `EFAULT`): reported, then the loop ends.
///
/// ```
/// use aio::{Acceptor, IoService, StreamSocket};
/// let svc = IoService::new()?;
/// let acceptor = Acceptor::bind(&svc, &"127.0.0.1:0".parse()?)?;
/// let addr = acceptor.local_endpoint()?;
/// let local = svc.local();
/// svc.spawn(async move {
///     // At most 100 connections open at once; the 101st waits until one closes.
///     let mut incoming = acceptor.incoming_with(100);
///     while let Some(conn) = incoming.next().await {
///         match conn {
///             Ok(conn) => {
///                 local.spawn(async move {
///                     let (res, _) = conn.socket.write_all(b"hello\n".to_vec()).await;
///                     res.ok();
///                     drop(conn.permit); // with the socket: frees the place
///                 });
///             }
///             Err(e) => eprintln!("accept: {e}"), // out of fds...: accepting goes on
///         }
///     }
/// });
/// let client = svc.block_on(StreamSocket::dial(&svc, &addr))?;
/// let (res, buf) = svc.block_on(client.read_exact(vec![0; 6]));
/// res?;
/// assert_eq!(buf, b"hello\n");
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Incoming<'a> {
    acceptor: &'a Acceptor,
    slots: Rc<Slots>,
    ended: bool,
}

impl<'a> Incoming<'a> {
    pub(crate) fn new(acceptor: &'a Acceptor, max_open: usize) -> Incoming<'a> {
        Incoming {
            acceptor,
            slots: Slots::new(acceptor.service(), max_open),
            ended: false,
        }
    }

    /// The next connection; `Some(Err(e))` for an error after which accepting goes on (out of
    /// fds...), `None` once the acceptor is closed or cancelled, or after an error that ends
    /// accepting (see [accept errors](Incoming#accept-errors)). At the limit, waits
    /// first until a [`Permit`] is dropped.
    pub async fn next(&mut self) -> Option<io::Result<Accepted>> {
        if self.ended {
            return None;
        }
        let slots = &self.slots;
        poll_fn(|cx| {
            if slots.full() {
                *slots.resume.borrow_mut() = Some(Resume::Task(cx.waker().clone()));
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
        match self.acceptor.accept().await {
            Ok((socket, peer)) => Some(Ok(Accepted {
                socket,
                peer,
                permit: self.slots.take(),
            })),
            Err(e) => match after_error(self.acceptor, &e) {
                AfterError::Report => Some(Err(e)),
                AfterError::ReportAndEnd => {
                    self.ended = true;
                    Some(Err(e))
                }
                AfterError::End => {
                    self.ended = true;
                    None
                }
            },
        }
    }

    /// How many connections accepted here hold their permit now.
    pub fn open_connections(&self) -> usize {
        self.slots.open.get()
    }
}

impl std::fmt::Debug for Incoming<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("open", &self.slots.open.get())
            .field("max", &self.slots.max)
            .field("ended", &self.ended)
            .finish()
    }
}

/// The accept loops (here rather than in `acceptor.rs`, which this module builds on).
impl Acceptor {
    /// The connections to come, for a task to await one by one with [`Incoming::next`]: the accept
    /// loop every server writes (accept, tell the end from an error worth reporting, accept
    /// again), with no limit on the connections open at once. See [`Incoming`].
    ///
    /// ```
    /// use aio::{Acceptor, IoService, StreamSocket};
    /// let svc = IoService::new()?;
    /// let acceptor = Acceptor::bind(&svc, &"127.0.0.1:0".parse()?)?;
    /// let addr = acceptor.local_endpoint()?;
    /// let _client = svc.block_on(StreamSocket::dial(&svc, &addr))?;
    /// let mut incoming = acceptor.incoming();
    /// let conn = svc.block_on(incoming.next()).unwrap()?;
    /// assert_eq!(conn.peer, _client.local_endpoint()?);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming::new(self, usize::MAX)
    }

    /// [`incoming`](Acceptor::incoming) with at most `max_open` connections open at once (at
    /// least 1): at the limit, [`Incoming::next`] waits until a [`Permit`] is dropped before it
    /// accepts again.
    pub fn incoming_with(&self, max_open: usize) -> Incoming<'_> {
        Incoming::new(self, max_open)
    }

    /// Accepts connection after connection and calls `handler` with each, on the loop: the
    /// callback twin of [`incoming`](Acceptor::incoming), with no limit on the connections open
    /// at once. Returns at once; the first call comes later.
    ///
    /// `handler` gets `Ok(Accepted)` per connection, and `Err(e)` for an accept error: after most
    /// (out of fds, a failing `on_open` hook...) accepting goes on; after an error that says the
    /// listening socket is unusable it is the last call. Closing (or cancelling) the acceptor ends
    /// the loop without a call. See [accept errors](Incoming#accept-errors). The pending accept
    /// holds an `Rc` of the acceptor, so the acceptor stays open until [`close`](Acceptor::close)d.
    ///
    /// ```
    /// use std::rc::Rc;
    /// use aio::{Acceptor, IoService, StreamSocket};
    /// let svc = IoService::new()?;
    /// let acceptor = Rc::new(Acceptor::bind(&svc, &"127.0.0.1:0".parse()?)?);
    /// let addr = acceptor.local_endpoint()?;
    /// acceptor.serve(|conn| match conn {
    ///     Ok(conn) => {
    ///         conn.socket.write_all(b"hi".to_vec()).then(move |_| drop(conn.permit));
    ///     }
    ///     Err(e) => eprintln!("accept: {e}"),
    /// });
    /// let client = svc.block_on(StreamSocket::dial(&svc, &addr))?;
    /// let (res, buf) = svc.block_on(client.read_exact(vec![0; 2]));
    /// res?;
    /// assert_eq!(buf, b"hi");
    /// acceptor.close(); // serving ends
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn serve<F>(self: &Rc<Self>, handler: F)
    where
        F: FnMut(io::Result<Accepted>) + 'static,
    {
        self.serve_with(usize::MAX, handler);
    }

    /// [`serve`](Acceptor::serve) with at most `max_open` connections open at once (at least 1):
    /// at the limit, accepting pauses until a [`Permit`] is dropped (connections arriving meanwhile
    /// wait in the listen backlog).
    ///
    /// ```
    /// use std::rc::Rc;
    /// use aio::{Acceptor, IoService, StreamSocket};
    /// let svc = IoService::new()?;
    /// let acceptor = Rc::new(Acceptor::bind(&svc, &"127.0.0.1:0".parse()?)?);
    /// let addr = acceptor.local_endpoint()?;
    /// let sessions = Rc::new(std::cell::RefCell::new(Vec::new()));
    /// let kept = sessions.clone();
    /// acceptor.serve_with(1, move |conn| kept.borrow_mut().extend(conn.ok()));
    /// let _a = svc.block_on(StreamSocket::dial(&svc, &addr))?;
    /// let _b = svc.block_on(StreamSocket::dial(&svc, &addr))?; // waits in the backlog
    /// while sessions.borrow().is_empty() {
    ///     svc.run_one()?;
    /// }
    /// svc.poll()?;
    /// assert_eq!(sessions.borrow().len(), 1); // the limit
    /// sessions.borrow_mut().clear(); // socket and permit dropped: the second is accepted
    /// while sessions.borrow().is_empty() {
    ///     svc.run_one()?;
    /// }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn serve_with<F>(self: &Rc<Self>, max_open: usize, handler: F)
    where
        F: FnMut(io::Result<Accepted>) + 'static,
    {
        let slots = Slots::new(self.service(), max_open);
        serve_next(self.clone(), slots, handler);
    }
}

fn serve_next<F>(acceptor: Rc<Acceptor>, slots: Rc<Slots>, mut handler: F)
where
    F: FnMut(io::Result<Accepted>) + 'static,
{
    if slots.full() {
        let resumed = slots.clone();
        *slots.resume.borrow_mut() = Some(Resume::Handler(Box::new(move || {
            serve_next(acceptor, resumed, handler)
        })));
        return;
    }
    let next = acceptor.clone();
    acceptor.accept().then(move |res| {
        match res {
            Ok((socket, peer)) => {
                let permit = slots.take();
                handler(Ok(Accepted {
                    socket,
                    peer,
                    permit,
                }));
            }
            Err(e) => match after_error(&next, &e) {
                AfterError::Report => handler(Err(e)),
                AfterError::ReportAndEnd => return handler(Err(e)),
                AfterError::End => return,
            },
        }
        serve_next(next, slots, handler);
    });
}
