//! Latency and bandwidth of the collectives a split run uses, at the sizes that occur
//! (feature `mpi`):
//!
//! ```text
//! cargo build --release -p bda-host --features mpi --example mpi_collectives
//! mpirun -np 2 target/release/examples/mpi_collectives
//! ```
//!
//! For each length: the chain (running sum from rank to rank, then a broadcast from the
//! last), the all-gather of equal pieces, and MPI's own all-reduce for comparison, each the
//! median of many repetitions; and whether the all-reduce's sum has the bits of the
//! chunk-ordered sum (it need not: its order is the library's).

use std::time::Instant;

/// The lengths that occur: softmax regression's `y` (7,850), the conv4 backbone at 64
/// channels (112,576 parameters), the network's `y` (238,510), both sets' products of the
/// network chained together (483,380).
const LENGTHS: [usize; 4] = [7_850, 112_576, 238_510, 483_380];

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let _membership = match bda_host::ranks::init() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mpi_collectives: {e}");
            std::process::exit(2);
        }
    };
    let comm = bda_host::ranks::comm();
    let (rank, size) = (comm.rank(), comm.size());
    let lead = rank == 0;
    if lead {
        println!("ranks {size}");
        println!("floats,chain_us,gather_us,allreduce_us,allreduce_same_bits");
    }
    for n in LENGTHS {
        let reps = if n < 100_000 { 200 } else { 50 };
        // Per-rank values whose sum depends on the order of the additions.
        let mine: Vec<f32> = (0..n)
            .map(|i| {
                ((i * 7919 + rank * 104_729) as f32 * 0.618).sin()
                    * 10f32.powi((rank % 5) as i32 - 2)
            })
            .collect();
        let mut acc = vec![0.0f32; n];
        let mut chain = Vec::new();
        for _ in 0..reps {
            acc.fill(0.0);
            let t = Instant::now();
            comm.chain_f32(&mut acc, &mut |range, a| {
                a.iter_mut().zip(&mine[range]).for_each(|(a, m)| *a += m);
            });
            chain.push(t.elapsed().as_secs_f64());
        }
        let piece = n / size;
        let counts = vec![piece; size];
        let mut all = vec![0.0f32; piece * size];
        let mut gather = Vec::new();
        for _ in 0..reps {
            let t = Instant::now();
            comm.gather_f32(&mine[..piece], &counts, &mut all);
            gather.push(t.elapsed().as_secs_f64());
        }
        let (reduce, same) = allreduce(&mine, &acc, reps);
        // Every rank's numbers are alike; rank 0 prints the medians.
        if lead {
            println!(
                "{n},{:.1},{:.1},{:.1},{same}",
                1e6 * median(chain),
                1e6 * median(gather),
                1e6 * reduce
            );
        }
    }
}

/// MPI's all-reduce of `mine` (median seconds of `reps`), and whether it has the bits of
/// `chained` (the sum in rank order).
fn allreduce(mine: &[f32], chained: &[f32], reps: usize) -> (f64, bool) {
    use mpi::collective::SystemOperation;
    use mpi::traits::*;
    let world = mpi::topology::SimpleCommunicator::world();
    let mut out = vec![0.0f32; mine.len()];
    let mut times = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        world.all_reduce_into(mine, &mut out[..], SystemOperation::sum());
        times.push(t.elapsed().as_secs_f64());
    }
    let same = out
        .iter()
        .zip(chained)
        .all(|(a, b)| a.to_bits() == b.to_bits());
    (median(times), same)
}
