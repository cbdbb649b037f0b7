//! A real registry for the tests: Debian's `docker-registry` (distribution
//! 2.8) as a child process on a free loopback port, storage in a temporary
//! directory, killed when the handle drops (a failing test included).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hearth_oci::push::{PushRequest, Pushed, push_rootfs};
use hearth_oci::{Compression, Credentials, ImageConfig};

const BINARY: &str = "/usr/bin/docker-registry";
const START_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);

pub struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    pub credentials: Option<Credentials>,
}

impl Registry {
    pub fn start() -> Self {
        Self::launch(None)
    }

    /// A registry that wants `username`/`password` (HTTP basic, htpasswd).
    pub fn with_login(username: &str, password: &str) -> Self {
        Self::launch(Some(Credentials {
            username: username.to_owned(),
            password: password.to_owned(),
        }))
    }

    fn launch(credentials: Option<Credentials>) -> Self {
        assert!(
            Path::new(BINARY).exists(),
            "{BINARY} is missing: run scripts/install-deps.sh --test (apt-get install docker-registry)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: 127.0.0.1:0\n",
            dir.path().join("storage").display()
        );
        if let Some(login) = &credentials {
            let hash = bcrypt::hash(&login.password, 4).expect("bcrypt");
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{}:{hash}\n", login.username)).expect("htpasswd");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: hearth-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("registry config");
        let log_path = dir.path().join("registry.log");
        let log = std::fs::File::create(&log_path).expect("registry log");
        let child = Command::new(BINARY)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let mut registry = Self {
            child,
            dir,
            addr: String::new(),
            credentials,
        };
        registry.addr = registry.wait_until_ready(&log_path);
        registry
    }

    /// Port 0 in the config: the registry binds a free port and logs it.
    /// Then `GET /v2/` must answer (any status: 401 with a login).
    fn wait_until_ready(&mut self, log_path: &Path) -> String {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut addr = None;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("docker-registry exited ({status}): {}", self.log());
            }
            if addr.is_none() {
                let log = std::fs::read_to_string(log_path).unwrap_or_default();
                addr = log
                    .split("listening on ")
                    .nth(1)
                    .and_then(|rest| rest.split('"').next())
                    .map(str::to_owned);
            }
            if let Some(addr) = &addr
                && answers_v2(addr)
            {
                return addr.clone();
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry not ready within {START_TIMEOUT:?}: {}",
                self.log()
            );
            std::thread::sleep(POLL);
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// `127.0.0.1:PORT/<name>`.
    pub fn reference(&self, name: &str) -> String {
        format!("{}/{name}", self.addr)
    }

    /// Where the registry keeps the blob with this digest.
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Pushes `rootfs` as `name` for linux/`architecture`.
    pub async fn push(
        &self,
        name: &str,
        rootfs: &Path,
        compression: Compression,
        config: &ImageConfig,
        architecture: &str,
    ) -> Pushed {
        let reference = self.reference(name);
        let request = PushRequest {
            reference: &reference,
            rootfs,
            compression,
            config,
            architecture,
            credentials: self.credentials.as_ref(),
            insecure_registries: &[],
        };
        match push_rootfs(&request).await {
            Ok(pushed) => pushed,
            Err(err) => panic!("push {reference}: {err}\n{}", self.log()),
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether an HTTP server answers `GET /v2/` at `addr`.
fn answers_v2(addr: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /v2/ HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.")
}

/// Collects progress lines.
#[derive(Default)]
pub struct Log(Mutex<Vec<String>>);

impl Log {
    pub fn sink(&self) -> impl Fn(String) + Send + Sync + '_ {
        |line| self.0.lock().expect("log").push(line)
    }

    pub fn lines(&self) -> Vec<String> {
        self.0.lock().expect("log").clone()
    }
}
