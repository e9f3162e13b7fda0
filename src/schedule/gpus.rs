//! Which GPUs a run may use, found once at start: `--gpus N` overrides, `--gpus 0` disables.
//!
//! CUDA devices are counted from the driver's device files (`/dev/nvidia0`, …, or
//! `CUDA_VISIBLE_DEVICES`) and named from `/proc/driver/nvidia`; the driver library is loaded
//! to check it works, but no CUDA context is made here: a context would hold GPU memory for the
//! whole run in a process that computes nothing (stages train in processes of their own).

use anyhow::{Result, bail};

use crate::ml::device::{Compute, GpuBackend};

#[derive(Debug)]
pub struct Gpus {
    pub devices: Vec<Compute>,
    pub backend: Option<GpuBackend>,
    /// For `run`'s header: the devices, or why there are none.
    pub description: String,
}

/// `backend`: `--gpu-backend` (default: CUDA where compiled in); `requested`: `--gpus`.
pub fn detect(backend: Option<&str>, requested: Option<usize>) -> Result<Gpus> {
    let backend = match backend {
        Some(name) => {
            let Some(b) = GpuBackend::parse(name) else {
                bail!("--gpu-backend must be cuda or wgpu, not `{name}`");
            };
            if !b.compiled() {
                bail!(
                    "--gpu-backend {name}: this build has no {name} backend; rebuild with `--features {name}` (README, \"GPUs\")"
                );
            }
            Some(b)
        }
        // wgpu also drives software renderers (Mesa's lavapipe, 10× slower than the CPU
        // backend), so a run uses it only when asked.
        None => Some(GpuBackend::Cuda).filter(|b| b.compiled()),
    };
    let nvidia = nvidia_gpus();
    let none = |description: String| Gpus {
        devices: Vec::new(),
        backend,
        description,
    };
    if requested == Some(0) {
        return Ok(none("--gpus 0: every stage on the CPU".into()));
    }
    let Some(b) = backend else {
        return Ok(none(match requested {
            Some(n) if n > 0 && GpuBackend::Wgpu.compiled() => format!(
                "--gpus {n} ignored: this build has no CUDA backend; `--gpu-backend wgpu` uses the wgpu device"
            ),
            Some(n) if n > 0 => {
                format!("--gpus {n} ignored: this build has no GPU backend (README, \"GPUs\")")
            }
            _ if !nvidia.is_empty() => format!(
                "{} NVIDIA GPU(s) found, but this build has no CUDA backend (README, \"GPUs\")",
                nvidia.len()
            ),
            _ if GpuBackend::Wgpu.compiled() => "`--gpu-backend wgpu` uses the wgpu device".into(),
            _ => String::new(),
        }));
    };
    let devices = |n: usize| (0..n).map(|i| b.device(i)).collect::<Vec<_>>();
    let listed = |devices: &[Compute], names: &[String]| {
        devices
            .iter()
            .enumerate()
            .map(|(i, d)| match names.get(i) {
                Some(name) => format!("{d} {name}"),
                None => d.to_string(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (b, requested) {
        // The user knows the machine (detection can miss devices in containers): trusted, and a
        // device that does not work fails its stages (`device: auto` ones move to the CPU).
        (_, Some(n)) => {
            let devices = devices(n);
            let description = listed(&devices, &nvidia);
            Ok(Gpus {
                devices,
                backend,
                description,
            })
        }
        (GpuBackend::Cuda, None) => {
            if nvidia.is_empty() {
                return Ok(none("no NVIDIA GPU found".into()));
            }
            if let Err(why) = cuda_driver() {
                return Ok(none(format!(
                    "{} NVIDIA GPU(s) found, but {why}",
                    nvidia.len()
                )));
            }
            let devices = devices(nvidia.len());
            let description = listed(&devices, &nvidia);
            Ok(Gpus {
                devices,
                backend,
                description,
            })
        }
        (GpuBackend::Wgpu, None) => match crate::ml::device::probe(Compute::Wgpu(0)) {
            Ok(()) => Ok(Gpus {
                devices: vec![Compute::Wgpu(0)],
                backend,
                description: "wgpu:0".into(),
            }),
            Err(e) => Ok(none(format!("no usable wgpu device: {e:#}"))),
        },
    }
}

/// The NVIDIA GPUs this process may use, by name where the driver says (`CUDA_VISIBLE_DEVICES`
/// narrows them, as it does for CUDA itself).
fn nvidia_gpus() -> Vec<String> {
    let mut names: Vec<(u32, String)> = Vec::new();
    if let Ok(read) = std::fs::read_dir("/proc/driver/nvidia/gpus") {
        for entry in read.flatten() {
            let info =
                std::fs::read_to_string(entry.path().join("information")).unwrap_or_default();
            let field = |key: &str| {
                info.lines()
                    .find_map(|l| l.strip_prefix(key))
                    .map(|v| v.trim_start_matches(':').trim().to_string())
            };
            let minor = field("Device Minor")
                .and_then(|m| m.parse().ok())
                .unwrap_or(0);
            names.push((minor, field("Model").unwrap_or_else(|| "NVIDIA GPU".into())));
        }
    }
    names.sort();
    let mut names: Vec<String> = names.into_iter().map(|(_, n)| n).collect();
    if names.is_empty() {
        let count = std::fs::read_dir("/dev").map_or(0, |read| {
            read.flatten()
                .filter(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    name.strip_prefix("nvidia")
                        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
                })
                .count()
        });
        names = vec!["NVIDIA GPU".to_string(); count];
    }
    match std::env::var("CUDA_VISIBLE_DEVICES") {
        Ok(visible) => {
            let picked: Vec<String> = visible
                .split(',')
                .map(str::trim)
                .take_while(|s| !s.is_empty() && !s.starts_with('-'))
                .map(|id| match id.parse::<usize>() {
                    Ok(i) => names.get(i).cloned().unwrap_or_else(|| "NVIDIA GPU".into()),
                    Err(_) => "NVIDIA GPU".into(),
                })
                .collect();
            if names.is_empty() { Vec::new() } else { picked }
        }
        Err(_) => names,
    }
}

/// Loads the CUDA driver library and asks its version (no context is made).
fn cuda_driver() -> Result<String, String> {
    // SAFETY: dlopen/dlsym with NUL-terminated names; the symbol is called with its documented
    // signature, `CUresult cuDriverGetVersion(int*)`, and the library stays loaded.
    unsafe {
        let lib = libc::dlopen(c"libcuda.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        if lib.is_null() {
            return Err("the CUDA driver library (libcuda.so.1) cannot be loaded".into());
        }
        let symbol = libc::dlsym(lib, c"cuDriverGetVersion".as_ptr());
        if symbol.is_null() {
            return Err("libcuda.so.1 has no cuDriverGetVersion".into());
        }
        let get: extern "C" fn(*mut i32) -> i32 = std::mem::transmute(symbol);
        let mut version = 0i32;
        match get(&mut version) {
            0 => Ok(format!("{}.{}", version / 1000, (version % 1000) / 10)),
            code => Err(format!("the CUDA driver answered error {code}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpus_zero_disables_and_an_unbuilt_backend_is_refused_by_name() {
        let none = detect(None, Some(0)).unwrap();
        assert!(none.devices.is_empty());
        for name in ["cuda", "wgpu"] {
            let compiled = GpuBackend::parse(name).unwrap().compiled();
            match detect(Some(name), Some(1)) {
                Ok(g) => {
                    assert!(compiled);
                    assert_eq!(g.devices.len(), 1);
                }
                Err(e) => {
                    assert!(!compiled);
                    assert!(e.to_string().contains(&format!("--features {name}")), "{e}");
                }
            }
        }
        let e = detect(Some("opencl"), None).unwrap_err().to_string();
        assert!(e.contains("cuda or wgpu"), "{e}");
    }

    #[test]
    fn a_build_without_cuda_uses_no_gpu_unless_asked() {
        if !GpuBackend::Cuda.compiled() {
            let g = detect(None, Some(2)).unwrap();
            assert!(g.devices.is_empty());
            assert!(
                g.description.contains("no GPU backend")
                    || g.description
                        .contains("`--gpu-backend wgpu` uses the wgpu device"),
                "{}",
                g.description
            );
            // wgpu (also a software renderer) is never picked unasked.
            assert!(detect(None, None).unwrap().devices.is_empty());
        }
    }
}
