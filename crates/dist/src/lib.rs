//! Collectives for running one finercut search on several processes (ranks).
//!
//! [`Transport`] is all the search needs from the machinery that connects the ranks: the rank, the
//! number of ranks and the rank's index on its node (which GPU is its own), an all-gather of
//! variable-length buffers, a broadcast and an abort that needs no other rank's cooperation, and
//! point-to-point messages between two ranks (pipeline stages pass residual streams on with
//! them). Two implementations:
//!
//! - [`Local`]: `k` ranks in one process, one thread each (`Local::group`); what the default tests
//!   run, so the dealing and gathering logic is tested without an MPI installation;
//! - `Mpi` (feature `mpi`): MPI through the `mpi` crate (rsmpi), for `mpirun` and Slurm's `srun`;
//!   one thread (the one that initialised MPI) makes every MPI call, rayon runs the rest. With
//!   [`RANK_TIMEOUT_VARIABLE`] set, a rank that waits longer than that in one collective or
//!   message (another rank is stuck, alive but not answering) ends the whole job, naming the wait.
//!
//! [`deal`] assigns work items to ranks by cost, deterministically, so every rank computes the
//! same assignment without communicating; [`makespan`] is the time a pipeline of stages takes for
//! groups of work passed from stage to stage.

#![deny(missing_docs)]

use std::time::Duration;

mod local;
#[cfg(feature = "mpi")]
mod mpi_transport;

pub use local::Local;
#[cfg(feature = "mpi")]
pub use mpi_transport::Mpi;

/// What can go wrong between ranks.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another rank gave up (or this one did): every collective after that fails.
    #[error("rank {rank} aborted the job: {message}")]
    Aborted {
        /// The rank that aborted.
        rank: usize,
        /// Its error.
        message: String,
    },
    /// A buffer too large for the transport's counts.
    #[error("rank {rank}: buffer of {len} bytes is too large for the transport (at most {max})")]
    TooLarge {
        /// The rank sending it.
        rank: usize,
        /// Its length in bytes.
        len: usize,
        /// The largest length the transport carries.
        max: usize,
    },
    /// Received bytes that do not decode as what was sent.
    #[error("rank {rank} sent {len} bytes, not a whole number of {what}")]
    Decode {
        /// The sending rank.
        rank: usize,
        /// The byte count.
        len: usize,
        /// What was expected.
        what: &'static str,
    },
    /// A point-to-point message to or from a rank that does not exist (or to this rank itself).
    #[error("rank {rank}: no rank {peer} to exchange a message with")]
    Peer {
        /// This rank.
        rank: usize,
        /// The rank named.
        peer: usize,
    },
    /// The transport could not be set up.
    #[error("cannot start the transport: {0}")]
    Setup(String),
    /// MPI and the launcher's variable disagree on this rank's index on its node.
    #[error(
        "rank {rank}: MPI's shared-memory split makes this local rank {mpi}, but the launcher \
         set {variable}={value}; which GPU is this rank's is ambiguous: unset {variable} or name \
         the card with --device cuda:N"
    )]
    LocalRank {
        /// This rank (of the world).
        rank: usize,
        /// Its index among the ranks of its node by MPI (`MPI_Comm_split_type`, shared memory).
        mpi: usize,
        /// The launcher's variable.
        variable: &'static str,
        /// Its value.
        value: usize,
    },
}

/// Result of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// The collectives the distributed search uses. Every rank calls the same collectives in the same
/// order; a rank that fails calls [`Transport::abort`] instead, which ends the collectives of all
/// others (they return [`Error::Aborted`], or, with MPI, the job ends).
pub trait Transport {
    /// This rank, `0..size()`.
    fn rank(&self) -> usize;

    /// Number of ranks.
    fn size(&self) -> usize;

