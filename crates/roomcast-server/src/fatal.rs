//! The binary's last word: a mistake a person can fix is one line on stderr,
//! `roomcast: <setting>: <what is wrong>; <the fix>`, and an exit code; never a backtrace,
//! whatever `RUST_BACKTRACE` says (only `Display` is printed, never `Debug`).
//!
//! | exit | when |
//! | --- | --- |
//! | 0 | served, then stopped on SIGTERM or Ctrl-C; or a token printed |
//! | 1 | the environment refused: the address is taken, the database does not answer |
//! | 2 | a usage or configuration mistake: a bad flag or variable, a missing secret |
//!
//! Part of the binary (`main.rs`), not of the library.

use std::process::ExitCode;

use clap::CommandFactory as _;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use roomcast_server::config::Cli;

/// Why the process stops early, as one line for a person.
#[derive(Debug)]
pub(crate) struct Fatal {
    code: u8,
    message: String,
}

impl Fatal {
    /// A bad or missing setting (exit 2). `err`'s contexts are joined on one line; the
    /// configuration's messages start with the variable's name.
    pub(crate) fn config(err: &anyhow::Error) -> Self {
        Self::usage(format!("{err:#}"))
    }

    /// A usage or configuration mistake (exit 2).
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self {
            code: 2,
            message: one_line(&message.into()),
        }
    }

    /// The environment refused (exit 1).
    pub(crate) fn runtime(message: impl Into<String>) -> Self {
        Self {
            code: 1,
            message: one_line(&message.into()),
        }
    }

    /// `ROOMCAST_LISTEN` could not be bound.
    pub(crate) fn listen(addr: std::net::SocketAddr, err: &std::io::Error) -> Self {
        let fix = match err.kind() {
            std::io::ErrorKind::AddrInUse => {
                "another process is listening there: stop it, or set ROOMCAST_LISTEN to a free \
                 address"
            }
            std::io::ErrorKind::PermissionDenied => {
                "ports below 1024 need privileges: set ROOMCAST_LISTEN to a port above 1023"
            }
            std::io::ErrorKind::AddrNotAvailable => {
                "no interface of this host has that address: set ROOMCAST_LISTEN to 127.0.0.1, \
                 0.0.0.0 or one of its addresses"
            }
            _ => "check ROOMCAST_LISTEN",
        };
        Self::runtime(format!(
            "ROOMCAST_LISTEN: cannot listen on {addr}: {err}; {fix}"
        ))
    }

    /// The store at `url` (`DATABASE_URL`) could not be opened.
    pub(crate) fn store(url: &str, err: &dyn std::fmt::Display) -> Self {
        let fix = if url.starts_with("sqlite:") {
            "check that the file's directory exists and is writable"
        } else {
            "check that PostgreSQL is running at that address and that the URL's user, \
             password and database are right"
        };
        Self::runtime(format!(
            "DATABASE_URL: cannot open {}: {err}; {fix}",
            redact_password(url)
        ))
    }

    /// Prints the line and gives the exit code.
    pub(crate) fn report(self) -> ExitCode {
        eprintln!("roomcast: {}", self.message);
        ExitCode::from(self.code)
    }
}

/// A command line clap refused. Help and version requests are printed by clap as usual; every
/// other mistake becomes one line naming the variable (or flag) and what it expects.
pub(crate) fn command_line(err: &clap::Error) -> ExitCode {
    match err.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => err.exit(),
        _ => Fatal::usage(describe(err)).report(),
    }
}

/// One line for a clap error.
fn describe(err: &clap::Error) -> String {
    // A value our parsers refused: their message names the variable and the expected form.
    if let Some(source) = std::error::Error::source(err) {
        return source.to_string();
    }
    let arg = match err.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => Some(setting(arg)),
        Some(ContextValue::Strings(args)) => Some(
            args.iter()
                .map(|a| setting(a))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        _ => None,
    };
    let value = match err.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(value)) => Some(value.as_str()),
        _ => None,
    };
    let valid = match err.get(ContextKind::ValidValue) {
        Some(ContextValue::Strings(valid)) => Some(valid.join(", ")),
        _ => None,
    };
    match (err.kind(), arg, value, valid) {
        (ErrorKind::InvalidValue, Some(arg), Some(value), Some(valid)) => {
            format!("{arg}: expected one of {valid}, got {value:?}")
        }
        (ErrorKind::MissingRequiredArgument, Some(arg), _, _) => {
            format!("{arg}: required (see --help)")
        }
        _ => {
            // clap's own first line, without its `error: ` prefix.
            let rendered = err.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid command line");
            format!("{} (see --help)", first.trim_start_matches("error: "))
        }
    }
}

