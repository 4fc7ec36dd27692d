//! A real PostgreSQL cluster in a temporary directory on a free port. As root (CI), the server
//! runs as the `postgres` user, because `initdb` refuses root.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::KitError;
use crate::process::{Guarded, spawn, spawn_with_death_signal};

/// A running PostgreSQL server. Killed (and its directory removed) on drop.
#[derive(Debug)]
pub struct PgServer {
    _child: Guarded,
    port: u16,
    _dir: tempfile::TempDir,
}

/// What to do about a known cause of `initdb` failing, from its log.
fn hint(log: &str) -> &'static str {
    if log.contains("could not create shared memory segment") {
        "\nThe machine's System V shared memory segments are used up (`ipcs -m`; the kernel \
         allows `/proc/sys/kernel/shmmni`): PostgreSQL servers killed with SIGKILL leave theirs \
         behind. Remove the ones nothing is attached to: \
         ipcs -m | awk '$6 == 0 {print $2}' | xargs -r -n1 ipcrm -m"
    } else {
        ""
    }
}

impl Drop for PgServer {
    /// An immediate shutdown (SIGQUIT) rather than SIGKILL: the postmaster still removes its
    /// System V shared memory segment, which a killed one leaves behind, and a machine that
    /// runs the tests often runs out of segment ids (`initdb`: "could not create shared
    /// memory segment: No space left on device").
    fn drop(&mut self) {
        self._child.stop_with(libc::SIGQUIT, Duration::from_secs(5));
    }
}

/// The directory with `initdb` and `postgres`: `PATCHBAY_PG_BIN`, else the newest
/// `/usr/lib/postgresql/*/bin`.
pub fn bin_dir() -> Result<PathBuf, KitError> {
    if let Some(p) = std::env::var_os("PATCHBAY_PG_BIN") {
        return Ok(PathBuf::from(p));
    }
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| KitError::Missing("PostgreSQL server binaries", "PATCHBAY_PG_BIN"))?
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, p)| p).ok_or(KitError::Missing(
        "PostgreSQL server binaries",
        "PATCHBAY_PG_BIN",
    ))
}

fn postgres_ids() -> Result<Option<(u32, u32)>, KitError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let id = |flag: &str| -> Result<u32, KitError> {
        let out = Command::new("id").args([flag, "postgres"]).output()?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| KitError::Start("running as root needs a `postgres` user".into()))
    };
    Ok(Some((id("-u")?, id("-g")?)))
}

fn free_port() -> Result<u16, KitError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl PgServer {
    /// Creates a cluster and starts it; returns once it accepts connections.
    pub async fn start() -> Result<Self, KitError> {
        Self::start_with(&[]).await
    }

    /// Like [`PgServer::start`], with more server settings (`name=value`, as `postgres -c`),
    /// e.g. `shared_preload_libraries=pg_stat_statements` for the benchmark.
    pub async fn start_with(settings: &[&str]) -> Result<Self, KitError> {
        let bin = bin_dir()?;
        let ids = postgres_ids()?;
        let dir = tempfile::Builder::new().prefix("pb-pg-").tempdir()?;
        if let Some((uid, gid)) = ids {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))?;
        }
        let data = dir.path().join("data");
        let log = dir.path().join("pg.log");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb.arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        ]);
        let status = spawn(initdb, &log, ids)?.0.wait()?;
        if !status.success() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(KitError::Start(format!(
                "initdb failed:\n{text}{}",
                hint(&text)
            )));
        }
        for _ in 0..5 {
            let port = free_port()?;
            let mut cmd = Command::new(bin.join("postgres"));
            cmd.arg("-D")
                .arg(&data)
                .args(["-p", &port.to_string(), "-k"])
                .arg(dir.path())
                .args([
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=200",
                ]);
            for setting in settings {
                cmd.args(["-c", setting]);
            }
            let mut child = spawn_with_death_signal(cmd, &log, ids, libc::SIGQUIT)?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            loop {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if text.contains("ready to accept connections") {
                    return Ok(Self {
                        _child: child,
                        port,
                        _dir: dir,
                    });
                }
                if let Ok(Some(_)) = child.0.try_wait() {
                    break; // port taken between probe and bind: try another
                }
                if tokio::time::Instant::now() > deadline {
                    return Err(KitError::Start(format!("postgres did not start:\n{text}")));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        Err(KitError::Start(format!(
            "postgres could not bind a port:\n{text}"
        )))
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_lack_of_shared_memory_segments_says_how_to_free_them() {
        let log = "FATAL:  could not create shared memory segment: No space left on device";
        assert!(super::hint(log).contains("ipcrm"));
        assert_eq!(
            super::hint("FATAL:  data directory has wrong ownership"),
            ""
        );
    }
}
