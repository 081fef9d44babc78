use std::path::PathBuf;

use clap::{Parser, Subcommand};

use super::*;

const TEST: Binary = Binary {
    name: "skeleton-test",
    env_prefix: "SKYWIRE_SKELETON_TEST_",
};

/// A binary with every kind of flag the skeleton maps.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    common: crate::CommonArgs,
    /// A listener.
    #[arg(long, default_value = "127.0.0.1:1")]
    listen: std::net::SocketAddr,
    /// A duration.
    #[arg(long, default_value_t = 30)]
    refresh_secs: u64,
    /// A list.
    #[arg(long, value_delimiter = ',')]
    peers: Vec<String>,
    /// A switch.
    #[arg(long)]
    quiet: bool,
    #[command(subcommand)]
    command: Option<Sub>,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// A subcommand with its own flag.
    Agent {
        /// Its port.
        #[arg(long, default_value_t = 7)]
        port: u16,
    },
}

fn write(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("skeleton-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn parse_args(args: &[&str]) -> Result<Args, ConfigError> {
    parse::<Args>(
        &TEST,
        std::iter::once("skeleton-test")
            .chain(args.iter().copied())
            .map(Into::into),
    )
}

#[test]
fn the_file_fills_in_and_a_flag_wins() {
    let path = write(
        "fills.toml",
        "listen = \"127.0.0.1:2\"\nrefresh_secs = 5\npeers = [\"a\", \"b\"]\nquiet = true\n\
         shutdown_grace_secs = 3\n[agent]\nport = 9\n",
    );
    let path = path.to_str().unwrap();
    let args = parse_args(&["--config", path, "--refresh-secs", "6", "agent"]).unwrap();
    assert_eq!(args.listen, "127.0.0.1:2".parse().unwrap());
    assert_eq!(args.refresh_secs, 6, "the flag wins");
    assert_eq!(args.peers, ["a", "b"], "an array is the list");
    assert!(args.quiet);
    assert_eq!(
        args.common.shutdown_grace_secs, 3,
        "common flags are keys too"
    );
    assert!(
        matches!(args.command, Some(Sub::Agent { port: 9 })),
        "[agent] fills its flags"
    );
    let args = parse_args(&["--config", path]).unwrap();
    assert!(
        args.command.is_none(),
        "a table of a subcommand not run is only checked"
    );
}

#[test]
fn unknown_keys_and_bad_values_name_the_key_and_the_file() {
    let path = write("unknown.toml", "lisen = \"127.0.0.1:2\"\n");
    let error = parse_args(&["--config", path.to_str().unwrap()]).unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("`lisen`") && text.contains("unknown.toml"),
        "{text}"
    );
    assert!(
        text.contains("listen, refresh_secs"),
        "the keys are listed: {text}"
    );
    assert_eq!(text.matches("lisen").count(), 1, "said once: {text}");

    let path = write("sub.toml", "[agent]\nprt = 1\n");
    let text = parse_args(&["--config", path.to_str().unwrap()])
        .unwrap_err()
        .to_string();
    assert!(text.contains("`prt`") && text.contains("port"), "{text}");

    let path = write("value.toml", "refresh_secs = \"soon\"\n");
    let text = parse_args(&["--config", path.to_str().unwrap()])
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("value.toml") && text.contains("soon"),
        "{text}"
    );

    let path = write("array.toml", "listen = [\"127.0.0.1:2\"]\n");
    let text = parse_args(&["--config", path.to_str().unwrap()])
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("`listen` takes one value, not an array"),
        "{text}"
    );

    let path = write("switch.toml", "quiet = 1\n");
    let text = parse_args(&["--config", path.to_str().unwrap()])
        .unwrap_err()
        .to_string();
    assert!(text.contains("`quiet` takes true or false"), "{text}");

    let path = write("broken.toml", "listen = \n");
    let text = parse_args(&["--config", path.to_str().unwrap()])
        .unwrap_err()
        .to_string();
    assert!(
        text.starts_with("config file ") && text.contains("broken.toml"),
        "{text}"
    );

    let text = parse_args(&["--config", "/nonexistent/x.toml"])
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("cannot read config file /nonexistent/x.toml"),
        "{text}"
    );
}

#[test]
fn every_flag_has_its_variable_and_help_ends_with_keys_and_environment() {
    let command = command::<Args>(&TEST);
    let env_of = |id: &str| {
        command
            .get_arguments()
            .find(|arg| arg.get_id() == id)
            .and_then(|arg| arg.get_env())
            .map(|env| env.to_string_lossy().into_owned())
    };
    assert_eq!(
        env_of("refresh_secs").as_deref(),
        Some("SKYWIRE_SKELETON_TEST_REFRESH_SECS")
    );
    assert_eq!(
        env_of("config").as_deref(),
        Some("SKYWIRE_SKELETON_TEST_CONFIG")
    );
    assert_eq!(
        env_of("require_pq").as_deref(),
        Some("SKYWIRE_REQUIRE_PQ"),
        "its own name"
    );
    let agent = command.find_subcommand("agent").unwrap();
    let port_env = agent
        .get_arguments()
        .find(|a| a.get_id() == "port")
        .unwrap()
        .get_env();
    assert_eq!(port_env.unwrap(), "SKYWIRE_SKELETON_TEST_AGENT_PORT");

    let help = super::command::<Args>(&TEST).render_long_help().to_string();
    assert!(
        help.contains("listen, refresh_secs, peers, quiet"),
        "{help}"
    );
    assert!(help.contains("[agent] port"), "{help}");
    let environment = help.rfind("Environment").unwrap();
    assert!(
        help.rfind("Config file keys").unwrap() < environment,
        "{help}"
    );
    for variable in ENVIRONMENT_VARIABLES {
        assert!(
            help[environment..].contains(variable),
            "{variable} in\n{help}"
        );
    }
    assert!(help.contains("[default: 30]") && !help.contains("[default: 30] [default: 30]"));
}

/// file < environment < flag, in a child process with the variables set (a test never sets
/// its own environment).
#[test]
fn the_environment_sits_between_the_file_and_the_flags() {
    const CHILD: &str = "SKYWIRE_SKELETON_TEST_CHILD";
    if std::env::var_os(CHILD).is_none() {
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "config::tests::the_environment_sits_between_the_file_and_the_flags",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .env("SKYWIRE_SKELETON_TEST_REFRESH_SECS", "11")
            .env("SKYWIRE_SKELETON_TEST_LISTEN", "127.0.0.1:3")
            .env("SKYWIRE_REQUIRE_PQ", "1")
            .env("SKYWIRE_SKELETON_TEST_QUIET", "yes")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains("1 passed"), "{stdout}");
        return;
    }
    let path = write(
        "env.toml",
        "refresh_secs = 5\nlisten = \"127.0.0.1:2\"\nquiet = true\n",
    );
    let path = path.to_str().unwrap();
    let args = parse_args(&["--config", path, "--listen", "127.0.0.1:4"]).unwrap();
    assert_eq!(args.refresh_secs, 11, "the variable beats the file");
    assert_eq!(
        args.listen,
        "127.0.0.1:4".parse().unwrap(),
        "the flag beats the variable"
    );
    assert!(args.quiet, "a switch's variable takes yes/1/on");
    assert!(
        args.common.require_pq,
        "SKYWIRE_REQUIRE_PQ=1 is --require-pq"
    );
}
