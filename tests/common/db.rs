//! A MariaDB server for the tests: the machine's (127.0.0.1:3306, root without a password) when it answers,
//! else a private one started here (mariadb-install-db + mariadbd on 127.0.0.1:33306 in a temporary folder),
//! which stops when the test process ends.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Db {
    pub host: String,
    pub port: u16,
}

fn answers(port: u16) -> bool {
    Command::new("mariadb")
        .args(["--no-defaults", "-h127.0.0.1", &format!("-P{port}"), "-uroot", "-e", "SELECT 1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn start_private(port: u16) -> Db {
    // One folder per port, emptied first: what an earlier test process left there goes.
    let dir = std::env::temp_dir().join(format!("voxtap-mariadb-{port}"));
    let _ = std::fs::remove_dir_all(&dir);
    let data = dir.join("data");
    std::fs::create_dir_all(&data).expect("mariadb temp dir");
    let st = Command::new("mariadb-install-db")
        .args(["--no-defaults", "--auth-root-authentication-method=normal", "--user=root", "--skip-test-db"])
        .arg(format!("--datadir={}", data.display()))
        .stdout(Stdio::null())
        .status()
        .expect("mariadb-install-db (Debian package mariadb-server) must be installed");
    assert!(st.success(), "mariadb-install-db failed");
    let mut cmd = Command::new("mariadbd");
    cmd.args(["--no-defaults", "--user=root", "--bind-address=127.0.0.1", "--skip-name-resolve"])
        .arg(format!("--port={port}"))
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--socket={}", dir.join("sock").display()))
        .arg(format!("--pid-file={}", dir.join("pid").display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // The server goes when this test process does: it is killed when the thread that started it ends, so a
    // thread that lives as long as the process starts it (each test runs in a thread of its own).
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let child = cmd.spawn();
        let _ = tx.send(child.is_ok());
        let _keep = child;
        loop {
            std::thread::park();
        }
    });
    assert!(rx.recv().unwrap_or(false), "cannot start mariadbd");
    let t0 = Instant::now();
    while !answers(port) {
        assert!(t0.elapsed() < Duration::from_secs(60), "private mariadbd did not come up on port {port}");
        std::thread::sleep(Duration::from_millis(200));
    }
    Db { host: "127.0.0.1".into(), port }
}

/// The server for this test process.
pub fn server() -> Db {
    static DB: OnceLock<Db> = OnceLock::new();
    DB.get_or_init(|| {
        // VOXTAP_TEST_PRIVATE_DB=1 skips the machine's server (to test the fallback itself).
        if std::env::var_os("VOXTAP_TEST_PRIVATE_DB").is_none() && answers(3306) {
            Db { host: "127.0.0.1".into(), port: 3306 }
        } else {
            eprintln!("no MariaDB on 127.0.0.1:3306: starting a private one on 33306");
            start_private(33306 + (std::process::id() % 1000) as u16)
        }
    })
    .clone()
}

impl Db {
    /// Runs SQL; rows as columns of text (`None` for NULL), with the header row first.
    pub fn query(&self, db: Option<&str>, sql: &str) -> Vec<Vec<Option<String>>> {
        let mut cmd = Command::new("mariadb");
        cmd.args(["--no-defaults", "--batch", &format!("-h{}", self.host), &format!("-P{}", self.port), "-uroot"]);
        if let Some(d) = db {
            cmd.arg(d);
        }
        let out = cmd.arg("-e").arg(sql).output().expect("run mariadb client");
        assert!(out.status.success(), "SQL failed: {sql}\n{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                l.split('\t')
                    .map(|f| {
                        if f == "NULL" {
                            None
                        } else {
                            Some(f.replace("\\t", "\t").replace("\\n", "\n").replace("\\\\", "\\"))
                        }
                    })
                    .collect()
            })
            .collect()
    }

    /// A fresh, empty database name (dropped first).
    pub fn fresh(&self, name: &str) -> String {
        self.query(None, &format!("DROP DATABASE IF EXISTS `{name}`"));
        name.to_string()
    }

    /// A voipmonitor.conf pointing at this server and database, plus extra lines.
    pub fn config(&self, dir: &Path, db: &str, extra: &str) -> PathBuf {
        let p = dir.join(format!("{db}.conf"));
        std::fs::write(
            &p,
            format!(
                "mysqlhost = {}\nmysqlport = {}\nmysqldb = {db}\nmysqlusername = root\nspooldir = {}\n{extra}\n",
                self.host,
                self.port,
                dir.join(format!("{db}-spool")).display()
            ),
        )
        .expect("write config");
        p
    }
}
