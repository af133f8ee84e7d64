//! [`Mpi`]: the transport over MPI (rsmpi), for `mpirun`/`mpiexec` and Slurm's `srun`.
//!
//! MPI is initialised with `MPI_THREAD_FUNNELED`: the thread that calls [`Mpi::init`] makes every
//! MPI call (the search's main thread; rayon's workers never touch MPI), and a call from another
//! thread is refused. MPI's default error handler ends the job on any MPI error, so a collective
//! never returns half-done.
//!
//! A rank that dies ends the job through the launcher. A rank that is alive but stuck would leave
//! the others waiting in their next collective; with [`crate::RANK_TIMEOUT_VARIABLE`] set, a
//! watchdog thread ends the job (`MPI_Abort`) once one wait lasts longer, naming the wait.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use mpi::datatype::PartitionMut;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::Count;

use crate::{Error, Result, Transport};

/// The largest piece of a point-to-point message (MPI counts are `i32`).
const SEND_PIECE: usize = 1 << 30;

/// The ranks of `MPI_COMM_WORLD`.
pub struct Mpi {
    // The communicator is dropped before the universe, which finalises MPI.
    world: SimpleCommunicator,
    _universe: Universe,
    thread: ThreadId,
    rank: usize,
    size: usize,
    /// This rank's index among the ranks of its node, by MPI.
    local_rank: usize,
    /// Bounds each wait when [`crate::RANK_TIMEOUT_VARIABLE`] is set.
    watchdog: Option<Watchdog>,
}

/// The wait in progress on the MPI thread: what it waits for, and since when.
type Waiting = Option<(String, Instant)>;

/// A thread that ends the job when one wait of the MPI thread lasts longer than `limit`.
struct Watchdog {
    state: Arc<(Mutex<Waiting>, Condvar)>,
}

impl Watchdog {
    /// Starts the thread watching rank `rank` of `size`.
    fn start(limit: Duration, rank: usize, size: usize) -> Result<Watchdog> {
        let state: Arc<(Mutex<Waiting>, Condvar)> = Arc::new((Mutex::new(None), Condvar::new()));
        let watched = state.clone();
        std::thread::Builder::new()
            .name(format!("finercut-rank-{rank}-watchdog"))
            .spawn(move || {
                let (lock, changed) = &*watched;
                let Ok(mut waiting) = lock.lock() else { return };
                loop {
                    let Some((what, since)) = waiting.as_ref() else {
                        match changed.wait(waiting) {
                            Ok(w) => waiting = w,
                            Err(_) => return,
                        }
                        continue;
                    };
                    let waited = since.elapsed();
                    if waited >= limit {
                        eprintln!(
                            "rank {rank} of {size}: waited {:.1} s {what} ({}={}); a rank is \
                             stuck or the bound is shorter than a legitimate wait; aborting the \
                             job",
                            waited.as_secs_f64(),
                            crate::RANK_TIMEOUT_VARIABLE,
                            limit.as_secs_f64()
                        );
                        // SAFETY: MPI is initialised and not finalised (the universe outlives
                        // every wait); MPI_Abort ends every rank and does not return. Like the
                        // panic hook, this is the one call made off the MPI thread, which is
                        // blocked in the wait.
                        unsafe {
                            mpi::ffi::MPI_Abort(mpi::ffi::RSMPI_COMM_WORLD, 124);
                        }
                        return;
                    }
                    match changed.wait_timeout(waiting, limit - waited) {
                        Ok((w, _)) => waiting = w,
                        Err(_) => return,
                    }
                }
            })
            .map_err(|e| Error::Setup(format!("rank {rank}: cannot start the watchdog: {e}")))?;
        Ok(Watchdog { state })
    }

    /// Runs `f`, a wait described by `what`, under the watchdog.
    fn watch<T>(&self, what: impl FnOnce() -> String, f: impl FnOnce() -> T) -> T {
        let (lock, changed) = &*self.state;
        if let Ok(mut w) = lock.lock() {
            *w = Some((what(), Instant::now()));
            changed.notify_all();
        }
        let out = f();
        if let Ok(mut w) = lock.lock() {
            *w = None;
            changed.notify_all();
        }
        out
    }
}

