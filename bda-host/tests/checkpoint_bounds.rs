//! A checkpoint whose backbone shape is absurd is refused from the shape alone: quickly, and
//! allocating only what reading its text takes (a global allocator counts the bytes), never
//! memory or time sized by the numbers in the file. Its own test binary, so that the count
//! sees no other test's allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use bda_host::fewshot::args::{EpisodeArgs, FsMethod};
use bda_host::fewshot::checkpoint::{Checkpoint, RngState};
use bda_host::fewshot::config::RunConfig;
use bda_host::optim::Adam;
use bda_kernel::fewshot::Conv4Shape;
use rand::SeedableRng;

/// The system allocator, counting the bytes it hands out.
struct Counting;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A fresh checkpoint of a 2-channel, 1-block backbone on 4×4 images, as JSON.
fn small() -> serde_json::Value {
    let arch = Conv4Shape {
        channels: 2,
        in_channels: 1,
        side: 4,
        blocks: 1,
    };
    let episode = EpisodeArgs {
        ways: 2,
        shots: 1,
        queries: 1,
        meta_batch: 1,
        method: FsMethod::Bda,
        k: 2,
        first_order: false,
        lambda: 2.0,
        cg_iters: 5,
    };
    let n = arch.num_params();
    let rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let ck = Checkpoint::new(
        RunConfig::untrained(episode, arch, 0),
        vec![0.5; n],
        Adam::new(1e-3, n),
        RngState::of(0, &rng),
    );
    serde_json::to_value(&ck).unwrap()
}

/// Without the bound, 2⁴⁰ blocks kept the reader counting parameters block by block for
/// minutes (this test then fails at its deadline).
#[test]
fn absurd_shapes_are_refused_quickly_without_allocating_for_them() {
    for (key, value) in [
        ("blocks", 1u64 << 40),
        ("channels", 1 << 31),
        ("side", 1 << 40),
        ("in_channels", 1 << 20),
    ] {
        let mut v = small();
        v["config"]["arch"][key] = value.into();
        let bytes = serde_json::to_vec(&v).unwrap();
        // In a thread with a deadline, so that a reader that loops over the blocks fails
        // here instead of hanging the test run.
        let (tx, rx) = mpsc::channel();
        let len = bytes.len();
        std::thread::spawn(move || {
            let before = ALLOCATED.load(Ordering::Relaxed);
            let r = Checkpoint::parse(&bytes).map(|_| ());
            let used = ALLOCATED.load(Ordering::Relaxed) - before;
            tx.send((r, used)).unwrap();
        });
        let (r, used) = rx.recv_timeout(Duration::from_secs(2)).unwrap_or_else(|e| {
            let why = match e {
                RecvTimeoutError::Timeout => "not refused within 2 s",
                RecvTimeoutError::Disconnected => "the reader panicked",
            };
            panic!("{key} = {value}: {why}")
        });
        let e = r.unwrap_err();
        assert!(
            e.starts_with("corrupt checkpoint: the backbone's ") && e.contains(&value.to_string()),
            "{key}: {e}"
        );
        // Reading the text builds a JSON tree a small multiple of its length (measured:
        // 13.4 kB for 0.77 kB, 17 times); a buffer of the shape's size would be gigabytes.
        assert!(
            used < 64 * len,
            "{key}: {used} bytes allocated for {len} of text"
        );
    }
}
