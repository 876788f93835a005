#!/bin/sh
# Buildroot post-image script: turns what Buildroot built (kernel Image,
# DTBs, GPU firmware, ext4 root filesystem, static fwpack-updater) into
# fwpack's outputs in ${BINARIES_DIR}/fwpack: sdcard.img, update.fwi
# (signed, naming the SBOM), initramfs.cpio.gz, boot/, sbom.spdx.json and
# manifest.json.
#
# Signing key, first match wins (environment, so no secret ends up in
# .config or in a defconfig):
#   FWPACK_SIGNER_CMD and FWPACK_PUBKEY  an external signer (PKCS#11 token,
#                                        cloud KMS, see docs/RELEASE.md):
#                                        the private key stays off this host
#   FWPACK_KEY                           a PKCS#8 PEM private key file
#   neither                              a development key, made once in
#                                        ${BASE_DIR}/fwpack-dev-key.pem
# Anything in BR2_ROOTFS_POST_SCRIPT_ARGS is passed on to `fwpack build`,
# e.g. "--version 7 --label 2026.11" (payload version for anti-rollback).

set -eu

BOARD=rpi-zero2w
FWPACK="${HOST_DIR}/bin/fwpack"
SHARE="${HOST_DIR}/share/fwpack"
OUT="${BINARIES_DIR}/fwpack"
# The initramfs' /init: the plain build. With the fleet option the
# system's /usr/bin/fwpack-updater is the larger `fleet` build, and the
# package leaves the plain one here.
UPDATER="${BINARIES_DIR}/fwpack-updater-init"
[ -e "${UPDATER}" ] || UPDATER="${TARGET_DIR}/usr/bin/fwpack-updater"

# Buildroot passes BINARIES_DIR first; the rest is ours.
shift

die() {
	echo "post-image: $*" >&2
	exit 1
}

[ -x "${FWPACK}" ] || die "${FWPACK} missing: enable BR2_PACKAGE_HOST_FWPACK"
[ -x "${UPDATER}" ] || die "${UPDATER} missing: enable BR2_PACKAGE_FWPACK"
[ -f "${BINARIES_DIR}/rootfs.ext4" ] ||
	die "no rootfs.ext4: enable BR2_TARGET_ROOTFS_EXT2_4"

# The kernel's modules directory, for the SD card driver the updater
# initramfs loads when it is not built in. Exactly one release is expected.
MODULES_DIR=
for d in "${TARGET_DIR}"/lib/modules/*; do
	[ -d "${d}/kernel" ] || continue
	[ -z "${MODULES_DIR}" ] || die "several kernels in ${TARGET_DIR}/lib/modules"
	MODULES_DIR="${d}"
done
[ -n "${MODULES_DIR}" ] || die "no lib/modules/<release>/kernel in ${TARGET_DIR}"

if [ -n "${FWPACK_SIGNER_CMD:-}" ]; then
	[ -n "${FWPACK_PUBKEY:-}" ] || die "FWPACK_SIGNER_CMD needs FWPACK_PUBKEY"
	set -- --signer-cmd "${FWPACK_SIGNER_CMD}" --pubkey "${FWPACK_PUBKEY}" "$@"
elif [ -n "${FWPACK_KEY:-}" ]; then
	set -- --key "${FWPACK_KEY}" "$@"
else
	KEY="${BASE_DIR}/fwpack-dev-key.pem"
	if [ ! -f "${KEY}" ]; then
		"${FWPACK}" keygen -o "${KEY}"
	fi
	echo "post-image: WARNING: signing with the development key ${KEY};" \
		"set FWPACK_KEY or FWPACK_SIGNER_CMD for release images" >&2
	set -- --key "${KEY}" "$@"
fi

FWPACK_CONFIGS="${SHARE}/configs" "${FWPACK}" build \
	--board "${BOARD}" \
	--out "${OUT}" \
	--recipe "${SHARE}/recipes/updater-initramfs.yaml" \
	--kernel "${BINARIES_DIR}/Image" \
	--dtb-dir "${BINARIES_DIR}" \
	--firmware-dir "${BINARIES_DIR}/rpi-firmware" \
	--modules-dir "${MODULES_DIR}" \
	--rootfs "${BINARIES_DIR}/rootfs.ext4" \
	--updater "${UPDATER}" \
	"$@"
