//! The appliance image's recipe, checked quickly on every commit (booting the image takes minutes under emulation,
//! so `make image-test` runs apart): its scripts parse and pass shellcheck, its systemd units pass `systemd-analyze verify`, and for
//! every mode of `/etc/voxtap/appliance.conf` the voxtap.conf that `voxtap-appliance` writes is one voxtap accepts
//! (`--check-config`) in the role the mode means. Broken settings are refused with a reason and never run as shell.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn overlay() -> PathBuf {
    repo().join("appliance-image/overlay")
}

/// A root directory holding the overlay (what the image adds to Debian), made afresh for each test.
fn root(name: &str) -> PathBuf {
    let r = fresh_dir(&format!("recipe-{name}"));
    let st = Command::new("cp").arg("-a").arg(format!("{}/.", overlay().display())).arg(&r).status().unwrap();
    assert!(st.success());
    std::fs::create_dir_all(r.join("var/lib/voxtap")).unwrap();
    r
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A tool the check needs: under CI its absence fails; elsewhere the check says so and is skipped.
fn have(tool: &str) -> bool {
    if Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().is_ok_and(|o| o.status.success()) {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{tool} is missing, and CI=true requires it");
    }
    eprintln!("SKIPPED: {tool} is not installed");
    false
}

#[test]
fn the_scripts_parse() {
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(repo().join("appliance-image"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sh"))
        .collect();
    scripts.push(overlay().join("usr/sbin/voxtap-appliance"));
    scripts.push(overlay().join("usr/lib/voxtap/ready-check.sh"));
    assert!(scripts.len() >= 7, "{scripts:?}");
    for s in &scripts {
        let o = run(Command::new("bash").arg("-n").arg(s));
        assert!(o.status.success(), "{}: {}", s.display(), text(&o.stderr));
    }
    // shellcheck's warnings and errors (its style notes aside) are failures too.
    if have("shellcheck") {
        let o = run(Command::new("shellcheck")
            .args(["-S", "warning", "-x"])
            .args(&scripts)
            .current_dir(repo().join("appliance-image")));
        assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    }
    for py in ["bios-embed.py", "send-frames.py"] {
        let file = std::fs::File::open(repo().join("appliance-image").join(py)).unwrap();
        let o = run(Command::new("python3").args(["-c", "import ast, sys; ast.parse(sys.stdin.read())"]).stdin(file));
        assert!(o.status.success(), "{py}: {}", text(&o.stderr));
    }
}

#[test]
fn the_units_pass_systemd_analyze_verify() {
    if !have("systemd-analyze") {
        return;
    }
    // The overlay, the host's own systemd units (sysinit.target and friends) and the programs the units run.
    let r = root("units");
    std::fs::create_dir_all(r.join("usr/lib/systemd")).unwrap();
    std::fs::create_dir_all(r.join("usr/bin")).unwrap();
    let st = Command::new("cp").arg("-a").arg("/usr/lib/systemd/system").arg(r.join("usr/lib/systemd/")).status();
    assert!(st.unwrap().success());
    std::fs::copy(env!("CARGO_BIN_EXE_voxtap"), r.join("usr/bin/voxtap")).unwrap();
    std::fs::copy("/bin/sh", r.join("usr/bin/sh")).unwrap();
    std::os::unix::fs::symlink("usr/bin", r.join("bin")).unwrap();
    let units: Vec<String> = std::fs::read_dir(r.join("etc/systemd/system"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "service"))
        .map(|p| p.strip_prefix(&r).unwrap().display().to_string())
        .collect();
    assert!(units.len() >= 4, "{units:?}");
    let o = run(Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", r.display()))
        .args(&units)
        .current_dir(&r));
    // Unknown keys and missing programs are only warnings to systemd-analyze: any word from it is a failure here.
    assert!(o.status.success() && o.stderr.is_empty() && o.stdout.is_empty(), "{}{}", text(&o.stdout), text(&o.stderr));
    let _ = std::fs::remove_dir_all(&r);
}

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// Renders voxtap.conf for `settings` (appended to the shipped appliance.conf) in a root of its own.
fn render(name: &str, settings: &str) -> (Output, PathBuf, PathBuf) {
    let r = root(name);
    let conf = r.join("etc/voxtap/appliance.conf");
    let mut all = std::fs::read_to_string(&conf).unwrap();
    all.push_str(settings);
    std::fs::write(&conf, all).unwrap();
    std::fs::write(
        r.join("etc/voxtap/secrets"),
        format!("DB_PASSWORD=db-secret\nMANAGER_KEY={KEY}\nGENERATED_SERVER_PASSWORD=made-on-first-boot\n"),
    )
    .unwrap();
    let out = r.join("voxtap.conf");
    let o = run(Command::new("bash")
        .arg(r.join("usr/sbin/voxtap-appliance"))
        .arg("render")
        .arg(&out)
        .env("VOXTAP_ROOT", &r));
    (o, r, out)
}

/// The rendered file through `voxtap --check-config`: it must pass without a warning; returns what it printed.
/// The interfaces it names exist on the box it is made for: here they are links in a network namespace of
/// the test's own (veth pairs), where the check runs (it refuses an interface that does not exist, as the run does).
fn accepted(conf: &Path) -> String {
    let written = std::fs::read_to_string(conf).unwrap();
    let ifaces: Vec<String> = written
        .lines()
        .filter_map(|l| l.trim().strip_prefix("interface"))
        .filter_map(|l| l.trim_start().strip_prefix('='))
        .flat_map(|v| {
            v.split([',', ' ']).map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect::<Vec<_>>()
        })
        // DPDK ports (`dpdk:0`) are not kernel interfaces.
        .filter(|s| !s.contains(':'))
        .collect();
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let ns = format!("vxappl-{}-{}", std::process::id(), N.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let ip = |args: &[&str]| {
        let st = Command::new("ip").args(args).status().expect("ip");
        assert!(st.success(), "ip {args:?}");
    };
    ip(&["netns", "add", &ns]);
    for i in &ifaces {
        ip(&["-n", &ns, "link", "add", i, "type", "veth", "peer", "name", &format!("{i}-peer")]);
    }
    let bin = std::env::var("VOXTAP_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_voxtap").to_string());
    let o = run(Command::new("ip").args(["netns", "exec", &ns, &bin, "--check-config", "--config-file"]).arg(conf));
    ip(&["netns", "del", &ns]);
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(o.status.success(), "{}:\n{err}\n{}", conf.display(), std::fs::read_to_string(conf).unwrap());
    assert!(err.trim().is_empty(), "warnings for {}:\n{err}", conf.display());
    out
}

#[test]
fn every_mode_gives_a_config_voxtap_accepts_in_that_role() {
    let cases: &[(&str, &str, &[&str], &[&str])] = &[
        (
            "aio-dpdk",
            "MODE=all-in-one\nCAPTURE_PCI=0000:03:00.0 0000:03:00.1\nISOLATE_CPUS=2-4\nID_SENSOR=7\n",
            &["role: sensor on a DPDK port", "source: DPDK ports 0000:03:00.0", "MySQL voxtap@127.0.0.1:3306"],
            &[
                "id_sensor = 7",
                "mysqlpassword = db-secret",
                "dpdk_read_thread_cpu_affinity = 2",
                "dpdk_worker_thread_cpu_affinity = 3,4",
                "dpdk_eal_args = --in-memory",
                // 256 hugepages of 2 MiB: 60% of 512 MiB in units of 1024 buffers of about 2.5 KB.
                "dpdk_nb_mbufs = 122",
            ],
        ),
        (
            "aio-hep",
            "",
            &["role: sensor fed by HEP", "cdrs: MySQL"],
            &["hep_bind_port = 9060", "cdr_partition = yes", "mode set in\n# /etc/voxtap/appliance.conf: all-in-one"],
        ),
        (
            "remote",
            "MODE=remote\nCAPTURE_IFACE=eth1,eth2\nSERVER_DESTINATION=central1.example.net,192.0.2.9\nSERVER_PASSWORD=link pass\nID_SENSOR=12\n",
            &[
                "role: sensor on AF_PACKET interfaces",
                "source: interfaces eth1,eth2",
                "cdrs: sent to the central central1.example.net,192.0.2.9:60024",
            ],
            &["server_password = link pass", "packetbuffer_sender = no", "#mysqlhost ="],
        ),
        (
            "remote-packets",
            "MODE=remote\nCAPTURE_PCI=05:00.0\nHUGEPAGE_SIZE=1G\nHUGEPAGES=4\nSERVER_DESTINATION=192.0.2.9\nSERVER_DESTINATION_PORT=61000\nSERVER_PASSWORD=p\nPACKETBUFFER_SENDER=yes\n",
            &["role: remote sensor sending packets to its central"],
            &["--huge-dir /dev/hugepages-1G", "server_destination_port = 61000", "dpdk_nb_mbufs = 983"],
        ),
        (
            "central",
            "MODE=central\nCAPTURE_IFACE=eth1\n",
            &["role: central server", "cdrs: MySQL"],
            &["server_bind = 0.0.0.0", "server_bind_port = 60024", "server_password = made-on-first-boot"],
        ),
    ];
    for (name, settings, says, holds) in cases {
        let (o, r, conf) = render(name, settings);
        assert!(o.status.success(), "{name}: {}", text(&o.stderr));
        let out = accepted(&conf);
        for s in *says {
            assert!(out.contains(s), "{name}: --check-config does not say {s:?}:\n{out}");
        }
        assert!(out.contains("(manager_key set)"), "{name}: {out}");
        let written = std::fs::read_to_string(&conf).unwrap();
        for h in *holds {
            assert!(written.contains(h), "{name}: voxtap.conf lacks {h:?}:\n{written}");
        }
        assert!(!written.contains('@'), "{name}: a placeholder is left:\n{written}");
        let _ = std::fs::remove_dir_all(&r);
    }
}

#[test]
fn broken_settings_are_refused_with_a_reason_and_never_run() {
    let cases: &[(&str, &str, &str)] = &[
        ("mode", "MODE=router\n", "MODE=router: all-in-one, remote or central"),
        ("remote", "MODE=remote\nCAPTURE_IFACE=eth1\n", "MODE=remote needs SERVER_DESTINATION"),
        ("pci", "CAPTURE_PCI=eth0\n", "CAPTURE_PCI: eth0 is not a PCI address"),
        ("both", "CAPTURE_PCI=03:00.0\nCAPTURE_IFACE=eth1\n", "CAPTURE_PCI and CAPTURE_IFACE: set one"),
        ("cpus", "ISOLATE_CPUS=all\n", "ISOLATE_CPUS=all"),
        ("pages", "HUGEPAGE_SIZE=4K\n", "HUGEPAGE_SIZE=4K: 2M or 1G"),
        ("driver", "NIC_DRIVER=igb_uio\n", "NIC_DRIVER=igb_uio: auto, vfio-pci or uio_pci_generic"),
        ("port", "SERVER_BIND_PORT=70000\n", "SERVER_BIND_PORT=70000: 1..65535"),
    ];
    for (name, settings, reason) in cases {
        let (o, r, conf) = render(name, settings);
        let err = text(&o.stderr);
        assert!(!o.status.success() && err.contains(reason), "{name}: {err}");
        assert!(!conf.exists(), "{name}: a config was written");
        let _ = std::fs::remove_dir_all(&r);
    }
    // Values are data, never shell: a command substitution stays text (and is refused as an interface name).
    let probe = std::env::temp_dir().join(format!("voxtap-recipe-ran-{}", std::process::id()));
    let (o, r, _) = render("shell", &format!("CAPTURE_IFACE=$(touch {})\n", probe.display()));
    assert!(!o.status.success() && text(&o.stderr).contains("CAPTURE_IFACE="), "{}", text(&o.stderr));
    assert!(!probe.exists(), "a setting's value was run as a command");
    let _ = std::fs::remove_dir_all(&r);
    // A line that is not KEY=value, or a name that is not a setting, is reported with its line and skipped.
    let (o, r, conf) = render("junk", "this is not a setting\nCOLOUR=blue\n");
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("not a KEY=value line; ignored: this is not a setting"), "{err}");
    assert!(err.contains("COLOUR is not a setting here"), "{err}");
    accepted(&conf);
    let _ = std::fs::remove_dir_all(&r);
}
