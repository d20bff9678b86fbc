//! Recycled memory for operation blocks (see `block`).
//!
//! Every `.then(handler)` stores its operation and handler in one heap block until the handler runs.
//! A loop that serves many connections allocates and frees such blocks in bursts (an event wakes 64
//! operations, 64 handlers start 64 more), which overflows the allocator's per-thread cache and sends
//! every call down its slow path. The loop keeps the blocks of finished operations instead, by size
//! class (8 bytes apart), each class a list linked through the free blocks themselves: taking a block
//! is a load and a store, keeping one a store and a store.

use std::alloc::Layout;
use std::cell::Cell;
use std::ptr::NonNull;

/// How many free blocks of one class the loop keeps; more are returned to the allocator.
const MAX_FREE_PER_CLASS: u32 = 1024;

/// The size classes are multiples of this, and every pooled block is aligned to it (a word: the
/// allocator's own granularity is two).
const GRAIN: usize = 8;

/// The largest pooled block; larger ones (and those aligned beyond [`GRAIN`]) go to the allocator.
const MAX_POOLED: usize = 1024;

const CLASSES: usize = MAX_POOLED / GRAIN;

/// A free block's first word: the next free block of its class.
struct Free {
    next: Option<NonNull<Free>>,
}

/// Free blocks by size class. A pooled block was allocated by the global allocator with its class's
/// layout ([`class_layout`]), whatever the layout of the value it held.
pub(crate) struct OpPool {
    heads: [Cell<Option<NonNull<Free>>>; CLASSES],
    counts: [Cell<u32>; CLASSES],
}

impl Default for OpPool {
    fn default() -> Self {
        OpPool {
            heads: [const { Cell::new(None) }; CLASSES],
            counts: [const { Cell::new(0) }; CLASSES],
        }
    }
}

/// The class of `layout`, if blocks of it are pooled: its size rounded up to the grain, minus one.
#[inline(always)]
const fn class_of(layout: Layout) -> Option<usize> {
    if layout.align() <= GRAIN && layout.size() <= MAX_POOLED && layout.size() > 0 {
        Some((layout.size() - 1) / GRAIN)
    } else {
        None
    }
}

/// The layout every block of `class` is allocated with.
#[inline(always)]
const fn class_layout(class: usize) -> Layout {
    match Layout::from_size_align((class + 1) * GRAIN, GRAIN) {
        Ok(layout) => layout,
        Err(_) => panic!("size classes are valid layouts"),
    }
}

/// The layout a block for a value of `layout` is allocated with: its class's, or its own.
#[inline(always)]
const fn block_layout(layout: Layout) -> Layout {
    match class_of(layout) {
        Some(class) => class_layout(class),
        None => layout,
    }
}

impl OpPool {
    /// A block for a value of `layout`: a recycled one when the pool has one of its class, otherwise
    /// a new one. Uninitialised, and owned by the caller until given back with [`put`](OpPool::put)
    /// for the same `layout`.
    #[inline(always)]
    pub(crate) fn take(&self, layout: Layout) -> NonNull<u8> {
        if let Some(class) = class_of(layout) {
            if let Some(free) = self.heads[class].get() {
                // SAFETY: a block in a list is a pooled block that holds only its `Free` link.
                self.heads[class].set(unsafe { free.as_ref() }.next);
                self.counts[class].set(self.counts[class].get() - 1);
                return free.cast();
            }
        }
        Self::alloc(layout)
    }

    #[cold]
    #[inline(never)]
    fn alloc(layout: Layout) -> NonNull<u8> {
        let layout = block_layout(layout);
        // SAFETY: `layout` is not zero-sized (every block has a header).
        match NonNull::new(unsafe { std::alloc::alloc(layout) }) {
            Some(block) => block,
            None => std::alloc::handle_alloc_error(layout),
        }
    }

    /// Keeps `block` for a later [`take`](OpPool::take) of its class, or frees it.
    ///
    /// # Safety
    /// `block` must come from [`take`](OpPool::take) with this `layout` (from this pool or another),
    /// hold no live value, and not be used by the caller afterwards.
    #[inline(always)]
    pub(crate) unsafe fn put(&self, block: NonNull<u8>, layout: Layout) {
        if let Some(class) = class_of(layout) {
            let count = self.counts[class].get();
            if count < MAX_FREE_PER_CLASS {
                let free = block.cast::<Free>();
                // SAFETY: the block is at least one word large and aligned to the grain (its class
                // layout), and holds no live value: its first word becomes the link.
                unsafe {
                    free.as_ptr().write(Free {
                        next: self.heads[class].get(),
                    })
                };
                self.heads[class].set(Some(free));
                self.counts[class].set(count + 1);
                return;
            }
        }
        // SAFETY: passed on from the caller.
        unsafe { free(block, layout) };
    }
}

/// Frees a block taken for a value of `layout` without keeping it (no pool at hand: a job dropped
/// unrun).
///
/// # Safety
/// As for [`OpPool::put`].
pub(crate) unsafe fn free(block: NonNull<u8>, layout: Layout) {
    // SAFETY: passed on from the caller: allocated with `block_layout(layout)`.
    unsafe { std::alloc::dealloc(block.as_ptr(), block_layout(layout)) };
}

impl Drop for OpPool {
    fn drop(&mut self) {
        for (class, head) in self.heads.iter().enumerate() {
            let mut next = head.take();
            while let Some(free) = next {
                // SAFETY: every block in a list was allocated with its class's layout and is owned by
                // the pool alone; its link is read before it is freed.
                unsafe {
                    next = free.as_ref().next;
                    std::alloc::dealloc(free.as_ptr().cast(), class_layout(class));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_reused_by_size_class() {
        let pool = OpPool::default();
        let four_words = Layout::new::<[u64; 4]>();
        let a = pool.take(four_words);
        // SAFETY: taken with this layout, holds no value.
        unsafe { pool.put(a, four_words) };
        // The same class (32 bytes), another type: the same block.
        let b = pool.take(Layout::new::<[u32; 8]>());
        assert_eq!(a, b);
        // Another class: a new block.
        let one_byte = Layout::new::<u8>();
        let c = pool.take(one_byte);
        assert_ne!(c, b);
        // SAFETY: as above (`b` was taken for a layout of the same class as `four_words`).
        unsafe {
            pool.put(b, four_words);
            pool.put(c, one_byte);
        }
    }

    #[test]
    fn the_pool_is_bounded_and_odd_layouts_bypass_it() {
        let pool = OpPool::default();
        let word = Layout::new::<u64>();
        let blocks: Vec<_> = (0..MAX_FREE_PER_CLASS + 10)
            .map(|_| pool.take(word))
            .collect();
        for b in blocks {
            // SAFETY: taken with this layout, holds no value.
            unsafe { pool.put(b, word) };
        }
        let class = class_of(word).expect("pooled");
        assert_eq!(pool.counts[class].get(), MAX_FREE_PER_CLASS);
        // Too large, or aligned beyond the grain: straight from and back to the allocator.
        for layout in [
            Layout::from_size_align(4096, 8).unwrap(),
            Layout::from_size_align(64, 16).unwrap(),
        ] {
            assert!(class_of(layout).is_none());
            let block = pool.take(layout);
            assert_eq!(block.as_ptr() as usize % layout.align(), 0);
            // SAFETY: as above.
            unsafe { pool.put(block, layout) };
        }
    }
}
