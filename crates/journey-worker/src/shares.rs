//! Several instances: the shares of the work this process runs, started and
//! stopped as the share group assigns and revokes them.
//!
//! A share (see `topology`) is the unit of state: its partitions, its
//! changelog partition and commit lineage, its transactional id and its
//! directory `<state.dir>/share-<n>`. Each share this process holds runs the
//! processing loop on its own thread. A revoked share commits its open
//! transaction and stops before the group hands it on; its directory is then
//! removed (the next owner restores the state from the changelog). A share
//! that fails stops the process, like the single-instance loop.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use journey_kafka::{Membership, ShareOwner};
use tracing::{error, info, warn};

use crate::config::Config;
use crate::metrics::{Health, Metrics};
use crate::run;

/// The directory of share `share` under the worker's state directory.
pub fn share_dir(dir: &Path, share: i32) -> PathBuf {
    dir.join(format!("share-{share}"))
}

/// The share directories found under a worker's state directory.
pub fn share_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("share-"))
                && p.join("CURRENT").exists()
        })
        .collect();
    found.sort();
    found
}

struct Running {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<()>>,
}

/// The shares this process runs.
struct Shares {
    cfg: Config,
    metrics: Metrics,
    running: Mutex<BTreeMap<i32, Running>>,
    /// The first failure of a share (the process stops on it).
    failed: Mutex<Option<anyhow::Error>>,
    /// The group has given this member its first assignment.
    joined: AtomicBool,
}

impl Shares {
    fn running(&self) -> MutexGuard<'_, BTreeMap<i32, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fail(&self, e: anyhow::Error) {
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        if failed.is_none() {
            *failed = Some(e);
        }
    }

    fn start(&self, share: i32) -> Result<Running> {
        let mut cfg = self.cfg.clone();
        cfg.state.dir = share_dir(&self.cfg.state.dir, share);
        let stop = Arc::new(AtomicBool::new(false));
        let (metrics, flag) = (self.metrics.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name(format!("share-{share}"))
            .spawn(move || run::run(cfg, share as u32, metrics, flag))
            .context("cannot start a share's thread")?;
        info!(share, "share started");
        Ok(Running { stop, thread })
    }

    /// Stops a share and waits for it; a failure is recorded.
    fn stop(&self, share: i32, r: Running) {
        r.stop.store(true, Ordering::Relaxed);
        match r.thread.join() {
            Ok(Ok(())) => info!(share, "share stopped"),
            Ok(Err(e)) => self.fail(e.context(format!("share {share} failed"))),
            Err(_) => self.fail(anyhow!("share {share} panicked")),
        }
    }

    /// Stops every share (the process is stopping).
    fn stop_all(&self) {
        let all = std::mem::take(&mut *self.running());
        for (share, r) in all {
            self.stop(share, r);
        }
    }

    /// A share whose loop ended by itself has failed: take it out.
    fn reap(&self) {
        let ended: Vec<(i32, Running)> = {
            let mut running = self.running();
            let done: Vec<i32> = running
                .iter()
                .filter(|(_, r)| r.thread.is_finished())
                .map(|(s, _)| *s)
                .collect();
            done.into_iter()
                .filter_map(|s| running.remove(&s).map(|r| (s, r)))
                .collect()
        };
        for (share, r) in ended {
            self.stop(share, r);
            self.fail(anyhow!("share {share} stopped by itself"));
        }
    }
}

impl ShareOwner for Shares {
    fn assigned(&self, shares: Vec<i32>) {
        if !self.joined.swap(true, Ordering::Relaxed) {
            // The first assignment is complete: directories of other shares
            // are left from shares this process ran before it stopped and
            // that have moved on since. Only the current owner keeps a copy.
            for dir in share_dirs(&self.cfg.state.dir) {
                if shares
                    .iter()
                    .any(|&s| share_dir(&self.cfg.state.dir, s) == dir)
                {
                    continue;
                }
                match std::fs::remove_dir_all(&dir) {
                    Ok(()) => {
                        info!(dir = %dir.display(), "removed the directory of a share held elsewhere now")
                    }
                    Err(e) => {
                        warn!(dir = %dir.display(), error = %e, "cannot remove a stale share directory")
                    }
                }
            }
        }
        let mut running = self.running();
        for share in shares {
            if running.contains_key(&share) {
                continue;
            }
            match self.start(share) {
                Ok(r) => {
                    running.insert(share, r);
                }
                Err(e) => self.fail(e),
            }
        }
    }

    fn revoked(&self, shares: Vec<i32>) {
        for share in shares {
            let Some(r) = self.running().remove(&share) else {
                continue;
            };
            self.stop(share, r);
            // The next owner restores from the changelog; a directory left
            // here would only go stale.
            let dir = share_dir(&self.cfg.state.dir, share);
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => info!(share, dir = %dir.display(), "share released"),
                Err(e) => {
                    warn!(share, dir = %dir.display(), error = %e, "cannot remove a released share's directory")
                }
            }
        }
    }
}

/// Runs the shares the group gives this process until `stop` is set or one
/// of them fails. Blocking: call it from a dedicated thread.
pub fn run_shares(cfg: Config, metrics: Metrics, stop: Arc<AtomicBool>) -> Result<()> {
    std::fs::create_dir_all(&cfg.state.dir)
        .with_context(|| format!("cannot create {}", cfg.state.dir.display()))?;
    let group = format!("{}-shares", cfg.kafka.application_id);
    let shares = Arc::new(Shares {
        cfg: cfg.clone(),
        metrics: metrics.clone(),
        running: Mutex::new(BTreeMap::new()),
        failed: Mutex::new(None),
        joined: AtomicBool::new(false),
    });
    let member = Membership::join(
        &cfg.client(),
        &group,
        &cfg.topics.shares,
        cfg.group_instance_id().as_deref(),
        shares.clone(),
    )
    .context("cannot join the share group")?;
    info!(group = %group, topic = %cfg.topics.shares, shares = cfg.processing.instances, "joining the share group");
    let result = loop {
        if stop.load(Ordering::Relaxed) {
            break Ok(());
        }
        metrics.health.beat(Health::MANAGER);
        if let Err(e) = member.poll(Duration::from_millis(100)) {
            break Err(anyhow::Error::from(e).context("share group failed"));
        }
        shares.reap();
        if let Some(e) = shares
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            break Err(e);
        }
        if shares.joined.load(Ordering::Relaxed) && !metrics.health.ready.load(Ordering::Relaxed) {
            metrics.health.ready.store(true, Ordering::Relaxed);
            info!(shares = ?member.shares().unwrap_or_default(), "share group joined: ready");
        }
        metrics.ready.set(i64::from(metrics.health.is_ready()));
        metrics.rebalances.set(member.rebalances() as i64);
    };
    if let Err(e) = &result {
        error!(error = %format!("{e:#}"), "stopping every share");
    }
    // Each share commits its open transaction; the member then closes
    // (a static member keeps its shares for its session timeout).
    shares.stop_all();
    drop(member);
    if let Some(e) = shares
        .failed
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    {
        return result.and(Err(e));
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_directories_are_found_by_name_and_store_marker() {
        let root = std::env::temp_dir().join(format!("journey-shares-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (name, store) in [
            ("share-1", true),
            ("share-0", true),
            ("share-2", false),
            ("other", true),
        ] {
            std::fs::create_dir_all(root.join(name)).unwrap();
            if store {
                std::fs::write(root.join(name).join("CURRENT"), "MANIFEST-000001\n").unwrap();
            }
        }
        assert_eq!(
            share_dirs(&root),
            vec![share_dir(&root, 0), share_dir(&root, 1)]
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
