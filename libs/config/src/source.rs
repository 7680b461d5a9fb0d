//! Where values come from: the environment over an optional file.

use std::{collections::HashMap, fmt::Display, str::FromStr};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration key {key}: {message}")]
    Invalid { key: String, message: String },
    #[error("configuration key {key} is required")]
    Missing { key: String },
    #[error("configuration file {path}: {message}")]
    File { path: String, message: String },
}

/// A snapshot of configuration values; the environment wins over the file.
#[derive(Debug, Clone, Default)]
pub struct Source {
    values: HashMap<String, String>,
}

impl Source {
    /// Reads `PIM_CONFIG_FILE` (when set) and then the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut values = HashMap::new();
        if let Ok(path) = std::env::var("PIM_CONFIG_FILE") {
            let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::File {
                path: path.clone(),
                message: e.to_string(),
            })?;
            values.extend(parse_file(&path, &text)?);
        }
        values.extend(std::env::vars());
        Ok(Self { values })
    }

    /// Values given explicitly, as tests and `pim dev` do.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            values: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.values.insert(key.into(), value.into());
    }

    /// The raw value, treating an empty string as unset.
    pub fn raw(&self, key: &str) -> Option<&str> {
        self.values
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn get<T>(&self, key: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.raw(key) {
            None => Ok(default),
            Some(raw) => parse(key, raw),
        }
    }

    pub fn optional<T>(&self, key: &str) -> Result<Option<T>, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.raw(key).map(|raw| parse(key, raw)).transpose()
    }

    pub fn required<T>(&self, key: &str) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.optional(key)?.ok_or_else(|| ConfigError::Missing {
            key: key.to_owned(),
        })
    }
}

fn parse<T>(key: &str, raw: &str) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    raw.trim()
        .parse()
        .map_err(|e: T::Err| ConfigError::Invalid {
            key: key.to_owned(),
            message: format!("{raw:?}: {e}"),
        })
}

fn parse_file(path: &str, text: &str) -> Result<HashMap<String, String>, ConfigError> {
    let mut values = HashMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line.split_once('=').ok_or_else(|| ConfigError::File {
            path: path.to_owned(),
            message: format!("line {}: expected KEY=VALUE", number + 1),
        })?;
        values.insert(
            key.trim().to_owned(),
            value.trim().trim_matches('"').to_owned(),
        );
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_value_names_its_key() {
        let source = Source::from_pairs([("PIM_DB_POOL_MAX", "lots")]);
        let err = source.get::<u32>("PIM_DB_POOL_MAX", 10).unwrap_err();
        assert!(err.to_string().contains("PIM_DB_POOL_MAX"), "{err}");
        assert!(err.to_string().contains("lots"), "{err}");
    }

    #[test]
    fn defaults_apply_to_unset_and_empty_keys() {
        let source = Source::from_pairs([("PIM_DB_POOL_MAX", "")]);
        assert_eq!(source.get::<u32>("PIM_DB_POOL_MAX", 10).unwrap(), 10);
        assert_eq!(source.get::<u32>("PIM_DB_POOL_MIN", 1).unwrap(), 1);
    }

    #[test]
    fn file_lines_parse_and_reject_garbage() {
        let values = parse_file("f", "# comment\nA=1\nB = \"two\"\n").unwrap();
        assert_eq!(values["A"], "1");
        assert_eq!(values["B"], "two");
        assert!(parse_file("f", "oops").is_err());
    }
}
