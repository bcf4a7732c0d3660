//! `completions` and `man`: shell completion scripts and the man page, generated from the
//! clap definitions in [`super::Cli`], so they can never disagree with the parser.
use std::io::Write;
use std::process::ExitCode;

use clap::CommandFactory;

use super::Cli;

/// The program name completions are registered for.
const BIN: &str = "tether-manager";

/// Prints the completion script for `shell` to stdout.
pub(super) fn completions(shell: clap_complete::Shell) -> ExitCode {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), BIN, &mut out);
    print_all(&out)
}

/// Prints the man page (roff) to stdout.
pub(super) fn man() -> ExitCode {
    let mut out = Vec::new();
    match clap_mangen::Man::new(Cli::command()).render(&mut out) {
        Ok(()) => print_all(&out),
        Err(e) => {
            eprintln!("tether-manager: cannot render the man page: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print_all(bytes: &[u8]) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`| head`) is not worth a message.
        Err(_) => ExitCode::FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_man_page_names_every_subcommand() {
        let mut out = Vec::new();
        clap_mangen::Man::new(Cli::command()).render(&mut out).unwrap();
        let page = String::from_utf8(out).unwrap();
        assert!(page.starts_with(".ie") || page.contains(".TH tether-manager"), "{page}");
        for sub in ["init", "serve", "token", "admin\\-token", "completions", "man"] {
            assert!(page.contains(sub), "{sub} missing");
        }
    }
}
