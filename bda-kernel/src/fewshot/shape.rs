//! The geometry of the conv4 backbone as plain numbers: the one definition of its sizes and
//! parameter layout, which the CPU and CUDA backbones share, so a parameter vector (a
//! checkpoint) moves between devices without conversion.

/// Batch norm's ε in every backbone (PyTorch's default).
pub const BN_EPS: f64 = 1e-5;

/// Shape of a conv4-style backbone: `blocks` × [3×3 conv (`channels` outputs, padding 1, no
/// bias), batch norm (γ, β), ReLU, 2×2 max-pool with ceil mode] on `side × side` images of
/// `in_channels` channels.
///
/// Images are stored image after image, each channel-major (`[channel][row][column]`, as a
/// PyTorch `N×C×H×W` tensor).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Conv4Shape {
    /// Channels of every convolution (64 in the papers; 32 is MiniImageNet's standard).
    pub channels: usize,
    /// Channels of the input images (1 for Omniglot, 3 for MiniImageNet's RGB). Absent
    /// from checkpoints written before RGB data was read: 1.
    #[cfg_attr(feature = "serde", serde(default = "one"))]
    pub in_channels: usize,
    /// Side of the square input images (28 for Omniglot, 84 for MiniImageNet).
    pub side: usize,
    /// Number of blocks (4).
    pub blocks: usize,
}

#[cfg(feature = "serde")]
fn one() -> usize {
    1
}

impl Conv4Shape {
    /// The papers' conv4 on 28×28 grey images (Omniglot): 64 channels, 4 blocks.
    pub const CONV4: Conv4Shape = Conv4Shape {
        channels: 64,
        in_channels: 1,
        side: 28,
        blocks: 4,
    };

    /// Side of the maps entering block `l` (block `blocks`: the output).
    pub fn side_at(&self, l: usize) -> usize {
        (0..l).fold(self.side, |s, _| s.div_ceil(2))
    }

    /// Input channels of block `l`.
    pub fn c_in(&self, l: usize) -> usize {
        if l == 0 {
            self.in_channels
        } else {
            self.channels
        }
    }

    /// Features per image, `channels · side_out²`, in PyTorch's flatten order (channel, row,
    /// column).
    pub fn features(&self) -> usize {
        let s = self.side_at(self.blocks);
        self.channels * s * s
    }

    /// Values per input image (`in_channels · side²`).
    pub fn pixels(&self) -> usize {
        self.in_channels * self.side * self.side
    }

    /// Offsets of block `l`'s weights (`[c_out][c_in·9]`, row-major), γ and β (`channels`
    /// each) in the parameter vector.
    pub fn offsets(&self, l: usize) -> (usize, usize, usize) {
        let mut off = 0;
        for j in 0..l {
            off += self.channels * self.c_in(j) * 9 + 2 * self.channels;
        }
        let g = off + self.channels * self.c_in(l) * 9;
        (off, g, g + self.channels)
    }

    /// Number of parameters.
    pub fn num_params(&self) -> usize {
        self.offsets(self.blocks).0
    }

    /// Floating-point operations of the convolutions for `images` images: (forward, backward),
    /// backward being the weight gradient of every block and the input gradient of all blocks
    /// but the first. The same count as the CPU backbone's, so GFLOP/s figures compare.
    pub fn conv_flops(&self, images: usize) -> (f64, f64) {
        let (mut fwd, mut bwd) = (0.0, 0.0);
        for l in 0..self.blocks {
            let s = self.side_at(l);
            let f = 2.0 * (self.channels * self.c_in(l) * 9 * s * s) as f64 * images as f64;
            fwd += f;
            bwd += if l == 0 { f } else { 2.0 * f };
        }
        (fwd, bwd)
    }

    /// Checks that every size is positive; the message names what is not.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.channels == 0 || self.in_channels == 0 || self.side == 0 || self.blocks == 0 {
            return Err("the backbone needs at least one channel, input channel, pixel and block");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;

    #[test]
    fn conv4_on_28_pixels() {
        let a = Conv4Shape {
            channels: 64,
            in_channels: 1,
            side: 28,
            blocks: 4,
        };
        assert_eq!(
            (0..=4).map(|l| a.side_at(l)).collect::<Vec<_>>(),
            [28, 14, 7, 4, 2]
        );
        assert_eq!(a.features(), 256);
        // 64·9 + 128 + 3·(64·64·9 + 128) = 111 680 (the PyTorch peer's count without the conv biases).
        assert_eq!(a.num_params(), 111_680);
        assert_eq!(a.offsets(1), (704, 704 + 36_864, 704 + 36_864 + 64));
        assert_eq!(a, Conv4Shape::CONV4);
        assert!(a.validate().is_ok());
        assert!(Conv4Shape { channels: 0, ..a }.validate().is_err());
        assert!(
            Conv4Shape {
                in_channels: 0,
                ..a
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn conv4_on_miniimagenet_shapes() {
        let a = Conv4Shape {
            channels: 32,
            in_channels: 3,
            side: 84,
            blocks: 4,
        };
        assert_eq!(
            (0..=4).map(|l| a.side_at(l)).collect::<Vec<_>>(),
            [84, 42, 21, 11, 6]
        );
        // 32·5·5 = 800 with floor pooling; ceil mode gives 6×6.
        assert_eq!(a.features(), 32 * 36);
        assert_eq!(a.pixels(), 3 * 84 * 84);
        // 32·3·9 + 64 + 3·(32·32·9 + 64) = 928 + 3·9280 = 28 768.
        assert_eq!(a.num_params(), 28_768);
        assert_eq!(a.offsets(1).0, 32 * 27 + 64);
    }
}
