SUMMARY = "Confirm the booted fwpack A/B slot at the end of the boot"
DESCRIPTION = "A systemd unit or SysV init script that runs an optional \
               health check, then `fwpack-updater mark-good`: without it, \
               a newly installed slot falls back to the old one once its \
               boot tries are used up."
HOMEPAGE = "https://example.invalid/fwpack"
SECTION = "base"
LICENSE = "Apache-2.0 | MIT"
LIC_FILES_CHKSUM = "file://fwpack-mark-good;beginline=2;endline=2;md5=0b732c21d59f2de91cce72d468e6cfeb"

SRC_URI = "file://fwpack-mark-good \
           file://fwpack-mark-good.init \
           file://fwpack-mark-good.service"

S = "${UNPACKDIR}"

inherit systemd update-rc.d

# A shell command that must succeed before the slot is confirmed, e.g.
# "pidof myapp". Empty: run /etc/fwpack/health-check if the image has
# one, else confirm as soon as the boot gets this far.
FWPACK_HEALTH_CHECK ?= ""

# The /etc/default line, quoted for the file and again for the shell
# that writes it, so any command survives both.
def fwpack_health_check_line(d):
    import shlex
    line = "FWPACK_HEALTH_CHECK=" + shlex.quote(d.getVar("FWPACK_HEALTH_CHECK") or "")
    return shlex.quote(line)

INITSCRIPT_NAME = "fwpack-mark-good"
INITSCRIPT_PARAMS = "start 99 2 3 4 5 ."
SYSTEMD_SERVICE:${PN} = "fwpack-mark-good.service"

do_install() {
    install -D -m 0755 ${S}/fwpack-mark-good ${D}${sbindir}/fwpack-mark-good
    install -d ${D}${sysconfdir}/default
    printf '%s\n' ${@fwpack_health_check_line(d)} \
        > ${D}${sysconfdir}/default/fwpack-mark-good
    if ${@bb.utils.contains('DISTRO_FEATURES', 'sysvinit', 'true', 'false', d)}; then
        install -D -m 0755 ${S}/fwpack-mark-good.init ${D}${sysconfdir}/init.d/fwpack-mark-good
    fi
    if ${@bb.utils.contains('DISTRO_FEATURES', 'systemd', 'true', 'false', d)}; then
        install -D -m 0644 ${S}/fwpack-mark-good.service \
            ${D}${systemd_system_unitdir}/fwpack-mark-good.service
        sed -i -e 's,/usr/sbin/,${sbindir}/,' ${D}${systemd_system_unitdir}/fwpack-mark-good.service
    fi
}

CONFFILES:${PN} = "${sysconfdir}/default/fwpack-mark-good"
# The updater on the root filesystem; without it the script falls back
# to the copy the PID-1 updater leaves in /run/fwpack.
RDEPENDS:${PN} = "fwpack"
