//! `IoDevice`: readiness waits on pipes, attach (not owned) versus new (owned), release, regular
//! files, and fd-number reuse after close (a new object never sees the old one's waits, and back).

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;

use aio::{IoDevice, IoService, StreamSocket};

use crate::util;

/// Counts a handler's calls and keeps its results.
struct Calls<T>(Rc<RefCell<Vec<T>>>);

impl<T> Default for Calls<T> {
    fn default() -> Self {
        Calls(Rc::new(RefCell::new(Vec::new())))
    }
}

impl<T: 'static> Calls<T> {
    fn handler(&self) -> impl FnOnce(T) + 'static {
        let calls = self.0.clone();
        move |v| calls.borrow_mut().push(v)
    }
    fn count(&self) -> usize {
        self.0.borrow().len()
    }
}

/// A pipe: the read end as an `OwnedFd`, the write end as a `File` (`std::io::pipe` is newer than
/// the crate's MSRV).
fn pipe() -> (OwnedFd, File) {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
    (r, File::from(w))
}

fn run_until(svc: &IoService, mut done: impl FnMut() -> bool) {
    while !done() {
        svc.run_one().unwrap();
    }
}

matrix_test!(readable_completes_after_a_write_to_the_pipe, |svc| {
    let (reader, mut writer) = pipe();
    let device = IoDevice::new(svc, reader).unwrap();
    assert!(device.is_open());
    let calls = Calls::default();
    device.readable().then(calls.handler());
    assert_eq!(svc.poll().unwrap(), 0, "an empty pipe is not readable");
    assert_eq!(calls.count(), 0);
    writer.write_all(b"x").unwrap();
    run_until(svc, || calls.count() == 1);
    calls.0.borrow()[0].as_ref().unwrap();

    // The device does no I/O: the byte is still there, so the next wait completes at once.
    svc.block_on(device.readable()).unwrap();
    // Consume it through the fd; then a wait waits again (also in future style).
    let fd = device.native().unwrap();
    let mut byte = [0u8; 1];
    // SAFETY: `fd` is the device's open pipe read end; reading one byte into a local buffer.
    assert_eq!(unsafe { libc::read(fd, byte.as_mut_ptr().cast(), 1) }, 1);
    assert_eq!(&byte, b"x");
    let task = svc.spawn(device.readable());
    svc.poll().unwrap();
    assert!(!task.is_finished(), "the wait waits for new data");
    writer.write_all(b"y").unwrap();
    svc.block_on(task).unwrap().unwrap();

    // Hang-up counts as readable.
    let calls = Calls::default();
    let (reader, writer) = pipe();
    let device = IoDevice::new(svc, reader).unwrap();
    device.readable().then(calls.handler());
    svc.poll().unwrap();
    drop(writer);
    run_until(svc, || calls.count() == 1);
    calls.0.borrow()[0].as_ref().unwrap();
});

matrix_test!(writable_completes_on_a_pipe_with_room, |svc| {
    let (reader, writer) = pipe();
    let mut reader = File::from(reader);
    let device = IoDevice::new(svc, writer).unwrap();
    svc.block_on(device.writable()).unwrap();
    // Fill the pipe; then writable waits until the reader makes room.
    device.set_nonblocking(true).unwrap();
    let fd = device.native().unwrap();
    let chunk = [0u8; 4096];
    let mut filled = 0usize;
    loop {
        // SAFETY: `fd` is the device's open pipe write end, now non-blocking.
        let n = unsafe { libc::write(fd, chunk.as_ptr().cast(), chunk.len()) };
        if n < 0 {
            assert_eq!(io::Error::last_os_error().kind(), io::ErrorKind::WouldBlock);
            break;
        }
        filled += n as usize;
    }
    let calls = Calls::default();
    device.writable().then(calls.handler());
    assert_eq!(svc.poll().unwrap(), 0, "a full pipe is not writable");
    let mut sink = vec![0u8; filled];
    reader.read_exact(&mut sink).unwrap();
    run_until(svc, || calls.count() == 1);
    calls.0.borrow()[0].as_ref().unwrap();
});

