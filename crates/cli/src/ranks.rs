//! `finercut ranks`: where each rank of an MPI launch runs and which CUDA card it takes.

use anyhow::Context;
use finercut_dist::Transport;

use crate::common;

pub fn main() -> anyhow::Result<()> {
    common::on_ranks(placements)
}

/// Each rank's line, gathered to every rank; rank 0 prints them in rank order.
fn placements(dist: &dyn Transport) -> anyhow::Result<()> {
    let node = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "an unnamed node".into());
    let local = dist.local_rank()?;
    // Without a launcher plain `cuda` is card 0.
    let card = match finercut_tensor::local_rank_card(local.unwrap_or(0)) {
        Ok(c) => format!("cuda:{c}"),
        Err(e) => format!("no card ({e})"),
    };
    let line = match local {
        Some(local) => format!(
            "rank {} of {} on {node}: local rank {local}, --device cuda is {card}",
            dist.rank(),
            dist.size()
        ),
        None => format!("one process on {node}: --device cuda is {card}"),
    };
    let lines = dist.all_gather_bytes(line.as_bytes())?;
    if dist.rank() == 0 {
        for (rank, l) in lines.iter().enumerate() {
            let l = String::from_utf8(l.clone())
                .with_context(|| format!("rank {rank} sent a line that is not UTF-8"))?;
            println!("{l}");
        }
    }
    Ok(())
}
