//! [`SocketHooks`]: callbacks right after `aio` creates a socket's fd and right before it closes one.
//!
//! The answer to "customising socket/close syscalls in Boost.Asio": Asio may close a socket at the OS
//! level before the owner's destructor runs (a failed `async_connect` that tries the next endpoint, the
//! `io_context` going away), so a hook in the owner's destructor comes too late. Here the close hook is
//! attached to the fd itself, inside the loop's source table: whatever drops the fd — `close()`,
//! dropping the socket, a failed `dial` that discards its socket, dropping the `IoService` while the
//! socket lives — runs the hook first, exactly once. [`release`](crate::StreamSocket::release) hands the
//! fd out without running it: the fd is not closed, so it is no longer `aio`'s to announce.

use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::rc::Rc;

use socket2::SockRef;

use crate::reactor::{FdSlot, HookedFd};

type OpenHook = Rc<dyn Fn(SockRef<'_>) -> io::Result<()>>;
type CloseHook = Rc<dyn Fn(SockRef<'_>)>;

/// A pair of optional callbacks for the sockets `aio` creates: `on_open` right after the fd is made
/// (before any `bind` or `connect`), `on_close` right before the fd is closed.
///
/// - **`on_open`** gets the new socket as a [`SockRef`] and may set any option on it. An error aborts
///   the operation that was opening the socket (`open`, `bind`, `connect`, `dial`, `accept`) with that
///   same error, unchanged, and the fd is closed (running `on_close`). A panic does the same, with an
///   error of kind `Other` ("the on_open hook panicked: ..."): an accept runs the hook while the loop
///   dispatches events, where unwinding would lose the accept and its handler.
/// - **`on_close`** gets the socket, still open, right before `aio` closes it: exactly once per fd,
///   whatever closes it (see the module docs), never after [`release`](crate::StreamSocket::release)
///   (which hands the fd out open), and also for an fd whose `on_open` failed. It runs on the loop's
///   thread; it must not panic (it may run while a socket or the `IoService` is being dropped).
///
/// Hooks apply to fds that `aio` creates: [`StreamSocket::with_hooks`](crate::StreamSocket::with_hooks),
/// [`Dialer::hooks`](crate::Dialer::hooks), [`DatagramSocket::with_hooks`](crate::DatagramSocket::with_hooks),
/// and every socket an [`Acceptor`](crate::Acceptor) accepts after
/// [`set_hooks`](crate::Acceptor::set_hooks). Sockets adopted with `from_fd` or made by `pair` have none.
///
/// A clone shares the same callbacks (they are reference counted), so one `SocketHooks` value can
/// serve any number of sockets; keep per-socket state in the callbacks' captures, or key it by fd.
///
/// ```
/// use std::cell::RefCell;
/// use std::rc::Rc;
/// use aio::{Acceptor, IoService, SocketHooks, StreamSocket};
///
/// let svc = IoService::new()?;
/// let log = Rc::new(RefCell::new(Vec::new()));
/// let hooks = SocketHooks::new()
///     .on_open({
///         let log = log.clone();
///         move |socket| {
///             socket.set_tcp_nodelay(true)?;
///             log.borrow_mut().push("opened, nodelay set");
///             Ok(())
///         }
///     })
///     .on_close({
///         let log = log.clone();
///         move |_socket| log.borrow_mut().push("about to close")
///     });
/// let acceptor = Acceptor::bind(&svc, &"127.0.0.1:0".parse()?)?;
/// let socket = StreamSocket::with_hooks(&svc, hooks);
/// svc.block_on(socket.connect(&acceptor.local_endpoint()?))?;
/// assert!(socket.nodelay()?);
/// drop(socket);
/// assert_eq!(*log.borrow(), ["opened, nodelay set", "about to close"]);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct SocketHooks {
    /// One pointer, shared by every socket the hooks are given to: most sockets have none, and
    /// every socket, idle connections included, carries this field.
    hooks: Option<Rc<Hooks>>,
}

#[derive(Clone, Default)]
struct Hooks {
    on_open: Option<OpenHook>,
    on_close: Option<CloseHook>,
}

impl SocketHooks {
    /// No hooks (the same as `SocketHooks::default()`).
    pub fn new() -> SocketHooks {
        SocketHooks::default()
    }

    /// Sets the callback that runs right after `aio` creates a socket, before it is bound or
    /// connected. Its error aborts the opening operation with that error.
    #[must_use = "the hooks are a new value: keep it"]
    pub fn on_open(self, hook: impl Fn(SockRef<'_>) -> io::Result<()> + 'static) -> SocketHooks {
        self.with(|h| h.on_open = Some(Rc::new(hook)))
    }

    /// Sets the callback that runs right before `aio` closes a socket it created, exactly once.
    #[must_use = "the hooks are a new value: keep it"]
    pub fn on_close(self, hook: impl Fn(SockRef<'_>) + 'static) -> SocketHooks {
        self.with(|h| h.on_close = Some(Rc::new(hook)))
    }

    /// The hooks with `change` made (to a copy: other sockets keep the hooks they were given).
    fn with(self, change: impl FnOnce(&mut Hooks)) -> SocketHooks {
        let mut hooks = self.hooks.map(|h| (*h).clone()).unwrap_or_default();
        change(&mut hooks);
        SocketHooks {
            hooks: Some(Rc::new(hooks)),
        }
    }

    fn open_hook(&self) -> Option<&OpenHook> {
        self.hooks.as_ref()?.on_open.as_ref()
    }

    fn close_hook(&self) -> Option<&CloseHook> {
        self.hooks.as_ref()?.on_close.as_ref()
    }

    /// Whether neither callback is set.
    pub fn is_empty(&self) -> bool {
        self.open_hook().is_none() && self.close_hook().is_none()
    }

    /// Wraps a freshly created fd for the source table and runs `on_open` on it. On error the slot is
    /// dropped, which runs `on_close`.
    pub(crate) fn prepare(&self, fd: OwnedFd) -> io::Result<FdSlot> {
        let slot = match self.close_hook() {
            Some(hook) => {
                let hook = hook.clone();
                FdSlot::Hooked(Box::new(HookedFd::new(
                    fd,
                    Box::new(move |fd| hook(SockRef::from(&fd))),
                )))
            }
            None => FdSlot::Owned(fd),
        };
        if let Some(hook) = self.open_hook() {
            let fd = slot.fd().expect("an owned slot has an fd");
            // An accept (or a dial trying its next address) runs this while the loop dispatches
            // events: a panic unwinding from there would take the operation, and its handler, with
            // it. It fails the operation instead, like an error.
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                hook(SockRef::from(&fd))
            })) {
                Ok(result) => result?,
                Err(panic) => {
                    let what = crate::error::panic_message(&*panic);
                    return Err(io::Error::other(format!(
                        "the on_open hook panicked: {what}"
                    )));
                }
            }
        }
        Ok(slot)
    }
}

impl fmt::Debug for SocketHooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SocketHooks")
            .field("on_open", &self.open_hook().is_some())
            .field("on_close", &self.close_hook().is_some())
            .finish()
    }
}
