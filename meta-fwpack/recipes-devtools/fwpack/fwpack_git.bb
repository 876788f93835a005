SUMMARY = "Build, sign and apply firmware images for embedded Linux boards"
DESCRIPTION = "fwpack-native is the build-time tool (signed .fwi images, \
               updater initramfs, boot files, disk images). The target \
               package is fwpack-updater, the static device-side updater \
               that applies signed images to A/B slots; it is deployed for \
               the image_types_fwpack class to put into the initramfs."
HOMEPAGE = "https://example.invalid/fwpack"
SECTION = "devel"
CVE_PRODUCT = "fwpack"
LICENSE = "Apache-2.0 | MIT"
LIC_FILES_CHKSUM = "file://LICENSE-APACHE;md5=288526dc6d1f1ba8ce2226ee433ca5c8 \
                    file://LICENSE-MIT;md5=bcbb65b85917aeceef3919982c28f978"

# The repository's public address; for a local checkout or a mirror set
# e.g. FWPACK_GIT_URI = "git:///path/to/fwpack;protocol=file" in
# local.conf (the kas file forwards it from the environment). SRCREV, PV
# and the checksums are moved together by `cargo xtask release`.
FWPACK_GIT_URI ?= "git://example.invalid/fwpack.git;protocol=https"
PV = "0.1.0+git"
SRC_URI = "${FWPACK_GIT_URI};branch=main"
SRCREV = "418c8c7c5c0b1514102c7285fd2828ae59f0ba63"

inherit cargo cargo-update-recipe-crates deploy

# The oldest Rust that builds the dependency tree (ruzstd 0.8 declares
# rust-version 1.87): refuse clearly instead of failing in do_compile
# when a distro pins an older RUSTVERSION.
FWPACK_MIN_RUST = "1.87"
# nooelint: oelint.task.noanonpython - a parse-time check is the point
python () {
    rust = (d.getVar("RUSTVERSION") or "").rstrip("%")
    if rust and bb.utils.vercmp_string_op(rust, d.getVar("FWPACK_MIN_RUST"), "<"):
        raise bb.parse.SkipRecipe("needs Rust %s or later, RUSTVERSION is %s"
                                  % (d.getVar("FWPACK_MIN_RUST"), rust))
}

# Generated from Cargo.lock at SRCREV by meta-fwpack/scripts/fwpack-crates-inc.py
require ${BPN}-crates.inc

# A virtual workspace: build one member per variant, with the lock file
# of the workspace root.
CARGO_LOCK_PATH = "${S}/Cargo.lock"
CARGO_SRC_DIR = "crates/updater"
CARGO_SRC_DIR:class-native = "crates/fwpack"

# The updater runs as PID 1 from the initramfs: static (no loader, no
# libc.so in the initramfs), and a panic aborts instead of unwinding.
CARGO_BUILD_FLAGS:append:class-target = " --bin fwpack-updater"
RUSTFLAGS:append:class-target = " -C target-feature=+crt-static"
export CARGO_PROFILE_RELEASE_PANIC = "abort"
CARGO_PROFILE_RELEASE_PANIC:class-native = "unwind"
# The workspace's "device" profile, for the updater's 1 MiB size budget,
# its per-package opt-levels included (as in Buildroot's fwpack.mk).
CARGO_BUILD_FLAGS:append:class-target = " --config 'profile.release.package.updater.opt-level="z"'"
CARGO_BUILD_FLAGS:append:class-target = " --config 'profile.release.package.fwimage.opt-level="z"'"
CARGO_BUILD_FLAGS:append:class-target = " --config 'profile.release.package.board.opt-level="z"'"
export CARGO_PROFILE_RELEASE_OPT_LEVEL = "z"
CARGO_PROFILE_RELEASE_OPT_LEVEL:class-native = "3"
export CARGO_PROFILE_RELEASE_LTO = "fat"
CARGO_PROFILE_RELEASE_LTO:class-native = "thin"
export CARGO_PROFILE_RELEASE_CODEGEN_UNITS = "1"
CARGO_PROFILE_RELEASE_CODEGEN_UNITS:class-native = "4"
# The workspace profile strips; leave that to do_package so -dbg packages
# get the symbols (do_deploy strips its copy itself).
export CARGO_PROFILE_RELEASE_STRIP = "false"

# fwpack reads board configs and initramfs recipes at run time; the
# fwpack-image class points FWPACK_CONFIGS and --recipe here.
do_install:append:class-native() {
    install -d ${D}${datadir}/fwpack/configs ${D}${datadir}/fwpack/recipes
    install -m 0644 ${S}/configs/*.yaml ${D}${datadir}/fwpack/configs/
    install -m 0644 ${S}/recipes/*.yaml ${D}${datadir}/fwpack/recipes/
}

# The deployed copy goes into the initramfs: stripped, for the size budget
# `fwpack` checks.
do_deploy() {
    install -d ${DEPLOYDIR}
    ${STRIP} -o ${DEPLOYDIR}/fwpack-updater ${D}${bindir}/fwpack-updater
}
do_deploy:class-native() {
    :
}
addtask deploy after do_install before do_build

BBCLASSEXTEND = "native"
