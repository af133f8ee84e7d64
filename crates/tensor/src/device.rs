//! Devices a tensor can live on, and how a user names them (`cpu`, `cuda`, `cuda:N`).
//!
//! [`Device::Cuda`] holds a [`CudaDevice`]: with the `cuda` feature a small handle (the card's
//! ordinal) whose context, stream, cuBLAS handle and compiled kernels live in a process-wide table;
//! without it an uninhabited type, so every CUDA arm of a `match` is dead code the compiler can see
//! and nothing can panic at run time for want of a backend.

use crate::cuda;
pub use crate::cuda::CudaDevice;
use crate::{Error, Result};

/// Where a tensor's data lives and its operations run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    /// Host memory; operations use BLAS (or `matrixmultiply`) and rayon.
    Cpu,
    /// An NVIDIA GPU (only with the `cuda` feature; see [`Device::cuda`]).
    Cuda(CudaDevice),
}

impl Device {
    /// Whether this is the host.
    pub fn is_cpu(&self) -> bool {
        matches!(self, Device::Cpu)
    }

    /// The CUDA card `ordinal`: creates its context, cuBLAS handle and kernels on first use.
    ///
    /// An error, never a panic, when this build has no CUDA backend, when no NVIDIA driver
    /// (`libcuda.so`) can be loaded, or when the card does not exist.
    pub fn cuda(ordinal: usize) -> Result<Device> {
        Ok(Device::Cuda(cuda::open(ordinal)?))
    }

    /// The device named `name`: `cpu`, `cuda` (card 0) or `cuda:N`.
    pub fn parse(name: &str) -> Result<Device> {
        let bad = || Error::Invalid {
            op: "Device::parse",
            detail: format!("unknown device `{name}` (expected cpu, cuda or cuda:N)"),
        };
        match name {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Device::cuda(0),
            _ => match name.strip_prefix("cuda:") {
                Some(n) => Device::cuda(n.parse().map_err(|_| bad())?),
                None => Err(bad()),
            },
        }
    }

    /// The device named `name` for a rank that an MPI launcher started as local rank
    /// `local_rank` (its index among the ranks of its node; `None` when not launched): plain
    /// `cuda` takes the card of the local rank ([`local_card`]), everything else is
    /// [`Device::parse`]. Data between ranks travels through host memory.
    pub fn parse_for_rank(name: &str, local_rank: Option<usize>) -> Result<Device> {
        match (name, local_rank) {
            ("cuda", Some(rank)) => {
                if !cuda::COMPILED {
                    return Device::cuda(rank);
                }
                Device::cuda(local_card(rank, cuda::device_count()?)?)
            }
            _ => Device::parse(name),
        }
    }

    /// Whether this build has the CUDA backend (the `cuda` feature); says nothing about drivers.
    pub fn cuda_compiled() -> bool {
        cuda::COMPILED
    }

    /// Waits until queued work on the device is done (a no-op on the CPU).
    pub fn synchronize(&self) -> Result<()> {
        match self {
            Device::Cpu => Ok(()),
            Device::Cuda(d) => d.synchronize(),
        }
    }
}

/// The card of local rank `local_rank` on a node with `cards` CUDA cards: card `local_rank`,
/// one card per rank; a rank beyond the last card is an error naming the rank and the count
/// (ranks sharing a card would split its memory and serialise on it).
pub fn local_card(local_rank: usize, cards: usize) -> Result<usize> {
    if local_rank < cards {
        return Ok(local_rank);
    }
    Err(Error::Unavailable {
        device: format!("cuda:{local_rank}"),
        detail: format!(
            "local rank {local_rank} has no CUDA card of its own: this node has {cards} card(s) \
             and at least {} ranks on it; start at most {cards} rank(s) per node \
             (`mpirun --map-by ppr:{cards}:node`, `srun --ntasks-per-node={cards}`) or name \
             the card with --device cuda:N",
            local_rank + 1
        ),
    })
}

/// The card plain `cuda` gives local rank `local_rank` ([`local_card`] of the cards the driver
/// sees), without opening it; an error without a CUDA backend, a driver or a card of its own.
pub fn local_rank_card(local_rank: usize) -> Result<usize> {
    if !cuda::COMPILED {
        // The error of a build without the backend, naming the card.
        return cuda::open(local_rank).map(|_| local_rank);
    }
    local_card(local_rank, cuda::device_count()?)
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(d) => write!(f, "{d}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse() {
        assert_eq!(Device::parse("cpu").ok(), Some(Device::Cpu));
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", ""] {
            let e = Device::parse(bad).err().map(|e| e.to_string());
            assert!(
                e.as_deref()
                    .is_some_and(|m| m.contains("unknown device") || m.contains("CUDA")),
                "{bad}: {e:?}"
            );
        }
    }

    #[test]
    fn each_local_rank_takes_its_own_card() {
        for cards in 1..=8 {
            for rank in 0..cards {
                assert_eq!(local_card(rank, cards).ok(), Some(rank));
            }
            let e = local_card(cards, cards).err().map(|e| e.to_string());
            let m = e.unwrap_or_default();
            assert!(
                m.contains(&format!("local rank {cards} "))
                    && m.contains(&format!("{cards} card(s)")),
                "{m}"
            );
        }
        assert!(local_card(0, 0).is_err());
        // Outside a launcher, and for the CPU or a named card, the name is parsed as it is.
        assert_eq!(
            Device::parse_for_rank("cpu", Some(3)).ok(),
            Some(Device::Cpu)
        );
        assert!(Device::parse_for_rank("gpu", Some(0)).is_err());
        if !Device::cuda_compiled() {
            let e = Device::parse_for_rank("cuda", Some(2))
                .err()
                .map(|e| e.to_string());
            assert!(e.is_some_and(|m| m.contains("cuda:2") && m.contains("feature")));
        }
    }

    #[test]
    fn cuda_without_backend_or_driver_is_a_clear_error() {
        // On machines without an NVIDIA driver (CI) or builds without the feature, opening a card is
        // an error that says why; with a working card it succeeds.
        match Device::cuda(0) {
            Ok(d) => assert!(matches!(d, Device::Cuda(_))),
            Err(e) => {
                let m = e.to_string();
                assert!(
                    m.contains("CUDA")
                        && (m.contains("feature") || m.contains("driver") || m.contains("device")),
                    "{m}"
                );
            }
        }
    }
}
