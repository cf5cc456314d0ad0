//! Ranks as threads of one process ([`LocalRanks`]): the kernel's
//! [`Collective`] over channels, so that everything a split over ranks changes (chunk
//! ownership, the order of the chained sums, the gathers) is tested without MPI installed.
//! The MPI implementation (`bda-host`, feature `mpi`) has the same semantics.
//!
//! ```
//! use bda_cpu::ranks::LocalRanks;
//! use bda_kernel::collective::{Add, Collective, segments};
//!
//! // Three ranks add their rank + 1 to a running sum, in rank order.
//! let sums = LocalRanks::run(3, |comm| {
//!     let mut acc = [0.0f32];
//!     comm.chain_f32(&mut acc, &mut |_, acc| acc[0] += (comm.rank() + 1) as f32);
//!     acc[0]
//! });
//! assert_eq!(sums, vec![6.0; 3]);
//! ```

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

use bda_kernel::collective::{Add, Collective, segments};

/// What one rank sends another.
enum Msg {
    F32(Vec<f32>),
    F64(Vec<f64>),
    Text(Option<String>),
}

/// One rank of [`LocalRanks`]: a channel to and from every other rank (per pair, so that
/// messages between two ranks keep their order, as MPI's do).
pub struct LocalRank {
    rank: usize,
    to: Vec<Sender<Msg>>,
    from: Vec<Mutex<Receiver<Msg>>>,
}

impl std::fmt::Debug for LocalRank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LocalRank({} of {})", self.rank, self.to.len())
    }
}

/// `ranks` ranks as threads of this process.
pub struct LocalRanks;

impl LocalRanks {
    /// The endpoints of `ranks` ranks, in rank order (one per thread).
    pub fn endpoints(ranks: usize) -> Vec<LocalRank> {
        assert!(ranks > 0, "at least one rank");
        // channels[i][j]: from rank i to rank j.
        let mut senders: Vec<Vec<Option<Sender<Msg>>>> = Vec::new();
        let mut receivers: Vec<Vec<Option<Receiver<Msg>>>> = Vec::new();
        for _ in 0..ranks {
            let (s, r): (Vec<_>, Vec<_>) = (0..ranks)
                .map(|_| {
                    let (s, r) = channel();
                    (Some(s), Some(r))
                })
                .unzip();
            senders.push(s);
            receivers.push(r);
        }
        (0..ranks)
            .map(|me| LocalRank {
                rank: me,
                to: (0..ranks)
                    .map(|j| senders[me][j].take().expect("one sender"))
                    .collect(),
                from: (0..ranks)
                    .map(|i| Mutex::new(receivers[i][me].take().expect("one receiver")))
                    .collect(),
            })
            .collect()
    }

