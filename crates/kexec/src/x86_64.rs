//! x86_64: kexec_file_load of a bzImage (the kernel parses it itself).

use crate::{BootSpec, Error, Method, Result};

pub fn load(spec: &BootSpec) -> Result<Method> {
    let _ = spec;
    Err(Error::Unsupported(
        "x86_64 loader not implemented yet".into(),
    ))
}