/// `--log-format <LOG_FORMAT>` as `ROOMCAST_LOG_FORMAT (--log-format)` when the flag has a
/// variable: a person who set the variable recognises its name, not the flag's.
fn setting(arg: &str) -> String {
    let long = arg
        .split_whitespace()
        .next()
        .unwrap_or(arg)
        .trim_start_matches("--");
    let command = Cli::command();
    let mut commands = vec![&command];
    commands.extend(command.get_subcommands());
    let env = commands
        .iter()
        .flat_map(|command| command.get_arguments())
        .find(|candidate| candidate.get_long() == Some(long))
        .and_then(|candidate| candidate.get_env())
        .map(|env| env.to_string_lossy().into_owned());
    match env {
        Some(env) => format!("{env} (--{long})"),
        None => arg.to_owned(),
    }
}

/// Newlines and runs of spaces as single spaces: the message is one line.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `url` with the password of its user part, if any, replaced by `***`: a database URL
/// printed on a terminal or in a log must not carry the password.
pub(crate) fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((user_info, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    match user_info.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    fn parse_error(args: &[&str]) -> String {
        describe(&Cli::try_parse_from(args).unwrap_err())
    }

    #[test]
    fn a_value_our_parser_refused_keeps_its_message() {
        let line = parse_error(&["roomcast", "serve", "--websocket-pong-wait", "soon"]);
        assert_eq!(
            line,
            r#"WEBSOCKET_PONG_WAIT: expected a duration like 60s, got "soon""#
        );
    }

    #[test]
    fn a_value_outside_a_list_names_the_variable_and_the_choices() {
        let line = parse_error(&["roomcast", "serve", "--log-format", "xml"]);
        assert_eq!(
            line,
            r#"ROOMCAST_LOG_FORMAT (--log-format): expected one of text, json, got "xml""#
        );
    }

    #[test]
    fn a_missing_argument_and_an_unknown_one_are_one_line_each() {
        let line = parse_error(&["roomcast", "token"]);
        assert!(
            line.contains("--sub") && line.contains("required"),
            "{line}"
        );
        let line = parse_error(&["roomcast", "serve", "--nope"]);
        assert!(line.contains("'--nope'") && !line.contains('\n'), "{line}");
    }

    #[test]
    fn a_password_in_a_database_url_is_never_printed() {
        assert_eq!(
            redact_password("postgres://app:s3cret@db:5432/chat?sslmode=require"),
            "postgres://app:***@db:5432/chat?sslmode=require"
        );
        assert_eq!(
            redact_password("postgres://app@db/chat"),
            "postgres://app@db/chat"
        );
        assert_eq!(
            redact_password("sqlite://roomcast.db"),
            "sqlite://roomcast.db"
        );
        let fatal = Fatal::store("postgres://u:pw@127.0.0.1:1/x", &"refused");
        assert!(!fatal.message.contains("pw"), "{}", fatal.message);
        assert!(fatal.message.starts_with("DATABASE_URL: "));
    }

    #[test]
    fn a_message_is_one_line() {
        let fatal = Fatal::runtime("a\nb   c\n");
        assert_eq!(fatal.message, "a b c");
        assert_eq!(fatal.code, 1);
        let err = anyhow::anyhow!("inner").context("ROOMCAST_JWT_SECRET: outer");
        let fatal = Fatal::config(&err);
        assert_eq!(fatal.message, "ROOMCAST_JWT_SECRET: outer: inner");
        assert_eq!(fatal.code, 2);
    }
}