    /// Run `f` on `ranks` threads, one rank each (its endpoint shared, as a backend holds
    /// it); the results in rank order. A panic on one rank is re-raised here (the others
    /// then fail on a closed channel).
    pub fn run<R: Send>(ranks: usize, f: impl Fn(Arc<LocalRank>) -> R + Sync) -> Vec<R> {
        let eps = Self::endpoints(ranks);
        std::thread::scope(|s| {
            let handles: Vec<_> = eps
                .into_iter()
                .map(|ep| {
                    let f = &f;
                    s.spawn(move || f(Arc::new(ep)))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        })
    }
}

impl LocalRank {
    fn send(&self, to: usize, m: Msg) {
        self.to[to].send(m).expect("a rank has gone");
    }
    fn recv(&self, from: usize) -> Msg {
        let rx = self.from[from].lock().expect("receiver");
        rx.recv().expect("a rank has gone")
    }
}

impl Collective for LocalRank {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.to.len()
    }

    fn chain_f32(&self, acc: &mut [f32], add: &mut Add<'_, f32>) {
        chain(
            self,
            acc,
            add,
            |v| Msg::F32(v.to_vec()),
            |m| match m {
                Msg::F32(v) => v,
                _ => panic!("collectives out of order: expected f32"),
            },
        )
    }

    fn chain_f64(&self, acc: &mut [f64], add: &mut Add<'_, f64>) {
        chain(
            self,
            acc,
            add,
            |v| Msg::F64(v.to_vec()),
            |m| match m {
                Msg::F64(v) => v,
                _ => panic!("collectives out of order: expected f64"),
            },
        )
    }

    fn gather_f32(&self, mine: &[f32], counts: &[usize], out: &mut [f32]) {
        gather(
            self,
            mine,
            counts,
            out,
            |v| Msg::F32(v.to_vec()),
            |m| match m {
                Msg::F32(v) => v,
                _ => panic!("collectives out of order: expected f32"),
            },
        )
    }

    fn gather_f64(&self, mine: &[f64], counts: &[usize], out: &mut [f64]) {
        gather(
            self,
            mine,
            counts,
            out,
            |v| Msg::F64(v.to_vec()),
            |m| match m {
                Msg::F64(v) => v,
                _ => panic!("collectives out of order: expected f64"),
            },
        )
    }

    fn agree(&self, mine: Option<&str>) -> Option<String> {
        for j in (0..self.size()).filter(|&j| j != self.rank) {
            self.send(j, Msg::Text(mine.map(String::from)));
        }
        let mut first = None;
        for i in 0..self.size() {
            let m = if i == self.rank {
                mine.map(String::from)
            } else {
                match self.recv(i) {
                    Msg::Text(t) => t,
                    _ => panic!("collectives out of order: expected a failure flag"),
                }
            };
            first = first.or(m);
        }
        first
    }
}

/// The running sum from rank to rank, segment by segment, then the last rank's to every
/// other.
fn chain<T: Copy>(
    me: &LocalRank,
    acc: &mut [T],
    add: &mut Add<'_, T>,
    wrap: impl Fn(&[T]) -> Msg,
    unwrap: impl Fn(Msg) -> Vec<T>,
) {
    let (r, p) = (me.rank, me.size());
    for seg in segments(acc.len()) {
        let part = &mut acc[seg.clone()];
        if r > 0 {
            part.copy_from_slice(&unwrap(me.recv(r - 1)));
        }
        add(seg, part);
        if r + 1 < p {
            me.send(r + 1, wrap(part));
        }
    }
    if r + 1 < p {
        acc.copy_from_slice(&unwrap(me.recv(p - 1)));
    } else {
        for j in 0..p - 1 {
            me.send(j, wrap(acc));
        }
    }
}

/// Every rank sends its piece to every other and places each piece at its offset.
fn gather<T: Copy>(
    me: &LocalRank,
    mine: &[T],
    counts: &[usize],
    out: &mut [T],
    wrap: impl Fn(&[T]) -> Msg,
    unwrap: impl Fn(Msg) -> Vec<T>,
) {
    let p = me.size();
    assert_eq!(counts.len(), p);
    assert_eq!(mine.len(), counts[me.rank]);
    assert_eq!(out.len(), counts.iter().sum::<usize>());
    for j in (0..p).filter(|&j| j != me.rank) {
        me.send(j, wrap(mine));
    }
    let mut at = 0;
    for (i, &n) in counts.iter().enumerate() {
        let piece = if i == me.rank {
            mine.to_vec()
        } else {
            unwrap(me.recv(i))
        };
        assert_eq!(piece.len(), n, "rank {i}'s piece");
        out[at..at + n].copy_from_slice(&piece);
        at += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bda_kernel::collective::{SEGMENT, counts, owned};

    /// Per-chunk values whose sum depends on the order they are added in (f32 rounding).
    fn chunk_value(ch: usize, i: usize) -> f32 {
        let x = (ch * 7919 + i * 104_729) as f32;
        (x * 0.618_034).sin() * 10f32.powi((ch % 7) as i32 - 3)
    }

    #[test]
    fn chained_sums_have_the_bits_of_one_process_for_1_to_7_ranks() {
        const CHUNKS: usize = 23;
        // Three segments, the last short.
        const LEN: usize = 2 * SEGMENT + 17;
        let sequential: Vec<f32> = (0..LEN)
            .map(|i| (0..CHUNKS).fold(0.0f32, |s, ch| s + chunk_value(ch, i)))
            .collect();
        // The order matters at all: the reverse order gives other bits somewhere.
        let reversed: Vec<f32> = (0..LEN)
            .map(|i| {
                (0..CHUNKS)
                    .rev()
                    .fold(0.0f32, |s, ch| s + chunk_value(ch, i))
            })
            .collect();
        assert_ne!(sequential, reversed);
        for p in 1..=7 {
            let sums = LocalRanks::run(p, |comm| {
                let mut acc = vec![0.0f32; LEN];
                let mine = owned(CHUNKS, comm.rank(), comm.size());
                let mut seen = vec![0u8; LEN];
                comm.chain_f32(&mut acc, &mut |range, acc| {
                    assert_eq!(range.len(), acc.len());
                    range.clone().for_each(|i| seen[i] += 1);
                    for ch in mine.clone() {
                        acc.iter_mut()
                            .zip(range.clone())
                            .for_each(|(a, i)| *a += chunk_value(ch, i));
                    }
                });
                (acc, seen)
            });
            for (r, (s, seen)) in sums.iter().enumerate() {
                assert!(s == &sequential, "rank {r} of {p}");
                assert!(seen.iter().all(|&n| n == 1), "each element added once");
            }
        }
    }

    #[test]
    fn gathers_put_the_pieces_in_chunk_order() {
        const CHUNKS: usize = 11;
        for p in 1..=7 {
            let outs = LocalRanks::run(p, |comm| {
                let mine = owned(CHUNKS, comm.rank(), comm.size());
                let piece32: Vec<f32> = mine.clone().map(|c| c as f32).collect();
                let piece64: Vec<f64> = mine.map(|c| c as f64 * 0.5).collect();
                let n = counts(CHUNKS, comm.size());
                let mut a = vec![-1.0f32; CHUNKS];
                let mut b = vec![-1.0f64; CHUNKS];
                comm.gather_f32(&piece32, &n, &mut a);
                comm.gather_f64(&piece64, &n, &mut b);
                (a, b)
            });
            for (a, b) in outs {
                assert_eq!(a, (0..CHUNKS).map(|c| c as f32).collect::<Vec<_>>());
                assert_eq!(b, (0..CHUNKS).map(|c| c as f64 * 0.5).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn every_rank_gets_the_lowest_failing_ranks_message() {
        for p in 1..=7 {
            let got = LocalRanks::run(p, |comm| {
                let r = comm.rank();
                let none = comm.agree(None);
                let msg = format!("rank {r} failed");
                let some = comm.agree((r % 3 == 2 || r + 1 == p).then_some(msg.as_str()));
                (none, some)
            });
            let first = (0..p).find(|r| r % 3 == 2 || r + 1 == p).unwrap();
            for (none, some) in got {
                assert_eq!(none, None);
                assert_eq!(some, Some(format!("rank {first} failed")));
            }
        }
    }
}
