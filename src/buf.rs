//! Owned buffers.
//!
//! Every `aio` operation takes its buffer by value and hands it back with the result, as
//! `(io::Result<T>, B)`. The buffer therefore lives as long as the operation needs it, whatever the
//! caller does meanwhile (drop a future, close the socket), which is what a completion backend such as
//! io_uring requires and what spares handlers booster's "the buffer must remain valid" rule.
//!
//! [`IoBuf`] is a buffer the library may read from (writes); [`IoBufMut`] one it may fill (reads).
//! Both are implemented for `Vec<u8>`, `Box<[u8]>` and `bytes::BytesMut`; `bytes::Bytes`,
//! `&'static [u8]` and `&'static str` are `IoBuf`. [`Slice`] narrows any of them to a byte range.
//! [`GrowableBuf`] (`Vec<u8>`, `BytesMut`) is a buffer that can make room for more: reads that
//! append ([`StreamSocket::read_buf`](crate::StreamSocket::read_buf)) take one.
//!
//! A read fills a buffer from its start, up to [`IoBuf::bytes_total`] (the capacity of a `Vec`), and
//! raises its initialised length to the count read: `Vec::with_capacity(1024)` and `vec![0; 1024]` both
//! take up to 1024 bytes. What the buffer held at the start is overwritten; to keep it and add after
//! it, use `read_buf`, or read into `buf.slice(buf.len()..)`.
//!
//! ```
//! use aio::buf::IoBuf;
//! let data = b"hello world".to_vec();
//! let hello = data.slice(0..5);
//! assert_eq!(hello.as_slice(), b"hello");
//! let data = hello.into_inner(); // the whole buffer comes back
//! assert_eq!(data.len(), 11);
//! ```

use std::mem::MaybeUninit;
use std::ops::{Bound, RangeBounds};

/// A buffer whose initialised bytes the library may read (to write them out).
///
/// # Safety
/// `stable_ptr` must point to at least `bytes_total` bytes of which the first `bytes_init` are
/// initialised, and the pointer must stay valid, and the memory unmoved, while the value is merely moved
/// (heap storage or `'static` data): operations keep the buffer inside them while the kernel uses it.
pub unsafe trait IoBuf: Unpin + 'static {
    /// Pointer to the first byte; stable across moves of `self`.
    fn stable_ptr(&self) -> *const u8;
    /// How many bytes, from the start, are initialised.
    fn bytes_init(&self) -> usize;
    /// How many bytes the storage holds in all (initialised or not).
    fn bytes_total(&self) -> usize;

    /// The initialised bytes.
    fn as_slice(&self) -> &[u8] {
        // SAFETY: the trait contract says the first `bytes_init` bytes at `stable_ptr` are initialised
        // and valid while `self` is borrowed.
        unsafe { std::slice::from_raw_parts(self.stable_ptr(), self.bytes_init()) }
    }

    /// Narrows the buffer to `range` (within [`bytes_total`](IoBuf::bytes_total)); the whole buffer
    /// comes back with [`Slice::into_inner`].
    ///
    /// # Panics
    /// If the range lies outside `0..bytes_total()`: that is a programming error, like slicing a `Vec`
    /// out of bounds.
    fn slice(self, range: impl RangeBounds<usize>) -> Slice<Self>
    where
        Self: Sized,
    {
        let begin = match range.start_bound() {
            Bound::Included(&n) => n,
            Bound::Excluded(&n) => n + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&n) => n + 1,
            Bound::Excluded(&n) => n,
            Bound::Unbounded => self.bytes_total(),
        };
        assert!(
            begin <= end && end <= self.bytes_total(),
            "slice {begin}..{end} out of bounds of a buffer of {} bytes",
            self.bytes_total()
        );
        Slice {
            buf: self,
            begin,
            end,
        }
    }
}