matrix_test!(attached_fd_stays_open_when_the_device_goes, |svc| {
    let (reader, mut writer) = pipe();
    let raw = reader.as_raw_fd();
    // SAFETY: `reader` stays open until the end of the test, longer than every device below.
    let device = unsafe { IoDevice::attach(svc, raw) }.unwrap();
    assert_eq!(device.native(), Some(raw));
    writer.write_all(b"z").unwrap();
    svc.block_on(device.readable()).unwrap();
    drop(device);
    assert!(
        util::fd_is_open(raw),
        "dropping an attached device does not close the fd"
    );

    // SAFETY: as above.
    let device = unsafe { IoDevice::attach(svc, raw) }.unwrap();
    device.close();
    assert!(
        util::fd_is_open(raw),
        "closing an attached device does not close the fd"
    );
    assert!(!device.is_open());
    // SAFETY: as above.
    let device = unsafe { IoDevice::attach(svc, raw) }.unwrap();
    assert!(
        device.release().is_none(),
        "an attached fd is not ours to hand back"
    );
    assert!(util::fd_is_open(raw));
    // The fd still works.
    let mut file = std::fs::File::from(reader);
    let mut got = [0u8; 1];
    file.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"z");
});

matrix_test!(release_hands_back_the_owned_fd, |svc| {
    let (reader, mut writer) = pipe();
    let raw = reader.as_raw_fd();
    let device = IoDevice::new(svc, reader).unwrap();
    let calls = Calls::default();
    device.readable().then(calls.handler());
    svc.poll().unwrap();
    let fd = device.release().expect("an owned fd comes back");
    assert_eq!(fd.as_raw_fd(), raw);
    assert!(util::fd_is_open(raw));
    assert!(!device.is_open());
    assert!(device.release().is_none(), "only once");
    // The pending wait completed with ECANCELED.
    run_until(svc, || calls.count() == 1);
    util::assert_cancelled(&calls.0.borrow()[0]);
    // Waits on the released device fail clearly.
    let e = svc.block_on(device.readable()).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotConnected);
    // The fd works.
    writer.write_all(b"r").unwrap();
    let mut file = std::fs::File::from(fd);
    let mut got = [0u8; 1];
    file.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"r");
});

/// Whether this process's fd `n` is still the pipe end with inode `ino`. Asked of /proc rather than by
/// writing to the pipe: a test forking in another thread (`util::in_child`) briefly holds copies of
/// every fd, so a write could still find a reader.
fn is_open_pipe(n: i32, ino: u64) -> bool {
    std::fs::read_link(format!("/proc/self/fd/{n}"))
        .is_ok_and(|target| target.to_string_lossy() == format!("pipe:[{ino}]"))
}

fn inode(fd: &OwnedFd) -> u64 {
    rustix::fs::fstat(fd).unwrap().st_ino as u64
}

matrix_test!(owned_fd_is_closed_with_the_device, |svc| {
    let (reader, _writer) = pipe();
    let (n, ino) = (reader.as_raw_fd(), inode(&reader));
    let device = IoDevice::new(svc, reader).unwrap();
    assert!(is_open_pipe(n, ino));
    let calls = Calls::default();
    device.readable().then(calls.handler());
    svc.poll().unwrap();
    device.close();
    run_until(svc, || calls.count() == 1);
    util::assert_cancelled(&calls.0.borrow()[0]);
    assert_eq!(device.native(), None);
    device.cancel();
    device.close();
    assert!(!is_open_pipe(n, ino), "the read end is closed");

    // Dropping closes it too.
    let (reader, _writer) = pipe();
    let (n, ino) = (reader.as_raw_fd(), inode(&reader));
    drop(IoDevice::new(svc, reader).unwrap());
    assert!(!is_open_pipe(n, ino), "the read end is closed");
});

