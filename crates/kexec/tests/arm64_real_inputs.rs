//! The arm64 loader's pure parts on Debian's real arm64 kernel package:
//! its `Image` header and every device tree it ships survive parse and
//! rewrite unchanged.

use kexec::arm64;
use kexec::fdt::Fdt;

#[test]
fn debian_image_and_device_trees() {
    if !testkit::tools::require("apt-get") || !testkit::tools::require("dpkg-deb") {
        return;
    }
    let k = testkit::kernels::arm64().unwrap();
    let image = std::fs::read(&k.vmlinuz).unwrap();
    let h = arm64::parse_image(&image).unwrap();
    assert_eq!(h.text_offset, 0);
    assert!(h.image_size >= image.len() as u64);

    let mut seen = 0;
    for e in walk(&k.dtbs_dir) {
        let blob = std::fs::read(&e).unwrap();
        let f = Fdt::parse(&blob).unwrap_or_else(|err| panic!("{}: {err}", e.display()));
        let again = Fdt::parse(&f.to_bytes()).unwrap();
        assert_eq!(again, f, "{}", e.display());
        seen += 1;
    }
    assert!(
        seen > 100,
        "only {seen} device trees under {}",
        k.dtbs_dir.display()
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "dtb") {
            out.push(p);
        }
    }
    out
}
