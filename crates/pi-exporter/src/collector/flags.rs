//! Helpers for the collectors' own flags: each collector declares its clap args beside its
//! `Options` and reads them back here, with an error naming the flag.

use clap::ArgMatches;
use regex_lite::Regex;

/// A flag whose value could not be read into a collector's options.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--{flag}: {message}")]
pub struct FlagError {
    pub flag: String,
    pub message: String,
}

impl FlagError {
    fn new(flag: &str, message: impl ToString) -> Self {
        Self {
            flag: flag.to_owned(),
            message: message.to_string(),
        }
    }
}

/// The value of a single-valued flag, `None` when neither given nor defaulted.
pub fn one<T: Clone + Send + Sync + 'static>(
    m: &ArgMatches,
    flag: &str,
) -> Result<Option<T>, FlagError> {
    m.try_get_one::<T>(flag)
        .map(|value| value.cloned())
        .map_err(|e| FlagError::new(flag, e))
}

/// Every value of a repeatable flag, in the order given.
pub fn many<T: Clone + Send + Sync + 'static>(
    m: &ArgMatches,
    flag: &str,
) -> Result<Vec<T>, FlagError> {
    m.try_get_many::<T>(flag)
        .map(|values| values.map(|v| v.cloned().collect()).unwrap_or_default())
        .map_err(|e| FlagError::new(flag, e))
}

/// Whether a switch (`ArgAction::SetTrue`) was given.
pub fn switch(m: &ArgMatches, flag: &str) -> Result<bool, FlagError> {
    Ok(one::<bool>(m, flag)?.unwrap_or(false))
}

/// A regex flag where the empty pattern means "no filter".
pub fn regex_unless_empty(m: &ArgMatches, flag: &str) -> Result<Option<Regex>, FlagError> {
    Ok(one::<Regex>(m, flag)?.filter(|re| !re.as_str().is_empty()))
}

/// Value parser of regex flags: checked at start.
pub fn regex(text: &str) -> Result<Regex, String> {
    Regex::new(text).map_err(|e| e.to_string())
}
