//! One writer per bundle folder: `.lock` holds the writing process's id and start time, so a
//! second writer is refused while the first runs, and a lock left by a process that died is
//! told apart (the process is gone, or the id now belongs to another process) and replaced.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::io::{file_err, read_json};
use crate::error::{AnalysisError, Result};

/// The lock file's name inside a bundle folder.
pub const LOCK_FILE: &str = ".lock";

/// Who holds a lock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockHolder {
    pub pid: u32,
    /// The process's start time in clock ticks since boot (`/proc/PID/stat`, field 22), which
    /// tells a reused process id from the holder.
    pub start_ticks: u64,
    /// Seconds since the Unix epoch when the lock was taken.
    pub since_unix: u64,
}

impl LockHolder {
    fn current() -> Self {
        let pid = std::process::id();
        Self {
            pid,
            start_ticks: start_ticks(pid).unwrap_or(0),
            since_unix: super::now_unix(),
        }
    }

    /// True while the holding process still runs.
    fn alive(&self) -> bool {
        match start_ticks(self.pid) {
            Some(t) => self.start_ticks == 0 || t == self.start_ticks,
            None => false,
        }
    }
}

/// The start time of process `pid` in clock ticks since boot, if it runs (Linux).
fn start_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// A held lock on a bundle folder, released when dropped.
#[derive(Debug)]
pub struct OutputLock {
    path: PathBuf,
}

impl OutputLock {
    /// Takes the lock of `dir` (which must exist): refused while another live process holds it;
    /// a stale lock (its process is gone) is replaced.
    pub fn acquire(dir: &Path) -> Result<Self> {
        let path = dir.join(LOCK_FILE);
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(f) => {
                    serde_json::to_writer(f, &LockHolder::current())
                        .map_err(|e| file_err(&path, e))?;
                    return Ok(Self { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    // Written by a process that died between creating and filling it: stale.
                    let holder: Option<LockHolder> = read_json(&path).ok();
                    if let Some(h) = holder.filter(LockHolder::alive) {
                        return Err(AnalysisError::Input(format!(
                            "{}: another attnscope (pid {}) is writing this run since {} s after \
                             the epoch; wait for it to finish, or stop it first",
                            dir.display(),
                            h.pid,
                            h.since_unix
                        )));
                    }
                    std::fs::remove_file(&path).map_err(|e| file_err(&path, e))?;
                }
                Err(e) => return Err(file_err(&path, e)),
            }
        }
        Err(file_err(
            &path,
            "could not take the lock: another writer took it at the same time",
        ))
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
