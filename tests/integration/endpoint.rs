//! `Endpoint` strings as users type them: good forms parse and print back, bad ones are
//! `InvalidInput` with a message that quotes the input; endpoints a socket cannot use are errors,
//! never panics.

use std::io;

use aio::{Acceptor, Endpoint, Family, StreamSocket};

#[track_caller]
fn bad(input: &str, says: &str) {
    let e = input
        .parse::<Endpoint>()
        .expect_err(&format!("{input:?} must not parse"));
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{input:?}: {e}");
    let msg = e.to_string();
    assert!(
        msg.contains(says),
        "{input:?}: message {msg:?} lacks {says:?}"
    );
}

guarded_test!(
    bad_endpoint_strings_are_invalid_input_with_a_clear_message,
    {
        bad("", "invalid endpoint \"\"");
        bad(
            "foo",
            "\"foo\": expected IP:PORT, [IPv6]:PORT, unix:PATH or unix:@NAME",
        );
        bad("1.2.3.4", "\"1.2.3.4\": missing port");
        bad("1.2.3.4:99999", "\"1.2.3.4:99999\"");
        bad("[::1", "\"[::1\"");
        bad("[::1]", "missing port");
        bad("unix:", "empty Unix socket path");
        bad("unix:@", "empty abstract Unix socket name");
        bad("localhost:80", "host names are not resolved");
        let long = format!("unix:/{}", "p".repeat(199));
        bad(&long, "Unix socket path is 200 bytes, longer than the 107");
        let long_name = format!("unix:@{}", "n".repeat(200));
        bad(&long_name, "abstract Unix socket name is 200 bytes");
        bad("unix:/a\0b", "NUL");
    }
);

guarded_test!(good_endpoint_strings_parse_and_print_back, {
    for s in [
        "127.0.0.1:8080",
        "0.0.0.0:0",
        "[::1]:443",
        "[::]:0",
        "unix:/tmp/aio.sock",
        "unix:relative.sock",
        "unix:@abstract-name",
    ] {
        let ep: Endpoint = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(ep.to_string(), s);
    }
    let ep: Endpoint = "[::1]:443".parse().unwrap();
    assert_eq!(ep.family(), Family::Ipv6);
    assert_eq!(ep.port(), Some(443));
    let ep: Endpoint = "unix:@abstract-name".parse().unwrap();
    assert_eq!(ep, Endpoint::abstract_name("abstract-name"));
    assert_eq!(ep.family(), Family::Unix);
    let ep: Endpoint = "unix:/tmp/aio.sock".parse().unwrap();
    assert_eq!(ep.unix_path(), Some(std::path::Path::new("/tmp/aio.sock")));
});

matrix_test!(unusable_endpoints_are_errors_naming_the_endpoint, |svc| {
    // Built directly (not parsed), so only the socket calls can refuse them.
    let long = Endpoint::unix(format!("/{}", "p".repeat(199)));
    for ep in [Endpoint::unix(""), long.clone()] {
        let e = Acceptor::bind(svc, &ep).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        let e = svc.block_on(StreamSocket::dial(svc, &ep)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        let e = StreamSocket::new(svc).bind(&ep).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
    }
    let e = Acceptor::bind(svc, &long).unwrap_err();
    assert!(e.to_string().contains("200 bytes"), "{e}");

    // Binding a Unix socket to an IP endpoint: the kernel refuses; the message names the endpoint.
    let s = StreamSocket::new(svc);
    s.open(Family::Unix).unwrap();
    let ip: Endpoint = "127.0.0.1:0".parse().unwrap();
    let e = s.bind(&ip).unwrap_err();
    assert!(e.to_string().contains("bind to 127.0.0.1:0"), "{e}");
    let a = Acceptor::new(svc);
    a.open(Family::Ipv6).unwrap();
    let e = a.bind_to(&ip).unwrap_err();
    assert!(e.to_string().contains("127.0.0.1:0"), "{e}");
});

matrix_test!(unnamed_endpoint_errs_or_autobinds_never_panics, |svc| {
    // Connecting to "no name" is meaningless: an error.
    let e = svc
        .block_on(StreamSocket::new(svc).connect(&Endpoint::Unnamed))
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
    assert!(e.to_string().contains("unix:"), "{e}");
    // Binding to it is Linux autobind (documented on `Endpoint::to_sock_addr`): the kernel picks an
    // abstract name, and clients can reach the acceptor there.
    let acceptor = Acceptor::bind(svc, &Endpoint::Unnamed).unwrap();
    let local = acceptor.local_endpoint().unwrap();
    assert!(
        matches!(local, Endpoint::Abstract(ref n) if !n.is_empty()),
        "{local:?}"
    );
    let dial = svc.spawn({
        let (svc, local) = (svc.local(), local.clone());
        async move { StreamSocket::dial(&svc, &local).await }
    });
    let (_server, _peer) = svc.block_on(acceptor.accept()).unwrap();
    svc.block_on(dial).unwrap().unwrap();
});
