//! `ReconnectingClient` against a real server that goes away and comes back: observers see the
//! events in order, reconnection stays within the back-off bound, the all-connected combinator fires
//! exactly when every client is up, and a client gives up after its attempt limit.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use aio::client::{Backoff, ClientEvent, Observable, ReconnectingClient, all_connected};
use aio::framed::{Frame, Framed, TypeLengthCodec};
use aio::{Acceptor, Endpoint, IoService, LocalHandle, StreamSocket};

use crate::util;

/// A server that accepts and keeps every connection until told to drop them all.
struct Server {
    svc: LocalHandle,
    endpoint: Endpoint,
    acceptor: RefCell<Option<Rc<Acceptor>>>,
    connections: RefCell<Vec<StreamSocket>>,
}

impl Server {
    fn start(svc: &IoService, endpoint: &Endpoint) -> Rc<Server> {
        let acceptor = Rc::new(Acceptor::bind(svc, endpoint).unwrap());
        let endpoint = acceptor.local_endpoint().unwrap();
        let server = Rc::new(Server {
            svc: svc.local(),
            endpoint,
            acceptor: RefCell::new(Some(acceptor.clone())),
            connections: RefCell::new(Vec::new()),
        });
        accept(server.clone(), acceptor);
        server
    }

    /// Takes the server down (listener and connections) and brings it back after `down`.
    fn restart_after(self: &Rc<Self>, down: Duration) {
        self.drop_connections();
        if let Some(acceptor) = self.acceptor.borrow_mut().take() {
            acceptor.close();
        }
        let server = self.clone();
        self.svc.after(down).then(move |res| {
            res.unwrap();
            let acceptor = Rc::new(Acceptor::bind(&server.svc, &server.endpoint).unwrap());
            *server.acceptor.borrow_mut() = Some(acceptor.clone());
            accept(server, acceptor);
        });
    }

    fn drop_connections(&self) {
        self.connections.borrow_mut().clear();
    }

    fn stop(&self) {
        self.drop_connections();
        if let Some(acceptor) = self.acceptor.borrow_mut().take() {
            acceptor.close();
        }
    }
}

fn accept(server: Rc<Server>, acceptor: Rc<Acceptor>) {
    acceptor.clone().accept().then(move |res| {
        if let Ok((socket, _)) = res {
            server.connections.borrow_mut().push(socket);
            accept(server, acceptor);
        }
    });
}

fn record(client: &ReconnectingClient<TypeLengthCodec>) -> Rc<RefCell<Vec<String>>> {
    let log: Rc<RefCell<Vec<String>>> = Rc::default();
    let sink = log.clone();
    client.subscribe(Box::new(move |e: &ClientEvent| {
        sink.borrow_mut().push(e.name().to_string())
    }));
    log
}

fn run_until(svc: &IoService, mut done: impl FnMut() -> bool) {
    while !done() {
        svc.run_one().unwrap();
    }
}

fn connected_count(log: &Rc<RefCell<Vec<String>>>) -> usize {
    log.borrow().iter().filter(|e| *e == "connected").count()
}

matrix_test!(server_restart_reconnects_within_backoff, |svc| {
    for transport in [util::Transport::TcpV4, util::Transport::Unix] {
        let (listen, _dir) = util::listen_endpoint(transport).unwrap();
        let server = Server::start(svc, &listen);
        let backoff = Backoff::new(Duration::from_millis(20), Duration::from_millis(200));
        let bound = backoff.bound();
        let client = ReconnectingClient::new(
            svc,
            "a",
            server.endpoint.clone(),
            TypeLengthCodec::new,
            backoff,
        );
        let log = record(&client);
        client.start();
        run_until(svc, || connected_count(&log) == 1);
        assert_eq!(*log.borrow(), ["connecting", "connected"]);

        let down = Duration::from_millis(150);
        server.restart_after(down);
        let back_up = Instant::now() + down;
        run_until(svc, || connected_count(&log) == 2);
        let late = Instant::now().saturating_duration_since(back_up);
        assert!(
            late <= bound + Duration::from_millis(100),
            "reconnected {late:?} after the server came back; the back-off bound is {bound:?}"
        );
        // After the first connection: disconnected, then (connecting, disconnected)* while the
        // server is down, then connecting, connected.
        let after: Vec<String> = log.borrow()[2..].to_vec();
        assert_eq!(
            after.first().map(String::as_str),
            Some("disconnected"),
            "{after:?}"
        );
        assert_eq!(
            &after[after.len() - 2..],
            ["connecting", "connected"],
            "{after:?}"
        );
        for pair in after[1..after.len() - 2].chunks(2) {
            assert_eq!(pair, ["connecting", "disconnected"], "{after:?}");
        }
        assert!(
            after.len() >= 5,
            "no failed attempt while the server was down: {after:?}"
        );
        // Messages flow on the new connection.
        let got: Rc<RefCell<Vec<Frame>>> = Rc::default();
        let sink = got.clone();
        client.on_message(move |f| sink.borrow_mut().push(f));
        run_until(svc, || !server.connections.borrow().is_empty());
        let conn = server.connections.borrow_mut().pop().unwrap();
        let framed = Framed::new(conn, TypeLengthCodec::new());
        framed.try_send(Frame::new(5, &b"hello"[..])).unwrap();
        run_until(svc, || !got.borrow().is_empty());
        assert_eq!(got.borrow()[0], Frame::new(5, &b"hello"[..]));
        client.stop();
        server.stop();
        svc.poll().unwrap();
    }
});

