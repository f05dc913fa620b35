//! Shared test helpers: a real hyper origin on 127.0.0.1 and a cached hyper-util client.
//! The helpers every crate of the workspace uses are in `tests/support/base.rs`; the Redis,
//! TLS and cluster servers below are the core's (and `hcc`'s copy).

#[path = "../support/base.rs"]
mod base;
pub use base::*;

use hyper_client_cache::{Cache, CacheLayer, Store};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
#[cfg(all(feature = "disk", feature = "redis", feature = "test-util"))]
use std::time::Duration;
use tower::ServiceBuilder;
/// A `redis-server` of the test's own, on a free 127.0.0.1 port, killed on drop.
#[cfg(all(feature = "disk", feature = "redis", feature = "test-util"))]
pub struct RedisServer {
    pub port: u16,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

#[cfg(all(feature = "disk", feature = "redis", feature = "test-util"))]
impl RedisServer {
    /// On a free port. A port found free can be taken by another test's server before ours
    /// binds it (ours then exits, and the other answers our PING): then another port is tried,
    /// so that two tests never share one server.
    pub async fn start() -> Self {
        for _ in 0..10 {
            let port = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap().port()
            };
            if let Some(server) = Self::try_start_with(port, &[]).await {
                return server;
            }
        }
        panic!("no free port for a redis-server after 10 tries");
    }

    /// Starts on `port` and waits (bounded) until it answers.
    pub async fn start_on(port: u16) -> Self {
        Self::start_with(port, &[]).await
    }

    /// Starts on `port` with more `redis-server` arguments.
    pub async fn start_with(port: u16, extra: &[&str]) -> Self {
        match Self::try_start_with(port, extra).await {
            Some(server) => server,
            None => panic!("another process's redis-server answers on port {port}"),
        }
    }

    /// `None` when the server answering on `port` is not the one started here.
    async fn try_start_with(port: u16, extra: &[&str]) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir.path())
            .args(extra)
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start `redis-server` ({e}). The redis tests need it on PATH: \
                     `apt-get install -y redis-server` (.ci/run does this)"
                )
            });
        let mut server = Self {
            port,
            child,
            _dir: dir,
        };
        for _ in 0..200 {
            if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 7];
                if s.write_all(b"PING\r\n").await.is_ok()
                    && s.read_exact(&mut buf).await.is_ok()
                    && &buf == b"+PONG\r\n"
                {
                    if answering_pid(port).await == Some(server.child.id()) {
                        return Some(server);
                    }
                    server.kill();
                    return None;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("redis-server on port {port} did not answer within 5 s");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

/// The process id of the redis-server answering on `port` (`INFO server`).
#[cfg(all(feature = "disk", feature = "redis", feature = "test-util"))]
async fn answering_pid(port: u16) -> Option<u32> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).ok()?;
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn)
        .await
        .ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(all(feature = "disk", feature = "redis", feature = "test-util"))]
