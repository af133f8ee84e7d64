//! [`Local`]: a group of ranks inside one process, one thread per rank, for tests and for running
//! the distributed code paths without MPI.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::{Error, Result, Transport};

/// One rank of an in-process group made by [`Local::group`]. Each rank is used from its own
/// thread; a collective returns once every rank of the group has entered it, or fails as soon as
/// any rank aborts.
pub struct Local {
    rank: usize,
    shared: Arc<Shared>,
}

struct Shared {
    size: usize,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// Collectives completed so far.
    generation: u64,
    /// Buffers deposited for the collective in progress.
    slots: Vec<Option<Vec<u8>>>,
    arrived: usize,
    /// The buffers of the last completed collective (kept until every rank has entered the next
    /// one, which implies every rank has read them).
    last: Arc<Vec<Vec<u8>>>,
    /// The first abort: `(rank, message)`.
    aborted: Option<(usize, String)>,
    /// Point-to-point messages not yet received, by `(from, to)`, oldest first.
    mail: std::collections::BTreeMap<(usize, usize), std::collections::VecDeque<Vec<u8>>>,
}

impl Local {
    /// `size` ranks (at least 1) that talk to each other; hand one to each thread.
    pub fn group(size: usize) -> Vec<Local> {
        let size = size.max(1);
        let shared = Arc::new(Shared {
            size,
            state: Mutex::new(State {
                slots: vec![None; size],
                ..State::default()
            }),
            changed: Condvar::new(),
        });
        (0..size)
            .map(|rank| Local {
                rank,
                shared: shared.clone(),
            })
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A rank that panicked while holding the lock leaves a consistent state (every update is a
        // single assignment), so a poisoned lock is used as is.
        self.shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Transport for Local {
    fn rank(&self) -> usize {
        self.rank
    }

    /// The rank itself: the ranks of a group share one process, hence one node.
    fn local_rank(&self) -> Result<Option<usize>> {
        Ok(Some(self.rank))
    }

    fn size(&self) -> usize {
        self.shared.size
    }

    fn all_gather_bytes(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        let mut st = self.lock();
        if let Some((rank, message)) = &st.aborted {
            return Err(Error::Aborted {
                rank: *rank,
                message: message.clone(),
            });
        }
        let generation = st.generation;
        st.slots[self.rank] = Some(mine.to_vec());
        st.arrived += 1;
        if st.arrived == self.shared.size {
            let all: Vec<Vec<u8>> = st
                .slots
                .iter_mut()
                .map(|s| s.take().unwrap_or_default())
                .collect();
            st.last = Arc::new(all);
            st.arrived = 0;
            st.generation += 1;
            self.shared.changed.notify_all();
            return Ok(st.last.as_ref().clone());
        }
        loop {
            st = self
                .shared
                .changed
                .wait(st)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if st.generation != generation {
                return Ok(st.last.as_ref().clone());
            }
            if let Some((rank, message)) = &st.aborted {
                return Err(Error::Aborted {
                    rank: *rank,
                    message: message.clone(),
                });
            }
        }
    }

    fn broadcast_bytes(&self, root: usize, data: &[u8]) -> Result<Vec<u8>> {
        let mine = if self.rank == root { data } else { &[] };
        let mut all = self.all_gather_bytes(mine)?;
        if root >= all.len() {
            return Err(Error::Setup(format!(
                "broadcast from rank {root} in a group of {}",
                all.len()
            )));
        }
        Ok(all.swap_remove(root))
    }

    fn send_bytes(&self, to: usize, data: &[u8]) -> Result<()> {
        if to >= self.shared.size || to == self.rank {
            return Err(Error::Peer {
                rank: self.rank,
                peer: to,
            });
        }
        let mut st = self.lock();
        if let Some((rank, message)) = &st.aborted {
            return Err(Error::Aborted {
                rank: *rank,
                message: message.clone(),
            });
        }
        st.mail
            .entry((self.rank, to))
            .or_default()
            .push_back(data.to_vec());
        self.shared.changed.notify_all();
        Ok(())
    }

    fn recv_bytes(&self, from: usize) -> Result<Vec<u8>> {
        if from >= self.shared.size || from == self.rank {
            return Err(Error::Peer {
                rank: self.rank,
                peer: from,
            });
        }
        let mut st = self.lock();
        loop {
            if let Some((rank, message)) = &st.aborted {
                return Err(Error::Aborted {
                    rank: *rank,
                    message: message.clone(),
                });
            }
            if let Some(m) = st
                .mail
                .get_mut(&(from, self.rank))
                .and_then(std::collections::VecDeque::pop_front)
            {
                return Ok(m);
            }
            st = self
                .shared
                .changed
                .wait(st)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    fn abort(&self, message: &str) {
        let mut st = self.lock();
        if st.aborted.is_none() {
            st.aborted = Some((self.rank, message.to_owned()));
        }
        self.shared.changed.notify_all();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn all_gather_and_broadcast_over_threads() {
        let group = Local::group(4);
        type Seen = (Vec<Vec<u8>>, Vec<u8>, Vec<Vec<f64>>);
        let out: Vec<Seen> = std::thread::scope(|s| {
            let handles: Vec<_> = group
                .iter()
                .map(|t| {
                    s.spawn(move || {
                        let r = t.rank();
                        let mut last = None;
                        // Many rounds with buffers of different lengths: no round sees another's.
                        for round in 0..50u8 {
                            let mine = vec![round; r + round as usize % 3];
                            let all = t.all_gather_bytes(&mine).unwrap();
                            for (q, b) in all.iter().enumerate() {
                                assert_eq!(b, &vec![round; q + round as usize % 3]);
                            }
                            last = Some(all);
                        }
                        let b = t.broadcast_bytes(2, &[r as u8; 3]).unwrap();
                        let f = t.all_gather_f64(&[r as f64, -0.0]).unwrap();
                        (last.unwrap(), b, f)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (all, b, f) in &out {
            assert_eq!(all.len(), 4);
            assert_eq!(b, &vec![2u8; 3]);
            assert_eq!(f[3][0], 3.0);
            assert!(f[1][1].is_sign_negative());
        }
    }

    #[test]
    fn messages_pass_down_a_chain_of_ranks_in_order() {
        let group = Local::group(3);
        let got: Vec<Vec<Vec<u8>>> = std::thread::scope(|s| {
            let hs: Vec<_> = group
                .iter()
                .map(|t| {
                    s.spawn(move || {
                        let mut seen = Vec::new();
                        for k in 0..20u8 {
                            let mut m = if t.rank() == 0 {
                                vec![k]
                            } else {
                                t.recv_bytes(t.rank() - 1).unwrap()
                            };
                            m.push(t.rank() as u8);
                            if t.rank() < 2 {
                                t.send_bytes(t.rank() + 1, &m).unwrap();
                            }
                            seen.push(m);
                        }
                        seen
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (k, m) in got[2].iter().enumerate() {
            assert_eq!(m, &vec![k as u8, 0, 1, 2]);
        }
        assert!(matches!(
            group[1].send_bytes(1, &[]),
            Err(Error::Peer { rank: 1, peer: 1 })
        ));
        assert!(matches!(
            group[0].recv_bytes(3),
            Err(Error::Peer { rank: 0, peer: 3 })
        ));
    }

    #[test]
    fn an_abort_ends_a_pending_receive() {
        let group = Local::group(2);
        let r: Result<Vec<u8>> = std::thread::scope(|s| {
            let waiting = s.spawn(|| group[1].recv_bytes(0));
            group[0].abort("disk full");
            waiting.join().unwrap()
        });
        assert!(matches!(r, Err(Error::Aborted { rank: 0, .. })));
    }

    #[test]
    fn an_abort_ends_every_pending_and_later_collective() {
        let group = Local::group(3);
        let results: Vec<Result<Vec<Vec<u8>>>> = std::thread::scope(|s| {
            let handles: Vec<_> = group
                .iter()
                .map(|t| {
                    s.spawn(move || {
                        if t.rank() == 1 {
                            t.abort("out of memory");
                            return Err(Error::Setup("aborted".into()));
                        }
                        // Ranks 0 and 2 wait for rank 1, which never comes.
                        t.all_gather_bytes(&[1])
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for r in [&results[0], &results[2]] {
            match r {
                Err(Error::Aborted { rank: 1, message }) => assert_eq!(message, "out of memory"),
                other => panic!("expected an abort from rank 1, got {other:?}"),
            }
        }
        assert!(matches!(
            group[0].all_gather_bytes(&[]),
            Err(Error::Aborted { rank: 1, .. })
        ));
    }
}
