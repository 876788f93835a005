################################################################################
#
# fwpack
#
################################################################################

# A commit of the fwpack repository. By default it is cloned from the
# checkout this br2-external tree lives in, so the source archive (and its
# hash in fwpack.hash) is defined by the commit alone and the download
# needs no release server. Pointing FWPACK_SITE at a public clone of the
# repository gives the same archive, hence the same hash. To build your
# working tree instead, use FWPACK_OVERRIDE_SRCDIR (see the README).
FWPACK_VERSION = 418c8c7c5c0b1514102c7285fd2828ae59f0ba63
FWPACK_SITE = $(BR2_EXTERNAL_FWPACK_PATH)/..
FWPACK_SITE_METHOD = git
FWPACK_LICENSE = Apache-2.0 or MIT
FWPACK_LICENSE_FILES = LICENSE-APACHE LICENSE-MIT

# The repository is a virtual Cargo workspace: build its members. The
# target package is the device-side updater only; the host package is
# the fwpack command that the post-image script runs.
FWPACK_SUBDIR = crates/updater
HOST_FWPACK_SUBDIR = crates/fwpack
FWPACK_CARGO_BUILD_OPTS = --bin fwpack-updater \
	--config 'profile.release.package.updater.opt-level="z"' \
	--config 'profile.release.package.fwimage.opt-level="z"' \
	--config 'profile.release.package.board.opt-level="z"'
# fwpack-updater runs as PID 1 in the initramfs: a panic must abort (the
# kernel then reboots into the old slot), never unwind into a half state.
# The rest is the workspace's "device" profile, its per-package
# opt-levels included (the --config words: the release profile's "s" for
# these is for the host CLI). The 1 MiB budget `fwpack build` enforces is
# tight: on aarch64 musl linked by a GNU ld cross gcc, 2026-12-07,
# 1,030,688 bytes; without the --config words 1,118,344.
#
# It is static on every toolchain: it is /init of an initramfs that has
# no C library. Rust's musl targets link statically by default, its glibc
# (and uClibc) targets only with +crt-static, and `fwpack build` refuses
# a dynamic updater. With Buildroot's explicit --target, RUSTFLAGS reach
# the target crates only, not build scripts or proc macros.
FWPACK_CARGO_ENV = \
	CARGO_PROFILE_RELEASE_PANIC=abort \
	CARGO_PROFILE_RELEASE_OPT_LEVEL=z \
	CARGO_PROFILE_RELEASE_LTO=fat \
	CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 \
	RUSTFLAGS="-C target-feature=+crt-static"

# With FWPACK_OVERRIDE_SRCDIR there is no download step, hence no cargo
# vendoring: do it before configuring, as the download post-process would
# have, so that the --offline build finds every crate. The rsync must not
# copy the checkout's own build tree.
FWPACK_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = --exclude=/target --exclude=/VENDOR
HOST_FWPACK_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = $(FWPACK_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS)

define FWPACK_VENDOR_OVERRIDDEN_SOURCE
	mkdir -p $(@D)/.cargo $(BR_CARGO_HOME)
	cd $(@D) && $(HOST_MAKE_ENV) CARGO_HOME=$(BR_CARGO_HOME) \
		cargo vendor --locked VENDOR > $(@D)/.cargo/config.toml
endef

ifneq ($(FWPACK_OVERRIDE_SRCDIR),)
FWPACK_PRE_CONFIGURE_HOOKS += FWPACK_VENDOR_OVERRIDDEN_SOURCE
HOST_FWPACK_PRE_CONFIGURE_HOOKS += FWPACK_VENDOR_OVERRIDDEN_SOURCE
endif

# `fwpack build` reads board configs and the initramfs recipe at run
# time: install them next to the tool (post-image.sh points
# FWPACK_CONFIGS and --recipe here) rather than relying on the build
# directory staying around.
define HOST_FWPACK_INSTALL_DATA
	mkdir -p $(HOST_DIR)/share/fwpack
	rm -rf $(HOST_DIR)/share/fwpack/configs $(HOST_DIR)/share/fwpack/recipes
	cp -R $(@D)/configs $(@D)/recipes $(HOST_DIR)/share/fwpack/
endef
HOST_FWPACK_POST_INSTALL_HOOKS += HOST_FWPACK_INSTALL_DATA

# The infrastructure's `cargo install --bins` would install every binary
# of the crate and build it all again: install the one we built.
define FWPACK_INSTALL_TARGET_CMDS
	$(INSTALL) -D -m 0755 \
		$(@D)/target/$(RUSTC_TARGET_NAME)/$(if $(BR2_ENABLE_DEBUG),debug,release)/fwpack-updater \
		$(TARGET_DIR)/usr/bin/fwpack-updater
endef

