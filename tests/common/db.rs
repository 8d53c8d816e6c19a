//! A MariaDB server for the tests: the machine's (127.0.0.1:3306, root without a password) when it answers,
//! else a private one started here (mariadb-install-db + mariadbd on 127.0.0.1 in a temporary folder), which stops
//! when the test process ends. Private servers listen below 32768, outside Linux's ephemeral port range, so an
//! outgoing connection of another test cannot take their port between a stop and a start.
#![allow(dead_code)]

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

/// A private server in a folder of its own, which a test can stop and start again.
pub struct Private {
    pub port: u16,
    dir: PathBuf,
    pid: Option<u32>,
    args: Vec<String>,
}

impl Private {
    /// Creates the data folder (emptied first: what an earlier test process left there goes) and starts it.
    pub fn new(port: u16) -> Private {
        Private::with_args(port, &[])
    }

    /// The same, with extra server options (e.g. `--innodb-autoinc-lock-mode=2`). `port` is a wish: the next free
    /// one from there is taken.
    pub fn with_args(port: u16, args: &[&str]) -> Private {
        let port = (port..port.saturating_add(200))
            .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
            .expect("a free port for a private mariadbd");
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
        let mut p = Private { port, dir, pid: None, args: args.iter().map(|a| a.to_string()).collect() };
        p.start();
        p
    }

    pub fn db(&self) -> Db {
        Db { host: "127.0.0.1".into(), port: self.port }
    }

    pub fn start(&mut self) {
        let mut cmd = Command::new("mariadbd");
        cmd.args(["--no-defaults", "--user=root", "--bind-address=127.0.0.1", "--skip-name-resolve"])
            .arg(format!("--port={}", self.port))
            .arg(format!("--datadir={}", self.dir.join("data").display()))
            .arg(format!("--socket={}", self.dir.join("sock").display()))
            .arg(format!("--pid-file={}", self.dir.join("pid").display()))
            .arg(format!("--log-error={}", self.log().display()))
            // A restart right after a stop may find the port still held for a moment: wait for it instead of exiting.
            .arg("--port-open-timeout=30")
            .args(&self.args)
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
            let _ = tx.send(child.as_ref().map(|c| c.id()).ok());
            let _keep = child;
            loop {
                std::thread::park();
            }
        });
        self.pid = rx.recv().ok().flatten();
        assert!(self.pid.is_some(), "cannot start mariadbd");
        let pid = self.pid.unwrap_or_default();
        let t0 = Instant::now();
        while !answers(self.port) {
            let gone = !Path::new(&format!("/proc/{pid}")).exists() || zombie(pid);
            if gone || t0.elapsed() > Duration::from_secs(90) {
                let log = std::fs::read_to_string(self.log()).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(25).collect::<Vec<_>>().into_iter().rev().collect();
                panic!(
                    "private mariadbd on port {} {} after {:?}; its log {}:\n{}",
                    self.port,
                    if gone { "exited" } else { "did not answer" },
                    t0.elapsed(),
                    self.log().display(),
                    tail.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn log(&self) -> PathBuf {
        self.dir.join("mariadbd.log")
    }

    /// Stops the server (SIGTERM, as a service stop does) and waits until it is gone.
    pub fn stop(&mut self) {
        if let Some(pid) = self.pid.take() {
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            let t0 = Instant::now();
            while Path::new(&format!("/proc/{pid}")).exists() && !zombie(pid) {
                assert!(t0.elapsed() < Duration::from_secs(60), "mariadbd did not stop");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map(|s| s.contains(") Z ")).unwrap_or(true)
}

/// The server for this test process.
pub fn server() -> Db {
    static DB: OnceLock<Db> = OnceLock::new();
    DB.get_or_init(|| {
        // VOXTAP_TEST_PRIVATE_DB=1 skips the machine's server (to test the fallback itself).
        if std::env::var_os("VOXTAP_TEST_PRIVATE_DB").is_none() && answers(3306) {
            Db { host: "127.0.0.1".into(), port: 3306 }
        } else {
            eprintln!("no MariaDB on 127.0.0.1:3306: starting a private one");
            Private::new(23306 + (std::process::id() % 1000) as u16).db()
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

    /// Like `query`, but a failing statement (a table not created yet) gives no rows instead of a panic.
    pub fn try_query(&self, db: &str, sql: &str) -> Vec<Vec<Option<String>>> {
        let out = Command::new("mariadb")
            .args(["--no-defaults", "--batch", &format!("-h{}", self.host), &format!("-P{}", self.port), "-uroot", db])
            .arg("-e")
            .arg(sql)
            .output()
            .expect("run mariadb client");
        if !out.status.success() {
            return Vec::new();
        }
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split('\t').map(|f| (f != "NULL").then(|| f.to_string())).collect())
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
