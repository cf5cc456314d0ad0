//! [`OnDevice`]: a problem's device data together with the device, and the buffer half of
//! [`bda_kernel::backend::Backend`] written once for every backend of this crate.
//!
//! # Why a generic wrapper
//!
//! Every backend here keeps `x` and `y` as [`GpuVec`]s on the device's one stream, so
//! allocation, copies, `axpy`, scaling, dot products, the finiteness test and host transfers
//! are the same code whatever the problem; only the capabilities (`LowerStep`,
//! `StepAdjoint`, …) differ. `Backend` is a foreign trait, so a blanket impl over "every
//! device problem" is not allowed, but an impl for a *local generic type* is: `impl<P>
//! Backend for OnDevice<P>` is written once, and each problem implements the capability traits
//! for its own instantiation (`impl LowerStep for OnDevice<Hyperclean>`). The public names are
//! aliases ([`crate::HypercleanGpu`], [`crate::HeadGpu`]).
//!
//! The alternatives were worse: a macro that expands the buffer methods inside each backend's
//! `impl Backend` depends on the field names of the type it lands in (what this replaces), and
//! vector operations as methods of [`GpuDevice`] still leave thirteen one-line forwards per
//! backend, each with its own shape checks. Here the shapes (`x_len`, `y_len`) are fields of
//! the wrapper, fixed when the backend is built, so the checks are written once too.

use bda_kernel::backend::Backend;

use crate::launch::{ReduceScratch, axpy, check, scale};
use crate::{DeviceInfo, GpuDevice, GpuError, GpuVec};

/// A device problem `P` on an opened [`GpuDevice`]: implements [`Backend`] (`T = f32`,
/// `X = Y =` [`GpuVec`], `Error =` [`GpuError`]) for every `P`; the problem adds the
/// capability traits. Built by the problems' constructors ([`crate::HypercleanGpu::new`],
/// [`crate::HeadGpu::open`]).
#[derive(Debug)]
pub struct OnDevice<P> {
    pub(crate) dev: GpuDevice,
    /// Result slots of `dot_y`, `y_is_finite` and the problem's own reductions.
    pub(crate) scratch: ReduceScratch,
    x_len: usize,
    y_len: usize,
    /// The problem's device data and scratch.
    pub(crate) p: P,
}

impl<P> OnDevice<P> {
    /// `p` on `dev`, with `x` buffers of `x_len` and `y` buffers of `y_len` entries.
    pub(crate) fn with_problem(
        dev: &GpuDevice,
        x_len: usize,
        y_len: usize,
        p: P,
    ) -> Result<Self, GpuError> {
        Ok(OnDevice {
            scratch: ReduceScratch::new(dev)?,
            dev: dev.clone(),
            x_len,
            y_len,
            p,
        })
    }

    /// The device in use.
    pub fn device(&self) -> &GpuDevice {
        &self.dev
    }

    /// The device's description.
    pub fn info(&self) -> &DeviceInfo {
        self.dev.info()
    }

    /// The NVRTC target architecture, e.g. `sm_90`.
    pub fn arch(&self) -> &str {
        self.dev.arch()
    }

    /// Compiles (once per process) and loads every kernel now ([`GpuDevice::warm_up`]).
    pub fn warm_up(&self) -> Result<(), GpuError> {
        self.dev.warm_up()
    }

    /// Waits until all queued work is done (for timing).
    pub fn synchronize(&self) -> Result<(), GpuError> {
        self.dev.synchronize()
    }

    /// Length of an `x` buffer.
    pub fn x_len(&self) -> usize {
        self.x_len
    }

    /// Length of a `y` buffer.
    pub fn y_len(&self) -> usize {
        self.y_len
    }

    /// `Ok` when `x` is an `x` buffer of this backend.
    pub(crate) fn check_x(&self, what: &'static str, x: &GpuVec) -> Result<(), GpuError> {
        check(what, x.len(), self.x_len)
    }

    /// `Ok` when `xs` are `x` buffers and `ys` are `y` buffers of this backend (the error
    /// names the method `what`).
    pub(crate) fn check_args<const A: usize, const B: usize>(
        &self,
        what: &'static str,
        xs: [&GpuVec; A],
        ys: [&GpuVec; B],
    ) -> Result<(), GpuError> {
        xs.iter().try_for_each(|x| self.check_x(what, x))?;
        ys.iter().try_for_each(|y| self.check_y(what, y))
    }

