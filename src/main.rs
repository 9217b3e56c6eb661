//! The `envelopefs` binary: parse, run, map the outcome to an exit code. Started as
//! `mount.fuse.envelopefs` (a symlink), it is the mount(8) helper instead.

use clap::Parser;
use envelopefs::cli::{self, mounthelper, Cli, Exit, Top};
use envelopefs::{daemon, logging};

fn main() {
    let mut args = std::env::args_os();
    if args
        .next()
        .is_some_and(|a0| mounthelper::invoked_as_helper(&a0))
    {
        let args: Result<Vec<String>, _> = args.map(|a| a.into_string()).collect();
        let code = match args {
            Ok(a) => mounthelper::main(&a),
            Err(a) => {
                eprintln!("mount.fuse.envelopefs: argument {a:?} is not UTF-8");
                mounthelper::EXIT_USAGE
            }
        };
        std::process::exit(code);
    }
    // Usage errors exit 1 (2 is reserved for "a wait timed out"); help and version exit 0.
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    if let Some(level) = &cli.log_level {
        // Handed on to the background mount daemon, which this process may start. Set while
        // the process has a single thread.
        std::env::set_var("RUST_LOG", level);
    }
    match &cli.command {
        Top::Mount(m) if std::env::var_os(daemon::DAEMON_ENV).is_some() => {
            let log = match m
                .path
                .to_str()
                .and_then(envelopefs::store::s3::backend::S3Location::parse)
            {
                Some(Ok(at)) => cli::location::mount_log(&at),
                _ => logging::daemon_log_path(&m.path),
            };
            logging::init_daemon(cli.log_level.as_deref(), &log);
        }
        _ => logging::init_stderr(cli.log_level.as_deref()),
    }
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
