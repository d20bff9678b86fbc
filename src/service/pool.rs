//! Recycled memory for callback operations.
//!
//! Every `.then(handler)` stores its operation and handler in one heap block until the handler runs.
//! A loop that serves many connections allocates and frees such blocks in bursts (an event wakes 64
//! operations, 64 handlers start 64 more), which overflows the allocator's per-thread cache and sends
//! every call down its slow path. The loop keeps the blocks of finished operations instead, by exact
//! layout, and hands them to the next operation of the same layout: a pointer pop instead of a
//! `malloc`, a pointer push instead of a `free`.

use std::alloc::Layout;
use std::ptr::NonNull;

/// How many free blocks of one layout the loop keeps; more are returned to the allocator.
const MAX_FREE_PER_LAYOUT: usize = 1024;

/// The largest block kept in a list found by index (see [`OpPool::direct`]).
const DIRECT_MAX_SIZE: usize = 1024;

/// Free blocks, by exact layout. Every block was allocated by the global allocator with its layout.
#[derive(Default)]
pub(crate) struct OpPool {
    /// The common layouts (alignment 8, up to [`DIRECT_MAX_SIZE`] bytes: a callback operation with
    /// its handler), by size / 8: the layout is a constant where a block is taken or kept, so finding
    /// its list is an index, not a search. Grown on the first block kept.
    direct: Vec<Vec<NonNull<u8>>>,
    /// Any other layout.
    classes: Vec<Class>,
}

struct Class {
    layout: Layout,
    free: Vec<NonNull<u8>>,
}

/// The index of `layout`'s list in [`OpPool::direct`], if it has one there.
#[inline(always)]
fn direct_index(layout: Layout) -> Option<usize> {
    (layout.align() == 8 && layout.size() <= DIRECT_MAX_SIZE).then_some(layout.size() / 8)
}

impl OpPool {
    /// A free block of exactly `layout`, if one is kept: allocated by the global allocator with
    /// `layout`, uninitialised, and owned by the caller from now on.
    #[inline]
    pub(crate) fn take(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        match direct_index(layout) {
            Some(i) => self.direct.get_mut(i)?.pop(),
            None => self
                .classes
                .iter_mut()
                .find(|c| c.layout == layout)?
                .free
                .pop(),
        }
    }

    /// Keeps `block` for a later [`take`](OpPool::take) of the same layout, or frees it.
    ///
    /// # Safety
    /// `block` must have been allocated by the global allocator with exactly `layout` (a `Box<T>` with
    /// `Layout::new::<T>() == layout`), hold no live value, and not be used by the caller afterwards.
    #[inline(always)]
    pub(crate) unsafe fn put(&mut self, block: NonNull<u8>, layout: Layout) {
        // The common case inline: a known layout with room left in its list's allocation.
        let list = match direct_index(layout) {
            Some(i) => self.direct.get_mut(i),
            None => self
                .classes
                .iter_mut()
                .find(|c| c.layout == layout)
                .map(|c| &mut c.free),
        };
        if let Some(list) = list {
            if list.len() < list.capacity() {
                list.push(block);
                return;
            }
        }
        // SAFETY: passed on from the caller.
        unsafe { self.put_slow(block, layout) }
    }

    /// [`put`](OpPool::put) for a new layout, a list that must grow, or a full one.
    ///
    /// # Safety
    /// As for [`put`](OpPool::put).
    #[cold]
    #[inline(never)]
    unsafe fn put_slow(&mut self, block: NonNull<u8>, layout: Layout) {
        if layout.size() == 0 {
            return; // a zero-sized box owns no memory
        }
        let list = match direct_index(layout) {
            Some(i) => {
                if self.direct.len() <= i {
                    self.direct.resize_with(i + 1, Vec::new);
                }
                &mut self.direct[i]
            }
            None => match self.classes.iter().position(|c| c.layout == layout) {
                Some(i) => &mut self.classes[i].free,
                None => {
                    self.classes.push(Class {
                        layout,
                        free: Vec::new(),
                    });
                    &mut self.classes.last_mut().expect("just pushed").free
                }
            },
        };
        let len = list.len();
        if len < MAX_FREE_PER_LAYOUT {
            // Grown by hand so that the capacity, which `put`'s fast path checks, never exceeds the
            // bound.
            list.reserve_exact(len.clamp(16, MAX_FREE_PER_LAYOUT - len));
            list.push(block);
        } else {
            // SAFETY: the caller guarantees `block` came from the global allocator with `layout`
            // and is no longer used.
            unsafe { std::alloc::dealloc(block.as_ptr(), layout) };
        }
    }
}

