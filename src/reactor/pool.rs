//! Recycled memory for operation blocks (see `block`).
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A block of `layout` from the pool, or a new one.
    fn take_or_alloc(pool: &mut OpPool, layout: Layout) -> NonNull<u8> {
        pool.take(layout).unwrap_or_else(|| {
            // SAFETY: the layouts used here are not zero-sized.
            NonNull::new(unsafe { std::alloc::alloc(layout) }).expect("memory")
        })
    }

    #[test]
    fn blocks_are_reused_by_layout() {
        let mut pool = OpPool::default();
        let four_words = Layout::new::<[u64; 4]>();
        let a = take_or_alloc(&mut pool, four_words);
        // SAFETY: allocated with this layout, holds no value.
        unsafe { pool.put(a, four_words) };
        // Same layout: the same block.
        let b = take_or_alloc(&mut pool, Layout::new::<(u64, u64, u64, u64)>());
        assert_eq!(a, b);
        // Another layout: a new block.
        let one_byte = Layout::new::<u8>();
        let c = take_or_alloc(&mut pool, one_byte);
        assert_ne!(c, b);
        // SAFETY: as above.
        unsafe {
            pool.put(b, four_words);
            pool.put(c, one_byte);
        }
    }

    #[test]
    fn the_pool_is_bounded() {
        let mut pool = OpPool::default();
        // u32 has alignment 4: kept in the searched lists.
        let small = Layout::new::<u32>();
        assert!(direct_index(small).is_none());
        let blocks: Vec<_> = (0..MAX_FREE_PER_LAYOUT + 10)
            .map(|_| take_or_alloc(&mut pool, small))
            .collect();
        for b in blocks {
            // SAFETY: allocated with this layout, holds no value.
            unsafe { pool.put(b, small) };
        }
        assert_eq!(pool.classes[0].free.len(), MAX_FREE_PER_LAYOUT);
        assert!(pool.classes[0].free.capacity() <= MAX_FREE_PER_LAYOUT);
        let word = Layout::new::<u64>();
        let blocks: Vec<_> = (0..MAX_FREE_PER_LAYOUT + 10)
            .map(|_| take_or_alloc(&mut pool, word))
            .collect();
        for b in blocks {
            // SAFETY: as above.
            unsafe { pool.put(b, word) };
        }
        let list = &pool.direct[direct_index(word).expect("a direct layout")];
        assert_eq!(list.len(), MAX_FREE_PER_LAYOUT);
        assert!(list.capacity() <= MAX_FREE_PER_LAYOUT);
    }
}
