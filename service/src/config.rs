//! One definition of a binary's settings gives its flags, its `SKYWIRE_<BINARY>_*`
//! environment variables and its TOML keys, with the same names and units.
//!
//! The definition is a clap `Parser`. Every `--long-flag` of it is also
//!
//! - the environment variable `<PREFIX><FLAG_ID>` (`--registration-refresh-secs` of
//!   `dmsg-server` is `SKYWIRE_SERVER_REGISTRATION_REFRESH_SECS`), unless the flag names
//!   its own (`SKYWIRE_REQUIRE_PQ`);
//! - the TOML key `<flag_id>` (`registration_refresh_secs`) of the `--config` file; a
//!   subcommand's flags sit in a table named after it (`[agent]`).
//!
//! Precedence is file < environment < flag: a key of the file is used only where neither the
//! flag nor its variable was given. A key that names no flag is refused with one error naming
//! the key and the file; a value of the wrong type is refused the way the flag would refuse it.
//! `--help` ends with the list of keys and the environment section.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command, CommandFactory, FromArgMatches};

/// The id of the flag naming the config file (not itself a key of the file).
pub const CONFIG_FLAG: &str = "config";

/// What the skeleton knows of a binary.
#[derive(Clone, Copy, Debug)]
pub struct Binary {
    /// The program name, as in `--help` and log lines (`dmsg-server`).
    pub name: &'static str,
    /// The prefix of its environment variables, with the trailing `_` (`SKYWIRE_SERVER_`).
    pub env_prefix: &'static str,
}

/// The variables every binary reads besides its own, listed in [`ENVIRONMENT_HELP`].
pub const ENVIRONMENT_VARIABLES: [&str; 5] = [
    "RUST_LOG",
    "SKYWIRE_LOG_FORMAT",
    "SKYWIRE_REQUIRE_PQ",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_RESOURCE_ATTRIBUTES",
];

/// The environment section that ends every binary's `--help`.
pub const ENVIRONMENT_HELP: &str = "\
Environment (besides the variable shown with each option):
  RUST_LOG                     log filter, e.g. `info,dmsg=debug` [default: info]; spans are
                               exported at info whatever it says
  SKYWIRE_LOG_FORMAT           `human` (default) or `json`: one JSON object per line, every line
                               including start-up and fatal errors
  SKYWIRE_REQUIRE_PQ           `1` refuses every dmsg handshake that does not complete the
                               ML-KEM hybrid (same as --require-pq)
  OTEL_EXPORTER_OTLP_ENDPOINT  OTLP/gRPC collector for traces, e.g. http://127.0.0.1:4317
  OTEL_RESOURCE_ATTRIBUTES     extra resource attributes of exported spans, e.g.
                               deployment.environment=dev (service.instance.id defaults to the
                               process's short public key)";

/// Why a configuration is not usable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The command line (or an environment variable) is wrong, or asks for help or the
    /// version: [`clap::Error::exit`] prints it the way clap does.
    #[error("{}", first_line(.0))]
    Command(clap::Error),
    /// The file could not be read.
    #[error("cannot read config file {}: {reason}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file is not TOML, or holds something the binary does not take.
    #[error("config file {}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key.
        reason: String,
    },
    /// A setting has a bad value.
    #[error("{0}")]
    Invalid(String),
}

impl ConfigError {
    /// The clap error of a command line that asked for `--help` or `--version`, or was wrong.
    pub fn as_command(&self) -> Option<&clap::Error> {
        match self {
            Self::Command(error) => Some(error),
            _ => None,
        }
    }
}

