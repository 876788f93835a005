//! arm64: kexec_load with our own segments (Image, DTB, initrd) and a
//! purgatory that enters the kernel with the DTB address in x0.

use crate::{BootSpec, Error, Method, Result};

pub fn load(spec: &BootSpec) -> Result<Method> {
    let _ = spec;
    Err(Error::Unsupported(
        "arm64 loader not implemented yet".into(),
    ))
}
