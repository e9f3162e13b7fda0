//! Where a model computes: the CPU (burn's Flex backend) or a GPU through a backend compiled in
//! (`--features cuda`: NVIDIA via CUDA; `--features wgpu`: any Vulkan/Metal device, including
//! Mesa's software Vulkan, which is how CI exercises this path without a GPU).
//!
//! GPU runtimes report a missing driver, a lost device or an exhausted memory by panicking deep
//! inside their kernels' launch code. [`guarded`] turns such a panic into an error with a
//! readable reason, so a stage fails (or falls back to the CPU) instead of taking the run down.

use std::fmt;
use std::sync::Mutex;

use anyhow::{Result, bail};
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

/// A device a stage can be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compute {
    Cpu,
    Cuda(usize),
    Wgpu(usize),
}

impl Compute {
    pub fn is_gpu(self) -> bool {
        self != Compute::Cpu
    }
}

impl fmt::Display for Compute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compute::Cpu => write!(f, "cpu"),
            Compute::Cuda(i) => write!(f, "cuda:{i}"),
            Compute::Wgpu(i) => write!(f, "wgpu:{i}"),
        }
    }
}

/// A family of GPU devices this build may drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuBackend {
    Cuda,
    Wgpu,
}

impl GpuBackend {
    pub fn name(self) -> &'static str {
        match self {
            GpuBackend::Cuda => "cuda",
            GpuBackend::Wgpu => "wgpu",
        }
    }

    pub fn parse(text: &str) -> Option<GpuBackend> {
        match text {
            "cuda" => Some(GpuBackend::Cuda),
            "wgpu" => Some(GpuBackend::Wgpu),
            _ => None,
        }
    }

    pub fn compiled(self) -> bool {
        match self {
            GpuBackend::Cuda => cfg!(feature = "cuda"),
            GpuBackend::Wgpu => cfg!(feature = "wgpu"),
        }
    }

    pub fn device(self, index: usize) -> Compute {
        match self {
            GpuBackend::Cuda => Compute::Cuda(index),
            GpuBackend::Wgpu => Compute::Wgpu(index),
        }
    }

    /// The backend a run uses when none is named: CUDA where compiled in, else wgpu.
    pub fn preferred() -> Option<GpuBackend> {
        [GpuBackend::Cuda, GpuBackend::Wgpu]
            .into_iter()
            .find(|b| b.compiled())
    }
}

/// burn's device for `compute`, or why this build cannot drive it.
pub fn burn_device(compute: Compute) -> Result<Device> {
    match compute {
        Compute::Cpu => Ok(Device::flex()),
        #[cfg(feature = "cuda")]
        Compute::Cuda(i) => Ok(Device::cuda(i)),
        #[cfg(feature = "wgpu")]
        Compute::Wgpu(i) => Ok(Device::wgpu(if i == 0 {
            burn::tensor::DeviceKind::DefaultDevice
        } else {
            burn::tensor::DeviceKind::DiscreteGpu(i)
        })),
        #[allow(unreachable_patterns)]
        other => bail!(
            "this build has no {} backend: rebuild with `--features {}` (README, \"GPUs\")",
            match other {
                Compute::Wgpu(_) => "wgpu",
                _ => "CUDA",
            },
            match other {
                Compute::Wgpu(_) => "wgpu",
                _ => "cuda",
            }
        ),
    }
}

/// The first panic message of any thread, when [`record_panics`] is installed: GPU runtimes
/// panic on threads of their own, and the training thread then sees only a closed channel.
static FIRST_PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Installs a panic hook that remembers the first panic message and hands every panic (thread,
/// place, message; no backtrace) to `report` instead of stderr. A stage's process installs it
/// so that its log, not its error, holds the runtime's noise.
pub fn record_panics(report: impl Fn(&str) + Send + Sync + 'static) {
    std::panic::set_hook(Box::new(move |info| {
        let message = panic_text(info.payload());
        if let Ok(mut first) = FIRST_PANIC.lock() {
            first.get_or_insert_with(|| message.clone());
        }
        let thread = std::thread::current();
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        report(&format!(
            "panic in thread '{}'{place}: {message}",
            thread.name().unwrap_or("unnamed")
        ));
    }));
}

/// The first panic message recorded since the last call (see [`record_panics`]), else the
/// text of `payload`.
pub fn first_panic(payload: &(dyn std::any::Any + Send)) -> String {
    FIRST_PANIC
        .lock()
        .ok()
        .and_then(|mut f| f.take())
        .unwrap_or_else(|| panic_text(payload))
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "no message".into())
}