matrix_test!(regular_file_is_refused_where_the_backend_can_tell, |svc| {
    let file = tempfile::tempfile().unwrap();
    let res = IoDevice::new(svc, file);
    match svc.backend_name() {
        // epoll refuses regular files (EPERM), reported as Unsupported.
        "epoll" => util::assert_kind(&res, io::ErrorKind::Unsupported),
        // poll(2) cannot refuse: a regular file is always ready.
        "poll" => {
            let device = res.unwrap();
            svc.block_on(device.readable()).unwrap();
            svc.block_on(device.writable()).unwrap();
        }
        other => eprintln!("{other}: IoDevice::new on a regular file gave {res:?}"),
    }
});

matrix_test!(cancel_ends_waits_but_keeps_watching, |svc| {
    let (reader, mut writer) = pipe();
    let device = IoDevice::new(svc, reader).unwrap();
    let first = Calls::default();
    let second = Calls::default();
    device.readable().then(first.handler());
    device.readable().then(second.handler());
    svc.poll().unwrap();
    device.cancel();
    run_until(svc, || first.count() == 1 && second.count() == 1);
    util::assert_cancelled(&first.0.borrow()[0]);
    util::assert_cancelled(&second.0.borrow()[0]);
    writer.write_all(b"!").unwrap();
    svc.block_on(device.readable()).unwrap();
});

/// Moves `fd` to the number `n` (just freed by closing an object): `F_DUPFD` gives the lowest free
/// number at or above `n`. Needs a single-threaded process: another thread could take `n` first.
fn move_to_number(fd: OwnedFd, n: i32) -> OwnedFd {
    let dup = rustix::io::fcntl_dupfd_cloexec(&fd, n).unwrap();
    assert_eq!(dup.as_raw_fd(), n, "the new object got the old fd number");
    dup
}

matrix_test!(fd_number_reuse_does_not_cross_objects, |svc| {
    util::in_child(|| {
        // Devices.
        let (reader, _old_writer) = pipe();
        let (new_reader, mut new_writer) = pipe();
        let old = IoDevice::new(svc, reader).unwrap();
        let n = old.native().unwrap();
        let old_calls = Calls::default();
        old.readable().then(old_calls.handler());
        svc.poll().unwrap();
        old.close();
        let new = IoDevice::new(svc, move_to_number(new_reader, n)).unwrap();
        assert_eq!(new.native(), Some(n));
        let new_calls = Calls::default();
        new.readable().then(new_calls.handler());
        svc.poll().unwrap();
        assert_eq!(new_calls.count(), 0);
        new_writer.write_all(b"new").unwrap();
        run_until(svc, || new_calls.count() == 1 && old_calls.count() == 1);
        for _ in 0..3 {
            svc.poll().unwrap();
        }
        assert_eq!(old_calls.count(), 1, "the old wait completed once");
        util::assert_cancelled(&old_calls.0.borrow()[0]);
        assert_eq!(new_calls.count(), 1, "the new wait fired once");
        new_calls.0.borrow()[0].as_ref().unwrap();

        // Sockets: the old read's buffer never receives the new socket's data.
        let (old, _old_peer) = StreamSocket::pair(svc).unwrap();
        let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let n = old.native().unwrap();
        let old_read = Rc::new(RefCell::new(None));
        old.read_some(vec![0u8; 8]).then({
            let old_read = old_read.clone();
            move |out| *old_read.borrow_mut() = Some(out)
        });
        svc.poll().unwrap();
        drop(old);
        let new = StreamSocket::from_fd(svc, move_to_number(ours.into(), n)).unwrap();
        assert_eq!(new.native(), Some(n));
        let new_read = Rc::new(Cell::new(0));
        new.read_some(vec![0u8; 8]).then({
            let new_read = new_read.clone();
            move |(res, buf)| {
                assert_eq!(&buf[..res.unwrap()], b"data");
                new_read.set(new_read.get() + 1);
            }
        });
        theirs.write_all(b"data").unwrap();
        run_until(svc, || new_read.get() == 1 && old_read.borrow().is_some());
        svc.poll().unwrap();
        let (res, buf) = old_read.take().unwrap();
        util::assert_cancelled(&res);
        assert_eq!(buf, [0u8; 8], "the old buffer saw none of the new data");
        assert_eq!(new_read.get(), 1);
    });
});
