//! What the ranks of a distributed run agree on before they start: the same model, calibration
//! data, settings and checkpoint (`docs/SCALING.md`).

use finercut_dist::Transport;

use crate::{Error, Provenance, Result, Settings};

/// What one rank describes of its run, compared across ranks by [`check_same_run`].
pub struct RunIdentity<'a> {
    /// Hashes of the model and of the calibration tokens.
    pub provenance: &'a Provenance,
    /// The run's settings (`threads` may differ between ranks).
    pub settings: &'a Settings,
    /// Steps already done (from a checkpoint being resumed; 0 for a new run).
    pub resumed_steps: usize,
    /// The model's path, for messages.
    pub model_file: &'a str,
    /// The calibration data's path or description, for messages.
    pub data_file: &'a str,
    /// The result/checkpoint file, for messages.
    pub out_file: &'a str,
}

/// Checks that every rank of `dist` runs the same search as rank 0: the same model and
/// calibration hashes, the same settings (all but `threads`) and the same number of resumed
/// steps. A collective: every rank calls it. On a mismatch every rank returns the same
/// [`Error::RankMismatch`], naming the first rank that differs, what differs and the file.
pub fn check_same_run(dist: &dyn Transport, me: &RunIdentity<'_>) -> Result<()> {
    let mut settings = me.settings.clone();
    settings.threads = 0;
    let fields = [
        me.provenance.model_sha256.clone(),
        me.provenance.data_sha256.clone(),
        serde_json::to_string(&settings).unwrap_or_default(),
        me.resumed_steps.to_string(),
        me.model_file.to_owned(),
        me.data_file.to_owned(),
        me.out_file.to_owned(),
    ];
    let mine = serde_json::to_vec(&fields).unwrap_or_default();
    let all = dist.all_gather_bytes(&mine)?;
    let decode = |rank: usize, bytes: &[u8]| -> Result<Vec<String>> {
        serde_json::from_slice::<Vec<String>>(bytes)
            .ok()
            .filter(|v| v.len() == fields.len())
            .ok_or_else(|| Error::Scorer {
                message: format!("rank {rank} sent an unreadable description of its run"),
            })
    };
    let first = decode(0, &all[0])?;
    for (rank, bytes) in all.iter().enumerate().skip(1) {
        let theirs = decode(rank, bytes)?;
        let what: [(&'static str, usize); 4] = [
            ("model SHA-256", 4),
            ("calibration SHA-256", 5),
            ("settings", 6),
            (
                "steps resumed from the checkpoint (is it on a file system every rank reads?)",
                6,
            ),
        ];
        for (k, (name, file)) in what.into_iter().enumerate() {
            if first[k] != theirs[k] {
                return Err(Error::RankMismatch {
                    rank,
                    what: name,
                    file: theirs[file].clone(),
                    rank0: first[k].clone(),
                    theirs: theirs[k].clone(),
                });
            }
        }
    }
    Ok(())
}