    /// `dst ← src` from the host, both of `len` floats.
    fn upload(
        &self,
        what: &'static str,
        len: usize,
        src: &[f32],
        dst: &mut GpuVec,
    ) -> Result<(), GpuError> {
        check(what, src.len(), len)?;
        check(what, dst.len(), len)?;
        self.dev.stream().memcpy_htod(src, &mut dst.0)?;
        Ok(())
    }

    /// `dst ← src` to the host, both of `len` floats (waits for the device).
    fn download(
        &self,
        what: &'static str,
        len: usize,
        src: &GpuVec,
        dst: &mut [f32],
    ) -> Result<(), GpuError> {
        check(what, src.len(), len)?;
        check(what, dst.len(), len)?;
        self.dev.stream().memcpy_dtoh(&src.0, dst)?;
        self.dev.synchronize()
    }

    /// `Ok` when `y` is a `y` buffer of this backend.
    pub(crate) fn check_y(&self, what: &'static str, y: &GpuVec) -> Result<(), GpuError> {
        check(what, y.len(), self.y_len)
    }
}

impl<P> Backend for OnDevice<P> {
    type T = f32;
    type X = GpuVec;
    type Y = GpuVec;
    type Error = GpuError;

    fn new_x(&mut self) -> Result<GpuVec, GpuError> {
        Ok(GpuVec(self.dev.stream().alloc_zeros(self.x_len)?))
    }

    fn new_y(&mut self) -> Result<GpuVec, GpuError> {
        Ok(GpuVec(self.dev.stream().alloc_zeros(self.y_len)?))
    }

    fn copy_y(&mut self, src: &GpuVec, dst: &mut GpuVec) -> Result<(), GpuError> {
        self.check_y("copy_y src", src)?;
        self.check_y("copy_y dst", dst)?;
        self.dev.stream().memcpy_dtod(&src.0, &mut dst.0)?;
        Ok(())
    }

    fn axpy_y(&mut self, a: f32, v: &GpuVec, y: &mut GpuVec) -> Result<(), GpuError> {
        self.check_y("axpy_y v", v)?;
        self.check_y("axpy_y y", y)?;
        axpy(&self.dev, a, &v.0.as_view(), &mut y.0.as_view_mut())
    }

    fn scale_y(&mut self, a: f32, y: &mut GpuVec) -> Result<(), GpuError> {
        self.check_y("scale_y y", y)?;
        scale(&self.dev, a, &mut y.0.as_view_mut())
    }

    fn zero_y(&mut self, y: &mut GpuVec) -> Result<(), GpuError> {
        self.check_y("zero_y y", y)?;
        self.dev.stream().memset_zeros(&mut y.0)?;
        Ok(())
    }

    fn dot_y(&mut self, a: &GpuVec, b: &GpuVec) -> Result<f32, GpuError> {
        self.check_y("dot_y a", a)?;
        self.check_y("dot_y b", b)?;
        self.scratch
            .dot(&self.dev, &a.0.as_view(), &b.0.as_view(), 0)?;
        Ok(self.scratch.read(&self.dev)?[0] as f32)
    }

    fn zero_x(&mut self, x: &mut GpuVec) -> Result<(), GpuError> {
        self.check_x("zero_x x", x)?;
        self.dev.stream().memset_zeros(&mut x.0)?;
        Ok(())
    }

    fn y_is_finite(&mut self, y: &GpuVec) -> Result<bool, GpuError> {
        self.check_y("y_is_finite y", y)?;
        self.scratch.all_finite(&self.dev, &y.0.as_view())
    }

    fn upload_x(&mut self, src: &[f32], dst: &mut GpuVec) -> Result<(), GpuError> {
        self.upload("upload_x", self.x_len, src, dst)
    }

    fn download_x(&mut self, src: &GpuVec, dst: &mut [f32]) -> Result<(), GpuError> {
        self.download("download_x", self.x_len, src, dst)
    }

    fn upload_y(&mut self, src: &[f32], dst: &mut GpuVec) -> Result<(), GpuError> {
        self.upload("upload_y", self.y_len, src, dst)
    }

    fn download_y(&mut self, src: &GpuVec, dst: &mut [f32]) -> Result<(), GpuError> {
        self.download("download_y", self.y_len, src, dst)
    }
}
