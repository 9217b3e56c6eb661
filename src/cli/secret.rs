//! Getting the passphrase or key file: `--key-file`, `--password-file` (or their
//! environment variables), or a prompt on the terminal.

use super::Cli;
use crate::error::{Error, IoContext, Result};
use crate::keys::crypto::parse_key_file;
use crate::keys::keystore::Secret;
use std::io::IsTerminal;
use std::path::Path;
use zeroize::Zeroizing;

fn read_password_file(path: &Path) -> Result<Secret> {
    let mut bytes = Zeroizing::new(
        std::fs::read(path).ctx(|| format!("reading password file {}", path.display()))?,
    );
    if bytes.ends_with(b"\n") {
        bytes.pop();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
    }
    if bytes.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "password file {} is empty",
            path.display()
        )));
    }
    Ok(Secret::Passphrase(bytes))
}

fn read_key(path: &Path) -> Result<Secret> {
    let bytes =
        Zeroizing::new(std::fs::read(path).ctx(|| format!("reading key file {}", path.display()))?);
    Ok(Secret::KeyFile(parse_key_file(&bytes)?))
}

fn prompt(confirm: bool) -> Result<Secret> {
    if !std::io::stdin().is_terminal() {
        return Err(Error::InvalidArgument(
            "no passphrase given: pass --password-file F (or ENVELOPEFS_PASSWORD_FILE), or run on a terminal".into(),
        ));
    }
    let p = Zeroizing::new(
        rpassword::prompt_password("Passphrase: ").ctx(|| "reading the passphrase".to_string())?,
    );
    if p.is_empty() {
        return Err(Error::InvalidArgument("the passphrase is empty".into()));
    }
    if confirm {
        let again = Zeroizing::new(
            rpassword::prompt_password("Repeat passphrase: ")
                .ctx(|| "reading the passphrase".to_string())?,
        );
        if *again != *p {
            return Err(Error::InvalidArgument("the passphrases differ".into()));
        }
    }
    Ok(Secret::Passphrase(Zeroizing::new(p.as_bytes().to_vec())))
}

/// The secret for `init` (a prompt asks twice).
pub fn for_init(cli: &Cli) -> Result<Secret> {
    match (&cli.key_file, &cli.password_file) {
        (Some(_), Some(_)) => Err(Error::InvalidArgument(
            "give either --key-file or --password-file, not both".into(),
        )),
        (Some(k), None) => read_key(k),
        (None, Some(p)) => read_password_file(p),
        (None, None) => prompt(true),
    }
}

/// The secret to open a store whose config says `key_source`.
pub fn for_open(cli: &Cli, key_source: &str) -> Result<Secret> {
    if key_source == "keyfile" {
        return match &cli.key_file {
            Some(k) => read_key(k),
            None => Err(Error::InvalidArgument(
                "this store is sealed with a key file: pass --key-file F (or ENVELOPEFS_KEY_FILE)"
                    .into(),
            )),
        };
    }
    match &cli.password_file {
        Some(p) => read_password_file(p),
        None => prompt(false),
    }
}
