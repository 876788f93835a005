# The "fwi" image type: a signed fwpack update image (.fwi) of the root
# filesystem, verified with the public key right after signing, and the
# fwpack updater initramfs (the static fwpack-updater as /init) beside it.
#
#   IMAGE_CLASSES += "image_types_fwpack"  (local.conf, or inherit it in
#                                          the image recipe)
#   IMAGE_FSTYPES += "fwi"
#   FWPACK_PAYLOAD_VERSION = "7"           anti-rollback counter: raise it
#                                          with every release
#   FWPACK_KEY = "/secure/release.pem"     or, with the key on a token/KMS:
#   FWPACK_SIGNER_CMD = "..."              see docs/RELEASE.md; the command
#   FWPACK_PUBKEY = "/path/release.pub.pem"  runs in bitbake's clean
#                                          environment: pass a PIN through
#                                          BB_ENV_PASSTHROUGH_ADDITIONS
#
# Outputs in DEPLOY_DIR_IMAGE: <image>.fwi and <image>.fwpack-initramfs.cpio.gz,
# with the usual <image>-<machine>.* links.

# fwpack board (`fwpack boards`): the compatible string in the image header
# the updater checks. Known machines map to fwpack's shipped boards.
def fwpack_default_board(d):
    boards = {
        "qemuarm64": "qemu-aarch64",
        "qemux86-64": "qemu-x86_64",
        "raspberrypi0-2w-64": "rpi-zero2w",
        "visionfive2": "visionfive2",
    }
    return boards.get(d.getVar("MACHINE"), "")

FWPACK_BOARD ??= "${@fwpack_default_board(d)}"
FWPACK_PAYLOAD_VERSION ??= "1"
FWPACK_LABEL ??= "${DISTRO_VERSION}"
FWPACK_ROOTFS_TYPE ??= "ext4"
FWPACK_COMPRESS ??= "zstd"
FWPACK_KEY ??= ""
FWPACK_SIGNER_CMD ??= ""
FWPACK_PUBKEY ??= ""
# Kernel modules the updater loads before the target disk appears (e.g.
# "virtio_blk" or "sdhci_iproc mmc_block"); empty when they are built in.
FWPACK_INITRAMFS_MODULES ??= ""
FWPACK_DATADIR = "${STAGING_DATADIR_NATIVE}/fwpack"

IMAGE_TYPES += "fwi"
# nooelint: oelint.vars.specific - "fwi" is the image type this class defines
IMAGE_TYPEDEP:fwi = "${FWPACK_ROOTFS_TYPE}"
do_image_fwi[depends] += "fwpack-native:do_populate_sysroot fwpack:do_deploy openssl-native:do_populate_sysroot"

IMAGE_CMD:fwi () {
    if [ -z "${FWPACK_BOARD}" ]; then
        bbfatal "FWPACK_BOARD is not set and MACHINE ${MACHINE} has no default (see fwpack boards)"
    fi
    if [ -n "${FWPACK_SIGNER_CMD}" ]; then
        [ -n "${FWPACK_PUBKEY}" ] || bbfatal "FWPACK_SIGNER_CMD needs FWPACK_PUBKEY"
        set -- --signer-cmd "${FWPACK_SIGNER_CMD}" --pubkey "${FWPACK_PUBKEY}"
        pubkey="${FWPACK_PUBKEY}"
    elif [ -n "${FWPACK_KEY}" ]; then
        set -- --key "${FWPACK_KEY}"
        pubkey="${WORKDIR}/fwpack-release.pub.pem"
        openssl pkey -in "${FWPACK_KEY}" -pubout -out "$pubkey"
    else
        bbfatal "no signing key: set FWPACK_KEY (fwpack keygen -o KEY.pem) or FWPACK_SIGNER_CMD and FWPACK_PUBKEY"
    fi

    SOURCE_DATE_EPOCH="${REPRODUCIBLE_TIMESTAMP_ROOTFS}" fwpack stamp \
        --board "${FWPACK_BOARD}" \
        --version "${FWPACK_PAYLOAD_VERSION}" \
        --label "${FWPACK_LABEL}" \
        -s "rootfs=${IMGDEPLOYDIR}/${IMAGE_NAME}.${FWPACK_ROOTFS_TYPE},target=system,compress=${FWPACK_COMPRESS}" \
        -o "${IMGDEPLOYDIR}/${IMAGE_NAME}.fwi" \
        "$@"
    # What a device will do: verify with the public key alone.
    fwpack verify "${IMGDEPLOYDIR}/${IMAGE_NAME}.fwi" -k "$pubkey" \
        --board "${FWPACK_BOARD}" --min-version "${FWPACK_PAYLOAD_VERSION}"

    set -- --var "UPDATER=${DEPLOY_DIR_IMAGE}/fwpack-updater"
    if [ -n "${FWPACK_INITRAMFS_MODULES}" ]; then
        set -- "$@" --var "MODULES=${FWPACK_INITRAMFS_MODULES}" \
            --var "KERNEL_MODULES=$(echo "${IMAGE_ROOTFS}${nonarch_base_libdir}"/modules/*)"
    fi
    SOURCE_DATE_EPOCH="${REPRODUCIBLE_TIMESTAMP_ROOTFS}" fwpack initramfs \
        --recipe "${FWPACK_DATADIR}/recipes/updater-initramfs.yaml" \
        -o "${IMGDEPLOYDIR}/${IMAGE_NAME}.fwpack-initramfs.cpio.gz" \
        "$@"
    # create_symlinks only links the type's own file (.fwi).
    if [ -n "${IMAGE_LINK_NAME}" ]; then
        ln -sf "${IMAGE_NAME}.fwpack-initramfs.cpio.gz" \
            "${IMGDEPLOYDIR}/${IMAGE_LINK_NAME}.fwpack-initramfs.cpio.gz"
    fi
}

# The signer command and key paths select the signature, so they are
# part of the task signature; the key material itself never is.
IMAGE_CMD:fwi[vardeps] += "FWPACK_BOARD FWPACK_PAYLOAD_VERSION FWPACK_KEY FWPACK_SIGNER_CMD FWPACK_PUBKEY FWPACK_INITRAMFS_MODULES"
