//! `mx6 config check`: every finding with its key and line; exit 1 on an error.

use std::path::Path;
use std::process::ExitCode;

use crate::commands::support::load;

pub fn check(config: Option<&Path>) -> ExitCode {
    match load(config) {
        Some(_) => {
            println!("config ok");
            ExitCode::SUCCESS
        }
        None => ExitCode::from(1),
    }
}