    /// Every rank's buffer, in rank order (this rank's own included); buffers may differ in length.
    fn all_gather_bytes(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>>;

    /// Rank `root`'s buffer on every rank (`data` is ignored on the other ranks).
    fn broadcast_bytes(&self, root: usize, data: &[u8]) -> Result<Vec<u8>>;

    /// This rank's index among the ranks of its node (which GPU of the node is its own), or
    /// `None` when it is not one of several ranks. `Alone` reads the launcher's variables
    /// ([`local_rank`]; `None` without a launcher); `Local` ranks all live in one process, so
    /// each one's local rank is its rank; `Mpi` asks MPI (the shared-memory split of the world),
    /// which works under any launcher, and is an error ([`Error::LocalRank`]) when a launcher's
    /// variable says otherwise.
    fn local_rank(&self) -> Result<Option<usize>>;

    /// Ends the job from this rank without waiting for any other: `message` names the error.
    /// With MPI this does not return (`MPI_Abort`); in process, every other rank's current and
    /// next collective fails with [`Error::Aborted`].
    fn abort(&self, message: &str);

    /// Sends `data` to rank `to` (point to point, for pipeline stages). Messages between two ranks
    /// arrive in the order they were sent. Host buffers; a device transport (NCCL) would add its
    /// own methods for device buffers beside these.
    fn send_bytes(&self, to: usize, data: &[u8]) -> Result<()>;

    /// The next message rank `from` sent to this rank with [`Transport::send_bytes`]; waits for it,
    /// or fails (in process) once any rank has aborted.
    fn recv_bytes(&self, from: usize) -> Result<Vec<u8>>;

    /// Every rank's `f64` values, in rank order, bit for bit.
    fn all_gather_f64(&self, mine: &[f64]) -> Result<Vec<Vec<f64>>> {
        let bytes: Vec<u8> = mine.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.all_gather_bytes(&bytes)?
            .into_iter()
            .enumerate()
            .map(|(rank, b)| f64s_from_bytes(rank, &b))
            .collect()
    }
}

/// Decodes little-endian `f64`s sent by `rank`.
pub fn f64s_from_bytes(rank: usize, bytes: &[u8]) -> Result<Vec<f64>> {
    if !bytes.len().is_multiple_of(8) {
        return Err(Error::Decode {
            rank,
            len: bytes.len(),
            what: "f64 values",
        });
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|c| {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            f64::from_le_bytes(a)
        })
        .collect())
}

/// One process alone: rank 0 of 1; collectives return this rank's own data.
#[derive(Debug, Default, Clone, Copy)]
pub struct Alone;

impl Transport for Alone {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_gather_bytes(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        Ok(vec![mine.to_vec()])
    }
    fn broadcast_bytes(&self, _root: usize, data: &[u8]) -> Result<Vec<u8>> {
        Ok(data.to_vec())
    }
    fn send_bytes(&self, to: usize, _data: &[u8]) -> Result<()> {
        Err(Error::Peer { rank: 0, peer: to })
    }
    fn recv_bytes(&self, from: usize) -> Result<Vec<u8>> {
        Err(Error::Peer {
            rank: 0,
            peer: from,
        })
    }
    fn local_rank(&self) -> Result<Option<usize>> {
        Ok(local_rank())
    }
    fn abort(&self, _message: &str) {}
}

/// Deals items of the given `costs` to `ranks` ranks: longest first (ties: lower item index), each
/// onto the rank with the least cost so far (ties: lower rank). Returns each item's rank. A
/// function of its arguments only, so every rank computes the same deal.
pub fn deal(costs: &[usize], ranks: usize) -> Vec<usize> {
    let ranks = ranks.max(1);
    let mut order: Vec<usize> = (0..costs.len()).collect();
    order.sort_by(|&a, &b| costs[b].cmp(&costs[a]).then(a.cmp(&b)));
    let mut load = vec![0usize; ranks];
    let mut owner = vec![0usize; costs.len()];
    for i in order {
        let r = (0..ranks).min_by_key(|&r| (load[r], r)).unwrap_or(0);
        owner[i] = r;
        load[r] += costs[i];
    }
    owner
}

/// The time to run groups of work `work[g][k]` (group `g` on stage `k`) through a pipeline, in
/// order: group `g` starts on stage `k` once stage `k` has finished group `g − 1` and stage
/// `k − 1` has finished group `g`.
pub fn makespan(work: &[Vec<u64>]) -> u64 {
    let stages = work.first().map_or(0, Vec::len);
    let mut done = vec![0u64; stages];
    for group in work {
        let mut ready = 0u64;
        for (k, &w) in group.iter().enumerate() {
            done[k] = done[k].max(ready) + w;
            ready = done[k];
        }
    }
    done.last().copied().unwrap_or(0)
}

/// Whether this process was started by an MPI launcher (`mpirun`/`mpiexec` of Open MPI or MPICH,
/// Slurm's `srun` with PMI or PMIx): the variables those launchers set for each rank.
pub fn launched_by_mpi() -> bool {
    [
        "OMPI_COMM_WORLD_SIZE",
        "PMI_SIZE",
        "PMIX_RANK",
        "PMI_RANK",
        "MPI_LOCALNRANKS",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some())
}

/// The variables launchers set to a rank's index among the ranks of its node, in the order they
/// are read: Open MPI's `mpirun`, Slurm's `srun`, MPICH's Hydra, PMIx.
pub const LOCAL_RANK_VARIABLES: [&str; 4] = [
    "OMPI_COMM_WORLD_LOCAL_RANK",
    "SLURM_LOCALID",
    "MPI_LOCALRANKID",
    "PMIX_LOCAL_RANK",
];

