//! The CUDA C kernels of `kernels/`: embedded in the binary, compiled by NVRTC for the
//! device's own architecture on first use, once per process, and loaded into a context lazily,
//! module by module.
//!
//! Modules are compiled straight to a CUBIN for the real architecture `sm_XY` (no PTX, so no
//! JIT at load time and no PTX-version mismatch between NVRTC and the driver).

use std::collections::HashMap;
use std::ffi::{CString, c_char, c_int};
use std::mem::MaybeUninit;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{CudaContext, CudaFunction, CudaModule};
use cudarc::nvrtc::{Ptx, result as nvrtc_result, sys as nvrtc_sys};

use crate::GpuError;
use crate::probe::guard;

/// Shared headers, by the name the `.cu` files `#include` them with.
pub(crate) const HEADERS: &[(&str, &str)] =
    &[("common.cuh", include_str!("../kernels/common.cuh"))];

/// One `.cu` file of `kernels/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Module {
    /// `softmax.cu`: the fused per-row kernels.
    Softmax,
    /// `vector.cu`: element-wise and reduction kernels.
    Vector,
    /// `conv.cu`: the conv4 backbone (im2col, batch norm, ReLU, max-pool, their adjoints).
    Conv,
    /// `head.cu`: the batched few-shot head.
    Head,
    /// `network.cu`: the tangents of the whole few-shot network (R-operator).
    Network,
}

impl Module {
    pub(crate) const ALL: [Module; 5] = [
        Module::Softmax,
        Module::Vector,
        Module::Conv,
        Module::Head,
        Module::Network,
    ];

