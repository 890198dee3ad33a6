//! Log set-up shared by `kmstool-enclave` and `kmstool-sim`: which filter applies, checked
//! strictly, and the text or JSON format on stderr.

use std::fmt;

use tracing_subscriber::EnvFilter;

/// The levels a bare word of a filter may name.
pub const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// The log targets of our crates, which a bare word of a filter may also name.
pub const OUR_TARGETS: [&str; 8] = [
    "kmstool_core",
    "kmstool_runtime_tokio",
    "kmstool_runtime_smol",
    "kmstool_enclave",
    "kmstool_enclave_cli",
    "kmstool_instance",
    "kmstool_sim",
    "kmstool_tests",
];

/// The filter used when no flag and no environment variable sets one.
pub const DEFAULT_FILTER: &str = "info";

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (coloured on a terminal).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Where the filter in force came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterSource {
    /// `--log-level` (or `-v`).
    Flag,
    /// `KMSTOOL_LOG`.
    KmstoolLog,
    /// `RUST_LOG`.
    RustLog,
    /// Nothing set: [`DEFAULT_FILTER`].
    Default,
}

/// A log filter that does not parse, or that names an unknown bare word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError {
    /// The offending directive (or the whole filter when it does not parse).
    pub directive: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for FilterError {}

/// Checks a log filter: it must parse as tracing directives, and a directive without `=`
/// must be a level (`off error warn info debug trace`) or one of our crates' targets
/// (`kmstool_core`, `kmstool_runtime_tokio`, ...), so that a typo such as `chatty` is refused
/// instead of silently turning every other log line off.
pub fn check_filter(filter: &str) -> Result<(), FilterError> {
    for directive in filter.split(',').map(str::trim) {
        if directive.is_empty() || directive.contains('=') {
            continue;
        }
        let target = directive.split('[').next().unwrap_or_default();
        let crate_name = target.split("::").next().unwrap_or_default();
        let is_level = LEVELS.iter().any(|l| l.eq_ignore_ascii_case(directive));
        let is_ours = OUR_TARGETS.contains(&crate_name);
        if !is_level && !is_ours {
            return Err(FilterError {
                directive: directive.to_owned(),
                reason: format!(
                    "{directive:?} is neither a level ({}) nor one of our crates ({}); other \
                     targets need TARGET=LEVEL",
                    LEVELS.join(", "),
                    OUR_TARGETS.join(", ")
                ),
            });
        }
    }
    EnvFilter::builder()
        .with_regex(false)
        .parse(filter)
        .map(drop)
        .map_err(|error| FilterError {
            directive: filter.to_owned(),
            reason: format!("{filter:?} does not parse: {error}"),
        })
}

/// clap's value parser for `--log-level` (and `KMSTOOL_LOG`, which clap parses alike).
pub fn parse_filter(filter: &str) -> Result<String, String> {
    match check_filter(filter) {
        Ok(()) => Ok(filter.to_owned()),
        Err(error) => Err(error.reason),
    }
}

/// The filter in force and where it came from: the flag, else `KMSTOOL_LOG`, else `RUST_LOG`,
/// else `info` (the two others are the environment variables' values, if set).
pub fn choose_filter(
    flag: Option<&str>,
    kmstool_log: Option<&str>,
    rust_log: Option<&str>,
) -> (String, FilterSource) {
    let (filter, source) = match (flag, kmstool_log, rust_log) {
        (Some(flag), _, _) => (flag, FilterSource::Flag),
        (None, Some(env), _) => (env, FilterSource::KmstoolLog),
        (None, None, Some(env)) => (env, FilterSource::RustLog),
        (None, None, None) => (DEFAULT_FILTER, FilterSource::Default),
    };
    (filter.to_owned(), source)
}

/// [`choose_filter`] with this process's environment.
fn choose_filter_from_env(flag: Option<&str>) -> (String, FilterSource) {
    let kmstool_log = std::env::var("KMSTOOL_LOG").ok();
    let rust_log = std::env::var("RUST_LOG").ok();
    choose_filter(flag, kmstool_log.as_deref(), rust_log.as_deref())
}

/// Checks the filter [`init_logging`] would use, without installing anything.
pub fn check_logging(flag: Option<&str>) -> Result<(), LogInitError> {
    let (filter, source) = choose_filter_from_env(flag);
    check_filter(&filter).map_err(|error| LogInitError { source, error })
}

/// Sets up logging to stderr: `flag` (`--log-level`, `-v`) wins, else `KMSTOOL_LOG`, else
/// `RUST_LOG`, else `info`. A filter that is refused by [`check_filter`] is an error, never a
/// silent fallback.
pub fn init_logging(flag: Option<&str>, format: LogFormat) -> Result<(), LogInitError> {
    let (filter, source) = choose_filter_from_env(flag);
    let wrap = |error: FilterError| LogInitError { source, error };
    check_filter(&filter).map_err(wrap)?;
    let env_filter = EnvFilter::builder()
        .with_regex(false)
        .parse(&filter)
        .map_err(|error| {
            wrap(FilterError {
                directive: filter.clone(),
                reason: format!("{filter:?} does not parse: {error}"),
            })
        })?;
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr);
    // A second initialisation (tests running several servers in one process) keeps the first.
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
    Ok(())
}

/// A log filter refused at start, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogInitError {
    /// Where the filter came from.
    pub source: FilterSource,
    /// What is wrong with it.
    pub error: FilterError,
}

impl fmt::Display for LogInitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let from = match self.source {
            FilterSource::Flag => "--log-level",
            FilterSource::KmstoolLog => "KMSTOOL_LOG",
            FilterSource::RustLog => "RUST_LOG",
            FilterSource::Default => "the default",
        };
        write!(f, "invalid log filter in {from}: {}", self.error)
    }
}

impl std::error::Error for LogInitError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_targets_and_directives_are_accepted() {
        for filter in [
            "info",
            "TRACE",
            "off",
            "kmstool_runtime_tokio",
            "kmstool_core::session",
            "kmstool_runtime_tokio=debug",
            "warn,kmstool_enclave=trace",
            "rustls=debug",
            "kmstool_core[call]=debug",
        ] {
            assert_eq!(check_filter(filter), Ok(()), "{filter}");
        }
    }

    #[test]
    fn unknown_bare_words_and_unparsable_filters_are_refused() {
        for (filter, directive) in [
            ("chatty", "chatty"),
            ("info,verbose", "verbose"),
            ("kmstool", "kmstool"),
            ("kmstool_typo", "kmstool_typo"),
        ] {
            let error = check_filter(filter).expect_err(filter);
            assert_eq!(error.directive, directive);
            assert!(
                error
                    .reason
                    .starts_with(&format!("{directive:?} is neither a level")),
                "{error}"
            );
        }
        for filter in ["kmstool_core=loud", "=debug", "kmstool_core=debug=x"] {
            assert!(check_filter(filter).is_err(), "{filter}");
        }
    }

    #[test]
    fn the_flag_wins_then_kmstool_log_then_rust_log_then_the_default() {
        assert_eq!(
            choose_filter(Some("debug"), Some("warn"), Some("trace")),
            ("debug".to_owned(), FilterSource::Flag)
        );
        assert_eq!(
            choose_filter(None, Some("warn"), Some("trace")),
            ("warn".to_owned(), FilterSource::KmstoolLog)
        );
        assert_eq!(
            choose_filter(None, None, Some("trace")),
            ("trace".to_owned(), FilterSource::RustLog)
        );
        assert_eq!(
            choose_filter(None, None, None),
            ("info".to_owned(), FilterSource::Default)
        );
    }
}
