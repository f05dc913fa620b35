//! Shared test helpers (a copy of the core's tests/integration/common.rs, with every store): a real hyper origin on 127.0.0.1 and a cached hyper-util client.

#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_client_cache::{
    BoxError, Cache, CacheBody, CacheLayer, CacheStatus, ManualClock, MemoryStore, SecretKey, Store,
};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tower::{Service, ServiceBuilder, ServiceExt};

/// The fixed epoch every freshness test starts from: 2023-11-14T22:13:20Z.
pub fn epoch() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

pub fn clock() -> ManualClock {
    ManualClock::new(epoch())
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The signing key of the tests that need one but do not care which.
pub fn test_key() -> SecretKey {
    SecretKey::new("integration test key, not secret").unwrap()
}

/// A layer over a 1 MiB `MemoryStore`, both on `clock`, without a secret key.
pub fn unsigned_layer(clock: &ManualClock) -> CacheLayer<MemoryStore> {
    CacheLayer::new(MemoryStore::with_clock(1 << 20, clock.clone())).clock(clock.clone())
}

/// [`unsigned_layer`], signing with [`test_key`].
pub fn layer(clock: &ManualClock) -> CacheLayer<MemoryStore> {
    unsigned_layer(clock).secret_key(test_key())
}

/// What the origin saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: http::Method,
    pub uri: http::Uri,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

type Handler = dyn Fn(&Seen) -> Response<Full<Bytes>> + Send + Sync;

/// A hyper HTTP/1 server on 127.0.0.1 (port chosen by the OS) that records every request.
pub struct Origin {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    count: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Origin {
    pub async fn start(
        handler: impl Fn(&Seen) -> Response<Full<Bytes>> + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handler: Arc<Handler> = Arc::new(handler);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let (seen2, count2) = (seen.clone(), count.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (handler, seen, count) = (handler.clone(), seen2.clone(), count2.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (handler, seen, count) = (handler.clone(), seen.clone(), count.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let s = Seen {
                                method: parts.method,
                                uri: parts.uri,
                                headers: parts.headers,
                                body,
                            };
                            let response = handler(&s);
                            seen.lock().unwrap().push(s);
                            count.fetch_add(1, Ordering::SeqCst);
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            seen,
            count,
            task,
        }
    }

    /// An origin that always answers 200 with `cache_control` and `body`.
    pub async fn fixed(cache_control: &'static str, body: &'static str) -> Self {
        Self::start(move |_| {
            Response::builder()
                .header("cache-control", cache_control)
                .body(Full::new(Bytes::from_static(body.as_bytes())))
                .unwrap()
        })
        .await
    }

    /// An origin that answers every request with a new body (`v1`, `v2`, ...) and `headers`.
    pub async fn counting(headers: &'static [(&'static str, &'static str)]) -> Self {
        let n = Arc::new(AtomicUsize::new(0));
        Self::start(move |_| {
            let v = n.fetch_add(1, Ordering::SeqCst) + 1;
            let mut b = Response::builder();
            for (name, value) in headers {
                b = b.header(*name, *value);
            }
            b.body(Full::new(Bytes::from(format!("v{v}")))).unwrap()
        })
        .await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// How many requests reached the origin.
    pub fn requests(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub type HyperClient = Client<HttpConnector, Empty<Bytes>>;

pub fn hyper_client() -> HyperClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A hyper-util client behind the cache layer, built the way users do.
pub fn cached_client<St: Store>(layer: CacheLayer<St>) -> Cache<HyperClient, St> {
    ServiceBuilder::new().layer(layer).service(hyper_client())
}

/// A fully read response.
pub struct Got {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    pub cache: Option<CacheStatus>,
    pub not_stored: Option<hyper_client_cache::NotStoredReason>,
    pub info: Option<hyper_client_cache::CacheInfo>,
}

pub async fn send<S, B>(svc: &mut S, request: Request<Empty<Bytes>>) -> Result<Got, BoxError>
where
    S: Service<Request<Empty<Bytes>>, Response = Response<CacheBody<B>>, Error = BoxError>,
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    let response = svc.ready().await?.call(request).await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Got {
        status: parts.status,
        headers: parts.headers,
        cache: parts.extensions.get::<CacheStatus>().copied(),
        not_stored: parts.extensions.get().copied(),
        info: parts.extensions.get().cloned(),
        body,
    })
}

/// A GET of `url` carrying `ext` in its extensions (a per-request option).
pub fn with_ext<T: Clone + Send + Sync + 'static>(url: &str, ext: T) -> Request<Empty<Bytes>> {
    let mut r = Request::get(url).body(Empty::new()).unwrap();
    r.extensions_mut().insert(ext);
    r
}

pub async fn get<S, B>(svc: &mut S, url: &str) -> Result<Got, BoxError>
where
    S: Service<Request<Empty<Bytes>>, Response = Response<CacheBody<B>>, Error = BoxError>,
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    send(svc, Request::get(url).body(Empty::new()).unwrap()).await
}

/// A cached hyper-util client whose requests carry a `Full` body (for methods with bodies).
pub fn full_body_client<St: Store>(
    layer: CacheLayer<St>,
) -> Cache<Client<HttpConnector, Full<Bytes>>, St> {
    ServiceBuilder::new()
        .layer(layer)
        .service(Client::builder(TokioExecutor::new()).build_http())
}

/// Every blob in a store, read through the `Store` service.
pub async fn all_blobs<St: Store>(store: &St) -> Vec<Bytes> {
    use hyper_client_cache::{StoreRequest, StoreResponse};
    let keys = match store.clone().oneshot(StoreRequest::Keys).await {
        Ok(StoreResponse::Keys(keys)) => keys,
        _ => panic!("store cannot list keys"),
    };
    let mut blobs = Vec::new();
    for key in keys {
        if let Some(blob) = get_raw(store, key).await {
            blobs.push(blob);
        }
    }
    blobs
}

/// Writes `blob` under `key` directly through the store, as an attacker with store access would.
pub async fn put_raw<St: Store>(store: &St, key: hyper_client_cache::CacheKey, blob: Bytes) {
    use hyper_client_cache::StoreRequest;
    let put = StoreRequest::Put {
        key,
        blob,
        ttl: None,
    };
    assert!(store.clone().oneshot(put).await.is_ok());
}

/// Reads the blob under `key` directly.
pub async fn get_raw<St: Store>(store: &St, key: hyper_client_cache::CacheKey) -> Option<Bytes> {
    use hyper_client_cache::{StoreRequest, StoreResponse};
    // Whatever shape the store answers with (one buffer, parts, a stream), as one buffer.
    match store.clone().oneshot(StoreRequest::get(key)).await {
        Ok(StoreResponse::Blob(b)) => b,
        Ok(StoreResponse::Parts(p)) => Some(p.to_bytes()),
        Ok(StoreResponse::Stream(s)) => s.collect(usize::MAX).await.ok().flatten(),
        _ => None,
    }
}

/// The key a layer signing with [`test_key`] stores `url` under (a keyed name).
pub fn key_for(url: &str) -> hyper_client_cache::CacheKey {
    CacheLayer::new(())
        .secret_key(test_key())
        .key_for(&Request::get(url).body(()).unwrap())
}

/// The key a layer without a secret stores `url` under.
pub fn unsigned_key_for(url: &str) -> hyper_client_cache::CacheKey {
    hyper_client_cache::CacheKey::for_request(&Request::get(url).body(()).unwrap())
}

/// A `redis-server` of the test's own, on a free 127.0.0.1 port, killed on drop.
pub struct RedisServer {
    pub port: u16,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

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
pub struct TlsRedisServer {
    pub port: u16,
    pub ca_pem: Vec<u8>,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

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
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

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
pub fn cluster_free_port() -> u16 {
    cluster_port()
}

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
pub struct TlsRedisCluster {
    pub ports: Vec<u16>,
    pub ca_pem: Vec<u8>,
    children: Vec<std::process::Child>,
    certs: tempfile::TempDir,
    _dirs: Vec<tempfile::TempDir>,
}

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

impl Drop for TlsRedisCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
