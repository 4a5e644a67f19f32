//! A real Asterisk 20 (chan_iax2) for the interop tests, run from the peer
//! folder that carries a prebuilt tree and its `start.sh`/`cli.sh`.
//!
//! The folder is `$ASTERISK_PEER`, or else `peers/asterisk` in the `shared`
//! folder beside the repository (where CI lays it out). Without it, or
//! without root (Asterisk runs with `-U root`), the tests skip with a message.
//! Each instance lives in its own temporary WORKDIR; the prebuilt tree is
//! unpacked once into `target/asterisk-tree` and shared by every instance.
//! Instances are stopped (`core stop now`, then killed) on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::common::{is_root, TempDir};

/// The Asterisk peer folder, or `None` after saying why the test cannot run here.
pub fn peer_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("ASTERISK_PEER")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/peers/asterisk"));
    if !dir.join("start.sh").is_file() || !dir.join("asterisk-20.20.1-bin.tar.xz").is_file() {
        eprintln!(
            "SKIPPED: no Asterisk peer folder at {} (set ASTERISK_PEER to a folder with start.sh, cli.sh and \
             the prebuilt tree); the Asterisk interop test did not run",
            dir.display()
        );
        return None;
    }
    if !is_root() {
        eprintln!("SKIPPED: Asterisk runs as root (-U root) and these tests are not root; the test did not run");
        return None;
    }
    Some(dir)
}

/// Where the prebuilt tree is unpacked, once for every instance of every test.
fn tree() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/asterisk-tree")
}

/// One running Asterisk instance.
pub struct Asterisk {
    peer: PathBuf,
    conf: PathBuf,
    work: TempDir,
}

impl Asterisk {
    /// Starts Asterisk on the config files in `conf` (copied into its WORKDIR);
    /// returns once it is fully booted.
    pub fn start(peer: &Path, conf: &Path, tag: &str) -> Asterisk {
        let work = TempDir::new(&format!("asterisk-{tag}"));
        let asterisk = Asterisk { peer: peer.to_path_buf(), conf: conf.to_path_buf(), work };
        asterisk.boot();
        asterisk
    }

    fn boot(&self) {
        let out = Command::new(self.peer.join("start.sh"))
            .arg(&self.work.0)
            .arg(&self.conf)
            .env("ASTERISK_TREE", tree())
            .stdin(Stdio::null())
            .output()
            .expect("run start.sh");
        assert!(out.status.success(), "start.sh failed: {}", String::from_utf8_lossy(&out.stderr));
        assert!(
            self.wait_cli("core show uptime", Duration::from_secs(10), |s| s.contains("System uptime")).is_some(),
            "Asterisk did not come up; its log:\n{}",
            self.log()
        );
    }

    /// Stops and starts it again in the same WORKDIR: like a service restart,
    /// it keeps its astdb (the registrations it had accepted).
    pub fn restart(&self) {
        self.stop();
        self.boot();
    }

    /// Runs one CLI command (`asterisk -rx`) and returns what it printed.
    pub fn cli(&self, command: &str) -> String {
        let out = Command::new(self.peer.join("cli.sh"))
            .arg(&self.work.0)
            .args(command.split_whitespace())
            .env("ASTERISK_TREE", tree())
            .stdin(Stdio::null())
            .output()
            .expect("run cli.sh");
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }

    /// Repeats `command` until its output satisfies `pred`, for at most `timeout`.
    pub fn wait_cli(&self, command: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.cli(command);
            if pred(&out) {
                return Some(out);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the log holds a line containing `text`.
    pub fn wait_log(&self, text: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(text) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// What Asterisk logged (notices, warnings, errors and verbose lines).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.work.0.join("log/messages")).unwrap_or_default()
    }

    /// Stops it now, as `core stop now` does, and waits for the process to go.
    pub fn stop(&self) {
        let _ = self.cli("core stop now");
        let pid = std::fs::read_to_string(self.work.0.join("run/asterisk.pid")).unwrap_or_default();
        let pid = pid.trim();
        if pid.is_empty() {
            return;
        }
        let alive = || Path::new(&format!("/proc/{pid}")).exists();
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if alive() {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
    }
}

impl Drop for Asterisk {
    fn drop(&mut self) {
        self.stop();
    }
}