/// Runs `f`, turning a panic (how GPU runtimes report driver, device and memory failures) into
/// an error that names the device and, where it can tell, the cause.
pub fn guarded<T>(compute: Compute, f: impl FnOnce() -> Result<T>) -> Result<T> {
    if !compute.is_gpu() {
        return f();
    }
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(panic) => {
            let text = first_panic(panic.as_ref());
            bail!("{compute}: {}", explain_gpu_failure(&text))
        }
    }
}

/// A short reason for a GPU runtime's panic text, keeping the original for reference.
fn explain_gpu_failure(text: &str) -> String {
    let first = text.lines().next().unwrap_or("").trim();
    let lower = text.to_ascii_lowercase();
    let cause = if lower.contains("out of memory")
        || lower.contains("out_of_memory")
        || lower.contains("outofmemory")
    {
        "out of GPU memory (try a smaller batch size or width)"
    } else if lower.contains("libcuda")
        || lower.contains("libnvrtc")
        || lower.contains("dlopen")
        || lower.contains("shared library") && lower.contains("cuda")
    {
        "the CUDA driver or NVRTC library could not be loaded"
    } else if lower.contains("no adapter") || lower.contains("adapter") && lower.contains("found") {
        "no usable device was found"
    } else {
        "the GPU runtime failed"
    };
    // Runtime messages can list dozens of library names: the start says enough.
    let first: String = first.chars().take(160).collect();
    format!("{cause} ({first}…)")
}

/// Opens `compute` and runs a small computation on it, checking the result; returns a short
/// description of the device. Used at start-up to say which GPUs a run has.
pub fn probe(compute: Compute) -> Result<()> {
    guarded(compute, || {
        let device = burn_device(compute)?;
        let x = Tensor::<1>::from_data(TensorData::new(vec![1.0f32, 2.0, 3.0], [3]), &device);
        let y: Vec<f32> = (x.clone() * x)
            .add_scalar(1.0)
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        if y != [2.0, 5.0, 10.0] {
            bail!("{compute} computed {y:?} for [2, 5, 10]");
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_print_and_parse_as_users_write_them() {
        assert_eq!(Compute::Cuda(1).to_string(), "cuda:1");
        assert_eq!(Compute::Wgpu(0).to_string(), "wgpu:0");
        assert_eq!(GpuBackend::parse("wgpu"), Some(GpuBackend::Wgpu));
        assert_eq!(GpuBackend::parse("opencl"), None);
        assert_eq!(
            serde_json::to_string(&Compute::Cuda(2)).unwrap(),
            r#"{"cuda":2}"#
        );
    }

    #[test]
    fn the_cpu_always_works_and_a_missing_backend_is_a_clear_error() {
        probe(Compute::Cpu).unwrap();
        if !GpuBackend::Cuda.compiled() {
            let e = burn_device(Compute::Cuda(0)).unwrap_err().to_string();
            assert!(e.contains("--features cuda"), "{e}");
        }
        if !GpuBackend::Wgpu.compiled() {
            let e = burn_device(Compute::Wgpu(0)).unwrap_err().to_string();
            assert!(e.contains("--features wgpu"), "{e}");
        }
    }

    #[test]
    fn gpu_panics_become_errors_with_a_reason() {
        let e = guarded(Compute::Cuda(0), || -> Result<()> {
            panic!("CUDA_ERROR_OUT_OF_MEMORY: out of memory while allocating 4 GiB")
        })
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("cuda:0: out of GPU memory"), "{e}");
        let e = guarded(Compute::Cuda(0), || -> Result<()> {
            panic!("Failed to load libcuda.so.1")
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("CUDA driver"), "{e}");
        let long = format!(
            "Unable to dynamically load the \"cuda\" shared library {}",
            "x".repeat(500)
        );
        let e = explain_gpu_failure(&long);
        assert!(e.len() < 300 && e.contains("could not be loaded"), "{e}");
    }
}