impl Mpi {
    /// Initialises MPI on the calling thread (the only thread that may then use the transport).
    pub fn init() -> Result<Mpi> {
        let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Funneled)
            .ok_or_else(|| Error::Setup("MPI is already initialised".into()))?;
        let world = universe.world();
        let (rank, size) = (world.rank(), world.size());
        // The ranks that share memory with this one (its node), ordered by world rank: this
        // rank's index among them is its local rank under any launcher.
        let local_rank = world.split_shared(rank).rank();
        let (r, n) = (
            usize::try_from(rank).unwrap_or(0),
            usize::try_from(size).unwrap_or(1).max(1),
        );
        let watchdog = match crate::rank_timeout_from(|v| std::env::var(v).ok()) {
            Ok(Some(limit)) => Some(Watchdog::start(limit, r, n)?),
            Ok(None) => None,
            // Every rank reads the same variable, so every rank fails alike.
            Err(e) => return Err(e),
        };
        // A panic on any thread ends the job at once: unwinding would finalise MPI on this rank
        // while the others wait in a collective.
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            eprintln!("rank {rank} of {size}: panicked; aborting the job");
            // SAFETY: MPI is initialised (and not finalised: the job ends here); MPI_Abort takes
            // the world communicator and an exit code and does not return.
            unsafe {
                mpi::ffi::MPI_Abort(mpi::ffi::RSMPI_COMM_WORLD, 101);
            }
        }));
        Ok(Mpi {
            world,
            _universe: universe,
            thread: std::thread::current().id(),
            rank: r,
            size: n,
            local_rank: usize::try_from(local_rank).unwrap_or(0),
            watchdog,
        })
    }

    /// Runs the blocking MPI call `f` (a wait described by `what`) under the watchdog, if any.
    fn waiting<T>(&self, what: impl FnOnce() -> String, f: impl FnOnce() -> T) -> T {
        match &self.watchdog {
            Some(w) => w.watch(what, f),
            None => f(),
        }
    }

    fn check_thread(&self) -> Result<()> {
        if std::thread::current().id() != self.thread {
            return Err(Error::Setup(format!(
                "rank {}: MPI called from a thread other than the one that initialised it",
                self.rank
            )));
        }
        Ok(())
    }

    fn peer(&self, rank: usize) -> Result<mpi::topology::Process<'_>> {
        i32::try_from(rank)
            .ok()
            .filter(|_| rank < self.size && rank != self.rank)
            .map(|r| self.world.process_at_rank(r))
            .ok_or(Error::Peer {
                rank: self.rank,
                peer: rank,
            })
    }

    fn count(&self, len: usize) -> Result<Count> {
        Count::try_from(len).map_err(|_| Error::TooLarge {
            rank: self.rank,
            len,
            max: Count::MAX as usize,
        })
    }
}

impl Transport for Mpi {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn all_gather_bytes(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        self.check_thread()?;
        let my_count = self.count(mine.len())?;
        let mut counts: Vec<Count> = vec![0; self.size];
        self.waiting(
            || "in an all-gather of every rank".into(),
            || self.world.all_gather_into(&my_count, &mut counts[..]),
        );
        let mut displs: Vec<Count> = Vec::with_capacity(self.size);
        let mut total = 0usize;
        for &c in &counts {
            displs.push(self.count(total)?);
            total += usize::try_from(c).unwrap_or(0);
        }
        self.count(total)?;
        if total == 0 {
            // Every rank sent nothing (see `broadcast_bytes`).
            return Ok(vec![Vec::new(); self.size]);
        }
        let mut buf = vec![0u8; total];
        {
            let mut partition = PartitionMut::new(&mut buf[..], &counts[..], &displs[..]);
            self.waiting(
                || format!("in an all-gather of {total} bytes from every rank"),
                || self.world.all_gather_varcount_into(mine, &mut partition),
            );
        }
        let mut out = Vec::with_capacity(self.size);
        let mut at = 0usize;
        for &c in &counts {
            let c = usize::try_from(c).unwrap_or(0);
            out.push(buf[at..at + c].to_vec());
            at += c;
        }
        Ok(out)
    }

    fn local_rank(&self) -> Result<Option<usize>> {
        let variable = crate::local_rank_variable(|v| std::env::var(v).ok());
        crate::agreed_local_rank(self.rank, self.local_rank, variable).map(Some)
    }

    fn broadcast_bytes(&self, root: usize, data: &[u8]) -> Result<Vec<u8>> {
        self.check_thread()?;
        let root_rank = i32::try_from(root)
            .ok()
            .filter(|&r| (r as usize) < self.size)
            .ok_or_else(|| Error::Setup(format!("broadcast from rank {root} of {}", self.size)))?;
        let process = self.world.process_at_rank(root_rank);
        let mut len = if self.rank == root {
            data.len() as u64
        } else {
            0
        };
        self.waiting(
            || format!("in a broadcast from rank {root}"),
            || process.broadcast_into(&mut len),
        );
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        self.count(len)?;
        if len == 0 {
            // Every rank knows there is nothing to send: an empty buffer's dangling pointer is
            // an invalid argument to Open MPI's broadcast.
            return Ok(Vec::new());
        }
        let mut buf = if self.rank == root {
            data.to_vec()
        } else {
            vec![0u8; len]
        };
        self.waiting(
            || format!("in a broadcast of {len} bytes from rank {root}"),
            || process.broadcast_into(&mut buf[..]),
        );
        Ok(buf)
    }

    fn send_bytes(&self, to: usize, data: &[u8]) -> Result<()> {
        self.check_thread()?;
        let peer = self.peer(to)?;
        // The length first, then the bytes in pieces the counts can carry.
        self.waiting(
            || format!("sending {} bytes to rank {to}", data.len()),
            || {
                peer.send(&(data.len() as u64));
                for piece in data.chunks(SEND_PIECE) {
                    peer.send(piece);
                }
            },
        );
        Ok(())
    }

    fn recv_bytes(&self, from: usize) -> Result<Vec<u8>> {
        self.check_thread()?;
        let peer = self.peer(from)?;
        let (len, _) = self.waiting(
            || format!("for a message from rank {from}"),
            || peer.receive::<u64>(),
        );
        let len = usize::try_from(len).map_err(|_| Error::TooLarge {
            rank: from,
            len: usize::MAX,
            max: usize::MAX,
        })?;
        let mut buf = vec![0u8; len];
        self.waiting(
            || format!("receiving {len} bytes from rank {from}"),
            || {
                for piece in buf.chunks_mut(SEND_PIECE) {
                    peer.receive_into(piece);
                }
            },
        );
        Ok(buf)
    }

    fn abort(&self, message: &str) {
        eprintln!("rank {} of {}: {message}", self.rank, self.size);
        self.world.abort(1)
    }
}
