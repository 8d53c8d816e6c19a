use super::*;

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("voxtap-cfg-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn files_conf_d_and_precedence() {
    let d = tmpdir("prec");
    std::fs::write(
        d.join("main.conf"),
        "sipport = 5060\nsipport = 5070\nrtptimeout = 30\nrtptimeout = 99\nsavertp = h\nfoo_unknown = 1\nfoo_unknown = 2\n",
    )
    .unwrap();
    let cd = d.join("conf.d");
    std::fs::create_dir_all(&cd).unwrap();
    std::fs::write(cd.join("10-a.conf"), "sipport = 6060\nrtptimeout = 45\nid_sensor = 7\n").unwrap();
    std::fs::write(cd.join("10-a.conf~"), "rtptimeout = 1\n").unwrap();
    let (c, r) = Config::load(Some(&d.join("main.conf")), Some(&cd)).unwrap();
    assert_eq!(c.sipport, vec![(5060, 5060), (5070, 5070), (6060, 6060)]);
    assert_eq!(c.rtptimeout, 45);
    assert_eq!(c.savertp, SaveRtp::Header);
    assert_eq!(c.id_sensor, Some(7));
    assert_eq!(r.unknown_keys.len(), 1);
    assert_eq!(r.files.len(), 2);
}

#[test]
fn cpu_lists() {
    assert_eq!(cpu_list("0-2,5").unwrap(), vec![0, 1, 2, 5]);
    assert_eq!(cpu_list("3").unwrap(), vec![3]);
    assert!(cpu_list("2-1").is_err() && cpu_list("x").is_err() && cpu_list("5000").is_err());
}

#[test]
fn spool_modes_and_group() {
    let d = tmpdir("perms");
    let load = |text: &str| {
        std::fs::write(d.join("v.conf"), text).unwrap();
        Config::load(Some(&d.join("v.conf")), None)
    };
    let c = load("spool_group = root\nspool_file_mode = 0660\nspool_dir_mode = 770\n").unwrap().0;
    assert_eq!((c.spool_group, c.spool_file_mode, c.spool_dir_mode), (Some(0), 0o660, 0o770));
    let c = load("\n").unwrap().0;
    assert_eq!((c.spool_group, c.spool_file_mode, c.spool_dir_mode), (None, 0o640, 0o750));
    for bad in [
        "spool_group = voxtap-no-such-group",
        "spool_file_mode = 0440",
        "spool_dir_mode = 0600",
        "spool_file_mode = 1777",
        "spool_file_mode = rw",
    ] {
        assert!(load(&format!("{bad}\n")).is_err(), "{bad}");
    }
}

#[test]
fn bad_value_names_file_line_key() {
    let d = tmpdir("bad");
    std::fs::write(d.join("v.conf"), "\nrtptimeout = soon\n").unwrap();
    let err = Config::load(Some(&d.join("v.conf")), None).unwrap_err().to_string();
    assert!(err.contains("v.conf:2") && err.contains("rtptimeout"), "{err}");
}

#[test]
fn tar_keys_read_as_voipmonitor_does() {
    let d = tmpdir("tar");
    let c = Config::default();
    assert!(c.tar && c.tar_compress_sip == Compress::Zstd && c.tar_compress_rtp == Compress::None);
    for (v, want) in [("gzip", Compress::Zstd), ("gzipforce", Compress::Gzip), ("no", Compress::None)] {
        std::fs::write(d.join("v.conf"), format!("tar = no\ntar_compress_sip = {v}\ntar_compress_rtp = l\n")).unwrap();
        let (c, _) = Config::load(Some(&d.join("v.conf")), None).unwrap();
        assert!(!c.tar);
        assert_eq!((c.tar_compress_sip, c.tar_compress_rtp), (want, Compress::Zstd), "{v}");
    }
    std::fs::write(d.join("v.conf"), "tar_compress_rtp = bzip2\n").unwrap();
    assert!(Config::load(Some(&d.join("v.conf")), None).is_err());
}

#[test]
fn link_send_timeout_bounds_a_file_run() {
    let d = tmpdir("linkwait");
    assert_eq!(Config::default().link_send_timeout, 60);
    std::fs::write(d.join("v.conf"), "link_send_timeout = 3\n").unwrap();
    let (c, r) = Config::load(Some(&d.join("v.conf")), None).unwrap();
    assert_eq!((c.link_send_timeout, r.unknown_keys.len()), (3, 0));
    std::fs::write(d.join("v.conf"), "link_send_timeout = soon\n").unwrap();
    assert!(Config::load(Some(&d.join("v.conf")), None).is_err());
}
