//! A real `nats-server` with JetStream, on a random port with a temporary store directory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::{Guarded, spawn};
use crate::{KitError, workspace_root};

/// A running nats-server. Killed (and its store removed) on drop.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Guarded>,
    port: u16,
    dir: tempfile::TempDir,
    binary: PathBuf,
}

/// Where the nats-server binary is: `PATCHBAY_NATS_SERVER`, then `.tools/bin`, then `PATH`.
pub fn binary() -> Result<PathBuf, KitError> {
    if let Some(p) = std::env::var_os("PATCHBAY_NATS_SERVER") {
        return Ok(PathBuf::from(p));
    }
    let local = workspace_root().join(".tools/bin/nats-server");
    if local.exists() {
        return Ok(local);
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("nats-server"))
                .find(|p| p.exists())
        })
        .ok_or(KitError::Missing("nats-server", "PATCHBAY_NATS_SERVER"))
}

impl NatsServer {
    /// Starts a server on a random port and waits until JetStream is ready.
    pub async fn start() -> Result<Self, KitError> {
        let dir = tempfile::Builder::new().prefix("pb-nats-").tempdir()?;
        let mut server = Self {
            child: None,
            port: 0,
            dir,
            binary: binary()?,
        };
        server.launch(None).await?;
        Ok(server)
    }

    async fn launch(&mut self, port: Option<u16>) -> Result<(), KitError> {
        let ports_dir = self.dir.path().join("ports");
        let _ = std::fs::remove_dir_all(&ports_dir);
        std::fs::create_dir_all(&ports_dir)?;
        let mut cmd = Command::new(&self.binary);
        cmd.args(["-a", "127.0.0.1", "-p"])
            .arg(port.map_or("-1".to_owned(), |p| p.to_string()))
            .args(["-js", "-sd"])
            .arg(self.dir.path().join("store"))
            .arg("--ports_file_dir")
            .arg(&ports_dir);
        let child = spawn(cmd, &self.dir.path().join("nats.log"), None)?;
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(p) = read_port(&ports_dir)
                && tokio::net::TcpStream::connect(("127.0.0.1", p))
                    .await
                    .is_ok()
            {
                self.port = p;
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default();
                return Err(KitError::Start(format!(
                    "nats-server did not start:\n{log}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL), keeping its store.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill();
        }
    }

    /// Starts it again on the same port with the same store.
    pub async fn restart(&mut self) -> Result<(), KitError> {
        self.kill();
        self.launch(Some(self.port)).await
    }
}

fn read_port(dir: &Path) -> Option<u16> {
    let entry = std::fs::read_dir(dir).ok()?.flatten().next()?;
    let text = std::fs::read_to_string(entry.path()).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let url = v["nats"].as_array()?.first()?.as_str()?;
    url.rsplit(':').next()?.parse().ok()
}
