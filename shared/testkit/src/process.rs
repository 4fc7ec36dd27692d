//! Child processes for test servers: output to a log file, killed on drop, and killed by the
//! kernel if the test process dies first (parent-death signal).

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A child process that is killed when dropped.
#[derive(Debug)]
pub struct Guarded(pub Child);

impl Guarded {
    /// Kills the process and reaps it.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// Sends `signal` to the process.
    fn signal(&self, signal: i32) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            // SAFETY: kill(2) on our own child's pid has no memory-safety implications.
            unsafe {
                libc::kill(pid, signal);
            }
        }
    }

    /// Sends SIGTERM and waits up to `grace` for the process to exit; its exit status, or an
    /// error of kind `TimedOut` when it was still running (it is killed on drop).
    pub fn terminate(
        &mut self,
        grace: std::time::Duration,
    ) -> std::io::Result<std::process::ExitStatus> {
        self.signal(libc::SIGTERM);
        self.wait_for(grace)
    }

    /// Waits up to `timeout` for the process to exit; its exit status, or an error of kind
    /// `TimedOut` when it is still running (it is killed on drop).
    pub fn wait_for(
        &mut self,
        timeout: std::time::Duration,
    ) -> std::io::Result<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.0.try_wait()? {
                return Ok(status);
            }
            if std::time::Instant::now() >= deadline {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("still running after {timeout:?}"),
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Sends `signal` and waits up to `grace` for the process to exit (then [`Guarded::kill`]
    /// does the rest, on drop).
    pub fn stop_with(&mut self, signal: i32, grace: std::time::Duration) {
        if !matches!(self.0.try_wait(), Ok(None)) {
            return;
        }
        self.signal(signal);
        let _ = self.wait_for(grace);
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Spawns `cmd` with stdout and stderr appended to `log`, as user `run_as` (uid, gid) when
/// given, with SIGKILL as its parent-death signal.
pub fn spawn(cmd: Command, log: &Path, run_as: Option<(u32, u32)>) -> std::io::Result<Guarded> {
    spawn_with_death_signal(cmd, log, run_as, libc::SIGKILL)
}

/// [`spawn`] with `death_signal` sent to the child when this process dies (PostgreSQL takes
/// SIGQUIT, so its postmaster still removes its System V shared memory segment, which SIGKILL
/// would leave behind until the machine runs out of segment ids).
pub fn spawn_with_death_signal(
    mut cmd: Command,
    log: &Path,
    run_as: Option<(u32, u32)>,
    death_signal: i32,
) -> std::io::Result<Guarded> {
    let out = File::options().create(true).append(true).open(log)?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone()?))
        .stderr(Stdio::from(out));
    use std::os::unix::process::CommandExt;
    // SAFETY: only async-signal-safe calls (setgroups, setgid, setuid, prctl) run between fork
    // and exec.
    unsafe {
        cmd.pre_exec(move || {
            if let Some((uid, gid)) = run_as
                && (libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0)
            {
                return Err(std::io::Error::last_os_error());
            }
            // Set after changing ids: a credential change clears it.
            if libc::prctl(libc::PR_SET_PDEATHSIG, death_signal) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().map(Guarded)
}
