//! Kernel modules from the load-order file the initramfs build writes
//! (`/etc/fwpack/modules.load`: absolute paths, every module after its
//! dependencies), loaded with `finit_module`.

use std::path::Path;

/// What loading one module did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Loaded,
    /// EEXIST: loaded before (or built in under the same name).
    AlreadyLoaded,
    Failed(String),
}

/// Paths listed in a load-order file: one per line; blank lines and
/// `#` comments skipped.
pub fn parse_list(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

pub fn load(path: &str) -> Outcome {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return Outcome::Failed(format!("open: {e}")),
    };
    match rustix::system::finit_module(&file, c"", 0) {
        Ok(()) => Outcome::Loaded,
        Err(rustix::io::Errno::EXIST) => Outcome::AlreadyLoaded,
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

/// Loads every module of the list in order, logging each. A failure is
/// reported and loading goes on: the device wait that follows says
/// whether what mattered arrived.
pub fn load_all(list: &Path) -> Result<(usize, usize), String> {
    let text = std::fs::read_to_string(list)
        .map_err(|e| format!("module list {}: {e}", list.display()))?;
    let (mut ok, mut failed) = (0, 0);
    for m in parse_list(&text) {
        match load(m) {
            Outcome::Loaded => {
                ok += 1;
                crate::log!("module {m} loaded");
            }
            Outcome::AlreadyLoaded => ok += 1,
            Outcome::Failed(e) => {
                failed += 1;
                crate::log!("module {m} failed to load: {e}");
            }
        }
    }
    Ok((ok, failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_parsing() {
        let t = "# load order\n/lib/modules/6.1/kernel/a.ko\n\n  /lib/modules/6.1/kernel/b.ko  \n";
        assert_eq!(
            parse_list(t),
            vec![
                "/lib/modules/6.1/kernel/a.ko",
                "/lib/modules/6.1/kernel/b.ko"
            ]
        );
    }

    #[test]
    fn missing_module_is_a_failure_not_a_panic() {
        assert!(matches!(
            load("/definitely/not/here.ko"),
            Outcome::Failed(_)
        ));
    }
}
