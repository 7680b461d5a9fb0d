//! A Redis server of a test's own, which the test may stop and restart empty without disturbing
//! any other test.

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;

pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

/// A free port below the kernel's ephemeral range, so that while the server is stopped no
/// outgoing connection of a test running beside it can take the port it will restart on.
fn free_port() -> anyhow::Result<u16> {
    for _ in 0..100 {
        let port = 20_000 + (uuid::Uuid::new_v4().as_u128() % 10_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("no free port in 20000-29999 for a test Redis")
}

impl RedisServer {
    /// Starts `redis-server` on a free port, with nothing kept on disk.
    pub async fn spawn() -> anyhow::Result<Self> {
        tokio::task::spawn_blocking(Self::spawn_blocking).await?
    }

    pub fn spawn_blocking() -> anyhow::Result<Self> {
        let mut server = Self {
            port: free_port()?,
            child: None,
        };
        server.start_blocking()?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn start_blocking(&mut self) -> anyhow::Result<()> {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("redis-server is not installed: apt-get install redis-server")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "redis-server did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Kills the server: everything in it is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub async fn restart_empty(&mut self) -> anyhow::Result<()> {
        self.stop();
        let port = self.port;
        let mut fresh = Self { port, child: None };
        let fresh =
            tokio::task::spawn_blocking(move || fresh.start_blocking().map(|()| fresh)).await??;
        *self = fresh;
        Ok(())
    }

    /// Starts a stopped server again, empty, on the same port.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        self.restart_empty().await
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