matrix_test!(all_connected_fires_exactly_when_all_are_up, |svc| {
    let server = Server::start(svc, &"127.0.0.1:0".parse().unwrap());
    let backoff = || Backoff::new(Duration::from_millis(10), Duration::from_millis(50));
    let new = |name: &str| {
        ReconnectingClient::new(
            svc,
            name,
            server.endpoint.clone(),
            TypeLengthCodec::new,
            backoff(),
        )
    };
    let (a, b, c) = (new("a"), new("b"), new("c"));
    let fired = Rc::new(Cell::new(0));
    let (count, start_c) = (fired.clone(), c.clone());
    let (a2, b2) = (a.clone(), b.clone());
    all_connected(&[&a, &b], move || {
        assert!(
            a2.is_connected() && b2.is_connected(),
            "fired with a client down"
        );
        count.set(count.get() + 1);
        start_c.start();
    });
    let c_log = record(&c);
    a.start();
    run_until(svc, || a.is_connected());
    svc.poll().unwrap();
    assert_eq!(fired.get(), 0, "fired with only a up");
    assert!(
        c_log.borrow().is_empty(),
        "c started before a and b were up"
    );
    b.start();
    run_until(svc, || fired.get() == 1 && c.is_connected());
    // Everyone is dropped by the server; all reconnect; the combinator fires once more.
    server.drop_connections();
    run_until(svc, || fired.get() == 2);
    run_until(svc, || {
        a.is_connected() && b.is_connected() && c.is_connected()
    });
    svc.poll().unwrap();
    assert_eq!(fired.get(), 2);
    for client in [&a, &b, &c] {
        client.stop();
    }
    server.stop();
});

matrix_test!(gives_up_after_the_attempt_limit, |svc| {
    let closed = {
        let acceptor = Acceptor::bind(svc, &"127.0.0.1:0".parse().unwrap()).unwrap();
        acceptor.local_endpoint().unwrap()
    };
    let backoff =
        Backoff::new(Duration::from_millis(5), Duration::from_millis(20)).give_up_after(Some(3));
    let client = ReconnectingClient::new(svc, "x", closed, TypeLengthCodec::new, backoff);
    let log = record(&client);
    let errors: Rc<RefCell<Vec<std::io::ErrorKind>>> = Rc::default();
    let sink = errors.clone();
    client.subscribe(Box::new(move |e: &ClientEvent| {
        if let ClientEvent::Disconnected(err) = e {
            sink.borrow_mut().push(err.kind());
        }
    }));
    client.start();
    svc.run_until_done().unwrap();
    assert_eq!(
        *log.borrow(),
        [
            "connecting",
            "disconnected",
            "connecting",
            "disconnected",
            "connecting",
            "disconnected",
            "gave-up"
        ]
    );
    assert!(
        errors
            .borrow()
            .iter()
            .all(|k| *k == std::io::ErrorKind::ConnectionRefused)
    );
    assert!(matches!(
        client.try_send(Frame::new(1, &b""[..])),
        Err(aio::framed::TrySendError::Closed(_))
    ));
});

matrix_test!(unsubscribed_observer_hears_nothing_more, |svc| {
    let server = Server::start(svc, &"127.0.0.1:0".parse().unwrap());
    let client = ReconnectingClient::new(
        svc,
        "u",
        server.endpoint.clone(),
        TypeLengthCodec::new,
        Backoff::default(),
    );
    let heard = Rc::new(Cell::new(0));
    let id = Rc::new(Cell::new(None));
    let (count, my_id, me) = (heard.clone(), id.clone(), client.clone());
    id.set(Some(client.subscribe(Box::new(move |_| {
        count.set(count.get() + 1);
        // Unsubscribing from inside the observer takes effect at once.
        me.unsubscribe(my_id.get().unwrap());
    }))));
    let log = record(&client);
    client.start();
    run_until(svc, || connected_count(&log) == 1);
    assert_eq!(heard.get(), 1);
    assert_eq!(*log.borrow(), ["connecting", "connected"]);
    client.stop();
    server.stop();
});
