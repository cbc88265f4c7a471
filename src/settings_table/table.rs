//! The machinery of the settings table: what one setting declares, the
//! [`settings!`](crate::settings) macro that declares a group of them, and
//! the raw values of `nixery serve` they are read from.

use std::{
    collections::BTreeMap,
    ffi::{OsStr, OsString},
};

use super::ConfigError;

/// What every setting declares besides its type: shown by `--help`, listed
/// in `docs/operating.md` (a test checks it) and cleared by the tests'
/// environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SettingInfo {
    /// The environment variable (upstream Nixery's name where it has one).
    pub env: &'static str,
    /// The long flag, without `--`.
    pub flag: &'static str,
    /// The placeholder `--help` shows for the value.
    pub value_name: &'static str,
    /// One line for `--help`.
    pub doc: &'static str,
}

/// What a value parser answers: `Ok(None)` when the value counts as unset
/// (empty), else the value or what was expected instead.
pub type Parsed<T> = Result<Option<T>, &'static str>;

/// One setting whose value is a `T`: its [`SettingInfo`], its default and
/// its parser. Declared with [`settings!`](crate::settings).
#[derive(Clone, Copy)]
pub struct Setting<T: 'static> {
    /// Name, variable, flag and doc line.
    pub info: SettingInfo,
    default: fn() -> T,
    parse: fn(&OsStr) -> Parsed<T>,
}

impl<T> Setting<T> {
    /// A setting described by `info`, `default()` when unset or empty,
    /// else what `parse` makes of the value.
    pub const fn new(
        info: SettingInfo,
        default: fn() -> T,
        parse: fn(&OsStr) -> Parsed<T>,
    ) -> Self {
        Self {
            info,
            default,
            parse,
        }
    }
}

/// Declare a group of settings, each once: a doc line, a constant name, the
/// value type, then its variable, flag, `--help` placeholder, default and
/// parser (a function of [`crate::settings_table::parse`] or any
/// `fn(&OsStr) -> Parsed<T>`). Also declares `SETTINGS`, the group's
/// [`SettingInfo`]s, which [`crate::config::GROUPS`] lists.
///
/// ```ignore
/// crate::settings! {
///     /// Seconds one Nix build may run [default: 60].
///     NIX_TIMEOUT: Duration = {
///         env: "NIX_TIMEOUT", flag: "nix-timeout", value_name: "SECONDS",
///         default: Duration::from_secs(60), parse: parse::seconds,
///     };
/// }
/// ```
#[macro_export]
macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])+
        $name:ident: $ty:ty = {
            env: $env:literal,
            flag: $flag:literal,
            value_name: $value_name:literal,
            default: $default:expr,
            parse: $parse:expr $(,)?
        };
    )+) => {
        $(
            $(#[doc = $doc])+
            pub const $name: $crate::settings_table::Setting<$ty> = $crate::settings_table::Setting::new(
                $crate::settings_table::SettingInfo {
                    env: $env,
                    flag: $flag,
                    value_name: $value_name,
                    doc: concat!($($doc),+).trim_ascii(),
                },
                || $default,
                $parse,
            );
        )+
        /// Every setting of this group, in `--help` order.
        pub const SETTINGS: &[$crate::settings_table::SettingInfo] = &[$($name.info),+];
    };
}

/// The raw values of `nixery serve`, as given on the command line or in the
/// environment, by variable name. Nothing is checked until a value is read
/// with [`ServeSettings::get`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServeSettings {
    values: BTreeMap<&'static str, OsString>,
}

impl ServeSettings {
    /// These values with `setting` set to `value`.
    pub fn with<T>(mut self, setting: &Setting<T>, value: impl Into<OsString>) -> Self {
        self.values.insert(setting.info.env, value.into());
        self
    }

    /// Set the value of the setting `info`.
    pub(crate) fn insert(&mut self, info: &SettingInfo, value: OsString) {
        self.values.insert(info.env, value);
    }

    /// Whether `setting` has a value that does not count as unset.
    pub fn is_set<T>(&self, setting: &Setting<T>) -> bool {
        self.values
            .get(setting.info.env)
            .is_some_and(|raw| !matches!((setting.parse)(raw), Ok(None)))
    }

    /// The value of `setting`: its default when unset or empty, an error
    /// naming its variable when the value does not parse.
    pub fn get<T>(&self, setting: &Setting<T>) -> Result<T, ConfigError> {
        let Some(raw) = self.values.get(setting.info.env) else {
            return Ok((setting.default)());
        };
        match (setting.parse)(raw) {
            Ok(Some(value)) => Ok(value),
            Ok(None) => Ok((setting.default)()),
            Err(expected) => Err(ConfigError::Invalid {
                var: setting.info.env,
                value: raw.to_string_lossy().into_owned(),
                expected,
            }),
        }
    }
}