    /// File stem.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Module::Softmax => "softmax",
            Module::Vector => "vector",
            Module::Conv => "conv",
            Module::Head => "head",
            Module::Network => "network",
        }
    }

    /// CUDA C source.
    pub(crate) fn source(self) -> &'static str {
        match self {
            Module::Softmax => include_str!("../kernels/softmax.cu"),
            Module::Vector => include_str!("../kernels/vector.cu"),
            Module::Conv => include_str!("../kernels/conv.cu"),
            Module::Head => include_str!("../kernels/head.cu"),
            Module::Network => include_str!("../kernels/network.cu"),
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Every kernel the Rust side launches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kernel {
    XentGradRows,
    XentDxRows,
    HvpRows,
    MaskedScaleCopy,
    ReluAug,
    ReluMask,
    PackPair,
    PackPairScale,
    Axpy,
    Scale,
    FoldChunks,
    ReduceDot,
    ReduceSum,
    AnyNonfinite,
    Im2col,
    Col2im,
    BnStats,
    BnReluPool,
    PoolReluBackward,
    BnBackwardSums,
    BnDz,
    ChunkMoments,
    MapsToRows,
    RowsToMaps,
    HeadLogits,
    HeadXentRows,
    HeadHvpRows,
    HeadParamAcc,
    HeadDx,
    HeadTaskStats,
    BnTangent,
    PoolTangent,
    BnTangentBackward,
    AddBiasRows,
}

impl Kernel {
    pub(crate) const ALL: [Kernel; 34] = [
        Kernel::XentGradRows,
        Kernel::XentDxRows,
        Kernel::HvpRows,
        Kernel::MaskedScaleCopy,
        Kernel::ReluAug,
        Kernel::ReluMask,
        Kernel::PackPair,
        Kernel::PackPairScale,
        Kernel::Axpy,
        Kernel::Scale,
        Kernel::FoldChunks,
        Kernel::ReduceDot,
        Kernel::ReduceSum,
        Kernel::AnyNonfinite,
        Kernel::Im2col,
        Kernel::Col2im,
        Kernel::BnStats,
        Kernel::BnReluPool,
        Kernel::PoolReluBackward,
        Kernel::BnBackwardSums,
        Kernel::BnDz,
        Kernel::ChunkMoments,
        Kernel::MapsToRows,
        Kernel::RowsToMaps,
        Kernel::HeadLogits,
        Kernel::HeadXentRows,
        Kernel::HeadHvpRows,
        Kernel::HeadParamAcc,
        Kernel::HeadDx,
        Kernel::HeadTaskStats,
        Kernel::BnTangent,
        Kernel::PoolTangent,
        Kernel::BnTangentBackward,
        Kernel::AddBiasRows,
    ];

    /// The `extern "C"` name in the source.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kernel::XentGradRows => "xent_grad_rows",
            Kernel::XentDxRows => "xent_dx_rows",
            Kernel::HvpRows => "hvp_rows",
            Kernel::MaskedScaleCopy => "masked_scale_copy",
            Kernel::ReluAug => "relu_aug",
            Kernel::ReluMask => "relu_mask",
            Kernel::PackPair => "pack_pair",
            Kernel::PackPairScale => "pack_pair_scale",
            Kernel::Axpy => "axpy",
            Kernel::Scale => "scale",
            Kernel::FoldChunks => "fold_chunks",
            Kernel::ReduceDot => "reduce_dot",
            Kernel::ReduceSum => "reduce_sum",
            Kernel::AnyNonfinite => "any_nonfinite",
            Kernel::Im2col => "im2col",
            Kernel::Col2im => "col2im",
            Kernel::BnStats => "bn_stats",
            Kernel::BnReluPool => "bn_relu_pool",
            Kernel::PoolReluBackward => "pool_relu_backward",
            Kernel::BnBackwardSums => "bn_backward_sums",
            Kernel::BnDz => "bn_dz",
            Kernel::ChunkMoments => "chunk_moments",
            Kernel::MapsToRows => "maps_to_rows",
            Kernel::RowsToMaps => "rows_to_maps",
            Kernel::HeadLogits => "head_logits",
            Kernel::HeadXentRows => "head_xent_rows",
            Kernel::HeadHvpRows => "head_hvp_rows",
            Kernel::HeadParamAcc => "head_param_acc",
            Kernel::HeadDx => "head_dx",
            Kernel::HeadTaskStats => "head_task_stats",
            Kernel::BnTangent => "bn_tangent",
            Kernel::PoolTangent => "pool_tangent",
            Kernel::BnTangentBackward => "bn_tangent_backward",
            Kernel::AddBiasRows => "add_bias_rows",
        }
    }

    /// The module defining it.
    pub(crate) fn module(self) -> Module {
        match self {
            Kernel::XentGradRows | Kernel::XentDxRows | Kernel::HvpRows => Module::Softmax,
            Kernel::Im2col
            | Kernel::Col2im
            | Kernel::BnStats
            | Kernel::BnReluPool
            | Kernel::PoolReluBackward
            | Kernel::BnBackwardSums
            | Kernel::BnDz
            | Kernel::ChunkMoments
            | Kernel::MapsToRows
            | Kernel::RowsToMaps => Module::Conv,
            Kernel::HeadLogits
            | Kernel::HeadXentRows
            | Kernel::HeadHvpRows
            | Kernel::HeadParamAcc
            | Kernel::HeadDx
            | Kernel::HeadTaskStats => Module::Head,
            Kernel::BnTangent
            | Kernel::PoolTangent
            | Kernel::BnTangentBackward
            | Kernel::AddBiasRows => Module::Network,
            _ => Module::Vector,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The NVRTC target for a device of compute capability `(major, minor)`, given the real
/// architectures NVRTC supports (`nvrtcGetSupportedArchs`: 75, 80, …, 90, 100, 120, …): the
/// newest one of the same major version not newer than the device (a CUBIN for `sm_XY` runs on
/// every `X.Z` with `Z ≥ Y`). `None` when NVRTC knows no such architecture.
pub(crate) fn pick_arch(cc: (u32, u32), supported: &[i32]) -> Option<String> {
    let (major, minor) = (cc.0 as i32, cc.1 as i32);
    supported
        .iter()
        .copied()
        .filter(|&a| a / 10 == major && a % 10 <= minor)
        .max()
        .map(|a| format!("sm_{a}"))
}

/// The architectures this NVRTC can build CUBINs for.
fn nvrtc_archs() -> Result<Vec<i32>, GpuError> {
    let mut n: c_int = 0;
    // SAFETY: plain out-parameter calls into NVRTC, buffer sized by the first call.
    unsafe { nvrtc_sys::nvrtcGetNumSupportedArchs(&mut n) }.result()?;
    let mut archs = vec![0 as c_int; n.max(0) as usize];
    if !archs.is_empty() {
        unsafe { nvrtc_sys::nvrtcGetSupportedArchs(archs.as_mut_ptr()) }.result()?;
    }
    Ok(archs)
}

/// The architecture to compile for on a device of compute capability `cc`.
pub(crate) fn arch_for(cc: (u32, u32)) -> Result<String, GpuError> {
    let archs = nvrtc_archs()?;
    pick_arch(cc, &archs).ok_or_else(|| GpuError::Compile {
        module: "(all)",
        arch: format!("sm_{}{}", cc.0, cc.1),
        log: format!(
            "this NVRTC cannot target compute capability {}.{} (it supports {archs:?})",
            cc.0, cc.1
        ),
    })
}

type ImageCache = Mutex<HashMap<(Module, String), Arc<Vec<u8>>>>;

/// CUBINs compiled so far in this process, by module and architecture.
fn images() -> &'static ImageCache {
    static IMAGES: OnceLock<ImageCache> = OnceLock::new();
    IMAGES.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The CUBIN of `module` for `arch`, compiled on the first request in this process.
pub(crate) fn image(module: Module, arch: &str) -> Result<Arc<Vec<u8>>, GpuError> {
    // The lock is held while compiling, so two threads never compile the same module twice.
    let mut cache = images()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(img) = cache.get(&(module, arch.to_owned())) {
        return Ok(img.clone());
    }
    let img = Arc::new(compile_cubin(module, arch)?);
    cache.insert((module, arch.to_owned()), img.clone());
    Ok(img)
}

/// NVRTC options: the real architecture (CUBIN output), C++17, IEEE division and square root,
/// no fast math (the agreement tests and the hypergradients need full f32 accuracy).
pub(crate) fn nvrtc_options(arch: &str) -> Vec<String> {
    vec![
        format!("--gpu-architecture={arch}"),
        "--std=c++17".into(),
        "--prec-div=true".into(),
    ]
}

/// Destroys an NVRTC program on every exit path.
struct Program(nvrtc_sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: created by nvrtcCreateProgram and destroyed only here.
        let _ = unsafe { nvrtc_result::destroy_program(self.0) };
    }
}

fn compile_error(module: &'static str, arch: &str, log: impl Into<String>) -> GpuError {
    GpuError::Compile {
        module,
        arch: arch.to_owned(),
        log: log.into(),
    }
}

fn compile_cubin(module: Module, arch: &str) -> Result<Vec<u8>, GpuError> {
    compile_source(module.name(), module.source(), arch)
}

/// Compiles the CUDA C source `source` (file stem `module`, with [`HEADERS`] available to
/// `#include`) to a CUBIN for the real architecture `arch`.
fn compile_source(module: &'static str, source: &str, arch: &str) -> Result<Vec<u8>, GpuError> {
    let nul = |_| compile_error(module, arch, "source contains a NUL byte");
    let src = CString::new(source).map_err(nul)?;
    let file = CString::new(format!("{module}.cu")).map_err(nul)?;
    let header_src = HEADERS
        .iter()
        .map(|(_, s)| CString::new(*s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(nul)?;
    let header_names = HEADERS
        .iter()
        .map(|(n, _)| CString::new(*n))
        .collect::<Result<Vec<_>, _>>()
        .map_err(nul)?;
    let header_src_ptrs: Vec<*const c_char> = header_src.iter().map(|s| s.as_ptr()).collect();
    let header_name_ptrs: Vec<*const c_char> = header_names.iter().map(|s| s.as_ptr()).collect();

    let mut raw = MaybeUninit::uninit();
    // SAFETY: all strings are NUL-terminated and outlive the program (NVRTC copies them at
    // creation anyway); the two header arrays have HEADERS.len() entries.
    unsafe {
        nvrtc_sys::nvrtcCreateProgram(
            raw.as_mut_ptr(),
            src.as_ptr(),
            file.as_ptr(),
            HEADERS.len() as c_int,
            header_src_ptrs.as_ptr(),
            header_name_ptrs.as_ptr(),
        )
    }
    .result()?;
    // SAFETY: initialised by the successful call above.
    let prog = Program(unsafe { raw.assume_init() });

    let options = nvrtc_options(arch);
    // SAFETY: `prog` is a live program.
    if let Err(e) = unsafe { nvrtc_result::compile_program(prog.0, &options) } {
        let log = unsafe { nvrtc_result::get_program_log(prog.0) }
            .map(|raw| {
                let bytes: Vec<u8> = raw
                    .iter()
                    .take_while(|&&c| c != 0)
                    .map(|&c| c as u8)
                    .collect();
                String::from_utf8_lossy(&bytes).into_owned()
            })
            .unwrap_or_default();
        let log = if log.trim().is_empty() {
            format!("{e:?}")
        } else {
            log
        };
        return Err(compile_error(module, arch, log));
    }
    let mut size = 0usize;
    // SAFETY: `prog` compiled successfully; the buffer has the size NVRTC reports.
    unsafe { nvrtc_sys::nvrtcGetCUBINSize(prog.0, &mut size) }.result()?;
    if size == 0 {
        return Err(compile_error(
            module,
            arch,
            "NVRTC produced no CUBIN (not a real architecture?)",
        ));
    }
    let mut cubin = vec![0u8; size];
    unsafe { nvrtc_sys::nvrtcGetCUBIN(prog.0, cubin.as_mut_ptr().cast::<c_char>()) }.result()?;
    Ok(cubin)
}

/// What a context has loaded so far: modules and the functions looked up in them.
#[derive(Debug)]
struct Loaded {
    modules: [Option<Arc<CudaModule>>; Module::ALL.len()],
    functions: [Option<CudaFunction>; Kernel::ALL.len()],
}

impl Default for Loaded {
    fn default() -> Self {
        Loaded {
            modules: Default::default(),
            functions: std::array::from_fn(|_| None),
        }
    }
}

/// The kernels of one context, loaded module by module on first use (candle's `ModuleStore`):
/// owned by the [`crate::GpuDevice`], shared by every backend built on it, so a module is
/// loaded into the context once however many backends a command opens.
#[derive(Debug)]
pub(crate) struct ModuleCache {
    ctx: Arc<CudaContext>,
    arch: String,
    /// Behind a lock because the device is shared (`&self` everywhere); held only for a
    /// table look-up, or for the first load of a module (NVRTC runs then, once per process).
    loaded: Mutex<Loaded>,
}

impl ModuleCache {
    pub(crate) fn new(ctx: Arc<CudaContext>, arch: String) -> Self {
        ModuleCache {
            ctx,
            arch,
            loaded: Mutex::new(Loaded::default()),
        }
    }

    /// The NVRTC architecture in use.
    pub(crate) fn arch(&self) -> &str {
        &self.arch
    }

    /// The function `k` (compiling and loading its module if this is its first use).
    pub(crate) fn get(&self, k: Kernel) -> Result<CudaFunction, GpuError> {
        // A panic while the lock was held (inside `guard` below) left the table consistent:
        // entries are only ever filled in, whole.
        let mut loaded = self
            .loaded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(f) = &loaded.functions[k.index()] {
            return Ok(f.clone());
        }
        // First use: NVRTC and the module loader run here, under `guard` (a library lacking a
        // symbol makes cudarc panic).
        let f = guard(|| self.load(&mut loaded, k))?;
        loaded.functions[k.index()] = Some(f.clone());
        Ok(f)
    }

    fn load(&self, loaded: &mut Loaded, k: Kernel) -> Result<CudaFunction, GpuError> {
        let m = k.module();
        let module = match &loaded.modules[m.index()] {
            Some(module) => module.clone(),
            None => {
                let img = image(m, &self.arch)?;
                let module = self
                    .ctx
                    .load_module(Ptx::from_binary(img.as_ref().clone()))?;
                loaded.modules[m.index()] = Some(module.clone());
                module
            }
        };
        Ok(module.load_function(k.name())?)
    }

    /// Compile and load every module now (to keep the NVRTC time out of a timed loop).
    pub(crate) fn load_all(&self) -> Result<(), GpuError> {
        for k in Kernel::ALL {
            self.get(k)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `extern "C" __global__ void NAME(` declarations of a source.
    fn declared_kernels(src: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = src;
        while let Some(pos) = rest.find("__global__") {
            rest = &rest[pos + "__global__".len()..];
            let decl = rest.trim_start();
            if let Some(after_void) = decl.strip_prefix("void") {
                let name: String = after_void
                    .trim_start()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                out.push(name);
            }
        }
        out
    }

    #[test]
    fn every_kernel_is_declared_extern_c_in_its_module() {
        for k in Kernel::ALL {
            let src = k.module().source();
            let decl = format!("extern \"C\" __global__ void {}(", k.name());
            let found = src.matches(&decl).count();
            assert_eq!(
                found,
                1,
                "{} must be declared once in {}.cu as `{decl}`",
                k.name(),
                k.module().name()
            );
        }
    }

    #[test]
    fn every_declared_kernel_is_known_to_rust() {
        for m in Module::ALL {
            for name in declared_kernels(m.source()) {
                assert!(
                    Kernel::ALL
                        .iter()
                        .any(|k| k.name() == name && k.module() == m),
                    "{}.cu declares {name}, which the Rust side does not know",
                    m.name()
                );
            }
        }
        // The enum tables agree with themselves.
        for (i, k) in Kernel::ALL.iter().enumerate() {
            assert_eq!(k.index(), i);
        }
        for (i, m) in Module::ALL.iter().enumerate() {
            assert_eq!(m.index(), i);
        }
    }

    #[test]
    fn sources_are_self_contained() {
        let all: Vec<(&str, &str)> = Module::ALL
            .iter()
            .map(|m| (m.name(), m.source()))
            .chain(HEADERS.iter().map(|(n, s)| (*n, *s)))
            .collect();
        for (name, src) in all {
            assert!(!src.contains('\0'), "{name}: NUL byte");
            for line in src.lines() {
                let line = line.trim();
                if let Some(inc) = line.strip_prefix("#include") {
                    let inc = inc.trim().trim_matches('"');
                    assert!(
                        HEADERS.iter().any(|(h, _)| *h == inc),
                        "{name} includes {inc}, which is not an embedded header (NVRTC has no system headers here)"
                    );
                }
            }
            // Balanced braces and parentheses, outside comments (a cheap parse-level check).
            let code: String = src
                .lines()
                .map(|l| l.split("//").next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n");
            for (open, close) in [('{', '}'), ('(', ')'), ('[', ']')] {
                let mut depth = 0i64;
                for ch in code.chars() {
                    if ch == open {
                        depth += 1;
                    } else if ch == close {
                        depth -= 1;
                    }
                    assert!(depth >= 0, "{name}: unbalanced {open}{close}");
                }
                assert_eq!(depth, 0, "{name}: unbalanced {open}{close}");
            }
        }
    }

    #[test]
    fn headers_are_guarded() {
        for (name, src) in HEADERS {
            assert!(src.contains("#pragma once"), "{name} needs #pragma once");
        }
    }

    /// With NVRTC on the library path (it needs no GPU and no driver: e.g. the PyPI wheel
    /// `nvidia-cuda-nvrtc`, `LD_LIBRARY_PATH=…/nvidia/cu13/lib`), the real compiler checks every
    /// module for the architectures of interest.
    #[test]
    fn nvrtc_compiles_every_module() {
        if !unsafe { nvrtc_sys::is_culib_present() } {
            // A failure instead with `BDA_REQUIRE_CUDA` set (the GPU kit).
            bda_testkit::cuda::or_skip(Err::<(), _>(GpuError::NoNvrtc));
            return;
        }
        let archs = nvrtc_archs().unwrap();
        assert_eq!(
            pick_arch((9, 0), &archs).as_deref(),
            Some("sm_90"),
            "{archs:?}"
        );
        for arch in ["sm_75", "sm_80", "sm_90"] {
            for m in Module::ALL {
                let cubin = compile_cubin(m, arch).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(
                    &cubin[..4],
                    b"\x7fELF",
                    "{}.cu for {arch}: not an ELF image",
                    m.name()
                );
            }
        }
        // Through the cache: the second request is the same image.
        let a = image(Module::Vector, "sm_90").unwrap();
        let b = image(Module::Vector, "sm_90").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        // A broken source is a one-line error that carries the whole log.
        let bad = "#include \"common.cuh\"\nextern \"C\" __global__ void k(float* y) { y[0] = undefined_name; }\n";
        match compile_source("broken", bad, "sm_90") {
            Err(e @ GpuError::Compile { .. }) => {
                let line = e.to_string();
                assert!(
                    !line.contains('\n') && line.contains("undefined_name"),
                    "{line}"
                );
            }
            other => panic!("expected a compile error, got {other:?}"),
        }
    }

    #[test]
    fn arch_choice() {
        let cuda13 = [75, 80, 86, 87, 88, 89, 90, 100, 103, 110, 120, 121];
        assert_eq!(pick_arch((9, 0), &cuda13).as_deref(), Some("sm_90"));
        assert_eq!(pick_arch((8, 6), &cuda13).as_deref(), Some("sm_86"));
        assert_eq!(pick_arch((12, 1), &cuda13).as_deref(), Some("sm_121"));
        // A newer minor than NVRTC knows: the newest older one of the same major.
        assert_eq!(pick_arch((8, 9), &[75, 80, 86]).as_deref(), Some("sm_86"));
        // Dropped (7.0 in CUDA 13) or unknown major: no target.
        assert_eq!(pick_arch((7, 0), &cuda13), None);
        assert_eq!(pick_arch((13, 0), &cuda13), None);
        assert_eq!(
            nvrtc_options("sm_90"),
            ["--gpu-architecture=sm_90", "--std=c++17", "--prec-div=true"]
        );
    }
}