/// A clap error's message without the `error: ` prefix and the usage that follows.
fn first_line(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let line = rendered.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

/// `T`'s command with the skeleton's conventions: an environment variable for every flag,
/// the root's flags global when there are subcommands, and `--help` ending with the keys of
/// the config file and the environment section.
pub fn command<T: CommandFactory>(binary: &Binary) -> Command {
    let tail = help_tail(&T::command());
    conventions(T::command(), binary.env_prefix, "")
        .name(binary.name)
        .after_help(tail.clone())
        .after_long_help(tail)
}

/// Applies the naming rules to `command` and its subcommands.
fn conventions(command: Command, env_prefix: &str, table: &str) -> Command {
    let global = command.has_subcommands() && table.is_empty();
    let mut command = command.mut_args(|arg| {
        if arg.is_positional() || is_builtin(arg.get_id().as_str()) {
            return arg;
        }
        let arg = if global { arg.global(true) } else { arg };
        if arg.get_env().is_some() {
            return arg;
        }
        let name = format!(
            "{env_prefix}{table}{}",
            arg.get_id().as_str().to_uppercase()
        );
        // A switch's variable takes 1/0, yes/no, on/off as well as true/false.
        let arg = if matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse) {
            arg.value_parser(clap::builder::BoolishValueParser::new())
        } else {
            arg
        };
        // Leaked once per flag at start-up: clap keeps `&'static str` names.
        arg.env(&*Box::leak(name.into_boxed_str()))
    });
    let names: Vec<String> = command
        .get_subcommands()
        .map(|sub| sub.get_name().to_owned())
        .collect();
    for name in names {
        let table = format!("{table}{}_", name.to_uppercase().replace('-', "_"));
        command = command.mut_subcommand(&name, |sub| conventions(sub, env_prefix, &table));
    }
    command
}

/// Flags clap adds by itself.
fn is_builtin(id: &str) -> bool {
    matches!(id, "help" | "version")
}

/// The keys of the config file, for `--help`.
fn help_tail(command: &Command) -> String {
    let mut text =
        String::from("Config file keys (TOML, --config FILE; a flag or its variable wins):\n");
    text.push_str(&key_lines(command));
    text.push('\n');
    text.push_str(ENVIRONMENT_HELP);
    text
}

fn key_lines(command: &Command) -> String {
    let mut text = wrapped("  ", config_keys(command));
    for sub in command.get_subcommands() {
        if config_keys(sub).next().is_some() {
            text.push_str(&wrapped(
                &format!("  [{}] ", sub.get_name()),
                config_keys(sub),
            ));
        }
    }
    text
}

/// `keys` after `lead`, comma-separated, in lines of at most 90 characters.
fn wrapped<'a>(lead: &str, keys: impl Iterator<Item = &'a str>) -> String {
    const WIDTH: usize = 90;
    let mut text = String::new();
    let mut line = lead.to_owned();
    let mut first = true;
    for key in keys {
        if !first && line.len() + key.len() + 2 > WIDTH {
            text.push_str(&line);
            text.push_str(",\n");
            line = " ".repeat(lead.len());
        } else if !first {
            line.push_str(", ");
        }
        line.push_str(key);
        first = false;
    }
    text.push_str(&line);
    text.push('\n');
    text
}

/// The ids of a command's flags that are keys of the config file.
fn config_keys(command: &Command) -> impl Iterator<Item = &str> {
    command
        .get_arguments()
        .filter(|arg| is_key(arg))
        .map(|arg| arg.get_id().as_str())
}

/// Whether a flag is a key of the config file (the command is not built yet, so a
/// subcommand does not list the root's global flags). A required flag is not: it must be on
/// the command line before the file is read.
fn is_key(arg: &clap::Arg) -> bool {
    let id = arg.get_id().as_str();
    !arg.is_positional() && !is_builtin(id) && id != CONFIG_FLAG && !arg.is_required_set()
}

/// Parses `args` (without the program name: the binary's name is put first) and resolves
/// them, as the binary's `main` would: what a config test needs in one call.
pub fn resolve<T>(
    binary: &Binary,
    args: &[&str],
) -> Result<<T as crate::process::Resolve>::Settings, ConfigError>
where
    T: CommandFactory + FromArgMatches + crate::process::Resolve,
{
    let program = std::iter::once(binary.name).chain(args.iter().copied());
    parse::<T>(binary, program.map(OsString::from))?.resolve()
}

