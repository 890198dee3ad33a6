//! Shell completions and man pages for the kmstool binaries, generated from their own
//! command-line definitions with clap's companion crates (`clap_complete`, `clap_mangen`), so
//! they cannot drift from `--help`.

use std::path::{Path, PathBuf};

use clap::Command;
pub use clap_complete::Shell;

/// Writes a completion script for `shell` for each of `commands` into `dir` (created if
/// absent); returns the files written, named as each shell expects them (`kmstool-instance.bash`,
/// `_kmstool-instance` for zsh, `kmstool-instance.fish`, …).
pub fn write_completions(
    commands: &[Command],
    shell: Shell,
    dir: &Path,
) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    commands
        .iter()
        .map(|command| {
            let mut command = command.clone();
            let name = command.get_name().to_owned();
            clap_complete::generate_to(shell, &mut command, name, dir)
        })
        .collect()
}

/// Writes a man page (section 1) for each of `commands` and each of their subcommands into
/// `dir` (created if absent): `kmstool-instance.1`, `kmstool-enclave-cli-decrypt.1`, …; returns
/// the files written.
pub fn write_man_pages(commands: &[Command], dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    for command in commands {
        clap_mangen::generate_to(command.clone(), dir)?;
    }
    let mut written = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "1") && is_ours(&path, commands) {
            written.push(path);
        }
    }
    written.sort();
    Ok(written)
}

/// Whether `path` is the page of one of `commands` or of one of their subcommands.
fn is_ours(path: &Path, commands: &[Command]) -> bool {
    let Some(stem) = path.file_stem().and_then(|stem| stem.to_str()) else {
        return false;
    };
    commands.iter().any(|command| {
        stem == command.get_name() || stem.starts_with(&format!("{}-", command.get_name()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction};

    fn sample() -> Command {
        Command::new("kmstool-sample")
            .about("A sample")
            .arg(Arg::new("cid").long("cid").help("vsock CID of the enclave"))
            .subcommand(
                Command::new("decrypt").arg(
                    Arg::new("ciphertext-file")
                        .long("ciphertext-file")
                        .action(ArgAction::Set),
                ),
            )
    }

    #[test]
    fn completions_name_every_option_for_each_shell() {
        let dir = tempfile::tempdir().expect("temp dir");
        for (shell, file) in [
            (Shell::Bash, "kmstool-sample.bash"),
            (Shell::Zsh, "_kmstool-sample"),
            (Shell::Fish, "kmstool-sample.fish"),
        ] {
            let written = write_completions(&[sample()], shell, dir.path()).expect("write");
            assert_eq!(written, vec![dir.path().join(file)]);
            let script = std::fs::read_to_string(&written[0]).expect("read");
            assert!(script.contains("cid"), "{shell}: {script}");
            assert!(script.contains("ciphertext-file"), "{shell}: {script}");
        }
    }

    #[test]
    fn man_pages_for_the_command_and_its_subcommands() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("unrelated.1"), "x").expect("write");
        let written = write_man_pages(&[sample()], dir.path()).expect("write");
        let names: Vec<_> = written
            .iter()
            .map(|path| {
                path.file_name()
                    .expect("name")
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(names, ["kmstool-sample-decrypt.1", "kmstool-sample.1"]);
        let page = std::fs::read_to_string(dir.path().join("kmstool-sample.1")).expect("read");
        assert!(
            page.starts_with(".ie") || page.contains(".TH kmstool-sample"),
            "{page}"
        );
        assert!(page.contains("vsock CID of the enclave"), "{page}");
    }
}
