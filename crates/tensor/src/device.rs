//! Devices a tensor can live on. The CUDA types are uninhabited until the `cuda` backend exists.
//!
//! Keeping `Device::Cuda` in the enum now means every `match` over devices and storages already has the
//! CUDA arm; while [`CudaDevice`] and [`CudaStorage`] have no values the compiler sees those arms as
//! dead code, so nothing can panic at run time for want of a backend.

/// Where a tensor's data lives and its operations run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    /// Host memory; operations use BLAS (or `matrixmultiply`) and rayon.
    Cpu,
    /// A CUDA GPU. No value of this variant can exist until the CUDA backend is added.
    Cuda(CudaDevice),
}

/// A CUDA device handle. Uninhabited: this build has no CUDA backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CudaDevice {}

/// Device memory of a CUDA tensor. Uninhabited: this build has no CUDA backend.
#[derive(Clone, Debug)]
pub enum CudaStorage {}

impl Device {
    /// Whether this is the host.
    pub fn is_cpu(&self) -> bool {
        matches!(self, Device::Cpu)
    }

    /// Waits until queued work on the device is done (a no-op on the CPU).
    pub fn synchronize(&self) {
        match self {
            Device::Cpu => {}
            Device::Cuda(d) => match *d {},
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(d) => match *d {},
        }
    }
}
