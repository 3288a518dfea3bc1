//! `cipherstream keygen`: a fresh 32-byte key from the operating system, as base64 and a newline.

use std::fs::OpenOptions;
use std::io::Write;

use crate::cli::KeygenArgs;
use crate::error::{Error, Result};
use crate::format::key::Key;
use crate::sink::Output;

/// Run `keygen`.
pub fn run(args: &KeygenArgs) -> Result<()> {
    let key = Key::generate()?;
    let line = key.to_base64_line();
    match args.output.as_ref().and_then(Output::path) {
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(line.as_bytes())
                .and_then(|()| out.flush())
                .map_err(|e| Error::io("writing standard output", e))
        }
        Some(path) => {
            let mut options = OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(path).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    Error::Usage(format!(
                        "{} already exists: keygen never overwrites a key file",
                        path.display()
                    ))
                } else {
                    Error::io(format!("cannot create {}", path.display()), e)
                }
            })?;
            let written = file
                .write_all(line.as_bytes())
                .and_then(|()| file.sync_all());
            if let Err(e) = written {
                drop(file);
                let _ = std::fs::remove_file(path);
                return Err(Error::io(format!("writing {}", path.display()), e));
            }
            Ok(())
        }
    }
}
