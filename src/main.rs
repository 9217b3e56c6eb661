//! The `envelopefs` binary: parse, run, map the outcome to an exit code.

use clap::Parser;
use envelopefs::cli::{self, Cli, Exit};

fn main() {
    // Usage errors exit 1 (2 is reserved for "a wait timed out"); help and version exit 0.
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    envelopefs::mount::init_logging(cli.log_level.as_deref());
    match cli::run(cli) {
        Exit::Ok => {}
        Exit::Error(e) => {
            eprintln!("envelopefs: {e}");
            std::process::exit(1);
        }
        Exit::TimedOut(m) => {
            eprintln!("envelopefs: {m}");
            std::process::exit(2);
        }
    }
}
