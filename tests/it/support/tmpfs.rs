//! A size-limited tmpfs the test mounts for a data directory, to make a disk
//! that really fills (ENOSPC from the kernel, not a simulation). Needs the
//! right to mount (root, as in CI's container); unmounted when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `megabytes` at `path`; `Err` says why it cannot.
    pub fn mount(path: &Path, megabytes: u32) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|error| error.to_string())?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|error| format!("cannot run mount: {error}"))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).trim().to_owned());
        }
        Ok(Tmpfs {
            path: path.to_owned(),
        })
    }

    /// Grows (or shrinks) the filesystem in place, files kept.
    pub fn resize(&self, megabytes: u32) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={megabytes}m")])
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(status.success(), "remount to {megabytes} MB");
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a server still holding files open must not keep it mounted.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