/// This process's index among the ranks of its node when an MPI launcher started it, else
/// `None`: [`local_rank_from`] over the environment. The way without MPI ([`Alone`]); with MPI,
/// [`Transport::local_rank`] asks MPI itself.
pub fn local_rank() -> Option<usize> {
    if !launched_by_mpi() {
        return None;
    }
    local_rank_from(|v| std::env::var(v).ok())
}

/// The variable that bounds how long an MPI rank waits for the others in one collective or
/// message, in seconds (unset or `0`: no bound).
pub const RANK_TIMEOUT_VARIABLE: &str = "FINERCUT_RANK_TIMEOUT";

/// The bound on one wait from [`RANK_TIMEOUT_VARIABLE`] as `var` gives it: `None` when unset,
/// empty or `0`; an error naming the variable when it is not a finite, non-negative number of
/// seconds.
pub fn rank_timeout_from(var: impl Fn(&str) -> Option<String>) -> Result<Option<Duration>> {
    let Some(text) = var(RANK_TIMEOUT_VARIABLE) else {
        return Ok(None);
    };
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    match text.parse::<f64>() {
        Ok(0.0) => Ok(None),
        Ok(s) if s.is_finite() && s > 0.0 && s < 1e9 => Ok(Some(Duration::from_secs_f64(s))),
        _ => Err(Error::Setup(format!(
            "{RANK_TIMEOUT_VARIABLE}={text}: not a number of seconds (a positive number, or 0 \
             for no bound)"
        ))),
    }
}

/// The local rank from the first of [`LOCAL_RANK_VARIABLES`] that `var` knows and that holds a
/// number; `None` when none does.
pub fn local_rank_from(var: impl Fn(&str) -> Option<String>) -> Option<usize> {
    local_rank_variable(var).map(|(_, r)| r)
}

/// [`local_rank_from`] with the name of the variable it came from.
pub fn local_rank_variable(var: impl Fn(&str) -> Option<String>) -> Option<(&'static str, usize)> {
    LOCAL_RANK_VARIABLES
        .iter()
        .find_map(|&v| var(v).and_then(|s| s.trim().parse::<usize>().ok().map(|r| (v, r))))
}

