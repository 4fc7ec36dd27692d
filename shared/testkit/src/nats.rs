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
    /// The monitoring port, when started with one (0 otherwise).
    monitor_port: u16,
    monitored: bool,
    /// JetStream's `sync_interval: always`.
    sync_always: bool,
    /// More server configuration (an `authorization` block), kept across restarts.
    extra_config: Option<String>,
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
        Self::start_with_monitoring(false).await
    }

    /// Starts a server that also serves its monitoring endpoints, on a random port of their
    /// own ([`Self::monitor_url`]). Only the benchmark needs them: every port a test server
    /// binds at random is one a cluster test may have picked for a node a moment before.
    pub async fn start_monitored() -> Result<Self, KitError> {
        Self::start_with_monitoring(true).await
    }

    /// Starts a server whose `max_payload` (the largest message it takes, headers included)
    /// is `bytes` instead of 1 MiB: messages over it are refused, whatever is retried.
    pub async fn start_with_max_payload(bytes: usize) -> Result<Self, KitError> {
        Self::start_with_config(max_payload(bytes)).await
    }

    /// Starts a server whose configuration also has `config` (NATS configuration syntax, such
    /// as the `authorization` block `patchbay nats-auth` writes).
    pub async fn start_with_config(config: String) -> Result<Self, KitError> {
        Self::launch_new(false, Some(config)).await
    }

    /// [`Self::start_monitored`] with JetStream's `sync_interval: always`: every write to a
    /// stream is flushed to disk before it is acknowledged (the Kubernetes values' setting),
    /// where the default flushes every two minutes.
    pub async fn start_monitored_sync_always() -> Result<Self, KitError> {
        let mut server = Self::new_unlaunched(true, None)?;
        server.sync_always = true;
        server.launch(None).await?;
        Ok(server)
    }

    async fn start_with_monitoring(monitored: bool) -> Result<Self, KitError> {
        Self::launch_new(monitored, None).await
    }

    fn new_unlaunched(monitored: bool, extra_config: Option<String>) -> Result<Self, KitError> {
        Ok(Self {
            child: None,
            port: 0,
            monitor_port: 0,
            monitored,
            sync_always: false,
            extra_config,
            dir: tempfile::Builder::new().prefix("pb-nats-").tempdir()?,
            binary: binary()?,
        })
    }

    async fn launch_new(monitored: bool, extra_config: Option<String>) -> Result<Self, KitError> {
        let mut server = Self::new_unlaunched(monitored, extra_config)?;
        server.launch(None).await?;
        Ok(server)
    }

    async fn launch(&mut self, port: Option<u16>) -> Result<(), KitError> {
        let ports_dir = self.dir.path().join("ports");
        let _ = std::fs::remove_dir_all(&ports_dir);
        std::fs::create_dir_all(&ports_dir)?;
        let mut cmd = Command::new(&self.binary);
        cmd.arg("-c")
            .arg(limits_file(
                self.dir.path(),
                self.sync_always,
                self.extra_config.as_deref(),
            )?)
            .args(["-a", "127.0.0.1", "-p"])
            .arg(port.map_or("-1".to_owned(), |p| p.to_string()));
        if self.monitored {
            cmd.args(["-m", "-1"]);
        }
        cmd.args(["-js", "-sd"])
            .arg(self.dir.path().join("store"))
            .arg("--ports_file_dir")
            .arg(&ports_dir);
        let child = spawn(cmd, &self.dir.path().join("nats.log"), None)?;
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Some((p, m)) = read_ports(&ports_dir)
                && (!self.monitored || m != 0)
                && tokio::net::TcpStream::connect(("127.0.0.1", p))
                    .await
                    .is_ok()
            {
                self.port = p;
                self.monitor_port = m;
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

    /// `http://127.0.0.1:<port>` of the monitoring endpoints (`/varz`, `/connz`, `/jsz`) of a
    /// server started with [`Self::start_monitored`].
    pub fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.monitor_port)
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

/// A configuration file that lifts JetStream's file storage limit, which otherwise follows
/// the disk's free space: every stack reserves its streams' caps (1 GiB each by default), and
/// the parallel tests' servers must not fail on a machine with less free disk than that sum.
/// What the tests store is a few megabytes. With `sync_always`, every write is flushed before
/// it is acknowledged. `extra` follows.
fn limits_file(dir: &Path, sync_always: bool, extra: Option<&str>) -> Result<PathBuf, KitError> {
    let path = dir.join("limits.conf");
    let sync = if sync_always {
        "  sync_interval: always\n"
    } else {
        ""
    };
    std::fs::write(
        &path,
        format!(
            "jetstream {{\n  max_file_store: 1T\n{sync}}}\n{}\n",
            extra.unwrap_or_default()
        ),
    )?;
    Ok(path)
}

/// The client and monitoring ports the server wrote to its ports file.
fn read_ports(dir: &Path) -> Option<(u16, u16)> {
    let entry = std::fs::read_dir(dir).ok()?.flatten().next()?;
    let text = std::fs::read_to_string(entry.path()).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let port = |key: &str| -> Option<u16> {
        let url = v[key].as_array()?.first()?.as_str()?;
        url.rsplit(':').next()?.parse().ok()
    };
    Some((port("nats")?, port("monitoring").unwrap_or(0)))
}

/// The configuration line of a server's `max_payload`.
pub fn max_payload(bytes: usize) -> String {
    format!("max_payload: {bytes}")
}

/// A JetStream cluster of real `nats-server` processes on loopback, joined by routes.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<ClusterNode>,
    _dir: tempfile::TempDir,
    binary: PathBuf,
    /// More server configuration for every node (an `authorization` block).
    extra_config: Option<String>,
}

