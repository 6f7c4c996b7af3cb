//! `sngate passwd`: hash a password for the embedded broker's
//! `[[broker.users]]`, read without echo from the terminal (twice) or as the
//! first line of standard input, and print the hash or the whole entry.

use std::io::Read;
use std::process::ExitCode;

use sngate::security::PasswordHash;
use sngate::security::password::DEFAULT_ITERATIONS;

use super::{EXIT_CONFIG, EXIT_RUNTIME, report};

/// `sngate passwd`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct PasswdArgs {
    /// Print a complete [[broker.users]] entry for this user name.
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
    /// PBKDF2 iterations: more makes a stolen config harder to crack and
    /// every CONNECT slower to check.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_ITERATIONS)]
    iterations: u32,
}

/// `sngate passwd`: the hash (or `[[broker.users]]` entry) on stdout.
pub fn passwd(args: &PasswdArgs) -> ExitCode {
    use std::io::{BufRead, IsTerminal};
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ");
        let again = rpassword::prompt_password("Again: ");
        match (first, again) {
            (Ok(a), Ok(b)) if a == b => a,
            (Ok(_), Ok(_)) => {
                eprintln!("error: the passwords differ");
                return ExitCode::from(EXIT_CONFIG);
            }
            (Err(e), _) | (_, Err(e)) => {
                report(&e);
                return ExitCode::from(EXIT_RUNTIME);
            }
        }
    } else {
        let mut line = String::new();
        // A password, not a file: the first line, bounded.
        let read = std::io::stdin().lock().take(64 * 1024).read_line(&mut line);
        if let Err(e) = read {
            report(&e);
            return ExitCode::from(EXIT_RUNTIME);
        }
        let trimmed = line.trim_end_matches(['\n', '\r']).len();
        line.truncate(trimmed);
        line
    };
    if password.is_empty() {
        eprintln!("error: empty password");
        return ExitCode::from(EXIT_CONFIG);
    }
    let hash = match PasswordHash::new(password.as_bytes(), args.iterations) {
        Ok(hash) => hash.to_string(),
        Err(e) => {
            report(&e);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match &args.user {
        Some(user) => {
            let quote = |s: &str| toml::Value::String(s.to_owned()).to_string();
            println!(
                "[[broker.users]]\nname = {}\npassword_hash = {}",
                quote(user),
                quote(&hash)
            );
        }
        None => println!("{hash}"),
    }
    ExitCode::SUCCESS
}
