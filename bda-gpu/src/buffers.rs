//! The buffer half of [`bda_kernel::backend::Backend`] for device backends, written once.
//!
//! Every backend of this crate keeps `x` and `y` as [`crate::GpuVec`]s on one stream, so
//! allocation, copies, `axpy`, scaling, dot products, the finiteness test and host
//! transfers are the same code whatever the problem; only the math primitives
//! (`LowerStep`, `StepAdjoint`, …) differ. The host side has the same split
//! (`bda_kernel::backend::HostBuffers`); a blanket impl is not possible here (`Backend` is a
//! foreign trait), so [`device_buffer_ops!`] expands the associated types and the buffer
//! methods inside a backend's `impl Backend for …` block.
//!
//! The implementing type provides fields `stream: Arc<CudaStream>`, `kernels: Kernels`,
//! `red: CudaSlice<f64>` (slot 0 is used) and `flag: CudaSlice<u32>`, and methods
//! `x_len()`, `y_len()`, `check_x(what, &GpuVec)` and `check_y(what, &GpuVec)`.

/// Expands, inside `impl Backend for T`, to `type T/X/Y/Error` and the buffer methods
/// (`new_x` … `download_y`); see the module docs for what `T` must provide.
macro_rules! device_buffer_ops {
    () => {
        type T = f32;
        type X = $crate::GpuVec;
        type Y = $crate::GpuVec;
        type Error = $crate::GpuError;

        fn new_x(&mut self) -> Result<$crate::GpuVec, $crate::GpuError> {
            Ok($crate::GpuVec(self.stream.alloc_zeros(self.x_len())?))
        }

        fn new_y(&mut self) -> Result<$crate::GpuVec, $crate::GpuError> {
            Ok($crate::GpuVec(self.stream.alloc_zeros(self.y_len())?))
        }

        fn copy_y(
            &mut self,
            src: &$crate::GpuVec,
            dst: &mut $crate::GpuVec,
        ) -> Result<(), $crate::GpuError> {
            self.check_y("copy_y src", src)?;
            self.check_y("copy_y dst", dst)?;
            self.stream.memcpy_dtod(&src.0, &mut dst.0)?;
            Ok(())
        }

        fn axpy_y(
            &mut self,
            a: f32,
            v: &$crate::GpuVec,
            y: &mut $crate::GpuVec,
        ) -> Result<(), $crate::GpuError> {
            self.check_y("axpy_y v", v)?;
            self.check_y("axpy_y y", y)?;
            let f = self.kernels.get($crate::kernels::Kernel::Axpy)?;
            let len = y.len();
            let n = $crate::softmax::i32_of(len);
            let mut l = self.stream.launch_builder(&f);
            l.arg(&a).arg(&v.0).arg(&mut y.0).arg(&n);
            // SAFETY: matches `axpy`; both buffers hold y_len entries (checked above).
            unsafe { l.launch($crate::softmax::elementwise(len)) }?;
            Ok(())
        }

        fn scale_y(&mut self, a: f32, y: &mut $crate::GpuVec) -> Result<(), $crate::GpuError> {
            self.check_y("scale_y y", y)?;
            let f = self.kernels.get($crate::kernels::Kernel::Scale)?;
            let len = y.len();
            let n = $crate::softmax::i32_of(len);
            let mut l = self.stream.launch_builder(&f);
            l.arg(&a).arg(&mut y.0).arg(&n);
            // SAFETY: matches `scale`; y holds y_len entries (checked above).
            unsafe { l.launch($crate::softmax::elementwise(len)) }?;
            Ok(())
        }

        fn zero_y(&mut self, y: &mut $crate::GpuVec) -> Result<(), $crate::GpuError> {
            self.check_y("zero_y y", y)?;
            self.stream.memset_zeros(&mut y.0)?;
            Ok(())
        }

        fn dot_y(
            &mut self,
            a: &$crate::GpuVec,
            b: &$crate::GpuVec,
        ) -> Result<f32, $crate::GpuError> {
            self.check_y("dot_y a", a)?;
            self.check_y("dot_y b", b)?;
            let f = self.kernels.get($crate::kernels::Kernel::ReduceDot)?;
            let n = $crate::softmax::i32_of(a.len());
            let mut out = self.red.slice_mut(0..1);
            let mut l = self.stream.launch_builder(&f);
            l.arg(&a.0).arg(&b.0).arg(&n).arg(&mut out);
            // SAFETY: matches `reduce_dot`; a and b hold n entries, out 1.
            unsafe { l.launch($crate::softmax::REDUCE) }?;
            let mut host = [0.0f64; 1];
            self.stream.memcpy_dtoh(&self.red.slice(0..1), &mut host)?;
            self.stream.synchronize()?;
            Ok(host[0] as f32)
        }

        fn zero_x(&mut self, x: &mut $crate::GpuVec) -> Result<(), $crate::GpuError> {
            self.check_x("zero_x x", x)?;
            self.stream.memset_zeros(&mut x.0)?;
            Ok(())
        }

        fn y_is_finite(&mut self, y: &$crate::GpuVec) -> Result<bool, $crate::GpuError> {
            self.check_y("y_is_finite y", y)?;
            let f = self.kernels.get($crate::kernels::Kernel::AnyNonfinite)?;
            let n = $crate::softmax::i32_of(y.len());
            let mut l = self.stream.launch_builder(&f);
            l.arg(&y.0).arg(&n).arg(&mut self.flag);
            // SAFETY: matches `any_nonfinite`; y holds n entries, flag 1.
            unsafe { l.launch($crate::softmax::REDUCE) }?;
            let mut host = [0u32; 1];
            self.stream.memcpy_dtoh(&self.flag, &mut host)?;
            self.stream.synchronize()?;
            Ok(host[0] == 0)
        }

        fn upload_x(
            &mut self,
            src: &[f32],
            dst: &mut $crate::GpuVec,
        ) -> Result<(), $crate::GpuError> {
            $crate::softmax::check("upload_x src", src.len(), self.x_len())?;
            self.check_x("upload_x dst", dst)?;
            self.stream.memcpy_htod(src, &mut dst.0)?;
            Ok(())
        }

        fn download_x(
            &mut self,
            src: &$crate::GpuVec,
            dst: &mut [f32],
        ) -> Result<(), $crate::GpuError> {
            self.check_x("download_x src", src)?;
            $crate::softmax::check("download_x dst", dst.len(), self.x_len())?;
            self.stream.memcpy_dtoh(&src.0, dst)?;
            self.stream.synchronize()?;
            Ok(())
        }

        fn upload_y(
            &mut self,
            src: &[f32],
            dst: &mut $crate::GpuVec,
        ) -> Result<(), $crate::GpuError> {
            $crate::softmax::check("upload_y src", src.len(), self.y_len())?;
            self.check_y("upload_y dst", dst)?;
            self.stream.memcpy_htod(src, &mut dst.0)?;
            Ok(())
        }

        fn download_y(
            &mut self,
            src: &$crate::GpuVec,
            dst: &mut [f32],
        ) -> Result<(), $crate::GpuError> {
            self.check_y("download_y src", src)?;
            $crate::softmax::check("download_y dst", dst.len(), self.y_len())?;
            self.stream.memcpy_dtoh(&src.0, dst)?;
            self.stream.synchronize()?;
            Ok(())
        }
    };
}

pub(crate) use device_buffer_ops;