/// A buffer the library may fill (to read into it).
///
/// # Safety
/// As for [`IoBuf`]; moreover `stable_mut_ptr` must be valid for writes of `bytes_total` bytes, and
/// after `set_init(n)` the first `n` bytes must be treated as initialised.
pub unsafe trait IoBufMut: IoBuf {
    /// Mutable pointer to the first byte; stable across moves of `self`.
    fn stable_mut_ptr(&mut self) -> *mut u8;

    /// Records that the first `pos` bytes are initialised (raising, never lowering, the length).
    ///
    /// # Safety
    /// The first `pos` bytes must really have been written.
    unsafe fn set_init(&mut self, pos: usize);

    /// The whole storage as possibly uninitialised bytes, for a read to fill.
    fn as_uninit_mut(&mut self) -> &mut [MaybeUninit<u8>] {
        let total = self.bytes_total();
        // SAFETY: the trait contract says `stable_mut_ptr` is valid for `bytes_total` bytes; viewing
        // them as `MaybeUninit<u8>` makes no claim about their contents.
        unsafe { std::slice::from_raw_parts_mut(self.stable_mut_ptr().cast(), total) }
    }
}

/// [`IoBuf`] for handles to bytes that stay put when the handle moves (heap or static storage):
/// `len()` bytes from `as_ptr()` are initialised, and `$total()` bytes there are the buffer.
macro_rules! io_buf_for_handles {
    ($($ty:ty => $total:ident),* $(,)?) => {$(
        // SAFETY: every type listed is a handle to heap or static bytes that do not move with it
        // (a dangling but valid pointer when empty); `len()` and `capacity()` are exact.
        unsafe impl IoBuf for $ty {
            fn stable_ptr(&self) -> *const u8 {
                self.as_ptr()
            }
            fn bytes_init(&self) -> usize {
                self.len()
            }
            fn bytes_total(&self) -> usize {
                self.$total()
            }
        }
    )*};
}

io_buf_for_handles!(
    Vec<u8> => capacity,
    bytes::BytesMut => capacity,
    Box<[u8]> => len,
    bytes::Bytes => len,
    &'static [u8] => len,
    &'static str => len,
);

/// [`IoBufMut`] for growable handles (`Vec<u8>`, `BytesMut`): a read raises the length over the
/// bytes it wrote, never lowers it.
macro_rules! io_buf_mut_for_growable {
    ($($ty:ty),* $(,)?) => {$(
        // SAFETY: the pointer is valid for `capacity()` bytes, and `set_init` only raises the
        // length over bytes the caller vouches for.
        unsafe impl IoBufMut for $ty {
            fn stable_mut_ptr(&mut self) -> *mut u8 {
                self.as_mut_ptr()
            }
            unsafe fn set_init(&mut self, pos: usize) {
                if pos > self.len() {
                    // SAFETY: `pos <= capacity` (reads never exceed bytes_total) and the caller
                    // guarantees the bytes up to `pos` were written.
                    unsafe { self.set_len(pos) }
                }
            }
        }
    )*};
}

io_buf_mut_for_growable!(Vec<u8>, bytes::BytesMut);

/// A buffer that can grow: its initialised bytes are its length, and [`reserve`](GrowableBuf::reserve)
/// makes room after them. [`StreamSocket::read_buf`](crate::StreamSocket::read_buf) reads into that
/// room (the spare capacity) and raises the length by the count read, so a partial frame already in
/// the buffer stays where it is.
///
/// ```
/// use aio::buf::{GrowableBuf, IoBuf};
/// let mut buf = b"half a fr".to_vec();
/// buf.reserve(100);
/// assert!(buf.bytes_total() - buf.bytes_init() >= 100);
/// assert_eq!(buf, b"half a fr"); // what it held stays
/// ```
pub trait GrowableBuf: IoBufMut {
    /// Makes room for at least `additional` bytes after the initialised ones (the length), moving
    /// the storage if it must; the initialised bytes are kept.
    fn reserve(&mut self, additional: usize);
}

