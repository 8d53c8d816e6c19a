//! Generates bindings for the system DPDK and compiles the fast-path shim.
//!
//! DPDK is found with pkg-config (`libdpdk`, Debian's `libdpdk-dev`); bindgen needs libclang (`libclang-dev`).
//! Without them the build stops with a message naming the packages, or build voxtap with
//! `--no-default-features` to leave DPDK out.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=csrc");
    println!("cargo:rerun-if-changed=build.rs");
    let lib = match pkg_config::Config::new().probe("libdpdk") {
        Ok(lib) => lib,
        Err(e) => panic!(
            "\n\nDPDK was not found ({e}).\nInstall it with: apt-get install -y libdpdk-dev libclang-dev pkg-config\n\
             or build voxtap without DPDK: cargo build --no-default-features\n\n"
        ),
    };
    let _ = lib;
    // All cflags, including `-include rte_config.h` and `-march`, which the pkg-config crate does not expose.
    let out = Command::new("pkg-config").args(["--cflags", "libdpdk"]).output().expect("run pkg-config");
    let cflags: Vec<String> = String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_owned).collect();

    let mut cc = cc::Build::new();
    cc.file("csrc/shim.c").opt_level(3).warnings(false);
    for f in &cflags {
        cc.flag(f);
    }
    cc.compile("voxtap_dpdk_shim");

    let bindings = bindgen::Builder::default()
        .header("csrc/wrapper.h")
        .clang_args(&cflags)
        .clang_arg("-Icsrc")
        .allowlist_function("rte_(eal_init|eal_cleanup|eth_.*|pktmbuf_pool_create|mempool_free|socket_id|dev_probe|dev_remove|strerror|lcore_count)")
        .allowlist_function("vx_.*")
        .allowlist_type("rte_eth_(conf|rxconf|txconf|dev_info|stats|rss_conf|rxmode|txmode|rx_adv_conf)")
        .allowlist_type("rte_mbuf")
        .allowlist_var("RTE_ETH_(RX_OFFLOAD_TIMESTAMP|MQ_RX_RSS|MQ_RX_NONE).*")
        .allowlist_var("RTE_MBUF_DEFAULT_BUF_SIZE|RTE_MAX_ETHPORTS")
        .opaque_type("rte_gtp_psc_generic_hdr")
        .blocklist_type("__tile1024i.*")
        .derive_default(true)
        .generate_comments(false)
        .layout_tests(false)
        .generate()
        .expect("bindgen over the DPDK headers");
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    bindings.write_to_file(out.join("dpdk.rs")).expect("write bindings");
}
