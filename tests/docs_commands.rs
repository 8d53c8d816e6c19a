//! The commands in README.md and docs/ are run as written, so the docs stay true. Every fenced ```sh block runs
//! unless its info string says what it needs that a test cannot have (`needs=hardware`, …, from a fixed list);
//! ```ini file=NAME blocks are written to NAME first, so a page's commands use the configuration it shows.
//!
//! Each page runs in a folder of its own holding the files the examples name (capture.pcap, v.conf…), inside a
//! private mount namespace where /etc is a copy-on-write overlay and /var/spool a fresh tmpfs: the commands'
//! absolute paths (/etc/voipmonitor/voipmonitor.conf, /var/spool/voxtap) work and the machine is left untouched.

mod common;
#[path = "common/db.rs"]
mod db;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Why a block may stay unrun: what it needs that a test on this machine cannot have or should not do.
const NEEDS: &[(&str, &str)] = &[
    ("hardware", "a NIC, a disk to flash or hugepages of a real box"),
    ("image", "the appliance image build and QEMU boots (make image, make image-test)"),
    ("appliance", "a booted appliance (voxtap-appliance, its systemd units)"),
    ("machine", "changes this machine itself: packages, kernel settings, a cargo build"),
    ("minutes", "minutes of building or benchmarking (CI builds and tests everything anyway)"),
    ("service", "a sensor, central or tool running until stopped; its own test runs it (tests/*.rs)"),
];

struct Block {
    file: String,
    line: usize,
    lang: String,
    attrs: Vec<(String, String)>,
    body: String,
}

impl Block {
    fn attr(&self, k: &str) -> Option<&str> {
        self.attrs.iter().find(|a| a.0 == k).map(|a| a.1.as_str())
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn pages() -> Vec<PathBuf> {
    let mut v = vec![repo().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    v.extend(docs);
    v
}

fn blocks(page: &Path) -> Vec<Block> {
    let text = std::fs::read_to_string(page).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let name = page.strip_prefix(repo()).unwrap().display().to_string();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if let Some(info) = lines[i].strip_prefix("```") {
            let start = i;
            i += 1;
            let mut body = String::new();
            while i < lines.len() && !lines[i].starts_with("```") {
                body.push_str(lines[i]);
                body.push('\n');
                i += 1;
            }
            let mut words = info.split_whitespace();
            let lang = words.next().unwrap_or("").to_string();
            let attrs = words
                .map(|w| match w.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (w.to_string(), String::new()),
                })
                .collect();
            out.push(Block { file: name.clone(), line: start + 1, lang, attrs, body });
        }
        i += 1;
    }
    out
}

/// The files the examples name, made for each page's folder.
fn fixture(dir: &Path, db: &db::Db) {
    let bin = std::env::var("VOXTAP_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_voxtap").to_string());
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::create_dir_all(dir.join("target/release")).unwrap();
    std::fs::create_dir_all(dir.join("target/demo")).unwrap();
    std::os::unix::fs::symlink(&bin, dir.join("bin/voxtap")).unwrap();
    std::os::unix::fs::symlink(&bin, dir.join("target/release/voxtap")).unwrap();
    voxgen(&dir.join("capture.pcap"), &["--calls", "6", "--cps", "3", "--duration", "2", "--mix", "--seed", "11"]);
    voxgen(&dir.join("capture.pcapng"), &["--calls", "4", "--duration", "2", "--pcapng", "--seed", "12"]);
    for f in ["capture.pcap", "capture.pcapng"] {
        sh(&format!("gzip -kf {}", dir.join(f).display()));
    }
    voxgen(&dir.join("old.pcap"), &["--calls", "3", "--duration", "1", "--seed", "13"]);
    voxgen(
        &dir.join("target/demo/demo.pcap"),
        &["--calls", "12", "--cps", "4", "--duration", "4", "--mix", "--seed", "7"],
    );
    std::fs::write(
        dir.join("v.conf"),
        "interface = lo\nspooldir = /var/spool/voipmonitor\nsavesip = yes\nmaxpooldays = 30\n",
    )
    .unwrap();
    std::fs::write(dir.join("voipmonitor.conf"), "spooldir = /var/spool/voipmonitor\nsipport = 5060\n").unwrap();
    let dbname = db.fresh("voxtap_docs");
    std::fs::write(
        dir.join("db.conf"),
        format!(
            "mysqlhost = {}\nmysqlport = {}\nmysqldb = {dbname}\nmysqlusername = root\nspooldir = /var/spool/voipmonitor\n",
            db.host, db.port
        ),
    )
    .unwrap();
}

