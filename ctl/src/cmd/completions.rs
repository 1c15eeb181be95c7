//! `syncctl completions SHELL` and the hidden `syncctl man`: generated from the clap
//! definition, no daemon needed.

use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;

use crate::Cli;

pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<ExitCode> {
    clap_complete::generate(
        shell,
        &mut Cli::command(),
        "syncctl",
        &mut std::io::stdout(),
    );
    Ok(ExitCode::SUCCESS)
}

pub fn man() -> anyhow::Result<ExitCode> {
    clap_mangen::Man::new(Cli::command())
        .section("8")
        .render(&mut std::io::stdout())
        .context("writing the man page")?;
    Ok(ExitCode::SUCCESS)
}
