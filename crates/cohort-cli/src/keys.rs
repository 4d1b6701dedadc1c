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
    }
    Ok(())
}
