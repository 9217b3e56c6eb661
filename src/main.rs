//! The `envelopefs` binary: parse, run, map the outcome to an exit code.

use clap::Parser;
use envelopefs::cli::{self, Cli, Exit};

fn main() {
    let cli = Cli::parse();
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
