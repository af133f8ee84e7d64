//! Progress bars, worker threads and memory use.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::error::{bail, invalid, Result};

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub fn progress_bar(len: u64, template: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    let style =
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style);
    pb.enable_steady_tick(Duration::from_millis(500));
    pb
}

/// Sets the worker thread count (rayon and BLAS) and returns it; `None` means all cores.
pub fn init_threads(threads: Option<usize>) -> Result<usize> {
    let n = match threads {
        Some(0) => bail!("--threads must be at least 1"),
        Some(n) => n,
        None => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
    };
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .map_err(|e| invalid!("cannot start {n} worker threads: {e}"))?;
    Ok(n)
}

/// Peak resident memory of this process in MiB (`ru_maxrss`), where the platform reports it.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
