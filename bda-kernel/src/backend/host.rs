//! [`HostBuffers`]: the buffer half of [`Backend`] for backends whose vectors are `Vec`s in
//! host memory, written once, so a host backend writes only its math.

use alloc::vec;
use alloc::vec::Vec;
use core::convert::Infallible;

use num_traits::Zero;

use super::Backend;
use crate::scalar::Real;

/// A product's (infallible) result.
type Io<R = ()> = Result<R, Infallible>;

/// A backend whose buffers are `Vec`s in host memory: implement the two lengths and get
/// every buffer operation of [`Backend`] (with `X = Y = Vec<Scalar>` and an
/// `Infallible` error), so host backends only write their math.
pub trait HostBuffers {
    /// The scalar type of the buffers.
    type Scalar: Real;
    /// Length of an `x` buffer.
    fn x_len(&self) -> usize;
    /// Length of a `y` buffer.
    fn y_len(&self) -> usize;
}

impl<B: HostBuffers> Backend for B {
    type T = B::Scalar;
    type X = Vec<B::Scalar>;
    type Y = Vec<B::Scalar>;
    type Error = Infallible;

    fn new_x(&mut self) -> Io<Self::X> {
        Ok(vec![B::Scalar::zero(); HostBuffers::x_len(self)])
    }
    fn new_y(&mut self) -> Io<Self::Y> {
        Ok(vec![B::Scalar::zero(); HostBuffers::y_len(self)])
    }
    fn copy_y(&mut self, src: &Self::Y, dst: &mut Self::Y) -> Io {
        dst.copy_from_slice(src);
        Ok(())
    }
    fn axpy_y(&mut self, a: Self::T, v: &Self::Y, y: &mut Self::Y) -> Io {
        y.iter_mut().zip(v).for_each(|(y, &v)| *y += a * v);
        Ok(())
    }
    fn scale_y(&mut self, a: Self::T, y: &mut Self::Y) -> Io {
        y.iter_mut().for_each(|y| *y *= a);
        Ok(())
    }
    fn zero_y(&mut self, y: &mut Self::Y) -> Io {
        y.fill(B::Scalar::zero());
        Ok(())
    }
    fn dot_y(&mut self, a: &Self::Y, b: &Self::Y) -> Io<Self::T> {
        Ok(a.iter()
            .zip(b)
            .fold(B::Scalar::zero(), |s, (&u, &v)| s + u * v))
    }
    fn zero_x(&mut self, x: &mut Self::X) -> Io {
        x.fill(B::Scalar::zero());
        Ok(())
    }
    fn y_is_finite(&mut self, y: &Self::Y) -> Io<bool> {
        Ok(y.iter().all(|v| v.is_finite()))
    }
    fn upload_x(&mut self, src: &[Self::T], dst: &mut Self::X) -> Io {
        dst.copy_from_slice(src);
        Ok(())
    }
    fn download_x(&mut self, src: &Self::X, dst: &mut [Self::T]) -> Io {
        dst.copy_from_slice(src);
        Ok(())
    }
    fn upload_y(&mut self, src: &[Self::T], dst: &mut Self::Y) -> Io {
        dst.copy_from_slice(src);
        Ok(())
    }
    fn download_y(&mut self, src: &Self::Y, dst: &mut [Self::T]) -> Io {
        dst.copy_from_slice(src);
        Ok(())
    }
}