# The mark-good service: confirms the booted slot once the boot got to
# the end (and the optional health check passed).
ifeq ($(BR2_PACKAGE_FWPACK_MARK_GOOD),y)
# The health check goes single-quoted into /etc/default: its ' are
# escaped for that, its $ and ` for the double-quoted printf argument.
FWPACK_MARK_GOOD_HEALTH_CHECK = \
	$(subst `,\`,$(subst $$,\$$,$(subst ','\'',$(call qstrip,$(BR2_PACKAGE_FWPACK_MARK_GOOD_HEALTH_CHECK)))))
define FWPACK_INSTALL_MARK_GOOD
	$(INSTALL) -D -m 0755 $(FWPACK_PKGDIR)/fwpack-mark-good \
		$(TARGET_DIR)/usr/sbin/fwpack-mark-good
	mkdir -p $(TARGET_DIR)/etc/default
	printf '%s\n' "FWPACK_HEALTH_CHECK='$(FWPACK_MARK_GOOD_HEALTH_CHECK)'" \
		> $(TARGET_DIR)/etc/default/fwpack-mark-good
endef
FWPACK_POST_INSTALL_TARGET_HOOKS += FWPACK_INSTALL_MARK_GOOD

define FWPACK_INSTALL_INIT_SYSV_MARK_GOOD
	$(INSTALL) -D -m 0755 $(FWPACK_PKGDIR)/S99fwpack-mark-good \
		$(TARGET_DIR)/etc/init.d/S99fwpack-mark-good
endef

define FWPACK_INSTALL_INIT_SYSTEMD_MARK_GOOD
	$(INSTALL) -D -m 0644 $(FWPACK_PKGDIR)/fwpack-mark-good.service \
		$(TARGET_DIR)/usr/lib/systemd/system/fwpack-mark-good.service
endef
endif

# The fleet client: the `fleet` build becomes the system's
# /usr/bin/fwpack-updater, built a second time, into its own target
# directory, by the command of Buildroot's cargo infrastructure run in
# the crate that has the feature (crates/fwpack-updater). The plain
# build stays the initramfs' /init (the fleet build is over its 1 MiB
# budget): it goes to the images directory, where post-image.sh looks
# first.
ifeq ($(BR2_PACKAGE_FWPACK_FLEET),y)
FWPACK_FLEET_BIN = \
	$(@D)/target-fleet/$(RUSTC_TARGET_NAME)/$(if $(BR2_ENABLE_DEBUG),debug,release)/fwpack-updater
define FWPACK_BUILD_FLEET
	cd $(@D)/crates/fwpack-updater && \
	$(TARGET_MAKE_ENV) \
		$(TARGET_CONFIGURE_OPTS) \
		$(PKG_CARGO_ENV) \
		$(FWPACK_CARGO_ENV) \
		cargo build \
			--offline \
			$(if $(BR2_ENABLE_DEBUG),,--release) \
			--manifest-path Cargo.toml \
			--locked \
			--bin fwpack-updater \
			--features fleet \
			--target-dir $(@D)/target-fleet
endef
FWPACK_POST_BUILD_HOOKS += FWPACK_BUILD_FLEET

define FWPACK_INSTALL_FLEET
	$(INSTALL) -D -m 0755 $(FWPACK_FLEET_BIN) \
		$(TARGET_DIR)/usr/bin/fwpack-updater
endef
FWPACK_POST_INSTALL_TARGET_HOOKS += FWPACK_INSTALL_FLEET

FWPACK_INSTALL_IMAGES = YES
define FWPACK_INSTALL_IMAGES_CMDS
	$(INSTALL) -D -m 0755 \
		$(@D)/target/$(RUSTC_TARGET_NAME)/$(if $(BR2_ENABLE_DEBUG),debug,release)/fwpack-updater \
		$(BINARIES_DIR)/fwpack-updater-init
endef

define FWPACK_INSTALL_INIT_SYSV_FLEET
	$(INSTALL) -D -m 0755 $(FWPACK_PKGDIR)/S99fwpack-fleet \
		$(TARGET_DIR)/etc/init.d/S99fwpack-fleet
endef

define FWPACK_INSTALL_INIT_SYSTEMD_FLEET
	$(INSTALL) -D -m 0644 $(FWPACK_PKGDIR)/fwpack-fleet.service \
		$(TARGET_DIR)/usr/lib/systemd/system/fwpack-fleet.service
endef
endif

# The services of the options above (each empty when its option is
# off), for the init system in use.
define FWPACK_INSTALL_INIT_SYSV
	$(FWPACK_INSTALL_INIT_SYSV_MARK_GOOD)
	$(FWPACK_INSTALL_INIT_SYSV_FLEET)
endef

define FWPACK_INSTALL_INIT_SYSTEMD
	$(FWPACK_INSTALL_INIT_SYSTEMD_MARK_GOOD)
	$(FWPACK_INSTALL_INIT_SYSTEMD_FLEET)
endef

$(eval $(cargo-package))
$(eval $(host-cargo-package))