/// The local rank of world rank `rank` that MPI computed (`mpi`), checked against the
/// launcher's variable when one is set ([`local_rank_variable`]): an error naming both when they
/// differ.
pub fn agreed_local_rank(
    rank: usize,
    mpi: usize,
    variable: Option<(&'static str, usize)>,
) -> Result<usize> {
    match variable {
        Some((variable, value)) if value != mpi => Err(Error::LocalRank {
            rank,
            mpi,
            variable,
            value,
        }),
        _ => Ok(mpi),
    }
}

/// The number of ranks an MPI launcher started, from its variables (1 when none is set).
#[cfg(not(feature = "mpi"))]
fn launched_ranks() -> usize {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .filter_map(|s| s.trim().parse::<usize>().ok())
        .max()
        .unwrap_or(1)
}

/// The transport of this process: MPI when an MPI launcher started it (in a build with the
/// feature `mpi`), one process alone otherwise. A build without MPI started as several ranks is
/// an error (each rank would run the whole search and write the same files).
pub fn from_environment() -> Result<Box<dyn Transport>> {
    if !launched_by_mpi() {
        return Ok(Box::new(Alone));
    }
    #[cfg(feature = "mpi")]
    {
        Ok(Box::new(Mpi::init()?))
    }
    #[cfg(not(feature = "mpi"))]
    {
        match launched_ranks() {
            0 | 1 => Ok(Box::new(Alone)),
            n => Err(Error::Setup(format!(
                "started by an MPI launcher as {n} ranks, but this finercut was built without MPI: build it with `cargo build --release --features mpi`"
            ))),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn deal_puts_the_longest_first_on_the_least_loaded_rank() {
        // Costs 5 4 3 3 1 over 2 ranks: 5→0, 4→1, 3 (item 2)→1, 3 (item 3)→0, 1→0 or 1 (8 vs 7)→1.
        assert_eq!(deal(&[5, 4, 3, 3, 1], 2), vec![0, 1, 1, 0, 1]);
        // Ties between ranks go to the lower rank; one rank gets everything.
        assert_eq!(deal(&[2, 2, 2], 3), vec![0, 1, 2]);
        assert_eq!(deal(&[7, 1, 3], 1), vec![0, 0, 0]);
        assert_eq!(deal(&[], 4), Vec::<usize>::new());
        // More ranks than items: the extra ranks get nothing.
        assert_eq!(deal(&[1, 9], 4), vec![1, 0]);
    }

    #[test]
    fn deal_balances_a_triangle_of_costs() {
        // Candidates born at sublayer c cost 2L − c: dealt over 4 ranks, loads differ by less
        // than the largest single cost.
        let costs: Vec<usize> = (0..64).map(|c| 64 - c).collect();
        let owner = deal(&costs, 4);
        let mut load = [0usize; 4];
        for (i, &r) in owner.iter().enumerate() {
            load[r] += costs[i];
        }
        let (lo, hi) = (load.iter().min().unwrap(), load.iter().max().unwrap());
        assert!(hi - lo <= 64, "{load:?}");
        assert_eq!(load.iter().sum::<usize>(), costs.iter().sum::<usize>());
    }

    #[test]
    fn makespan_runs_groups_through_the_stages_in_order() {
        // One group: the sum of its stages.
        assert_eq!(makespan(&[vec![3, 4]]), 7);
        // Two groups on two stages: stage 1 runs group 0 (3..7) while stage 0 runs group 1
        // (3..5); group 1 waits for stage 1 (7..11).
        assert_eq!(makespan(&[vec![3, 4], vec![2, 4]]), 11);
        // A slow first stage: the second waits for each group.
        assert_eq!(makespan(&[vec![5, 1], vec![5, 1], vec![5, 1]]), 16);
        assert_eq!(makespan(&[]), 0);
    }

    #[test]
    fn local_rank_comes_from_the_first_launcher_variable_set() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |v: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == v)
                    .map(|(_, x)| x.to_string())
            }
        };
        assert_eq!(local_rank_from(env(&[])), None);
        assert_eq!(local_rank_from(env(&[("SLURM_LOCALID", "3")])), Some(3));
        assert_eq!(
            local_rank_from(env(&[
                ("MPI_LOCALRANKID", "1"),
                ("OMPI_COMM_WORLD_LOCAL_RANK", "2")
            ])),
            Some(2)
        );
        // A value that is not a number is passed over.
        assert_eq!(
            local_rank_from(env(&[
                ("OMPI_COMM_WORLD_LOCAL_RANK", "x"),
                ("PMIX_LOCAL_RANK", "5")
            ])),
            Some(5)
        );
    }

    #[test]
    fn mpi_and_launcher_must_agree_on_the_local_rank() {
        assert_eq!(agreed_local_rank(5, 1, None).ok(), Some(1));
        assert_eq!(
            agreed_local_rank(5, 1, Some(("SLURM_LOCALID", 1))).ok(),
            Some(1)
        );
        let e = agreed_local_rank(5, 1, Some(("SLURM_LOCALID", 0)))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("rank 5") && e.contains("local rank 1") && e.contains("SLURM_LOCALID=0"),
            "{e}"
        );
        assert_eq!(
            local_rank_variable(|v| (v == "MPI_LOCALRANKID").then(|| "4".to_string())),
            Some(("MPI_LOCALRANKID", 4))
        );
        // In process, every rank of a group is on the same node: its local rank is its rank.
        let group = Local::group(3);
        let locals: Vec<_> = group
            .iter()
            .map(|r| r.local_rank().ok().flatten())
            .collect();
        assert_eq!(locals, vec![Some(0), Some(1), Some(2)]);
    }

    #[test]
    fn the_rank_timeout_is_seconds_or_unset_and_bad_values_name_the_variable() {
        let with = |v: Option<&str>| {
            rank_timeout_from(|name| {
                assert_eq!(name, RANK_TIMEOUT_VARIABLE);
                v.map(str::to_owned)
            })
        };
        assert_eq!(with(None).unwrap(), None);
        assert_eq!(with(Some("")).unwrap(), None);
        assert_eq!(with(Some("0")).unwrap(), None);
        assert_eq!(with(Some("30")).unwrap(), Some(Duration::from_secs(30)));
        assert_eq!(
            with(Some(" 2.5 ")).unwrap(),
            Some(Duration::from_millis(2500))
        );
        for bad in ["-1", "abc", "inf", "NaN", "1e20", "10s"] {
            let e = with(Some(bad)).unwrap_err().to_string();
            assert!(
                e.contains(RANK_TIMEOUT_VARIABLE) && e.contains(bad),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn f64s_round_trip_bit_for_bit_and_bad_lengths_are_errors() {
        let xs = [0.1, -0.0, f64::NAN, f64::INFINITY, 1e-310];
        let got = Alone.all_gather_f64(&xs).unwrap();
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got[0]), bits(&xs));
        assert!(matches!(
            f64s_from_bytes(3, &[0; 9]),
            Err(Error::Decode { rank: 3, .. })
        ));
    }
}
