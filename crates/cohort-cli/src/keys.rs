//! `cohort keys`: cluster keys for `--key-file`.

use clap::Subcommand;

use crate::CliResult;

/// `cohort keys` subcommands.
#[derive(Subcommand, Debug, Clone)]
pub(crate) enum KeysCommand {
    /// Print a new random key (64 hexadecimal digits), a line of a key file.
    Generate,
    /// List the key ids of a key file, the primary (first) one first.
    List {
        /// The key file.
        #[arg(long)]
        key_file: std::path::PathBuf,
    },
    /// Add a key to a key file (not primary). Step 1 of a rotation: do it on every node's
    /// key file and send each node SIGHUP, so every node accepts the new key.
    Install {
        /// The key file.
        #[arg(long)]
        key_file: std::path::PathBuf,
        /// The key, 64 hexadecimal digits (`cohort keys generate`).
        key: String,
    },
    /// Make a key of a key file primary (it seals what the node sends). Step 2 of a
    /// rotation, on every node (then SIGHUP), once every node has the key installed.
    Use {
        /// The key file.
        #[arg(long)]
        key_file: std::path::PathBuf,
        /// The key's id (`cohort keys list`).
        id: String,
    },
    /// Remove a key from a key file (not the primary one). Step 3 of a rotation, on every
    /// node (then SIGHUP), once every node seals with the new key.
    Remove {
        /// The key file.
        #[arg(long)]
        key_file: std::path::PathBuf,
        /// The key's id (`cohort keys list`).
        id: String,
    },
}

/// The key lines of a key file (its comments and blank lines dropped), as read.
fn key_lines(path: &std::path::Path) -> Result<Vec<String>, String> {
    // Reading it as a keyring checks every line.
    crate::node::read_key_file(path)?;
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect())
}

/// The id of the key written on `line`.
fn id_of(line: &str) -> Result<String, String> {
    cohort::Key::from_hex(line)
        .map(|k| k.id().to_string())
        .map_err(|e| e.to_string())
}

/// Writes `lines` as the key file at `path`, replacing it at once (a node reloading it
/// reads the old file or the new one), readable by its owner only.
fn write_key_lines(path: &std::path::Path, lines: &[String]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut text = String::from("# cluster keys: the first seals, all open (cohort keys)\n");
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    // The new file must be a valid keyring before it replaces the old one.
    cohort::Keyring::from_key_file(&text).map_err(|e| e.to_string())?;
    let tmp = path.with_extension("keys-new");
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The index of the line holding the key named `id`.
fn find(lines: &[String], id: &str) -> Result<usize, String> {
    for (i, l) in lines.iter().enumerate() {
        if id_of(l)?.eq_ignore_ascii_case(id) {
            return Ok(i);
        }
    }
    Err(format!("no key {id} in the key file"))
}

pub(crate) fn run(command: KeysCommand) -> CliResult {
    match command {
        KeysCommand::Generate => {
            println!("{}", cohort::Key::generate(&mut rand::rng()).to_hex());
        }
        KeysCommand::List { key_file } => {
            let ring = crate::node::read_key_file(&key_file)?;
            for (i, id) in ring.list().iter().enumerate() {
                println!("{id}{}", if i == 0 { " primary" } else { "" });
            }
        }
        KeysCommand::Install { key_file, key } => {
            let id = id_of(key.trim())?;
            let mut lines = key_lines(&key_file)?;
            if find(&lines, &id).is_err() {
                lines.push(key.trim().to_ascii_lowercase());
                write_key_lines(&key_file, &lines)?;
            }
            println!("{id} installed");
        }
        KeysCommand::Use { key_file, id } => {
            let mut lines = key_lines(&key_file)?;
            let at = find(&lines, &id)?;
            let line = lines.remove(at);
            lines.insert(0, line);
            write_key_lines(&key_file, &lines)?;
            println!("{id} primary");
        }
        KeysCommand::Remove { key_file, id } => {
            let mut lines = key_lines(&key_file)?;
            let at = find(&lines, &id)?;
            if at == 0 {
                return Err(format!(
                    "key {id} is primary; make another key primary (cohort keys use) first"
                )
                .into());
            }
            lines.remove(at);
            write_key_lines(&key_file, &lines)?;
            println!("{id} removed");
        }
    }
    Ok(())
}