/// Runs one block's commands with `sh -e` in the page's folder, inside the private namespace.
fn run(dir: &Path, b: &Block) -> Result<(), String> {
    let prelude = format!(
        "set -e\nmount -t tmpfs voxtap-docs {ov}\nmkdir {ov}/u {ov}/w\n\
         mount -t overlay overlay -o lowerdir=/etc,upperdir={ov}/u,workdir={ov}/w /etc\n\
         mkdir -p /etc/voipmonitor && cp {d}/voipmonitor.conf /etc/voipmonitor/\n\
         mount -t tmpfs voxtap-spool /var/spool\ncd {d}\nexport PATH={d}/bin:$PATH\nset -x\n",
        ov = dir.join("ov").display(),
        d = dir.display()
    );
    std::fs::create_dir_all(dir.join("ov")).unwrap();
    let mut child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!("{prelude}{}", b.body))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("unshare: {e}"))?;
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let o = child.wait_with_output().unwrap();
            let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
            return if st.success() { Ok(()) } else { Err(format!("{st}: {}", tail(&text))) };
        }
        if t0.elapsed() > Duration::from_secs(180) {
            let _ = child.kill();
            return Err("still running after 180 s (a command that runs until stopped needs `needs=service`)".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

#[test]
fn every_command_in_the_docs_runs() {
    let db = db::server();
    let corpus = Path::new("/work/shared/corpus").exists();
    let (mut ran, mut skipped, mut failures) = (0, Vec::new(), Vec::new());
    for page in pages() {
        let bl = blocks(&page);
        if !bl.iter().any(|b| b.lang == "sh" && b.attr("needs").is_none()) {
            for b in bl.iter().filter(|b| b.lang == "sh") {
                skipped.push(format!("{}:{} ({})", b.file, b.line, b.attr("needs").unwrap_or("")));
            }
            continue;
        }
        let dir = fresh_dir(&format!("docs-{}", page.file_stem().unwrap().to_string_lossy()));
        fixture(&dir, &db);
        for b in &bl {
            if let Some(name) = b.attr("file") {
                std::fs::write(dir.join(name), &b.body).unwrap();
            }
            if b.lang != "sh" {
                continue;
            }
            match b.attr("needs") {
                Some(why) => {
                    if !NEEDS.iter().any(|n| n.0 == why) {
                        failures.push(format!("{}:{}: needs={why} is not one of {:?}", b.file, b.line, NEEDS));
                    }
                    skipped.push(format!("{}:{} ({why})", b.file, b.line));
                    continue;
                }
                None if b.body.contains("/work/shared/corpus") && !corpus => {
                    assert!(
                        std::env::var("CI").is_err(),
                        "{}:{} needs the corpus, and CI=true requires it",
                        b.file,
                        b.line
                    );
                    eprintln!("SKIPPED: {}:{} reads the corpus, which is absent", b.file, b.line);
                    continue;
                }
                None => {}
            }
            match run(&dir, b) {
                Ok(()) => ran += 1,
                Err(e) => failures.push(format!("{}:{}:\n{}\n--> {e}", b.file, b.line, b.body)),
            }
        }
    }
    eprintln!("docs: {ran} blocks run, {} not run: {}", skipped.len(), skipped.join(", "));
    assert!(failures.is_empty(), "{} doc blocks failed:\n\n{}", failures.len(), failures.join("\n\n"));
    assert!(ran >= 4, "only {ran} blocks ran");
}
