//! Clients that stay connected: [`ReconnectingClient`], its connection events and observers, and
//! [`all_connected`], which runs a handler whenever a set of clients are all up.
//!
//! The answer to "multiple TCP clients, boost asio and observers": each client connects to an
//! [`Endpoint`] (TCP or Unix), frames the connection with a fresh codec each time, hands every
//! message to one handler, and after any disconnect reconnects with exponential back-off. Observers
//! see `connecting`, `connected`, `disconnected` (with the error) and `gave-up`, in order, on the
//! loop thread.

mod backoff;

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::rc::Rc;

pub use backoff::Backoff;

use crate::LocalHandle;
use crate::endpoint::Endpoint;
use crate::framed::{Decoder, Encoder, Framed, TrySendError};
use crate::net::stream::StreamSocket;
use crate::service::JoinHandle;

/// What happened to a client's connection.
#[derive(Debug, Clone)]
pub enum ClientEvent {
    /// An attempt to connect starts (`attempt` counts from 1 since the last success).
    Connecting {
        /// Which attempt in a row.
        attempt: u32,
    },
    /// The connection is up: messages can be sent.
    Connected,
    /// A connection ended, or an attempt failed, with this error.
    Disconnected(Rc<io::Error>),
    /// The attempt limit was reached: the client stops.
    GaveUp,
}

impl ClientEvent {
    /// The event's name: `connecting`, `connected`, `disconnected` or `gave-up`.
    pub fn name(&self) -> &'static str {
        match self {
            ClientEvent::Connecting { .. } => "connecting",
            ClientEvent::Connected => "connected",
            ClientEvent::Disconnected(_) => "disconnected",
            ClientEvent::GaveUp => "gave-up",
        }
    }
}

impl fmt::Display for ClientEvent {
    /// `EVENT [detail]`: `connecting 2`, `connected`, `disconnected Connection refused`, `gave-up`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientEvent::Connecting { attempt } => write!(f, "connecting {attempt}"),
            ClientEvent::Disconnected(e) => write!(f, "disconnected {e}"),
            other => f.write_str(other.name()),
        }
    }
}

/// Identifies an observer, to unsubscribe it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Subscription(u64);

type Observer = Rc<RefCell<dyn FnMut(&ClientEvent)>>;
type MessageHandler<T> = Rc<RefCell<dyn FnMut(T)>>;

/// Anything whose connection state can be observed: what [`all_connected`] watches.
pub trait Observable {
    /// Calls `observer` with every later event, on the loop thread, until unsubscribed.
    fn subscribe(&self, observer: Box<dyn FnMut(&ClientEvent)>) -> Subscription;
    /// Stops calling an observer (also from inside an observer).
    fn unsubscribe(&self, subscription: Subscription);
    /// Whether the connection is up now.
    fn is_connected(&self) -> bool;
}

struct Inner<C: Decoder> {
    svc: LocalHandle,
    name: String,
    endpoint: Endpoint,
    codec: Box<dyn Fn() -> C>,
    backoff: Backoff,
    framed: RefCell<Option<Framed<C>>>,
    observers: RefCell<Vec<(Subscription, Observer)>>,
    next_id: Cell<u64>,
    on_message: RefCell<Option<MessageHandler<C::Item>>>,
    task: RefCell<Option<JoinHandle<()>>>,
}

/// A client that connects to an endpoint, frames the connection, and reconnects by itself.
///
/// ```no_run
/// use aio::client::{Backoff, Observable, ReconnectingClient};
/// use aio::framed::{Frame, TypeLengthCodec};
/// let svc = aio::IoService::new()?;
/// let client = ReconnectingClient::new(&svc, "a", "127.0.0.1:9000".parse()?, TypeLengthCodec::new, Backoff::default());
/// client.subscribe(Box::new(|event| println!("a {event}")));
/// client.on_message(|frame: Frame| println!("got type {}", frame.kind));
/// client.start();
/// svc.run()?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct ReconnectingClient<C: Decoder> {
    inner: Rc<Inner<C>>,
}

impl<C: Decoder> Clone for ReconnectingClient<C> {
    fn clone(&self) -> Self {
        ReconnectingClient {
            inner: self.inner.clone(),
        }
    }
}

impl<C: Decoder + 'static> ReconnectingClient<C> {
    /// A client named `name` (for logs) for `endpoint`, framing each connection with a codec from
    /// `codec`. Nothing happens until [`start`](ReconnectingClient::start).
    pub fn new(
        svc: &LocalHandle,
        name: impl Into<String>,
        endpoint: Endpoint,
        codec: impl Fn() -> C + 'static,
        backoff: Backoff,
    ) -> ReconnectingClient<C> {
        ReconnectingClient {
            inner: Rc::new(Inner {
                svc: svc.clone(),
                name: name.into(),
                endpoint,
                codec: Box::new(codec),
                backoff,
                framed: RefCell::new(None),
                observers: RefCell::new(Vec::new()),
                next_id: Cell::new(0),
                on_message: RefCell::new(None),
                task: RefCell::new(None),
            }),
        }
    }

    /// The client's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The endpoint it connects to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.inner.endpoint
    }

    /// Sets the handler every received message goes to (replacing an earlier one).
    pub fn on_message(&self, handler: impl FnMut(C::Item) + 'static) {
        *self.inner.on_message.borrow_mut() = Some(Rc::new(RefCell::new(handler)));
    }

    /// Starts connecting (again, if stopped). The first event comes after this returns.
    pub fn start(&self) {
        let mut task = self.inner.task.borrow_mut();
        if task.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let inner = self.inner.clone();
        *task = Some(self.inner.svc.spawn(async move { run(inner).await }));
    }

    /// Stops: no more attempts, the current connection (if any) is closed, no more events.
    pub fn stop(&self) {
        if let Some(task) = self.inner.task.borrow_mut().take() {
            task.abort();
        }
        if let Some(framed) = self.inner.framed.borrow_mut().take() {
            framed.socket().close();
        }
    }

    /// The current connection, while connected.
    pub fn framed(&self) -> Option<Framed<C>> {
        self.inner.framed.borrow().clone()
    }

    /// Queues a message on the current connection.
    ///
    /// # Errors
    /// [`TrySendError::Closed`] while not connected; otherwise as [`Framed::try_send`].
    pub fn try_send<T>(&self, item: T) -> Result<(), TrySendError<T>>
    where
        C: Encoder<T>,
    {
        match self.framed() {
            Some(framed) => framed.try_send(item),
            None => Err(TrySendError::Closed(item)),
        }
    }

    fn emit(&self, event: ClientEvent) {
        emit(&self.inner, &event);
    }
}