/// Parses `args` (the first is the program name) into `T`, with the file named by
/// `--config` (and its variable) under the environment and the flags.
pub fn parse<T>(binary: &Binary, args: impl IntoIterator<Item = OsString>) -> Result<T, ConfigError>
where
    T: CommandFactory + FromArgMatches,
{
    let args: Vec<OsString> = args.into_iter().collect();
    let command = command::<T>(binary);
    let given = command
        .clone()
        .try_get_matches_from(&args)
        .map_err(ConfigError::Command)?;
    let matches = match given.get_one::<PathBuf>(CONFIG_FLAG) {
        None => given,
        Some(path) => {
            let table = read_table(path)?;
            let mut file_args = Vec::new();
            file_args_for(&command, &given, &table, path, &mut file_args)?;
            // The file's flags go right after the program name; clap takes a subcommand's
            // flags anywhere after it, so those go last.
            let (root, sub): (Vec<_>, Vec<_>) = file_args.into_iter().partition(|(root, _)| *root);
            let argv: Vec<OsString> = args
                .iter()
                .take(1)
                .cloned()
                .chain(root.into_iter().map(|(_, arg)| arg))
                .chain(args.iter().skip(1).cloned())
                .chain(sub.into_iter().map(|(_, arg)| arg))
                .collect();
            command
                .try_get_matches_from(argv)
                .map_err(|error| ConfigError::File {
                    path: path.clone(),
                    reason: first_line(&error),
                })?
        }
    };
    T::from_arg_matches(&matches).map_err(ConfigError::Command)
}

/// The TOML table in `path`.
fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_owned(),
        reason: error.to_string(),
    })?;
    text.parse::<toml::Table>()
        .map_err(|error| ConfigError::File {
            path: path.to_owned(),
            reason: error.message().to_owned(),
        })
}

/// The flags standing for the keys of `table` that neither a flag nor a variable gave;
/// each is marked with whether it belongs to the root command.
fn file_args_for(
    command: &Command,
    given: &ArgMatches,
    table: &toml::Table,
    path: &Path,
    out: &mut Vec<(bool, OsString)>,
) -> Result<(), ConfigError> {
    file_args_in(command, Some(given), table, path, true, out)
}

fn file_args_in(
    command: &Command,
    given: Option<&ArgMatches>,
    table: &toml::Table,
    path: &Path,
    root: bool,
    out: &mut Vec<(bool, OsString)>,
) -> Result<(), ConfigError> {
    let file_error = |reason: String| ConfigError::File {
        path: path.to_owned(),
        reason,
    };
    for (key, value) in table {
        if let (toml::Value::Table(inner), Some(sub)) = (value, command.find_subcommand(key)) {
            // Only the subcommand being run takes its table; the others are still checked.
            let sub_given = given
                .and_then(|m| m.subcommand())
                .filter(|(name, _)| name == key)
                .map(|(_, m)| m);
            let mut sub_out = Vec::new();
            file_args_in(sub, sub_given, inner, path, false, &mut sub_out)?;
            if sub_given.is_some() {
                out.extend(sub_out);
            }
            continue;
        }
        let arg = command
            .get_arguments()
            .find(|arg| arg.get_id().as_str() == key && is_key(arg))
            .ok_or_else(|| {
                let known: Vec<&str> = config_keys(command).collect();
                file_error(format!(
                    "unknown key `{key}`; the keys are: {}",
                    known.join(", ")
                ))
            })?;
        let Some(given) = given else { continue };
        if matches!(
            given.value_source(key),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let Some(long) = arg.get_long() else { continue };
        let flag_values = |values: Vec<String>| {
            values
                .into_iter()
                .map(|value| (root, OsString::from(format!("--{long}={value}"))))
                .collect::<Vec<_>>()
        };
        match (arg.get_action(), value) {
            (ArgAction::SetTrue, toml::Value::Boolean(true)) => {
                out.push((root, OsString::from(format!("--{long}"))));
            }
            (ArgAction::SetTrue, toml::Value::Boolean(false)) => {}
            (ArgAction::SetTrue | ArgAction::SetFalse, other) => {
                return Err(file_error(format!(
                    "`{key}` takes true or false, not {other}"
                )));
            }
            (_, toml::Value::Array(items)) => {
                let items = items
                    .iter()
                    .map(|item| scalar(key, item).map_err(file_error))
                    .collect::<Result<Vec<_>, _>>()?;
                if !matches!(arg.get_action(), ArgAction::Append) {
                    return Err(file_error(format!("`{key}` takes one value, not an array")));
                }
                out.extend(flag_values(items));
            }
            (_, value) => out.extend(flag_values(vec![scalar(key, value).map_err(file_error)?])),
        }
    }
    Ok(())
}

/// A TOML scalar as the text a flag would take.
fn scalar(key: &str, value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(text) => Ok(text.clone()),
        toml::Value::Integer(n) => Ok(n.to_string()),
        toml::Value::Float(x) => Ok(x.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        other => Err(format!(
            "`{key}` takes a string or a number, not {}",
            other.type_str()
        )),
    }
}

#[cfg(test)]
mod tests;
