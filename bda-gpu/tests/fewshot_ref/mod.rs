//! The plain f64 backbone reference of the few-shot tests, straight from the definitions
//! (bda-gpu cannot depend on bda-host, whose CPU backbone it mirrors): [`conv4_forward`],
//! direct 3×3 convolutions (padding 1, no bias), batch norm with the batch's biased variance
//! and ε = 1e-5, ReLU, 2×2 max-pool with ceil mode, PyTorch's flatten order. The head's
//! reference is the kernel's own `bda_kernel::fewshot::FeatureHead<f64>`.
#![allow(clippy::needless_range_loop)]

use bda_kernel::fewshot::Conv4Shape;

/// Features (`n × features`) of `n` images under `params`.
pub fn conv4_forward(a: &Conv4Shape, params: &[f64], images: &[f64], n: usize) -> Vec<f64> {
    let ch = a.channels;
    // maps[i][c][y][x]
    let mut maps: Vec<f64> = images.to_vec();
    let mut c_in = a.in_channels;
    for l in 0..a.blocks {
        let (s, so) = (a.side_at(l), a.side_at(l + 1));
        let (wo, go, bo) = a.offsets(l);
        let mut z = vec![0.0; n * ch * s * s];
        for i in 0..n {
            for co in 0..ch {
                for y in 0..s {
                    for x in 0..s {
                        let mut acc = 0.0;
                        for ci in 0..c_in {
                            for ky in 0..3 {
                                for kx in 0..3 {
                                    let (iy, ix) = (y as isize + ky - 1, x as isize + kx - 1);
                                    if iy < 0 || ix < 0 || iy >= s as isize || ix >= s as isize {
                                        continue;
                                    }
                                    let w = params
                                        [wo + co * c_in * 9 + ci * 9 + (ky * 3 + kx) as usize];
                                    acc += w * maps
                                        [((i * c_in + ci) * s + iy as usize) * s + ix as usize];
                                }
                            }
                        }
                        z[((i * ch + co) * s + y) * s + x] = acc;
                    }
                }
            }
        }
        let cnt = (n * s * s) as f64;
        let mut out = vec![0.0; n * ch * so * so];
        for c in 0..ch {
            let vals = |i: usize| &z[(i * ch + c) * s * s..][..s * s];
            let mean = (0..n).map(|i| vals(i).iter().sum::<f64>()).sum::<f64>() / cnt;
            let var = (0..n)
                .map(|i| vals(i).iter().map(|v| (v - mean).powi(2)).sum::<f64>())
                .sum::<f64>()
                / cnt;
            let (g, b) = (params[go + c], params[bo + c]);
            let inv = 1.0 / (var + 1e-5).sqrt();
            for i in 0..n {
                let act = |y: usize, x: usize| (g * (vals(i)[y * s + x] - mean) * inv + b).max(0.0);
                for oy in 0..so {
                    for ox in 0..so {
                        let mut m = f64::NEG_INFINITY;
                        for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                            let (y, x) = (2 * oy + dy, 2 * ox + dx);
                            if y < s && x < s {
                                m = m.max(act(y, x));
                            }
                        }
                        out[((i * ch + c) * so + oy) * so + ox] = m;
                    }
                }
            }
        }
        maps = out;
        c_in = ch;
    }
    maps // [i][c][y][x] is PyTorch's flatten order already
}