impl RedisServer {
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `CLUSTER INFO` says `cluster_state:ok` (through `redis-cli`).
    pub fn cluster_ok(&self) -> bool {
        std::process::Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "cluster", "info"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`): a server that accepts connections and never
    /// answers, then answers again.
    pub fn pause(&self, stop: bool) {
        let signal = if stop { "-STOP" } else { "-CONT" };
        let ok = std::process::Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {signal} failed");
    }
}

#[cfg(all(feature = "disk", feature = "redis", feature = "test-util"))]
impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A directory with a throwaway CA (`ca.crt`) and a certificate for 127.0.0.1 it issued
/// (`server.crt`, `server.key`), made with the `openssl` command line.
pub fn throwaway_certificates() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let sh = |script: &str| {
        let ok = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("cannot run sh: {e}"))
            .success();
        assert!(
            ok,
            "`{script}` failed: the TLS tests need the `openssl` command (apt-get install openssl)"
        );
    };
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    sh(&format!(
        "openssl req -x509 {ec} -keyout ca.key -out ca.crt -days 2 -subj /CN=hcc-test-ca"
    ));
    sh(&format!(
        "openssl req {ec} -keyout server.key -out server.csr -subj /CN=127.0.0.1"
    ));
    sh("printf 'subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\n' > ext.cnf");
    sh("openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile ext.cnf");
    dir
}

/// A `redis-server` speaking only TLS, with a certificate for 127.0.0.1 issued by a throwaway CA
/// (made with the `openssl` command line). `ca_pem` is the CA to trust.
#[cfg(all(feature = "disk", feature = "redis-tls", feature = "test-util"))]
pub struct TlsRedisServer {
    pub port: u16,
    pub ca_pem: Vec<u8>,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

#[cfg(all(feature = "disk", feature = "redis-tls", feature = "test-util"))]
impl TlsRedisServer {
    pub fn start() -> Self {
        let dir = throwaway_certificates();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .args([
                "--tls-cert-file",
                "server.crt",
                "--tls-key-file",
                "server.key",
            ])
            .args(["--tls-ca-cert-file", "ca.crt", "--tls-auth-clients", "no"])
            .args(["--save", "", "--appendonly", "no"])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start `redis-server` ({e}): apt-get install -y redis-server")
            });
        let ca_pem = std::fs::read(dir.path().join("ca.crt")).unwrap();
        Self {
            port,
            ca_pem,
            child,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}/0", self.port)
    }
}

#[cfg(all(feature = "disk", feature = "redis-tls", feature = "test-util"))]
impl Drop for TlsRedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Like [`cached_client`], but every request opens a new connection (so that a stopped origin
/// means a refused connection, not a reused pooled one).
pub fn cached_client_unpooled<St: Store>(layer: CacheLayer<St>) -> Cache<HyperClient, St> {
    ServiceBuilder::new().layer(layer).service(
        Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build_http(),
    )
}

/// The entry files (`*.hcc`) of a `DiskStore` directory, in its shard directories.
#[cfg(all(feature = "disk", feature = "redis", feature = "test-util"))]
pub fn entry_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for shard in std::fs::read_dir(dir).unwrap().flatten() {
        if shard.path().is_dir() {
            for f in std::fs::read_dir(shard.path()).unwrap().flatten() {
                if f.path().extension().is_some_and(|e| e == "hcc") {
                    out.push(f.path());
                }
            }
        }
    }
    out
}

/// A local Redis Cluster of three primaries (no replicas), each a `redis-server` child on a
/// free 127.0.0.1 port (its cluster bus on port + 10000), killed on drop.
#[cfg(all(feature = "redis-cluster", feature = "disk", feature = "test-util"))]
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

#[cfg(all(feature = "redis-cluster", feature = "disk", feature = "test-util"))]
impl RedisCluster {
    pub async fn start() -> Self {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes
                .push(RedisServer::start_with(cluster_port(), &["--cluster-enabled", "yes"]).await);
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = std::process::Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run `redis-cli --cluster create` ({e})"));
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = Self { nodes };
        // Bounded wait until every node says the cluster is up (gossip takes ~1-2 s).
        for _ in 0..400 {
            if cluster.nodes.iter().all(|n| n.cluster_ok()) {
                return cluster;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the local Redis Cluster did not reach cluster_state:ok within 10 s");
    }

    /// The nodes' URLs.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect()
    }
}

/// A free port whose cluster bus port (+10000) is free too.
#[cfg(all(feature = "redis-cluster", feature = "disk", feature = "test-util"))]
pub fn cluster_free_port() -> u16 {
    cluster_port()
}

#[cfg(all(feature = "redis-cluster", feature = "disk", feature = "test-util"))]
fn cluster_port() -> u16 {
    for _ in 0..100 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
    panic!("no free pair of ports for a cluster node");
}

/// A three-primary Redis Cluster speaking only TLS (clients and the cluster bus), with a
/// certificate for 127.0.0.1 from a throwaway CA; killed on drop.
#[cfg(all(
    feature = "redis-cluster",
    feature = "redis-tls",
    feature = "disk",
    feature = "test-util"
))]
pub struct TlsRedisCluster {
    pub ports: Vec<u16>,
    pub ca_pem: Vec<u8>,
    children: Vec<std::process::Child>,
    certs: tempfile::TempDir,
    _dirs: Vec<tempfile::TempDir>,
}

#[cfg(all(
    feature = "redis-cluster",
    feature = "redis-tls",
    feature = "disk",
    feature = "test-util"
))]
impl TlsRedisCluster {
    pub async fn start() -> Self {
        let certs = throwaway_certificates();
        let path = certs.path().to_owned();
        let cert = |name: &str| path.join(name).to_str().unwrap().to_owned();
        let mut cluster = Self {
            ports: Vec::new(),
            ca_pem: std::fs::read(path.join("ca.crt")).unwrap(),
            children: Vec::new(),
            certs,
            _dirs: Vec::new(),
        };
        for _ in 0..3 {
            let port = cluster_port();
            let dir = tempfile::tempdir().unwrap();
            let child = std::process::Command::new("redis-server")
                .args([
                    "--port",
                    "0",
                    "--tls-port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                ])
                .args(["--tls-cert-file", &cert("server.crt")])
                .args(["--tls-key-file", &cert("server.key")])
                .args([
                    "--tls-ca-cert-file",
                    &cert("ca.crt"),
                    "--tls-auth-clients",
                    "no",
                ])
                .args(["--tls-cluster", "yes", "--cluster-enabled", "yes"])
                .args(["--save", "", "--appendonly", "no"])
                .current_dir(dir.path())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start `redis-server` ({e})"));
            cluster.ports.push(port);
            cluster.children.push(child);
            cluster._dirs.push(dir);
        }
        for port in cluster.ports.clone() {
            let mut up = false;
            for _ in 0..200 {
                if cluster.cli(port, &["ping"]).contains("PONG") {
                    up = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            assert!(up, "TLS redis-server on {port} did not answer");
        }
        let addresses: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(addresses.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        let out = cluster.cli(cluster.ports[0], &args);
        assert!(
            out.contains("All 16384 slots covered"),
            "cluster create: {out}"
        );
        for _ in 0..400 {
            if cluster.ports.iter().all(|p| {
                cluster
                    .cli(*p, &["cluster", "info"])
                    .contains("cluster_state:ok")
            }) {
                return cluster;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the TLS cluster did not reach cluster_state:ok within 10 s");
    }

    /// `redis-cli` over TLS against `port`: its stdout.
    fn cli(&self, port: u16, args: &[&str]) -> String {
        let ca = self.certs.path().join("ca.crt");
        std::process::Command::new("redis-cli")
            .args([
                "--tls",
                "--cacert",
                ca.to_str().unwrap(),
                "-p",
                &port.to_string(),
            ])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("rediss://127.0.0.1:{p}"))
            .collect()
    }
}

#[cfg(all(
    feature = "redis-cluster",
    feature = "redis-tls",
    feature = "disk",
    feature = "test-util"
))]
impl Drop for TlsRedisCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