#[derive(Debug)]
struct ClusterNode {
    child: Option<Guarded>,
    name: String,
    port: u16,
    cluster_port: u16,
    monitor_port: u16,
    dir: PathBuf,
}

fn free_port() -> Result<u16, KitError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl NatsCluster {
    /// Starts `size` nodes and waits until every one reports JetStream healthy. The nodes'
    /// ports must be chosen before any of them starts (each names the others' routes), so
    /// another process may take one in between: then the whole cluster starts again on fresh
    /// ports (at most three times).
    pub async fn start(size: usize) -> Result<Self, KitError> {
        Self::start_with_config(size, None).await
    }

    /// [`NatsCluster::start`] with `config` added to every node's configuration.
    pub async fn start_with_config(size: usize, config: Option<String>) -> Result<Self, KitError> {
        let mut attempt = 1;
        loop {
            match Self::start_once(size, config.clone()).await {
                Err(KitError::Start(log))
                    if attempt < 3 && log.contains("address already in use") =>
                {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn start_once(size: usize, extra_config: Option<String>) -> Result<Self, KitError> {
        let dir = tempfile::Builder::new()
            .prefix("pb-nats-cluster-")
            .tempdir()?;
        let mut nodes = Vec::new();
        for i in 0..size {
            let node_dir = dir.path().join(format!("n{i}"));
            std::fs::create_dir_all(&node_dir)?;
            nodes.push(ClusterNode {
                child: None,
                name: format!("n{i}"),
                port: free_port()?,
                cluster_port: free_port()?,
                monitor_port: free_port()?,
                dir: node_dir,
            });
        }
        let mut cluster = Self {
            nodes,
            _dir: dir,
            binary: binary()?,
            extra_config,
        };
        for i in 0..size {
            cluster.launch(i)?;
        }
        for i in 0..size {
            if let Err(e) = cluster.wait_healthy(i).await {
                // A node whose port was taken dies at once and the others wait for it in vain:
                // every node's log goes into the error, so `start` can tell and retry.
                let all: Vec<String> = (0..size).map(|j| cluster.log(j)).collect();
                return Err(match e {
                    KitError::Start(msg) => KitError::Start(format!(
                        "{msg}\n--- every node's log ---\n{}",
                        all.join("\n")
                    )),
                    e => e,
                });
            }
        }
        Ok(cluster)
    }

    fn launch(&mut self, i: usize) -> Result<(), KitError> {
        let routes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.cluster_port))
            .collect();
        let extra = self.extra_config.clone();
        let n = &mut self.nodes[i];
        let mut cmd = Command::new(&self.binary);
        cmd.arg("-c")
            .arg(limits_file(&n.dir, false, extra.as_deref())?)
            .args(["-a", "127.0.0.1", "-p", &n.port.to_string()])
            .args(["-m", &n.monitor_port.to_string()])
            .args(["-js", "-sd"])
            .arg(n.dir.join("store"))
            .args(["-n", &n.name, "--cluster_name", "patchbay-test"])
            .args(["--cluster", &format!("nats://127.0.0.1:{}", n.cluster_port)])
            .args(["--routes", &routes.join(",")]);
        n.child = Some(spawn(cmd, &n.dir.join("nats.log"), None)?);
        Ok(())
    }

    /// Node `i`'s log so far.
    fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.nodes[i].dir.join("nats.log")).unwrap_or_default()
    }

    async fn wait_healthy(&self, i: usize) -> Result<(), KitError> {
        let port = self.nodes[i].monitor_port;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let req = "GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
                if s.write_all(req.as_bytes()).await.is_ok() {
                    let mut buf = String::new();
                    let _ = s.read_to_string(&mut buf).await;
                    if buf.starts_with("HTTP/1.0 200") || buf.starts_with("HTTP/1.1 200") {
                        return Ok(());
                    }
                }
            }
            // A fatal error (a port taken) ends a node at once: no point waiting, for it or for
            // a node that needs it for a quorum.
            let fatal = (0..self.nodes.len()).any(|j| self.log(j).contains("[FTL]"));
            if tokio::time::Instant::now() > deadline || fatal {
                return Err(KitError::Start(format!(
                    "cluster node n{i} not healthy:\n{}",
                    self.log(i)
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every node's monitoring URL (`/varz`, `/connz`, `/jsz`), `http://127.0.0.1:<port>`.
    pub fn monitor_urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("http://127.0.0.1:{}", n.monitor_port))
            .collect()
    }

    /// Every node's client URL, comma separated (what `PATCHBAY_NATS_URL` takes).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Kills node `i` (SIGKILL), keeping its store.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            c.kill();
        }
    }

    /// Starts node `i` again with its store and waits until it is healthy.
    pub async fn restart(&mut self, i: usize) -> Result<(), KitError> {
        self.kill(i);
        self.launch(i)?;
        self.wait_healthy(i).await
    }
}