impl<C: Decoder + 'static> Observable for ReconnectingClient<C> {
    fn subscribe(&self, observer: Box<dyn FnMut(&ClientEvent)>) -> Subscription {
        let id = Subscription(self.inner.next_id.get());
        self.inner.next_id.set(id.0 + 1);
        let observer: Observer = Rc::new(RefCell::new(observer));
        self.inner.observers.borrow_mut().push((id, observer));
        id
    }

    fn unsubscribe(&self, subscription: Subscription) {
        self.inner
            .observers
            .borrow_mut()
            .retain(|(id, _)| *id != subscription);
    }

    fn is_connected(&self) -> bool {
        self.inner.framed.borrow().is_some()
    }
}

fn emit<C: Decoder>(inner: &Inner<C>, event: &ClientEvent) {
    // A snapshot: observers may subscribe or unsubscribe while being called.
    let observers: Vec<(Subscription, Observer)> = inner.observers.borrow().clone();
    for (id, observer) in observers {
        let still = inner.observers.borrow().iter().any(|(i, _)| *i == id);
        if still {
            (observer.borrow_mut())(event);
        }
    }
}

async fn run<C: Decoder + 'static>(inner: Rc<Inner<C>>) {
    let client = ReconnectingClient {
        inner: inner.clone(),
    };
    let mut failures = 0u32;
    loop {
        client.emit(ClientEvent::Connecting {
            attempt: failures + 1,
        });
        let error = match StreamSocket::dial(&inner.svc, &inner.endpoint).await {
            Ok(socket) => {
                failures = 0;
                let framed = Framed::new(socket, (inner.codec)());
                *inner.framed.borrow_mut() = Some(framed.clone());
                client.emit(ClientEvent::Connected);
                let error = loop {
                    match framed.next().await {
                        Some(Ok(item)) => {
                            let handler = inner.on_message.borrow().clone();
                            if let Some(handler) = handler {
                                (handler.borrow_mut())(item);
                            }
                        }
                        Some(Err(e)) => break e,
                        None => {
                            break io::Error::new(
                                io::ErrorKind::ConnectionReset,
                                "the peer closed the connection",
                            );
                        }
                    }
                };
                inner.framed.borrow_mut().take();
                framed.socket().close();
                error
            }
            Err(e) => e,
        };
        failures += 1;
        client.emit(ClientEvent::Disconnected(Rc::new(error)));
        if inner
            .backoff
            .max_attempts()
            .is_some_and(|max| failures >= max)
        {
            client.emit(ClientEvent::GaveUp);
            return;
        }
        // A timer failure (the loop going away) ends the client.
        if inner
            .svc
            .after(inner.backoff.delay(failures))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Calls `handler` each time every one of `clients` is connected: when the last of them comes up,
/// and again after they have all reconnected following a disconnect. Returns the subscriptions, to
/// undo with [`Observable::unsubscribe`] on each client in order.
///
/// ```no_run
/// # use aio::client::{all_connected, Backoff, Observable, ReconnectingClient};
/// # use aio::framed::TypeLengthCodec;
/// # let svc = aio::IoService::new()?;
/// # let ep: aio::Endpoint = "127.0.0.1:9000".parse()?;
/// let a = ReconnectingClient::new(&svc, "a", ep.clone(), TypeLengthCodec::new, Backoff::default());
/// let b = ReconnectingClient::new(&svc, "b", ep.clone(), TypeLengthCodec::new, Backoff::default());
/// let c = ReconnectingClient::new(&svc, "c", ep, TypeLengthCodec::new, Backoff::default());
/// let start_c = c.clone();
/// all_connected(&[&a, &b], move || start_c.start());
/// a.start();
/// b.start();
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn all_connected(
    clients: &[&dyn Observable],
    handler: impl FnMut() + 'static,
) -> Vec<Subscription> {
    let count = clients.len();
    let up: Rc<RefCell<Vec<bool>>> = Rc::new(RefCell::new(
        clients.iter().map(|c| c.is_connected()).collect(),
    ));
    let handler = Rc::new(RefCell::new(handler));
    clients
        .iter()
        .enumerate()
        .map(|(i, client)| {
            let up = up.clone();
            let handler = handler.clone();
            client.subscribe(Box::new(move |event| {
                let fire = {
                    let mut up = up.borrow_mut();
                    let before = up.iter().all(|&u| u);
                    match event {
                        ClientEvent::Connected => up[i] = true,
                        ClientEvent::Disconnected(_) | ClientEvent::GaveUp => up[i] = false,
                        ClientEvent::Connecting { .. } => {}
                    }
                    !before && up.len() == count && up.iter().all(|&u| u)
                };
                if fire {
                    (handler.borrow_mut())();
                }
            }))
        })
        .collect()
}