impl Drop for OpPool {
    fn drop(&mut self) {
        for (i, list) in self.direct.iter_mut().enumerate() {
            let Ok(layout) = Layout::from_size_align(i * 8, 8) else {
                continue; // unreachable: every index is a size kept by `put_slow`
            };
            for block in list.drain(..) {
                // SAFETY: a block kept at index `i` came from the global allocator with alignment 8
                // and size `i * 8` (`direct_index`, `put`'s contract), and is owned by the pool alone.
                unsafe { std::alloc::dealloc(block.as_ptr(), layout) };
            }
        }
        for class in &mut self.classes {
            for block in class.free.drain(..) {
                // SAFETY: every kept block came from the global allocator with its class's layout
                // (`put`'s contract) and is owned by the pool alone.
                unsafe { std::alloc::dealloc(block.as_ptr(), class.layout) };
            }
        }
    }
}

/// Boxes `value`, in a recycled block when the pool has one of its layout.
#[inline]
pub(crate) fn boxed<T>(pool: &mut OpPool, value: T) -> Box<T> {
    match pool.take(Layout::new::<T>()) {
        Some(block) => {
            let ptr = block.cast::<T>().as_ptr();
            // SAFETY: the block was allocated by the global allocator with `Layout::new::<T>()`
            // (`take`'s promise), so it is large and aligned enough for a `T`, and a `Box<T>` built on
            // it frees it with the very layout it was allocated with. It holds no value: writing one
            // overwrites nothing.
            unsafe {
                ptr.write(value);
                Box::from_raw(ptr)
            }
        }
        None => Box::new(value),
    }
}

/// Drops the value in `boxed` where it lies and keeps its block in the pool: for a value whose
/// parts were already taken out, so that nothing is copied.
#[inline]
pub(crate) fn recycle<T>(pool: &mut OpPool, boxed: Box<T>) {
    let ptr = Box::into_raw(boxed);
    // SAFETY: `ptr` comes from a live `Box<T>`: it holds an initialised `T` that nothing else owns,
    // dropped here exactly once; the block is not used as a `T` again.
    unsafe { std::ptr::drop_in_place(ptr) };
    if let Some(block) = NonNull::new(ptr.cast::<u8>()) {
        // SAFETY: a `Box<T>`'s block was allocated by the global allocator with `Layout::new::<T>()`
        // (or is dangling for a zero-sized `T`, which `put` ignores), and its value was dropped.
        unsafe { pool.put(block, Layout::new::<T>()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_reused_by_layout() {
        let mut pool = OpPool::default();
        let a = boxed(&mut pool, [1u64; 4]);
        let addr = &*a as *const [u64; 4] as usize;
        assert_eq!(*a, [1u64; 4]);
        recycle(&mut pool, a);
        // Same layout, another type: the same block.
        let b = boxed(&mut pool, (2u64, 3u64, 4u64, 5u64));
        assert_eq!(&*b as *const (u64, u64, u64, u64) as usize, addr);
        // Another layout: a new block.
        let c = boxed(&mut pool, 7u8);
        assert_eq!(*c, 7);
        drop(c);
        assert_eq!(*b, (2, 3, 4, 5));
        recycle(&mut pool, b);
        let z = boxed(&mut pool, ());
        recycle(&mut pool, z);
    }

    #[test]
    fn the_pool_is_bounded() {
        let mut pool = OpPool::default();
        let boxes: Vec<Box<u32>> = (0..MAX_FREE_PER_LAYOUT as u32 + 10)
            .map(|i| boxed(&mut pool, i))
            .collect();
        for b in boxes {
            recycle(&mut pool, b);
        }
        // u32 has alignment 4: kept in the searched lists.
        assert!(direct_index(Layout::new::<u32>()).is_none());
        assert_eq!(pool.classes[0].free.len(), MAX_FREE_PER_LAYOUT);
        assert!(pool.classes[0].free.capacity() <= MAX_FREE_PER_LAYOUT);
        let boxes: Vec<Box<u64>> = (0..MAX_FREE_PER_LAYOUT as u64 + 10)
            .map(|i| boxed(&mut pool, i))
            .collect();
        for b in boxes {
            recycle(&mut pool, b);
        }
        let list = &pool.direct[direct_index(Layout::new::<u64>()).expect("a direct layout")];
        assert_eq!(list.len(), MAX_FREE_PER_LAYOUT);
        assert!(list.capacity() <= MAX_FREE_PER_LAYOUT);
    }
}