impl GrowableBuf for Vec<u8> {
    fn reserve(&mut self, additional: usize) {
        Vec::reserve(self, additional);
    }
}

impl GrowableBuf for bytes::BytesMut {
    fn reserve(&mut self, additional: usize) {
        bytes::BytesMut::reserve(self, additional);
    }
}

// SAFETY: all bytes of a boxed slice are always initialised, so `set_init` has nothing to record.
unsafe impl IoBufMut for Box<[u8]> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }
    unsafe fn set_init(&mut self, _pos: usize) {}
}

/// A byte range of an owned buffer; operations use only that range, and
/// [`into_inner`](Slice::into_inner) gives the whole buffer back.
#[derive(Debug)]
pub struct Slice<B> {
    buf: B,
    begin: usize,
    end: usize,
}

impl<B> Slice<B> {
    /// Where the range starts in the underlying buffer.
    pub fn begin(&self) -> usize {
        self.begin
    }
    /// Where the range ends (exclusive) in the underlying buffer.
    pub fn end(&self) -> usize {
        self.end
    }
    /// The underlying buffer.
    pub fn get_ref(&self) -> &B {
        &self.buf
    }
    /// The whole underlying buffer, giving up the range.
    pub fn into_inner(self) -> B {
        self.buf
    }
}

// SAFETY: a sub-range of a valid IoBuf is valid; init is clamped to the range.
unsafe impl<B: IoBuf> IoBuf for Slice<B> {
    fn stable_ptr(&self) -> *const u8 {
        // `begin <= bytes_total`, so the offset stays within (or one past) the allocation.
        self.buf.stable_ptr().wrapping_add(self.begin)
    }
    fn bytes_init(&self) -> usize {
        self.buf.bytes_init().clamp(self.begin, self.end) - self.begin
    }
    fn bytes_total(&self) -> usize {
        self.end - self.begin
    }
}

// SAFETY: writes stay within `begin..end` of a valid IoBufMut; init is translated to the inner buffer.
unsafe impl<B: IoBufMut> IoBufMut for Slice<B> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.buf.stable_mut_ptr().wrapping_add(self.begin)
    }
    unsafe fn set_init(&mut self, pos: usize) {
        // SAFETY: forwarded with the offset of the range; the caller vouches for the bytes.
        unsafe { self.buf.set_init(self.begin + pos) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vec_read_target_is_its_capacity() {
        let mut v: Vec<u8> = Vec::with_capacity(16);
        assert_eq!(v.bytes_total(), v.capacity());
        assert_eq!(v.bytes_init(), 0);
        v.as_uninit_mut()[0].write(7);
        // SAFETY: the first byte was just written.
        unsafe { v.set_init(1) };
        assert_eq!(v, [7]);
        // SAFETY: vouches for no byte at all.
        unsafe { v.set_init(0) };
        assert_eq!(v.len(), 1, "set_init never lowers the length");
    }

    #[test]
    fn slice_clamps_init_and_offsets() {
        let v = b"0123456789".to_vec();
        let s = v.slice(2..5);
        assert_eq!(s.as_slice(), b"234");
        assert_eq!(s.bytes_total(), 3);
        let mut w: Vec<u8> = Vec::with_capacity(8);
        w.extend_from_slice(b"ab");
        let mut s = w.slice(1..6);
        assert_eq!(s.bytes_init(), 1);
        s.as_uninit_mut()[1].write(b'z');
        // SAFETY: the slice's first byte was there, its second was just written.
        unsafe { s.set_init(2) };
        assert_eq!(s.into_inner(), b"abz");
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn slice_out_of_bounds_panics() {
        let _ = b"abc".to_vec().slice(0..10);
    }

    #[test]
    fn static_buffers() {
        let s: &'static [u8] = b"xyz";
        assert_eq!(s.slice(1..).as_slice(), b"yz");
        assert_eq!("hi".as_slice(), b"hi");
    }
}
